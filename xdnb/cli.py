"""Command line: ``xdnb teacher``, ``xdnb compress``, ``xdnb export``, ``xdnb reproduce`` (thin
wrappers over :mod:`xdnb.experiment`, :mod:`xdnb.export` and :mod:`xdnb.presets`).

Bad arguments end with one line ``xdnb: error: ...`` and exit status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import global_stage, objectives, quantize, solvers, views
from .baselines import METHODS as BASELINES
from .sites import BN_MODES


def _percent(x: float) -> str:
    return f"{100 * x:.2f} %"


def _millions(n: int) -> str:
    return f"{n / 1e6:.3f} M"


def cmd_teacher(args) -> int:
    import time

    from . import data, metrics, models

    started = time.perf_counter()
    model = models.teacher(args.name, seed=args.seed, cache_dir=args.cache_dir, checkpoint=args.checkpoint,
                           num_classes=args.num_classes, stem=args.stem)
    seconds = time.perf_counter() - started
    spec = args.data or ("digits" if args.name == "digits" else None)
    print(f"teacher {args.name}: {_millions(sum(p.numel() for p in model.parameters()))} params, ready in {seconds:.1f} s")
    if spec is None:
        print("(pass --data SPEC to measure its accuracy)")
        return 0
    x, y = data.stack(data.load(spec, "test", input_size=args.input_size), desc="loading test images")
    print(f"test accuracy on {spec}: {_percent(metrics.accuracy(model, x, y))} ({len(y)} images)")
    return 0


def _options(pairs: list[str]) -> dict:
    """``["bn=keep", "steps=100"]`` -> ``{"bn": "keep", "steps": 100}`` (values read as JSON, else text)."""
    import json

    options = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--option takes NAME=VALUE (e.g. --option bn=keep), got {pair!r}")
        try:
            options[name] = json.loads(text)
        except ValueError:
            options[name] = text
    return options


def cmd_compress(args) -> int:
    from . import experiment, models

    config = experiment.RunConfig(
        data=args.data or ("digits" if args.arch == "digits" else ""),
        arch=args.arch, teacher=args.teacher, method=args.method, mu=args.mu, alpha=args.alpha, beta=args.beta,
        pruning=args.pruning, k=args.k, seed=args.seed, solver=args.solver, bn=args.bn, ridge=args.ridge,
        rounds=args.rounds, steps=args.steps, lr=args.lr, finetune_steps=args.finetune_steps,
        batch_size=args.batch_size, test_limit=args.test_limit, device=args.device,
        quantize=args.quantize, quantizer=args.quantizer, granularity=args.granularity, quantize_steps=args.quantize_steps,
        num_classes=args.num_classes, stem=args.stem, input_size=args.input_size, linear=args.linear,
        views=args.views, augment=args.augment, options=_options(args.option),
        global_stage=None if args.global_stage == "none" else args.global_stage, global_steps=args.global_steps,
        global_lr=args.global_lr, temperature=args.temperature,
    )
    if not config.data:
        raise ValueError(f"--data is required for --arch {args.arch} (e.g. cifar10-folder:ROOT or imagenet:ROOT)")
    if args.download and config.data.startswith("cifar10:"):
        from . import data

        data.cifar10(config.data.partition(":")[2], "train", download=True)
        data.cifar10(config.data.partition(":")[2], "test", download=True)
    result = experiment.run(config)
    t, s = result.teacher_size, result.student_size
    print(f"method        {experiment.method_label(config)} {result.method_config}")
    print(f"teacher       {_percent(result.teacher_accuracy)}   params {_millions(t['params'])}   FLOPs {_millions(t['flops_dense'])}")
    print(f"student       {_percent(result.student_accuracy)}   params {_millions(s['params'])} "
          f"(non-zero {_millions(s['nonzero'])})   FLOPs {_millions(s['flops_dense'])} (effective {_millions(s['flops_effective'])})")
    print(f"compression   {result.seconds:.1f} s   (run {result.total_seconds:.1f} s, K={config.k}, seed={config.seed})")
    unprunable = result.method_config.get("unprunable", {})
    if unprunable:
        print(f"full width    {len(unprunable)} layers whose inputs cannot be pruned, e.g. "
              f"{next(iter(unprunable))}: {next(iter(unprunable.values()))}")
    if args.out:
        from . import card, data, latency

        shape, normalization = tuple(result.input_shape), data.normalization(config.data)
        print("timing teacher and student side by side (PyTorch eager, batch 1 and 64, 1 thread)...", flush=True)
        timed = latency.compare(experiment.load_teacher(config), result.student, shape, batch_sizes=(1, 64),
                                threads=(1,), warmup=2, repeats=10)
        for row in timed:
            print(f"latency       batch {row['batch_size']:>2}: teacher {row['teacher']['median_ms']:.2f} ms, "
                  f"student {row['student']['median_ms']:.2f} ms, speed-up {row['speedup']:.2f}x")
        info = card.card_from_result(result, timed, input_shape=shape, normalization=normalization,
                                     student_file=str(Path(args.out).expanduser()))
        path = models.save_student(
            result.student, args.out, build_args=models.builder(config.arch, config.num_classes, config.stem),
            input_shape=shape, kept_channels=result.kept_channels, normalization=normalization,
            meta={"run": result.config, "teacher_accuracy": result.teacher_accuracy,
                  "student_accuracy": result.student_accuracy, "few_shot_indices": result.few_shot_indices,
                  "method_config": result.method_config, "versions": result.versions, "card": info})
        print(f"saved student to {path}")
        json_path, _ = card.write_card(card.card_stem(path), info)
        print(f"model card    {json_path} (and .md)")
    return 0


def cmd_export(args) -> int:
    import torch

    from . import card, export, latency

    fmt = export.check_format(args.format)
    student = export.load_student(args.student)
    shape = student.input_shape
    if args.input_shape and shape and tuple(args.input_shape) != tuple(shape):
        raise ValueError(f"{args.student} records input shape {tuple(shape)}; --input-shape {tuple(args.input_shape)} differs")
    shape = shape or (tuple(args.input_shape) if args.input_shape else None)
    if shape is None:
        raise ValueError(f"{args.student} does not record its input shape; pass --input-shape C H W (e.g. 3 32 32)")
    source = Path(args.student).expanduser()
    out = Path(args.out).expanduser() if args.out else source.with_suffix(f".{fmt}")
    if out.resolve() == source.resolve():
        raise ValueError(f"--out {out} would overwrite the student itself; choose another file name")
    report = export.export(student.model, out, fmt, shape, opset=args.opset)
    print(f"exported      {out} ({fmt}{f', opset {report.opset}' if report.opset else ''}, {report.bytes / 1e6:.2f} MB, "
          f"input (batch, {', '.join(map(str, shape))}))")
    print(f"verified      batches {report.batch_sizes}: max |exported - PyTorch| = {report.max_abs_diff:.2e} "
          f"<= {report.tolerance:.2e}")
    threads = torch.get_num_threads()
    runtime = "onnxruntime" if fmt == "onnx" else "torch"
    timed = latency.measure(out, shape, batch_sizes=(1, 64), threads=(threads,), runtime=runtime, warmup=2, repeats=10)
    for row in timed:
        print(f"latency       {runtime}, batch {row['batch_size']:>2}, {threads} threads: {row['median_ms']:.3f} ms "
              f"({row['median_ms_per_image']:.4f} ms per image)")
    info = card.card_for_export(student.meta, report, timed, input_shape=shape, student_file=str(out))
    json_path, _ = card.write_card(card.card_stem(out), info)
    print(f"model card    {json_path} (and .md)")
    return 0


NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "05_reproduce.ipynb"


def cmd_reproduce(args) -> int:
    import os

    from . import presets

    out = Path(args.out).expanduser().resolve()
    options = {k: v for k, v in (("device", args.device), ("solver", args.solver), ("test_limit", args.test_limit),
                                 ("num_classes", args.num_classes), ("stem", args.stem), ("input_size", args.input_size))
               if v is not None}
    chosen = dict(data_root=args.data_root, teacher=args.teacher, seeds=args.seeds, methods=args.methods, ks=args.k,
                  schemes=args.schemes, arch=args.arch)
    planned = presets.preset(args.preset, **chosen, **options)  # bad arguments fail here, before any work
    if args.device is not None:
        from .experiment import resolve_device

        resolve_device(args.device)  # e.g. --device cuda without CUDA: one line now, not in every run
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    print(f"{args.preset}: {len(planned.configs)} runs -> {out}/results.jsonl (finished runs there are reused)", flush=True)
    use_notebook = not args.no_notebook and NOTEBOOK.is_file()
    if use_notebook:
        try:
            import papermill
        except ImportError:
            use_notebook = False
    if use_notebook:
        out.mkdir(parents=True, exist_ok=True)
        executed = out / NOTEBOOK.name
        parameters = {**{k: v for k, v in chosen.items() if v is not None}, "preset": args.preset, "options": options,
                      "out_dir": str(out), "workers": args.workers or 1, "verbose": True}
        os.environ.setdefault("XDNB_QUIET", "1")  # the kernel's bars would go into the notebook, not here
        try:
            papermill.execute_notebook(str(NOTEBOOK), str(executed), parameters=parameters, progress_bar=False,
                                       stderr_file=sys.stderr, cwd=str(out))
        except papermill.PapermillExecutionError as error:
            print(f"xdnb: error: the notebook failed in cell {error.exec_count}: {error.ename}: {error.evalue} "
                  f"(see {executed})", file=sys.stderr)
            return 1
        print(f"executed notebook: {executed}")
    else:
        presets.reproduce(args.preset, out, workers=args.workers, **chosen, **options)
    print()
    print((out / "table.md").read_text(encoding="utf-8"))
    print(f"written to {out}: results.jsonl, table.md, CSV tables, figure.html, summary.json")
    return 0


ARCH_HELP = ("digits | vgg16 | resnet34 | torchvision:NAME (e.g. torchvision:resnet50) | package.module:function "
             "(your constructor; it must be importable)")


def _model_arguments(parser) -> None:
    parser.add_argument("--num-classes", type=int, help="classes of a torchvision or custom model (passed to its constructor)")
    parser.add_argument("--stem", choices=("cifar",), help="cifar: a torchvision ResNet with the CIFAR stem (conv1 3x3 "
                        "stride 1, max-pool kept), as the shared ResNet-18 teacher; must match how the teacher was trained")
    parser.add_argument("--input-size", type=int, help="image folders: resize and centre-crop to this size")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xdnb", description="Few-shot network compression via cross distillation.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("teacher", help="train (digits) or load a teacher and print its accuracy")
    t.add_argument("name", nargs="?", default="digits", help=ARCH_HELP)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint", help="state-dict file (required for vgg16)")
    t.add_argument("--data", help="dataset spec to measure accuracy on (digits by default for the digits teacher)")
    t.add_argument("--cache-dir", help="cache folder (default $XDNB_CACHE or ~/.cache/xdnb)")
    _model_arguments(t)
    t.set_defaults(func=cmd_teacher)

    c = sub.add_parser("compress", help="compress a teacher with K images per class")
    c.add_argument("--arch", default="digits", help=ARCH_HELP)
    c.add_argument("--teacher", help="teacher state dict (required except for digits and the ImageNet resnet34)")
    c.add_argument("--data", help="digits | cifar10:ROOT | cifar10-folder:ROOT | imagenet:ROOT")
    c.add_argument("--download", action="store_true", help="download CIFAR-10 into ROOT if missing")
    c.add_argument("--k", type=int, default=5, help="images per class (default 5)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--method", "--objective", dest="method", default="cross",
                   help="regression | correction | imitation | cross | soft, or a baseline: " + ", ".join(BASELINES))
    c.add_argument("--mu", type=float, help=f"cross: weight of correction (default {objectives.DEFAULT_MU})")
    c.add_argument("--alpha", type=float, help="soft: teacher-side mix")
    c.add_argument("--beta", type=float, help="soft: student-side mix")
    c.add_argument("--pruning", "--scheme", dest="pruning", default="keep:0.5", help="keep:R (any model), sparse:R, VGG-A|B|C|50 (VGG-16), "
                   "Res-30|50|70 (torchvision ResNets), none")
    c.add_argument("--solver", default="lstsq", choices=solvers.SOLVERS)
    c.add_argument("--bn", default="reestimate", choices=BN_MODES)
    c.add_argument("--ridge", type=float, default=solvers.DEFAULT_RIDGE, help="lstsq: ridge towards the teacher")
    c.add_argument("--rounds", type=int, default=solvers.DEFAULT_ROUNDS, help="lstsq: projection rounds")
    c.add_argument("--steps", type=int, default=solvers.REFERENCE_STEPS, help="reference/proximal: steps per layer")
    c.add_argument("--lr", type=float, default=solvers.REFERENCE_LR, help="reference: Adam learning rate")
    c.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="a baseline's setting, e.g. --option bn=keep --option steps=100 (see xdnb.baselines.OPTIONS)")
    c.add_argument("--finetune-steps", type=int, default=0, help="cross-entropy fine-tuning steps afterwards")
    c.add_argument("--batch-size", type=int, help="images per forward pass (default: all)")
    c.add_argument("--test-limit", type=int, help="evaluate on a seeded subset of this many test images")
    c.add_argument("--device", default="auto", help="auto | cpu | cuda")
    c.add_argument("--quantize", type=int, metavar="BITS", help="quantize every conv's weights to BITS (2..8) bits")
    c.add_argument("--quantizer", default="ste", help="with --quantize: ste | proxquant | round (default ste)")
    c.add_argument("--granularity", default="channel", help="with --quantize: channel | tensor (one scale per output channel or per layer)")
    c.add_argument("--quantize-steps", type=int, default=quantize.DEFAULT_STEPS, help="with --quantize: fitting steps per layer")
    c.add_argument("--linear", action="store_true", help="fit the linear layers too (default: convs only)")
    c.add_argument("--views", type=int, default=1, help="label-free views per K-shot image for the fit, the original "
                   "included (default 1: the paper's protocol; every method but l1-norm)")
    c.add_argument("--augment", default=views.DEFAULT_AUGMENT, metavar="LIST",
                   help="with --views > 1: comma-separated flip, crop, mixup (default flip,crop)")
    c.add_argument("--global-stage", default="none", choices=("none", *global_stage.STAGES),
                   help="after the layer-wise fit, train the whole student end to end against the teacher, label-free, "
                   "on fresh views each step: kd (logits) or mir (last feature map); default none (objectives only; "
                   "for L1-norm then kd/mir use --method kd or mir)")
    c.add_argument("--global-steps", type=int, default=global_stage.DEFAULT_STEPS,
                   help=f"with --global-stage: Adam steps (default {global_stage.DEFAULT_STEPS})")
    c.add_argument("--global-lr", type=float, default=global_stage.DEFAULT_LR,
                   help=f"with --global-stage: Adam learning rate (default {global_stage.DEFAULT_LR:g})")
    c.add_argument("--temperature", type=float, default=global_stage.DEFAULT_TEMPERATURE,
                   help=f"with --global-stage kd: distillation temperature (default {global_stage.DEFAULT_TEMPERATURE:g})")
    _model_arguments(c)
    c.add_argument("--out", help="write the compressed student here (xdnb.models.load_student reads it)")
    c.set_defaults(func=cmd_compress)

    e = sub.add_parser("export", help="export a saved student to ONNX or torch.export (.pt2), verified and timed")
    e.add_argument("student", help="a student written by xdnb compress --out")
    e.add_argument("--format", default="onnx", help="onnx (default) | pt2")
    e.add_argument("--out", help="output file (default: the student's path with .onnx / .pt2)")
    e.add_argument("--input-shape", type=int, nargs=3, metavar=("C", "H", "W"),
                   help="one input's shape, when the student file does not record it")
    e.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    e.set_defaults(func=cmd_export)

    from .presets import PRESETS

    r = sub.add_parser("reproduce", help="run one of the paper's experiments (a preset) and print its tables",
                       description="Presets: " + "; ".join(f"{k}: {v}" for k, v in PRESETS.items()))
    r.add_argument("preset", choices=tuple(PRESETS))
    r.add_argument("--out", default="outputs", help="output folder (default outputs/); an interrupted run resumes there")
    r.add_argument("--workers", type=int, help="parallel runs in a local process pool (default 1)")
    r.add_argument("--seeds", type=int, nargs="+", help="K-shot seeds (default: the preset's)")
    r.add_argument("--methods", nargs="+", help="method specs: NAME, cross:MU, soft:ALPHA,BETA (default: all)")
    r.add_argument("--k", type=int, nargs="+", help="images per class (default: the preset's)")
    r.add_argument("--schemes", nargs="+", help="pruning schemes (default: the preset's)")
    r.add_argument("--data-root", help="CIFAR-10 or ImageNet folder (presets on those datasets)")
    r.add_argument("--teacher", help="teacher checkpoint (VGG-16 presets; optional otherwise)")
    r.add_argument("--arch", help="the CIFAR presets and the ablations on CIFAR: another teacher architecture "
                   "(default vgg16; e.g. torchvision:resnet18 --stem cifar); its default scheme is keep:0.5")
    _model_arguments(r)
    r.add_argument("--device", help="auto | cpu | cuda (default auto: a GPU when present)")
    r.add_argument("--solver", choices=solvers.SOLVERS, help="layer solver (default lstsq)")
    r.add_argument("--test-limit", type=int, help="evaluate on a seeded subset of this many test images")
    r.add_argument("--no-notebook", action="store_true", help="call the library directly instead of executing "
                   "notebooks/05_reproduce.ipynb with papermill")
    r.set_defaults(func=cmd_reproduce)
    return parser


def _one_line(error: BaseException) -> str:
    """The error's message on one line (the CLI never prints more than one line per error)."""
    text = " ".join(str(error).split())
    if isinstance(error, OSError) and error.filename is not None and str(error.filename) not in text:
        text = f"{text}: {error.filename}"
    return text or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"xdnb: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except OSError as error:  # unreadable or unwritable paths (permissions, a folder where a file goes, disk full)
        print(f"xdnb: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("xdnb: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
