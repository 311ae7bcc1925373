"""The paper's baselines behind the call shape of :func:`xdnb.distill.compress` (docs/method.md,
"Baselines").

:func:`run` takes a method name, the teacher, the K-shot ``images`` (N, C, H, W) and ``labels``
(N,), and a pruning plan, and returns the engine's :class:`~xdnb.distill.Compressed`:

- ``l1-norm``: drop the producer filters with the smallest L1 norm (unstructured: the smallest
  weights); no data, so the teacher's BN statistics are kept.
- ``bp``: L1-norm, then cross-entropy fine-tuning on the K-shot set (:func:`xdnb.finetune.finetune`).
- ``fitnet``: L1-norm, then end-to-end training with cross-entropy + knowledge distillation on the
  teacher's logits (temperature ``temperature``) + ``hint_weight`` × the mean L2 hint loss
  between student and teacher features at every pooling point (VGG: the inputs of each max-pool
  and of the final average pool; ResNet: the output of each stage). A pruned hint feature is
  mapped to the teacher's width by a learned 1×1 regressor (FitNet's), initialised as the
  embedding of the kept channels, and trained with the student.
- ``fskd``: L1-norm, then per site, front to back, a 1×1 conv ``Q`` (C_out, C_out) after the conv,
  solved by least squares so that ``Q(WS*hS) ≈ WT*hT`` (ridge towards ``Q = I``) and folded into
  the conv: ``W ← Q·W``. Filters that L1-norm removed are zero, so ``Q`` mixes only the channels
  the pruned student has (as in FSKD, where they no longer exist).
- ``thinet``: per site, greedy removal of the input channels whose loss least changes the
  layer's output, then a least-squares re-fit of the kept weights.
- ``cp``: per site, LASSO over channel coefficients ``beta`` with lambda raised until exactly the
  target width is left (the exact LARS path), then a least-squares re-fit.
- ``kd``: L1-norm, then end-to-end, label-free knowledge distillation on the teacher's logits
  (:mod:`xdnb.global_stage`, ``kd``).
- ``mir``: L1-norm, then MiR (Wang et al. CVPR 2022): end-to-end, label-free, the student's last
  feature map before global pooling trained to mimic the teacher's, the head kept
  (:mod:`xdnb.global_stage`, ``mir``).

Every method but l1-norm (which uses no data) takes ``views``/``augment`` (:mod:`xdnb.views`;
``views = 1``, the default, is the K-shot images alone). The layer-wise methods fit on the views
as the engine does; bp and fitnet train on them with each view carrying its image's label (so
``mixup``, which blends two images, is not allowed there); kd and mir draw fresh views at every
step.

The layer-wise methods (fskd, thinet, cp) are regression-loss methods: like the engine they fit
every site front to back with the student's input ``hS`` (carrying the error accumulated so far)
and the teacher's output ``WT*hT`` as the target, and handle BN as the ``bn`` option says
(:data:`xdnb.sites.BN_MODES`, default ``"reestimate"`` as in the engine). The end-to-end methods
(bp, fitnet) read ``bn`` as :data:`END_TO_END_BN` says (default ``"train"``: frozen BN statistics
made SGD diverge at learning rates that batch statistics train well with). Every result's
``config`` records the method, its options and the BN handling used.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from . import checks, objectives
from . import global_stage as global_stage_
from . import pruning as pruning_
from . import views as views_
from .distill import Compressed, fit_layers
from .finetune import finetune
from .graph import ModelGraph, channel_map, feature_points, input_width, trace
from .projections import keep_top_weights
from .pruning import widen
from .quadratic import Chunks, LayerProblem
from .sites import BN_DESCRIPTIONS, capture_inputs, check_bn_mode, reestimate_bn
from .solvers import DEFAULT_RIDGE, Fit

METHODS = ("l1-norm", "bp", "fitnet", "fskd", "thinet", "cp", "kd", "mir")
#: The paper's six baselines (the presets' tables); kd and mir came later.
PAPER_METHODS = METHODS[:6]
#: Methods that only make sense for channel (structured) pruning.
STRUCTURED_ONLY = ("fskd", "thinet", "cp")


@dataclass(frozen=True)
class L1NormOptions:
    """``l1-norm`` takes no options (data-free: the teacher's BN statistics are kept)."""


@dataclass(frozen=True)
class ViewOptions:
    """The K-shot images' label-free ``views`` (>= 1, the original included; 1 = the images alone)
    with the augmentations ``augment`` (:func:`xdnb.views.make_views`)."""

    views: int = 1
    augment: str = views_.DEFAULT_AUGMENT

    def __post_init__(self):
        checks.integer("views", self.views, low=1)
        object.__setattr__(self, "augment", views_.canonical_augment(self.augment))


@dataclass(frozen=True)
class TrainingOptions(ViewOptions):
    """``bp``: SGD ``steps`` (>= 0) at learning rate ``lr`` (> 0) with ``weight_decay`` (>= 0); BN
    as :data:`END_TO_END_BN` says for ``bn``; labelled views (flip and crop only: a view carries
    its image's label)."""

    steps: int = 200
    lr: float = 1e-3
    weight_decay: float = 5e-4
    bn: str = "train"

    def __post_init__(self):
        super().__post_init__()
        if self.views > 1 and "mixup" in views_.parse_augment(self.augment):
            raise ValueError(f"augment {self.augment!r}: mixup blends two images, so its views have no single label; "
                             f"bp and fitnet train on labelled views of flip and crop only")
        checks.integer("steps", self.steps, low=0)
        checks.number("lr", self.lr, above=0)
        checks.number("weight_decay", self.weight_decay, low=0)
        check_bn_mode(self.bn)


@dataclass(frozen=True)
class FitNetOptions(TrainingOptions):
    """``fitnet``: :class:`TrainingOptions` plus the hint loss's weight ``hint_weight`` (>= 0) and
    the distillation ``temperature`` (> 0)."""

    hint_weight: float = 3.0
    temperature: float = 4.0

    def __post_init__(self):
        super().__post_init__()
        checks.number("hint_weight", self.hint_weight, low=0)
        checks.number("temperature", self.temperature, above=0)


@dataclass(frozen=True)
class LayerwiseOptions(ViewOptions):
    """``fskd``, ``thinet``, ``cp``: the BN mode ``bn`` and the re-fit's ``ridge`` (>= 0); the fit
    runs on the views."""

    bn: str = "reestimate"
    ridge: float = DEFAULT_RIDGE

    def __post_init__(self):
        super().__post_init__()
        check_bn_mode(self.bn)
        checks.number("ridge", self.ridge, low=0)


#: What ``bn`` means for kd and mir (the student is trained in eval mode, :mod:`xdnb.global_stage`).
GLOBAL_BN = {
    "reestimate": "BN statistics re-estimated on the views of the K-shot images after L1-norm pruning, then frozen",
    "keep": "the teacher's BN statistics, frozen",
}


@dataclass(frozen=True)
class MiROptions(ViewOptions):
    """``mir``: Adam ``steps`` (>= 1) at learning rate ``lr`` (> 0), BN as :data:`GLOBAL_BN` says
    for ``bn``; fresh views at every step."""

    steps: int = global_stage_.DEFAULT_STEPS
    lr: float = global_stage_.DEFAULT_LR
    bn: str = "reestimate"

    def __post_init__(self):
        super().__post_init__()
        checks.choice("bn", self.bn, tuple(GLOBAL_BN))
        checks.integer("steps", self.steps, low=1)
        checks.number("lr", self.lr, above=0)
        checks.number("temperature", getattr(self, "temperature", 1.0), above=0)

    def stage(self) -> global_stage_.GlobalStage:
        return global_stage_.GlobalStage("mir", self.steps, self.lr)


@dataclass(frozen=True)
class KDOptions(MiROptions):
    """``kd``: :class:`MiROptions` plus the distillation ``temperature`` (> 0)."""

    temperature: float = global_stage_.DEFAULT_TEMPERATURE

    def stage(self) -> global_stage_.GlobalStage:
        return global_stage_.GlobalStage("kd", self.steps, self.lr, self.temperature)


#: ``steps`` and ``lr`` of the kd and mir baselines on CIFAR-10, from a probe on CIFAR-10
#: validation images (VGG-C, K = 1, seed 0; bench/README.md, "The kd and mir baselines on
#: CIFAR-10"): from the L1-norm student, lr 1e-4, 3e-4, 1e-3 with one view and 3e-5, 1e-4 with 16
#: views, read at 25-400 steps; the best mean over both baselines was lr 1e-4 at 200 steps (with
#: 16 views still rising there). The digits default (lr 1e-3) drops them below the pruned start.
RECOMMENDED_CIFAR10 = {"steps": 200, "lr": 1e-4}

#: Each method's options (defaults chosen on digits validation images: see bench/README.md).
OPTIONS = {"l1-norm": L1NormOptions, "bp": TrainingOptions, "fitnet": FitNetOptions,
           "fskd": LayerwiseOptions, "thinet": LayerwiseOptions, "cp": LayerwiseOptions,
           "kd": KDOptions, "mir": MiROptions}
#: The same as plain dicts: method -> {option: default}.
DEFAULTS = {name: dataclasses.asdict(kind()) for name, kind in OPTIONS.items()}


def options_for(name: str, **values):
    """The typed options of baseline ``name`` from keyword values (a misspelt option is an error
    naming it and the allowed ones)."""
    checks.choice("method", name, METHODS)
    kind = OPTIONS[name]
    checks.known(name, values, [f.name for f in dataclasses.fields(kind)])
    try:
        return kind(**values)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None

#: What ``bn`` means for bp and fitnet (l1-norm, data-free, always keeps the teacher's statistics).
END_TO_END_BN = {
    "reestimate": "BN statistics re-estimated on the K-shot images after pruning, then frozen while training",
    "keep": "the teacher's BN statistics, frozen while training",
    "train": "batch statistics while training; the running statistics set to the K-shot set's at the end",
}


# --- validation --------------------------------------------------------------------------------


def _check_plan(name: str, graph: ModelGraph, plan):
    plan = pruning_.parse(graph, plan)
    if plan is not None and not isinstance(plan, (pruning_.ChannelPruning, pruning_.WeightPruning)):
        raise ValueError(f"plan must be a pruning plan, a spec string or None, got {plan!r}")
    if name in STRUCTURED_ONLY and not isinstance(plan, pruning_.ChannelPruning):
        got = "no pruning" if plan is None else f"{plan.kind} plan {plan.scheme!r}"
        raise ValueError(f"{name} prunes channels only (structured); got {got}. Use a structured plan "
                         f"(e.g. 'VGG-A', 'Res-50', 'keep:0.5'), or l1-norm, bp or fitnet for unstructured pruning")
    if name in STRUCTURED_ONLY and not plan.keep:
        raise ValueError(f"{name} selects input channels, and plan {plan.scheme!r} prunes no layer of this model "
                         f"(layers at full width: {len(plan.full_width)}); it does not apply here")
    return plan


# --- L1-norm and the teacher-width twin --------------------------------------------------------


@torch.no_grad()
def l1_filter_prune(graph: ModelGraph, plan) -> tuple[nn.Module, dict[str, list[int]], dict[str, torch.Tensor]]:
    """Data-free magnitude pruning of a copy of the traced model (the L1-norm baseline, Li et al. 2017).

    Structured: for each site, keep the input channels whose producing filters have the largest
    L1 norm (summed over the producers when several feed it, e.g. through a concat), then remove
    the rest physically. Unstructured: in each fitted layer, zero the ``sparsity`` fraction of
    weights with the smallest magnitude (biases untouched). Returns ``(pruned model,
    kept_channels, masks)``; the original is untouched.
    """
    pruned = copy.deepcopy(graph.model)
    teacher_modules, modules = dict(graph.model.named_modules()), dict(pruned.named_modules())
    kept_channels, masks = {}, {}
    for site in graph.sites:
        layer = modules[site.name]
        if isinstance(plan, pruning_.ChannelPruning) and site.name in plan.keep:
            norms = torch.zeros(input_width(layer), dtype=layer.weight.dtype)
            for producer, pairs in channel_map(graph, site.name).items():
                own, root = (torch.tensor(v, dtype=torch.long) for v in zip(*pairs))
                l1 = teacher_modules[producer].weight.detach().abs().flatten(1).sum(1).cpu()
                norms.index_add_(0, root, l1[own])
            order = torch.argsort(-norms, stable=True)
            kept_channels[site.name] = torch.sort(order[: plan.keep[site.name]]).values.tolist()
        elif isinstance(plan, pruning_.WeightPruning):
            flat = layer.weight.reshape(layer.weight.shape[0], -1)
            mask = keep_top_weights(flat, torch.ones_like(flat, dtype=torch.bool), plan.kept_weights(flat.numel()))
            layer.weight.mul_(mask.reshape(layer.weight.shape))
            masks[site.name] = mask.reshape(layer.weight.shape)
    if kept_channels:
        pruning_.remove_channels(pruned, kept_channels, graph.input_shape)
    return pruned, kept_channels, masks


def _l1_norm(graph, plan):
    """(compact, masked, kept_channels, masks) of data-free L1-norm pruning of the traced teacher."""
    if plan is None:
        return copy.deepcopy(graph.model), copy.deepcopy(graph.model), {}, {}
    compact, kept, masks = l1_filter_prune(graph, plan)
    masked = widen(graph, compact, kept) if kept else copy.deepcopy(compact)
    return compact, masked, kept, masks


# --- end-to-end: BP and FitNet -----------------------------------------------------------------


def hint_points(model: nn.Module, input_shape) -> list[tuple[str, str | None]]:
    """FitNet's hint points as ``(module, producer)``: the hint feature is ``module``'s input
    (N, C, H, W), wherever the network downsamples (:func:`xdnb.graph.feature_points`: VGG's
    max-pools and final average pool; a ResNet's stem pool, each stage's first strided block and
    the global pool), carrying the output channels of ``producer`` (whose kept filters give a
    pruned student's width there), or ``None`` where the width is never pruned."""
    return feature_points(model, input_shape)


def _end_to_end(name, graph, images, labels, plan, opts, seed, batch_size, show_progress):
    """bp / fitnet: L1-norm, then SGD on the K-shot set; ``(masked student, kept, masks, info)``."""
    compact, _, kept, masks = _l1_norm(graph, plan)
    images, labels = labelled_views(images, labels, opts["views"], opts["augment"], seed)
    bn = opts["bn"]
    if bn == "reestimate":
        reestimate_bn(compact, images, None, batch_size)
    loss, regressors, info = None, [], {}
    if name == "fitnet":
        loss, regressors, info = _fitnet_loss(graph, compact, images, labels, kept, opts, batch_size)
    try:
        finetune(compact, images, labels, steps=opts["steps"], lr=opts["lr"], weight_decay=opts["weight_decay"],
                 masks=masks or None, batch_size=batch_size, bn=bn, seed=seed,
                 show_progress=show_progress, loss=loss, extra_parameters=[p for r in regressors for p in r.parameters()])
    finally:
        for handle in info.pop("handles", []):
            handle.remove()
    if bn == "train":  # the network evaluated is the one trained: batch statistics of the K-shot set
        reestimate_bn(compact, images, None, batch_size)
    masked = widen(graph, compact, kept) if kept else compact
    return masked, kept, masks, info


def labelled_views(images: torch.Tensor, labels: torch.Tensor, views: int, augment: str, seed: int):
    """``views`` views of each image (:func:`xdnb.views.make_views`) with its label: (N·views, C, H,
    W) images and (N·views,) labels (flip and crop keep an image's class; mixup is refused by the
    options)."""
    return views_.make_views(images, views, augment, seed), labels.repeat(views)


def _global(name, graph, images, plan, opts, seed, batch_size, show_progress):
    """kd / mir: L1-norm, then the global stage; ``(masked student, kept, masks, info)``."""
    compact, _, kept, masks = _l1_norm(graph, plan)
    if opts["bn"] == "reestimate":
        reestimate_bn(compact, views_.make_views(images, opts["views"], opts["augment"], seed), None, batch_size)
    stage = options_for(name, **opts).stage()
    info = global_stage_.train(stage, graph.model, compact, images, views=opts["views"], augment=opts["augment"],
                               seed=seed, masks=masks, batch_size=batch_size, show_progress=show_progress)
    masked = widen(graph, compact, kept) if kept else compact
    return masked, kept, masks, info


def _fitnet_loss(graph, student, images, labels, kept, opts, batch_size):
    """FitNet's loss ``CE + T²·KL(teacher‖student at temperature T) + hint_weight·mean_h MSE_h`` as a
    :func:`finetune` ``loss(logits, batch)``, with the regressors it trains and the hooks to remove."""
    teacher = graph.model
    points = hint_points(teacher, graph.input_shape)
    names = [m for m, _ in points]
    with torch.no_grad():
        teacher_features = capture_inputs(teacher, names, images, batch_size)
        student_widths = {m: x.shape[1] for m, x in capture_inputs(student, names, images[:2], batch_size).items()}
        teacher_logits = torch.cat([teacher(b) for b in images.split(batch_size or len(images))])
    producer_kept = {}  # producer -> its kept output channels (its own numbering)
    for site, channels in kept.items():
        chosen = set(int(c) for c in channels)
        for producer, pairs in channel_map(graph, site).items():
            producer_kept[producer] = sorted(own for own, root in pairs if root in chosen)
    regressors = []
    for module, conv in points:
        width = teacher_features[module].shape[1]
        if student_widths[module] == width:
            regressors.append(None)
            continue
        # 1x1 regressor (student width -> teacher width), starting as the kept-channel embedding
        index = producer_kept.get(conv)
        if index is None or len(index) != student_widths[module]:
            index = list(range(student_widths[module]))  # channel provenance unknown: the first ones
        regressor = nn.Conv2d(len(index), width, 1, bias=False).to(images.device)
        with torch.no_grad():
            regressor.weight.zero_()
            regressor.weight[index, torch.arange(len(index))] = 1.0
        regressors.append(regressor)
    stash = {}
    modules = dict(student.named_modules())
    handles = [modules[m].register_forward_pre_hook(lambda _m, inputs, m=m: stash.__setitem__(m, inputs[0])) for m in names]
    temperature, hint_weight = float(opts["temperature"]), float(opts["hint_weight"])

    def loss(logits, batch):
        ce = F.cross_entropy(logits, labels[batch])
        kd = F.kl_div(F.log_softmax(logits / temperature, 1), F.softmax(teacher_logits[batch] / temperature, 1),
                      reduction="batchmean") * temperature ** 2
        hints = sum(F.mse_loss(stash[m] if r is None else r(stash[m]), teacher_features[m][batch])
                    for m, r in zip(names, regressors)) / len(names)
        return ce + kd + hint_weight * hints

    info = {"hints": names, "regressors": [m for m, r in zip(names, regressors) if r is not None], "handles": handles}
    return loss, [r for r in regressors if r is not None], info


# --- layer-wise: channel statistics, selections, the 1x1 fold -----------------------------------


@torch.no_grad()
def channel_gram(problem: LayerProblem, weight: torch.Tensor, block: int = 1 << 22) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-input-channel second moments of a layer's output (float64).

    With ``X`` (R, D) the unfolded inputs and ``Y`` (R, C_out) the targets of ``problem`` and
    ``weight`` W (C_out, D), input channel c contributes ``z_c = X_c W_cᵀ`` (R, C_out) to the output.
    Returns ``M`` (C_in, C_in) with ``M[c, d] = ⟨z_c, z_d⟩`` and ``a`` (C_in,) with ``a[c] = ⟨z_c, Y⟩``,
    from the Gram matrix ``G = XᵀX`` without forming any ``z_c``: ``M[c, d] = Σ_{k,k'} G[ck, dk']·(WᵀW)[ck, dk']``.
    """
    g, dim = problem.group_size, problem.dim
    c_in = dim // g
    w = weight.double()
    gram, rhs = problem.gram, problem.rhs  # (D, D), (D, C_out)
    a = (w.T * rhs).sum(1).reshape(c_in, g).sum(1)
    m = torch.empty(c_in, c_in, dtype=torch.float64, device=w.device)
    step = max(1, block // (dim * g))
    for start in range(0, c_in, step):
        stop = min(c_in, start + step)
        cols = slice(start * g, stop * g)
        m[start:stop] = (gram[cols] * (w[:, cols].T @ w)).reshape(stop - start, g, c_in, g).sum((1, 3))
    return m, a


def thinet_select(m: torch.Tensor, a: torch.Tensor, keep: int) -> torch.Tensor:
    """ThiNet's greedy channel selection on :func:`channel_gram`'s ``(M, a)``: remove, one at a
    time, the channel whose removal raises ``‖Y − Σ_{c kept} z_c‖²`` least (the raise of removing
    c from the kept set S is ``2a_c − 2Σ_{d∈S} M_cd + M_cc``). With ``Y = Σ_c z_c`` (no accumulated
    error) this is ThiNet's "smallest ‖Σ_{c removed} z_c‖²". Returns the kept channels, sorted."""
    alive = torch.ones(len(a), dtype=torch.bool, device=a.device)
    row_sums = m.sum(1)
    for _ in range(len(a) - keep):
        increase = torch.where(alive, 2 * (a - row_sums) + torch.diagonal(m), torch.full_like(a, math.inf))
        c = int(torch.argmin(increase))
        alive[c] = False
        row_sums -= m[:, c]
    return torch.nonzero(alive).flatten()


def cp_select(m: torch.Tensor, a: torch.Tensor, keep: int) -> tuple[torch.Tensor, dict]:
    """Channel Pruning's (He et al. 2017) LASSO selection on :func:`channel_gram`'s ``(M, a)``:
    ``min_beta ‖Y − Σ_c beta_c z_c‖² + lambda‖beta‖₁`` with lambda raised from 0 until exactly
    ``keep`` coefficients are non-zero. The whole LASSO path is computed exactly (LARS), and the
    smallest lambda at which ``keep`` channels are left is taken. Returns the kept channels (sorted)
    and ``{"lambda", "nonzero", "exact"}`` (lambda per element of the MSE; ``exact`` False when the
    path never leaves exactly ``keep``: then the largest ``|beta_c|·‖z_c‖`` fill the width)."""
    from sklearn.linear_model import lars_path_gram

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alphas, _, coefs = lars_path_gram(a.cpu().numpy(), m.cpu().numpy(), n_samples=1, method="lasso",
                                          max_iter=20 * len(a))
    coefs = torch.as_tensor(coefs, dtype=torch.float64)
    # segment i lies between knots i and i+1 (lambda falls); its support is the midpoint's
    mids = (coefs[:, :-1] + coefs[:, 1:]) / 2 if coefs.shape[1] > 1 else coefs
    counts = (mids != 0).sum(0)
    exact = torch.nonzero(counts == keep).flatten()
    if len(exact):
        i = int(exact[-1])  # the smallest lambda
        beta = mids[:, i]
    else:
        more = torch.nonzero(counts >= keep).flatten()
        i = int(more[-1]) if len(more) else mids.shape[1] - 1
        beta = mids[:, i]
    lam = float(alphas[i] + alphas[min(i + 1, len(alphas) - 1)])  # 2·alpha at the midpoint (sklearn's ½ scaling)
    norms = torch.diagonal(m).cpu().clamp_min(0).sqrt()  # ‖z_c‖
    order = torch.argsort(-norms, stable=True)
    order = order[torch.argsort(-(beta.abs() * norms)[order], stable=True)]
    kept = torch.sort(order[:keep]).values.to(a.device)
    return kept, {"lambda": lam, "nonzero": int((beta != 0).sum()), "exact": bool(len(exact))}


def fold_pointwise(weight: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Fold a bias-free 1×1 conv ``q`` (C_out, C_out) applied after a conv ``weight`` (C_out, C_in, kh, kw)
    into that conv: ``Q * (W * x) = (Q·W) * x``."""
    return torch.einsum("op,pihw->oihw", q.to(weight.dtype), weight)


@torch.no_grad()
def fskd_pointwise(teacher_output: torch.Tensor, student_output: torch.Tensor, ridge: float) -> torch.Tensor:
    """FSKD's 1×1 conv ``Q`` (C_out, C_out): least squares ``min ‖WT*hT − Q(WS*hS)‖² + ρ‖Q − I‖²``
    on the conv outputs (N, C_out, H', W'), solved as a layer of its own whose teacher is the identity."""
    chunks = Chunks.of(teacher_output, student_output, teacher_output, student_output)
    return _pointwise(chunks, student_output.shape[1], student_output, ridge)


def _pointwise(outputs: Chunks, channels: int, like: torch.Tensor, ridge: float) -> torch.Tensor:
    """:func:`fskd_pointwise` from :class:`~xdnb.quadratic.Chunks` ``(WT*hT, WS*hS, WT*hT, WS*hS)``
    (the identity's inputs are its outputs), as the streamed engine hands them over."""
    identity = nn.Conv2d(channels, channels, 1, bias=False).to(like)
    identity.weight.copy_(torch.eye(channels, dtype=like.dtype, device=like.device)[:, :, None, None])
    return LayerProblem(objectives.regression(), identity, chunks=outputs).solve(None, ridge)


def _layerwise(name, graph, images, plan, opts, seed, batch_size, callback, show_progress):
    """Fit every site front to back with ``name``'s selection and re-fit through the engine's own
    loop (:func:`xdnb.distill.fit_layers`: same inputs, BN handling and per-layer records);
    returns ``(masked student, kept_channels, history, extra config)``."""
    teacher = graph.model
    bn, ridge = opts["bn"], float(opts["ridge"])
    if name == "fskd":  # FSKD starts from the L1-norm student (teacher width, pruned inputs zeroed)
        _, student, l1_kept, _ = _l1_norm(graph, plan)
    else:
        student, l1_kept = copy.deepcopy(teacher), {}
    lasso = {}

    @torch.no_grad()
    def fit_site(site, t_conv, s_conv, chunks) -> Fit:
        if name == "fskd":
            def outputs():
                for _, hS, tT, _ in chunks:
                    sS = s_conv(hS)
                    yield tT, sS, tT, sS

            q = _pointwise(Chunks(outputs, chunks.images, chunks.output_size), s_conv.out_channels, s_conv.weight, ridge)
            weight = fold_pointwise(s_conv.weight, q)
            return Fit(weight.reshape(weight.shape[0], -1), channels=l1_kept.get(site.name))
        keep, kept = plan.keep.get(site.name), None
        problem = LayerProblem(objectives.regression(), t_conv, chunks=chunks)
        if keep is not None:
            m, a = (v / problem.n for v in channel_gram(problem, problem.teacher_weight))  # MSE units
            if name == "thinet":
                kept = thinet_select(m, a, keep)
            else:
                kept, lasso[site.name] = cp_select(m, a, keep)
        columns = None if kept is None else problem.columns_of(torch.as_tensor(kept))
        return Fit(problem.solve(columns, ridge), channels=kept)

    images = views_.Views(images, opts["views"], opts["augment"], seed)  # the images themselves at views=1
    history, kept_channels, _, _ = fit_layers(teacher, student, images, graph.sites, fit_site,
                                           objective=objectives.regression(), bn=bn, batch_size=batch_size,
                                           callback=callback, show_progress=show_progress, desc=f"compressing ({name})")
    extra = {"layer_loss": "regression", "ridge": ridge, **({"lasso": lasso} if name == "cp" else {})}
    return student.eval(), kept_channels, history, extra


# --- the entry point ---------------------------------------------------------------------------


def run(name: str, teacher: nn.Module, images: torch.Tensor, labels: torch.Tensor, plan, *, seed: int = 0,
        device=None, batch_size: int | None = None, callback=None, show_progress: bool = True, **options) -> Compressed:
    """Compress ``teacher`` with the baseline ``name`` (one of :data:`METHODS`) on the K-shot
    ``images`` (N, C, H, W) and ``labels`` (N,) to the ``plan`` (a :mod:`xdnb.pruning` plan, a spec
    string or ``None``). ``options``: the method's parameters (:data:`DEFAULTS`). ``batch_size``:
    images per forward pass (layer-wise) or per SGD step (bp, fitnet); ``None`` = all at once.
    ``callback(record)`` runs after every layer of the layer-wise methods. The teacher is not modified.
    """
    started = time.perf_counter()
    if name not in METHODS:
        raise ValueError(f"unknown baseline {name!r}; allowed: {', '.join(METHODS)}")
    opts = dataclasses.asdict(options_for(name, **options))
    if images.ndim != 4 or len(images) == 0 or len(images) != len(labels):
        raise ValueError(f"images must be a non-empty (N, C, H, W) tensor with N labels, got shapes "
                         f"{tuple(images.shape)} and {tuple(labels.shape)}")
    device = torch.device(device) if device is not None else next(teacher.parameters()).device
    teacher = copy.deepcopy(teacher).to(device).eval()
    images, labels = images.to(device), labels.to(device)
    graph = trace(teacher, tuple(images.shape[1:]))
    plan = _check_plan(name, graph, plan)
    history, masks, extra = [], {}, {}
    if name == "l1-norm":
        _, masked, kept, masks = _l1_norm(graph, plan)
        opts = {"bn": "keep"}  # data-free
    elif name in ("bp", "fitnet"):
        masked, kept, masks, extra = _end_to_end(name, graph, images, labels, plan, opts, seed, batch_size, show_progress)
    elif name in ("kd", "mir"):
        masked, kept, masks, extra = _global(name, graph, images, plan, opts, seed, batch_size, show_progress)
    else:
        masked, kept, history, extra = _layerwise(name, graph, images, plan, opts, seed, batch_size, callback, show_progress)
    config = {
        "method": name, **opts, **extra,
        "bn_description": "the teacher's BN statistics (data-free)" if name == "l1-norm" else
                          (BN_DESCRIPTIONS if name in STRUCTURED_ONLY else GLOBAL_BN if name in ("kd", "mir")
                           else END_TO_END_BN)[opts["bn"]],
        "pruning": None if plan is None else plan.scheme, "pruning_kind": None if plan is None else plan.kind,
        "images": len(images), "seed": seed,
    }
    masks = {site: mask.cpu() for site, mask in masks.items()}
    return Compressed(masked.eval(), history, kept, masks, config, time.perf_counter() - started, graph.input_shape)
