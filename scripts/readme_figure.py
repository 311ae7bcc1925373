#!/usr/bin/env python
"""Write the README's picture, docs/per_layer_error.svg, from a fresh run (offline, ~10 s).

    .venv/bin/python scripts/readme_figure.py [--out docs/per_layer_error.svg]

Plain layer-wise regression vs cross distillation (mu = 0.6) on the digits default (K = 1, seed 0,
75 % of the channels removed, bn="reestimate"): the held-out estimation error per layer, relative
to the teacher output's power, with xdnb's default ridge (0.1, solid) and a weak ridge (0.001,
dashed). The SVG is drawn from the figure's data by :func:`xdnb.plots.figure_svg` (no browser or
kaleido needed); the numbers are printed too.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build():
    import plotly.graph_objects as go

    import xdnb
    from xdnb import plots, tutorial

    xdnb.setup(seed=0, threads=1)
    bench = tutorial.Bench()
    fig = go.Figure()
    rows = {}
    for ridge, dash in ((0.1, "solid"), (1e-3, "dash")):
        for method in ("regression", "cross"):
            trial = bench.run(method, k=1, seed=0, ridge=ridge)
            label = f"{trial.label}, ridge {ridge:g}"
            rows[label] = (trial.errors(), trial.accuracy)
            fig.add_trace(go.Scatter(x=trial.names(bench.layer_names), y=[round(v, 4) for v in trial.errors()],
                                     name=f"{label} ({100 * trial.accuracy:.1f} %)", mode="lines+markers",
                                     line=dict(color=plots.method_color(method), dash=dash, width=2)))
    plots.styled(fig, "Digits, K = 1, 75 % of channels removed: held-out estimation error per layer",
                 xaxis=dict(title="layer", type="category"),
                 yaxis=dict(title="held-out L^r / mean((W_T*h_T)²)", rangemode="tozero"))
    return fig, rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "per_layer_error.svg")
    args = parser.parse_args(argv)
    os.environ.setdefault("XDNB_QUIET", "1")
    from xdnb import plots

    fig, rows = build()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(plots.figure_svg(fig, width=760, height=420) + "\n")
    for label, (errors, accuracy) in rows.items():
        print(f"{label:<34} accuracy {100 * accuracy:5.1f} %  held-out L^r per layer {[round(e, 3) for e in errors]}")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.1f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
