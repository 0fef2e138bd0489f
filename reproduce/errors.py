"""Errors a user can act on: every message names the problem and the fix.

They subclass ``ValueError``/``FileNotFoundError`` so callers that already catch those keep working.
"""


class ReproduceError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(ReproduceError, ValueError):
    """A tensor or argument handed to a library function is malformed."""


class ConfigError(ReproduceError, ValueError):
    """A configuration (Hydra or keyword arguments) cannot work; raised before long work starts."""


class DataError(ReproduceError, FileNotFoundError):
    """A dataset root is missing or not in the expected layout."""
