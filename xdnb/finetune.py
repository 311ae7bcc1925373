"""End-to-end cross-entropy fine-tuning on the K-shot labelled set, keeping pruning masks.

Used optionally after :func:`xdnb.distill.compress` (off by default) and by the BP baseline.
Unstructured masks are enforced with ``torch.nn.utils.prune`` during training (so a pruned
weight stays exactly zero whatever the optimiser does) and made permanent at the end.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn
from torch.nn.utils import prune

from .progress import progress
from .sites import check_bn_mode


def finetune(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, steps: int = 200, lr: float = 1e-3,
             weight_decay: float = 5e-4, masks: dict[str, torch.Tensor] | None = None, batch_size: int | None = None,
             bn: str = "keep", seed: int = 0, show_progress: bool = True,
             loss: Callable[[torch.Tensor, object], torch.Tensor] | None = None,
             extra_parameters: Iterable[nn.Parameter] = ()) -> nn.Module:
    """Fine-tune ``model`` in place with SGD (momentum 0.9) on ``images`` (N, C, H, W) and
    ``labels`` (N,); returns it in eval mode.

    ``masks``: module name -> bool mask of that module's weight (True = kept). ``bn``: a BN
    mode (:data:`xdnb.sites.BN_MODES`); ``"train"`` lets BN use batch statistics and update its
    running statistics, ``"keep"`` and ``"reestimate"`` freeze them (the default, the safer choice
    with a handful of images). ``batch_size=None`` uses the whole set each step.
    ``loss(logits, batch)``: replaces the cross-entropy (``batch`` indexes the images of the step,
    a slice or an index tensor); ``extra_parameters`` are optimised too (e.g. FitNet regressors).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps!r}")
    if steps == 0:
        return model.eval()
    device = next(model.parameters()).device
    images, labels = images.to(device), labels.to(device)
    masks = masks or {}
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        prune.custom_from_mask(modules[name], "weight", mask.to(device))
    optimizer = torch.optim.SGD([*model.parameters(), *extra_parameters], lr=lr, momentum=0.9, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    model.train(check_bn_mode(bn) == "train")  # else BN (and everything else) in eval mode
    try:
        for _ in progress(range(steps), desc="fine-tuning", enabled=show_progress):
            batch = torch.randperm(len(images), generator=generator)[:batch_size] if batch_size else slice(None)
            logits = model(images[batch])
            value = nn.functional.cross_entropy(logits, labels[batch]) if loss is None else loss(logits, batch)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
    finally:
        for name in masks:
            prune.remove(modules[name], "weight")
    return model.eval()
