"""Released checkpoints: a registry of names, downloads, safe extraction, format fix-ups.

A checkpoint can be named three ways wherever zhbert accepts one (``zhbert download``,
``zhbert eval clue --model``, ``model.init_from``); :func:`resolve_model` turns each into a
local HF-format directory:

    runs/pretrain/tiny/checkpoints/step_300/hf   a local directory -> itself
    chinese-roberta-wwm-ext                      a registry name   -> hub snapshot / URL bundle
    hfl/chinese-macbert-base                     an unregistered hub id -> hub snapshot
    https://example.org/zhbert-tiny.tar.gz       a raw URL         -> downloaded bundle

The registry is YAML (``configs/checkpoints.yaml``; more files via ``--registry FILE`` or
``ZHBERT_REGISTRY=a.yaml:b.yaml``, later files override earlier names)::

    checkpoints:
      rbt3:                                   # the short name users type
        hub_id: hfl/rbt3                      # a Hugging Face hub repository ...
        description: RoBERTa-wwm-ext, 3 layers
      zhbert-tiny:
        url: https://example.org/zhbert-tiny.tar.gz   # ... or a plain URL
        sha256: 3f5c...                       # verified after download (when given)
        size: 1234567                         # bytes (shown by --list, checked when given)
        format: tar.gz                        # tar.gz | zip | files

Hub entries go through ``huggingface_hub.snapshot_download`` and its own cache (so
``HF_HOME``, ``HF_HUB_CACHE``, ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` work as usual). URL
entries land in zhbert's cache (``--cache-dir``, else ``$ZHBERT_CACHE``, else
``$XDG_CACHE_HOME/zhbert``, else ``~/.cache/zhbert``; see ``zhbert.cache``) and are placed atomically: the file is fetched into
``downloads/<key>.part`` (resumed with an HTTP Range request after a dropped connection),
its sha256 verified, the archive extracted into ``tmp/`` and checked member by member, and
only then ``os.replace``-d to ``models/<key>/``. A directory under ``models/`` is therefore
always complete; a failed download leaves nothing there.

Archives are refused whole (nothing extracted) if any member has an absolute path, a ``..``
component, is a device/fifo, is a link pointing outside the bundle, or lies below a symlink.

Old formats are converted once, at placement: Google's ``bert_config.json`` becomes an HF
``config.json``; a TensorFlow checkpoint (``bert_model.ckpt.*``) is converted to
``model.safetensors`` when TensorFlow is installed (:func:`convert_tf_checkpoint`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Optional
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

from zhbert.errors import CheckpointError, ConfigError, ZhbertError

BUILTIN_REGISTRY = Path(__file__).resolve().parents[2] / "configs" / "checkpoints.yaml"
FORMATS = ("tar.gz", "zip", "files")
MARKER = ".zhbert_source.json"  # written into every placed URL download

# What a hub snapshot needs: configs and tokenizer files first, then ONE weights format.
HUB_BASE_PATTERNS = ["config.json", "bert_config.json", "vocab.txt", "tokenizer.json",
                     "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"]
HUB_SAFETENSORS_PATTERNS = ["model.safetensors", "model.safetensors.index.json", "model-*.safetensors"]
HUB_BIN_PATTERNS = ["pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin"]
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TF_INDEX = "bert_model.ckpt.index"


# =========================================================================== the registry
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
        if urlparse(entry.url).scheme not in ("http", "https", "file"):
            raise ConfigError(f"{where}: checkpoints.{name}.url must be http(s)://, got {entry.url!r}")
        fmt = entry.format or _format_from_name(entry.url)
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


# ============================================================================ cache paths
def default_cache_dir() -> Path:
    from zhbert.cache import cache_root

    return cache_root()


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_cache_dir(cache_dir: Optional[Path]) -> Optional[str]:
    """Where snapshot_download should look, read from the environment at call time."""
    if cache_dir is not None:
        return str(Path(cache_dir) / "hub")
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None  # huggingface_hub's default


def _url_key(url: str, name: Optional[str] = None) -> str:
    stem = name or PurePosixPath(urlparse(url).path).name or "download"
    for suffix in (".tar.gz", ".tgz", ".zip", ".tar"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "download"
    return f"{stem}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"


def cached_path(entry: RegistryEntry, cache_dir: Optional[Path] = None) -> Optional[Path]:
    """The local directory of ``entry`` if it is already cached (no network)."""
    if entry.hub_id:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(entry.hub_id, "config.json", cache_dir=_hub_cache_dir(cache_dir),
                                       revision=entry.revision)
        if isinstance(found, str):
            return Path(found).parent
        return None
    final = Path(cache_dir or default_cache_dir()) / "models" / _url_key(entry.url, entry.name)
    return final if final.is_dir() else None


# ========================================================================== resolve / download
def _looks_like_url(text: str) -> bool:
    return urlparse(text).scheme in ("http", "https", "file")


def _looks_like_hub_id(text: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text) is not None


def resolve_model(name_or_path: str | Path, cache_dir: Optional[str | Path] = None,
                  revision: Optional[str] = None,
                  registry_files: Optional[list[str | Path]] = None) -> Path:
    """A checkpoint name, hub id, URL or local directory -> a local HF-format directory.

    A local directory is returned as is (an HF dir, a zhbert ``step_<N>/`` or run dir: the
    caller picks the weights inside), unless it holds a Google ``bert_config.json`` / TF
    checkpoint: then a converted copy under the cache is returned. Used by ``zhbert eval clue --model`` and
    by the trainer's ``model.init_from``.
    """
    text = str(name_or_path)
    local = Path(text).expanduser()
    if local.exists():
        if not local.is_dir():
            raise CheckpointError(f"{local}: a checkpoint must be a directory (config.json + weights)")
        if _is_google_format(local):
            return _ensure_hf_layout(local, Path(cache_dir) if cache_dir else None)
        return local  # HF dir, zhbert step_<N>/ or run dir: the caller picks the weights
    return download(text, cache_dir=cache_dir, revision=revision, registry_files=registry_files)


def download(name_or_url: str, cache_dir: Optional[str | Path] = None, revision: Optional[str] = None,
             registry_files: Optional[list[str | Path]] = None, retries: int = 3,
             timeout: float = 60.0) -> Path:
    """Fetch a registered name, hub id or URL into the cache; return the model directory."""
    cache = Path(cache_dir).expanduser() if cache_dir else None
    registry = load_registry(registry_files)
    entry = registry.get(name_or_url)
    if entry is None:  # a hub id or URL that is registered under a short name
        entry = next((e for e in registry.values() if name_or_url in (e.hub_id, e.url)), None)
    if entry is None:
        if _looks_like_url(name_or_url):
            entry = RegistryEntry(name=_url_key(name_or_url), url=name_or_url,
                                  format=_format_from_name(name_or_url), source="<command line>")
            if entry.format is None:
                entry.format = "tar.gz"  # sniffed again from the bytes after download
            return _download_url(entry, cache or default_cache_dir(), retries, timeout, raw=True)
        if _looks_like_hub_id(name_or_url) and not name_or_url.startswith((".", "/", "~")):
            entry = RegistryEntry(name=name_or_url, hub_id=name_or_url, source="<command line>")
        else:
            known = ", ".join(sorted(registry)) or "(none)"
            raise CheckpointError(
                f"{name_or_url!r} is not a local directory, a registered checkpoint name, a hub id "
                f"(org/name) or a URL. Registered names: {known}")
    if entry.hub_id:
        return _download_hub(entry, cache, revision or entry.revision)
    if revision:
        print(f"zhbert: note: --revision is ignored for URL checkpoint {entry.name}", file=sys.stderr)
    return _download_url(entry, cache or default_cache_dir(), retries, timeout)


# ---------------------------------------------------------------------------------- hub
class _NeverRaised(Exception):
    """Stands in for a huggingface_hub exception class that the installed version lacks."""


class _HubErrors:
    """huggingface_hub's exception classes, by name, across its versions: recent releases
    define them all in ``huggingface_hub.errors`` (``IncompleteSnapshotError`` only from 1.30),
    older ones (0.24, the floor, as on a transformers 4.x stack) keep ``LocalEntryNotFoundError``,
    ``RepositoryNotFoundError`` & co in ``huggingface_hub.utils``. A class that neither module
    has resolves to :class:`_NeverRaised`, so its ``except`` clause is simply inert."""

    def __getattr__(self, name: str) -> type:
        import importlib

        for module in ("huggingface_hub.errors", "huggingface_hub.utils"):
            try:
                cls = getattr(importlib.import_module(module), name, None)
            except ImportError:
                continue
            if isinstance(cls, type) and issubclass(cls, BaseException):
                return cls
        return _NeverRaised


def _download_hub(entry: RegistryEntry, cache: Optional[Path], revision: Optional[str]) -> Path:
    from huggingface_hub import snapshot_download

    hf_errors = _HubErrors()
    hub_cache = _hub_cache_dir(cache)
    offline = _offline()
    label = entry.hub_id if entry.name == entry.hub_id else f"{entry.name} ({entry.hub_id})"

    def fetch(patterns: list[str]) -> Path:
        try:
            return Path(snapshot_download(entry.hub_id, revision=revision, cache_dir=hub_cache,
                                          allow_patterns=patterns, local_files_only=offline))
        except (hf_errors.LocalEntryNotFoundError, hf_errors.IncompleteSnapshotError) as e:
            where = hub_cache or "the default Hugging Face cache (~/.cache/huggingface/hub)"
            if offline:
                raise CheckpointError(
                    f"{label} is not in the Hugging Face cache at {where} and HF_HUB_OFFLINE=1 forbids "
                    f"downloading it. Either unset HF_HUB_OFFLINE and run `zhbert download "
                    f"{entry.name}` once with network access, point HF_HOME / HF_HUB_CACHE at a cache "
                    f"that holds it, or pass a local checkpoint directory instead.") from None
            raise CheckpointError(f"{label}: cannot reach the hub ({_first_line(e)}) and it is not "
                                  f"cached in {where}; check the network / HF_ENDPOINT, or pass a "
                                  f"local checkpoint directory") from None
        except hf_errors.GatedRepoError:  # before RepositoryNotFoundError: it is a subclass of it
            raise CheckpointError(f"{label}: the repository is gated; accept its terms on the hub "
                                  f"and log in (`hf auth login`)") from None
        except hf_errors.RepositoryNotFoundError:
            raise CheckpointError(f"{label}: no such repository on the hub "
                                  f"({os.environ.get('HF_ENDPOINT', 'https://huggingface.co')}); "
                                  f"check the name, or log in for private repos") from None
        except hf_errors.RevisionNotFoundError:
            raise CheckpointError(f"{label}: revision {revision!r} not found on the hub") from None
        except (hf_errors.HfHubHTTPError, OSError, ValueError) as e:
            raise CheckpointError(f"{label}: hub download failed: {type(e).__name__}: "
                                  f"{_first_line(e)}") from None
        except Exception as e:  # httpx connection errors and the like: no library tracebacks
            raise CheckpointError(f"{label}: hub download failed: {type(e).__name__}: "
                                  f"{_first_line(e)}") from None

    path = fetch(HUB_BASE_PATTERNS + HUB_SAFETENSORS_PATTERNS)
    if not _has_weights(path) and not offline:
        path = fetch(HUB_BASE_PATTERNS + HUB_BIN_PATTERNS)  # an older repo without safetensors
    if not _has_weights(path) and not (path / TF_INDEX).is_file():
        raise CheckpointError(f"{label}: the snapshot at {path} has no model weights "
                              f"({', '.join(WEIGHT_FILES)})")
    return _ensure_hf_layout(path, cache)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def _has_weights(path: Path) -> bool:
    return any((path / n).is_file() for n in WEIGHT_FILES)


# ---------------------------------------------------------------------------------- URL
@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Serialise concurrent downloads of the same key (two ranks, two shells). ``filelock``
    (flock on POSIX, msvcrt on Windows) waits for the holder; the OS drops a dead one's lock."""
    from filelock import FileLock

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path)):
        yield


def _download_url(entry: RegistryEntry, cache: Path, retries: int, timeout: float,
                  raw: bool = False) -> Path:
    key = _url_key(entry.url, None if raw else entry.name)
    final = cache / "models" / key
    if final.is_dir():
        return _ensure_hf_layout(final, cache, in_place=True)
    if _offline():
        # A raw URL's entry name is our internal cache key: tell the user what they typed.
        what, again = (entry.url, entry.url) if raw else (f"{entry.name} ({entry.url})", entry.name)
        raise CheckpointError(
            f"{what} is not in the zhbert cache {cache / 'models'} and HF_HUB_OFFLINE=1 forbids "
            f"downloading it. Run `HF_HUB_OFFLINE=0 zhbert download {again}` once with network "
            f"access, pass --cache-dir / set ZHBERT_CACHE to a cache that holds it, or fetch "
            f"{entry.url} yourself, unpack it and pass the model directory instead.")
    downloads = cache / "downloads"
    tmp_root = cache / "tmp"
    for d in (downloads, tmp_root, final.parent):
        d.mkdir(parents=True, exist_ok=True)
    with _locked(downloads / f"{key}.lock"):
        if final.is_dir():  # another process finished it while we waited
            return _ensure_hf_layout(final, cache, in_place=True)
        work = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=tmp_root))
        try:
            if entry.format == "files":
                model_dir = work / "model"
                model_dir.mkdir()
                base = entry.url if entry.url.endswith("/") else entry.url + "/"
                for fname, digest in sorted(entry.files.items()):
                    _check_member_name(fname, base)
                    part = downloads / f"{_url_key(base + fname)}.part"
                    fetch_with_resume(base + fname, part, sha256=digest, retries=retries,
                                      timeout=timeout)
                    (model_dir / fname).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(part, model_dir / fname)
            else:
                part = downloads / f"{key}.part"
                fetch_with_resume(entry.url, part, sha256=entry.sha256, size=entry.size,
                                  retries=retries, timeout=timeout)
                try:  # a complete, verified file that is refused is not worth resuming: drop it
                    fmt = _sniff_format(part, entry.url) if raw else entry.format
                    out = work / "extract"
                    extract_archive(part, out, fmt, label=entry.url)
                    model_dir = _single_top_dir(out)
                    _check_bundle(model_dir, entry.url)
                finally:
                    part.unlink(missing_ok=True)
            _check_bundle(model_dir, entry.url)
            (model_dir / MARKER).write_text(json.dumps(
                {"name": entry.name, "url": entry.url, "sha256": entry.sha256, "format": entry.format,
                 "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2) + "\n")
            try:
                os.replace(model_dir, final)
            except OSError:
                if not final.is_dir():
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    # A TF bundle is placed as downloaded and converted here, so a missing TensorFlow costs
    # an install, not a second download.
    return _ensure_hf_layout(final, cache, in_place=True)


def _check_bundle(model_dir: Path, label: str) -> None:
    """Refuse bundles that are not checkpoints; translate a Google bert_config.json."""
    has_config = (model_dir / "config.json").is_file() or (model_dir / "bert_config.json").is_file()
    if not has_config or not (_has_weights(model_dir) or (model_dir / TF_INDEX).is_file()):
        found = ", ".join(sorted(p.name for p in model_dir.iterdir())[:10]) or "nothing"
        raise CheckpointError(f"{label}: the bundle is not a checkpoint: expected config.json (or "
                              f"bert_config.json) and one of {', '.join(WEIGHT_FILES)} or a "
                              f"TensorFlow {TF_INDEX}; found {found}")
    if not (model_dir / "config.json").is_file() and _has_weights(model_dir):
        _write_hf_config(model_dir / "bert_config.json", model_dir / "config.json")


class _Interrupted(Exception):
    pass


def fetch_with_resume(url: str, part: Path, *, sha256: Optional[str] = None, size: Optional[int] = None,
                      retries: int = 3, timeout: float = 60.0) -> Path:
    """Download ``url`` into ``part``, resuming an existing partial file with HTTP Range.

    A server that ignores Range (answers 200) restarts the file from byte 0. A dropped
    connection is retried up to ``retries`` times in total, each time from where it stopped;
    after the last attempt the partial file is kept so the next run resumes. A sha256 or size
    mismatch deletes the file and raises.
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    attempt = 0
    while True:
        attempt += 1
        try:
            _fetch_once(url, part, size, timeout)
            break
        except _Interrupted as e:
            if attempt >= max(1, retries):
                raise ZhbertError(f"download of {url} interrupted ({e}); the partial file {part} is "
                                  f"kept: run the same command again to resume") from None
            print(f"zhbert: {url}: {e}; resuming (attempt {attempt + 1}/{retries})", file=sys.stderr)
            time.sleep(min(2.0 ** (attempt - 1) * 0.2, 5.0))
    got_size = part.stat().st_size
    if size is not None and got_size != size:
        part.unlink()
        raise ZhbertError(f"{url}: downloaded {got_size} bytes but the registry says {size}; "
                          f"nothing was kept")
    if sha256:
        got = sha256_file(part)
        if got != sha256.lower():
            part.unlink()
            raise ZhbertError(f"{url}: sha256 mismatch: expected {sha256}, got {got}; the download was "
                              f"deleted (a corrupt or replaced file, or a wrong registry entry)")
    return part


def _fetch_once(url: str, part: Path, size: Optional[int], timeout: float) -> None:
    from tqdm import tqdm

    from zhbert import __version__

    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset >= size:
        if offset == size:
            return  # complete already; the sha256 check decides
        part.unlink()
        offset = 0
    headers = {"User-Agent": f"zhbert/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as e:
        if e.code == 416 and offset:  # our partial file is not a prefix of what is served now
            part.unlink()
            raise _Interrupted("server refused to resume (HTTP 416), restarting from 0") from None
        raise ZhbertError(f"download failed: {url}: HTTP {e.code} {e.reason}") from None
    except TimeoutError:  # connected, but no response headers in time
        raise ZhbertError(f"download failed: {url}: no response within {timeout:g} s "
                          f"(zhbert download --timeout SECONDS)") from None
    except URLError as e:
        if isinstance(e.reason, TimeoutError):  # could not connect in time
            raise ZhbertError(f"download failed: {url}: cannot connect within {timeout:g} s "
                              f"(zhbert download --timeout SECONDS)") from None
        raise ZhbertError(f"download failed: {url}: {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:
        raise ZhbertError(f"download failed: {url}: {type(e).__name__}: {e}") from None
    with resp:
        status = getattr(resp, "status", 200)
        if offset and status == 206:
            crange = resp.headers.get("Content-Range", "")
            if not crange.startswith(f"bytes {offset}-"):
                part.unlink()
                raise _Interrupted(f"unexpected Content-Range {crange!r}, restarting from 0")
            mode = "ab"
        else:
            offset, mode = 0, "wb"  # no Range sent, or the server ignored it: start over
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else size
        done = offset
        try:
            with open(part, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                             unit_divisor=1024, desc=PurePosixPath(urlparse(url).path).name,
                                             disable=None, file=sys.stderr) as bar:
                # read1: whatever has arrived (up to 1 MiB), so a stall mid-chunk keeps the
                # bytes received so far in the .part file for the next resume.
                read = getattr(resp, "read1", resp.read)
                while True:
                    chunk = read(1 << 20)
                    if not chunk:
                        break
                    f.write(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
        except TimeoutError:
            raise _Interrupted(f"no data for {timeout:g} s after {done} bytes") from None
        except (http.client.IncompleteRead, ConnectionError) as e:
            raise _Interrupted(f"connection lost after {done} bytes: {type(e).__name__}") from None
        if total is not None and done < total:
            raise _Interrupted(f"connection closed after {done} of {total} bytes")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ============================================================================ safe extraction
def _format_from_name(name: str) -> Optional[str]:
    path = urlparse(name).path if _looks_like_url(name) else name
    if path.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    if path.endswith(".zip"):
        return "zip"
    return None


def _sniff_format(path: Path, label: str) -> str:
    head = path.open("rb").read(4)
    if head[:2] == b"\x1f\x8b":
        return "tar.gz"
    if head == b"PK\x03\x04":
        return "zip"
    raise CheckpointError(f"{label}: not a .tar.gz or .zip bundle (first bytes {head!r}); "
                          f"register it with format: files to fetch single files")


def _check_member_name(name: str, label: str) -> PurePosixPath:
    """A relative, normalised path with no ``..``; anything else refuses the archive."""
    norm = name.replace("\\", "/")
    p = PurePosixPath(norm)
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm) or p.is_absolute():
        raise CheckpointError(f"{label}: refusing archive: member {name!r} has an absolute path")
    if ".." in p.parts:
        raise CheckpointError(f"{label}: refusing archive: member {name!r} contains '..'")
    return PurePosixPath(*[x for x in p.parts if x not in ("", ".")])


def _escapes(base: PurePosixPath, target: str) -> bool:
    """Does ``target`` (relative to directory ``base``) leave the archive root, lexically?"""
    if target.startswith("/") or re.match(r"^[A-Za-z]:", target):
        return True
    depth = len(base.parts)
    for part in PurePosixPath(target.replace("\\", "/")).parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _check_members(names_kinds: list[tuple[str, str, Optional[str]]], label: str) -> None:
    """names_kinds: (name, kind in file|dir|symlink|hardlink|other, link target)."""
    symlinks: set[PurePosixPath] = set()
    for name, kind, target in names_kinds:
        p = _check_member_name(name, label)
        if kind == "other":
            raise CheckpointError(f"{label}: refusing archive: member {name!r} is a device file or fifo")
        if any(PurePosixPath(*p.parts[:i]) in symlinks for i in range(1, len(p.parts))):
            raise CheckpointError(f"{label}: refusing archive: member {name!r} lies below a symlink")
        if kind == "symlink":
            if _escapes(p.parent, target or ""):
                raise CheckpointError(f"{label}: refusing archive: symlink {name!r} -> {target!r} "
                                      f"points outside the bundle")
            symlinks.add(p)
        elif kind == "hardlink":
            if _escapes(PurePosixPath(), target or ""):
                raise CheckpointError(f"{label}: refusing archive: hard link {name!r} -> {target!r} "
                                      f"points outside the bundle")


def extract_archive(archive: Path, out: Path, fmt: str, label: Optional[str] = None) -> Path:
    """Extract a tar.gz / zip into ``out`` after checking EVERY member (all or nothing)."""
    label = label or str(archive)
    out.mkdir(parents=True, exist_ok=True)
    try:
        if fmt == "tar.gz":
            with tarfile.open(archive, "r:*") as tf:
                members = tf.getmembers()
                kinds = []
                for m in members:
                    kind = ("dir" if m.isdir() else "file" if m.isfile() else "symlink" if m.issym()
                            else "hardlink" if m.islnk() else "other")
                    kinds.append((m.name, kind, m.linkname if kind in ("symlink", "hardlink") else None))
                _check_members(kinds, label)
                # The data filter re-checks against the real filesystem (defence in depth).
                # (Pythons older than 3.10.12 lack filters; the checks above are the real guard.)
                extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tf.extractall(out, members=members, **extra)
        elif fmt == "zip":
            with zipfile.ZipFile(archive) as zf:
                kinds = []
                for info in zf.infolist():
                    mode = info.external_attr >> 16
                    is_link = (mode & 0o170000) == 0o120000
                    target = zf.read(info).decode("utf-8", "replace") if is_link else None
                    kinds.append((info.filename, "symlink" if is_link else
                                  "dir" if info.is_dir() else "file", target))
                _check_members(kinds, label)
                zf.extractall(out)  # zipfile writes links as plain files; names already checked
        else:
            raise CheckpointError(f"{label}: unknown bundle format {fmt!r}")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise CheckpointError(f"{label}: cannot extract {fmt} archive: {type(e).__name__}: {e}") from None
    return out


def _single_top_dir(out: Path) -> Path:
    """A bundle that extracts to one top-level directory -> that directory is the model."""
    entries = [p for p in out.iterdir() if p.name not in ("__MACOSX",)]
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return out


# ======================================================================= format fix-ups
# Google's bert_config.json uses the HF field names already; these keys are TF-only.
_GOOGLE_ONLY_KEYS = {"directionality", "pooler_fc_size", "pooler_num_attention_heads",
                     "pooler_num_fc_layers", "pooler_size_per_head", "pooler_type"}


def google_config_to_hf(cfg: dict[str, Any]) -> dict[str, Any]:
    """Google ``bert_config.json`` -> HF ``config.json`` (BertForPreTraining)."""
    out = {k: v for k, v in cfg.items() if k not in _GOOGLE_ONLY_KEYS}
    out.setdefault("layer_norm_eps", 1e-12)  # TF BERT's LayerNorm epsilon
    out.setdefault("pad_token_id", 0)
    out.setdefault("model_type", "bert")
    out.setdefault("architectures", ["BertForPreTraining"])
    return out


def _is_google_format(path: Path) -> bool:
    """bert_config.json without config.json, or a TF checkpoint without PyTorch weights."""
    if (path / "config.json").is_file():
        return (path / TF_INDEX).is_file() and not _has_weights(path)
    return (path / "bert_config.json").is_file() or (path / TF_INDEX).is_file()


def _ensure_hf_layout(path: Path, cache: Optional[Path], in_place: bool = False) -> Path:
    """Return an HF-format directory for ``path`` (converting Google formats if needed).

    ``in_place`` (a fresh download being placed): write the converted files into ``path``.
    Otherwise the source is left untouched and the conversion goes to the cache.
    """
    has_config = (path / "config.json").is_file()
    has_tf = (path / TF_INDEX).is_file()
    if has_config and _has_weights(path):
        return path
    if not has_config and not (path / "bert_config.json").is_file():
        if _has_weights(path) or has_tf:
            raise CheckpointError(f"{path}: no config.json (or Google bert_config.json) next to the weights")
        raise CheckpointError(f"{path}: not a checkpoint directory: expected config.json and one of "
                              f"{', '.join(WEIGHT_FILES)} (or a TensorFlow {TF_INDEX})")
    if in_place:
        target = path
    else:
        cache = Path(cache or default_cache_dir())
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        target = cache / "converted" / f"{path.name}-{digest}"
        if target.is_dir() and (target / "config.json").is_file() and _has_weights(target):
            return target
    if has_tf and not _has_weights(path):
        return convert_tf_checkpoint(path, target)
    if not _has_weights(path):
        raise CheckpointError(f"{path}: no model weights ({', '.join(WEIGHT_FILES)})")
    # bert_config.json + PyTorch weights: only the config needs translating.
    tmp = Path(tempfile.mkdtemp(prefix=".convert.", dir=_mkdir(target.parent))) if not in_place else path
    if not in_place:
        for f in path.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
    _write_hf_config(path / "bert_config.json", tmp / "config.json")
    if not in_place:
        _place_dir(tmp, target)
    return target


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _place_dir(tmp: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def _write_hf_config(google: Path, out: Path) -> None:
    try:
        cfg = json.loads(google.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{google}: not a valid JSON config: {e}") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{google}: expected a JSON object")
    out.write_text(json.dumps(google_config_to_hf(cfg), indent=2, sort_keys=True) + "\n", encoding="utf-8")


def tf_name_to_hf(name: str) -> Optional[tuple[str, bool]]:
    """A Google TF variable name -> (HF key, transpose?), or None for optimizer state.

    bert/encoder/layer_3/attention/self/query/kernel -> bert.encoder.layer.3.attention.self.query.weight (T)
    bert/embeddings/LayerNorm/gamma                  -> bert.embeddings.LayerNorm.gamma (normalised later)
    cls/predictions/output_bias                      -> cls.predictions.bias
    cls/seq_relationship/output_weights              -> cls.seq_relationship.weight (already (2, H))
    """
    parts = name.split("/")
    if any(p in ("adam_m", "adam_v", "AdamWeightDecayOptimizer", "AdamWeightDecayOptimizer_1")
           for p in parts) or name in ("global_step",) or not parts[0] in ("bert", "cls"):
        return None
    if name == "cls/predictions/output_bias":
        return "cls.predictions.bias", False
    out: list[str] = []
    transpose = False
    for p in parts:
        m = re.fullmatch(r"layer_(\d+)", p)
        if m:
            out += ["layer", m.group(1)]
        elif p == "kernel":
            out.append("weight")
            transpose = True
        elif p == "output_weights":
            out.append("weight")
        elif p == "output_bias":
            out.append("bias")
        else:
            out.append(p)
    key = ".".join(out)
    if parts[-1] in ("word_embeddings", "token_type_embeddings", "position_embeddings"):
        key += ".weight"
    return key, transpose


def tf_variables_to_state_dict(variables) -> dict:
    """(TF variable name, array) pairs -> normalised HF state dict (the TF-free half of the
    conversion: names mapped, kernels transposed, optimizer slots dropped, tied decoder left out)."""
    import numpy as np
    import torch

    from zhbert.model.weights import normalize_state_dict

    sd: dict[str, torch.Tensor] = {}
    for name, value in variables:
        mapped = tf_name_to_hf(name)
        if mapped is None:
            continue
        key, transpose = mapped
        arr = np.asarray(value, dtype=np.float32)
        sd[key] = torch.from_numpy(arr.T.copy() if transpose else arr)
    sd = normalize_state_dict(sd)
    sd.pop("cls.predictions.decoder.weight", None)  # tied to the word embeddings
    return sd


def convert_tf_checkpoint(tf_dir: str | Path, out_dir: str | Path) -> Path:
    """Google TF BERT (bert_model.ckpt.* + bert_config.json + vocab.txt) -> HF directory.

    Needs TensorFlow (only to read the checkpoint). The result is checked by loading it into
    ``BertForPreTraining`` so a shape that disagrees with the config names the tensor.
    """
    tf_dir, out_dir = Path(tf_dir), Path(out_dir)
    if not (tf_dir / TF_INDEX).is_file():
        raise CheckpointError(f"{tf_dir}: no TensorFlow checkpoint ({TF_INDEX} missing)")
    if not (tf_dir / "bert_config.json").is_file():
        raise CheckpointError(f"{tf_dir}: TensorFlow checkpoint without bert_config.json")
    try:
        import tensorflow as tf  # noqa: F401
    except ImportError:
        raise CheckpointError(
            f"{tf_dir} is a Google TensorFlow checkpoint ({TF_INDEX}); converting it needs "
            f"TensorFlow: `pip install tensorflow` (CPU is enough), then run the command again. "
            f"Or download the PyTorch/safetensors release of the same model instead.") from None
    from safetensors.torch import save_file

    reader = tf.train.load_checkpoint(str(tf_dir / "bert_model.ckpt"))
    names = sorted(reader.get_variable_to_shape_map())
    sd = tf_variables_to_state_dict((n, reader.get_tensor(n)) for n in names)
    tmp = Path(tempfile.mkdtemp(prefix=".convert.", dir=_mkdir(out_dir.parent)))
    try:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        _write_hf_config(tf_dir / "bert_config.json", tmp / "config.json")
        for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
            if (tf_dir / f).is_file():
                shutil.copy2(tf_dir / f, tmp / f)
        from zhbert.model.modeling import BertForPreTraining

        BertForPreTraining.from_pretrained(tmp)  # shape vs config check, names the tensor
        if out_dir.resolve() == tf_dir.resolve():  # config.json last: it marks completion
            for f in sorted(tmp.iterdir(), key=lambda f: f.name == "config.json"):
                os.replace(f, out_dir / f.name)
            tmp.rmdir()
        else:
            _place_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


# ================================================================================== CLI
def _human(n: Optional[int]) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def list_registry(registry_files: Optional[list[str | Path]] = None,
                  cache_dir: Optional[str | Path] = None) -> str:
    """The registry as a table, with a ✓ and the path for what is already cached."""
    reg = load_registry(registry_files)
    cache = Path(cache_dir).expanduser() if cache_dir else None
    rows = [("name", "kind", "source", "size", "cached")]
    for name in sorted(reg):
        e = reg[name]
        try:
            hit = cached_path(e, cache)
        except Exception:  # a broken cache entry must not break the listing
            hit = None
        rows.append((name, e.kind, e.location, _human(e.size), f"✓ {hit}" if hit else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4]
                     for r in rows).rstrip() + "\n"


def add_cli(sub) -> None:
    p = sub.add_parser(
        "download", help="fetch a released checkpoint (registry name, hub id or URL)",
        description="Download a checkpoint into the cache and print its local directory (only "
        "that, on stdout). Names come from configs/checkpoints.yaml, $ZHBERT_REGISTRY and "
        "--registry; hub ids (org/name) and http(s) URLs of .tar.gz/.zip bundles work directly.")
    p.add_argument("name", nargs="?", metavar="NAME_OR_URL")
    p.add_argument("--cache-dir", help="default: $ZHBERT_CACHE, $XDG_CACHE_HOME/zhbert or ~/.cache/zhbert "
                   "(URL bundles); hub entries use the Hugging Face cache unless this is given")
    p.add_argument("--revision", help="hub branch, tag or commit")
    p.add_argument("--registry", action="append", default=[], metavar="FILE",
                   help="extra registry YAML (repeatable; later files override earlier names)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                   help="give up on a URL download when the server sends nothing for this long "
                   "(connecting, waiting for a reply, or between data; default: 60)")
    p.add_argument("--list", action="store_true", help="show the registry and what is cached")
    p.set_defaults(func=_run_download)


def _run_download(args) -> int:
    if args.list:
        sys.stdout.write(list_registry(args.registry, args.cache_dir))
        return 0
    if not args.name:
        raise ZhbertError("give a checkpoint NAME_OR_URL (or --list)")
    if not (args.timeout > 0 and args.timeout != float("inf")):  # NaN fails the first test
        raise ConfigError(f"--timeout {args.timeout:g}: expected a positive number of seconds")
    print(download(args.name, cache_dir=args.cache_dir, revision=args.revision,
                   registry_files=args.registry, timeout=args.timeout))
    return 0
