#!/usr/bin/env python
"""Unstructured compression time, this checkout against an earlier git revision. Not a test.

    .venv/bin/python bench/unstructured_speed.py --rev 8a63b69 [--repeats 3]
        [--cifar-teacher PATH --cifar-root ROOT [--methods regression cross]]

Times ``distill.compress(teacher, images, "regression", pruning="sparse:0.9")`` (4 projection
rounds, one masked conjugate-gradient solve per round and layer) on one torch thread, each run in
a fresh subprocess, the two code versions interleaved (A B A B ...) so that a noisy machine slows
both alike; prints the median wall time of each and their ratio. The earlier revision is checked
out with ``git worktree`` in a temporary folder.

Workloads: torchvision's ResNet-18 (random weights, non-trivial BN statistics, six random
32×32 images: the shape of ``tests/test_any_cnn.py``; the two students' per-layer objectives are
compared) and, with ``--cifar-teacher`` and ``--cifar-root`` (the JPEG export), the shared VGG-16
CIFAR-10 teacher on real K = 1 images, repeat ``i`` with seed ``i``, each student's top-1 on all
10 000 test images reported (mean over the repeats): float rounding flips near-tied weights, so
two code versions give slightly different students, and this says whether that matters.
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
from xdnb import data, distill, metrics, models
name, method, teacher_path, root, seed = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
if name == "resnet18":
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
else:
    model = models.teacher("vgg16", checkpoint=teacher_path)
    train = data.load(f"cifar10-folder:{root}", "train")
    images, _ = data.stack(train, data.few_shot(train, 1, seed))
model.eval()
started = time.perf_counter()
result = distill.compress(model, images, method, pruning="sparse:0.9", show_progress=False)
out = {"seconds": time.perf_counter() - started, "objective_after": [r["objective_after"] for r in result.history]}
if name != "resnet18":
    out["accuracy"] = metrics.accuracy(result.student, *data.stack(data.load(f"cifar10-folder:{root}", "test")))
print(json.dumps(out))
"""


def run_once(code_root: Path, workload: str, method: str, args, seed: int) -> dict:
    env_path = f"import sys; sys.path.insert(0, {str(code_root)!r})\n"
    out = subprocess.run([sys.executable, "-c", env_path + WORKLOAD, workload, method, args.cifar_teacher,
                          args.cifar_root, str(seed)], check=True, capture_output=True, text=True,
                         env={"XDNB_QUIET": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    return json.loads(out.stdout.strip().splitlines()[-1])


def objective_gap(a: dict, b: dict) -> float:
    """The largest relative gap (%) between two students' per-layer objectives after the fit."""
    return 100 * max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a["objective_after"], b["objective_after"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", required=True, help="the earlier git revision (the baseline)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cifar-teacher", default="", help="the VGG-16 CIFAR-10 teacher (optional workload)")
    parser.add_argument("--cifar-root", default="", help="the CIFAR-10 JPEG export (with --cifar-teacher)")
    parser.add_argument("--methods", nargs="+", default=["regression"])
    args = parser.parse_args()
    workloads = ["resnet18"] + (["vgg16-cifar10"] if args.cifar_teacher and args.cifar_root else [])
    with tempfile.TemporaryDirectory() as folder:
        baseline = Path(folder) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(baseline), args.rev],
                       check=True, capture_output=True)
        try:
            print(f"| workload | method | {args.rev} (s) | this checkout (s) | speed-up | students |")
            print("|---|---|---|---|---|---|")
            for workload in workloads:
                for method in args.methods:
                    runs: dict = {"old": [], "new": []}
                    for seed in range(args.repeats):
                        for version, root in (("old", baseline), ("new", ROOT)):
                            runs[version].append(run_once(root, workload, method, args, seed))
                    old, new = (statistics.median(r["seconds"] for r in runs[v]) for v in ("old", "new"))
                    if workload == "resnet18":
                        students = f"per-layer objectives within {objective_gap(runs['old'][0], runs['new'][0]):.2f} %"
                    else:
                        accuracy = {v: [100 * r["accuracy"] for r in runs[v]] for v in runs}
                        students = (f"top-1 {statistics.mean(accuracy['old']):.2f} vs {statistics.mean(accuracy['new']):.2f} % "
                                    f"(seeds 0–{args.repeats - 1}: " + ", ".join(
                                        f"{a:.2f}/{b:.2f}" for a, b in zip(accuracy["old"], accuracy["new"])) + ")")
                    print(f"| {workload} | {method} | {old:.1f} | {new:.1f} | {old / new:.2f}× | {students} |", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)], check=False)


if __name__ == "__main__":
    main()
