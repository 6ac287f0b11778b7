"""File-system helpers for stages that write outputs: a directory lock that names its holder,
atomic small-file writes, and one-line messages for the OS errors a user can cause.

Lock protocol (``DirLock``)::

    DIR.lock        sibling of the output directory DIR (the directory itself may not exist
                    yet, and may be swapped for a new one while the lock is held)
    open / create   O_RDWR | O_CREAT, never truncated before the lock is ours: a loser must
                    still be able to read who holds it
    flock           LOCK_EX | LOCK_NB: a second run fails at once (no waiting on a run that
                    can take hours); the kernel drops the lock when the holder dies, even by
                    SIGKILL, so a crashed run never leaves a stale lock
    same inode?     the previous holder unlinks the file before it lets go; if the path no
                    longer names the file we locked, we locked a ghost: close and start over
    holder line     "pid 1234 on host gpu07 since 2026-12-03T10:15:00": written into the file
                    once the lock is ours, read by the loser for its error message
    DIR/INSIDE      when DIR's parent is not writable (read-only, or owned by someone else)
                    but DIR exists, the lock file goes inside it instead (``inside``)

Without ``fcntl`` (not POSIX) the ``filelock`` package takes the lock and the holder line
goes to ``DIR.lock.holder``.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Optional

from zhbert.errors import DataError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


# ---------------------------------------------------------------------------------------
# One-line messages for OS errors

_ERRNO_TEXT = {
    getattr(errno, "EDQUOT", errno.ENOSPC): "disk quota exceeded",  # (not on every platform)
    errno.ENOSPC: "no space left on device",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def read_utf8(path: str | Path, what: str, a_what: Optional[str] = None) -> str:
    """The text of a UTF-8 file (a leading BOM is dropped, as Windows editors write one); a
    one-line DataError naming the file when it is missing, a directory, not UTF-8 or
    unreadable. ``what`` names the file in messages ("vocab file"); ``a_what`` is the phrase
    after "expected" (default "a " + what)."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected {a_what or 'a ' + what}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read {what}: {e.strerror}") from None


def os_error_message(e: BaseException, path: str | Path) -> Optional[str]:
    """``"no space left on device: PATH"`` for the errors a user can cause and fix (disk
    full, quota, read-only file system, permissions), else None.

    ``path`` is named when the error names none (pyarrow and the Rust tokenizers library
    report ENOSPC without a file name). Errors raised by libraries that are not ``OSError``
    but carry ``"(os error 28)"`` in their text (Rust's std::io) are recognised too.
    """
    code = getattr(e, "errno", None) if isinstance(e, OSError) else None
    if code is None:
        text = str(e)
        code = next((c for c in _ERRNO_TEXT if f"os error {c})" in text or f"[errno {c}]" in text.lower()), None)
    if code not in _ERRNO_TEXT:
        return None
    where = getattr(e, "filename", None) or path
    return f"{_ERRNO_TEXT[code]}: {where}"


def is_disk_full(e: BaseException) -> bool:
    msg = os_error_message(e, "")
    return bool(msg) and msg.startswith(("no space left", "disk quota"))


# ---------------------------------------------------------------------------------------
# Atomic writes


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``path`` (UTF-8) through a temporary sibling ``.NAME.tmp-PID`` and ``os.replace``:
    readers see the old file or the whole new one, never a torn one. The temporary file is
    removed on failure (a full disk must not leave half files behind); the data is fsync'ed
    before the rename, so a marker written this way never becomes durable before its content
    does. zhbert's one atomic text writer: use it (or :func:`write_json_atomic`) for every
    small file whose readers must never see half of it."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def write_json_atomic(path: Path, obj: Any, default: Optional[Callable[[Any], Any]] = None) -> None:
    """``obj`` as indented UTF-8 JSON (plus a final newline), written by :func:`write_text_atomic`.
    ``default``: as for ``json.dumps``, e.g. ``str`` for values JSON has no type for."""
    write_text_atomic(path, json.dumps(obj, ensure_ascii=False, indent=2, default=default) + "\n")


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------
# Directory lock


class LockedError(DataError):
    """Another process holds the lock (the message names it)."""


def _holder_line() -> str:
    return f"pid {os.getpid()} on host {socket.gethostname()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}"


class DirLock:
    """Exclusive, non-blocking lock of directory ``target`` (see module docstring).

    ``with DirLock(out, what="zhbert prepare"):`` raises ``LockedError`` naming the holder
    when another process has it; ``OSError`` (read-only file system, permissions) when the
    lock file cannot be created.
    """

    def __init__(self, target: str | Path, what: str = "another process", inside: str = ".zhbert.lock"):
        self.target = Path(target)
        self.path = self.target.with_name(self.target.name + ".lock")
        self.inside = inside
        self.what = what
        self._fd: Optional[int] = None
        self._fallback = None

    def _busy(self, holder: str) -> LockedError:
        holder = holder.strip() or "a process that has not written its name yet"
        return LockedError(f"{self.target}: locked by {holder} ({self.what} writing the same output; "
                           f"lock file {self.path}); wait for it to finish or stop it")

    def acquire(self) -> "DirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # pragma: no cover - Windows
            return self._acquire_filelock()
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS) or not self.target.is_dir() \
                        or self.path.parent == self.target:
                    raise
                self.path = self.target / self.inside  # the parent is not ours to write
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace")
                os.close(fd)
                raise self._busy(holder) from None
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                st = None
            mine = os.fstat(fd)
            if st is not None and (st.st_ino, st.st_dev) == (mine.st_ino, mine.st_dev):
                break
            os.close(fd)  # unlinked by the holder we waited out: lock the new file
        self._fd = fd
        try:  # best effort: on a full disk the lock still holds without the holder line
            os.ftruncate(fd, 0)
            os.pwrite(fd, (_holder_line() + "\n").encode("utf-8"), 0)
        except OSError:
            pass
        return self

    def _acquire_filelock(self) -> "DirLock":  # pragma: no cover - Windows
        import filelock

        info = self.path.with_name(self.path.name + ".holder")
        lock = filelock.FileLock(str(self.path), timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            try:
                holder = info.read_text(encoding="utf-8")
            except OSError:
                holder = ""
            raise self._busy(holder) from None
        self._fallback = lock
        try:
            info.write_text(_holder_line() + "\n", encoding="utf-8")
        except OSError:
            pass
        return self

    def release(self) -> None:
        if self._fallback is not None:  # pragma: no cover - Windows
            self._fallback.release()
            self._fallback = None
            return
        if self._fd is None:
            return
        try:  # while still held (see "same inode?" above), and only if the path is still ours
            st, mine = os.stat(self.path), os.fstat(self._fd)
            if (st.st_ino, st.st_dev) == (mine.st_ino, mine.st_dev):
                self.path.unlink()
        except OSError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
