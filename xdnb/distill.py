"""The layer-wise engine: :func:`compress` a teacher into a student with few images.

The student starts as a copy of the teacher. Conv sites are processed front to back; for each
site the teacher's input ``hT`` and the (already partly compressed) student's input ``hS`` are
captured on the few-shot images, the site's weights are fitted to the objective (with the
pruning target, if any) and frozen. A callback receives each layer's record as soon as the
layer is done, so a notebook can redraw a per-layer plot live. Finally pruned channels are
removed, giving a physically smaller network.

Batch normalisation is an explicit choice (docs/method.md, "Batch normalisation"), recorded in the
result: ``"reestimate"`` (default), ``"keep"`` or ``"train"`` (see :data:`xdnb.sites.BN_DESCRIPTIONS`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from . import checks
from . import global_stage as global_stage_
from . import objectives as objectives_
from . import pruning as pruning_
from . import quantize as quantize_
from . import views as views_
from .graph import SiteStream, input_of, input_width, trace
from .metrics import combine_records, record_from_outputs
from .progress import progress
from .quadratic import Chunks, LayerProblem, LayerTooLarge, check_layer, flat_weight, write_flat_weight
from .size import sparsity_of
from .sites import batch_norms, capture_statistics, check_bn_mode, reestimate_bn, set_bn_statistics
from .solvers import DEFAULT_RIDGE, SOLVER_OPTIONS, SOLVERS, ChannelTarget, Fit, WeightTarget, fit, options_from


@dataclass
class Compressed:
    """The outcome of :func:`compress` (and of every baseline, :mod:`xdnb.methods`).

    ``masked_student``: the compressed network at the teacher's width, pruned channels zeroed
    (what per-layer metrics compare against the teacher); ``kept_channels``: site -> kept input
    channels, as indices in the teacher's numbering; :attr:`student` derives from these two the
    physically smaller network. ``history``: one record per site (see :func:`fit_layers`);
    ``masks``: site -> bool weight mask (unstructured); ``config``: what was run (``method``,
    its parameters and settings); ``seconds``: wall time; ``input_shape``: (C, H, W) of one input.
    """

    masked_student: nn.Module
    history: list[dict]
    kept_channels: dict[str, list[int]] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    seconds: float = 0.0
    input_shape: tuple = ()

    @functools.cached_property
    def student(self) -> nn.Module:
        """The compressed network with the pruned channels removed (structured pruning; built once,
        on first use); without removed channels, :attr:`masked_student` itself."""
        if not self.kept_channels:
            return self.masked_student
        return pruning_.remove_channels(copy.deepcopy(self.masked_student), self.kept_channels, self.input_shape).eval()


@dataclass(frozen=True)
class EngineOptions:
    """The engine's settings for the objectives: which solver fits each layer and with what
    (``solver_options``, one of :data:`xdnb.solvers.SOLVER_OPTIONS`' types), the BN mode ``bn``,
    ``linear`` (fit the linear layers too), ``quantize`` (a :class:`~xdnb.quantize.Quantization`
    or ``None``), ``views`` (label-free views per K-shot image for the layer-wise fit and the BN
    re-estimation, the original included; 1 = the paper's protocol) and ``augment`` (their
    augmentations, see :func:`xdnb.views.parse_augment`; read only when ``views > 1``). Build one
    with :meth:`from_settings`."""

    solver: str = "lstsq"
    solver_options: object = None
    bn: str = "reestimate"
    linear: bool = False
    quantize: quantize_.Quantization | None = None
    views: int = 1
    augment: str = views_.DEFAULT_AUGMENT
    global_stage: global_stage_.GlobalStage | None = None

    def __post_init__(self):
        checks.choice("solver", self.solver, SOLVERS)
        if self.solver_options is None:
            object.__setattr__(self, "solver_options", SOLVER_OPTIONS[self.solver]())
        elif not isinstance(self.solver_options, SOLVER_OPTIONS[self.solver]):
            raise ValueError(f"solver {self.solver!r} takes {SOLVER_OPTIONS[self.solver].__name__}, got {self.solver_options!r}")
        check_bn_mode(self.bn)
        checks.flag("linear", self.linear)
        object.__setattr__(self, "quantize", quantize_.parse(self.quantize))
        checks.integer("views", self.views, low=1)
        object.__setattr__(self, "augment", views_.canonical_augment(self.augment))
        object.__setattr__(self, "global_stage", global_stage_.parse(self.global_stage))

    @classmethod
    def from_settings(cls, solver: str = "lstsq", bn: str = "reestimate", linear: bool = False, quantize=None,
                      strict: bool = True, views: int = 1, augment: str = views_.DEFAULT_AUGMENT, global_stage=None,
                      global_steps: int | None = None, global_lr: float | None = None, temperature: float | None = None,
                      **settings) -> "EngineOptions":
        """From flat settings (``ridge``, ``rounds``, ``steps``, ``lr``; ``None`` = the solver's
        default), the ``views``/``augment`` of the fit and the global stage after it
        (``global_stage`` ``None``/``"none"``, ``"kd"`` or ``"mir"`` with ``global_steps``,
        ``global_lr``, ``temperature``; :func:`xdnb.global_stage.parse`). ``strict``: a setting that neither the solver nor the quantizer reads is an error
        (``solver="lstsq", steps=100`` names ``steps``); otherwise it is ignored (a
        :class:`~xdnb.experiment.RunConfig` carries every solver's fields)."""
        checks.known("compress", settings, ENGINE_SETTINGS, "setting")
        checks.choice("solver", solver, SOLVERS)
        given = {k: v for k, v in settings.items() if v is not None}
        quantize = quantize_.parse(quantize)
        reads = set(solver_fields(solver)) | ({"ridge"} if quantize is not None else set())
        if strict and set(given) - reads:
            name = sorted(set(given) - reads)[0]
            raise ValueError(f"solver {solver!r} does not read {name}; it reads {', '.join(solver_fields(solver))}"
                             + (" (and the quantizer the ridge)" if quantize is not None else ""))
        if quantize is not None and "ridge" in given and "ridge" not in solver_fields(solver) and quantize.ridge is None:
            quantize = dataclasses.replace(quantize, ridge=given["ridge"])  # only the quantizer reads it
        stage = global_stage_.parse(global_stage, global_steps, global_lr, temperature)
        return cls(solver, options_from(solver, given), bn, linear, quantize, views, augment, stage)

    @property
    def ridge(self) -> float:
        """The ridge of the quantized fit (its own, else the solver's, else the default)."""
        if self.quantize is not None and self.quantize.ridge is not None:
            return self.quantize.ridge
        return getattr(self.solver_options, "ridge", DEFAULT_RIDGE)

    def describe(self) -> dict:
        """The settings that decide the numbers, as recorded in a result's config."""
        return {
            "solver": self.solver,
            "bn": self.bn,
            **dataclasses.asdict(self.solver_options),
            **({"quantize": self.quantize.describe()} if self.quantize is not None else {}),
            **({"linear": True} if self.linear else {}),
            **({"views": self.views, "augment": self.augment} if self.views > 1 else {}),
            **(self.global_stage.describe() if self.global_stage is not None else {}),
        }


#: Every flat solver setting :func:`compress` accepts.
ENGINE_SETTINGS = ("ridge", "rounds", "steps", "lr")


def solver_fields(solver: str) -> tuple[str, ...]:
    """The settings ``solver`` reads (``lstsq``: ridge, rounds; ``reference``: steps, lr; ``proximal``: steps)."""
    return tuple(f.name for f in dataclasses.fields(SOLVER_OPTIONS[solver]))


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


#: Bytes of captured activations the engine may hold at once. Fitting a layer needs its inputs and
#: outputs on every image (``hT, hS, WT*hT, WT*hS, WS*hT, WS*hS``): about K·views times a per-image
#: size. Within this budget all images go through one paused forward pass per network
#: (:class:`xdnb.graph.SiteStream`); above it the images are *streamed* in chunks that fit
#: (:func:`capture_chunk`): each layer's system is accumulated chunk by chunk, every chunk's inputs
#: recomputed by a forward pass up to the layer (:func:`xdnb.graph.input_of`), so memory stays
#: bounded as views grow, for more compute (the passes grow with the depth). The same numbers up to
#: float rounding (with ``bn="train"``, batch statistics are per chunk). The chunk is recorded in the
#: result's config (``capture_chunk``).
CAPTURE_BUDGET = 2 << 30


@torch.no_grad()
def capture_chunk(teacher: nn.Module, images, names: list[str]) -> int | None:
    """The images per chunk that keep the captured activations of the sites ``names`` within
    :data:`CAPTURE_BUDGET` (measured on one image: 4 bytes × (2 inputs + 4 outputs) per element at
    the largest site), or ``None`` when all ``len(images)`` fit at once."""
    probe = _rows(images, 0, 1)
    per_image, modules = 1, dict(teacher.named_modules())
    for name, x in SiteStream(teacher, names, probe, None, "running"):
        per_image = max(per_image, 4 * (2 * x.numel() + 4 * modules[name](x).numel()))
    chunk = max(1, CAPTURE_BUDGET // per_image)
    return None if chunk >= len(images) else int(chunk)


def _rows(images, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` of an image tensor or of :class:`xdnb.views.Views`."""
    return images.rows(start, stop) if isinstance(images, views_.Views) else images[start:stop]


class _Replay:
    """A re-iterable: ``make()`` gives a fresh iterator each time (the chunks, recomputed);
    ``output_size``: the elements of one image's output of the site (sites only)."""

    def __init__(self, make, output_size: int = 0):
        self.make, self.output_size = make, output_size

    def __iter__(self):
        return iter(self.make())


def _captured(teacher, student, images, names, statistics, bns, batch_size, chunk):
    """Yield ``(name, captured)`` in the order the forward pass reaches the sites ``names`` and the
    batch norms ``bns``: for a site, the ``(hT, hS)`` input pairs; for a batch norm, the student's
    inputs; each a re-iterable over chunks of images (one chunk held in memory when ``chunk`` is
    None, else recomputed per chunk on every iteration)."""
    if chunk is None:
        teacher_inputs = iter(SiteStream(teacher, names, images, batch_size, statistics))
        for name, hS in SiteStream(student, names, images, batch_size, statistics, bns=bns):
            if name not in names:
                yield name, [hS]
                continue
            teacher_name, hT = next(teacher_inputs)
            if teacher_name != name:
                raise ValueError(f"teacher and student reached different layers ({teacher_name} vs {name})")
            yield name, [(hT, hS)]
        return
    starts = range(0, len(images), chunk)
    order = [name for name, _ in SiteStream(student, names, _rows(images, 0, 1), None, "running", bns=bns)]
    modules = dict(teacher.named_modules())
    for name in order:
        if name in names:
            with torch.no_grad():
                output_size = modules[name](input_of(teacher, name, _rows(images, 0, 1))).numel()
            yield name, _Replay(lambda name=name: ((input_of(teacher, name, x, statistics), input_of(student, name, x, statistics))
                                                   for x in (_rows(images, s, s + chunk) for s in starts)), output_size)
        else:
            yield name, _Replay(lambda name=name: (input_of(student, name, _rows(images, s, s + chunk), statistics)
                                                   for s in starts))


@torch.no_grad()
def _layer_record(objective, teacher_conv: nn.Module, student_conv: nn.Module, chunks: Chunks) -> dict:
    """The per-layer record (:func:`record_from_outputs` and the objective before and after) over
    all chunks."""
    parts = []
    for hT, hS, tT, tS in chunks:
        sT, sS = student_conv(hT), student_conv(hS)
        parts.append((len(hT), {"objective_before": objective_value(objective, tT, tS, tT, tS),
                                "objective_after": objective_value(objective, tT, tS, sT, sS),
                                **record_from_outputs(tT, tS, sT, sS)}))
    return combine_records(parts)


def _with_outputs(teacher_conv: nn.Module, pairs, images: int) -> Chunks:
    """The layer's :class:`~xdnb.quadratic.Chunks` from its ``(hT, hS)`` input pairs: the teacher's
    outputs computed once when the pairs are held in memory, per chunk when they are recomputed."""
    if isinstance(pairs, list):
        with torch.no_grad():
            data = [(hT, hS, teacher_conv(hT), teacher_conv(hS)) for hT, hS in pairs]
        return Chunks(lambda: data, images, data[0][2].numel() // len(data[0][2]))

    def make():  # a generator runs later, outside any caller's no_grad: it needs its own
        with torch.no_grad():
            for hT, hS in pairs:
                yield hT, hS, teacher_conv(hT), teacher_conv(hS)

    return Chunks(make, images, pairs.output_size)


def fit_layers(teacher: nn.Module, student: nn.Module, images, sites: list, fit_site: Callable[..., Fit], *,
               objective: objectives_.Objective, bn: str, batch_size: int | None = None,
               callback: Callable[[dict], None] | None = None, show_progress: bool = True,
               desc: str = "compressing") -> tuple[list[dict], dict[str, list[int]], dict[str, torch.Tensor], int | None]:
    """Fit ``student``'s ``sites`` front to back, in place: the loop shared by the engine and the
    layer-wise baselines.

    ``images``: (N, C, H, W), or :class:`xdnb.views.Views` (rendered a chunk at a time when
    streamed). One forward pass per network (:class:`xdnb.graph.SiteStream`) pauses before each
    site and hands over the teacher's and the (partly compressed) student's inputs ``hT``, ``hS``
    (N, C_in, H, W); when they would exceed :data:`CAPTURE_BUDGET`, they are streamed in chunks
    instead. ``fit_site(site, teacher_layer, student_layer, chunks)`` gets them with the teacher's
    outputs ``tT = WT*hT``, ``tS = WT*hS`` as :class:`~xdnb.quadratic.Chunks` (one chunk, or
    several) and returns the new weights (a :class:`~xdnb.solvers.Fit`), which are written before
    the pass goes on. Batch norm follows ``bn``: with ``"reestimate"`` every student BN gets the
    statistics of its input when the pass reaches it (after the layers in front of it are fitted).
    Each layer is recorded (keys of :func:`record_from_outputs`, ``in_channels`` and
    ``in_channels_kept`` (counts), ``sparsity``, ``objective``'s value before and after, seconds)
    and passed to ``callback(record)``. A layer whose system exceeds the memory cap
    (:class:`xdnb.quadratic.LayerTooLarge`) keeps the teacher's weights, and its record says so
    (``note``). Returns ``(history, kept_channels, masks, chunk)``, ``chunk`` the images per
    streamed chunk (``None``: not streamed).
    """
    teacher_modules, student_modules = dict(teacher.named_modules()), dict(student.named_modules())
    statistics = capture_statistics(bn)
    names = [site.name for site in sites]
    by_name = {site.name: site for site in sites}
    chunk = capture_chunk(teacher, images, names)
    count = len(images)
    if chunk is None and isinstance(images, views_.Views):
        images = images.rows(0, count)
    bns = batch_norms(student) if bn == "reestimate" else ()
    history, kept_channels, masks = [], {}, {}
    bar = progress(range(len(sites)), desc=desc, enabled=show_progress)
    for name, captured in _captured(teacher, student, images, names, statistics, bns, batch_size, chunk):
        if name not in by_name:  # a batch norm reached by the pass: its input as it is now
            set_bn_statistics(student_modules[name], captured)
            continue
        layer_started = time.perf_counter()
        index, site = len(history), by_name[name]
        teacher_conv, student_conv = teacher_modules[name], student_modules[name]
        check_layer(teacher_conv, name)
        chunks = _with_outputs(teacher_conv, captured, count)
        note = None
        try:
            result = fit_site(site, teacher_conv, student_conv, chunks)
        except LayerTooLarge as error:
            note = f"left unfitted: {error}"
            warnings.warn(f"{name} {note}", stacklevel=2)
            result = Fit(flat_weight(student_conv))
        write_flat_weight(student_conv, result.weight)
        if result.channels is not None:
            kept_channels[name] = torch.as_tensor(result.channels).tolist()
        if result.mask is not None:
            masks[name] = result.mask.reshape(student_conv.weight.shape).cpu()
        record = {
            "layer": name,
            "index": index,
            "in_channels": input_width(teacher_conv),
            "in_channels_kept": len(kept_channels.get(name, ())) or input_width(teacher_conv),
            "sparsity": sparsity_of(student_conv.weight),
            **_layer_record(objective, teacher_conv, student_conv, chunks),
            "seconds": time.perf_counter() - layer_started,
            **({"note": note} if note else {}),
        }
        del captured, chunks
        history.append(record)
        bar.update(1)
        if callback is not None:
            callback(record)
    bar.close()
    if bn == "train":
        if chunk is None:
            reestimate_bn(student, images, None, batch_size)
        else:
            for name, captured in _captured(teacher, student, images, [], "running", batch_norms(student), None, chunk):
                set_bn_statistics(student_modules[name], captured)
    return history, kept_channels, masks, chunk


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
    ridge: float | None = None,
    rounds: int | None = None,
    steps: int | None = None,
    lr: float | None = None,
    linear: bool = False,
    views: int = 1,
    augment: str = views_.DEFAULT_AUGMENT,
    global_stage=None,
    seed: int = 0,
    options: EngineOptions | None = None,
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
    ``solver``: ``lstsq`` (reads ``ridge``, ``rounds``), ``reference`` (``steps``, ``lr``) or
    ``proximal`` (``steps``); a setting left ``None`` takes the solver's default and a setting
    the solver does not read is an error. ``bn``: ``reestimate``, ``keep`` or ``train``.
    ``linear``: fit the ``nn.Linear`` layers too (default: convs only, as the paper). ``views``:
    fit (and re-estimate BN) on ``views`` label-free views per image, the original included, with
    the augmentations ``augment`` (:func:`xdnb.views.make_views`, drawn with ``seed``; ``views=1``:
    the images alone, the paper's protocol; :data:`xdnb.views.RECOMMENDED` names the setting
    chosen on validation images). ``global_stage``: after the layer-wise fit, train the whole
    student end to end against the teacher, label-free, on fresh views at every step
    (:mod:`xdnb.global_stage`: ``"kd"`` on the logits, ``"mir"`` on the last feature map, or a
    :class:`~xdnb.global_stage.GlobalStage` with its steps, lr and temperature; ``None``: none,
    the paper's protocol); the per-layer ``history`` is the layer-wise fit's. ``options``: all of these but ``seed`` at once as an :class:`EngineOptions` (instead
    of the keywords). ``batch_size``:
    images per forward pass (``None`` = all at once). ``callback(record)`` runs after every layer.
    The teacher is not modified. ``quantize``: ``None``, a bit width, a dict such as ``{"bits": 2,
    "quantizer": "ste", "granularity": "channel"}`` or a :class:`~xdnb.quantize.Quantization`:
    each layer is fitted by ``solver`` first, then its weights are fitted onto the k-bit grid (the
    first conv too, see :mod:`xdnb.quantize`).
    """
    started = time.perf_counter()
    objective = objectives_.get(objective, mu=mu, alpha=alpha, beta=beta)
    if options is None:
        options = EngineOptions.from_settings(solver, bn, linear, quantize, views=views, augment=augment,
                                              global_stage=global_stage, ridge=ridge, rounds=rounds, steps=steps, lr=lr)
    elif not isinstance(options, EngineOptions):
        raise ValueError(f"options must be an EngineOptions, got {type(options).__name__}")
    elif (views, augment, global_stage) != (1, views_.DEFAULT_AUGMENT, None):
        raise ValueError(f"views, augment and global_stage go into options (EngineOptions(views=..., ...)) when options "
                         f"are given; got views={views!r}, augment={augment!r}, global_stage={global_stage!r} besides options")
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or len(images) == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a non-empty (N, C, H, W) tensor, got {shape}")
    checks.integer("batch_size", batch_size, low=1, optional=True)
    seed = checks.integer("seed", seed, low=0)
    device = torch.device(device) if device is not None else next(teacher.parameters()).device
    teacher = copy.deepcopy(teacher).to(device).eval()  # never touch the caller's teacher
    images = images.to(device)
    graph = trace(teacher, tuple(images.shape[1:]), linear=options.linear)
    student = copy.deepcopy(teacher)
    plan = pruning_.parse(graph, pruning)
    quant = options.quantize
    stems = graph.stems if quant is not None and quant.first_conv else []
    sites = stems + graph.sites

    def fit_site(site, teacher_conv, student_conv, chunks) -> Fit:
        problem = LayerProblem(objective, teacher_conv, chunks=chunks)
        target = None if site in stems else _target_for(plan, site, teacher_conv)
        result = fit(options.solver, problem, target, options.solver_options)
        if quant is not None:
            result = quantize_.fit(quant.quantizer, problem, target, start=result, **{**quant.options(), "ridge": options.ridge})
        return result

    fit_images = views_.Views(images, options.views, options.augment, seed)  # ``images`` itself when views == 1
    history, kept_channels, masks, chunk = fit_layers(teacher, student, fit_images, sites, fit_site, objective=objective, bn=options.bn,
                                               batch_size=batch_size, callback=callback, show_progress=show_progress,
                                               desc=f"compressing ({objective})")
    config = {
        "method": objective.name, **dict(objective.params),
        **options.describe(),
        "pruning": None if plan is None else plan.scheme,
        "pruning_kind": None if plan is None else plan.kind,
        "images": len(images),
        **({"views_seed": seed} if options.views > 1 else {}),
        **({"capture_chunk": chunk} if chunk is not None else {}),
        **({"unprunable": unprunable} if (unprunable := _unprunable(plan, graph)) else {}),
    }
    outcome = Compressed(student.eval(), history, kept_channels, masks, config, 0.0, graph.input_shape)
    if options.global_stage is not None:
        outcome = train_globally(options.global_stage, graph, outcome, images, views=options.views,
                                 augment=options.augment, seed=seed, batch_size=batch_size, show_progress=show_progress)
    outcome.seconds = time.perf_counter() - started
    return outcome


def train_globally(stage: "global_stage_.GlobalStage", graph, outcome: Compressed, images: torch.Tensor, *,
                   views: int = 1, augment: str = views_.DEFAULT_AUGMENT, seed: int = 0, batch_size: int | None = None,
                   show_progress: bool = True) -> Compressed:
    """``outcome`` after the global ``stage`` (:func:`xdnb.global_stage.train`) against the traced
    teacher ``graph.model`` on the K-shot ``images``: the physical student is trained (pruned
    channels do not exist; unstructured masks are kept) and widened back to the teacher's width
    for ``masked_student`` (the removed filters, which no layer reads, keep their layer-wise values,
    so per-layer errors before and after the stage compare: :func:`xdnb.pruning.widen`). The
    config records the stage; ``history`` is left as it was."""
    student = copy.deepcopy(outcome.student)
    info = global_stage_.train(stage, graph.model, student, images, views=views, augment=augment, seed=seed,
                               masks=outcome.masks, batch_size=batch_size, show_progress=show_progress)
    masked = (pruning_.widen(graph, student, outcome.kept_channels, base=outcome.masked_student)
              if outcome.kept_channels else student)
    trained = dataclasses.replace(outcome, masked_student=masked.eval(),
                                  config={**outcome.config, **stage.describe(), **info})
    trained.__dict__["student"] = student.eval()  # already narrow: no second removal
    return trained
