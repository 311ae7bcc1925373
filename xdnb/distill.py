"""The layer-wise engine: :func:`compress` a teacher into a student with few images.

The student starts as a copy of the teacher. Conv sites are processed front to back; for each
site the teacher's input ``hT`` and the (already partly compressed) student's input ``hS`` are
captured on the few-shot images, the site's weights are fitted to the objective (with the
pruning target, if any) and frozen. A callback receives each layer's record as soon as the
layer is done, so a notebook can redraw a per-layer plot live. Finally pruned channels are
removed, giving a physically smaller network.

Batch normalisation is an explicit choice (METHOD.md, "Batch normalisation"), recorded in the
result: ``"reestimate"`` (default), ``"keep"`` or ``"train"`` (see :data:`xdnb.sites.BN_DESCRIPTIONS`).
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from . import objectives as objectives_
from . import pruning as pruning_
from . import quantize as quantize_
from .graph import SiteStream, input_width, trace
from .progress import progress
from .quadratic import LayerProblem, LayerTooLarge, check_layer, flat_weight, write_flat_weight
from .sites import batch_norms, check_bn_mode, reestimate_bn, set_bn_statistics
from .solvers import DEFAULT_RIDGE, DEFAULT_ROUNDS, REFERENCE_LR, REFERENCE_STEPS, ChannelTarget, Fit, WeightTarget, fit


@dataclass
class Compressed:
    """The outcome of :func:`compress`.

    ``student``: the compressed network (physically smaller for structured pruning, zeros in place
    for unstructured); ``masked_student``: the same network at the teacher's width with pruned
    channels zeroed (what per-layer metrics compare against the teacher); ``history``: one record
    per site (see :func:`layer_record`); ``kept_channels``: site -> kept input channels (teacher
    numbering); ``masks``: site -> bool weight mask (unstructured); ``config``: what was run;
    ``input_shape``: (C, H, W) of one input, as traced.
    """

    student: nn.Module
    masked_student: nn.Module
    history: list[dict]
    kept_channels: dict[str, list[int]] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    seconds: float = 0.0
    input_shape: tuple = ()


@torch.no_grad()
def layer_record(teacher_conv: nn.Conv2d, student_conv: nn.Conv2d, hT: torch.Tensor, hS: torch.Tensor) -> dict:
    """Per-layer errors of a (teacher, student) conv pair on inputs ``hT``, ``hS`` (N, C_in, H, W).

    Keys (all MSEs of pre-activation outputs): ``estimation_error`` L^r = ‖WT*hT − WS*hS‖²,
    ``relative_error`` = L^r / mean((WT*hT)²), ``correction`` L^c, ``imitation`` L^i,
    ``eps_S`` = ‖WS*hT − WS*hS‖², ``eps_T`` = ‖WT*hT − WT*hS‖².
    """
    return record_from_outputs(teacher_conv(hT), teacher_conv(hS), student_conv(hT), student_conv(hS))


@torch.no_grad()
def record_from_outputs(tT: torch.Tensor, tS: torch.Tensor, sT: torch.Tensor, sS: torch.Tensor) -> dict:
    """:func:`layer_record` from the four conv outputs ``WT*hT, WT*hS, WS*hT, WS*hS``.
    ``output_power`` = mean((WT*hT)²), the scale that turns any of the errors into a relative one."""
    est = float(F.mse_loss(sS, tT))
    power = float(tT.pow(2).mean())
    return {
        "estimation_error": est,
        "relative_error": est / max(power, 1e-30),
        "correction": float(F.mse_loss(sT, tT)),
        "imitation": float(F.mse_loss(sS, tS)),
        "eps_S": float(F.mse_loss(sT, sS)),
        "eps_T": float(F.mse_loss(tT, tS)),
        "output_power": power,
    }


@torch.no_grad()
def objective_value(objective: objectives_.Objective, tT, tS, sT, sS) -> float:
    """The objective's value from the four conv outputs: convolution is linear in its input, so
    ``W * (a·hT + b·hS) = a·(W*hT) + b·(W*hS)`` and no further convolution is needed."""
    total = 0.0
    for term in objective.terms:
        if term.weight != 0.0:
            target = objectives_.mix(term.teacher_mix, tT, tS)
            total += term.weight * float(F.mse_loss(objectives_.mix(term.student_mix, sT, sS), target))
    return total


def _target_for(plan, site, layer: nn.Module):
    if isinstance(plan, pruning_.ChannelPruning) and site.name in plan.keep:
        return ChannelTarget(plan.keep[site.name])
    if isinstance(plan, pruning_.WeightPruning):
        return WeightTarget(plan.kept_weights(layer.weight.numel()))
    return None


def _unprunable(plan, graph) -> dict[str, str]:
    """Under a channel plan: the sites that could not be pruned, with the reason."""
    if not isinstance(plan, pruning_.ChannelPruning):
        return {}
    return {s.name: s.reason for s in graph.sites if not s.prunable}


def fit_layers(teacher: nn.Module, student: nn.Module, images: torch.Tensor, sites: list, fit_site: Callable[..., Fit], *,
               objective: objectives_.Objective, bn: str, batch_size: int | None = None,
               callback: Callable[[dict], None] | None = None, show_progress: bool = True,
               desc: str = "compressing") -> tuple[list[dict], dict[str, list[int]], dict[str, torch.Tensor]]:
    """Fit ``student``'s ``sites`` front to back, in place: the loop shared by the engine and the
    layer-wise baselines.

    One forward pass per network (:class:`xdnb.graph.SiteStream`) pauses before each site and
    hands over the teacher's and the (partly compressed) student's inputs ``hT``, ``hS`` (N, C_in,
    H, W); with the teacher's outputs ``tT = WT*hT``, ``tS = WT*hS``, ``fit_site(site,
    teacher_layer, student_layer, hT, hS, tT, tS)`` returns the new weights (a
    :class:`~xdnb.solvers.Fit`), which are written before the pass goes on. Batch norm follows
    ``bn``: with ``"reestimate"`` every student BN gets the statistics of its input when the pass
    reaches it (after the layers in front of it are fitted). Each layer is recorded (keys of
    :func:`record_from_outputs`, kept channels, sparsity, ``objective``'s value before and after,
    seconds) and passed to ``callback(record)``. A layer whose system exceeds the memory cap
    (:class:`xdnb.quadratic.LayerTooLarge`) keeps the teacher's weights, and its record says so
    (``note``). Returns ``(history, kept_channels, masks)``.
    """
    teacher_modules, student_modules = dict(teacher.named_modules()), dict(student.named_modules())
    capture_mode = "batch" if bn == "train" else "eval"
    names = [site.name for site in sites]
    by_name = {site.name: site for site in sites}
    teacher_inputs = iter(SiteStream(teacher, names, images, batch_size, capture_mode))
    student_inputs = SiteStream(student, names, images, batch_size, capture_mode,
                                bns=batch_norms(student) if bn == "reestimate" else ())
    history, kept_channels, masks = [], {}, {}
    bar = progress(range(len(sites)), desc=desc, enabled=show_progress)
    for name, hS in student_inputs:
        if name not in by_name:  # a batch norm reached by the pass: its input as it is now
            set_bn_statistics(student_modules[name], hS)
            continue
        layer_started = time.perf_counter()
        index, site = len(history), by_name[name]
        teacher_name, hT = next(teacher_inputs)
        if teacher_name != name:
            raise ValueError(f"teacher and student reached different layers ({teacher_name} vs {name})")
        teacher_conv, student_conv = teacher_modules[name], student_modules[name]
        check_layer(teacher_conv, name)
        with torch.no_grad():
            tT, tS = teacher_conv(hT), teacher_conv(hS)
        note = None
        try:
            result = fit_site(site, teacher_conv, student_conv, hT, hS, tT, tS)
        except LayerTooLarge as error:
            note = f"left unfitted: {error}"
            warnings.warn(f"{name} {note}", stacklevel=2)
            result = Fit(flat_weight(student_conv))
        write_flat_weight(student_conv, result.weight)
        with torch.no_grad():
            sT, sS = student_conv(hT), student_conv(hS)
        if result.channels is not None:
            kept_channels[name] = torch.as_tensor(result.channels).tolist()
        if result.mask is not None:
            masks[name] = result.mask.reshape(student_conv.weight.shape).cpu()
        record = {
            "layer": name,
            "index": index,
            "in_channels": input_width(teacher_conv),
            "kept_channels": len(kept_channels.get(name, ())) or input_width(teacher_conv),
            "sparsity": pruning_.sparsity_of(student_conv.weight),
            "objective_before": objective_value(objective, tT, tS, tT, tS),
            "objective_after": objective_value(objective, tT, tS, sT, sS),
            **record_from_outputs(tT, tS, sT, sS),
            "seconds": time.perf_counter() - layer_started,
            **({"note": note} if note else {}),
        }
        del hT, hS, tT, tS, sT, sS
        history.append(record)
        bar.update(1)
        if callback is not None:
            callback(record)
    bar.close()
    if bn == "train":
        reestimate_bn(student, images, None, batch_size)
    return history, kept_channels, masks


def compress(
    teacher: nn.Module,
    images: torch.Tensor,
    objective="cross",
    *,
    mu: float | None = None,
    alpha: float | None = None,
    beta: float | None = None,
    pruning=None,
    quantize=None,
    solver: str = "lstsq",
    bn: str = "reestimate",
    ridge: float = DEFAULT_RIDGE,
    rounds: int = DEFAULT_ROUNDS,
    steps: int = REFERENCE_STEPS,
    lr: float = REFERENCE_LR,
    linear: bool = False,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    callback: Callable[[dict], None] | None = None,
    show_progress: bool = True,
) -> Compressed:
    """Compress ``teacher`` (any ``nn.Module`` classifier) layer by layer on the few-shot
    ``images`` (N, C, H, W).

    ``objective``: a name (``regression``, ``correction``, ``imitation``, ``cross`` with ``mu``,
    ``soft`` with ``alpha``, ``beta``) or an :class:`~xdnb.objectives.Objective`. ``pruning``: a
    plan from :mod:`xdnb.pruning`, a spec string (``"VGG-A"``, ``"Res-50"``, ``"keep:0.5"``,
    ``"sparse:0.9"``), a mapping ``{layer: kept channels or ratio}`` or ``None`` (refit only).
    ``solver``: ``lstsq`` (``ridge``, ``rounds``), ``reference`` or ``proximal`` (``steps``,
    ``lr``). ``bn``: ``reestimate``, ``keep`` or ``train``. ``linear``: fit the ``nn.Linear``
    layers too (default: convs only, as the paper). ``batch_size``: images per forward pass
    (``None`` = all at once). ``callback(record)`` runs after every layer. The teacher is not
    modified. ``quantize``: ``None``, a bit width, a dict such as ``{"bits": 2, "quantizer": "ste",
    "granularity": "channel"}`` or a :class:`~xdnb.quantize.Quantization`: each layer is fitted
    by ``solver`` first, then its weights are fitted onto the k-bit grid (the first conv too, see
    :mod:`xdnb.quantize`).
    """
    started = time.perf_counter()
    objective = objectives_.get(objective, mu=mu, alpha=alpha, beta=beta)
    check_bn_mode(bn)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or len(images) == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a non-empty (N, C, H, W) tensor, got {shape}")
    device = torch.device(device) if device is not None else next(teacher.parameters()).device
    teacher = copy.deepcopy(teacher).to(device).eval()  # never touch the caller's teacher
    images = images.to(device)
    graph = trace(teacher, tuple(images.shape[1:]), linear=linear)
    student = copy.deepcopy(teacher)
    plan = pruning_.parse(graph, pruning)
    sites = graph.sites
    quant = quantize_.parse(quantize)
    stems = graph.stems if quant is not None and quant.first_conv else []
    sites = stems + sites
    options = {"ridge": ridge, "rounds": rounds, "steps": steps, "lr": lr}

    def fit_site(site, teacher_conv, student_conv, hT, hS, tT, tS) -> Fit:
        problem = LayerProblem(objective, teacher_conv, hT, hS, (tT, tS))
        target = None if site in stems else _target_for(plan, site, teacher_conv)
        result = fit(solver, problem, target, **options)
        if quant is not None:
            result = quantize_.fit(quant.quantizer, problem, target, start=result, **{"ridge": ridge, **quant.options()})
        return result

    history, kept_channels, masks = fit_layers(teacher, student, images, sites, fit_site, objective=objective, bn=bn,
                                               batch_size=batch_size, callback=callback, show_progress=show_progress,
                                               desc=f"compressing ({objective})")
    masked = student
    compact = pruning_.remove_channels(copy.deepcopy(student), kept_channels, graph.input_shape)
    config = {
        **objective.describe(),
        "solver": solver,
        "bn": bn,
        "pruning": None if plan is None else plan.scheme,
        "pruning_kind": None if plan is None else plan.kind,
        "images": len(images),
        **({"ridge": ridge, "rounds": rounds} if solver == "lstsq" else {"steps": steps} if solver == "proximal" else {"steps": steps, "lr": lr}),
        **({"quantize": quant.describe()} if quant is not None else {}),
        **({"linear": True} if linear else {}),
        **({"unprunable": unprunable} if (unprunable := _unprunable(plan, graph)) else {}),
    }
    return Compressed(compact.eval(), masked.eval(), history, kept_channels, masks, config, time.perf_counter() - started,
                      graph.input_shape)
