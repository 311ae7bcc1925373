#!/usr/bin/env python
"""How the lstsq engine's defaults were chosen (issue 3), on the digits default. Not a test.

    .venv/bin/python bench/engine_digits.py [--seeds 0 1 2 3 4]

Structured pruning ``keep:0.25`` (75 % of the channels removed), the digits teacher, K = 1 and
5. For each setting it prints the mean accuracy over the seeds on two validation sets:

- ``train-rest``: the digits train split minus the K-shot images (1 347 - 10K images; the teacher
  was trained on them, so they flatter every student alike);
- ``test-half``: a seeded half of the digits test split (225 images the teacher never saw; the
  other half is left alone).

Grids: the ridge towards the teacher's weights (``ridge``) with 4 projection rounds, then the
number of projection rounds with the chosen ridge, then, for unstructured pruning
(``sparse:0.9``), the conjugate-gradient iterations of the rough (ranking-only) solves.
One torch thread; the same seeds give the same numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics

os.environ.setdefault("XDNB_QUIET", "1")

import torch  # noqa: E402

from xdnb import data, distill, metrics, models, solvers  # noqa: E402

RIDGES = [0.0, 1e-3, 1e-2, 0.1, 1.0]
ROUNDS = [1, 2, 4, 8]
ROUGH_ITERATIONS = [10, 25, 100]
METHODS = ["regression", "cross"]


def validation_sets(train, test, k: int, seed: int):
    shots = set(data.few_shot(train, k, seed))
    rest = [i for i in range(len(train)) if i not in shots]
    half = torch.randperm(len(test), generator=torch.Generator().manual_seed(1000 + seed))[: len(test) // 2]
    return {"train-rest": data.stack(train, rest), "test-half": data.stack(test, half.tolist())}


def mean_accuracies(teacher, train, test, seeds, ks, **settings) -> dict:
    """``{(method, k, set): mean accuracy %}`` over ``seeds`` for one engine setting."""
    out: dict = {}
    for k in ks:
        for seed in seeds:
            images, _ = data.stack(train, data.few_shot(train, k, seed))
            sets = validation_sets(train, test, k, seed)
            for method in METHODS:
                student = distill.compress(teacher, images, method, show_progress=False, **settings).student
                for name, (x, y) in sets.items():
                    out.setdefault((method, k, name), []).append(100 * metrics.accuracy(student, x, y))
    return {key: statistics.mean(values) for key, values in out.items()}


def print_grid(title: str, label: str, values: list, results: list[dict], ks) -> None:
    print(f"\n{title}")
    columns = [(m, k, s) for k in ks for m in METHODS for s in ("train-rest", "test-half")]
    print(f"{label:>10} " + " ".join(f"{m[:5]} K{k} {s:<10}" for m, k, s in columns))
    for value, row in zip(values, results):
        print(f"{value!s:>10} " + " ".join(f"{row[c]:>19.2f}" for c in columns))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    teacher = models.teacher("digits")
    train, test = data.digits("train"), data.digits("test")
    common = dict(teacher=teacher, train=train, test=test, seeds=args.seeds, ks=args.ks)

    ridge_rows = [mean_accuracies(**common, pruning="keep:0.25", ridge=r, rounds=solvers.DEFAULT_ROUNDS) for r in RIDGES]
    print_grid(f"keep:0.25, rounds {solvers.DEFAULT_ROUNDS}: mean accuracy (%) by ridge", "ridge", RIDGES, ridge_rows, args.ks)
    round_rows = [mean_accuracies(**common, pruning="keep:0.25", ridge=solvers.DEFAULT_RIDGE, rounds=n) for n in ROUNDS]
    print_grid(f"keep:0.25, ridge {solvers.DEFAULT_RIDGE}: mean accuracy (%) by projection rounds", "rounds", ROUNDS,
               round_rows, args.ks)
    rough_rows = []
    default = solvers.MASKED_ROUGH_ITERATIONS
    try:
        for n in ROUGH_ITERATIONS:
            solvers.MASKED_ROUGH_ITERATIONS = n
            rough_rows.append(mean_accuracies(**common, pruning="sparse:0.9"))
    finally:
        solvers.MASKED_ROUGH_ITERATIONS = default
    print_grid(f"sparse:0.9, defaults: mean accuracy (%) by CG iterations of the rough solves "
               f"(final solve: {solvers.MASKED_FINAL_ITERATIONS})", "CG iters", ROUGH_ITERATIONS, rough_rows, args.ks)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
