"""Conv sites of a network, capture of a layer's input, and batch-norm handling.

A *site* is a conv layer the engine fits, named by its module path (``"feature.3"`` in a VGG,
``"layer1.0.conv2"`` in a ResNet). Its input channels can be pruned when they are the output
channels of a *producer* conv (and its BN) that nothing else reads: VGG's previous conv, a ResNet
block's first conv. The residual stream and the image input are never pruned.

Captures run the network without gradients up to the site and return the site's input. The BN
layers can run with their running statistics (``"eval"``) or with each batch's statistics
(``"batch"``, the reference code's train-mode capture, without touching running statistics).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

BN_MODES = ("reestimate", "keep", "train")
BN_DESCRIPTIONS = {
    "reestimate": "eval-mode capture; each student BN re-estimated on the K-shot images once its conv is fitted",
    "keep": "eval-mode capture; the student keeps the teacher's BN statistics",
    "train": "train-mode capture (batch statistics) as in the reference code; student BN re-estimated at the end",
}


def check_bn_mode(bn: str) -> str:
    if bn not in BN_MODES:
        raise ValueError(f"bn must be one of {', '.join(BN_MODES)}, got {bn!r}")
    return bn


@dataclass(frozen=True)
class Site:
    """A conv layer the engine fits. ``bn``: the BN normalising its output; ``producer`` /
    ``producer_bn``: the conv + BN whose output channels are this conv's input channels and may be
    removed with them (``None`` when the input channels are not prunable)."""

    name: str
    bn: str | None
    producer: str | None = None
    producer_bn: str | None = None

    @property
    def prunable(self) -> bool:
        return self.producer is not None


def find_sites(model: nn.Module) -> list[Site]:
    """The fitted conv sites of a VGG (:class:`xdnb.models.VGG`) or torchvision ResNet, in forward
    order. The first conv (image input) is not a site: its input is the same in both networks."""
    from torchvision.models.resnet import BasicBlock, ResNet

    from .models import VGG

    if isinstance(model, VGG):
        convs = [(f"feature.{i}", f"feature.{i + 1}") for i, m in enumerate(model.feature) if isinstance(m, nn.Conv2d)]
        return [Site(name, bn, *convs[i - 1]) for i, (name, bn) in enumerate(convs) if i > 0]
    if isinstance(model, ResNet):
        sites = []
        for stage in ("layer1", "layer2", "layer3", "layer4"):
            for j, block in enumerate(getattr(model, stage)):
                if not isinstance(block, BasicBlock):
                    raise ValueError(f"{stage}.{j} is a {type(block).__name__}; only BasicBlock ResNets are supported")
                p = f"{stage}.{j}"
                sites.append(Site(f"{p}.conv1", f"{p}.bn1"))
                sites.append(Site(f"{p}.conv2", f"{p}.bn2", f"{p}.conv1", f"{p}.bn1"))
                if block.downsample is not None:
                    sites.append(Site(f"{p}.downsample.0", f"{p}.downsample.1"))
        return sites
    raise ValueError(f"no conv sites known for {type(model).__name__}; supported: xdnb VGG, torchvision ResNet (BasicBlock)")


def batch_norms(model: nn.Module) -> list[str]:
    """Names of all batch-norm modules (1-d and 2-d), in registration (= forward) order."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextlib.contextmanager
def bn_batch_statistics(model: nn.Module) -> Iterator[None]:
    """Within the block every BN normalises with the batch's own statistics and leaves its running
    statistics untouched (train-mode BN without tracking); everything else is in eval mode."""
    saved = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            saved.append((m, m.training, m.track_running_stats))
            m.train()
            m.track_running_stats = False
    try:
        yield
    finally:
        for m, training, tracking in saved:
            m.train(training)
            m.track_running_stats = tracking


class _Stop(Exception):
    """Raised by a capture hook to end the forward pass early."""


def _batches(images: torch.Tensor, batch_size: int | None) -> Iterator[torch.Tensor]:
    step = len(images) if not batch_size else batch_size
    for start in range(0, len(images), step):
        yield images[start:start + step]


@torch.no_grad()
def capture_inputs(model: nn.Module, names: Sequence[str], images: torch.Tensor, batch_size: int | None = None,
                   bn_mode: str = "eval") -> dict[str, torch.Tensor]:
    """Inputs of the modules ``names`` when ``model`` runs on ``images`` (N, C, H, W).

    Returns ``{name: (N, ...)}`` on the images' device. The pass stops after the last module is
    reached. ``bn_mode``: ``"eval"`` (running statistics) or ``"batch"`` (each batch's statistics;
    with ``batch_size`` smaller than N the statistics are per batch).
    """
    if bn_mode not in ("eval", "batch"):
        raise ValueError(f"bn_mode must be 'eval' or 'batch', got {bn_mode!r}")
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"model has no module {missing[0]!r}")
    found: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    pending: set[str] = set()

    def hook_for(name):
        def hook(_module, inputs):
            found[name].append(inputs[0].detach().clone())
            pending.discard(name)
            if not pending:
                raise _Stop
        return hook

    handles = [modules[n].register_forward_pre_hook(hook_for(n)) for n in names]
    was_training = model.training
    model.eval()
    try:
        with bn_batch_statistics(model) if bn_mode == "batch" else contextlib.nullcontext():
            for batch in _batches(images, batch_size):
                pending = set(names)
                try:
                    model(batch)
                except _Stop:
                    pass
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {n: torch.cat(found[n]) for n in names}


def capture_input(model: nn.Module, name: str, images: torch.Tensor, batch_size: int | None = None,
                  bn_mode: str = "eval") -> torch.Tensor:
    """The input of module ``name`` on ``images``: (N, C_in, H, W) for a conv."""
    return capture_inputs(model, [name], images, batch_size, bn_mode)[name]


class SiteInputs:
    """The input of each site of ``model`` on ``images``, asked for front to back.

    In a VGG (one ``nn.Sequential`` chain) the input of site j is computed from the input of the
    previous site by running only the modules in between, so compressing a network costs one
    forward pass in total instead of one per site; elsewhere (ResNet) each request runs the
    network up to the site. Either way the result is what :func:`capture_input` returns for the
    model *as it is at request time* (an updated conv or BN upstream is taken into account, as
    long as requests go front to back).
    """

    def __init__(self, model: nn.Module, sites: Sequence[Site], images: torch.Tensor, batch_size: int | None = None,
                 bn_mode: str = "eval"):
        from .models import VGG

        self.model, self.images, self.batch_size, self.bn_mode = model, images, batch_size, bn_mode
        self.names = [s.name for s in sites]
        self.chain = None
        if isinstance(model, VGG):
            positions = {f"feature.{i}": i for i in range(len(model.feature))}
            self.chain = [positions[n] for n in self.names]
        self._last: tuple[int, torch.Tensor] | None = None

    @torch.no_grad()
    def input(self, index: int) -> torch.Tensor:
        """The input (N, C_in, H, W) of site ``index``."""
        if self.chain is None:
            return capture_input(self.model, self.names[index], self.images, self.batch_size, self.bn_mode)
        if self._last is None or self._last[0] > index:
            h = capture_input(self.model, self.names[index], self.images, self.batch_size, self.bn_mode)
        else:
            start, h = self._last
            segment = self.model.feature[self.chain[start]:self.chain[index]]
            was_training = self.model.training
            self.model.eval()
            try:
                with bn_batch_statistics(self.model) if self.bn_mode == "batch" else contextlib.nullcontext():
                    h = torch.cat([segment(b) for b in _batches(h, self.batch_size)]) if index > start else h
            finally:
                self.model.train(was_training)
        self._last = (index, h)
        return h


@torch.no_grad()
def set_bn_statistics(bn: nn.Module, inputs: torch.Tensor) -> None:
    """Set ``bn``'s running mean and (biased) variance to those of ``inputs`` (N, C, ...)."""
    dims = [0] + list(range(2, inputs.ndim))
    x64 = inputs.double()
    bn.running_mean.copy_(x64.mean(dims).to(bn.running_mean.dtype))
    bn.running_var.copy_(x64.var(dims, unbiased=False).to(bn.running_var.dtype))


@torch.no_grad()
def reestimate_bn(model: nn.Module, images: torch.Tensor, names: Sequence[str] | None = None,
                  batch_size: int | None = None) -> None:
    """Set the running mean and variance of the BN layers ``names`` (default: all) to the exact
    statistics of their inputs on ``images``, front to back.

    Each layer is measured with the earlier layers already re-estimated, and the variance stored
    is the biased one the batch normalisation itself uses, so in eval mode the network then
    normalises ``images`` exactly as train-mode BN would on that one batch. Only running
    statistics change (no affine parameter, no other buffer).
    """
    names = batch_norms(model) if names is None else list(names)
    modules = dict(model.named_modules())
    for name in names:
        bn = modules[name]
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or bn.running_mean is None:
            raise ValueError(f"{name!r} is not a batch-norm layer with running statistics")
        set_bn_statistics(bn, capture_input(model, name, images, batch_size))
