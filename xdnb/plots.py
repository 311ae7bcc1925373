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
