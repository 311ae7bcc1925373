"""Presets: the paper's experiments as named sweeps, with their tables, figures and output files.

===============================  ==========================================================
``digits``                       embedded default: digits net, a quarter of the channels
                                 (``keep:0.25``), K ∈ {1, 2, 5, 10}, every method, 3 seeds;
                                 plus regression and cross with the recommended views
                                 (:data:`xdnb.views.RECOMMENDED`: 4 views, ``flip``) as their
                                 own rows
``cifar10-vgg16-structured``     VGG-16 on CIFAR-10, VGG-A/B/C/50, K ∈ {1, 2, 3, 5, 10}, 5 seeds
``cifar10-vgg16-unstructured``   VGG-16, r ∈ {50, 70, 90, 95} % at K = 1, and K ∈ {1, 2, 3, 5, 10}
                                 at r = 90 %, 5 seeds
``imagenet-resnet34-structured`` ResNet-34 on ImageNet, Res-30/50/70, K = 1
``cifar10-vgg16-quant``          VGG-16, conv weights at 2 and 4 bits (:mod:`xdnb.quantize`, STE per
                                 channel, no pruning), K ∈ {1, 5}, regression / cross / soft, 5 seeds
``mu-sweep``                     ablation: cross(mu), mu = 0, 0.1, ..., 1, K ∈ {1, 5}, 3 seeds
``alpha-beta-grid``              ablation: soft(alpha, beta) on a 5 × 5 grid, K = 1, 3 seeds
===============================  ==========================================================

The digits preset's scheme follows a rule applied on validation images (the digits train split
minus the K-shot images), not on the test split and not on the methods' ranking: the widest keep
ratio of {0.5, 0.25, 0.125} at which the regression student (K = 1, one view, seeds 0–2) is at
least 5 points below the teacher there. At ``keep:0.5`` it is 1.40 points below (98.60 % vs
100.00 %), at ``keep:0.25`` 11.64 points (88.36 %), so the preset runs ``keep:0.25``
(``bench/views_validation.py --keep-rule``, bench/README.md). Beside the paper's protocol (one
view per image, every method) the objectives in :data:`VIEWS_METHODS` also run with
:data:`xdnb.views.RECOMMENDED`; their rows read ``cross(mu=0.6) + 4 views (flip)``.

The ablations run on digits (at ``keep:0.5``) unless ``data_root`` (and ``teacher``) point at
CIFAR-10 and a VGG-16, where they use VGG-C. Everything a preset fixes can be narrowed (``methods``, ``ks``,
``seeds``, ``schemes``, ``test_limit``) or overridden (any other RunConfig field, e.g.
``solver="reference"``, ``device="cuda"``; ``views``/``augment``: see :func:`preset`). :func:`reproduce` runs a preset end to end and
writes ``results.jsonl``, ``table.md``, one CSV per table, ``figure.html`` and ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from . import atomic, baselines, checks, experiment, plots, tables
from . import views as views_
from .experiment import RunConfig
from .objectives import OBJECTIVES
from .sweep import SweepReport, alpha_beta_grid, grid, mu_grid, parse_method, run_sweep

#: The digits preset's scheme, chosen on validation images (module docstring).
DIGITS_SCHEME = "keep:0.25"
#: The objectives the digits preset also runs with views (:data:`xdnb.views.RECOMMENDED`).
VIEWS_METHODS = ("regression", "cross")

PRESETS = {
    "digits": f"digits net, a quarter of the channels (keep:0.25), K = 1, 2, 5, 10, every method, plus regression and "
              f"cross with {views_.RECOMMENDED['views']} views ({views_.RECOMMENDED['augment']}), 3 seeds "
              f"(runs on a laptop CPU)",
    "cifar10-vgg16-structured": "VGG-16 / CIFAR-10, VGG-A/B/C/50, K = 1, 2, 3, 5, 10, 5 seeds (GPU)",
    "cifar10-vgg16-unstructured": "VGG-16 / CIFAR-10, r = 50/70/90/95 % at K = 1 and K = 1..10 at r = 90 %, 5 seeds (GPU)",
    "cifar10-vgg16-quant": "VGG-16 / CIFAR-10, conv weights quantized to 2 and 4 bits (STE, per channel), K = 1, 5, "
                           "regression / cross / soft, 5 seeds (GPU)",
    "imagenet-resnet34-structured": "ResNet-34 / ImageNet, Res-30/50/70, K = 1 (GPU)",
    "mu-sweep": "ablation: cross(mu) for mu = 0, 0.1, ..., 1 at K = 1, 5 (digits unless data_root is given)",
    "alpha-beta-grid": "ablation: soft(alpha, beta) on a 5 x 5 grid at K = 1 (digits unless data_root is given)",
}
#: The soft connection the presets use for "soft" (midpoint of the grid; not tuned on test data).
SOFT = "soft:0.5,0.5"
#: Our methods in table order (after the baselines, as in the paper).
OURS = ("regression", "correction", "imitation", "cross", SOFT)
VGG_SCHEMES = ("VGG-A", "VGG-B", "VGG-C", "VGG-50")
SPARSITIES = ("sparse:0.5", "sparse:0.7", "sparse:0.9", "sparse:0.95")
#: Methods of the quantization preset (the baselines do not quantize).
QUANT_METHODS = ("regression", "cross", SOFT)


@dataclass(frozen=True)
class View:
    """One table (and, with ``figure``, one figure) of a preset: ``rows`` × ``columns`` fields of
    :mod:`xdnb.tables`, restricted to results matching ``where``."""

    title: str
    rows: str
    columns: str
    where: dict | None = None
    figure: str | None = None  # "k", "sparsity", "mu" or "alpha-beta"


@dataclass(frozen=True)
class Preset:
    """A named sweep: its configs and how to present the results."""

    name: str
    description: str
    configs: tuple[RunConfig, ...]
    views: tuple[View, ...]

    def tables(self, results) -> list[tables.Table]:
        """The preset's tables (views with no matching results, e.g. after narrowing, are left out)."""
        out = []
        for view in self.views:
            try:
                out.append(tables.pivot(results, view.rows, view.columns, where=view.where, title=view.title))
            except ValueError as error:
                if not str(error).startswith("no results"):
                    raise
        return out

    def figures(self, results) -> list:
        """The preset's plotly figures."""
        builders = {"k": plots.accuracy_vs_k, "sparsity": plots.accuracy_vs_sparsity, "mu": plots.accuracy_vs_mu,
                    "alpha-beta": plots.alpha_beta_heatmap}
        chosen = [r.to_dict() if isinstance(r, experiment.Result) else r for r in results]
        out = []
        for view in self.views:
            if view.figure and any(_matches(r, view.where) for r in chosen):
                out.append(builders[view.figure](chosen, where=view.where, title=view.title))
        return out

    def markdown(self, results, decimals: int = 2) -> str:
        """Every table of the preset plus the parameters/FLOPs table, as one markdown text."""
        chosen = [r.to_dict() if isinstance(r, experiment.Result) else r for r in results]

        def listed(name):
            return ", ".join(f"{v:g}" if isinstance(v, float) else str(v)
                             for v in tables._ordered([tables.field_value(r, name) for r in chosen]))

        ran = f"{len(chosen)} runs: methods {listed('method')}; K {listed('k')}; seeds {listed('seed')}"
        parts = [f"# {self.name}\n\nPreset: {self.description}. These results: {ran}.\n"]
        parts += [table.to_markdown(decimals) for table in self.tables(results)]
        header, rows = tables.size_table(results)
        parts.append("**Size per scheme** (student after pruning)\n\n" + tables.markdown(header, rows))
        return "\n".join(parts)


def _matches(result: dict, where: dict | None) -> bool:
    return all(tables.field_value(result, k) == v for k, v in (where or {}).items())


def available_methods(structured: bool = True) -> list[str]:
    """Method specs of a full preset: the paper's baselines (without the channel-only ones for
    unstructured pruning), then ours; ``kd`` and ``mir`` run when named (``methods=``)."""
    chosen = [m for m in baselines.PAPER_METHODS if structured or m not in baselines.STRUCTURED_ONLY]
    return chosen + list(OURS)


def cifar10_spec(data_root) -> str:
    """The dataset spec of a CIFAR-10 folder: ``cifar10:ROOT`` (torchvision's
    ``cifar-10-batches-py`` inside) or ``cifar10-folder:ROOT`` (``train/`` and ``test/`` class folders)."""
    if data_root is None:
        raise FileNotFoundError("this preset needs CIFAR-10: pass data_root=ROOT (CLI: --data-root ROOT), a folder "
                                "holding cifar-10-batches-py/ (torchvision) or train/ and test/ class folders (JPEG export)")
    kind = str(data_root).partition(":")[0]
    if kind in ("cifar10", "cifar10-folder"):
        return str(data_root)
    root = Path(data_root).expanduser().resolve()
    if (root / "cifar-10-batches-py").is_dir():
        return f"cifar10:{root}"
    if (root / "train").is_dir() and (root / "test").is_dir():
        return f"cifar10-folder:{root}"
    raise FileNotFoundError(f"no CIFAR-10 under {root}: expected {root}/cifar-10-batches-py or {root}/train and "
                            f"{root}/test; pass --data-root (data_root=) pointing at one of them")


def imagenet_spec(data_root) -> str:
    if data_root is None:
        raise FileNotFoundError("this preset needs ImageNet: pass data_root=ROOT (CLI: --data-root ROOT), a folder "
                                "holding train/ and val/ with one sub-folder per class")
    if str(data_root).startswith("imagenet:"):
        return str(data_root)
    root = Path(data_root).expanduser().resolve()
    if not ((root / "train").is_dir() and (root / "val").is_dir()):
        raise FileNotFoundError(f"no ImageNet under {root}: expected {root}/train and {root}/val class folders; "
                                "pass --data-root (data_root=) pointing at that folder")
    return f"imagenet:{root}"


def _checkpoint(teacher, what: str, required: bool = True) -> str | None:
    if teacher is None:
        if required:
            raise FileNotFoundError(f"this preset needs the teacher: pass teacher=PATH (CLI: --teacher PATH), {what}")
        return None
    path = Path(teacher).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"teacher checkpoint {path} does not exist; pass teacher=PATH (CLI: --teacher PATH), {what}")
    return str(path)


_VGG_TEACHER = "a network-slimming VGG-16 state dict trained on CIFAR-10"


def preset(name: str, *, data_root: str | None = None, teacher: str | None = None, seeds: Sequence[int] | None = None,
           methods: Sequence[str] | None = None, ks: Sequence[int] | None = None, schemes: Sequence[str] | None = None,
           mus: Sequence[float] | None = None, alphas: Sequence[float] | None = None,
           betas: Sequence[float] | None = None, arch: str | None = None, **overrides) -> Preset:
    """Build the preset ``name`` (see the module docstring); keyword arguments narrow it.

    ``data_root``/``teacher``: where the data and teacher checkpoint live (CIFAR-10, ImageNet and
    the ablations on CIFAR); a missing one raises FileNotFoundError saying what to pass.
    ``arch``: another teacher architecture for the CIFAR presets and the ablations on CIFAR
    (e.g. ``"torchvision:resnet18"`` with ``stem="cifar"``); its default scheme is ``keep:0.5``
    (the VGG-16 schemes need VGG-16). ``overrides``: other RunConfig fields for every run
    (``device``, ``solver``, ``test_limit``, ``num_classes``, ``stem``, ...), except ``views`` and
    ``augment``: for ``digits`` they set the views rows (the chosen methods among
    :data:`VIEWS_METHODS`, fitted on ``views`` views per image with ``augment``; each defaults to
    :data:`xdnb.views.RECOMMENDED`, and ``views=1`` leaves those rows out), beside the rows of
    the paper's protocol; for the other presets they apply to every objective run (the baselines
    take no views yet and keep one view per image).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    fixed = {"method", "mu", "alpha", "beta", "pruning", "k", "seed", "data", "arch", "teacher"}
    bad = sorted(set(overrides) - (fields - fixed))
    if bad:
        raise ValueError(f"unknown or preset-owned option {bad[0]!r}; allowed: {', '.join(sorted(fields - fixed))}")
    given_views = {key: overrides.pop(key) for key in ("views", "augment") if key in overrides}
    ablation = name in ("mu-sweep", "alpha-beta-grid")
    if ablation and methods is not None:
        raise ValueError(f"{name} varies {'mu' if name == 'mu-sweep' else 'alpha and beta'}; pass "
                         f"{'mus' if name == 'mu-sweep' else 'alphas/betas'} instead of methods")
    if not ablation and (mus, alphas, betas) != (None, None, None):
        raise ValueError(f"mus, alphas and betas belong to the ablation presets, not {name!r}")

    def pick(given, default):
        return list(default if given is None else given)

    if name == "digits" and data_root is not None:
        raise ValueError("the digits preset uses the embedded scikit-learn digits; leave data_root unset")
    other_arch = arch is not None and arch != "vgg16"
    if arch is not None and (name in ("digits", "imagenet-resnet34-structured") or (ablation and data_root is None)):
        raise ValueError(f"arch applies to the CIFAR-10 presets and the ablations on CIFAR-10, not {name!r}"
                         + (" without data_root" if ablation else ""))
    if name == "digits" or (ablation and data_root is None):
        base = RunConfig(data="digits", arch="digits", teacher=_checkpoint(teacher, "a digits-net state dict", required=False))
        default_scheme = "keep:0.5"
    elif name == "imagenet-resnet34-structured":
        base = RunConfig(data=imagenet_spec(data_root), arch="resnet34", batch_size=250,
                         teacher=_checkpoint(teacher, "a torchvision ResNet-34 state dict", required=False))
        default_scheme = None
    else:
        base = RunConfig(data=cifar10_spec(data_root), arch=arch or "vgg16",
                         teacher=_checkpoint(teacher, f"a {arch} state dict trained on CIFAR-10" if other_arch else _VGG_TEACHER))
        default_scheme = "keep:0.5" if other_arch else "VGG-C"
    base = dataclasses.replace(base, **overrides)
    if name == "digits":
        scheme_list, method_list = pick(schemes, [DIGITS_SCHEME]), pick(methods, available_methods())
        k_list, seed_list = pick(ks, [1, 2, 5, 10]), pick(seeds, [0, 1, 2])
        configs = grid(method_list, k_list, scheme_list, seed_list, base)
        setting = _views_rows(given_views)
        with_views = [{**fields, **setting} for fields in map(_method_fields, method_list)
                      if setting and fields["method"] in VIEWS_METHODS]
        if with_views:
            configs += grid(with_views, k_list, scheme_list, seed_list, base)
        views = [View(f"digits, {s}: top-1 accuracy (%) by K", "method", "k", {"scheme": s}, "k") for s in scheme_list]
    elif name == "cifar10-vgg16-structured":
        scheme_list = pick(schemes, ["keep:0.5"] if other_arch else VGG_SCHEMES)
        configs = grid(pick(methods, available_methods()), pick(ks, [1, 2, 3, 5, 10]), scheme_list, pick(seeds, range(5)), base)
        views = [View(f"CIFAR-10 {arch if other_arch else 'VGG-16'}, {s}: top-1 accuracy (%) by K", "method", "k", {"scheme": s}, "k") for s in scheme_list]
    elif name == "cifar10-vgg16-unstructured":
        method_list, seed_list = pick(methods, available_methods(structured=False)), pick(seeds, range(5))
        scheme_list = pick(schemes, SPARSITIES)
        k_sweep_at = "sparse:0.9" if "sparse:0.9" in scheme_list else scheme_list[-1]
        configs = grid(method_list, [1], scheme_list, seed_list, base)
        configs += [c for c in grid(method_list, pick(ks, [1, 2, 3, 5, 10]), [k_sweep_at], seed_list, base)
                    if c.k != 1]
        views = [View("CIFAR-10 VGG-16, unstructured, K = 1: top-1 accuracy (%) by sparsity", "method", "sparsity",
                      {"k": 1}, "sparsity"),
                 View(f"CIFAR-10 VGG-16, {k_sweep_at}: top-1 accuracy (%) by K", "method", "k", {"scheme": k_sweep_at}, "k")]
    elif name == "cifar10-vgg16-quant":
        # quantization instead of pruning (scheme "none" unless narrowed); quantize=BITS narrows the bit widths
        bit_list = [base.quantize] if base.quantize is not None else [2, 4]
        configs = [c for b in bit_list for c in grid(pick(methods, QUANT_METHODS), pick(ks, [1, 5]), pick(schemes, [None]),
                                                     pick(seeds, range(5)), dataclasses.replace(base, quantize=b))]
        views = [View(f"CIFAR-10 VGG-16, {b}-bit weights ({base.quantizer}, per {base.granularity}): top-1 accuracy (%) by K",
                      "method", "k", {"quantize": b}, "k") for b in bit_list]
    elif name == "imagenet-resnet34-structured":
        configs = grid(pick(methods, available_methods()), pick(ks, [1]), pick(schemes, ["Res-30", "Res-50", "Res-70"]),
                       pick(seeds, [0]), base)
        views = [View("ImageNet ResNet-34: top-1 accuracy (%) by scheme", "method", "scheme")]
    elif name == "mu-sweep":
        mu_list = pick(mus, [round(0.1 * i, 1) for i in range(11)])
        configs = mu_grid(mu_list, pick(ks, [1, 5]), pick(seeds, [0, 1, 2]), pick(schemes, [default_scheme])[0], base)
        views = [View("cross distillation: top-1 accuracy (%) by mu and K", "mu", "k", None, "mu")]
    else:
        grid_values = [0.0, 0.25, 0.5, 0.75, 1.0]
        configs = alpha_beta_grid(pick(alphas, grid_values), pick(betas, grid_values), pick(ks, [1]),
                                  pick(seeds, [0, 1, 2]), pick(schemes, [default_scheme])[0], base)
        views = [View(f"soft cross distillation, K = {k}: top-1 accuracy (%) by alpha (rows) and beta (columns)",
                      "alpha", "beta", {"k": k}, "alpha-beta") for k in pick(ks, [1])]
    if name != "digits" and given_views:
        configs = [c.replace(**given_views) if c.method in OBJECTIVES else c for c in configs]
    return Preset(name, PRESETS[name], tuple(configs), tuple(views))


def _method_fields(method) -> dict:
    """RunConfig fields of a method spec (``"cross:0.3"``) or of a dict of them."""
    return parse_method(method) if isinstance(method, str) else dict(method)


def _views_rows(given: dict) -> dict | None:
    """``{"views": N, "augment": A}`` of the digits preset's views rows (each missing one from
    :data:`xdnb.views.RECOMMENDED`), or ``None`` for ``views=1`` (no views rows)."""
    count = checks.integer("views", given.get("views", views_.RECOMMENDED["views"]), low=1)
    if count == 1:
        if "augment" in given:
            raise ValueError(f"augment only applies with views > 1; got views=1 with augment={given['augment']!r}")
        return None
    augment = given.get("augment", views_.RECOMMENDED["augment"])
    views_.parse_augment(augment)
    return {"views": count, "augment": augment}


# --- running a preset and writing its outputs --------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


def write_outputs(preset_: Preset, results, out_dir: str | Path) -> dict[str, Path]:
    """Write ``table.md``, ``table-N-<slug>.csv`` per table, ``sizes.csv``, ``figure.html`` (all
    figures, plotly.js embedded once so it opens offline) and ``summary.json`` into ``out_dir``.
    (``results.jsonl`` is the sweep's own file.) Returns the paths by name."""
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    paths = {"table.md": out / "table.md", "figure.html": out / "figure.html", "summary.json": out / "summary.json",
             "sizes.csv": out / "sizes.csv"}
    atomic.write_text(paths["table.md"], preset_.markdown(results))
    made = preset_.tables(results)
    for number, table in enumerate(made, 1):
        paths[f"table-{number}"] = out / f"table-{number}-{_slug(table.title)}.csv"
        atomic.write_text(paths[f"table-{number}"], table.to_csv())
    atomic.write_text(paths["sizes.csv"], tables.csv_text(*tables.size_table(results)))
    figures = preset_.figures(results)
    body = "\n".join(fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figures))
    atomic.write_text(paths["figure.html"], f"<!doctype html>\n<html><head><meta charset='utf-8'><title>xdnb {preset_.name}</title>"
                      f"</head><body>\n{body}\n</body></html>\n")
    summary = {"preset": preset_.name, "description": preset_.description, "runs": len(results),
               "tables": [{"title": t.title, "rows": t.row_field, "columns": t.column_field, "teacher": t.teacher,
                           "cells": t.summary()} for t in made]}
    atomic.write_text(paths["summary.json"], json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return paths


def reproduce(name: str, out_dir: str | Path = "outputs", *, workers: int | None = None, executor=None,
              show_progress: bool = True, on_result=None, **preset_options) -> tuple[Preset, SweepReport, dict]:
    """Run the preset ``name`` into ``out_dir`` (resuming ``out_dir/results.jsonl``) and write
    its tables and figures: the library path behind ``xdnb reproduce`` and notebook 05.
    Returns ``(preset, sweep report, written paths)``."""
    chosen = preset(name, **preset_options)
    report = run_sweep(chosen.configs, Path(out_dir).expanduser() / "results.jsonl", workers=workers,
                       executor=executor, show_progress=show_progress, desc=name, on_result=on_result)
    return chosen, report, write_outputs(chosen, report.results, out_dir)
