#!/usr/bin/env python
"""Regenerate the stored outputs of notebooks: the only way committed outputs are produced.

Usage (from the repository root, with the project's virtual environment)::

    .venv/bin/python scripts/regenerate_notebooks.py                       # every notebooks/*.ipynb
    .venv/bin/python scripts/regenerate_notebooks.py notebooks/05_reproduce.ipynb
    make notebooks                                                          # the same as the first line

What it does, per notebook, in this order:

1. executes it top to bottom in a fresh kernel of this Python (cwd = the notebook's folder) with
   one thread (``OMP_NUM_THREADS=MKL_NUM_THREADS=1``; the notebooks also call
   ``xdnb.setup(seed, threads=1)``), progress bars off (``XDNB_QUIET=1``) and plotly's light
   ``plotly_mimetype`` renderer (figures are stored as plotly JSON, without plotly.js);
2. cleans the outputs: no widget state (``metadata.widgets``) and no widget views (a panel keeps
   its one-line text), no stderr outputs (they are echoed here instead), no execution timings;
3. writes the notebook back and prints its wall time, the kernel's CPU time (a load-independent
   measure on a shared machine: one thread), its peak resident memory and the file size; it exits non-zero if a notebook fails, is larger than ``--max-kb``, or (with
   ``--max-seconds`` / ``--max-mb``) runs too long or uses too much memory.

``make test`` then re-executes the notebooks under nbval and compares the stored text outputs
exactly; ``notebooks/conftest.py`` lists what is excluded from that comparison (plotly JSON,
HTML, widget views, stderr) and sets the same environment as here. Stored numbers are exact on
the machine that regenerated them; run this script again after any change that moves them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The environment of every notebook kernel (also set by notebooks/conftest.py for nbval).
KERNEL_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "XDNB_QUIET": "1",
    "PLOTLY_RENDERER": "plotly_mimetype",
    "PYTHONHASHSEED": "0",
}
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def clean(nb) -> list[str]:
    """Strip widget state and views, stderr and timings from ``nb`` in place; return the stderr texts."""
    nb.metadata.pop("widgets", None)
    nb.metadata.pop("papermill", None)
    stderr = []
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.outputs:
            if output.output_type == "stream" and output.name == "stderr":
                stderr.append(output.text)
                continue
            data = output.get("data")
            if data is not None and WIDGET_VIEW in data:
                del data[WIDGET_VIEW]
                if not data:
                    continue
            kept.append(output)
        cell.outputs = kept
    return stderr


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time (seconds) of process ``pid`` from /proc (Linux); None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, TypeError, ValueError, IndexError):
        return None


def _peak_mb(pid: int | None) -> float | None:
    """Peak resident memory (MiB) of process ``pid`` from /proc (Linux); None elsewhere."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, TypeError, ValueError):
        return None
    return None


def regenerate(path: Path, timeout: int) -> dict:
    """Execute and clean one notebook in place; return its measurements."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            store_widget_state=False, resources={"metadata": {"path": str(path.parent)}})
    started = time.perf_counter()
    peak = cpu = None
    with client.setup_kernel(env={**os.environ, **KERNEL_ENV}):
        process = getattr(getattr(client.km, "provisioner", None), "process", None)
        pid = getattr(process, "pid", None)
        count = 0
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                count += 1
                client.execute_cell(cell, index, execution_count=count)
        peak, cpu = _peak_mb(pid), _cpu_seconds(pid)
    seconds = time.perf_counter() - started
    stderr = clean(nb)
    nbformat.write(nb, path)
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_mb": peak, "kb": path.stat().st_size / 1024, "stderr": stderr}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebook paths (default: notebooks/*.ipynb)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell (default 600)")
    parser.add_argument("--max-kb", type=float, default=500.0, help="fail if a notebook is larger (default 500)")
    parser.add_argument("--max-seconds", type=float, default=None, help="fail if a notebook runs longer")
    parser.add_argument("--max-mb", type=float, default=None, help="fail if a kernel's peak memory is larger")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    missing = [p for p in paths if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {missing[0]}")
    failures = []
    print(f"{'notebook':<44} {'wall s':>7} {'CPU s':>7} {'peak MiB':>9} {'KiB':>6}")
    for path in paths:
        try:
            m = regenerate(path.resolve(), args.timeout)
        except Exception as error:  # report every notebook, then fail
            failures.append(f"{path}: {type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else ''}")
            print(f"{str(path):<44} FAILED ({type(error).__name__})", flush=True)
            continue
        peak = "n/a" if m["peak_mb"] is None else f"{m['peak_mb']:.0f}"
        cpu = "n/a" if m["cpu_seconds"] is None else f"{m['cpu_seconds']:.1f}"
        print(f"{str(path):<44} {m['seconds']:>7.1f} {cpu:>7} {peak:>9} {m['kb']:>6.0f}", flush=True)
        for text in m["stderr"]:
            print("  stderr (not stored): " + text.strip().replace("\n", "\n  "), file=sys.stderr)
        if m["kb"] > args.max_kb:
            failures.append(f"{path}: {m['kb']:.0f} KiB > --max-kb {args.max_kb:g}")
        if args.max_seconds is not None and m["seconds"] > args.max_seconds:
            failures.append(f"{path}: {m['seconds']:.0f} s > --max-seconds {args.max_seconds:g}")
        if args.max_mb is not None and m["peak_mb"] is not None and m["peak_mb"] > args.max_mb:
            failures.append(f"{path}: peak {m['peak_mb']:.0f} MiB > --max-mb {args.max_mb:g}")
    for failure in failures:
        print("error: " + failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
