"""One progress-bar helper for all long work, silenced by ``XDNB_QUIET=1`` (CI, papermill logs)."""

from __future__ import annotations

import os
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def quiet() -> bool:
    """True when progress bars are switched off (``XDNB_QUIET`` set to anything but 0/empty)."""
    return os.environ.get("XDNB_QUIET", "") not in ("", "0")


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, leave: bool = False, enabled: bool = True):
    """Wrap ``iterable`` in a ``tqdm.auto`` bar unless progress is silenced."""
    return tqdm(iterable, desc=desc, total=total, leave=leave, disable=quiet() or not enabled)
