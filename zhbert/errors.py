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
