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
        legend=dict(bgcolor="rgba(255,255,255,0.8)"),
    )
)


def styled(fig: go.Figure, title: str | None = None, **layout) -> go.Figure:
    """Apply :data:`TEMPLATE` (and a title / extra layout) to ``fig``; returns it."""
    fig.update_layout(template=TEMPLATE, title=title, **layout)
    return fig


# --- per-layer figures (tutorials) ---------------------------------------------------------------


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
