"""Choose the global stage's default steps and learning rate on validation images (issue 14).

    .venv/bin/python bench/global_stage_validation.py [--seeds 0 1 2] [--quick]

Digits, K = 1, ``keep:0.25``: the layer-wise cross fit on 8 ``flip,crop`` views per image, then each
global stage (kd, mir) with Adam at each learning rate of :data:`LRS` for up to ``max(STEPS)``
steps, the student's accuracy read at every step count of :data:`STEPS` (Adam at a constant rate
has no schedule, so the model after 100 of 400 steps *is* the 100-step model). Accuracy is measured
on the validation images: the digits train split minus that seed's K-shot images, never the test
split. The rule, fixed before the run: the (steps, lr) with the best validation accuracy averaged
over both stages and all seeds; a tie (within 0.1 points) goes to fewer steps. Writes
``bench/results/global_stage_validation.json`` and prints the table.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from xdnb import atomic, data, distill, global_stage, metrics, models

OUT = Path(__file__).resolve().parent / "results" / "global_stage_validation.json"
LRS = (1e-4, 3e-4, 1e-3, 3e-3)
STEPS = (50, 100, 200, 400)
VIEWS, AUGMENT, PRUNING, K = 8, "flip,crop", "keep:0.25", 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="two learning rates, 100 steps at most (a smoke run)")
    args = parser.parse_args()
    lrs, steps = ((1e-3, 3e-3), (50, 100)) if args.quick else (LRS, STEPS)
    torch.set_num_threads(1)
    teacher = models.teacher("digits")
    train = data.digits("train")
    rows = []
    for seed in args.seeds:
        shot = data.few_shot(train, K, seed)
        images, _ = data.stack(train, shot)
        x_val, y_val = data.stack(train, sorted(set(range(len(train))) - set(shot)))
        torch.manual_seed(seed)
        layerwise = distill.compress(teacher, images, "cross", pruning=PRUNING, views=VIEWS, augment=AUGMENT, seed=seed,
                                     show_progress=False)
        base = metrics.accuracy(layerwise.student, x_val, y_val)
        rows.append({"seed": seed, "stage": "none", "lr": None, "steps": 0, "validation_accuracy": base})
        for stage in global_stage.STAGES:
            for lr in lrs:
                student = copy.deepcopy(layerwise.student)
                started = time.perf_counter()

                def read(step, loss, stage=stage, lr=lr, student=student, started=started):
                    if step in steps:
                        rows.append({"seed": seed, "stage": stage, "lr": lr, "steps": step, "loss": loss,
                                     "seconds": time.perf_counter() - started,
                                     "validation_accuracy": metrics.accuracy(student, x_val, y_val)})

                global_stage.train(global_stage.GlobalStage(stage, max(steps), lr), teacher, student, images, views=VIEWS,
                                   augment=AUGMENT, seed=seed, show_progress=False, callback=read)
                print(f"seed {seed} {stage} lr {lr:g}: " + ", ".join(
                    f"{r['steps']}: {100 * r['validation_accuracy']:.2f}" for r in rows
                    if (r["seed"], r["stage"], r["lr"]) == (seed, stage, lr)), flush=True)
    mean = {}
    for lr in lrs:
        for step in steps:
            values = [r["validation_accuracy"] for r in rows if r["lr"] == lr and r["steps"] == step]
            mean[(step, lr)] = statistics.mean(values)
    best = max(mean.values())
    chosen = min((step, lr) for (step, lr), value in mean.items() if value >= best - 1e-3)
    none = statistics.mean(r["validation_accuracy"] for r in rows if r["stage"] == "none")
    print(f"\nvalidation accuracy (%), mean over seeds {args.seeds} and both stages; layer-wise only: {100 * none:.2f}")
    print("| steps | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |")
    print("|---|" + "---|" * len(lrs))
    for step in steps:
        print(f"| {step} | " + " | ".join(f"{100 * mean[(step, lr)]:.2f}" for lr in lrs) + " |")
    per_stage = {s: 100 * statistics.mean(r["validation_accuracy"] for r in rows
                                          if r["stage"] == s and (r["steps"], r["lr"]) == chosen)
                 for s in global_stage.STAGES}
    print(f"chosen: {chosen[0]} steps at lr {chosen[1]:g} ({100 * mean[chosen]:.2f} %; "
          + ", ".join(f"{s} {v:.2f} %" for s, v in per_stage.items()) + ")")
    atomic.write_text(OUT, json.dumps({"rows": rows, "chosen": {"steps": chosen[0], "lr": chosen[1]}, "views": VIEWS,
                                       "augment": AUGMENT, "pruning": PRUNING, "k": K, "seeds": args.seeds}, indent=1))


if __name__ == "__main__":
    main()
