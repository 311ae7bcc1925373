"""Batch-norm handling and input capture of the fitted layers (*sites*, found by :mod:`xdnb.graph`).

Two words for batch norm, one per level:

- a *BN mode* (:data:`BN_MODES`: ``reestimate``, ``keep``, ``train``) is what a method does with the
  student's BN layers (every ``bn`` option of xdnb takes one);
- the *statistics* of a forward pass (:data:`xdnb.graph.STATISTICS`: ``running`` or ``batch``) are
  what the BN layers normalise with during that pass; mode ``train`` captures with ``batch``
  statistics (the reference code's train-mode capture, without touching running statistics), the
  other modes with ``running`` ones (:func:`capture_statistics`).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from . import checks
from .graph import BN_TYPES, SiteStream, bn_batch_statistics, capture_input, capture_inputs  # noqa: F401 (re-exported)

BN_MODES = ("reestimate", "keep", "train")
BN_DESCRIPTIONS = {
    "reestimate": "eval-mode capture; each student BN re-estimated on the K-shot images once its conv is fitted",
    "keep": "eval-mode capture; the student keeps the teacher's BN statistics",
    "train": "train-mode capture (batch statistics) as in the reference code; student BN re-estimated at the end",
}


def check_bn_mode(bn: str) -> str:
    return checks.choice("bn", bn, BN_MODES)


def capture_statistics(bn: str) -> str:
    """The statistics a capture pass uses under BN mode ``bn``: ``batch`` for ``train``, else ``running``."""
    return "batch" if check_bn_mode(bn) == "train" else "running"


def batch_norms(model: nn.Module) -> list[str]:
    """Names of all batch-norm modules (1-d and 2-d) with running statistics, in registration order."""
    return [n for n, m in model.named_modules() if isinstance(m, BN_TYPES) and m.running_mean is not None]


@torch.no_grad()
def set_bn_statistics(bn: nn.Module, inputs) -> None:
    """Set ``bn``'s running mean and (biased) variance to those of ``inputs``: a tensor (N, C, ...)
    or chunks of one (an iterable of (N_i, C, ...) tensors, e.g. streamed), whose per-chunk means
    and variances are pooled exactly (Chan et al.): the same statistics as from all at once."""
    chunks = [inputs] if isinstance(inputs, torch.Tensor) else inputs
    count, mean, m2 = 0, None, None
    for x in chunks:
        dims = [0] + list(range(2, x.ndim))
        x64 = x.double()
        n = x64.numel() // x64.shape[1]
        m, v = x64.mean(dims), x64.var(dims, unbiased=False)
        if mean is None:
            count, mean, m2, variance = n, m, v * n, v
            continue
        delta, total = m - mean, count + n
        mean = mean + delta * (n / total)
        m2 = m2 + v * n + delta.pow(2) * (count * n / total)
        count, variance = total, None
    if mean is None:
        raise ValueError("set_bn_statistics needs at least one input")
    bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
    # one chunk: its variance as computed, not m2 / n (which can differ in the last bit)
    bn.running_var.copy_((m2 / count if variance is None else variance).to(bn.running_var.dtype))


@torch.no_grad()
def reestimate_bn(model: nn.Module, images: torch.Tensor, names: Sequence[str] | None = None,
                  batch_size: int | None = None) -> None:
    """Set the running mean and variance of the BN layers ``names`` (default: all) to the exact
    statistics of their inputs on ``images``, front to back, in one forward pass.

    Each layer is measured with the earlier layers already re-estimated, and the variance stored
    is the biased one the batch normalisation itself uses, so in eval mode the network then
    normalises ``images`` exactly as train-mode BN would on that one batch. Only running
    statistics change (no affine parameter, no other buffer).
    """
    names = batch_norms(model) if names is None else list(names)
    modules = dict(model.named_modules())
    for name in names:
        bn = modules.get(name)
        if not isinstance(bn, BN_TYPES) or bn.running_mean is None:
            raise ValueError(f"{name!r} is not a batch-norm layer with running statistics")
    for name, x in SiteStream(model, [], images, batch_size, bns=names):
        set_bn_statistics(modules[name], x)
