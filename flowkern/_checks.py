"""Argument checks shared by every layer of flowkern: one message format, written once.

Each raises ``TypeError`` (wrong type) or ``ValueError`` (wrong value) naming the argument and
what was expected, and returns the value so checks read as assignments::

    channels = check_int("channels", channels, minimum=2)
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["check_int", "check_number", "check_choice", "check_bool"]


def check_int(name: str, value: object, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` is an int (not a bool) in ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        lo = "-inf" if minimum is None else minimum
        hi = "inf" if maximum is None else maximum
        raise ValueError(f"{name} must be an int in [{lo}, {hi}], got {value}")
    return value


def check_number(name: str, value: object, minimum: float | None = None, *, positive: bool = False) -> float:
    """``value`` is a finite real number (int or float, not bool), ``> 0`` with ``positive``,
    ``>= minimum`` with ``minimum``; returned as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return float(value)


def check_choice(name: str, value: object, choices: Iterable[str]) -> str:
    """``value`` is one of ``choices``."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_bool(name: str, value: object) -> bool:
    """``value`` is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value
