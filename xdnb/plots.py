"""Pure plotly figure builders (no widgets, no I/O) from histories, layer errors and results.

Every builder returns a ``plotly.graph_objects.Figure`` styled with :data:`TEMPLATE`, a light
template that keeps stored notebook outputs small.
"""

from __future__ import annotations

import plotly.graph_objects as go

#: The one light template of every xdnb figure.
TEMPLATE = go.layout.Template(
    layout=go.Layout(
        font=dict(family="Helvetica, Arial, sans-serif", size=13),
        paper_bgcolor="white",
        plot_bgcolor="white",
        xaxis=dict(showgrid=True, gridcolor="#e5e5e5", zeroline=False, linecolor="#444", ticks="outside"),
        yaxis=dict(showgrid=True, gridcolor="#e5e5e5", zeroline=False, linecolor="#444", ticks="outside"),
        colorway=["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"],
        margin=dict(l=60, r=20, t=50, b=50),
        # the title at the very top, so that a legend or subplot titles above the plot do not meet it
        title=dict(y=0.985, yref="container", yanchor="top"),
        legend=dict(bgcolor="rgba(255,255,255,0.8)"),
    )
)


def styled(fig: go.Figure, title: str | None = None, **layout) -> go.Figure:
    """Apply :data:`TEMPLATE` (and a title / extra layout) to ``fig``; returns it."""
    fig.update_layout(template=TEMPLATE, title=title, **layout)
    return fig


# --- per-layer figures (tutorials) ---------------------------------------------------------------
#
# Builders for the tutorial notebooks and panels. Their inputs are plain per-layer records (dicts
# with ``layer``, ``index`` and the error keys of :func:`xdnb.metrics.layer_record`), as returned by
# the engine's history / callback and by :func:`xdnb.metrics.layer_errors`. Errors are drawn
# relative to each layer's teacher output power ``mean((WT*hT)²)`` (see :func:`layer_value`).

#: One colour per method, shared by every tutorial figure (train and held-out lines of a method match).
METHOD_COLORS = {
    "regression": "#1f77b4", "correction": "#2ca02c", "imitation": "#ff7f0e", "cross": "#d62728",
    "soft": "#9467bd", "l1-norm": "#7f7f7f", "bp": "#8c564b", "fitnet": "#e377c2", "fskd": "#17becf",
    "thinet": "#bcbd22", "cp": "#393b79",
}
_FALLBACK_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
#: Axis labels of the per-layer keys.
LAYER_KEY_TITLES = {
    "relative_error": "L^r (estimation error)", "estimation_error": "L^r (estimation error)",
    "correction": "L^c (correction loss)", "imitation": "L^i (imitation loss)",
    "eps_S": "eps_S (student-side inconsistency)", "eps_T": "eps_T (teacher-side inconsistency)",
    "bound": "bound on L^r",
}


def method_color(label: str, position: int = 0) -> str:
    """The colour of a method label (``"cross(mu=0.6)"`` -> cross's colour); unknown labels cycle
    through the template's colours by ``position``."""
    base = str(label).split("(")[0].split(" ")[0].strip()
    return METHOD_COLORS.get(base, _FALLBACK_COLORS[position % len(_FALLBACK_COLORS)])


def layer_value(record: dict, key: str, relative: bool = True) -> float:
    """``record[key]``, divided by the layer's teacher output power when ``relative`` (the
    record's ``output_power``, else ``estimation_error / relative_error``); NaN if unknown."""
    if key == "relative_error":
        return float(record[key]) if relative else float(record["estimation_error"])
    value = float(record[key])
    if not relative:
        return value
    power = record.get("output_power")
    if power is None:
        rel = record.get("relative_error") or 0.0
        power = record["estimation_error"] / rel if rel else float("nan")
    return value / power if power == power and power > 0 else float("nan")


def layer_labels(records: list[dict], names: dict | None = None) -> list[str]:
    """x-axis labels: ``names[layer]`` when given (e.g. ``{"feature.3": "conv2"}``), else the layer path."""
    names = names or {}
    return [names.get(r["layer"], r["layer"]) for r in records]


def _y_title(key: str, relative: bool) -> str:
    title = LAYER_KEY_TITLES.get(key, key)
    return f"{title} / mean((W_T*h_T)²)" if relative else f"{title} (MSE)"


def layer_error_figure(held_out: dict[str, list[dict]], train: dict[str, list[dict]] | None = None, *,
                       key: str = "relative_error", relative: bool = True, names: dict | None = None,
                       log_y: bool = False, title: str | None = "Per-layer estimation error",
                       train_label: str = "train") -> go.Figure:
    """Per-layer ``key`` (default: the estimation error L^r), one solid line per method on the
    held-out images and, if ``train`` is given, a dotted line of the same colour on the K-shot
    images the student was fitted on. ``held_out`` / ``train``: label -> per-layer records;
    ``train_label``: how the legend names the dotted lines (``"{label}, {train_label}"``)."""
    fig = go.Figure()
    labels = list(held_out) + [k for k in (train or {}) if k not in held_out]
    for position, label in enumerate(labels):
        color = method_color(label, position)
        for split, curves, dash in (("held-out", held_out, "solid"), (train_label, train or {}, "dot")):
            if label not in curves:
                continue
            records = curves[label]
            fig.add_trace(go.Scatter(
                x=layer_labels(records, names), y=[layer_value(r, key, relative) for r in records],
                name=f"{label}, {split}" if train else label, mode="lines+markers", legendgroup=label,
                line=dict(color=color, dash=dash, width=2), marker=dict(size=7, symbol="circle" if dash == "solid" else "circle-open"),
            ))
    return styled(fig, title, xaxis=dict(title="layer (front to back)", type="category"),
                  yaxis=dict(title=_y_title(key, relative), type="log" if log_y else "linear", rangemode="tozero" if not log_y else None))


def inconsistency_figure(curves: dict[str, list[dict]], *, keys: tuple[str, ...] = ("relative_error", "eps_S", "eps_T"),
                         relative: bool = True, names: dict | None = None, log_y: bool = False,
                         title: str | None = "Estimation error and inconsistencies per layer (held-out)") -> go.Figure:
    """One panel per key (default: L^r, eps_S, eps_T), one line per method (label -> per-layer records)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=[LAYER_KEY_TITLES.get(k, k).split(" (")[0] for k in keys],
                        horizontal_spacing=0.08)
    for position, (label, records) in enumerate(curves.items()):
        color = method_color(label, position)
        for col, key in enumerate(keys, start=1):
            fig.add_trace(go.Scatter(
                x=layer_labels(records, names), y=[layer_value(r, key, relative) for r in records], name=label,
                legendgroup=label, showlegend=col == 1, mode="lines+markers", line=dict(color=color, width=2),
                marker=dict(size=6),
            ), row=1, col=col)
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="log" if log_y else "linear")
    fig.update_yaxes(title_text="relative to mean((W_T*h_T)²)" if relative else "MSE", row=1, col=1)
    return styled(fig, title, margin=dict(t=90))  # legend at the right: above, it ran into the title


def shots_figure(accuracies: dict[str, dict[int, list[float]]], *, teacher: float | None = None,
                 title: str | None = "Held-out accuracy vs K") -> go.Figure:
    """Accuracy (%) against K (images per class, log axis): ``accuracies[label][k]`` = the accuracies
    (fractions) of the repeats (seeds); a line per label with mean ± sample std; ``teacher``
    (a fraction) as a dashed line. (:func:`accuracy_vs_k` draws the same from stored Results.)"""
    import statistics

    fig = go.Figure()
    ks = sorted({k for per_k in accuracies.values() for k in per_k})
    for position, (label, per_k) in enumerate(accuracies.items()):
        xs = sorted(per_k)
        means = [100 * statistics.fmean(per_k[k]) for k in xs]
        stds = [100 * statistics.stdev(per_k[k]) if len(per_k[k]) > 1 else 0.0 for k in xs]
        fig.add_trace(go.Scatter(x=xs, y=[round(m, 2) for m in means], name=label, mode="lines+markers",
                                 error_y=dict(type="data", array=[round(s, 2) for s in stds], visible=True, thickness=1),
                                 line=dict(color=method_color(label, position), width=2)))
    if teacher is not None:
        fig.add_hline(y=round(100 * teacher, 2), line_dash="dash", line_color="#444",
                      annotation_text=f"teacher {100 * teacher:.1f} %", annotation_position="bottom right")
    return styled(fig, title, xaxis=dict(title="K (images per class)", type="log", tickvals=ks, ticktext=[str(k) for k in ks]),
                  yaxis=dict(title="top-1 accuracy (%)"))


def sweep_figure(x: list[float], series: dict[str, list[float]], *, x_title: str, y_title: str,
                 title: str | None = None, secondary: dict[str, list[float]] | None = None,
                 secondary_title: str | None = None) -> go.Figure:
    """Lines of ``series[label]`` against ``x`` (e.g. accuracy against mu); ``secondary`` series
    are drawn dashed on a right-hand axis titled ``secondary_title``."""
    fig = go.Figure()
    for position, (label, ys) in enumerate(series.items()):
        fig.add_trace(go.Scatter(x=list(x), y=list(ys), name=label, mode="lines+markers",
                                 line=dict(color=_FALLBACK_COLORS[position % len(_FALLBACK_COLORS)], width=2)))
    layout = {}
    for position, (label, ys) in enumerate((secondary or {}).items(), start=len(series)):
        fig.add_trace(go.Scatter(x=list(x), y=list(ys), name=label, mode="lines+markers", yaxis="y2",
                                 line=dict(color=_FALLBACK_COLORS[position % len(_FALLBACK_COLORS)], width=2, dash="dash")))
    if secondary:  # room at the right for the second axis's tick labels and title
        layout["yaxis2"] = dict(title=secondary_title, overlaying="y", side="right", showgrid=False, automargin=True)
    # the legend above the plot, left; the title at the very top (they do not meet)
    return styled(fig, title, xaxis=dict(title=x_title), yaxis=dict(title=y_title),
                  legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0), margin=dict(t=90, r=80 if secondary else 20),
                  **layout)


#: The special corners of the soft connection (paper's convention), as (alpha, beta).
SOFT_CORNERS = {"regression": (1.0, 1.0), "correction": (1.0, 0.0), "imitation": (0.0, 1.0)}


def alpha_beta_figure(alphas: list[float], betas: list[float], values: list[list[float]], *,
                      value_title: str = "accuracy (%)", marker: tuple[float, float] | None = None,
                      reverse_scale: bool = False, text_format: str = ".1f",
                      title: str | None = "Soft cross connection over (alpha, beta)") -> go.Figure:
    """Heat map of ``values[i][j]`` at ``(alphas[i], betas[j])``: beta on x, alpha on y, each cell
    showing its value and the corners regression (1, 1), correction (1, 0), imitation (0, 1) also
    their names (the heat map's ``text``), and ``marker`` = the current (alpha, beta) as a ring
    (the second trace). ``reverse_scale``: darker = larger (use for errors)."""
    if len(values) != len(alphas) or any(len(row) != len(betas) for row in values):
        raise ValueError(f"values must be {len(alphas)} rows (alphas) of {len(betas)} columns (betas)")
    # each cell's text is its value; a corner's cell adds the corner's name on a second line, so the
    # two never overlap and take the cell's contrasting text colour
    names = {(a, b): name for name, (a, b) in SOFT_CORNERS.items()}
    text = [[f"{v:{text_format}}" + (f"<br>{names[(a, b)]}" if (a, b) in names else "") for b, v in zip(betas, row)]
            for a, row in zip(alphas, values)]
    fig = go.Figure(go.Heatmap(
        z=[[round(v, 4) for v in row] for row in values], x=list(betas), y=list(alphas), colorscale="Viridis",
        reversescale=reverse_scale, colorbar=dict(title=dict(text=value_title)), text=text, texttemplate="%{text}",
        hovertemplate="alpha %{y}, beta %{x}: %{z}<extra></extra>", name=value_title,
    ))
    fig.add_trace(go.Scatter(
        x=[marker[1]] if marker else [], y=[marker[0]] if marker else [], mode="markers", name="current",
        marker=dict(symbol="circle-open", size=22, color="white", line=dict(width=3)), showlegend=False,
    ))
    return styled(fig, title, xaxis=dict(title="beta (student side: ĥS = (1−beta)·hT + beta·hS)", tickvals=list(betas)),
                  yaxis=dict(title="alpha (teacher side: ĥT = alpha·hT + (1−alpha)·hS)", tickvals=list(alphas)))


def kept_channels_figure(curves: dict[str, list[dict]], *, names: dict | None = None, weights: bool = False,
                         title: str | None = None) -> go.Figure:
    """Per layer: the teacher's input channels (grey outline) and the kept input channels of each
    method (bars). ``weights=True`` draws the kept fraction of weights (1 − sparsity, unstructured)."""
    fig = go.Figure()
    first = next(iter(curves.values()), [])
    if not weights:
        fig.add_trace(go.Bar(x=layer_labels(first, names), y=[r["in_channels"] for r in first], name="teacher",
                             marker=dict(color="rgba(0,0,0,0)", line=dict(color="#444", width=1.5))))
    for position, (label, records) in enumerate(curves.items()):
        y = [round(1 - r["sparsity"], 4) for r in records] if weights else [r["in_channels_kept"] for r in records]
        fig.add_trace(go.Bar(x=layer_labels(records, names), y=y, name=label, marker_color=method_color(label, position)))
    default = "Kept weights per layer" if weights else "Kept input channels per layer"
    return styled(fig, default if title is None else title, barmode="group" if weights else "overlay",
                  xaxis=dict(title="layer (front to back)", type="category"),
                  yaxis=dict(title="kept fraction of weights" if weights else "input channels"))


def few_shot_figure(images, labels, *, columns: int = 10, title: str | None = "The K-shot set") -> go.Figure:
    """The few-shot images (N, 1, H, W) as one grey mosaic, ``columns`` per row, labelled."""
    import numpy as np

    x = np.asarray(images, dtype=float)[:, 0]
    n, h, w = x.shape
    rows = (n + columns - 1) // columns
    mosaic = np.full((rows * (h + 1) - 1, columns * (w + 1) - 1), np.nan)
    for i in range(n):
        r, c = divmod(i, columns)
        mosaic[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = x[i]
    fig = go.Figure(go.Heatmap(z=np.round(mosaic[::-1], 2).tolist(), colorscale="Greys", showscale=False, hoverinfo="skip"))
    for i, label in enumerate(list(labels)):
        r, c = divmod(i, columns)
        fig.add_annotation(x=c * (w + 1) + (w - 1) / 2, y=mosaic.shape[0] - r * (h + 1) + 0.2, text=str(int(label)),
                           showarrow=False, yanchor="bottom", font=dict(size=11))
    return styled(fig, title, xaxis=dict(visible=False), yaxis=dict(visible=False, scaleanchor="x"),
                  height=90 + 70 * rows, margin=dict(l=10, r=10, t=50, b=10))


def figure_svg(fig: go.Figure, width: int = 720, height: int = 400) -> str:
    """A static SVG (a string) of a figure's line traces, drawn from the figure's data.

    Made for pictures that must be exported without a browser or kaleido (the README's): it
    draws scatter traces on one pair of axes (category or numeric x, linear or log y), their
    colours, dash styles and markers, the legend, the axis titles and the title. Other trace
    types are refused with a ValueError.
    """
    import math
    from html import escape

    traces = [t for t in fig.data if getattr(t, "visible", True) is not False]
    if not traces or any(t.type != "scatter" for t in traces):
        raise ValueError("figure_svg draws scatter traces only; got " + ", ".join(sorted({t.type for t in fig.data})))
    layout = fig.layout
    log_y = layout.yaxis.type == "log"
    categories: list = []
    for t in traces:
        for value in t.x:
            if isinstance(value, str) and value not in categories:
                categories.append(value)
    points = []
    for t in traces:
        ys = [float("nan") if v is None else float(v) for v in t.y]
        xs = [categories.index(v) if categories else float(v) for v in t.x]
        points.append([(x, y) for x, y in zip(xs, ys) if y == y and (not log_y or y > 0)])
    all_x = [x for pts in points for x, _ in pts]
    all_y = [y for pts in points for _, y in pts]
    if not all_y:
        raise ValueError("figure_svg: no finite y values to draw")
    tv = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    y_lo, y_hi = min(map(tv, all_y)), max(map(tv, all_y))
    if not log_y and (layout.yaxis.rangemode == "tozero" or y_lo > 0):
        y_lo = min(0.0, y_lo)
    if y_hi == y_lo:
        y_hi = y_lo + 1.0
    if log_y:
        ticks = list(range(math.floor(y_lo), math.ceil(y_hi) + 1))
        y_lo, y_hi = ticks[0], ticks[-1]
        tick_labels = [f"{10.0 ** p:g}" for p in ticks]
    else:
        raw = (y_hi - y_lo) / 5
        step = 10 ** math.floor(math.log10(raw))
        step *= next(m for m in (1, 2, 2.5, 5, 10) if m * step >= raw)
        y_lo, y_hi = math.floor(y_lo / step) * step, math.ceil(y_hi / step) * step
        ticks = [y_lo + i * step for i in range(int(round((y_hi - y_lo) / step)) + 1)]
        tick_labels = [f"{t:.10g}" for t in ticks]
    x_lo, x_hi = (0, max(len(categories) - 1, 1)) if categories else (min(all_x), max(all_x) if max(all_x) > min(all_x) else min(all_x) + 1)
    slots, x0, row = [], 80, 0  # legend entries: (x, row), wrapped to the width
    for t in traces:
        if t.name and t.showlegend is not False:
            entry = 40 + 7 * len(t.name)
            if x0 > 80 and x0 + entry > width - 20:
                x0, row = 80, row + 1
            slots.append((x0, row))
            x0 += entry
    left, right, top, bottom = 80, 20, 64 + 16 * (row + 1 if slots else 0), 60
    pad = 0.05 * (x_hi - x_lo)

    def px(x):
        return left + (x - x_lo + pad) / (x_hi - x_lo + 2 * pad) * (width - left - right)

    def py(y):
        return height - bottom - (tv(y) - y_lo) / (y_hi - y_lo) * (height - top - bottom)

    def ty(t):  # a tick position (already on the transformed scale)
        return height - bottom - (t - y_lo) / (y_hi - y_lo) * (height - top - bottom)

    dashes = {"dot": "2,4", "dash": "7,4", "dashdot": "7,3,2,3", "longdash": "12,4"}
    font = 'font-family="Helvetica, Arial, sans-serif"'
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
           f'<rect width="{width}" height="{height}" fill="white"/>']
    for t, label in zip(ticks, tick_labels):
        y = ty(t)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" {font}>{escape(label)}</text>')
    x_ticks = list(range(len(categories))) if categories else sorted(set(all_x))
    for i, x in enumerate(x_ticks):
        text = categories[i] if categories else f"{x:g}"
        out.append(f'<text x="{px(x):.1f}" y="{height - bottom + 16}" text-anchor="middle" font-size="11" {font}>{escape(str(text))}</text>')
    out.append(f'<line x1="{left}" x2="{width - right}" y1="{height - bottom}" y2="{height - bottom}" stroke="#444"/>')
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{height - bottom}" stroke="#444"/>')
    colorway = list(layout.template.layout.colorway or _FALLBACK_COLORS) if layout.template else list(_FALLBACK_COLORS)
    legend = []
    for i, (t, pts) in enumerate(zip(traces, points)):
        color = (t.line.color if t.line and t.line.color else None) or colorway[i % len(colorway)]
        dash = dashes.get(t.line.dash if t.line else None, "")
        mode = t.mode or "lines+markers"
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        if "lines" in mode and len(pts) > 1:
            out.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"'
                       + (f' stroke-dasharray="{dash}"' if dash else "") + "/>")
        if "markers" in mode:
            hollow = t.marker and t.marker.symbol and str(t.marker.symbol).endswith("open")
            for x, y in pts:
                fill = "white" if hollow else color
                out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{fill}" stroke="{color}" stroke-width="1.5"/>')
        if t.name and t.showlegend is not False:
            legend.append((t.name, color, dash))
    for (name, color, dash), (x0, row) in zip(legend, slots):
        y0 = 46 + 16 * row
        out.append(f'<line x1="{x0}" x2="{x0 + 24}" y1="{y0}" y2="{y0}" stroke="{color}" stroke-width="2"'
                   + (f' stroke-dasharray="{dash}"' if dash else "") + "/>")
        out.append(f'<text x="{x0 + 30}" y="{y0 + 4}" font-size="12" {font}>{escape(name)}</text>')
    if layout.title and layout.title.text:
        out.append(f'<text x="{left}" y="24" font-size="15" {font}>{escape(layout.title.text)}</text>')
    if layout.xaxis.title and layout.xaxis.title.text:
        out.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 16}" text-anchor="middle" font-size="12" {font}>'
                   f'{escape(layout.xaxis.title.text)}</text>')
    if layout.yaxis.title and layout.yaxis.title.text:
        cy = (top + height - bottom) / 2
        out.append(f'<text x="18" y="{cy:.0f}" transform="rotate(-90 18 {cy:.0f})" text-anchor="middle" font-size="12" {font}>'
                   f'{escape(layout.yaxis.title.text)}</text>')
    out.append("</svg>")
    return "\n".join(out)


# --- results figures (reproduction tables) -------------------------------------------------------


def accuracy_curve(results, x: str, line: str = "method", where: dict | None = None, title: str | None = None,
                   x_title: str | None = None, log_x: bool = False) -> go.Figure:
    """Mean top-1 accuracy (%) against the field ``x``, one line per value of ``line``, error bars
    = sample std over the repeats (seeds); the teacher as a dashed line. ``results``: Results or
    their dicts; fields as in :mod:`xdnb.tables` (``k``, ``sparsity``, ``mu``, ``method``, ...)."""
    from .tables import header_label, pivot

    table = pivot(results, rows=line, columns=x, where=where)
    fig = go.Figure()
    for row in table.rows:
        points = [(c, table.stats(row, c)) for c in table.columns if table.stats(row, c)]
        fig.add_trace(go.Scatter(
            x=[c for c, _ in points], y=[round(s[0], 3) for _, s in points],
            error_y=dict(type="data", array=[round(s[1] or 0.0, 3) for _, s in points], visible=True, thickness=1),
            mode="lines+markers", name=header_label(line, row) if line != "method" else str(row),
        ))
    if table.teacher is not None:
        fig.add_hline(y=round(table.teacher, 3), line_dash="dash", line_color="#444",
                      annotation_text=f"teacher {table.teacher:.2f} %", annotation_position="bottom right")
    xaxis = dict(title=x_title or x)
    if log_x:
        xaxis.update(type="log", tickvals=table.columns, ticktext=[f"{c:g}" for c in table.columns])
    return styled(fig, title, xaxis=xaxis, yaxis=dict(title="top-1 accuracy (%)"))


def accuracy_vs_k(results, where: dict | None = None, title: str | None = "Accuracy vs K") -> go.Figure:
    """Accuracy against K (images per class, log axis), one line per method."""
    return accuracy_curve(results, "k", where=where, title=title, x_title="K (images per class)", log_x=True)


def accuracy_vs_sparsity(results, where: dict | None = None, title: str | None = "Accuracy vs sparsity") -> go.Figure:
    """Accuracy against the unstructured sparsity r (% of weights removed), one line per method."""
    return accuracy_curve(results, "sparsity", where=where, title=title, x_title="r (% of weights removed)")


def accuracy_vs_mu(results, where: dict | None = None, title: str | None = "Cross distillation: accuracy vs mu") -> go.Figure:
    """Accuracy against mu (0 = imitation, 1 = correction), one line per K."""
    return accuracy_curve(results, "mu", line="k", where=where, title=title,
                          x_title="mu (0 = imitation, 1 = correction)")


def alpha_beta_heatmap(results, where: dict | None = None, title: str | None = "Soft cross distillation: accuracy over (alpha, beta)") -> go.Figure:
    """Mean accuracy (%) on the (alpha, beta) grid; (1, 1) = regression, (1, 0) = correction,
    (0, 1) = imitation (the paper's convention)."""
    from .tables import pivot

    table = pivot(results, rows="alpha", columns="beta", where=where)
    z = [[None if table.stats(a, b) is None else round(table.stats(a, b)[0], 2) for b in table.columns] for a in table.rows]
    fig = go.Figure(go.Heatmap(z=z, x=[f"{b:g}" for b in table.columns], y=[f"{a:g}" for a in table.rows],
                               colorscale="Viridis", colorbar=dict(title="%"), texttemplate="%{z:.1f}"))
    return styled(fig, title, xaxis=dict(title="beta (student side)", type="category"),
                  yaxis=dict(title="alpha (teacher side)", type="category"))
