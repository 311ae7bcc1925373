"""Pruning plans and physical channel removal.

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

import copy
import math
import re
from dataclasses import dataclass, field

import torch
from torch import nn

from . import checks
from .graph import ModelGraph, group_of, input_width, remove_channels as _remove_group_channels, trace

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


def _number_in(spec: str, text: str):
    """The number after the colon of a ``keep:R`` / ``sparse:R`` spec (the text itself if it is none)."""
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"pruning spec {spec!r}: {text!r} is not a number") from None


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
            keep[layer] = value if isinstance(value, int) else _kept(width[layer], checks.fraction(f"{layer} keep ratio", value, one=True))
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
        ratio = checks.fraction("keep ratio", scheme, one=True)
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
    value = checks.fraction("sparsity (the fraction of weights removed, e.g. 0.9)", sparsity)
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
        return unstructured(_number_in(spec, spec.partition(":")[2]))
    if spec.startswith("keep:"):
        return structured(graph, checks.fraction("keep ratio", _number_in(spec, spec.partition(":")[2]), one=True))
    return structured(graph, spec)


# --- physical removal ----------------------------------------------------------------


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


@torch.no_grad()
def widen(graph: ModelGraph, compact: nn.Module, kept_channels: dict[str, list[int]],
          base: nn.Module | None = None) -> nn.Module:
    """The teacher-width twin of a physically pruned ``compact`` network (``graph``: the traced
    teacher): its weights placed at the kept channels (teacher numbering) and each site's pruned
    input channels zeroed, so it computes the same outputs as ``compact`` and can be compared
    layer by layer with the teacher (:func:`xdnb.metrics.layer_errors`). Removed filters are never
    read by the next layer, but a layer's per-layer error covers all its output channels: they are
    zeros (``base=None``), or ``base``'s (a teacher-width network of the same architecture, e.g. the
    masked student before a global stage, so that its per-layer errors stay comparable)."""
    import torch_pruning as tp

    full = copy.deepcopy(graph.model if base is None else base)
    names = {m: n for n, m in graph.model.named_modules()}
    rows, cols = {}, {}  # module -> kept output (dim 0) / input (dim 1) indices
    for name, kept in kept_channels.items():
        removed = sorted(set(range(input_width(graph.model.get_submodule(name)))) - set(int(i) for i in kept))
        if not removed:
            continue
        for dep, idxs in group_of(graph, name, removed):
            layer = dep.target.module
            if not isinstance(layer, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)) or layer not in names:
                continue  # activations, reshapes and concats hold no tensors
            module = names[layer]
            incoming = dep.handler in (tp.prune_conv_in_channels, tp.prune_linear_in_channels)
            size = layer.num_features if isinstance(layer, nn.modules.batchnorm._BatchNorm) else layer.weight.shape[int(incoming)]
            index = torch.tensor(sorted(set(range(size)) - set(int(i) for i in idxs)), dtype=torch.long)
            (cols if incoming else rows)[module] = index
    state = full.state_dict()
    for key, value in compact.state_dict().items():
        target, module = state[key], key.rpartition(".")[0]
        if target.shape == value.shape:
            target.copy_(value)
            continue
        r, c = rows.get(module), cols.get(module)
        if c is not None and key.endswith("weight"):
            if base is None:
                target.zero_()  # a site reads its kept input channels only
            else:  # the removed filters keep base's values; the pruned input channels are zeroed
                pruned = torch.ones(target.shape[1], dtype=torch.bool)
                pruned[c] = False
                target[:, pruned.to(target.device)] = 0
        r, c = (None if i is None else i.to(target.device) for i in (r, c))
        if r is not None and c is not None and target.ndim > 1:
            target[r[:, None], c[None, :]] = value
        elif c is not None and target.ndim > 1:
            target[:, c] = value
        else:
            target[r] = value
    return full.eval()
