"""Projections onto a pruning budget, shared by the solvers: keep the largest input-channel groups
or weights, the budget's linear schedule, and the proximal operators of the group lasso and L1.

Weights are 2-D, (C_out, D) with D = C_in·k (``k`` = kernel positions per input channel,
``group_size``); channel ``i`` owns columns ``i·k .. i·k + k − 1``.
"""

from __future__ import annotations

import math

import torch


def group_norms(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    """L2 norm of each input-channel group of ``weight`` (C_out, C_in·k) -> (C_in,)."""
    return weight.reshape(weight.shape[0], -1, group_size).pow(2).sum((0, 2)).sqrt()


def keep_top_channels(weight: torch.Tensor, kept: torch.Tensor, budget: int, group_size: int) -> torch.Tensor:
    """Of the channels ``kept``, the ``budget`` whose weight groups have the largest L2 norm
    (sorted ascending; ties go to the lower index)."""
    if budget >= len(kept):
        return kept
    norms = group_norms(weight, group_size)[kept]
    order = torch.argsort(-norms, stable=True)
    return torch.sort(kept[order[:budget]]).values


def keep_top_weights(weight: torch.Tensor, mask: torch.Tensor, budget: int) -> torch.Tensor:
    """A mask keeping the ``budget`` largest-magnitude weights inside ``mask``."""
    if budget >= int(mask.sum()):
        return mask
    if budget <= 0:
        return torch.zeros_like(mask)
    scores = torch.where(mask, weight.abs(), torch.full_like(weight, -1.0)).flatten()
    # A selection, not a sort (this runs on millions of weights every round): every score above
    # the budget-th largest, then as many of those equal to it as fit, lowest index first (what a
    # stable descending sort would keep).
    threshold = -torch.kthvalue(-scores, budget).values
    new = scores > threshold
    ties = torch.nonzero(scores == threshold).flatten()
    new[ties[: budget - int(new.sum())]] = True
    return new.reshape(mask.shape)


def linear_budget(total: int, target: int, done: int, ramp: int) -> int:
    """The annealed budget after ``done`` of ``ramp`` steps: falls linearly from ``total`` to
    ``target`` (the reference code's schedule)."""
    if ramp <= 0 or done >= ramp:
        return target
    return total - int(math.ceil((total - target) * done / ramp))


def group_soft_threshold(weight: torch.Tensor, threshold: float, group_size: int) -> torch.Tensor:
    """Proximal operator of ``threshold·Σ_i ‖W[:, i]‖₂`` (group lasso) on ``weight`` (C_out, D)."""
    groups = weight.reshape(weight.shape[0], -1, group_size)
    norms = groups.pow(2).sum((0, 2), keepdim=True).sqrt()
    shrink = (1 - threshold / norms.clamp_min(1e-30)).clamp_min(0.0)
    return (groups * shrink).reshape(weight.shape)


def soft_threshold(weight: torch.Tensor, threshold: float) -> torch.Tensor:
    """Proximal operator of ``threshold·‖W‖₁``."""
    return torch.sign(weight) * (weight.abs() - threshold).clamp_min(0.0)
