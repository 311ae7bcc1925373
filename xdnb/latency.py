"""The one latency harness: how long a forward pass takes, in PyTorch eager or onnxruntime.

- :func:`measure` times one network (an ``nn.Module``, a ``.onnx`` file, or a ``.pt2`` file; a
  module timed in onnxruntime is first exported to a temporary ONNX file, verified) at
  each batch size and thread count: ``warmup`` untimed passes, then ``repeats`` timed ones;
  one row per (batch size, threads) with the median, quartiles, min and max in milliseconds per
  batch, and the median per image.
- :func:`compare` times a teacher and a student in the same run, interleaved (teacher, student,
  student, teacher, ...), so that the speed-up ``teacher median / student median`` compares
  numbers measured side by side on a machine whose load drifts; :func:`side_by_side` does the
  same for any number of networks (a teacher and all its students in one run).

Inputs are seeded standard-normal batches (the values do not change the work of a dense CNN).
PyTorch runs under ``torch.inference_mode`` with ``torch.set_num_threads(t)`` (restored
afterwards); onnxruntime runs one CPU session per thread count with ``intra_op_num_threads=t``.
These are measurements, not guarantees: benchmarks report them, tests never assert on them.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from . import checks

RUNTIMES = ("torch", "onnxruntime")
DEFAULT_WARMUP = 3
DEFAULT_REPEATS = 20


def _check(batch_sizes, threads, runtime, warmup, repeats) -> None:
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    for name, values in (("batch_sizes", batch_sizes), ("threads", threads)):
        if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
            raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {values!r}")
    checks.integer("warmup", warmup, low=0)
    checks.integer("repeats", repeats, low=1)


def _source_name(source) -> str:
    return Path(source).name if isinstance(source, (str, Path)) else type(source).__name__


def _make_runner(source, runtime: str, threads: int, input_shape) -> Callable[[torch.Tensor], object]:
    """A function running one forward pass of ``source`` on a CPU batch."""
    if runtime == "onnxruntime":
        from .export import onnx_session

        if not Path(source).expanduser().is_file():
            raise FileNotFoundError(f"ONNX file {source} does not exist")
        session = onnx_session(Path(source).expanduser(), threads)
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x.numpy()})
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if path.suffix != ".pt2":
            raise ValueError(f"runtime 'torch' times an nn.Module or a .pt2 file, got {path}")
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        return torch.export.load(str(path)).module()  # an exported program's module is in eval mode already
    if not isinstance(source, nn.Module):
        raise ValueError(f"measure needs an nn.Module or an exported file, got {type(source).__name__}")
    source.eval()
    return source


def _stats(times_s: Sequence[float], batch_size: int) -> dict:
    ms = sorted(1000 * t for t in times_s)
    q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else (ms[0], ms[0], ms[0])
    median = statistics.median(ms)
    return {"median_ms": median, "q1_ms": q1, "q3_ms": q3, "min_ms": ms[0], "max_ms": ms[-1],
            "median_ms_per_image": median / batch_size, "repeats": len(ms)}


def _time_interleaved(sources: dict, input_shape, batch_sizes, threads, runtime, warmup, repeats, seed) -> list[dict]:
    """For each (threads, batch size): warm every source, then time them in alternating order
    (ABBA...), one pass at a time. Returns one row per setting with ``{label: stats}``."""
    _check(batch_sizes, threads, runtime, warmup, repeats)
    shape = tuple(int(s) for s in input_shape)
    labels = list(sources)
    previous = torch.get_num_threads()
    rows = []
    folder = tempfile.TemporaryDirectory(prefix="xdnb-latency-")
    try:
        if runtime == "onnxruntime":  # modules are exported (and verified) once, then timed as files
            from .export import export

            sources = {label: export(source, Path(folder.name) / f"{label}.onnx", "onnx", shape).path
                       if isinstance(source, nn.Module) else source for label, source in sources.items()}
        for t in threads:
            torch.set_num_threads(t)
            runners = {label: _make_runner(sources[label], runtime, t, shape) for label in labels}
            for b in batch_sizes:
                x = torch.randn(b, *shape, generator=torch.Generator().manual_seed(seed))
                times = {label: [] for label in labels}
                with torch.inference_mode():
                    for label in labels:
                        for _ in range(warmup):
                            runners[label](x)
                    for r in range(repeats):
                        for label in (labels if r % 2 == 0 else labels[::-1]):
                            started = time.perf_counter()
                            runners[label](x)
                            times[label].append(time.perf_counter() - started)
                rows.append({"runtime": runtime, "batch_size": b, "threads": t, "warmup": warmup,
                             "times": times})
    finally:
        torch.set_num_threads(previous)
        folder.cleanup()
    return rows


def measure(model_or_path, input_shape: Sequence[int], *, batch_sizes: Sequence[int] = (1, 64),
            threads: Sequence[int] = (1, 2), runtime: str = "torch", warmup: int = DEFAULT_WARMUP,
            repeats: int = DEFAULT_REPEATS, seed: int = 0) -> list[dict]:
    """Latency of one network at every ``batch_sizes`` × ``threads``.

    ``model_or_path``: an ``nn.Module`` or a ``.pt2`` file (``runtime="torch"``), or a ``.onnx``
    file or an ``nn.Module`` (exported to a temporary ONNX file first) (``runtime="onnxruntime"``); ``input_shape``: one input without the batch, e.g.
    ``(3, 32, 32)``. Returns one dict per setting: ``model``, ``runtime``, ``batch_size``,
    ``threads``, ``warmup``, ``repeats``, ``median_ms``, ``q1_ms``, ``q3_ms``, ``min_ms``,
    ``max_ms`` (per batch) and ``median_ms_per_image``. torch's thread count is restored afterwards.
    """
    rows = _time_interleaved({"model": model_or_path}, input_shape, batch_sizes, threads, runtime, warmup, repeats, seed)
    name = _source_name(model_or_path)
    return [{"model": name, **{k: v for k, v in row.items() if k != "times"}, **_stats(row["times"]["model"], row["batch_size"])}
            for row in rows]


def _ratio_quartiles(reference: list[float], other: list[float]) -> tuple[float, float]:
    ratios = sorted(a / b for a, b in zip(reference, other))
    if len(ratios) == 1:
        return ratios[0], ratios[0]
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return q1, q3


def side_by_side(models: dict, input_shape: Sequence[int], *, reference: str | None = None,
                 batch_sizes: Sequence[int] = (1, 64), threads: Sequence[int] = (1, 2), runtime: str = "torch",
                 warmup: int = DEFAULT_WARMUP, repeats: int = DEFAULT_REPEATS, seed: int = 0) -> list[dict]:
    """Time several networks ``{label: model or file}`` interleaved in one run (ABC, CBA, ...).

    Returns one dict per (batch size, threads): ``runtime``, ``batch_size``, ``threads``,
    ``warmup``, ``repeats``, ``models`` (``{label: statistics of measure}``) and, with a
    ``reference`` label (e.g. the teacher), ``speedup`` (``{label: reference median / median}``)
    and ``speedup_iqr`` (``{label: [q1, q3]}`` of the per-repeat ratios of neighbouring passes).
    """
    if reference is not None and reference not in models:
        raise ValueError(f"reference {reference!r} is not one of the labels {list(models)}")
    rows = _time_interleaved(dict(models), input_shape, batch_sizes, threads, runtime, warmup, repeats, seed)
    out = []
    for row in rows:
        times = row["times"]
        entry = {"runtime": row["runtime"], "batch_size": row["batch_size"], "threads": row["threads"],
                 "warmup": row["warmup"], "repeats": repeats,
                 "models": {label: _stats(t, row["batch_size"]) for label, t in times.items()}}
        if reference is not None:
            base = entry["models"][reference]["median_ms"]
            entry["speedup"] = {label: base / stats["median_ms"] for label, stats in entry["models"].items()}
            entry["speedup_iqr"] = {label: list(_ratio_quartiles(times[reference], t)) for label, t in times.items()}
        out.append(entry)
    return out


def compare(teacher, student, input_shape: Sequence[int], *, batch_sizes: Sequence[int] = (1, 64),
            threads: Sequence[int] = (1, 2), runtime: str = "torch", warmup: int = DEFAULT_WARMUP,
            repeats: int = DEFAULT_REPEATS, seed: int = 0) -> list[dict]:
    """Time ``teacher`` and ``student`` side by side (:func:`side_by_side`: interleaved passes,
    same inputs, same run).

    Arguments as :func:`measure` (both sources must suit ``runtime``). Returns one dict per
    (batch size, threads): ``runtime``, ``batch_size``, ``threads``, ``warmup``, ``repeats``,
    ``teacher`` and ``student`` (the statistics of :func:`measure`), ``speedup`` = teacher median /
    student median, and ``speedup_q1`` / ``speedup_q3``: quartiles of the per-repeat ratios of
    passes timed next to each other.
    """
    rows = side_by_side({"teacher": teacher, "student": student}, input_shape, reference="teacher",
                        batch_sizes=batch_sizes, threads=threads, runtime=runtime, warmup=warmup, repeats=repeats,
                        seed=seed)
    return [{**{k: row[k] for k in ("runtime", "batch_size", "threads", "warmup", "repeats")},
             "teacher": row["models"]["teacher"], "student": row["models"]["student"],
             "speedup": row["speedup"]["student"], "speedup_q1": row["speedup_iqr"]["student"][0],
             "speedup_q3": row["speedup_iqr"]["student"][1]} for row in rows]


def table(rows: list[dict]) -> str:
    """A plain-text table of :func:`measure` or :func:`compare` rows (milliseconds per batch)."""
    if rows and "speedup" in rows[0]:
        lines = [f"{'runtime':<12}{'batch':>6}{'threads':>8}{'teacher ms':>12}{'student ms':>12}{'speed-up':>10}"]
        lines += [f"{r['runtime']:<12}{r['batch_size']:>6}{r['threads']:>8}{r['teacher']['median_ms']:>12.3f}"
                  f"{r['student']['median_ms']:>12.3f}{r['speedup']:>9.2f}x" for r in rows]
        return "\n".join(lines)
    lines = [f"{'runtime':<12}{'batch':>6}{'threads':>8}{'median ms':>11}{'IQR ms':>18}{'ms/image':>10}"]
    for r in rows:
        iqr = f"{r['q1_ms']:.3f}-{r['q3_ms']:.3f}"
        lines.append(f"{r['runtime']:<12}{r['batch_size']:>6}{r['threads']:>8}{r['median_ms']:>11.3f}{iqr:>18}"
                     f"{r['median_ms_per_image']:>10.4f}")
    return "\n".join(lines)
