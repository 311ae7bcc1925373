"""Checks of user-supplied values, one per kind of value, with one wording of errors.

Every entry point (``RunConfig``, the solvers' and methods' options, ``compress``, the CLI, the
widgets) checks what it is given with these functions, so a bad value always gives one
ValueError line that names it, says what is allowed and shows what was given:

    >>> integer("k", 0, low=1)
    Traceback (most recent call last):
    ...
    ValueError: k must be an int >= 1, got 0
"""

from __future__ import annotations

import json
import math
from typing import Iterable

import numpy as np


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)))


def _range(low, high, above=None, below=None) -> str:
    parts = []
    if above is not None:
        parts.append(f"> {above:g}" if isinstance(above, float) else f"> {above}")
    elif low is not None:
        parts.append(f">= {low:g}" if isinstance(low, float) else f">= {low}")
    if below is not None:
        parts.append(f"< {below:g}" if isinstance(below, float) else f"< {below}")
    elif high is not None:
        parts.append(f"<= {high:g}" if isinstance(high, float) else f"<= {high}")
    return " and ".join(parts)


def integer(name: str, value, *, low: int | None = None, high: int | None = None, optional: bool = False) -> int | None:
    """``value`` as an int in ``[low, high]`` (``None`` allowed when ``optional``)."""
    if value is None and optional:
        return None
    if not _is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        bounds = _range(low, high)
        what = f"an int {bounds}".rstrip() + (" or None" if optional else "")
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def number(name: str, value, *, low: float | None = None, high: float | None = None, above: float | None = None,
           below: float | None = None, optional: bool = False) -> float | None:
    """``value`` as a finite float with ``low <= value <= high`` (``above``/``below``: strict)."""
    if value is None and optional:
        return None
    ok = _is_number(value) and math.isfinite(value)
    if ok:
        ok = ((low is None or value >= low) and (high is None or value <= high)
              and (above is None or value > above) and (below is None or value < below))
    if not ok:
        bounds = _range(low, high, above, below)
        what = f"a finite number {bounds}".rstrip() + (" or None" if optional else "")
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return float(value)


def fraction(name: str, value, *, zero: bool = False, one: bool = False) -> float:
    """A ratio in the open interval (0, 1), closed at 0 with ``zero`` and at 1 with ``one``."""
    ok = _is_number(value) and math.isfinite(value)
    ok = ok and (value >= 0 if zero else value > 0) and (value <= 1 if one else value < 1)
    if not ok:
        interval = f"{'[' if zero else '('}0, 1{']' if one else ')'}"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


def choice(name: str, value, allowed: Iterable, *, optional: bool = False):
    """``value`` if it is one of ``allowed`` (or ``None`` when ``optional``)."""
    allowed = tuple(allowed)
    if value is None and optional:
        return None
    if not isinstance(value, (str, int, float, type(None))) or value not in allowed:
        listed = ", ".join(map(str, allowed)) + (" or None" if optional else "")
        raise ValueError(f"{name} must be one of {listed}, got {value!r}")
    return value


def flag(name: str, value) -> bool:
    """``value`` if it is ``True`` or ``False``."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def text(name: str, value, example: str) -> str:
    """A non-empty string (``example`` shows what one looks like)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string such as {example}, got {value!r}")
    return value


def json_dict(name: str, value) -> dict:
    """A dict of JSON values only (str, number, bool, None, list, dict)."""
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a dict of JSON values, got {type(value).__name__}")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must hold only JSON values (str, number, bool, None, list, dict), got {value!r}") from None
    return value


def known(owner: str, given: Iterable[str], allowed: Iterable[str], what: str = "option") -> None:
    """Raise naming the first of ``given`` that is not in ``allowed`` (e.g. a misspelt option)."""
    allowed = tuple(allowed)
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f"{owner} has no {what} {unknown[0]!r}; allowed: {', '.join(allowed) or 'none'}")
