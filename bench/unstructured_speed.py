#!/usr/bin/env python
"""Unstructured compression time, this checkout against an earlier git revision. Not a test.

    .venv/bin/python bench/unstructured_speed.py --rev 8a63b69 [--repeats 3] [--cifar-teacher PATH]

Times ``distill.compress(teacher, images, "regression", pruning="sparse:0.9")`` (4 projection
rounds, one masked conjugate-gradient solve per round and layer) on one torch thread, each run in
a fresh subprocess, the two code versions interleaved (A B A B ...) so that a noisy machine slows
both alike; prints the median wall time of each and their ratio, and whether the two fitted
students agree. The earlier revision is checked out with ``git worktree`` in a temporary folder.

Workloads: torchvision's ResNet-18 (random weights, non-trivial BN statistics, six random
32×32 images: the shape of ``tests/test_any_cnn.py``) and, with ``--cifar-teacher``, the shared
VGG-16 CIFAR-10 teacher on ten random 32×32 images (K = 1's image count).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Run in a subprocess with the code version under test first on ``sys.path``; prints one JSON line.
WORKLOAD = r"""
import json, sys, time, torch, torchvision
from torch import nn
torch.set_num_threads(1)
from xdnb import distill, models
name, teacher_path = sys.argv[1], sys.argv[2]
if name == "resnet18":
    torch.manual_seed(0)
    model, n = torchvision.models.resnet18(num_classes=10), 6
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
else:
    model, n = models.teacher("vgg16", checkpoint=teacher_path), 10
model.eval()
images = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(2))
started = time.perf_counter()
result = distill.compress(model, images, "regression", pruning="sparse:0.9", show_progress=False)
seconds = time.perf_counter() - started
with torch.no_grad():
    logits = result.student(torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3)))
print(json.dumps({"seconds": seconds, "objective_after": [r["objective_after"] for r in result.history],
                  "logits": logits.flatten().tolist()}))
"""


def run_once(code_root: Path, workload: str, teacher: str) -> dict:
    env_path = f"import sys; sys.path.insert(0, {str(code_root)!r})\n"
    out = subprocess.run([sys.executable, "-c", env_path + WORKLOAD, workload, teacher], check=True,
                         capture_output=True, text=True, env={"XDNB_QUIET": "1", "PATH": "/usr/bin:/bin",
                                                               "HOME": str(Path.home())})
    return json.loads(out.stdout.strip().splitlines()[-1])


def agreement(a: dict, b: dict) -> str:
    """How far apart the two versions' students are: relative gap of the per-layer objectives and of
    the logits on four random images (float rounding flips near-tied weights, so not exactly 0)."""
    gaps = [abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a["objective_after"], b["objective_after"])]
    scale = max(abs(v) for v in a["logits"]) or 1.0
    logits = max(abs(x - y) for x, y in zip(a["logits"], b["logits"])) / scale
    return f"per-layer objective within {100 * max(gaps):.2f} %, logits within {100 * logits:.2f} % of their scale"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", required=True, help="the earlier git revision (the baseline)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cifar-teacher", default="", help="the VGG-16 CIFAR-10 teacher (optional workload)")
    args = parser.parse_args()
    workloads = ["resnet18"] + (["vgg16-cifar10"] if args.cifar_teacher else [])
    with tempfile.TemporaryDirectory() as folder:
        baseline = Path(folder) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(baseline), args.rev],
                       check=True, capture_output=True)
        try:
            print(f"| workload | {args.rev} (s) | this checkout (s) | speed-up | students |")
            print("|---|---|---|---|---|")
            for workload in workloads:
                times: dict = {"old": [], "new": []}
                last = {}
                for _ in range(args.repeats):
                    for version, root in (("old", baseline), ("new", ROOT)):
                        last[version] = run_once(root, workload, args.cifar_teacher)
                        times[version].append(last[version]["seconds"])
                old, new = statistics.median(times["old"]), statistics.median(times["new"])
                print(f"| {workload} | {old:.1f} | {new:.1f} | {old / new:.2f}× | {agreement(last['old'], last['new'])} |",
                      flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)], check=False)


if __name__ == "__main__":
    main()
