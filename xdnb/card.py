"""A model card next to every saved or exported student: one JSON file and a short markdown page.

- :func:`card_from_result` builds the card's contents (a JSON-able dict) from an
  :class:`xdnb.experiment.Result`: method and its parameters, K, seed, the K-shot indices, BN
  handling, scheme, teacher and student accuracy, parameters, FLOPs, and (when given) the
  latency rows of :mod:`xdnb.latency` with their speed-ups, an export report, the input.
- :func:`write_card` writes ``<stem>.json`` and ``<stem>.md`` atomically, adding the library
  versions and the machine (:func:`library_versions`, :func:`machine`) when the dict lacks them.
- :func:`card_stem` is where the card of a file lives: ``student.pt`` -> ``student.pt.card``
  (``student.pt.card.json``, ``student.pt.card.md``), so the cards of ``s.pt`` and ``s.onnx``
  never overwrite each other.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from importlib import metadata
from pathlib import Path

from . import atomic

CARD_VERSION = 1
#: packages whose versions a card records (those installed)
PACKAGES = ("xdnb", "torch", "torchvision", "numpy", "onnx", "onnxscript", "onnxruntime")


def card_stem(path: str | Path) -> Path:
    """The card's path without its extension, next to ``path``: ``s.pt`` -> ``s.pt.card``."""
    path = Path(path).expanduser()
    return path.with_name(path.name + ".card")


def card_paths(path: str | Path) -> tuple[Path, Path]:
    """``(json_path, md_path)`` of the card next to ``path``: ``s.pt.card.json``, ``s.pt.card.md``."""
    stem = card_stem(path)
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".md")


def library_versions() -> dict:
    """Installed versions of :data:`PACKAGES` (absent ones left out) and Python's."""
    from . import __version__

    found = {"python": platform.python_version()}
    for name in PACKAGES:
        if name == "xdnb":
            found[name] = __version__
            continue
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def cpu_model() -> str | None:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else ``platform.processor()``, else None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return platform.processor() or None


def machine() -> dict:
    """Where the numbers were measured: platform, CPU model, logical cores, torch's thread count."""
    import torch

    return {"platform": platform.platform(), "machine": platform.machine(), "cpu_model": cpu_model(),
            "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def speedups(latency: list[dict] | None) -> list[dict]:
    """The speed-ups of :func:`xdnb.latency.compare` rows: ``runtime``, ``batch_size``, ``threads``, ``speedup``."""
    return [{k: row[k] for k in ("runtime", "batch_size", "threads", "speedup")} for row in latency or [] if "speedup" in row]


def card_from_result(result, latency: list[dict] | None = None, *, export: dict | None = None,
                     input_shape=None, normalization=None, student_file: str | None = None) -> dict:
    """The card of ``result`` (an :class:`xdnb.experiment.Result`).

    ``latency``: rows of :func:`xdnb.latency.compare` (teacher and student side by side) or
    :func:`xdnb.latency.measure`; ``export``: an :class:`xdnb.export.ExportReport` (or its dict);
    ``input_shape`` / ``normalization``: what the student expects, when known.
    """
    config, method_config = dict(result.config), dict(result.method_config)
    teacher, student = dict(result.teacher_size), dict(result.student_size)
    return _plain({
        "card_version": CARD_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "student_file": student_file,
        "method": config["method"],
        "method_config": method_config,
        "k": config["k"],
        "seed": config["seed"],
        "few_shot_indices": list(result.few_shot_indices),
        "bn": method_config.get("bn", config.get("bn")),
        "scheme": config.get("pruning"),
        "arch": config.get("arch"),
        "data": config.get("data"),
        "teacher": config.get("teacher"),
        "input": {"shape": list(input_shape) if input_shape is not None else None, "normalization": normalization},
        "teacher_accuracy": result.teacher_accuracy,
        "student_accuracy": result.student_accuracy,
        "params": {"teacher": teacher.get("params"), "student": student.get("params"), "student_nonzero": student.get("nonzero")},
        "flops": {"teacher": teacher.get("flops_dense"), "student": student.get("flops_dense"),
                  "student_effective": student.get("flops_effective"),
                  "reduction": teacher["flops_dense"] / student["flops_dense"] if student.get("flops_dense") else None},
        "latency": list(latency or []),
        "speedup": speedups(latency),
        "export": export.to_dict() if hasattr(export, "to_dict") else export,
        "compression_seconds": result.seconds,
        "run_config": config,
        "run_versions": dict(result.versions),
    })


def _plain(info: dict) -> dict:
    """``info`` as plain JSON types (e.g. ``torch.__version__`` is a ``str`` subclass that
    ``torch.load(weights_only=True)`` refuses), so a card can travel inside a saved student."""
    return json.loads(json.dumps(info, allow_nan=False))


def card_for_export(meta: dict, report, latency: list[dict] | None = None, *, input_shape=None,
                    student_file: str | None = None) -> dict:
    """The card of an exported student: the card saved with it (``meta["card"]``, written by
    ``xdnb compress --out``) or, for files without one, what ``meta`` records (the run's config,
    accuracy, K-shot indices); then the export ``report`` and the exported file's ``latency`` rows
    (:func:`xdnb.latency.measure`, appended to the saved ones). Versions and machine are this
    process's (filled in by :func:`write_card`)."""
    saved = meta.get("card")
    if isinstance(saved, dict):
        info = {k: v for k, v in saved.items() if k not in ("versions", "machine")}
    else:
        run = meta.get("run") if isinstance(meta.get("run"), dict) else {}
        info = {"card_version": CARD_VERSION, "method": run.get("method"), "method_config": {},
                "k": run.get("k"), "seed": run.get("seed"), "few_shot_indices": meta.get("few_shot_indices"),
                "bn": run.get("bn"), "scheme": run.get("pruning"), "arch": run.get("arch"), "data": run.get("data"),
                "teacher": run.get("teacher"), "teacher_accuracy": None, "student_accuracy": meta.get("student_accuracy"),
                "params": {}, "flops": {}, "latency": [], "speedup": [], "run_config": run}
    rows = [dict(r, model=Path(student_file).name if student_file else r.get("model")) for r in latency or []]
    info.update({
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "saved_student_file": info.get("student_file"),
        "student_file": student_file,
        "input": {**(info.get("input") or {}), "shape": list(input_shape) if input_shape is not None else
                  (info.get("input") or {}).get("shape"),
                  "normalization": meta.get("normalization", (info.get("input") or {}).get("normalization"))},
        "latency": list(info.get("latency") or []) + rows,
        "export": report.to_dict() if hasattr(report, "to_dict") else report,
    })
    return _plain(info)


def write_card(path_stem: str | Path, info: dict) -> tuple[Path, Path]:
    """Write ``info`` as ``<path_stem>.json`` and a short ``<path_stem>.md``, each atomically.

    ``versions`` and ``machine`` are filled in from this process when ``info`` lacks them.
    Returns ``(json_path, md_path)``. ``info`` must be JSON-able (no NaN).
    """
    stem = Path(path_stem).expanduser()
    info = {**info}
    info.setdefault("versions", library_versions())
    info.setdefault("machine", machine())
    text = json.dumps(info, indent=2, allow_nan=False) + "\n"
    json_path, md_path = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".md")
    atomic.write_text(json_path, text)
    atomic.write_text(md_path, markdown(info))
    return json_path, md_path


def read_card(path: str | Path) -> dict:
    """The dict of a card's JSON file."""
    return json.loads(Path(path).expanduser().read_text(encoding="utf-8"))


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f} %"


def _num(x) -> str:
    return "–" if x is None else f"{x:,}"


def _ms(stats: dict | None) -> str:
    return "–" if not stats else f"{stats['median_ms']:.3f} ({stats['q1_ms']:.3f}–{stats['q3_ms']:.3f})"


def markdown(info: dict) -> str:
    """The short markdown page of a card."""
    name = Path(info.get("student_file") or "student").name
    lines = [f"# Model card: {name}", ""]
    if info.get("method") is not None:
        params = json.dumps(info.get("method_config", {}), sort_keys=True)
        lines += [f"- **method**: {info['method']}, parameters `{params}`",
                  f"- **K-shot set**: K = {info.get('k')} images per class, seed {info.get('seed')}, "
                  f"indices {info.get('few_shot_indices')}",
                  f"- **BN handling**: {info.get('bn')}; **scheme**: {info.get('scheme')}",
                  f"- **teacher**: {info.get('arch')} ({info.get('teacher') or 'default'}), data `{info.get('data')}`"]
    shape = (info.get("input") or {}).get("shape")
    if shape:
        norm = (info.get("input") or {}).get("normalization")
        lines.append(f"- **input**: (batch, {', '.join(map(str, shape))})" + (f", normalisation {norm}" if norm else ""))
    lines.append("")
    params, flops = info.get("params") or {}, info.get("flops") or {}
    if params or flops or info.get("teacher_accuracy") is not None:
        reduction = flops.get("reduction")
        lines += ["| | teacher | student |", "|---|---|---|",
                  f"| top-1 accuracy | {_pct(info.get('teacher_accuracy'))} | {_pct(info.get('student_accuracy'))} |",
                  f"| parameters | {_num(params.get('teacher'))} | {_num(params.get('student'))} "
                  f"(non-zero {_num(params.get('student_nonzero'))}) |",
                  f"| FLOPs per input | {_num(flops.get('teacher'))} | {_num(flops.get('student'))}"
                  + (f" ({reduction:.2f}× fewer)" if reduction else "") + " |", ""]
    rows = info.get("latency") or []
    if rows:
        lines += ["## Latency", "", "Median milliseconds per batch (interquartile range), "
                  "teacher and student timed side by side in one run where both are given.", "",
                  "| model | runtime | batch | threads | teacher ms | student ms | speed-up |", "|---|---|---|---|---|---|---|"]
        for r in rows:
            student = r.get("student") or (r if "median_ms" in r else None)
            speed = f"{r['speedup']:.2f}×" if "speedup" in r else "–"
            label = "teacher vs student" if "teacher" in r else r.get("model", "student")
            lines.append(f"| {label} | {r['runtime']} | {r['batch_size']} | {r['threads']} | "
                         f"{_ms(r.get('teacher'))} | {_ms(student)} | {speed} |")
        lines.append("")
    report = info.get("export")
    if report:
        check = (f"checked at batch {report['batch_sizes']}: max |exported − PyTorch| = {report['max_abs_diff']:.2e} "
                 f"≤ {report['tolerance']:.2e} ({report['tolerance_rule']})") if report.get("checked") else "not checked"
        lines += ["## Export", "", f"- `{Path(report['path']).name}`: {report['format']}"
                  + (f", opset {report['opset']}" if report.get("opset") else "") + f", {report['bytes']:,} bytes, "
                  f"dynamic batch; {report['exporter']}", f"- {check}", ""]
    versions = info.get("versions") or {}
    box = info.get("machine") or {}
    lines += ["## Environment", "", "- " + ", ".join(f"{k} {v}" for k, v in versions.items()),
              f"- {box.get('cpu_model')} ({box.get('cores')} cores, torch threads {box.get('torch_threads')}), "
              f"{box.get('platform')}", ""]
    return "\n".join(lines)
