"""User-facing errors.

Anything a user can cause (bad input file, bad config key, wrong vocab) raises a
``ZhbertError`` subclass whose message names the file, line or key. The CLI prints the
message and exits with status 2 instead of showing a traceback from deep inside a library.
"""


class ZhbertError(Exception):
    """Base class of errors caused by the user's input, shown without a traceback."""


class ConfigError(ZhbertError):
    """A configuration file or override is invalid (message names file and key)."""


class DataError(ZhbertError):
    """Input data is missing, unreadable or malformed (message names file and line)."""


class CheckpointError(ZhbertError):
    """A checkpoint is missing, incomplete, corrupt or incompatible."""


class TrainingDiverged(ZhbertError):
    """The loss or gradient norm became NaN/inf (``train.on_nonfinite``): the run stopped
    without applying that step or saving its weights. Exit status 3, so a scheduler can tell
    a diverged run (retry with a lower lr) from bad input (status 2)."""

    exit_code = 3


def exit_code(error: ZhbertError) -> int:
    """The process exit status for a user-facing error: 2, or the class's ``exit_code``."""
    return int(getattr(error, "exit_code", 2))


def disk_error(error: BaseException, path) -> "ZhbertError | None":
    """A one-line ZhbertError for a full, read-only or forbidden destination, else None.

    ``torch.save`` reports a full disk as ``RuntimeError: ... file write failed``, without an
    errno, so for a RuntimeError the free space of ``path``'s file system decides.
    """
    import errno
    import shutil
    from pathlib import Path

    code = getattr(error, "errno", None)
    if code == errno.ENOSPC or code == getattr(errno, "EDQUOT", -1):
        return ZhbertError(f"no space left on device: {path}")
    if code == errno.EROFS:
        return ZhbertError(f"read-only file system: {path}")
    if code in (errno.EACCES, errno.EPERM):
        return ZhbertError(f"permission denied: {path}")
    if isinstance(error, RuntimeError):
        p = Path(path)
        while not p.exists() and p != p.parent:
            p = p.parent
        try:
            if shutil.disk_usage(p).free < 1 << 20:
                return ZhbertError(f"no space left on device: {path}")
        except OSError:
            pass
    return None
