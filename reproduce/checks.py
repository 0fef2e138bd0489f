"""Small argument checks shared by every layer, so that a bad option reads the same everywhere.

Each returns the checked value (converted where that is safe) and raises ``error`` (a
:class:`~reproduce.errors.ConfigError` unless told otherwise: a bad constructor option is a
configuration mistake) with a message that names the option, the accepted values and what was given.
"""

from __future__ import annotations

import difflib
import math
import numbers
from typing import Any, Iterable

from reproduce.errors import ConfigError


def suggest(value: Any, choices: Iterable[Any]) -> str:
    """`` Did you mean a, b?`` for close matches of ``value`` among ``choices`` (or ``""``)."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=3)
    return f" Did you mean {', '.join(close)}?" if close else ""


def choice_error(name: str, value: Any, choices: Iterable[Any], *, error: type[Exception] = ConfigError,
                 also: str = "") -> Exception:
    """The error for ``value`` not among ``choices`` (``also``: other accepted forms, e.g. "a number"),
    for dispatch code that falls through its branches: ``raise choice_error("score", score, SCORES)``."""
    choices = tuple(choices)
    other = f" or {also}" if also else ""
    return error(f"{name} must be one of {list(choices)}{other}, got {value!r}.{suggest(value, choices)}")


def check_choice(name: str, value: Any, choices: Iterable[Any], *, error: type[Exception] = ConfigError) -> Any:
    """``value`` is one of ``choices``."""
    choices = tuple(choices)
    try:
        ok = value in choices
    except TypeError:  # unhashable values against a set-like container
        ok = False
    if not ok:
        raise choice_error(name, value, choices, error=error)
    return value


def check_int(name: str, value: Any, *, minimum: int | None = 1, maximum: int | None = None,
              allow_none: bool = False, example: Any = None, why: str = "",
              error: type[Exception] = ConfigError) -> int | None:
    """``value`` is an integer (not a bool) in ``[minimum, maximum]``; ``why`` explains a maximum."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):  # numpy integers are Integral
        raise error(f"{name} must be {_int_range(minimum, maximum)}, got {value!r}{_example(name, example)}.")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        reason = f" ({why})" if why and maximum is not None and value > maximum else ""
        raise error(f"{name} must be {_int_range(minimum, maximum)}, got {value!r}{reason}{_example(name, example)}.")
    return value


def positive_int(name: str, value: Any, *, maximum: int | None = None, why: str = "",
                 error: type[Exception] = ConfigError) -> int:
    """``value`` is an integer >= 1 (and <= ``maximum`` when given)."""
    return check_int(name, value, minimum=1, maximum=maximum, why=why, error=error)


def check_number(name: str, value: Any, *, positive: bool = False, non_negative: bool = False,
                 allow_none: bool = False, error: type[Exception] = ConfigError) -> float | None:
    """``value`` is a finite real number (optionally > 0 or >= 0)."""
    if value is None and allow_none:
        return None
    what = "a finite positive number" if positive else "a finite non-negative number" if non_negative else "a finite number"
    if isinstance(value, bool):
        raise error(f"{name} must be {what}, got {value!r}.")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise error(f"{name} must be {what}, got {value!r}.") from None
    if not math.isfinite(v) or (positive and v <= 0) or (non_negative and v < 0):
        raise error(f"{name} must be {what}, got {value!r}.")
    return v


def check_fraction(name: str, value: Any, *, open_low: bool = True, allow_one: bool = True,
                   error: type[Exception] = ConfigError) -> float:
    """``value`` lies in (0, 1] (or [0, 1], (0, 1), [0, 1) with the flags)."""
    lo = "(0" if open_low else "[0"
    hi = "1]" if allow_one else "1)"
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise error(f"{name} must be a number in {lo}, {hi}, got {value!r}.") from None
    if isinstance(value, bool) or not ((v > 0 if open_low else v >= 0) and (v <= 1 if allow_one else v < 1)):
        raise error(f"{name} must lie in {lo}, {hi}, got {value!r}.")
    return v


def check_bool(name: str, value: Any, *, error: type[Exception] = ConfigError) -> bool:
    if not isinstance(value, bool):
        raise error(f"{name} must be true or false, got {value!r}.")
    return value


def _int_range(minimum: int | None, maximum: int | None) -> str:
    if minimum == 1 and maximum is None:
        return "a positive integer"
    if maximum is None:
        return "an integer" if minimum is None else f"an integer >= {minimum}"
    if minimum is None:
        return f"an integer <= {maximum}"
    return f"an integer in [{minimum}, {maximum}]"


def _example(name: str, example: Any) -> str:
    return f" (e.g. {name}={example})" if example is not None else ""
