"""Pruning: schemes, projections, schedules, physical channel removal, and size counting.

Structured pruning removes *input-channel groups* ``W[:, i, :, :]`` of a conv (METHOD.md); the
matching output filter and BN channel of the producing conv go with them, so the student becomes
a physically smaller dense network (:func:`remove_channels`). Unstructured pruning zeroes single
weights, the same fraction in every fitted layer.

A plan is a :class:`ChannelPruning` (``keep``: site name → kept input channels) or a
:class:`WeightPruning` (``sparsity``: fraction of weights removed per layer). :func:`parse`
builds either from a short string: ``VGG-A``, ``VGG-B``, ``VGG-C``, ``VGG-50``, ``Res-30``,
``Res-50``, ``Res-70``, ``keep:0.5`` (any VGG/ResNet, uniform), ``sparse:0.9`` or ``none``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from .sites import find_sites

#: Kept input channels of conv1..conv13 of VGG-16 (METHOD.md; conv1 = the image, 3 channels).
VGG16_SCHEMES = {
    "VGG-A": [3, 32, 64, 128, 128, 256, 256, 256, 256, 256, 256, 256, 256],
    "VGG-B": [3, 26, 52, 103, 103, 205, 205, 205, 205, 256, 205, 205, 205],
    "VGG-C": [3, 26, 32, 64, 64, 128, 128, 128, 128, 128, 205, 205, 205],
}
#: ResNet-34 blocks left whole by the Res-r schemes (METHOD.md).
RESNET_SENSITIVE = ("layer1.2", "layer2.2", "layer2.3", "layer3.4", "layer3.5")
SCHEMES = ("none", *VGG16_SCHEMES, "VGG-50", "Res-30", "Res-50", "Res-70", "keep:<ratio>", "sparse:<ratio>")
#: Unstructured sparsities of the paper.
SPARSITIES = (0.5, 0.7, 0.9, 0.95)


@dataclass(frozen=True)
class ChannelPruning:
    """Structured pruning: ``keep[site] = kept input channels``; sites not listed keep all."""

    keep: dict[str, int]
    scheme: str = "custom"
    kind: str = field(default="structured", init=False)


@dataclass(frozen=True)
class WeightPruning:
    """Unstructured pruning: remove the fraction ``sparsity`` of the weights of every fitted layer."""

    sparsity: float
    scheme: str = "custom"
    kind: str = field(default="unstructured", init=False)

    def kept_weights(self, numel: int) -> int:
        return max(1, numel - int(round(self.sparsity * numel)))


def _check_ratio(name: str, value) -> float:
    try:
        ratio = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}") from None
    if math.isnan(ratio) or not 0.0 < ratio <= 1.0:
        raise ValueError(f"{name} must lie in (0, 1], got {value!r}")
    return ratio


def _kept(channels: int, keep_ratio: float) -> int:
    return max(1, int(math.floor(channels * keep_ratio + 0.5)))


def structured(model: nn.Module, scheme) -> ChannelPruning:
    """A structured plan for ``model``: a scheme name (``VGG-A``/``B``/``C``/``50``,
    ``Res-30``/``50``/``70``), a uniform keep ratio in (0, 1], or a list of kept input channels
    of every conv of a VGG (first entry = the image's channels, which is never pruned)."""
    sites = find_sites(model)
    modules = dict(model.named_modules())
    width = {s.name: modules[s.name].in_channels for s in sites}
    if isinstance(scheme, (list, tuple)):
        if len(scheme) != len(sites) + 1:
            raise ValueError(f"a channel list needs {len(sites) + 1} entries (one per conv), got {len(scheme)}")
        keep = dict(zip([s.name for s in sites], scheme[1:]))
        name = "custom"
    elif isinstance(scheme, str) and scheme in VGG16_SCHEMES:
        if len(sites) != 12:
            raise ValueError(f"{scheme} is a VGG-16 scheme (13 convs); this model has {len(sites) + 1} convs")
        keep = dict(zip([s.name for s in sites], VGG16_SCHEMES[scheme][1:]))
        name = scheme
    elif scheme == "VGG-50":
        keep = {s.name: _kept(width[s.name], 0.5) for s in sites}
        name = scheme
    elif isinstance(scheme, str) and scheme in ("Res-30", "Res-50", "Res-70"):
        removed = int(scheme[4:]) / 100
        keep = {}
        for s in sites:
            if not s.prunable or not s.name.startswith("layer"):
                continue
            block, stage = s.name.rsplit(".", 1)[0], s.name[:6]
            if stage == "layer4":
                if scheme == "Res-70":
                    keep[s.name] = _kept(width[s.name], 0.5)
            elif block not in RESNET_SENSITIVE:
                keep[s.name] = _kept(width[s.name], 1 - removed)
        if not keep:
            raise ValueError(f"{scheme} is a ResNet-34 scheme; this model has no prunable ResNet blocks")
        name = scheme
    elif isinstance(scheme, (int, float)) and not isinstance(scheme, bool):
        ratio = _check_ratio("keep ratio", scheme)
        keep = {s.name: _kept(width[s.name], ratio) for s in sites if s.prunable}
        name = f"keep:{ratio:g}"
    else:
        raise ValueError(f"unknown structured scheme {scheme!r}; allowed: {', '.join(SCHEMES[1:-1])} or a ratio in (0, 1]")
    for site, kept in keep.items():
        if not isinstance(kept, int) or not 1 <= kept <= width[site]:
            raise ValueError(f"site {site} has {width[site]} input channels; cannot keep {kept!r}")
    prunable = {s.name for s in sites if s.prunable}
    bad = [s for s, k in keep.items() if k < width[s] and s not in prunable]
    if bad:
        raise ValueError(f"the input channels of {bad[0]} cannot be pruned (residual stream or image)")
    return ChannelPruning({s: k for s, k in keep.items() if k < width[s]}, name)


def unstructured(sparsity: float) -> WeightPruning:
    """Remove ``sparsity`` (a fraction in (0, 1)) of the weights of every fitted layer."""
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise ValueError(f"sparsity must be a fraction in (0, 1), got {sparsity!r}") from None
    if math.isnan(value) or not 0.0 < value < 1.0:
        raise ValueError(f"sparsity must be a fraction in (0, 1) (e.g. 0.9 for 90 % removed), got {sparsity!r}")
    return WeightPruning(value, f"sparse:{value:g}")


def parse(model: nn.Module, spec: str | None):
    """A plan from a string (see module docstring); ``None``/``"none"`` means no pruning."""
    if spec is None or spec == "none":
        return None
    if not isinstance(spec, str):
        raise ValueError(f"pruning spec must be a string, got {spec!r}")
    if spec.startswith("sparse:"):
        return unstructured(spec.partition(":")[2])
    if spec.startswith("keep:"):
        return structured(model, _check_ratio("keep ratio", spec.partition(":")[2]))
    return structured(model, spec)


# --- projections -------------------------------------------------------------------------------


def group_norms(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    """L2 norm of each input-channel group of ``weight`` (C_out, C_in·k) -> (C_in,)."""
    return weight.reshape(weight.shape[0], -1, group_size).pow(2).sum((0, 2)).sqrt()


def columns_of(channels: torch.Tensor, group_size: int) -> torch.Tensor:
    """Column indices (into C_in·k) of the given input channels."""
    offsets = torch.arange(group_size, device=channels.device)
    return (channels[:, None] * group_size + offsets).reshape(-1)


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
    scores = torch.where(mask, weight.abs(), torch.full_like(weight, -1.0)).flatten()
    order = torch.argsort(-scores, stable=True)
    new = torch.zeros_like(scores, dtype=torch.bool)
    new[order[:budget]] = True
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


# --- physical removal and size ----------------------------------------------------------------


def _narrow_(module: nn.Module, index: torch.Tensor, dim: int) -> None:
    """Keep only ``index`` along ``dim`` (0 = output, 1 = input channels) of a conv or BN, in place."""
    def sliced(tensor):
        return tensor.detach().index_select(dim, index).clone()

    if isinstance(module, nn.Conv2d):
        module.weight = nn.Parameter(sliced(module.weight))
        if dim == 0:
            if module.bias is not None:
                module.bias = nn.Parameter(module.bias.detach()[index].clone())
            module.out_channels = len(index)
        else:
            module.in_channels = len(index)
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        module.weight = nn.Parameter(sliced(module.weight))
        module.bias = nn.Parameter(sliced(module.bias))
        module.running_mean = sliced(module.running_mean)
        module.running_var = sliced(module.running_var)
        module.num_features = len(index)
    else:
        raise ValueError(f"cannot narrow a {type(module).__name__}")


@torch.no_grad()
def remove_channels(model: nn.Module, kept_channels: dict[str, torch.Tensor | list[int]]) -> nn.Module:
    """Physically remove pruned channels, in place: for each site, keep only the input channels
    ``kept_channels[site]`` of its conv, and the matching output filters of its producer conv and
    channels of the producer's BN. The result is a smaller dense network whose outputs equal the
    masked network's (the removed channels only ever met zero weights). Returns ``model``."""
    sites = {s.name: s for s in find_sites(model)}
    modules = dict(model.named_modules())
    for name, kept in kept_channels.items():
        site = sites.get(name)
        if site is None:
            raise ValueError(f"{name!r} is not a conv site of this model")
        index = torch.as_tensor(kept, dtype=torch.long, device=modules[name].weight.device)
        if len(index) == modules[name].in_channels:
            continue
        if not site.prunable:
            raise ValueError(f"the input channels of {name} cannot be removed (no producer conv)")
        _narrow_(modules[name], index, 1)
        _narrow_(modules[site.producer], index, 0)
        _narrow_(modules[site.producer_bn], index, 0)
    return model


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
    ``"effective"``: each conv's FLOPs scaled by its weights' density (what unstructured sparsity
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
        if isinstance(module, nn.Conv2d):
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


@torch.no_grad()
def l1_filter_prune(model: nn.Module, plan) -> tuple[nn.Module, dict[str, list[int]], dict[str, torch.Tensor]]:
    """Data-free magnitude pruning of a copy of ``model`` (the L1-norm baseline, Li et al. 2017).

    Structured: for each site, keep the input channels whose producing filters have the largest
    L1 norm, then remove the rest physically. Unstructured: in each fitted layer, zero the
    ``sparsity`` fraction of weights with the smallest magnitude. Returns ``(pruned model,
    kept_channels, masks)``; the original is untouched.
    """
    import copy

    pruned = copy.deepcopy(model)
    modules = dict(pruned.named_modules())
    kept_channels, masks = {}, {}
    for site in find_sites(pruned):
        conv = modules[site.name]
        if isinstance(plan, ChannelPruning) and site.name in plan.keep:
            filters = modules[site.producer].weight  # (C_in of site, ...)
            norms = filters.abs().flatten(1).sum(1)
            order = torch.argsort(-norms, stable=True)
            kept_channels[site.name] = torch.sort(order[: plan.keep[site.name]]).values.tolist()
        elif isinstance(plan, WeightPruning):
            flat = conv.weight.reshape(conv.out_channels, -1)
            mask = keep_top_weights(flat, torch.ones_like(flat, dtype=torch.bool), plan.kept_weights(flat.numel()))
            conv.weight.mul_(mask.reshape(conv.weight.shape))
            masks[site.name] = mask.reshape(conv.weight.shape)
    if kept_channels:
        remove_channels(pruned, kept_channels)
    return pruned, kept_channels, masks
