#!/usr/bin/env python
"""Latency and speed-up of the VGG-16 and ResNet-18 students against their FLOPs reduction (issue 15).

    .venv/bin/python bench/latency.py [--teacher ../shared/data/vgg16_cifar10_teacher.pt]
        [--resnet18-teacher ../shared/data/resnet18_cifar10_teacher.pt] [--repeats 5]

Two families, each timed against its own teacher. The VGG-16 CIFAR-10 teacher of ``../shared/data``; structured students VGG-A/B/C/50, each
compressed with cross distillation (lstsq) on 10 seeded random 3x32x32 images: accuracy does not
matter for latency, the students' shapes do (they are fixed by the schemes). The unstructured
``sparse:0.9`` student is the teacher with 90 % of every prunable conv's weights zeroed by
magnitude (the data-free ``l1-norm`` baseline): the same shapes and number of zeros as a cross
``sparse:0.9`` student, which takes about 6 minutes here (one least-squares solve per mask), and
all that dense kernels see. The ResNet-18 CIFAR-10 teacher (torchvision, CIFAR stem) and its
``keep:0.5`` and ``Res-50`` students, compressed the same way. Every network is exported to ONNX (verified against PyTorch, the
measured difference recorded) and timed with :func:`xdnb.latency.side_by_side`: the teacher and
all students interleaved in one run, at batch 1 and 64, 1 and 2 threads, in PyTorch eager and in
onnxruntime (CPU). Speed-up = teacher median / student median of that run; FLOPs reduction =
teacher FLOPs / student FLOPs (``xdnb.size.count_flops``, dense; the sparse student's
effective FLOPs too). Goal: the VGG-C student's onnxruntime speed-up >= 0.8 x its FLOPs reduction
at batch 1 and 64.

Writes ``bench/results/latency.json`` (every row) and ``bench/results/latency.md`` (the table of
``bench/README.md``; ``bench/results_page.py --sections latency`` puts it on the results page);
the exported files go to a temporary folder. Without ``../shared`` (or with ``--families VGG-16``) a
family whose teacher file is missing is left out with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEACHER = ROOT.parent / "shared" / "data" / "vgg16_cifar10_teacher.pt"
RESNET18_TEACHER = ROOT.parent / "shared" / "data" / "resnet18_cifar10_teacher.pt"
SCHEMES = ("VGG-A", "VGG-B", "VGG-C", "VGG-50", "sparse:0.9")
RESNET18_SCHEMES = ("keep:0.5", "Res-50")
FAMILIES = ("VGG-16", "ResNet-18")
SHAPE = (3, 32, 32)
GOAL = 0.8


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default=str(DEFAULT_TEACHER))
    parser.add_argument("--resnet18-teacher", default=str(RESNET18_TEACHER))
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per network and setting")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    os.environ.setdefault("XDNB_QUIET", "1")
    import torch

    import xdnb
    from xdnb import atomic, baselines, card, distill, export, latency, models, size

    xdnb.setup(seed=0, threads=2)
    started = time.perf_counter()
    load_before = os.getloadavg()  # the machine is shared: say how busy it was
    images = torch.randn(10, *SHAPE, generator=torch.Generator().manual_seed(0))
    teachers = {"VGG-16": (args.teacher, lambda: models.load_checkpoint(models.vgg(models.VGG16_CFG), args.teacher)),
                "ResNet-18": (args.resnet18_teacher, lambda: models.teacher("torchvision:resnet18", checkpoint=args.resnet18_teacher,
                                                                            num_classes=10, stem="cifar"))}
    results = {"shape": SHAPE, "repeats": args.repeats, "warmup": args.warmup, "families": {}, "skipped": {}}
    for family in args.families:
        path, load = teachers[family]
        if not Path(path).exists():
            results["skipped"][family] = f"teacher file {path} not found"
            print(f"{family}: skipped, {results['skipped'][family]}", flush=True)
            continue
        teacher = load().eval()
        nets = {"teacher": teacher}
        for scheme in (SCHEMES if family == "VGG-16" else RESNET18_SCHEMES):
            if scheme.startswith("sparse"):  # see the module docstring: same shapes and zeros as a cross student, in 1 s
                labels = torch.arange(len(images)) % 10
                nets[scheme] = baselines.run("l1-norm", teacher, images, labels, scheme, show_progress=False).student.eval()
            else:
                nets[scheme] = distill.compress(teacher, images, "cross", pruning=scheme, show_progress=False).student.eval()
        print(f"{family}: compressed {len(nets) - 1} students ({time.perf_counter() - started:.0f} s so far)", flush=True)
        results["families"][family] = time_family(nets, args, export, latency, size)
    results["seconds"] = time.perf_counter() - started
    results["load_average"] = {"start": load_before, "end": os.getloadavg()}
    results["versions"], results["machine"] = card.library_versions(), card.machine()
    out = Path(args.out)
    atomic.write_text(out / "latency.json", json.dumps(results, indent=1) + "\n")
    text = markdown(results)
    atomic.write_text(out / "latency.md", text)
    print(text)
    print(f"written {out / 'latency.json'} and {out / 'latency.md'} ({results['seconds']:.0f} s in all, {platform.node()})")
    return 0


def time_family(nets: dict, args, export, latency, size) -> dict:
    """Sizes, verified ONNX exports and interleaved timings of one teacher and its students."""
    sizes = {label: size.measure(net, SHAPE) for label, net in nets.items()}
    base = sizes["teacher"]["flops_dense"]
    for s in sizes.values():
        s["flops_reduction"] = base / s["flops_dense"]
        s["effective_flops_reduction"] = base / s["flops_effective"]
    family = {"sizes": sizes, "exports": {}, "rows": {}}
    with tempfile.TemporaryDirectory(prefix="xdnb-bench-latency-") as folder:
        files = {}
        for label, net in nets.items():
            report = export.export(net, Path(folder) / f"{label.replace(':', '_')}.onnx", "onnx", SHAPE)
            files[label] = report.path
            family["exports"][label] = report.to_dict()
        worst = max(r["max_abs_diff"] / r["tolerance"] for r in family["exports"].values())
        print(f"exported and verified {len(files)} networks (worst max-abs-diff / tolerance: {worst:.3g})", flush=True)
        for runtime, sources in (("torch", nets), ("onnxruntime", files)):
            t0 = time.perf_counter()
            family["rows"][runtime] = latency.side_by_side(
                sources, SHAPE, reference="teacher", batch_sizes=tuple(args.batch_sizes), threads=tuple(args.threads),
                runtime=runtime, warmup=args.warmup, repeats=args.repeats)
            print(f"timed {runtime} in {time.perf_counter() - t0:.0f} s", flush=True)
    family["goal"] = goal_check(family) if "VGG-C" in sizes else []
    return family


def goal_check(results: dict) -> list[dict]:
    """VGG-C: onnxruntime speed-up vs GOAL x FLOPs reduction, per batch size and thread count
    (``results``: one family's sizes and rows)."""
    reduction = results["sizes"]["VGG-C"]["flops_reduction"]
    return [{"batch_size": r["batch_size"], "threads": r["threads"], "speedup": r["speedup"]["VGG-C"],
             "flops_reduction": reduction, "ratio": r["speedup"]["VGG-C"] / reduction,
             "met": r["speedup"]["VGG-C"] >= GOAL * reduction} for r in results["rows"]["onnxruntime"]]


def markdown(results: dict) -> str:
    """The tables of every family timed, then how they were measured."""
    lines = []
    for name, family in results["families"].items():
        lines += family_markdown(name, family)
    for name, why in results.get("skipped", {}).items():
        lines.append(f"- {name}: not timed ({why})")
    m = results["machine"]
    lines.append(f"- {results['repeats']} timed passes per network and setting after {results['warmup']} warm-up, medians; "
                 f"{m['cpu_model']}, {m['cores']} cores; torch {results['versions'].get('torch')}, "
                 f"onnxruntime {results['versions'].get('onnxruntime')}; {results['seconds']:.0f} s in all"
                 + (f"; 1-min load average {results['load_average']['start'][0]:.1f} at the start, "
                    f"{results['load_average']['end'][0]:.1f} at the end" if "load_average" in results else ""))
    return "\n".join(lines) + "\n"


def family_markdown(name: str, family: dict) -> list[str]:
    sizes, rows = family["sizes"], family["rows"]
    settings = [(rt, r["batch_size"], r["threads"]) for rt in rows for r in rows[rt]]
    head = " | ".join(f"{'eager' if rt == 'torch' else 'ORT'} b{b} t{t}" for rt, b, t in settings)
    lines = [f"**{name}** and its students: speed-up over the teacher, measured side by side", "",
             f"| network | params | FLOPs | FLOPs reduction | {head} |",
             "|---|---|---|---|" + "---|" * len(settings)]
    by = {(rt, r["batch_size"], r["threads"]): r for rt in rows for r in rows[rt]}
    teacher_ms = " | ".join(f"{by[s]['models']['teacher']['median_ms']:.2f} ms" for s in settings)
    t = sizes["teacher"]
    lines.append(f"| teacher ({name}) | {t['params'] / 1e6:.2f} M | {t['flops_dense'] / 1e6:.1f} M | 1 | {teacher_ms} |")
    for label in sizes:
        if label == "teacher":
            continue
        s = sizes[label]
        reduction = f"{s['flops_reduction']:.2f}×"
        if label.startswith("sparse"):
            reduction += f" (effective {s['effective_flops_reduction']:.2f}×)"
        cells = " | ".join(f"{by[k]['speedup'][label]:.2f}×" for k in settings)
        lines.append(f"| {label} | {s['params'] / 1e6:.2f} M | {s['flops_dense'] / 1e6:.1f} M | {reduction} | {cells} |")
    lines.append("")
    for g in family.get("goal", []):
        lines.append(f"- VGG-C in onnxruntime, batch {g['batch_size']}, {g['threads']} thread(s): speed-up {g['speedup']:.2f}× "
                     f"= {g['ratio']:.2f} × its FLOPs reduction ({g['flops_reduction']:.2f}×): goal (≥ {GOAL}×) "
                     f"{'met' if g['met'] else 'not met'}")
    exports = family["exports"]
    worst = max(exports.items(), key=lambda kv: kv[1]["max_abs_diff"] / kv[1]["tolerance"])
    lines.append(f"- {name}: ONNX exports verified against PyTorch at batch 1 and 16: largest max |diff| "
                 f"{max(r['max_abs_diff'] for r in exports.values()):.2e}; closest to its tolerance: {worst[0]} "
                 f"({worst[1]['max_abs_diff']:.2e} of {worst[1]['tolerance']:.2e})")
    lines.append("")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
