"""Pruning: plans, projections, schedules, physical channel removal, and size counting.

Structured pruning removes *input-channel groups* ``W[:, i, :, :]`` of a fitted layer; the
producing layer's output filters and everything coupled to them go too (:mod:`xdnb.graph`), so
the student becomes a physically smaller dense network (:func:`remove_channels`). Unstructured
pruning zeroes single weights, the same fraction in every fitted layer.

A plan is a :class:`ChannelPruning` (``keep``: site name → kept input channels) or a
:class:`WeightPruning` (``sparsity``: fraction of weights removed per layer). :func:`parse`
builds either for a traced model (:func:`xdnb.graph.trace`) from a short string or a mapping:

- ``keep:R``: every prunable conv site keeps ``round(R·C_in)`` input channels (any model);
- ``{layer: channels or ratio}``: a per-layer mapping (an int keeps that many, a float in (0, 1]
  keeps that fraction); layers not named keep all;
- ``sparse:R``: remove the fraction R of the weights of every fitted layer (any model);
- ``VGG-A``, ``VGG-B``, ``VGG-C``, ``VGG-50``: the paper's VGG-16 schemes (13 convs);
- ``Res-30``, ``Res-50``, ``Res-70``: the paper's ResNet schemes, for every torchvision ResNet: the
  inputs of each block's inner convs (``conv2``, and ``conv3`` in a Bottleneck) keep ``1 − r``;
  stage 4 stays whole (halved for Res-70); on ResNet-34 the paper's sensitive blocks are skipped;
- ``none``.

Sites whose inputs cannot be pruned (a residual stream, the image, …) stay at full width; a
plan's :meth:`ChannelPruning.describe` lists them with the reason.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
from torch import nn

from .graph import ModelGraph, input_width, remove_channels as _remove_group_channels, trace

#: Kept input channels of conv1..conv13 of VGG-16 (the paper's; conv1 = the image, 3 channels).
VGG16_SCHEMES = {
    "VGG-A": [3, 32, 64, 128, 128, 256, 256, 256, 256, 256, 256, 256, 256],
    "VGG-B": [3, 26, 52, 103, 103, 205, 205, 205, 205, 256, 205, 205, 205],
    "VGG-C": [3, 26, 32, 64, 64, 128, 128, 128, 128, 128, 205, 205, 205],
}
#: ResNet-34 blocks left whole by the Res-r schemes (the paper's sensitive blocks).
RESNET34_SENSITIVE = ("layer1.2", "layer2.2", "layer2.3", "layer3.4", "layer3.5")
RES_SCHEMES = ("Res-30", "Res-50", "Res-70")
SCHEMES = ("none", *VGG16_SCHEMES, "VGG-50", *RES_SCHEMES, "keep:<ratio>", "sparse:<ratio>")
#: Unstructured sparsities of the paper.
SPARSITIES = (0.5, 0.7, 0.9, 0.95)


@dataclass(frozen=True)
class ChannelPruning:
    """Structured pruning: ``keep[site] = kept input channels``; sites not listed keep all.
    ``full_width``: site -> why it stays whole (the sites the plan could not or did not prune)."""

    keep: dict[str, int]
    scheme: str = "custom"
    full_width: dict[str, str] = field(default_factory=dict, compare=False)
    kind: str = field(default="structured", init=False)

    def describe(self) -> str:
        """The plan in words: what is pruned and which layers stay at full width, and why."""
        lines = [f"{self.scheme}: {len(self.keep)} layers pruned"]
        lines += [f"  {site}: {kept} input channels kept" for site, kept in self.keep.items()]
        if self.full_width:
            lines.append(f"  at full width ({len(self.full_width)}):")
            lines += [f"    {site}: {why}" for site, why in self.full_width.items()]
        return "\n".join(lines)


@dataclass(frozen=True)
class WeightPruning:
    """Unstructured pruning: remove the fraction ``sparsity`` of the weights of every fitted layer."""

    sparsity: float
    scheme: str = "custom"
    kind: str = field(default="unstructured", init=False)

    def kept_weights(self, numel: int) -> int:
        return max(1, numel - int(round(self.sparsity * numel)))

    def describe(self) -> str:
        return f"{self.scheme}: {100 * self.sparsity:g} % of the weights of every fitted layer removed"


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


def _res_scheme(graph: ModelGraph, scheme: str, width: dict[str, int]) -> dict[str, int]:
    """Res-r on a torchvision ResNet (see module docstring)."""
    from torchvision.models.resnet import BasicBlock, ResNet

    model = graph.model
    if not isinstance(model, ResNet):
        raise ValueError(f"{scheme} is defined for torchvision ResNets; this model is a {type(model).__name__} "
                         "(use keep:R or a per-layer mapping)")
    removed = int(scheme[4:]) / 100
    blocks = [len(getattr(model, f"layer{i}")) for i in range(1, 5)]
    resnet34 = blocks == [3, 4, 6, 3] and isinstance(model.layer1[0], BasicBlock)
    keep = {}
    for site in graph.sites:
        match = re.fullmatch(r"(layer([1-4])\.\d+)\.conv[23]", site.name)
        if match is None or not site.prunable:
            continue
        block, stage = match.group(1), match.group(2)
        if stage == "4":
            if scheme == "Res-70":
                keep[site.name] = _kept(width[site.name], 0.5)
        elif not (resnet34 and block in RESNET34_SENSITIVE):
            keep[site.name] = _kept(width[site.name], 1 - removed)
    return keep


def structured(graph: ModelGraph, scheme) -> ChannelPruning:
    """A structured plan for a traced model (see module docstring): a scheme name, a uniform keep
    ratio in (0, 1], a mapping {layer: kept channels (int) or ratio (float)}, or a list of kept
    input channels of every conv site (the image conv's entry first, never pruned)."""
    sites = graph.sites
    modules = dict(graph.model.named_modules())
    width = {s.name: input_width(modules[s.name]) for s in sites}
    convs = [s for s in sites if s.kind == "conv"]
    if isinstance(scheme, (list, tuple)):
        if len(scheme) != len(convs) + 1:
            raise ValueError(f"a channel list needs {len(convs) + 1} entries (one per conv), got {len(scheme)}")
        keep = dict(zip([s.name for s in convs], scheme[1:]))
        name = "custom"
    elif isinstance(scheme, dict):
        keep = {}
        for layer, value in scheme.items():
            if layer not in width:
                raise ValueError(f"{layer!r} is not a fitted layer of this model; fitted layers: "
                                 f"{', '.join(list(width)[:8])}{', …' if len(width) > 8 else ''}")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{layer}: keep an int number of channels or a ratio in (0, 1], got {value!r}")
            keep[layer] = value if isinstance(value, int) else _kept(width[layer], _check_ratio(f"{layer} keep ratio", value))
        name = "custom"
    elif isinstance(scheme, str) and scheme in VGG16_SCHEMES:
        if len(convs) != 12:
            raise ValueError(f"{scheme} is a VGG-16 scheme (13 convs); this model has {len(convs) + len(graph.stems)} convs")
        keep = dict(zip([s.name for s in convs], VGG16_SCHEMES[scheme][1:]))
        name = scheme
    elif scheme == "VGG-50":
        keep = {s.name: _kept(width[s.name], 0.5) for s in convs if s.prunable}
        name = scheme
    elif isinstance(scheme, str) and scheme in RES_SCHEMES:
        keep = _res_scheme(graph, scheme, width)
        name = scheme
    elif isinstance(scheme, (int, float)) and not isinstance(scheme, bool):
        ratio = _check_ratio("keep ratio", scheme)
        keep = {s.name: _kept(width[s.name], ratio) for s in convs if s.prunable}
        name = f"keep:{ratio:g}"
    else:
        raise ValueError(f"unknown structured scheme {scheme!r}; allowed: {', '.join(SCHEMES[1:-1])}, "
                         "a ratio in (0, 1] or a mapping {layer: channels or ratio}")
    for site, kept in keep.items():
        if isinstance(kept, bool) or not isinstance(kept, int) or not 1 <= kept <= width[site]:
            raise ValueError(f"site {site} has {width[site]} input channels; cannot keep {kept!r}")
    reasons = {s.name: s.reason for s in sites}
    bad = [s for s, k in keep.items() if k < width[s] and reasons[s]]
    if bad:
        raise ValueError(f"the input channels of {bad[0]} cannot be pruned: {reasons[bad[0]]}")
    keep = {s: k for s, k in keep.items() if k < width[s]}
    full_width = {s.name: s.reason or "not pruned by this scheme" for s in sites if s.name not in keep}
    return ChannelPruning(keep, name, full_width)


def unstructured(sparsity: float) -> WeightPruning:
    """Remove ``sparsity`` (a fraction in (0, 1)) of the weights of every fitted layer."""
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise ValueError(f"sparsity must be a fraction in (0, 1), got {sparsity!r}") from None
    if math.isnan(value) or not 0.0 < value < 1.0:
        raise ValueError(f"sparsity must be a fraction in (0, 1) (e.g. 0.9 for 90 % removed), got {sparsity!r}")
    return WeightPruning(value, f"sparse:{value:g}")


def parse(graph: ModelGraph, spec):
    """A plan for the traced model ``graph`` from a spec (see module docstring): a string, a
    mapping, a plan (returned as is) or ``None``/``"none"`` (no pruning)."""
    if spec is None or spec == "none":
        return None
    if isinstance(spec, (ChannelPruning, WeightPruning)):
        return spec
    if isinstance(spec, dict):
        return structured(graph, spec)
    if not isinstance(spec, str):
        raise ValueError(f"pruning spec must be a string (e.g. 'keep:0.5', 'VGG-A', 'sparse:0.9'), a mapping "
                         f"{{layer: channels}} or None, got {spec!r}")
    if spec.startswith("sparse:"):
        return unstructured(spec.partition(":")[2])
    if spec.startswith("keep:"):
        return structured(graph, _check_ratio("keep ratio", spec.partition(":")[2]))
    return structured(graph, spec)


# --- projections -------------------------------------------------------------------------------


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


@torch.no_grad()
def remove_channels(model: nn.Module, kept_channels: dict[str, torch.Tensor | list[int]],
                    input_shape: tuple[int, ...]) -> nn.Module:
    """Physically remove pruned channels, in place: for each site, keep only the input channels
    ``kept_channels[site]`` (teacher numbering) with everything coupled to them (the producing
    layers' filters, norms, depthwise convs; :func:`xdnb.graph.remove_channels`). The result is a
    smaller dense network whose outputs equal the masked network's (the removed channels only
    ever met zero weights). ``input_shape``: (C, H, W) of one input, to trace the model. Returns
    ``model``."""
    if not kept_channels:
        return model
    return _remove_group_channels(trace(model, input_shape, linear=_has_linear_sites(kept_channels, model)), kept_channels)


def _has_linear_sites(kept_channels, model) -> bool:
    modules = dict(model.named_modules())
    return any(isinstance(modules.get(name), nn.Linear) for name in kept_channels)


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


@torch.no_grad()
def l1_filter_prune(graph: ModelGraph, plan) -> tuple[nn.Module, dict[str, list[int]], dict[str, torch.Tensor]]:
    """Data-free magnitude pruning of a copy of the traced model (the L1-norm baseline, Li et al. 2017).

    Structured: for each site, keep the input channels whose producing filters have the largest
    L1 norm (summed over the producers when several feed it, e.g. through a concat), then remove
    the rest physically. Unstructured: in each fitted layer, zero the ``sparsity`` fraction of
    weights with the smallest magnitude (biases untouched). Returns ``(pruned model,
    kept_channels, masks)``; the original is untouched.
    """
    import copy

    from .graph import channel_map

    pruned = copy.deepcopy(graph.model)
    teacher_modules, modules = dict(graph.model.named_modules()), dict(pruned.named_modules())
    kept_channels, masks = {}, {}
    for site in graph.sites:
        layer = modules[site.name]
        if isinstance(plan, ChannelPruning) and site.name in plan.keep:
            norms = torch.zeros(input_width(layer), dtype=layer.weight.dtype)
            for producer, pairs in channel_map(graph, site.name).items():
                own, root = (torch.tensor(v, dtype=torch.long) for v in zip(*pairs))
                l1 = teacher_modules[producer].weight.detach().abs().flatten(1).sum(1).cpu()
                norms.index_add_(0, root, l1[own])
            order = torch.argsort(-norms, stable=True)
            kept_channels[site.name] = torch.sort(order[: plan.keep[site.name]]).values.tolist()
        elif isinstance(plan, WeightPruning):
            flat = layer.weight.reshape(layer.weight.shape[0], -1)
            mask = keep_top_weights(flat, torch.ones_like(flat, dtype=torch.bool), plan.kept_weights(flat.numel()))
            layer.weight.mul_(mask.reshape(layer.weight.shape))
            masks[site.name] = mask.reshape(layer.weight.shape)
    if kept_channels:
        remove_channels(pruned, kept_channels, graph.input_shape)
    return pruned, kept_channels, masks
