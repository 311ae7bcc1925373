"""The size of a network: parameters (all and non-zero) and FLOPs of one forward pass."""

from __future__ import annotations

import torch
from torch import nn


def measure(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """``{"params", "nonzero", "flops_dense", "flops_effective"}`` of ``model`` on one input of
    ``input_shape`` (C, H, W): :func:`count_params` and :func:`count_flops` in one dict."""
    return {**count_params(model), **{f"flops_{k}": v for k, v in count_flops(model, input_shape).items()}}


def count_params(model: nn.Module) -> dict[str, int]:
    """``{"params": all parameters, "nonzero": non-zero parameters}`` (the latter counts what
    unstructured pruning removes)."""
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    return {"params": params, "nonzero": nonzero}


@torch.no_grad()
def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """FLOPs of one forward pass on one input of ``input_shape`` (C, H, W), counted by
    ``torch.utils.flop_counter`` (a multiply-add = 2 FLOPs). ``"dense"``: all FLOPs;
    ``"effective"``: each conv's (and linear's) FLOPs scaled by its weights' density (what unstructured sparsity
    could save)."""
    from torch.utils.flop_counter import FlopCounterMode

    parameter = next(model.parameters())
    x = torch.zeros(1, *input_shape, dtype=parameter.dtype, device=parameter.device)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    model.train(was_training)
    dense = int(counter.get_total_flops())
    saved = 0.0
    per_module = counter.get_flop_counts()
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            key = next((k for k in per_module if k == name or k.endswith("." + name)), None)
            if key is None:
                continue
            flops = sum(per_module[key].values())
            density = float(torch.count_nonzero(module.weight)) / module.weight.numel()
            saved += flops * (1.0 - density)
    return {"dense": dense, "effective": int(round(dense - saved))}


def sparsity_of(weight: torch.Tensor) -> float:
    """Fraction of zero entries."""
    return 1.0 - float(torch.count_nonzero(weight)) / weight.numel()
