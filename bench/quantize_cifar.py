"""Quantization benchmark on CIFAR-10 + the VGG-16 teacher (issue 7). Not a test.

Runs the ``cifar10-vgg16-quant`` preset (conv weights at 2 and 4 bits, per-channel scales, no
pruning, K = 1 and 5, regression / cross mu = 0.6 / soft alpha = beta = 0.5), narrowed by the
options below, through :func:`xdnb.sweep.run_sweep`: each finished run is appended to
``bench/results/quantize_cifar-<quantizer>.jsonl`` and skipped when the script is started again.
Also measures the data-free baseline (every conv rounded to the grid, teacher BN statistics) and
the same with BN statistics re-estimated on the K-shot images. Prints markdown tables.

    python bench/quantize_cifar.py [--root ~/.cache/xdnb/cifar10-jpeg] [--teacher PATH]
        [--quantizer ste|proxquant] [--steps 300] [--bits 2 4] [--k 1 5] [--seeds 0]
        [--test-limit 2000] [--threads 1]
    python bench/quantize_cifar.py --diagnose    # per-layer held-out errors, 2 bits, K = 1, regression

``--diagnose`` compares, layer by layer, the held-out relative estimation error (on the first 300
images of the test subset) of: the rounded teacher with BN re-estimated, the rounded closed-form
refit (quantizer ``round``), STE, STE with a stronger quantization ridge, and ProxQuant; it writes
``bench/results/quantize_cifar-diagnose.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import xdnb
from xdnb import atomic, data, distill, experiment, metrics, presets, quantize, sites, sweep

HERE = Path(__file__).resolve().parent
DEFAULT_TEACHER = HERE.parent.parent / "shared" / "data" / "vgg16_cifar10_teacher.pt"
DEFAULT_ROOT = Path("~/.cache/xdnb/cifar10-jpeg").expanduser()


def rounding_baselines(spec: str, teacher_path: str, bits_list, ks, seeds, test_limit) -> list[dict]:
    """Data-free rounding of the teacher's convs, with the teacher's BN statistics and with BN
    statistics re-estimated on the K-shot images."""
    config = experiment.RunConfig(data=spec, arch="vgg16", teacher=teacher_path, test_limit=test_limit)
    teacher = experiment.load_teacher(config)
    x_test, y_test = experiment._test_set(spec, test_limit)
    train = experiment._train_set(spec)
    rows = []
    for bits in bits_list:
        rounded = quantize.round_model(teacher, bits)
        rows.append({"bits": bits, "k": 0, "seed": None, "bn": "teacher", "accuracy": metrics.accuracy(rounded, x_test, y_test)})
        for k in ks:
            for seed in seeds:
                images, _ = data.stack(train, data.few_shot(train, k, seed), desc="loading few-shot images")
                fixed = quantize.round_model(teacher, bits)
                sites.reestimate_bn(fixed, images)
                rows.append({"bits": bits, "k": k, "seed": seed, "bn": "re-estimated",
                             "accuracy": metrics.accuracy(fixed, x_test, y_test)})
    return rows


def diagnose(spec: str, teacher_path: str, test_limit: int) -> None:
    config = experiment.RunConfig(data=spec, arch="vgg16", teacher=teacher_path)
    teacher = experiment.load_teacher(config)
    x_test, y_test = experiment._test_set(spec, test_limit)
    train = experiment._train_set(spec)
    images, _ = data.stack(train, data.few_shot(train, 1, 0), desc="loading few-shot images")
    rounded = quantize.round_model(teacher, 2)
    sites.reestimate_bn(rounded, images)
    students = {"rounded teacher + BN": (rounded, 0.0)}
    for name, spec_ in (("round of the refit", {"quantizer": "round"}), ("STE", {"quantizer": "ste"}),
                        ("STE, quantization ridge 10", {"quantizer": "ste", "ridge": 10.0}),
                        ("ProxQuant", {"quantizer": "proxquant"})):
        started = time.perf_counter()
        result = distill.compress(teacher, images, "regression", quantize={"bits": 2, **spec_}, show_progress=False)
        students[name] = (result.masked_student, time.perf_counter() - started)
    rows = []
    for name, (model, seconds) in students.items():
        errors = [r["relative_error"] for r in metrics.layer_errors(teacher, model, x_test[:300])]
        rows.append({"student": name, "accuracy": metrics.accuracy(model, x_test, y_test), "relative_errors": errors,
                     "seconds": seconds})
        print(json.dumps(rows[-1]), flush=True)
    atomic.write_text(HERE / "results" / "quantize_cifar-diagnose.json", json.dumps(rows, indent=1))
    print("| student | accuracy (%) | " + " | ".join(f"conv{i + 2}" for i in range(len(rows[0]["relative_errors"]))) + " |")
    print("|---|---|" + "---|" * len(rows[0]["relative_errors"]))
    for row in rows:
        print(f"| {row['student']} | {100 * row['accuracy']:.2f} | " + " | ".join(f"{e:.3f}" for e in row["relative_errors"]) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(DEFAULT_ROOT))
    parser.add_argument("--teacher", default=str(DEFAULT_TEACHER))
    parser.add_argument("--quantizer", default="ste", choices=("ste", "proxquant", "round"))
    parser.add_argument("--steps", type=int, default=quantize.DEFAULT_STEPS, help="quantizer steps per layer")
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--k", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--methods", nargs="+", default=list(presets.QUANT_METHODS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--test-limit", type=int, default=2000, help="seeded subset of the 10 000 test images")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--diagnose", action="store_true", help="per-layer held-out errors at 2 bits, K = 1 (see above)")
    args = parser.parse_args()

    xdnb.setup(0, threads=args.threads)
    if args.diagnose:
        diagnose(f"cifar10-folder:{Path(args.root).expanduser()}", args.teacher, args.test_limit)
        return
    out = HERE / "results" / f"quantize_cifar-{args.quantizer}.jsonl"
    configs = []
    for bits in args.bits:
        chosen = presets.preset("cifar10-vgg16-quant", data_root=args.root, teacher=args.teacher, seeds=args.seeds,
                                methods=args.methods, ks=args.k, quantize=bits, quantizer=args.quantizer,
                                quantize_steps=args.steps, test_limit=args.test_limit, device="cpu")
        configs += list(chosen.configs)

    def report(result):
        c = result.config
        print(f"{c['quantize']} bits {c['quantizer']:9s} {experiment.method_label(c):18s} K={c['k']} seed={c['seed']}: "
              f"{100 * result.student_accuracy:.2f} % (teacher {100 * result.teacher_accuracy:.2f} %) "
              f"in {result.seconds:.0f} s", flush=True)

    started = time.perf_counter()
    outcome = sweep.run_sweep(configs, out, on_result=report, show_progress=False)
    print(f"sweep: {len(outcome.results)} results in {time.perf_counter() - started:.0f} s "
          f"({torch.get_num_threads()} thread(s)); stored in {out}")
    full = presets.preset("cifar10-vgg16-quant", data_root=args.root, teacher=args.teacher, quantizer=args.quantizer)
    print(full.markdown([r for r in outcome.results]))
    print("| bits | K | method | accuracy (%) | compression (s) |")
    print("|---|---|---|---|---|")
    for r in sorted(outcome.results, key=lambda r: (r.config["quantize"], r.config["k"], r.config["method"])):
        print(f"| {r.config['quantize']} | {r.config['k']} | {experiment.method_label(r.config)} | "
              f"{100 * r.student_accuracy:.2f} | {r.seconds:.0f} |")
    if not args.no_baselines:
        spec = configs[0].data
        rows = rounding_baselines(spec, args.teacher, args.bits, args.k, args.seeds, args.test_limit)
        path = HERE / "results" / "quantize_cifar-rounding.json"
        atomic.write_text(path, json.dumps(rows, indent=1))
        print("| bits | K | data-free rounding, BN statistics | accuracy (%) |")
        print("|---|---|---|---|")
        for row in rows:
            print(f"| {row['bits']} | {row['k'] or '-'} | {row['bn']} | {100 * row['accuracy']:.2f} |")


if __name__ == "__main__":
    main()
