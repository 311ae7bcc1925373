"""Interactive panels of the tutorial notebooks: sliders, one live figure, a status line.

One panel class per notebook topic:

- :class:`ErrorPanel` (01): plain layer-wise regression; K, keep ratio, ridge and BN handling;
  per-layer estimation error on the K-shot images (dotted) and on held-out images (solid);
- :class:`CrossPanel` (02): cross distillation ``mu·L^c + (1−mu)·L^i``; the mu slider; held-out
  L^r, eps_S and eps_T per layer against plain regression;
- :class:`SoftPanel` (03): the soft connection; alpha and beta sliders over a precomputed
  (alpha, beta) heat map, and the per-layer held-out L^r of the current point;
- :class:`PruningPanel` (04): structured vs unstructured pruning; amount, K, method and BN; kept
  channels (or weights) per layer and held-out L^r; size, FLOPs and latency in the status line;
- :class:`ViewsPanel` (07): xdnb's additions beyond the paper; the number of label-free views per
  K-shot image, their augmentation, K and an optional global stage (kd / mir); per-layer error on
  the K-shot images (dotted) and on held-out images (solid), with one view (the paper's protocol)
  and with the chosen views.

Every panel owns its controls (``continuous_update=False``: a slider recomputes when released),
one ``plotly.graph_objects.FigureWidget`` (:attr:`Panel.figure`) and a status line
(:attr:`Panel.status`), and exposes :meth:`Panel.update` (``panel.update(mu=0.3)``), which is what a
control calls. During a compression the figure is redrawn after every layer (the engine's
callback), so the error visibly builds up front to back. Panels never print; the computations
live in :mod:`xdnb.tutorial` and the figures in :mod:`xdnb.plots`, so tests drive a panel
headlessly and compare its figure with direct library calls.
"""

from __future__ import annotations

import html
import time

import ipywidgets as W
import plotly.graph_objects as go

from . import global_stage as global_stage_
from . import latency as timing
from . import metrics, plots
from .sites import BN_MODES
from .solvers import DEFAULT_RIDGE
from .tutorial import DEFAULT_K, DEFAULT_PRUNING, Bench, Trial
from .views import RECOMMENDED

#: The pruning panel's latency: one batch of this many inputs, timed this many times (teacher and
#: student interleaved, :func:`xdnb.latency.compare`).
LATENCY_BATCH, LATENCY_REPEATS = 100, 5

#: Width (pixels) of a panel's figure: plotly's FigureWidget draws 700 px wide whatever the cell's
#: width, too narrow for two or three plots side by side (the heat map's cells could not hold their
#: values); 980 px fits a JupyterLab notebook column on a common laptop screen.
PANEL_WIDTH = 980

#: K values offered by the sliders (the paper's).
K_CHOICES = (1, 2, 3, 5, 10)


#: Views per K-shot image offered by the views panel's slider (1 = the images alone, the paper's protocol).
VIEW_CHOICES = (1, 2, 4, 8, 16)
#: Augmentations offered by the views panel (:func:`xdnb.views.parse_augment`).
AUGMENT_CHOICES = ("flip", "crop", "flip,crop", "flip,crop,mixup")
#: Adam steps of the views panel's global stage: a quarter of the default
#: (:data:`xdnb.global_stage.DEFAULT_STEPS`, 400), so that one slider change with a stage stays
#: around a second on digits on one thread (400 steps take about 3 s there).
PANEL_GLOBAL_STEPS = 100


def _k_slider(value: int) -> W.SelectionSlider:
    return W.SelectionSlider(options=list(K_CHOICES), value=value, description="K", continuous_update=False)


def _unit_slider(name: str, value: float, step: float = 0.1, low: float = 0.0) -> W.FloatSlider:
    return W.FloatSlider(value=value, min=low, max=1.0, step=step, description=name, continuous_update=False,
                         readout_format=".2f")


def _ridge_slider(value: float) -> W.FloatLogSlider:
    return W.FloatLogSlider(value=value, base=10, min=-4, max=1, step=0.5, description="ridge",
                            continuous_update=False, readout_format=".0e")


def _bn_dropdown(value: str) -> W.Dropdown:
    return W.Dropdown(options=list(BN_MODES), value=value, description="BN")


class Panel:
    """Base of the tutorial panels (see module docstring).

    Subclasses define :meth:`_controls` (name -> widget, the names being :attr:`params` keys),
    :meth:`_build_figure` and :meth:`_compute_and_draw`. ``bench``: the shared
    :class:`~xdnb.tutorial.Bench` (teacher, data); ``params``: initial values.
    """

    #: parameters every subclass accepts, with defaults (overridden per subclass)
    defaults: dict = {}
    #: parameters whose control offers a fixed list of values: name -> the values (checked by
    #: :meth:`update` and the constructor, so a value a control cannot show is a ValueError)
    choices: dict = {}

    def __init__(self, bench: Bench | None = None, **params):
        self.bench = bench if bench is not None else Bench()
        self._check(params)
        self.params = {**self.defaults, **params}
        self.names = self.bench.layer_names
        self.controls = self._controls()
        self.figure = go.FigureWidget(self._build_figure())
        if self.figure.layout.width is None:  # the widget does not fill the cell by itself: it draws 700 px wide
            self.figure.layout.width = PANEL_WIDTH
        self.status = W.HTML(value="")
        self.view = W.VBox([W.HBox(list(self.controls.values()), layout=W.Layout(flex_flow="row wrap")),
                            self.status, self.figure])
        #: the last :class:`~xdnb.tutorial.Trial` and the seconds the last update took (compute + draw)
        self.trial: Trial | None = None
        self.seconds = 0.0
        self._syncing = False
        for name, control in self.controls.items():
            control.observe(self._on_change(name), names="value")
        self.update()

    # --- what subclasses provide ---------------------------------------------------------------

    def _controls(self) -> dict[str, W.Widget]:
        raise NotImplementedError

    def _build_figure(self) -> go.Figure:
        raise NotImplementedError

    def _compute_and_draw(self) -> str:
        """Run the computation for :attr:`params`, redraw, and return the status text (HTML)."""
        raise NotImplementedError

    # --- the shared machinery ------------------------------------------------------------------

    def _on_change(self, name: str):
        def handler(change):
            if self._syncing:
                return
            try:
                self.update(**{name: change["new"]})
            except Exception as error:  # shown in the status line: a widget callback cannot raise to the user
                self.status.value = f'<span style="color:#b00">{html.escape(type(error).__name__)}: {html.escape(str(error))}</span>'
        return handler

    def update(self, **params) -> Trial | None:
        """Set parameters (as the controls would), recompute and redraw; returns the new trial.

        Raises ValueError for an unknown parameter name (listing the allowed ones) or a value that
        is not among a control's :attr:`choices`."""
        self._check(params)
        self.params.update(params)
        self._syncing = True
        try:
            for name, control in self.controls.items():
                if control.value != self.params[name]:
                    control.value = self.params[name]
        finally:
            self._syncing = False
        started = time.perf_counter()
        self.status.value = "computing…"
        text = self._compute_and_draw()
        self.seconds = time.perf_counter() - started
        self.status.value = f"{text} · updated in {self.seconds:.2f} s"
        return self.trial

    def _check(self, params: dict) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(f"{type(self).__name__} has no parameter {unknown[0]!r}; allowed: {', '.join(self.defaults)}")
        for name, value in params.items():
            if name in self.choices and value not in self.choices[name]:
                allowed = ", ".join(str(v) for v in self.choices[name])
                raise ValueError(f"{type(self).__name__}: {name} must be one of {allowed}, got {value!r}")

    def _live(self, trace_index: int, on: str = "the K-shot images"):
        """An engine callback that appends each finished layer to trace ``trace_index`` (its error
        on the images it is fitted on, ``on``; the final values replace it when the compression is
        done) and says so in the status line."""
        xs, ys = [], []

        def callback(record: dict) -> None:
            xs.append(self.names.get(record["layer"], record["layer"]))
            ys.append(plots.layer_value(record, "relative_error"))
            with self.figure.batch_update():
                self.figure.data[trace_index].x = list(xs)
                self.figure.data[trace_index].y = list(ys)
            self.status.value = (f"compressing… {xs[-1]} fitted, L^r on {on} {ys[-1]:.3f} "
                                 "(held-out errors follow)")
        return callback

    def _set(self, trace_index: int, records: list[dict], key: str = "relative_error") -> None:
        trace = self.figure.data[trace_index]
        trace.x = plots.layer_labels(records, self.names)
        trace.y = [plots.layer_value(r, key) for r in records]

    def _run(self, method: str, live_trace: int | None = None, live_on: str = "the K-shot images", **settings) -> Trial:
        callback = self._live(live_trace, live_on) if live_trace is not None else None
        return self.bench.run(method, callback=callback, **settings)

    def snapshot(self) -> go.Figure:
        """A static copy of the current figure (for stored notebook outputs and exports)."""
        return go.Figure(self.figure)

    def describe(self) -> str:
        """One line: the panel, its parameters and the last status."""
        params = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params.items())
        return f"{type(self).__name__}({params}) — interactive: run the notebook to move the sliders"

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.view._repr_mimebundle_(**kwargs) or {}
        bundle["text/plain"] = self.describe()
        return bundle

    def _accuracy_text(self, trial: Trial) -> str:
        return (f"held-out accuracy <b>{100 * trial.accuracy:.1f} %</b> "
                f"(teacher {100 * self.bench.teacher_accuracy:.1f} %)")


def _common(params: dict) -> dict:
    """The Bench.run settings shared by the panels."""
    return {"k": params["k"], "seed": params["seed"], "bn": params["bn"], "ridge": params["ridge"]}


class ErrorPanel(Panel):
    """Notebook 01: per-layer estimation error of plain layer-wise regression, on the K-shot images
    the student was fitted on (dotted) and on held-out images (solid). Controls: K, keep ratio,
    ridge, BN handling."""

    defaults = {"k": DEFAULT_K, "keep": 0.25, "ridge": DEFAULT_RIDGE, "bn": "reestimate", "seed": 0,
                "method": "regression"}

    def _controls(self):
        p = self.params
        return {"k": _k_slider(p["k"]), "keep": _unit_slider("keep", p["keep"], 0.125, 0.125),
                "ridge": _ridge_slider(p["ridge"]), "bn": _bn_dropdown(p["bn"])}

    def _build_figure(self):
        label = self.params["method"]
        return plots.layer_error_figure({label: []}, {label: []}, title="Per-layer estimation error (live)",
                                        names=self.names)

    def _compute_and_draw(self):
        p = self.params
        with self.figure.batch_update():
            for trace in self.figure.data:
                trace.x, trace.y = [], []
        trial = self._run(p["method"], live_trace=1, pruning=f"keep:{p['keep']:g}", **_common(p))
        with self.figure.batch_update():
            self._set(0, trial.held_out)
            self._set(1, trial.train)
        self.trial = trial
        return f"{trial.label}, K={p['k']}, keep {p['keep']:g}, BN {p['bn']}: {self._accuracy_text(trial)}"


class CrossPanel(Panel):
    """Notebook 02: cross distillation ``mu·L^c + (1−mu)·L^i`` against plain regression; held-out
    L^r, eps_S and eps_T per layer. Controls: mu, K, ridge, BN handling (the regression reference
    is recomputed only when K, ridge or BN change)."""

    defaults = {"mu": 0.6, "k": DEFAULT_K, "ridge": DEFAULT_RIDGE, "bn": "reestimate", "seed": 0,
                "pruning": "keep:0.25"}
    keys = ("relative_error", "eps_S", "eps_T")

    def __init__(self, bench: Bench | None = None, **params):
        self._reference: tuple[tuple, Trial] | None = None
        super().__init__(bench, **params)

    def _controls(self):
        p = self.params
        return {"mu": _unit_slider("mu", p["mu"]), "k": _k_slider(p["k"]), "ridge": _ridge_slider(p["ridge"]),
                "bn": _bn_dropdown(p["bn"])}

    def _build_figure(self):
        fig = plots.inconsistency_figure({"regression": [], "cross": []}, keys=self.keys, names=self.names,
                                         title="Held-out L^r, eps_S, eps_T per layer (live)")
        # the widget draws 700 px wide: a legend at the right would squeeze the three plots until their
        # tick labels tilt into each other, so it goes in one row between the title and the plots' titles
        fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.1, x=0), margin=dict(t=110), height=450)
        return fig

    def reference(self) -> Trial:
        """The plain-regression trial for the current K, ridge, BN and pruning (cached)."""
        p = self.params
        key = (p["k"], p["seed"], p["bn"], p["ridge"], p["pruning"])
        if self._reference is None or self._reference[0] != key:
            self._reference = (key, self._run("regression", pruning=p["pruning"], **_common(p)))
        return self._reference[1]

    def _compute_and_draw(self):
        p = self.params
        n = len(self.keys)  # traces: regression's n panels, then cross's n panels
        reference = self.reference()
        with self.figure.batch_update():
            for col, key in enumerate(self.keys):
                self._set(col, reference.held_out, key)
                self.figure.data[n + col].x, self.figure.data[n + col].y = [], []
        trial = self._run("cross", live_trace=n, mu=p["mu"], pruning=p["pruning"], **_common(p))
        with self.figure.batch_update():
            for col, key in enumerate(self.keys):
                self._set(n + col, trial.held_out, key)
                self.figure.data[n + col].name = trial.label
        self.trial = trial
        holds = all(metrics.bound_holds(r, p["mu"]) for r in trial.held_out)
        return (f"{trial.label}, K={p['k']}, BN {p['bn']}: {self._accuracy_text(trial)}; regression "
                f"{100 * reference.accuracy:.1f} %; bound holds on every layer: {'yes' if holds else 'NO'}")


class SoftPanel(Panel):
    """Notebook 03: the soft cross connection. ``grid``: the output of
    :func:`xdnb.tutorial.soft_grid` (drawn as the heat map, with ``value`` = ``"accuracy"`` or
    ``"error"``); the alpha and beta sliders move a ring over it and redraw the per-layer held-out
    L^r of soft(alpha, beta) against regression. The other settings (K, ridge, BN, pruning) are
    fixed per panel and should match the grid's."""

    defaults = {"alpha": 0.5, "beta": 0.5, "k": DEFAULT_K, "ridge": DEFAULT_RIDGE, "bn": "reestimate", "seed": 0,
                "pruning": "keep:0.25"}

    def __init__(self, bench: Bench | None = None, grid: dict | None = None, value: str = "accuracy", **params):
        if value not in ("accuracy", "error"):
            raise ValueError(f"value must be 'accuracy' or 'error', got {value!r}")
        self.grid, self.value = grid, value
        self._reference: Trial | None = None
        super().__init__(bench, **params)

    def _controls(self):
        p = self.params
        return {"alpha": _unit_slider("alpha", p["alpha"], 0.05), "beta": _unit_slider("beta", p["beta"], 0.05)}

    def _build_figure(self):
        from plotly.subplots import make_subplots

        value_title = "accuracy (%)" if self.value == "accuracy" else "sum of L^r"
        fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.17,
                            subplot_titles=[f"(alpha, beta) plane: {value_title}", "held-out L^r per layer"])
        if self.grid is not None:
            heat = plots.alpha_beta_figure(self.grid["alphas"], self.grid["betas"], self.grid[self.value],
                                           value_title=value_title, reverse_scale=self.value == "error",
                                           text_format=".1f" if self.value == "accuracy" else ".2f")
            for trace in heat.data:
                fig.add_trace(trace, row=1, col=1)
            # every cell shows its value, so no colour bar (between the two plots it covered the right one's axis)
            fig.data[0].showscale = False
        else:
            fig.add_trace(go.Scatter(x=[], y=[], mode="markers", name="current", showlegend=False), row=1, col=1)
        self._ring = len(fig.data) - 1
        for label in ("regression", "soft"):
            fig.add_trace(go.Scatter(x=[], y=[], name=label, mode="lines+markers",
                                     line=dict(color=plots.method_color(label), width=2)), row=1, col=2)
        fig.update_xaxes(title_text="beta", range=[-0.1, 1.1], row=1, col=1)
        fig.update_yaxes(title_text="alpha", range=[-0.1, 1.1], row=1, col=1)
        fig.update_xaxes(type="category", row=1, col=2)
        fig.update_yaxes(title_text="relative to mean((W_T*h_T)²)", rangemode="tozero", row=1, col=2)
        return plots.styled(fig, "Soft cross connection (live)", margin=dict(t=90))  # legend at the right

    def _settings(self) -> dict:
        p = self.params
        return {"pruning": p["pruning"], **_common(p)}

    def _compute_and_draw(self):
        p = self.params
        if self._reference is None:
            self._reference = self._run("regression", **self._settings())
        ring, line = self._ring, self._ring + 1
        with self.figure.batch_update():
            self.figure.data[ring].x, self.figure.data[ring].y = [p["beta"]], [p["alpha"]]
            self._set(line, self._reference.held_out)
            self.figure.data[line + 1].x, self.figure.data[line + 1].y = [], []
        trial = self._run("soft", live_trace=line + 1, alpha=p["alpha"], beta=p["beta"], **self._settings())
        with self.figure.batch_update():
            self._set(line + 1, trial.held_out)
            self.figure.data[line + 1].name = trial.label
        self.trial = trial
        return (f"{trial.label} (beta' = 1 − beta = {1 - p['beta']:g}), K={p['k']}, BN {p['bn']}: "
                f"{self._accuracy_text(trial)}; regression {100 * self._reference.accuracy:.1f} %")


class PruningPanel(Panel):
    """Notebook 04: structured (input channels) vs unstructured (single weights) pruning.
    Controls: kind, the removed fraction, K, method and BN handling; the figure shows what each layer keeps
    (channels, or the kept fraction of weights) and the held-out L^r per layer; the status line
    gives accuracy, parameters, FLOPs and the measured latency of the compressed network."""

    defaults = {"kind": "structured", "removed": 0.75, "k": DEFAULT_K, "method": "cross", "bn": "reestimate",
                "ridge": DEFAULT_RIDGE, "seed": 0}
    methods = ("regression", "correction", "imitation", "cross")

    def _controls(self):
        p = self.params
        return {"kind": W.ToggleButtons(options=["structured", "unstructured"], value=p["kind"], description="pruning"),
                "removed": W.FloatSlider(value=p["removed"], min=0.5, max=0.95, step=0.05, description="removed",
                                         continuous_update=False, readout_format=".2f"),
                "k": _k_slider(p["k"]), "method": W.Dropdown(options=list(self.methods), value=p["method"],
                                                             description="method"),
                "bn": _bn_dropdown(p["bn"])}

    def _build_figure(self):
        from plotly.subplots import make_subplots

        fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                            subplot_titles=["kept per layer", "held-out L^r per layer"])
        fig.add_trace(go.Bar(x=[], y=[], name="teacher", marker=dict(color="rgba(0,0,0,0)", line=dict(color="#444", width=1.5))),
                      row=1, col=1)
        fig.add_trace(go.Bar(x=[], y=[], name="kept", marker_color=plots.method_color(self.params["method"])), row=1, col=1)
        fig.add_trace(go.Scatter(x=[], y=[], name="held-out L^r", mode="lines+markers",
                                 line=dict(color=plots.method_color(self.params["method"]), width=2)), row=1, col=2)
        fig.update_layout(barmode="overlay")
        fig.update_xaxes(type="category")
        fig.update_yaxes(rangemode="tozero")
        return plots.styled(fig, "Pruning (live)", showlegend=False, margin=dict(t=90))

    def _speedup(self, student) -> float:
        """Teacher latency / student latency, timed side by side by :func:`xdnb.latency.compare` in
        PyTorch on the current thread count, on a batch of up to LATENCY_BATCH held-out-sized inputs."""
        import torch

        batch = min(LATENCY_BATCH, len(self.bench.held_images))
        row, = timing.compare(self.bench.teacher, student, self.bench.input_shape, batch_sizes=(batch,),
                              threads=(torch.get_num_threads(),), repeats=LATENCY_REPEATS)
        return row["speedup"]

    def pruning_spec(self) -> str:
        p = self.params
        if p["kind"] not in ("structured", "unstructured"):
            raise ValueError(f"kind must be 'structured' or 'unstructured', got {p['kind']!r}")
        return f"keep:{1 - p['removed']:.4g}" if p["kind"] == "structured" else f"sparse:{p['removed']:.4g}"

    def _compute_and_draw(self):
        p = self.params
        color = plots.method_color(p["method"])
        with self.figure.batch_update():
            for trace in self.figure.data:
                trace.x, trace.y = [], []
            self.figure.data[1].marker.color = color
            self.figure.data[2].line.color = color
        structured = p["kind"] == "structured"
        trial = self._run(p["method"], live_trace=2, pruning=self.pruning_spec(), **_common(p))
        with self.figure.batch_update():
            labels = plots.layer_labels(trial.train, self.names)
            self.figure.data[0].x = labels if structured else []
            self.figure.data[0].y = [r["in_channels"] for r in trial.train] if structured else []
            self.figure.data[1].x = labels
            self.figure.data[1].y = ([r["in_channels_kept"] for r in trial.train] if structured
                                     else [round(1 - r["sparsity"], 4) for r in trial.train])
            self.figure.layout.yaxis.title.text = "input channels" if structured else "kept fraction of weights"
            self._set(2, trial.held_out)
        self.trial = trial
        teacher_size = self.bench.size(self.bench.teacher)
        size = self.bench.size(trial.compressed.student)
        speed = 1 / self._speedup(trial.compressed.student)
        params = size["params"] if structured else size["nonzero"]
        flops = size["flops_dense"] if structured else size["flops_effective"]
        return (f"{trial.label}, {self.pruning_spec()}, K={p['k']}, BN {p['bn']}: {self._accuracy_text(trial)}; "
                f"{'parameters' if structured else 'non-zero parameters'} {params:,} of {teacher_size['params']:,}; "
                f"{'FLOPs' if structured else 'effective FLOPs'} {flops:,} of {teacher_size['flops_dense']:,}; "
                f"latency ×{speed:.2f} of the teacher's")


class ViewsPanel(Panel):
    """Notebook 07: label-free views of the K-shot images and the global stage, xdnb's additions
    beyond the paper (docs/method.md, "What xdnb adds beyond the paper").

    Controls: ``views`` per K-shot image (:data:`VIEW_CHOICES`; 1 = the paper's protocol),
    ``augment`` (:data:`AUGMENT_CHOICES`), K, and ``global_stage`` (``none``, ``kd``, ``mir``,
    run for ``global_steps`` Adam steps: :data:`PANEL_GLOBAL_STEPS` by default, fewer than the
    library's 400, and the status line says so). The figure shows, per layer, the relative
    estimation error L^r / mean((W_T*h_T)²) of the final student on the K-shot images themselves
    (dotted; :attr:`xdnb.tutorial.Trial.kshot`, never on the views) and on held-out images
    (solid), for ``method`` with one view and no stage (the reference, blue; recomputed only when
    K, the method or its settings change) and with the chosen views and stage (red). While a
    compression runs, the red dotted line shows each layer's error on the K·views images it is
    being fitted on; the K-shot-image values replace it at the end. The status line gives held-out
    accuracy against the teacher and the reference, and the gap held-out − K-shot summed over
    layers (:meth:`xdnb.tutorial.Trial.gap`)."""

    defaults = {"views": RECOMMENDED["views"], "augment": RECOMMENDED["augment"], "k": DEFAULT_K,
                "global_stage": "none", "global_steps": PANEL_GLOBAL_STEPS, "method": "cross",
                "pruning": DEFAULT_PRUNING, "ridge": DEFAULT_RIDGE, "bn": "reestimate", "seed": 0}
    choices = {"views": VIEW_CHOICES, "augment": AUGMENT_CHOICES, "k": K_CHOICES,
               "global_stage": ("none", *global_stage_.STAGES)}
    #: the two curves' labels: trace 2·i is curve i on held-out images, trace 2·i + 1 on the K-shot images
    curves = ("1 view (paper)", "views")

    def __init__(self, bench: Bench | None = None, **params):
        self._reference: tuple[tuple, Trial] | None = None
        super().__init__(bench, **params)

    def _controls(self):
        p = self.params
        return {"views": W.SelectionSlider(options=list(self.choices["views"]), value=p["views"], description="views",
                                           continuous_update=False),
                "augment": W.Dropdown(options=list(self.choices["augment"]), value=p["augment"], description="augment"),
                "k": _k_slider(p["k"]),
                "global_stage": W.Dropdown(options=list(self.choices["global_stage"]), value=p["global_stage"],
                                           description="global stage", style={"description_width": "initial"})}

    def _build_figure(self):
        empty = {label: [] for label in self.curves}
        return plots.layer_error_figure(empty, empty, names=self.names, train_label="K-shot images",
                                        title="Per-layer L^r: K-shot images (dotted) vs held-out (solid), live")

    def _settings(self) -> dict:
        p = self.params
        return {"k": p["k"], "seed": p["seed"], "pruning": p["pruning"], "bn": p["bn"], "ridge": p["ridge"]}

    def reference(self) -> Trial:
        """The trial with one view and no global stage (the paper's protocol) for the current method,
        K, seed, pruning, ridge and BN (cached)."""
        p = self.params
        key = (p["method"], *self._settings().values())
        if self._reference is None or self._reference[0] != key:
            self._reference = (key, self._run(p["method"], **self._settings()))
        return self._reference[1]

    def _stage(self) -> dict:
        p = self.params
        if p["global_stage"] == "none":
            return {}
        return {"global_stage": p["global_stage"], "global_steps": p["global_steps"]}

    def _compute_and_draw(self):
        p = self.params
        reference = self.reference()
        views = f"{p['views']} views ({p['augment']})" if p["views"] > 1 else "1 view"
        label = views + (f" + {p['global_stage']}" if self._stage() else "")
        # the names in a batch of their own: a batch that renames traces 2 and 3 while it redraws 0 and 1
        # sends 0 and 1 an undefined name, which plotly.js draws as "trace 0", "trace 1"
        with self.figure.batch_update():
            self.figure.data[2].name, self.figure.data[3].name = f"{label}, held-out", f"{label}, K-shot images"
        with self.figure.batch_update():
            self._set(0, reference.held_out)
            self._set(1, reference.kshot)
            self.figure.data[2].x, self.figure.data[2].y = [], []
            self.figure.data[3].x, self.figure.data[3].y = [], []
        fit_images = f"the {p['views']}·K-shot fit images" if p["views"] > 1 else "the K-shot images"
        trial = self._run(p["method"], live_trace=3, live_on=fit_images, views=p["views"], augment=p["augment"],
                          **self._stage(), **self._settings())
        if self._stage():
            self.status.value = f"global stage {p['global_stage']} done; measuring…"
        with self.figure.batch_update():
            self._set(2, trial.held_out)
            self._set(3, trial.kshot)
        self.trial = trial
        stage = ""
        if self._stage():
            steps = p["global_steps"]
            stage = (f", then global stage {p['global_stage']} for {steps} Adam steps"
                     + (f" (default {global_stage_.DEFAULT_STEPS}; fewer here so that a change takes seconds)"
                        if steps < global_stage_.DEFAULT_STEPS else ""))
        return (f"{trial.label}, K={p['k']}, {views}{stage}: {self._accuracy_text(trial)}; 1 view "
                f"{100 * reference.accuracy:.1f} %; gap held-out − K-shot summed over layers "
                f"{reference.gap():.3f} (1 view) → {trial.gap():.3f}")
