"""How the quantizers' defaults (steps, lr) were chosen: digits, validation images only. Not a test.

For K = 1 and 5 (seed 0) and 2-bit weights (per channel, no pruning), every quantizer setting
below compresses the digits teacher with regression and with cross (mu = 0.6). It reports the
held-out estimation error L^r at the last conv and the mean over all convs, on *validation*
images: the digits train split minus the K-shot images (never the test split). Writes
``bench/results/quantize_digits.json`` and prints a markdown table.

    python bench/quantize_digits.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import xdnb
from xdnb import atomic, data, distill, metrics, models

HERE = Path(__file__).resolve().parent
SETTINGS = [("ste", lr, steps) for lr in (0.01, 0.02, 0.05) for steps in (100, 300)] + \
           [("proxquant", lr, steps) for lr in (0.1, 0.3, 1.0) for steps in (100, 300)]


def main() -> None:
    xdnb.setup(0, threads=1)
    teacher = models.teacher("digits")
    train = data.digits("train")
    rows = []
    for k in (1, 5):
        shots = data.few_shot(train, k, seed=0)
        images, _ = data.stack(train, shots)
        validation, _ = data.stack(train, sorted(set(range(len(train))) - set(shots)))
        for quantizer, lr, steps in SETTINGS:
            for objective in ("regression", "cross"):
                started = time.perf_counter()
                result = distill.compress(teacher, images, objective, quantize={"bits": 2, "quantizer": quantizer,
                                                                                 "lr": lr, "steps": steps})
                seconds = time.perf_counter() - started
                errors = [r["estimation_error"] for r in metrics.layer_errors(teacher, result.masked_student, validation)]
                rows.append({"k": k, "quantizer": quantizer, "lr": lr, "steps": steps, "objective": objective,
                             "last": errors[-1], "mean": sum(errors) / len(errors), "seconds": seconds})
                print(json.dumps(rows[-1]), flush=True)
    (HERE / "results").mkdir(exist_ok=True)
    atomic.write_text(HERE / "results" / "quantize_digits.json", json.dumps(rows, indent=1))
    print("| quantizer | lr | steps | " + " | ".join(f"K={k} {o[:5]} last / mean" for k in (1, 5)
                                                  for o in ("regression", "cross")) + " |")
    print("|---|---|---|" + "---|" * 4)
    for quantizer, lr, steps in SETTINGS:
        cells = []
        for k in (1, 5):
            for objective in ("regression", "cross"):
                r = next(r for r in rows if (r["k"], r["quantizer"], r["lr"], r["steps"], r["objective"]) ==
                         (k, quantizer, lr, steps, objective))
                cells.append(f"{r['last']:.4f} / {r['mean']:.4f}")
        print(f"| {quantizer} | {lr:g} | {steps} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
