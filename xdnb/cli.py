"""Command line: ``xdnb teacher``, ``xdnb compress`` (thin wrappers over :mod:`xdnb.experiment`).

Bad arguments end with one line ``xdnb: error: ...`` and exit status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import objectives, pruning, solvers
from .sites import BN_MODES


def _percent(x: float) -> str:
    return f"{100 * x:.2f} %"


def _millions(n: int) -> str:
    return f"{n / 1e6:.3f} M"


def cmd_teacher(args) -> int:
    import time

    from . import data, metrics, models

    started = time.perf_counter()
    model = models.teacher(args.name, seed=args.seed, cache_dir=args.cache_dir, checkpoint=args.checkpoint)
    seconds = time.perf_counter() - started
    spec = args.data or ("digits" if args.name == "digits" else None)
    print(f"teacher {args.name}: {_millions(sum(p.numel() for p in model.parameters()))} params, ready in {seconds:.1f} s")
    if spec is None:
        print("(pass --data SPEC to measure its accuracy)")
        return 0
    x, y = data.stack(data.load(spec, "test"), desc="loading test images")
    print(f"test accuracy on {spec}: {_percent(metrics.accuracy(model, x, y))} ({len(y)} images)")
    return 0


def cmd_compress(args) -> int:
    from . import experiment, models

    config = experiment.RunConfig(
        data=args.data or ("digits" if args.arch == "digits" else ""),
        arch=args.arch, teacher=args.teacher, method=args.objective, mu=args.mu, alpha=args.alpha, beta=args.beta,
        pruning=args.scheme, k=args.k, seed=args.seed, solver=args.solver, bn=args.bn, ridge=args.ridge,
        rounds=args.rounds, steps=args.steps, lr=args.lr, finetune_steps=args.finetune_steps,
        batch_size=args.batch_size, test_limit=args.test_limit, device=args.device,
    )
    if not config.data:
        raise ValueError(f"--data is required for --arch {args.arch} (e.g. cifar10-folder:ROOT or imagenet:ROOT)")
    if args.download and config.data.startswith("cifar10:"):
        from . import data

        data.cifar10(config.data.partition(":")[2], "train", download=True)
        data.cifar10(config.data.partition(":")[2], "test", download=True)
    result = experiment.run(config)
    t, s = result.teacher_size, result.student_size
    print(f"method        {result.method_config.get('objective', config.method)} {result.method_config}")
    print(f"teacher       {_percent(result.teacher_accuracy)}   params {_millions(t['params'])}   FLOPs {_millions(t['flops_dense'])}")
    print(f"student       {_percent(result.student_accuracy)}   params {_millions(s['params'])} "
          f"(non-zero {_millions(s['nonzero'])})   FLOPs {_millions(s['flops_dense'])} (effective {_millions(s['flops_effective'])})")
    print(f"compression   {result.seconds:.1f} s   (run {result.total_seconds:.1f} s, K={config.k}, seed={config.seed})")
    if args.out:
        path = models.save_model(result.student, args.out, run=result.config,
                                 student_accuracy=result.student_accuracy, few_shot_indices=result.few_shot_indices)
        print(f"saved student to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xdnb", description="Few-shot network compression via cross distillation.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("teacher", help="train (digits) or load a teacher and print its accuracy")
    t.add_argument("name", nargs="?", default="digits", choices=("digits", "vgg16", "resnet34"))
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint", help="state-dict file (required for vgg16)")
    t.add_argument("--data", help="dataset spec to measure accuracy on (digits by default for the digits teacher)")
    t.add_argument("--cache-dir", help="cache folder (default $XDNB_CACHE or ~/.cache/xdnb)")
    t.set_defaults(func=cmd_teacher)

    c = sub.add_parser("compress", help="compress a teacher with K images per class")
    c.add_argument("--arch", default="digits", choices=("digits", "vgg16", "resnet34"))
    c.add_argument("--teacher", help="teacher checkpoint (required for vgg16)")
    c.add_argument("--data", help="digits | cifar10:ROOT | cifar10-folder:ROOT | imagenet:ROOT")
    c.add_argument("--download", action="store_true", help="download CIFAR-10 into ROOT if missing")
    c.add_argument("--k", type=int, default=5, help="images per class (default 5)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--objective", default="cross", help="regression | correction | imitation | cross | soft | a baseline")
    c.add_argument("--mu", type=float, help=f"cross: weight of correction (default {objectives.DEFAULT_MU})")
    c.add_argument("--alpha", type=float, help="soft: teacher-side mix")
    c.add_argument("--beta", type=float, help="soft: student-side mix")
    c.add_argument("--scheme", default="keep:0.5", help="VGG-A|B|C|50, Res-30|50|70, keep:R, sparse:R, none")
    c.add_argument("--solver", default="lstsq", choices=solvers.SOLVERS)
    c.add_argument("--bn", default="reestimate", choices=BN_MODES)
    c.add_argument("--ridge", type=float, default=solvers.DEFAULT_RIDGE, help="lstsq: ridge towards the teacher")
    c.add_argument("--rounds", type=int, default=solvers.DEFAULT_ROUNDS, help="lstsq: projection rounds")
    c.add_argument("--steps", type=int, default=solvers.REFERENCE_STEPS, help="reference/proximal: steps per layer")
    c.add_argument("--lr", type=float, default=solvers.REFERENCE_LR, help="reference: Adam learning rate")
    c.add_argument("--finetune-steps", type=int, default=0, help="cross-entropy fine-tuning steps afterwards")
    c.add_argument("--batch-size", type=int, help="images per forward pass (default: all)")
    c.add_argument("--test-limit", type=int, help="evaluate on a seeded subset of this many test images")
    c.add_argument("--device", default="auto", help="auto | cpu | cuda")
    c.add_argument("--out", help="write the compressed student here (xdnb.models.load_model reads it)")
    c.set_defaults(func=cmd_compress)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"xdnb: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xdnb: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
