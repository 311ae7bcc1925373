#!/usr/bin/env python
"""The "Beyond the paper" pipeline on CIFAR-10, chosen on validation images (issue 14). Not a test.

    PYTHONPATH=. .venv/bin/python bench/beyond_validation_cifar.py --part views     # views grid
    PYTHONPATH=. .venv/bin/python bench/beyond_validation_cifar.py --part global    # global stage grid
    PYTHONPATH=. .venv/bin/python bench/beyond_validation_cifar.py --table          # tables only

The digits defaults (:data:`xdnb.views.RECOMMENDED`, :data:`xdnb.global_stage.DEFAULT_STEPS` /
``DEFAULT_LR``) were chosen on digits; this script checks them on the real benchmark, the way
they were chosen there: the VGG-16 teacher of ``../shared/data``, the CIFAR-10 JPEG export, scheme
VGG-C, K = 1, seeds 0, 1, 2. **Validation images** of seed ``s``: :data:`VALIDATION` images drawn
(seeded, the same for every seed) from the train split, minus that seed's K-shot images; never
the test split. Accuracy is top-1 in percent, the mean over the seeds.

``--part views``: regression and cross (mu = 0.6) with views ∈ :data:`VIEWS` × augment ∈
:data:`AUGMENTS` (views = 1 is the paper's protocol). Rule, fixed before the run (the digits rule):
the smallest number of views whose mean (over both objectives and the seeds, at its best
augmentation) is within :data:`TOLERANCE` points of the best mean; then the best augmentation at
that number of views.

``--part global``: the layer-wise cross fit with the views chosen by ``--part views`` (or
``--views``/``--augment``), then kd and mir at each learning rate of :data:`LRS` for up to
``max(STEPS)`` Adam steps on fresh views, the student read at each step count of :data:`STEPS`.
Rule, fixed before the run: the (steps, lr) with the best mean over both stages and the seeds;
ties (within 0.1 points) to fewer steps. Each row also records the wall time, so the cost of
every setting is on the table.

``--part baselines``: the kd and mir baselines from the L1-norm student (BN re-estimated on the
views), at each learning rate of ``--lrs`` (default :data:`BASELINE_LRS`) with ``--views`` views
(default 1), the student read at each step count of ``--steps``; the same rule as the global part.

``--part fit``: cross's ``mu`` (``--mus``) × the solver's ``ridge`` (``--ridges``) with 16
``flip,crop,mixup`` views: both were chosen without views, on digits.

Results go to ``--results`` (default ``bench/results/beyond_validation_cifar.json``, git-ignored), rewritten atomically
after every run; finished runs are skipped on a restart. Threads: ``--threads`` (default 2).
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("XDNB_QUIET", "1")

import torch  # noqa: E402

from xdnb import atomic, baselines, data, distill, global_stage, metrics, models, pruning  # noqa: E402
from xdnb import views as views_  # noqa: E402
from xdnb.graph import trace  # noqa: E402
from xdnb.sites import reestimate_bn  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "beyond_validation_cifar.json"
TEACHER = HERE.parent.parent / "shared" / "data" / "vgg16_cifar10_teacher.pt"
SCHEME, K, SEEDS = "VGG-C", 1, [0, 1, 2]
VIEWS = [1, 4, 8, 16]
AUGMENTS = ["flip", "flip,crop", "flip,crop,mixup"]
METHODS = ["regression", "cross"]
LRS = [3e-4, 1e-3, 3e-3]
BASELINE_LRS = [1e-4, 3e-4, 1e-3]
FIT_MUS = [0.4, 0.6, 0.8]
FIT_RIDGES = [0.01, 0.1, 1.0]
STEPS = [50, 100, 200, 400]
VALIDATION = 2000
TOLERANCE = 0.5


def load() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"views": {}, "global": {}}


def save(store: dict) -> None:
    """Write ``store`` atomically, merged with what is on disk under a lock: several parts may run
    at once in separate processes, each adding its own runs (runs are never removed)."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS.with_name(RESULTS.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for part, runs in load().items():
            store.setdefault(part, {})
            store[part].update({key: run for key, run in runs.items() if key not in store[part]})
        atomic.write_text(RESULTS, json.dumps(store, indent=1, sort_keys=True) + "\n")


class Bench:
    """Teacher, train split and, per seed, the K-shot images and the validation images."""

    def __init__(self, root: str, teacher: str):
        self.teacher = models.teacher("vgg16", checkpoint=teacher)
        self.train = data.load(f"cifar10-folder:{root}", "train")
        pool = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(1234))[:VALIDATION + 10 * K * 10]
        self.pool = pool.tolist()
        self._cache = {}

    def seed(self, seed: int):
        if seed not in self._cache:
            shots = data.few_shot(self.train, K, seed)
            kept = [i for i in self.pool if i not in set(shots)][:VALIDATION]
            self._cache[seed] = (data.stack(self.train, shots)[0], *data.stack(self.train, sorted(kept)))
        return self._cache[seed]


def views_part(bench: Bench, store: dict, seeds, views_grid=VIEWS, augments=AUGMENTS) -> None:
    settings = [(1, None)] * (1 in views_grid) + [(v, a) for v in views_grid if v > 1 for a in augments]
    for seed in seeds:
        images, x_val, y_val = bench.seed(seed)
        for method in METHODS:
            for views, augment in settings:
                key = f"{method}|views={views}|augment={augment or '-'}|seed={seed}"
                if key in store["views"]:
                    continue
                torch.manual_seed(seed)
                started = time.perf_counter()
                out = distill.compress(bench.teacher, images, method, pruning=SCHEME, views=views,
                                       augment=augment or "flip", seed=seed, show_progress=False)
                seconds = time.perf_counter() - started
                store["views"][key] = {"method": method, "views": views, "augment": augment, "seed": seed, "seconds": seconds,
                                       "validation_accuracy": 100 * metrics.accuracy(out.student, x_val, y_val)}
                save(store)
                print(key, f"{store['views'][key]['validation_accuracy']:.2f} % ({seconds:.0f} s)", flush=True)


def fit_part(bench: Bench, store: dict, seeds, mus=FIT_MUS, ridges=FIT_RIDGES, views: int = 16,
             augment: str = "flip,crop,mixup") -> None:
    """Cross's ``mu`` and the solver's ``ridge`` re-checked with views (both were chosen without)."""
    store.setdefault("fit", {})
    for seed in seeds:
        images, x_val, y_val = bench.seed(seed)
        for mu in mus:
            for ridge in ridges:
                key = f"cross|mu={mu:g}|ridge={ridge:g}|views={views}|augment={augment}|seed={seed}"
                if key in store["fit"]:
                    continue
                torch.manual_seed(seed)
                started = time.perf_counter()
                out = distill.compress(bench.teacher, images, "cross", mu=mu, ridge=ridge, pruning=SCHEME, views=views,
                                       augment=augment, seed=seed, show_progress=False)
                store["fit"][key] = {"mu": mu, "ridge": ridge, "seed": seed, "views": views, "augment": augment,
                                     "seconds": time.perf_counter() - started,
                                     "validation_accuracy": 100 * metrics.accuracy(out.student, x_val, y_val)}
                save(store)
                print(key, f"{store['fit'][key]['validation_accuracy']:.2f} %", flush=True)


def fit_table(store: dict) -> str:
    rows = list(store.get("fit", {}).values())
    if not rows:
        return "(no fit runs yet)"
    ridges = sorted({r["ridge"] for r in rows})
    lines = ["| mu | " + " | ".join(f"ridge {r:g}" for r in ridges) + " |", "|---|" + "---|" * len(ridges)]
    for mu in sorted({r["mu"] for r in rows}):
        cells = []
        for ridge in ridges:
            values = [r["validation_accuracy"] for r in rows if (r["mu"], r["ridge"]) == (mu, ridge)]
            cells.append(f"{statistics.mean(values):.2f} ({len(values)})" if values else "")
        lines.append(f"| {mu:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n(mean validation top-1 %, number of seeds in brackets)"


def views_table(store: dict) -> tuple[str, tuple[int, str | None] | None]:
    rows = list(store["views"].values())
    if not rows:
        return "(no views runs yet)", None
    seeds = sorted({r["seed"] for r in rows})
    mean = {}
    lines = ["| views | augment | regression | cross | mean |", "|---|---|---|---|---|"]
    for views, augment in sorted({(r["views"], r["augment"]) for r in rows}, key=lambda s: (s[0], s[1] or "")):
        per = {m: [r["validation_accuracy"] for r in rows if (r["method"], r["views"], r["augment"]) == (m, views, augment)]
               for m in METHODS}
        if any(len(v) != len(seeds) for v in per.values()):
            continue
        mean[(views, augment)] = statistics.mean(statistics.mean(v) for v in per.values())
        lines.append(f"| {views} | {augment or '— (the paper)'} | {statistics.mean(per['regression']):.2f} | "
                     f"{statistics.mean(per['cross']):.2f} | {mean[(views, augment)]:.2f} |")
    if not mean:
        return "\n".join(lines) + "\n\n(no setting finished for every seed yet)", None
    best = max(mean.values())
    fewest = min(v for (v, _), m in mean.items() if m >= best - TOLERANCE)
    chosen = max(((v, a) for (v, a) in mean if v == fewest), key=lambda s: mean[s])
    return "\n".join(lines) + f"\n\nseeds {seeds}; chosen by the rule: {chosen[0]} views, {chosen[1] or '-'}", chosen


def global_part(bench: Bench, store: dict, seeds, views: int, augment: str, lrs=LRS) -> None:
    for seed in seeds:
        images, x_val, y_val = bench.seed(seed)
        base_key = f"none|views={views}|augment={augment}|seed={seed}"
        layerwise = None
        for stage in global_stage.STAGES:
            for lr in lrs:
                key = f"{stage}|lr={lr:g}|views={views}|augment={augment}|seed={seed}"
                if key in store["global"]:
                    continue
                if layerwise is None:
                    torch.manual_seed(seed)
                    started = time.perf_counter()
                    layerwise = distill.compress(bench.teacher, images, "cross", pruning=SCHEME, views=views, augment=augment,
                                                 seed=seed, show_progress=False)
                    store["global"][base_key] = {"stage": "none", "seed": seed, "seconds": time.perf_counter() - started,
                                                 "validation_accuracy": 100 * metrics.accuracy(layerwise.student, x_val, y_val)}
                student = copy.deepcopy(layerwise.student)
                read, started = {}, time.perf_counter()

                def callback(step, loss, student=student, read=read, started=started):
                    if step in STEPS:
                        seconds = time.perf_counter() - started
                        read[step] = {"loss": loss, "seconds": seconds,
                                      "validation_accuracy": 100 * metrics.accuracy(student, x_val, y_val)}

                global_stage.train(global_stage.GlobalStage(stage, max(STEPS), lr), bench.teacher, student, images,
                                   views=views, augment=augment, seed=seed, show_progress=False, callback=callback)
                store["global"][key] = {"stage": stage, "lr": lr, "seed": seed, "views": views, "augment": augment,
                                        "layerwise_seconds": store["global"][base_key]["seconds"],
                                        "steps": {str(s): v for s, v in read.items()}}
                save(store)
                print(key, ", ".join(f"{s}: {v['validation_accuracy']:.2f}" for s, v in read.items()), flush=True)


def baselines_part(bench: Bench, store: dict, seeds, lrs=BASELINE_LRS, views: int = 1, steps=STEPS) -> None:
    """kd and mir from the L1-norm student (the baselines), each lr of ``lrs``, read at each step
    count of ``steps``, ``views`` views per image a step (1 = the K-shot images)."""
    store.setdefault("baselines", {})
    for seed in seeds:
        images, x_val, y_val = bench.seed(seed)
        graph = trace(bench.teacher, tuple(images.shape[1:]))
        for stage in global_stage.STAGES:
            for lr in lrs:
                key = f"{stage}|lr={lr:g}|views={views}|seed={seed}"
                if key in store["baselines"]:
                    continue
                student = baselines.l1_filter_prune(graph, pruning.structured(graph, SCHEME))[0]
                reestimate_bn(student, views_.make_views(images, views, "flip,crop,mixup", seed))
                start = 100 * metrics.accuracy(student, x_val, y_val)
                read, started = {}, time.perf_counter()

                def callback(step, loss, student=student, read=read, started=started):
                    if step in steps:
                        read[step] = {"loss": loss, "seconds": time.perf_counter() - started,
                                      "validation_accuracy": 100 * metrics.accuracy(student, x_val, y_val)}

                global_stage.train(global_stage.GlobalStage(stage, max(steps), lr), bench.teacher, student, images,
                                   views=views, augment="flip,crop,mixup", seed=seed, show_progress=False, callback=callback)
                store["baselines"][key] = {"stage": stage, "lr": lr, "seed": seed, "views": views,
                                           "start_accuracy": start, "steps": {str(s): v for s, v in read.items()}}
                save(store)
                print(key, ", ".join(f"{s}: {v['validation_accuracy']:.2f}" for s, v in read.items()), flush=True)


def baselines_table(store: dict) -> str:
    rows = list(store.get("baselines", {}).values())
    if not rows:
        return "(no baseline runs yet)"
    steps = sorted({int(s) for r in rows for s in r["steps"]})
    lines = ["| stage | lr | views | start | " + " | ".join(f"{s} steps" for s in steps) + " |", "|---|---|---|---|" + "---|" * len(steps)]
    for stage, lr, views in sorted({(r["stage"], r["lr"], r["views"]) for r in rows}):
        per = [r for r in rows if (r["stage"], r["lr"], r["views"]) == (stage, lr, views)]
        cells = [f"{statistics.mean(r['steps'][str(s)]['validation_accuracy'] for r in per):.2f}"
                 if all(str(s) in r["steps"] for r in per) else "" for s in steps]
        start = statistics.mean(r["start_accuracy"] for r in per)
        lines.append(f"| {stage} | {lr:g} | {views} | {start:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nseeds {sorted({r['seed'] for r in rows})}"


def global_table(store: dict) -> str:
    rows = [r for r in store["global"].values() if r["stage"] != "none"]
    if not rows:
        return "(no global-stage runs yet)"
    lrs = sorted({r["lr"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    base = statistics.mean(r["validation_accuracy"] for r in store["global"].values() if r["stage"] == "none")
    mean, lines = {}, ["| steps | " + " | ".join(f"lr {lr:g} (kd / mir)" for lr in lrs) + " |", "|---|" + "---|" * len(lrs)]
    for step in STEPS:
        cells = []
        for lr in lrs:
            per = {s: [r["steps"][str(step)]["validation_accuracy"] for r in rows if (r["stage"], r["lr"]) == (s, lr)
                       and str(step) in r["steps"]] for s in global_stage.STAGES}
            if any(len(v) != len(seeds) for v in per.values()):
                cells.append("")
                continue
            mean[(step, lr)] = statistics.mean(statistics.mean(v) for v in per.values())
            cells.append(f"{mean[(step, lr)]:.2f} ({statistics.mean(per['kd']):.2f} / {statistics.mean(per['mir']):.2f})")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    seconds = {step: statistics.median(r["steps"][str(step)]["seconds"] for r in rows if str(step) in r["steps"]) for step in STEPS}
    text = "\n".join(lines) + (f"\n\nseeds {seeds}; layer-wise fit alone: {base:.2f} %; median wall time of the stage: "
                               + ", ".join(f"{s} steps {t:.0f} s" for s, t in seconds.items()))
    if mean:
        best = max(mean.values())
        chosen = min(s for s, m in mean.items() if m >= best - 0.1)
        text += f"\nchosen by the rule: {chosen[0]} steps at lr {chosen[1]:g} ({mean[chosen]:.2f} %)"
    return text


def main() -> None:
    global RESULTS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("views", "global", "baselines", "fit"))
    parser.add_argument("--data-root", default="~/.cache/xdnb/cifar10-jpeg")
    parser.add_argument("--teacher", default=str(TEACHER))
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    parser.add_argument("--views", type=int, help="views of the global part (default: the views part's choice)")
    parser.add_argument("--augment", help="augment of the global part (default: the views part's choice)")
    parser.add_argument("--lrs", type=float, nargs="+", default=LRS, help="learning rates of the global part")
    parser.add_argument("--views-grid", type=int, nargs="+", default=VIEWS, help="numbers of views of the views part")
    parser.add_argument("--augments", nargs="+", default=AUGMENTS, help="augment lists of the views part")
    parser.add_argument("--results", default=str(RESULTS), help="the results file (kept outside the clone, it spans sessions)")
    parser.add_argument("--steps", type=int, nargs="+", default=STEPS, help="step counts read by the baselines part")
    parser.add_argument("--mus", type=float, nargs="+", default=FIT_MUS, help="cross's mu values of the fit part")
    parser.add_argument("--ridges", type=float, nargs="+", default=FIT_RIDGES, help="ridge values of the fit part")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    RESULTS = Path(args.results).expanduser()
    store = load()
    if args.part and not args.table:
        bench = Bench(str(Path(args.data_root).expanduser()), args.teacher)
        if args.part == "views":
            views_part(bench, store, args.seeds, args.views_grid, args.augments)
        elif args.part == "fit":
            fit_part(bench, store, args.seeds, args.mus, args.ridges)
        elif args.part == "baselines":
            baselines_part(bench, store, args.seeds, args.lrs if args.lrs != LRS else BASELINE_LRS, args.views or 1, args.steps)
        else:
            chosen = views_table(store)[1]
            views = args.views or (chosen[0] if chosen else None)
            augment = args.augment or (chosen[1] if chosen else None)
            if views is None or augment is None:
                raise SystemExit("run --part views first, or give --views and --augment")
            global_part(bench, store, args.seeds, views, augment, args.lrs)
    print(views_table(store)[0])
    print()
    print(global_table(store))
    print()
    print(baselines_table(store))
    print()
    print(fit_table(store))


if __name__ == "__main__":
    main()
