"""The checkpoint registry: short names for released checkpoints, read from YAML files.

A registry maps the name a user types to where the weights live::

    checkpoints:
      rbt3:                                   # the short name users type
        hub_id: hfl/rbt3                      # a Hugging Face hub repository ...
        revision: main                        # (optional) hub branch / tag / commit
        description: RoBERTa-wwm-ext, 3 layers
      zhbert-tiny:
        url: https://example.org/zhbert-tiny.tar.gz   # ... or a plain URL
        sha256: 3f5c...                       # verified after download (when given)
        size: 1234567                         # bytes (shown by --list, checked when given)
        format: tar.gz                        # tar.gz | zip | files (default: the URL suffix)
      zhbert-tiny-files:
        url: https://example.org/zhbert-tiny/ # format files: a base URL ...
        format: files
        files: {config.json: null, model.safetensors: 9e1a...}  # ... and name -> sha256 (or a list)

Files are merged in order, a later file's name replacing an earlier one's: the built-in
``configs/checkpoints.yaml`` < the ``$ZHBERT_REGISTRY`` files (``a.yaml:b.yaml``) < files
given explicitly (``zhbert download --registry FILE``, repeatable). Every entry is checked
when it is read (:func:`load_registry`): unknown keys, exactly one of ``hub_id`` / ``url``,
a 64-hex ``sha256``, an http(s)/file URL whose format is known; a bad entry is a
``ConfigError`` naming the file and the key.

:func:`lookup` finds an entry by its name, or by the hub id or URL it registers (so
``hfl/rbt3`` uses the ``rbt3`` entry's revision). Fetching an entry is
:mod:`zhbert.hub.download`; turning any name or directory into a loadable model directory
is :mod:`zhbert.hub.resolve`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

from zhbert.errors import ConfigError

BUILTIN_REGISTRY = Path(__file__).resolve().parents[2] / "configs" / "checkpoints.yaml"
FORMATS = ("tar.gz", "zip", "files")


# =========================================================================== the entries
@dataclass
class RegistryEntry:
    """One named checkpoint: either a hub repository (``hub_id``) or a plain URL release."""

    name: str
    hub_id: Optional[str] = None  # e.g. hfl/chinese-roberta-wwm-ext
    revision: Optional[str] = None  # hub branch / tag / commit (default: main)
    url: Optional[str] = None  # tar.gz / zip bundle, or the base URL of `files`
    sha256: Optional[str] = None  # of the bundle (tar.gz / zip)
    size: Optional[int] = None  # bytes of the bundle (or the model files, for hub entries)
    format: Optional[str] = None  # tar.gz | zip | files (default: from the URL suffix)
    files: dict[str, Optional[str]] = field(default_factory=dict)  # format files: name -> sha256
    description: str = ""
    source: str = "<builtin>"  # the registry file that defined it (not a YAML key)

    @property
    def kind(self) -> str:
        return "hub" if self.hub_id else "url"

    @property
    def location(self) -> str:
        return self.hub_id if self.hub_id else str(self.url)


_ENTRY_KEYS = [f.name for f in dataclasses.fields(RegistryEntry) if f.name not in ("name", "source")]


def _entry_from_yaml(name: Any, raw: Any, where: str) -> RegistryEntry:
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: checkpoint names must be non-empty strings, got {name!r}")
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: checkpoints.{name} must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_ENTRY_KEYS))
    if unknown:
        raise ConfigError(f"{where}: checkpoints.{name}: unknown key {unknown[0]!r}; valid keys: "
                          f"{', '.join(_ENTRY_KEYS)}")
    kw: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:
            continue
        if key == "size":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{where}: checkpoints.{name}.size must be a byte count, got {value!r}")
        elif key == "files":
            if isinstance(value, list):
                value = {str(v): None for v in value}
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: checkpoints.{name}.files must be a list of file names "
                                  f"or a mapping name -> sha256")
            value = {str(k): (str(v).lower() if v else None) for k, v in value.items()}
        elif not isinstance(value, str):
            raise ConfigError(f"{where}: checkpoints.{name}.{key} must be a string, got {value!r}")
        kw[key] = value
    entry = RegistryEntry(name=name, source=where, **kw)
    if bool(entry.hub_id) == bool(entry.url):
        raise ConfigError(f"{where}: checkpoints.{name} needs exactly one of hub_id or url")
    if entry.sha256 is not None:
        entry.sha256 = entry.sha256.lower()
        if not re.fullmatch(r"[0-9a-f]{64}", entry.sha256):
            raise ConfigError(f"{where}: checkpoints.{name}.sha256 must be 64 hex digits")
    if entry.url:
        if not looks_like_url(entry.url):
            raise ConfigError(f"{where}: checkpoints.{name}.url must be http(s)://, got {entry.url!r}")
        fmt = entry.format or format_from_name(entry.url)
        if fmt not in FORMATS:
            raise ConfigError(f"{where}: checkpoints.{name}.format must be one of {', '.join(FORMATS)}"
                              f" (cannot tell from the URL {entry.url!r})")
        entry.format = fmt
        if fmt == "files" and not entry.files:
            raise ConfigError(f"{where}: checkpoints.{name}: format files needs a `files:` list")
    elif entry.format or entry.files:
        raise ConfigError(f"{where}: checkpoints.{name}: format/files are for url entries, "
                          f"not hub_id entries")
    return entry


def load_registry(files: Optional[list[str | Path]] = None, *, builtin: bool = True,
                  env: bool = True) -> dict[str, RegistryEntry]:
    """Merge registries: built-in < ``$ZHBERT_REGISTRY`` files < ``files`` (later wins)."""
    import yaml

    paths: list[Path] = []
    if builtin and BUILTIN_REGISTRY.is_file():
        paths.append(BUILTIN_REGISTRY)
    if env:
        paths += [Path(p) for p in os.environ.get("ZHBERT_REGISTRY", "").split(os.pathsep) if p]
    paths += [Path(p) for p in files or []]
    merged: dict[str, RegistryEntry] = {}
    for path in paths:
        where = str(path)
        if not path.is_file():
            raise ConfigError(f"{where}: registry file not found")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{where}: not valid YAML: {e}") from None
        if not isinstance(data, dict) or set(data) - {"checkpoints"}:
            raise ConfigError(f"{where}: expected a single top-level key `checkpoints:` "
                              f"mapping names to entries")
        entries = data.get("checkpoints") or {}
        if not isinstance(entries, dict):
            raise ConfigError(f"{where}: checkpoints must be a mapping of name -> entry")
        for name, raw in entries.items():
            merged[name] = _entry_from_yaml(name, raw, where)
    return merged


def lookup(registry: dict[str, RegistryEntry], name_or_location: str) -> Optional[RegistryEntry]:
    """The entry named ``name_or_location``, else the one registering it as its hub id or URL."""
    entry = registry.get(name_or_location)
    if entry is None:
        entry = next((e for e in registry.values() if name_or_location in (e.hub_id, e.url)), None)
    return entry


# =============================================================================== naming
def looks_like_url(text: str) -> bool:
    return urlparse(text).scheme in ("http", "https", "file")


def looks_like_hub_id(text: str) -> bool:
    """``org/name`` (not a relative or absolute path)."""
    return (re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text) is not None
            and not text.startswith((".", "/", "~")))


def format_from_name(name: str) -> Optional[str]:
    """``tar.gz`` / ``zip`` from a URL's or file name's suffix; None when it does not tell."""
    path = urlparse(name).path if looks_like_url(name) else name
    if path.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    if path.endswith(".zip"):
        return "zip"
    return None
