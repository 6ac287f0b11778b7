"""Safe extraction of downloaded checkpoint bundles (.tar.gz / .zip): all members or none.

A bundle comes from a URL someone typed or a registry file someone wrote, so it is treated
as hostile until every member has been looked at. :func:`extract_archive` lists the members
first and refuses the whole archive (nothing is written) when any of them

* has an absolute path (``/etc/passwd``, ``C:\\x``) or a ``..`` component,
* is a device file or a fifo,
* is a symlink or hard link whose target, resolved lexically from the link's directory,
  leaves the bundle (``a/b -> ../../x``),
* lies below a symlink of the same archive (``link/x`` where ``link -> /``): extracting it
  would write through the link.

Only then is the archive extracted; for tar files Python's ``data`` extraction filter checks
the same again against the real file system (defence in depth, Python >= 3.10.12). zipfile
writes links as plain files, so for zips the name checks are the whole guard.

The format is taken from the registry (``format:``) or the URL suffix; a raw URL without a
telling suffix is sniffed from the first bytes (:func:`sniff_format`: gzip ``1f 8b`` or zip
``PK\\x03\\x04``).
"""

from __future__ import annotations

import re
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Optional

from zhbert.errors import CheckpointError


def sniff_format(path: Path, label: str) -> str:
    """``tar.gz`` or ``zip`` from the file's magic bytes; anything else is refused."""
    with path.open("rb") as f:
        head = f.read(4)
    if head[:2] == b"\x1f\x8b":
        return "tar.gz"
    if head == b"PK\x03\x04":
        return "zip"
    raise CheckpointError(f"{label}: not a .tar.gz or .zip bundle (first bytes {head!r}); "
                          f"register it with format: files to fetch single files")


def check_member_name(name: str, label: str) -> PurePosixPath:
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
        p = check_member_name(name, label)
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


def single_top_dir(out: Path) -> Path:
    """A bundle that extracts to one top-level directory -> that directory is the model."""
    entries = [p for p in out.iterdir() if p.name not in ("__MACOSX",)]
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return out
