"""Atomic file writes: a reader sees the old file or the whole new one, never half of it.

Everything xdnb writes that a later run reads back (results tables, model cards, checkpoints,
preset outputs, benchmark stores) goes through :func:`replace_with`: write a uniquely named
temporary file beside the target, flush it to disk, then rename it over the target. A crash or a
second process writing the same file at once leaves either the old content or a whole new one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def replace_with(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(temporary_path)`` and rename that file over ``path`` (its folder is made).

    The temporary file gets the permissions a plain ``open`` would give (``mkstemp`` makes 0600
    files); on any error it is removed and ``path`` is left as it was. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(temporary)
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return replace_with(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))
