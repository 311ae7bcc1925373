"""The computations behind the tutorial notebooks and their panels (no widgets, no figures).

A :class:`Bench` holds what every tutorial experiment shares: the teacher, the training split the
K-shot images are drawn from, and held-out images (the digits test split by default). Its
:meth:`Bench.run` compresses the teacher with one objective (or baseline) and measures the result
the way the tutorials look at it, returning a :class:`Trial`:

- ``train``: the engine's per-layer records, measured on the images each layer was fitted on
  while it was fitted: the K-shot images, or with ``views > 1`` the K·views fit images
  (:func:`xdnb.views.make_views`); before any global stage;
- ``kshot``: the per-layer quantities of the final student on the K-shot images themselves (the
  originals, never the views; after any global stage) (:func:`xdnb.metrics.layer_errors` on the
  masked student), so that train and held-out errors compare fairly with and without views;
- ``held_out``: the same per-layer quantities on the held-out images;
- ``accuracy``: top-1 accuracy of the compressed student on the held-out images.

Per-layer quantities are mean squared errors of pre-activation conv outputs;
:meth:`Trial.errors` divides them by the teacher output's power ``mean((WT*hT)²)``
(:func:`xdnb.plots.layer_value`) so layers of different scale can be compared on one axis. The panels of :mod:`xdnb.widgets` and the tests call the same functions.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from . import data, distill, methods, metrics, models, size, tables
from .plots import layer_labels, layer_value

#: The digits default every tutorial starts from: 75 % of the input channels of every prunable
#: conv removed, K = 1 image per class, batch-norm statistics re-estimated (docs/method.md,
#: "Batch normalisation").
DEFAULT_PRUNING = "keep:0.25"
DEFAULT_K = 1
#: The settings of a run that a :class:`Trial` records from its outcome's config.
SETTINGS = ("bn", "solver", "ridge", "rounds", "steps", "lr", "weight_decay", "hint_weight", "temperature", "quantize", "linear",
            "views", "augment", "global_stage", "global_steps", "global_lr")
#: The splits of :meth:`Trial.errors`.
SPLITS = ("held_out", "train", "kshot")


@dataclass
class Trial:
    """One compression and its measurements (see module docstring).

    ``settings``: what was run (method, k, seed, pruning, bn, solver, the method's parameters, and
    views / global stage when used); ``train`` / ``held_out`` / ``kshot``: per-layer records, one
    dict per fitted layer front to back (keys of :func:`xdnb.metrics.layer_record`: MSEs of
    pre-activation conv outputs, and ``relative_error``, a fraction of the teacher output power);
    ``accuracy``: held-out top-1 (a fraction);
    ``seconds``: compression time; ``compressed``: the engine's full outcome (students, masks).
    """

    settings: dict
    train: list[dict]
    held_out: list[dict]
    kshot: list[dict]
    accuracy: float
    seconds: float
    compressed: distill.Compressed = field(repr=False)

    @property
    def label(self) -> str:
        """:func:`xdnb.methods.label`: ``regression``, ``cross(mu=0.6)``, ``soft(alpha=0.5, beta=0.5)``, ``fskd``..."""
        return methods.label(self.settings["method"], self.settings)

    def errors(self, key: str = "relative_error", split: str = "held_out") -> list[float]:
        """One value per layer of ``key`` (relative to the teacher output power, see
        :func:`xdnb.plots.layer_value`) on ``split``: ``"held_out"``, ``"train"`` (the fit images,
        while fitting) or ``"kshot"`` (the final student on the K-shot images themselves)."""
        return [layer_value(r, key) for r in self._split(split)]

    def gap(self, key: str = "relative_error") -> float:
        """The over-fitting gap summed over layers: held-out minus K-shot-image ``key`` (relative, as
        :meth:`errors`), ``sum(errors(key)) − sum(errors(key, "kshot"))``; 0 = the student does as
        well on images it never saw as on its K-shot images."""
        return sum(self.errors(key)) - sum(self.errors(key, "kshot"))

    def bound(self, mu: float, split: str = "held_out") -> list[float]:
        """Per layer, the right-hand side of the bound ``2·L(mu) + 2·(mu·eps_S + (1−mu)·eps_T)``
        (:func:`xdnb.metrics.bound`), relative to the teacher output power like :meth:`errors`."""
        return [layer_value({**r, "bound_value": metrics.bound(r, mu)}, "bound_value") for r in self._split(split)]

    def _split(self, split: str) -> list[dict]:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        return getattr(self, split)

    def names(self, names: dict | None = None) -> list[str]:
        """The layers' labels (``names``: e.g. :attr:`Bench.layer_names`)."""
        return layer_labels(self.held_out, names)


class Bench:
    """Teacher, data and K-shot sets shared by the tutorial experiments.

    ``teacher``: a network (default: the cached digits teacher, trained once on first use);
    ``train``: the dataset K-shot images are drawn from (default: digits train split);
    ``held_out``: ``(images, labels)`` used for held-out errors and accuracy (default: the digits
    test split, 450 images); ``held_out_limit``: use only the first this many held-out images.
    """

    def __init__(self, teacher: nn.Module | None = None, train=None,
                 held_out: tuple[torch.Tensor, torch.Tensor] | None = None, held_out_limit: int | None = None):
        self.teacher = (teacher if teacher is not None else models.teacher("digits")).eval()
        self.train = train if train is not None else data.digits("train")
        images, labels = held_out if held_out is not None else data.stack(data.digits("test"))
        if held_out_limit is not None:
            images, labels = images[:held_out_limit], labels[:held_out_limit]
        self.held_images, self.held_labels = images, labels
        self._shots: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    @functools.cached_property
    def teacher_accuracy(self) -> float:
        """The teacher's held-out top-1 accuracy (a fraction)."""
        return metrics.accuracy(self.teacher, self.held_images, self.held_labels)

    @functools.cached_property
    def layer_names(self) -> dict[str, str]:
        """Readable names of the fitted layers for axis labels: ``{"feature.3": "conv2", ...}`` for a
        VGG (convs numbered from the image conv, conv1, which is not fitted); else the module
        paths (:meth:`xdnb.graph.ModelGraph.readable_names`)."""
        from .graph import trace

        return trace(self.teacher, self.input_shape).readable_names()

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.held_images.shape[1:])

    def shots(self, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The K-shot set ``(images (10K, C, H, W), labels (10K,))`` for ``(k, seed)`` (cached)."""
        key = (int(k), int(seed))
        if key not in self._shots:
            self._shots[key] = data.stack(self.train, data.few_shot(self.train, k=key[0], seed=key[1]))
        return self._shots[key]

    def run(self, method: str = "regression", *, k: int = DEFAULT_K, seed: int = 0,
            pruning: str | None = DEFAULT_PRUNING, mu: float | None = None, alpha: float | None = None,
            beta: float | None = None, callback: Callable[[dict], None] | None = None, **options) -> Trial:
        """Compress the teacher with ``method`` on the ``(k, seed)`` K-shot set and measure it.

        ``method``: an objective (``regression``, ``correction``, ``imitation``, ``cross`` with
        ``mu`` (default 0.6), ``soft`` with ``alpha``, ``beta``) or a baseline of
        :mod:`xdnb.baselines`. ``options``: the method's settings (:func:`xdnb.methods.options_for`:
        ``solver``, ``bn``, ``ridge``, and xdnb's additions ``views``, ``augment``, ``global_stage``,
        ``global_steps``... for the objectives, a baseline's own, e.g. ``bn``, ``steps``); the
        method's defaults otherwise (one view, no global stage: the paper's protocol). ``pruning``: a spec of
        :func:`xdnb.pruning.parse` (``keep:0.25``, ``sparse:0.9``, ``VGG-50``...) or ``None``.
        ``callback(record)`` runs after every layer (the engine's record, on the fit images: the
        K-shot images, or their K·views views).
        Goes through :func:`xdnb.methods.compress`, like :func:`xdnb.experiment.run`.
        Deterministic for a fixed seed and thread count.
        """
        images, labels = self.shots(k, seed)
        if method == "l1-norm":
            options.pop("bn", None)  # data-free: it always keeps the teacher's BN statistics
        typed = methods.options_for(method, options)
        params = methods.params_of(method, mu, alpha, beta)
        torch.manual_seed(seed)
        outcome = methods.compress(method, self.teacher, images, labels, pruning=pruning, mu=mu, alpha=alpha, beta=beta,
                                   options=typed, seed=seed, callback=callback, show_progress=False)
        settings = {"method": method, "k": int(k), "seed": int(seed), "pruning": pruning, **params,
                    **{key: value for key, value in outcome.config.items() if key in SETTINGS}}
        held = metrics.layer_errors(self.teacher, outcome.masked_student, self.held_images)
        kshot = metrics.layer_errors(self.teacher, outcome.masked_student, images)
        accuracy = metrics.accuracy(outcome.student, self.held_images, self.held_labels)
        return Trial(settings, train=outcome.history, held_out=held, kshot=kshot, accuracy=accuracy,
                     seconds=outcome.seconds, compressed=outcome)

    def accuracies(self, method: str = "regression", seeds: Sequence[int] = (0, 1, 2), **settings) -> list[float]:
        """Held-out accuracy (fractions) of :meth:`run` over ``seeds`` (one K-shot draw each)."""
        return [self.run(method, seed=seed, **settings).accuracy for seed in seeds]

    def size(self, model: nn.Module) -> dict:
        """Parameters (all, non-zero) and FLOPs (dense, effective) of ``model`` on one input."""
        return size.measure(model, self.input_shape)


def soft_grid(bench: Bench, alphas: Sequence[float], betas: Sequence[float], **settings) -> dict:
    """Run ``soft(alpha, beta)`` on every grid point. Returns ``{"alphas", "betas", "accuracy",
    "error"}`` with ``accuracy[i][j]`` (%) and ``error[i][j]`` (sum over layers of the held-out
    relative L^r) at ``alphas[i]``, ``betas[j]`` (paper's convention: (1, 1) regression,
    (1, 0) correction, (0, 1) imitation)."""
    accuracy, error = [], []
    for a in alphas:
        row_acc, row_err = [], []
        for b in betas:
            trial = bench.run("soft", alpha=a, beta=b, **settings)
            row_acc.append(100 * trial.accuracy)
            row_err.append(sum(trial.errors()))
        accuracy.append(row_acc)
        error.append(row_err)
    return {"alphas": list(alphas), "betas": list(betas), "accuracy": accuracy, "error": error}


def accuracy_grid(bench: Bench, methods, ks: Sequence[int] = (DEFAULT_K,), seeds: Sequence[int] = (0, 1, 2),
                  **settings) -> dict[str, dict[int, list[float]]]:
    """Held-out accuracies (fractions) per method label and K, one per seed: ``{label: {k: [...]}}``.

    ``methods``: names (``["regression", "cross"]``) or ``{label: run settings}``, e.g.
    ``{"cross, ridge 0.001": {"method": "cross", "ridge": 1e-3}}``; ``settings`` apply to all."""
    specs = {m: {"method": m} for m in methods} if not isinstance(methods, dict) else methods
    grid: dict[str, dict[int, list[float]]] = {}
    for label, spec in specs.items():
        spec = {**settings, **spec}
        method = spec.pop("method")
        grid[label] = {k: [bench.run(method, k=k, seed=s, **spec).accuracy for s in seeds] for k in ks}
    return grid


def format_accuracy(grid: dict[str, dict[int, list[float]]], digits: int = 1) -> str:
    """A plain-text table of :func:`accuracy_grid`: one row per label, one column per K,
    ``mean ± std`` in % (sample std over the seeds)."""
    ks = sorted({k for per_k in grid.values() for k in per_k})
    width = max(len(label) for label in grid) if grid else 6
    lines = [f"{'':<{width}}  " + "  ".join(f"{f'K={k}':>13}" for k in ks)]
    for label, per_k in grid.items():
        cells = []
        for k in ks:
            if k in per_k:
                mean, std = tables.mean_std([100 * a for a in per_k[k]])
                std = std or 0.0
                cells.append(f"{mean:>6.{digits}f} ± {std:<4.{digits}f}")
            else:
                cells.append(f"{'':>13}")
        lines.append((f"{label:<{width}}  " + "  ".join(cells)).rstrip())
    return "\n".join(lines)


def layer_table(names: Sequence[str], columns: dict[str, Sequence[float]], digits: int = 3) -> str:
    """A plain-text table with one row per layer (``names``) and one column per entry of
    ``columns`` (title -> one value per layer), values rounded to ``digits`` decimals."""
    for title, values in columns.items():
        if len(values) != len(names):
            raise ValueError(f"column {title!r} has {len(values)} values for {len(names)} layers")
    width = max([len("layer")] + [len(n) for n in names])
    widths = [max(len(t), digits + 3) for t in columns]
    lines = [f"{'layer':<{width}}  " + "  ".join(f"{t:>{w}}" for t, w in zip(columns, widths))]
    for i, name in enumerate(names):
        lines.append(f"{name:<{width}}  " + "  ".join(f"{values[i]:>{w}.{digits}f}" for values, w in zip(columns.values(), widths)))
    return "\n".join(lines)


def grid_summary(grid: dict, digits: int = 3) -> str:
    """Plain text: the summed held-out L^r and accuracy of :func:`soft_grid` at its named corners,
    its centre, and its lowest-error point."""
    alphas, betas = grid["alphas"], grid["betas"]
    points = {"regression (1, 1)": (1.0, 1.0), "correction (1, 0)": (1.0, 0.0), "imitation (0, 1)": (0.0, 1.0),
              "(0, 0)": (0.0, 0.0), "centre (0.5, 0.5)": (0.5, 0.5)}
    i, j = min(((i, j) for i in range(len(alphas)) for j in range(len(betas))), key=lambda ij: grid["error"][ij[0]][ij[1]])
    rows = [(label, alphas.index(a), betas.index(b)) for label, (a, b) in points.items() if a in alphas and b in betas]
    rows.append((f"lowest error ({alphas[i]:g}, {betas[j]:g})", i, j))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'(alpha, beta)':<{width}}  {'sum of L^r':>10}  {'accuracy %':>10}"]
    for label, i, j in rows:
        lines.append(f"{label:<{width}}  {grid['error'][i][j]:>10.{digits}f}  {grid['accuracy'][i][j]:>10.1f}")
    return "\n".join(lines)
