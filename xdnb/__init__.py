"""xdnb: few-shot network compression via cross distillation (Bai et al., AAAI 2020).

The library is organised one idea per module: :mod:`xdnb.data` (datasets and K-shot sampling),
:mod:`xdnb.models` (VGG / ResNet and teachers), :mod:`xdnb.objectives` (the five layer-wise
losses), :mod:`xdnb.pruning` (schemes, masks, physical removal), :mod:`xdnb.distill` (the
layer-wise engine), :mod:`xdnb.metrics` (accuracy and per-layer errors).
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__version__ = "0.1.0"

__all__ = ["setup", "__version__"]


def setup(seed: int = 0, threads: int | None = 1) -> None:
    """Seed python, numpy and torch, and pin torch's CPU thread count.

    Torch CPU float results differ between 1 and 2 threads (reductions are split differently),
    so anything whose numbers are stored (notebook outputs, benchmark tables) runs with the same
    ``threads``. ``threads=None`` leaves torch's thread count alone.
    """
    from . import checks

    checks.integer("seed", seed, low=0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads!r}")
        torch.set_num_threads(int(threads))
        os.environ["OMP_NUM_THREADS"] = str(int(threads))
