#!/usr/bin/env python
"""Peak memory of the layer-wise fit as views grow, held at once vs streamed. Not a test.

    PYTHONPATH=. .venv/bin/python bench/capture_memory.py                 # CIFAR-10 VGG-16, VGG-C, K = 1
    PYTHONPATH=. .venv/bin/python bench/capture_memory.py --views 16 64 --budgets 0 128

Each setting runs in a fresh Python process (so its peak resident memory, ``ru_maxrss``, is its own):
the shared VGG-16 teacher (``../shared/data``), the CIFAR-10 JPEG export, K = 1 (seed 0), ``regression``
at VGG-C on ``--views`` views (``flip,crop``), one torch thread, with
:data:`xdnb.distill.CAPTURE_BUDGET` at its default (budget ``0`` below) or at ``--budgets`` MiB
(which streams the captured activations in chunks that fit). Prints peak RSS, the fit's wall time,
the chunk (``-``: not streamed) and top-1 on the first 2000 test images, so the held and the
streamed fits can be compared side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEACHER = HERE.parent.parent / "shared" / "data" / "vgg16_cifar10_teacher.pt"


def one(root: str, teacher: str, views: int, budget_mib: int) -> dict:
    """One setting, in this process (called in a child by :func:`main`)."""
    import resource

    import torch

    from xdnb import data, distill, metrics, models

    torch.set_num_threads(1)
    if budget_mib:
        distill.CAPTURE_BUDGET = budget_mib << 20
    net = models.teacher("vgg16", checkpoint=teacher)
    train = data.load(f"cifar10-folder:{root}", "train")
    images, _ = data.stack(train, data.few_shot(train, 1, seed=0))
    test_images, test_labels = data.stack(data.load(f"cifar10-folder:{root}", "test"), range(2000))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = distill.compress(net, images, "regression", pruning="VGG-C", views=views, augment="flip,crop", seed=0,
                           show_progress=False)
    return {"views": views, "budget_mib": budget_mib, "chunk": out.config.get("capture_chunk"),
            "seconds": out.seconds, "peak_mib_before": before / 1024,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "top1": 100 * metrics.accuracy(out.student, test_images, test_labels)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default="~/.cache/xdnb/cifar10-jpeg")
    parser.add_argument("--teacher", default=str(TEACHER))
    parser.add_argument("--views", type=int, nargs="+", default=[16, 64, 128])
    parser.add_argument("--budgets", type=int, nargs="+", default=[0, 128], help="MiB; 0 = the default budget")
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    root = str(Path(args.data_root).expanduser())
    if args.child:
        print(json.dumps(one(root, args.teacher, *args.child)))
        return
    print("| views | images | budget | chunk | peak RSS (MiB) | before the fit (MiB) | fit (s) | top-1 (%, 2000 test images) |")
    print("|---|---|---|---|---|---|---|---|")
    for views in args.views:
        for budget in args.budgets:
            env = dict(os.environ, XDNB_QUIET="1", OMP_NUM_THREADS="1")
            done = subprocess.run([sys.executable, __file__, "--data-root", root, "--teacher", args.teacher,
                                   "--child", str(views), str(budget)], capture_output=True, text=True, env=env)
            if done.returncode:
                print(f"| {views} | | {budget} | failed: {done.stderr.strip().splitlines()[-1]} |", flush=True)
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"| {views} | {10 * views} | {budget or 'default'} {'MiB' if budget else ''} | {r['chunk'] or '-'} | "
                  f"{r['peak_mib']:.0f} | {r['peak_mib_before']:.0f} | {r['seconds']:.0f} | {r['top1']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
