"""Engine benchmark on CIFAR-10 + the VGG-16 teacher (issue 3). Not a test.

Part 1, solvers side by side: ``lstsq``, ``reference`` and ``proximal`` with the cross and soft
objectives (VGG-A, K = 5, seed 0), plus the shared data README's reference setting (VGG-C, K = 1,
seed 0, train-mode BN capture) for regression and cross. Accuracy on all 10 000 test images,
wall time of the compression. Each finished run is appended to ``bench/results/engine_cifar.jsonl``
and skipped when the script is started again.

Part 2, per-step cost of each objective on one layer (``--steps-only``): milliseconds per
gradient evaluation of the quadratic (teacher parts precomputed, xdnb's path) and of the naive
autograd step through the convolutions (teacher convs recomputed each step, as in the paper's
"four convolutions per step" count), median of repeated timings.

Part 3, the projection rounds of the lstsq solver on CIFAR-10 (``--rounds``): VGG-C, K = 1,
seeds 0 and 1, regression and cross (mu 0.6) with 2 and 4 rounds, one torch thread (the digits
validation in ``bench/engine_digits.py`` preferred 2; this checks the default on real data).

    python bench/engine_cifar.py [--root ~/.cache/xdnb/cifar10-jpeg] [--teacher PATH] [--steps-only | --rounds]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from xdnb import data, experiment, models, objectives
from xdnb.quadratic import LayerProblem
from xdnb.sites import capture_input

HERE = Path(__file__).resolve().parent
DEFAULT_TEACHER = HERE.parent.parent / "shared" / "data" / "vgg16_cifar10_teacher.pt"
SOFT = {"alpha": 0.5, "beta": 0.5}


def solver_runs(spec: str, teacher: str) -> list[experiment.RunConfig]:
    base = dict(data=spec, arch="vgg16", teacher=teacher, seed=0)
    runs = []
    # the shared data README's reference setting first: it checks the reference solver
    for method, params in (("cross", {"mu": 0.6}), ("regression", {})):
        for solver in ("reference", "lstsq"):
            runs.append(experiment.RunConfig(**base, method=method, pruning="VGG-C", k=1, solver=solver, bn="train", **params))
    for solver in ("lstsq", "reference", "proximal"):
        for method, params in (("cross", {"mu": 0.6}), ("soft", SOFT)):
            runs.append(experiment.RunConfig(**base, method=method, pruning="VGG-A", k=5, solver=solver, **params))
    return runs


def append_line(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def run_solvers(spec: str, teacher: str, out: Path) -> None:
    done = set()
    if out.exists():
        done = {experiment.RunConfig.from_dict(json.loads(line)["config"]).key() for line in out.read_text().splitlines() if line.strip()}
    for config in solver_runs(spec, teacher):
        if config.key() in done:
            continue
        result = experiment.run(config, show_progress=False)
        record = result.to_dict()
        record["threads"] = torch.get_num_threads()
        append_line(out, record)
        print(f"{config.solver:9s} {config.method:10s} {config.pruning} K={config.k} bn={config.bn}: "
              f"{100 * result.student_accuracy:.2f} % in {result.seconds:.1f} s", flush=True)
    print_table(out)


def print_table(out: Path) -> None:
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    print("| scheme | K | BN | objective | solver | accuracy | compression time |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        c = r["config"]
        name = {"cross": f"cross mu={c['mu']}", "soft": f"soft a={c['alpha']} b={c['beta']}"}.get(c["method"], c["method"])
        print(f"| {c['pruning']} | {c['k']} | {c['bn']} | {name} | {c['solver']} | {100 * r['student_accuracy']:.2f} % | {r['seconds']:.1f} s |")
    if rows:
        print(f"teacher: {100 * rows[0]['teacher_accuracy']:.2f} %")


def median_ms(fn, repeats: int = 30) -> float:
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def step_costs(spec: str, teacher_path: str, site_name: str = "feature.27") -> list[dict]:
    """Median ms per gradient step of each objective on one layer, xdnb's path vs naive autograd."""
    teacher = models.teacher("vgg16", checkpoint=teacher_path)
    train = data.load(spec, "train")
    rows = []
    for k in (1, 5):
        images, _ = data.stack(train, data.few_shot(train, k, 0))
        hT = capture_input(teacher, site_name, images)
        torch.manual_seed(0)
        hS = hT + 0.1 * torch.randn_like(hT)  # a stand-in for the student's input
        conv = teacher.get_submodule(site_name)
        for objective in (objectives.regression(), objectives.correction(), objectives.imitation(),
                          objectives.cross(0.6), objectives.soft(0.5, 0.5)):
            problem = LayerProblem(objective, conv, hT, hS)
            w = problem.teacher_weight.clone()
            rhs_t = problem.rhs_t(w.dtype)
            ours = median_ms(lambda: problem.grad(w, rhs_t))
            student = torch.nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=1, bias=False)

            def naive():
                student.zero_grad()
                objective(conv, student, hT, hS).backward()

            rows.append({"k": k, "objective": str(objective), "ours_ms": ours, "naive_ms": median_ms(naive)})
    return rows


def solver_layer_times(spec: str, teacher_path: str, site_name: str = "feature.27", ks=(1,),
                       targets=("channels", "weights"), report=None) -> list[dict]:
    """Each solver on the same layer problem (cross, mu 0.6; half the input channels kept or 90 % of
    the weights removed; K in ``ks``, seed 0): wall seconds of one fit and the objective it reaches
    (lower is better; the student's input is a perturbed copy of the teacher's, as in
    :func:`step_costs`)."""
    from xdnb import solvers

    teacher = models.teacher("vgg16", checkpoint=teacher_path)
    train = data.load(spec, "train")
    conv = teacher.get_submodule(site_name)
    rows = []
    for k in ks:
        images, _ = data.stack(train, data.few_shot(train, k, 0))
        hT = capture_input(teacher, site_name, images)
        torch.manual_seed(0)
        hS = hT + 0.1 * torch.randn_like(hT)
        chosen = {"channels": ("channels 50 %", solvers.ChannelTarget(conv.in_channels // 2)),
                  "weights": ("weights 10 %", solvers.WeightTarget(conv.weight.numel() // 10))}
        for label, target in (chosen[t] for t in targets):
            for name in solvers.SOLVERS:
                problem = LayerProblem(objectives.cross(0.6), conv, hT, hS)
                started = time.perf_counter()
                fit = solvers.FIT_FUNCTIONS[name](problem, target)
                seconds = time.perf_counter() - started
                rows.append({"k": k, "target": label, "solver": name, "seconds": seconds, "objective": problem.loss(fit.weight)})
                if report:
                    report(rows[-1])
    return rows


def rounds_check(spec: str, teacher: str) -> None:
    torch.set_num_threads(1)
    print("| seed | objective | rounds | accuracy | compression time |\n|---|---|---|---|---|")
    for seed in (0, 1):
        for method, params in (("cross", {"mu": 0.6}), ("regression", {})):
            for rounds in (2, 4):
                config = experiment.RunConfig(data=spec, arch="vgg16", teacher=teacher, seed=seed, method=method,
                                              pruning="VGG-C", k=1, rounds=rounds, **params)
                result = experiment.run(config, show_progress=False)
                print(f"| {seed} | {method} | {rounds} | {100 * result.student_accuracy:.2f} % | {result.seconds:.1f} s |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="~/.cache/xdnb/cifar10-jpeg")
    parser.add_argument("--teacher", default=str(DEFAULT_TEACHER))
    parser.add_argument("--out", default=str(HERE / "results" / "engine_cifar.jsonl"))
    parser.add_argument("--steps-only", action="store_true")
    parser.add_argument("--rounds", action="store_true", help="part 3: 2 vs 4 projection rounds")
    args = parser.parse_args()
    spec = f"cifar10-folder:{args.root}"
    print(f"torch threads: {torch.get_num_threads()}")
    if args.steps_only:
        print("| K | objective | xdnb step (ms) | naive autograd step (ms) | ratio |\n|---|---|---|---|---|")
        for r in step_costs(spec, args.teacher):
            print(f"| {r['k']} | {r['objective']} | {r['ours_ms']:.2f} | {r['naive_ms']:.2f} | {r['naive_ms'] / r['ours_ms']:.1f}x |")
    elif args.rounds:
        rounds_check(spec, args.teacher)
    else:
        run_solvers(spec, args.teacher, Path(args.out))


if __name__ == "__main__":
    main()
