"""Baselines benchmark on CIFAR-10 + the VGG-16 teacher (issue 4). Not a test.

Every baseline of :mod:`xdnb.baselines` (l1-norm, bp, fitnet, fskd, thinet, cp, with their
defaults) beside the engine's objectives (cross mu=0.6, soft alpha=beta=0.5, regression; the
default ``lstsq`` solver), scheme VGG-A, K = 1 and 5, seed 0, through
:func:`xdnb.experiment.run`: top-1 accuracy on all 10 000 test images and the wall time of the
compression. Each finished run is added to ``bench/results/baselines_cifar.json`` (rewritten
atomically) and skipped when the script is started again; ``--table`` prints the Markdown table
of what is there.

    python bench/baselines_cifar.py [--root ~/.cache/xdnb/cifar10-jpeg] [--teacher PATH]
        [--k 1 5] [--methods l1-norm bp ...] [--scheme VGG-A] [--threads 1] [--no-variants] [--table]

``--digits-defaults`` instead runs the small grid on the digits default (K = 1 and 5, half and a
quarter of the channels kept) that chose the baselines' defaults: accuracy on the digits *train*
images outside the K-shot set (validation; never the test split), written to
``bench/results/baselines_digits_defaults.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

import xdnb
from xdnb import atomic, baselines, data, experiment, metrics, models, pruning

HERE = Path(__file__).resolve().parent
DEFAULT_TEACHER = HERE.parent.parent / "shared" / "data" / "vgg16_cifar10_teacher.pt"
ENGINE = (("cross", {"mu": 0.6}), ("soft", {"alpha": 0.5, "beta": 0.5}), ("regression", {}))
#: Fast ones first, so that a partial run still gives a useful table.
ORDER = ("l1-norm", "fskd", "thinet", "cp", "cross", "soft", "regression", "bp", "fitnet")
#: Variants run after the defaults: ThiNet and CP with the original papers' plain least squares.
VARIANTS = (("thinet", {"ridge": 0.0}), ("cp", {"ridge": 0.0}))


def configs(spec: str, teacher: str, ks, methods, variants=True, scheme="VGG-A") -> list[experiment.RunConfig]:
    params = dict(ENGINE)
    base = dict(data=spec, arch="vgg16", teacher=teacher, pruning=scheme, seed=0)
    runs = [experiment.RunConfig(**base, method=m, k=k, **params.get(m, {})) for k in ks for m in ORDER if m in methods]
    if variants:
        runs += [experiment.RunConfig(**base, method=m, k=k, options=o) for k in ks for m, o in VARIANTS if m in methods]
    return runs


def label(config: experiment.RunConfig) -> str:
    options = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.options.items())
    return f"{experiment.method_label(config)} {options}".strip()


def run_all(args) -> None:
    out = Path(args.out)
    records = json.loads(out.read_text()) if out.exists() else []
    done = {r["key"] for r in records}
    for config in configs(f"cifar10-folder:{args.root}", args.teacher, args.k, args.methods, not args.no_variants,
                          args.scheme):
        if config.key() in done:
            continue
        load_before = os.getloadavg()[0]
        result = experiment.run(config, show_progress=False)
        record = {k: v for k, v in result.to_dict().items() if k != "history"}
        record.update(key=config.key(), label=label(config), load_before=load_before,
                      load_after=os.getloadavg()[0], finished=time.strftime("%Y-%m-%d %H:%M:%S"))
        records.append(record)
        atomic.write_text(out, json.dumps(records, indent=1))
        print(f"K={config.k} {record['label']:22s} {100 * result.student_accuracy:6.2f} %  "
              f"{result.seconds:7.1f} s  (load {load_before:.1f} -> {record['load_after']:.1f})", flush=True)
    print_table(out, args.scheme)


def print_table(out: Path, scheme: str = "VGG-A") -> None:
    records = [r for r in (json.loads(out.read_text()) if out.exists() else []) if r["config"]["pruning"] == scheme]
    if not records:
        print(f"no finished {scheme} runs in {out}")
        return
    by = {(r["config"]["k"], r["label"]): r for r in records}
    ks = sorted({k for k, _ in by})
    labels = sorted({name for _, name in by}, key=lambda name: (ORDER.index(name.split()[0]), name))
    print("| method | " + " | ".join(f"K={k} accuracy | K={k} time" for k in ks) + " |")
    print("|---|" + "---|---|" * len(ks))
    for name in labels:
        cells = []
        for k in ks:
            r = by.get((k, name))
            cells += ["–", "–"] if r is None else [f"{100 * r['student_accuracy']:.2f} %", f"{r['seconds']:.0f} s"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if records:
        print(f"teacher: {100 * records[0]['teacher_accuracy']:.2f} %; threads: {records[0]['versions'].get('threads')}")


def digits_defaults(out: Path) -> None:
    """The grid that chose the defaults (validation = digits train images outside the K-shot set)."""
    teacher = models.teacher("digits", seed=0)
    train = data.digits("train")
    grid = [("bp", {"bn": bn, "lr": lr, "steps": 200}) for bn in ("reestimate", "keep", "train") for lr in (1e-3, 1e-2)]
    grid += [("fitnet", {"bn": "train", "lr": 1e-3, "hint_weight": h}) for h in (0.0, 0.3, 1.0, 3.0)]
    grid += [("fitnet", {"bn": "reestimate", "lr": lr, "hint_weight": 1.0}) for lr in (1e-3, 3e-3)]
    grid += [(m, {"ridge": r}) for m in ("fskd", "thinet", "cp") for r in (0.0, 0.1)]
    rows = []
    for k in (1, 5):
        indices = data.few_shot(train, k, 0)
        images, labels = data.stack(train, indices)
        chosen = set(indices)
        x_val, y_val = data.stack(train, [i for i in range(len(train)) if i not in chosen])
        for ratio in (0.5, 0.25):
            plan = pruning.structured(teacher, ratio)
            for method, options in grid:
                result = baselines.run(method, teacher, images, labels, plan, show_progress=False, **options)
                rows.append({"k": k, "keep": ratio, "method": method, "options": options,
                             "validation_accuracy": metrics.accuracy(result.student, x_val, y_val)})
                print(json.dumps(rows[-1]), flush=True)
    atomic.write_text(out, json.dumps(rows, indent=1))
    print("| method | options | " + " | ".join(f"K={k}, keep {r:g}" for k in (1, 5) for r in (0.5, 0.25)) + " | mean |")
    print("|---|---|" + "---|" * 5)
    for method, options in grid:
        accs = [next(r["validation_accuracy"] for r in rows if r["method"] == method and r["options"] == options
                     and r["k"] == k and r["keep"] == ratio) for k in (1, 5) for ratio in (0.5, 0.25)]
        text = ", ".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}" for key, value in options.items())
        print(f"| {method} | {text} | " + " | ".join(f"{100 * a:.1f}" for a in accs) + f" | {100 * sum(accs) / 4:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="~/.cache/xdnb/cifar10-jpeg")
    parser.add_argument("--teacher", default=str(DEFAULT_TEACHER))
    parser.add_argument("--k", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--methods", nargs="+", default=list(ORDER), choices=ORDER)
    parser.add_argument("--scheme", default="VGG-A", help="VGG-16 pruning scheme (VGG-A, VGG-B, VGG-C, VGG-50)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steady timings on shared cores)")
    parser.add_argument("--out", default=str(HERE / "results" / "baselines_cifar.json"))
    parser.add_argument("--no-variants", action="store_true", help="skip the ridge=0 runs of thinet and cp")
    parser.add_argument("--table", action="store_true", help="only print the table of finished runs")
    parser.add_argument("--digits-defaults", action="store_true", help="run the grid that chose the defaults")
    args = parser.parse_args()
    os.environ.setdefault("XDNB_QUIET", "1")
    xdnb.setup(0, threads=args.threads)
    if args.digits_defaults:
        digits_defaults(HERE / "results" / "baselines_digits_defaults.json")
    elif args.table:
        print_table(Path(args.out), args.scheme)
    else:
        if not Path(args.teacher).is_file():
            raise FileNotFoundError(f"teacher checkpoint {args.teacher} not found; pass --teacher PATH")
        print(f"torch threads: {torch.get_num_threads()}", flush=True)
        run_all(args)


if __name__ == "__main__":
    main()
