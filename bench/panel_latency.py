#!/usr/bin/env python
"""How long a slider change takes in each tutorial panel (xdnb.widgets), on the digits default.

    .venv/bin/python bench/panel_latency.py [--repeats 5]

A slider calls ``panel.update(name=value)``: compress the teacher again, measure the held-out
per-layer errors and accuracy, redraw the figure. For each panel and control this alternates
between two values ``repeats`` times and prints the median wall time and the median CPU time of
one update (CPU time is the load-independent number on a shared machine; one torch thread).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    os.environ.setdefault("XDNB_QUIET", "1")
    import xdnb
    from xdnb import tutorial, widgets

    xdnb.setup(seed=0, threads=1)
    bench = tutorial.Bench()
    cases = [
        (widgets.ErrorPanel, {}, "k", (1, 2)),
        (widgets.ErrorPanel, {}, "keep", (0.25, 0.5)),
        (widgets.CrossPanel, {}, "mu", (0.6, 0.3)),
        (widgets.SoftPanel, {"grid": tutorial.soft_grid(bench, [0.0, 1.0], [0.0, 1.0])}, "alpha", (0.5, 0.25)),
        (widgets.PruningPanel, {}, "removed", (0.75, 0.5)),
        (widgets.PruningPanel, {"kind": "unstructured"}, "removed", (0.75, 0.5)),
    ]
    print(f"{'panel':<14}{'control':<10}{'setting':<14}{'median wall s':>14}{'median CPU s':>14}")
    for cls, kwargs, name, values in cases:
        panel = cls(bench, **kwargs)
        walls, cpus = [], []
        for i in range(args.repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            panel.update(**{name: values[(i + 1) % 2]})
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        setting = kwargs.get("kind", "")
        print(f"{cls.__name__:<14}{name:<10}{setting:<14}{statistics.median(walls):>14.2f}{statistics.median(cpus):>14.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
