"""zhbert's per-user cache directory, and checked start-up tables kept in it.

Where (first that is set)::

    $ZHBERT_CACHE                 e.g. a scratch disk on a cluster
    $XDG_CACHE_HOME/zhbert
    ~/.cache/zhbert

Downloads (``zhbert.hub.registry``) go under ``models/``; small tables that are slow to compute at
start-up and worth keeping between processes (the punctuation code points of
``zhbert.prep.tokenizer``, jieba's prefix dictionary and tag codes in ``zhbert.prep.segment``) go
under ``tables/``. Nothing is kept in the shared temp directory: a file there can be
planted by another local user.

A table is trusted only when all of these hold, and is otherwise a *miss* (recomputed and
rewritten atomically), never an error:

* ``tables/`` is a directory owned by the current user and not group/world-writable
  (it is created 0700); the file is a regular file, owned by the user, not writable by
  others, opened without following a symlink;
* the file is ``<one JSON header line>\\n<JSON body>``; the header names the table and the
  content key it was built for (a sha256 of the inputs: a changed dictionary file gives a
  new key, so a stale table is never read) and holds the sha256 of the body, which is
  checked before the body is parsed;
* the body is plain JSON (it cannot run code, unlike pickle or marshal) and passes the
  caller's structure check.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

FORMAT = "zhbert-table"
VERSION = 1
MAX_TABLE_BYTES = 256 << 20  # a bigger file is not one of ours


def cache_root() -> Path:
    """The zhbert cache directory (see module docstring); not created here."""
    env = os.environ.get("ZHBERT_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():  # the XDG spec: relative values are to be ignored
        return Path(xdg) / "zhbert"
    return Path("~/.cache/zhbert").expanduser()


def content_key(*parts: str | bytes) -> str:
    """sha256 hex of ``parts`` (length-prefixed, so ("ab", "c") != ("a", "bc"))."""
    h = hashlib.sha256()
    for p in parts:
        b = p.encode("utf-8") if isinstance(p, str) else bytes(p)
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def _private(st: os.stat_result) -> bool:
    """Owned by us and not writable by group or others."""
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def tables_dir() -> Optional[Path]:
    """``<cache root>/tables``, created 0700 (missing parents too); None when it cannot be
    created or is not private (then tables are simply recomputed every time)."""
    d = cache_root() / "tables"
    missing = []
    p = d
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    try:
        for p in reversed(missing):
            try:
                os.mkdir(p, 0o700)
                os.chmod(p, 0o700)  # whatever the umask
            except FileExistsError:
                pass  # another process made it meanwhile; checked below
        st = os.stat(d)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or not _private(st):
        return None
    return d


def _table_path(d: Path, name: str, key: str) -> Path:
    return d / f"{name}.{key[:32]}.json"


def load(name: str, key: str, check: Callable[[Any], bool]) -> Any:
    """The cached value of table ``name`` built for ``key``, or None on any kind of miss."""
    d = tables_dir()
    if d is None:
        return None
    try:
        fd = os.open(_table_path(d, name, key), os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or not _private(st) or st.st_size > MAX_TABLE_BYTES:
                return None
            data = f.read(MAX_TABLE_BYTES + 1)
        head, sep, body = data.partition(b"\n")
        if not sep:
            return None
        header = json.loads(head)
        expected = {"format": FORMAT, "version": VERSION, "name": name, "key": key}
        if not isinstance(header, dict) or set(header) != {*expected, "sha256"} or any(
                header[k] != v for k, v in expected.items()):
            return None  # another table, format or key
        if hashlib.sha256(body).hexdigest() != header["sha256"]:
            return None  # truncated or edited
        value = json.loads(body)
        return value if check(value) else None
    except Exception:  # garbage, wrong types, deep nesting...: a miss, whatever it is
        return None


def store(name: str, key: str, value: Any) -> Optional[Path]:
    """Write table ``name`` for ``key`` atomically (temp file in the same directory, then
    ``os.replace``); best effort: returns None when the cache is unusable or unwritable."""
    d = tables_dir()
    if d is None:
        return None
    body = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    header = {"format": FORMAT, "version": VERSION, "name": name, "key": key,
              "sha256": hashlib.sha256(body).hexdigest()}
    path = _table_path(d, name, key)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=d)  # mode 0600
    except OSError:
        return None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(json.dumps(header).encode("utf-8") + b"\n" + body)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        return None
    return path
