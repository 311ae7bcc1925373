"""Ship a network: export it to ONNX or to a ``torch.export`` program (``.pt2``), verified by running it.

- :func:`export` writes ONE self-contained file (ONNX: ``torch.onnx.export`` with ``torch.export``
  underneath (the default "dynamo" exporter, which needs ``onnxscript``) and the weights inside
  the file (``external_data=False``); pt2: ``torch.export.save``), with a dynamic batch
  dimension, then runs the file (onnxruntime on CPU; ``torch.export.load(...).module()``) on
  seeded inputs at batch 1 and a larger batch and compares its logits with PyTorch eager.
  The file appears only once it has passed (written into a temporary folder next to it, then
  moved), and the :class:`ExportReport` records the measured difference.
- :func:`verify` runs an exported file against a model (the check :func:`export` does).
- :func:`load_student` reads a student saved by ``xdnb compress --out`` (one place to adapt when
  the save format changes).

Tolerance: ``max |exported - eager| <= TOLERANCE * (1 + max |eager logit|)`` over every checked
input (``TOLERANCE = 1e-4``: float32 kernels of different runtimes sum in different orders).
An unsupported model or a failed export raises one-line :class:`ValueError` naming the model and
the reason. ``onnx``, ``onnxscript`` and ``onnxruntime`` are the optional extra ``xdnb[export]``,
imported only when needed.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import torch
from torch import nn

FORMATS = ("onnx", "pt2")
#: relative tolerance of the check: max abs diff <= TOLERANCE * (1 + max |logit|)
TOLERANCE = 1e-4
#: batch sizes every export is checked at (the file is exported with EXPORT_BATCH, so both differ from it)
CHECK_BATCHES = (1, 16)
#: the example batch traced at export (not 0 or 1: torch.export specialises those sizes)
EXPORT_BATCH = 2
INPUT_NAME, OUTPUT_NAME = "input", "logits"
EXTRA_HINT = 'pip install "xdnb[export]"'


class MissingExtra(ImportError, ValueError):
    """An optional dependency of ``xdnb[export]`` is not installed (a ValueError too, so the CLI
    prints it as one line)."""


def require(module: str):
    """Import ``module`` (``onnx``, ``onnxruntime``, ``onnxscript``) or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtra(f"{module} is not installed ({error}); {EXTRA_HINT}") from None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _one_line(error: BaseException, limit: int = 240) -> str:
    """``Type: message`` of the innermost cause of ``error``, on one line, at most ``limit`` characters."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = " ".join(_ANSI.sub("", str(error)).split())
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' log records, warnings and prints (a failed torch.export prints whole graphs)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def model_name(model) -> str:
    return type(model).__name__


def check_format(format: str) -> str:
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; allowed: {', '.join(FORMATS)}")
    return format


def check_input_shape(input_shape) -> tuple[int, ...]:
    """``input_shape`` as a tuple of positive ints (one image, without the batch dimension)."""
    try:
        shape = tuple(int(s) for s in input_shape)
        ok = len(shape) >= 1 and all(s >= 1 for s in shape) and all(float(s) == int(s) for s in input_shape)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"input_shape must be positive ints such as (3, 32, 32) (one image, no batch), got {input_shape!r}")
    return shape


def sample_inputs(input_shape: Sequence[int], batch_sizes: Sequence[int] = CHECK_BATCHES, seed: int = 0) -> list[torch.Tensor]:
    """Seeded standard-normal inputs ``(b, *input_shape)``, one per batch size (float32, CPU)."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(int(b), *input_shape, generator=generator) for b in batch_sizes]


def _device(model: nn.Module) -> torch.device:
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


@torch.no_grad()
def _eager(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x.to(_device(model)))
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"{model_name(model)} returns {type(out).__name__}, not one logits tensor; only single-output models are exported")
    return out.detach().float().cpu()


@dataclass
class ExportReport:
    """What :func:`export` wrote and how well it matched PyTorch eager.

    ``max_abs_diff``: max |exported − eager| over every checked input; ``max_abs_logit``: max |eager|;
    ``tolerance``: the bound it was held to (``TOLERANCE * (1 + max_abs_logit)``); ``per_batch``:
    the same per checked batch size; ``opset``: the ONNX opset of the file (ONNX only).
    """

    model: str
    format: str
    path: str
    input_shape: list[int]
    bytes: int
    seconds: float
    exporter: str
    opset: int | None = None
    checked: bool = False
    passed: bool | None = None
    batch_sizes: list[int] = field(default_factory=list)
    max_abs_diff: float | None = None
    max_abs_logit: float | None = None
    tolerance: float | None = None
    tolerance_rule: str = f"max|exported - eager| <= {TOLERANCE:g} * (1 + max|eager logit|)"
    per_batch: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _compare(run_exported, model: nn.Module, input_shape, batch_sizes, seed, tolerance) -> dict:
    per_batch, worst, largest = [], 0.0, 0.0
    for x in sample_inputs(input_shape, batch_sizes, seed):
        expected = _eager(model, x)
        got = torch.as_tensor(run_exported(x)).float().cpu()
        if got.shape != expected.shape:
            raise ValueError(f"exported {model_name(model)} gives shape {tuple(got.shape)} at batch {len(x)}, "
                             f"PyTorch {tuple(expected.shape)}")
        diff = float((got - expected).abs().max()) if got.numel() else 0.0
        big = float(expected.abs().max()) if expected.numel() else 0.0
        per_batch.append({"batch_size": len(x), "max_abs_diff": diff, "max_abs_logit": big})
        worst, largest = max(worst, diff), max(largest, big)
    bound = tolerance * (1 + largest)
    return {"batch_sizes": [int(b) for b in batch_sizes], "max_abs_diff": worst, "max_abs_logit": largest,
            "tolerance": bound, "passed": bool(worst <= bound), "per_batch": per_batch}


def onnx_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU ``InferenceSession`` for ``path`` (``threads``: intra-op threads,
    default torch's current thread count), with warnings silenced."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _runner(path: Path, format: str):
    """A function ``x (tensor) -> logits`` running the exported file."""
    if format == "onnx":
        session = onnx_session(path)
        name = session.get_inputs()[0].name
        return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])
    program = torch.export.load(str(path)).module()
    return lambda x: _eager(program, x)


def _infer_format(path: Path) -> str:
    suffix = path.suffix.lstrip(".").lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot tell the format of {path} from its suffix; allowed suffixes: .onnx, .pt2")
    return suffix


def verify(path: str | Path, model: nn.Module, input_shape: Sequence[int], *, format: str | None = None,
           batch_sizes: Sequence[int] = CHECK_BATCHES, seed: int = 0, tolerance: float = TOLERANCE) -> dict:
    """Run the exported file ``path`` (onnxruntime, CPU / ``torch.export.load(...).module()``) and
    ``model`` (eval mode) on seeded inputs ``(b, *input_shape)`` for each ``b`` in ``batch_sizes``.

    Returns ``{"batch_sizes", "max_abs_diff", "max_abs_logit", "tolerance", "passed", "per_batch"}``
    with ``passed = max_abs_diff <= tolerance * (1 + max_abs_logit)``; it does not raise on a
    mismatch (:func:`export` does). ``format``: ``onnx`` or ``pt2`` (default: from the suffix).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"exported file {path} does not exist")
    format = check_format(format) if format is not None else _infer_format(path)
    shape = check_input_shape(input_shape)
    was_training = model.training
    model.eval()
    try:
        try:
            run_exported = _runner(path, format)
        except MissingExtra:
            raise
        except Exception as error:
            raise ValueError(f"cannot load {path} as {format}: {_one_line(error)}") from None
        try:
            return _compare(run_exported, model, shape, batch_sizes, seed, tolerance)
        except ValueError:
            raise
        except Exception as error:
            raise ValueError(f"running exported {model_name(model)} ({path.name}) failed: {_one_line(error)}") from None
    finally:
        model.train(was_training)


def _export_onnx(model: nn.Module, example: torch.Tensor, target: Path, opset: int | None) -> str:
    require("onnx"), require("onnxscript")  # onnxruntime: only to check the file (verify)
    batch = torch.export.Dim("batch")
    torch.onnx.export(model, (example,), str(target), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                      dynamic_shapes=({0: batch},), opset_version=opset, dynamo=True, external_data=False,
                      verbose=False)
    return "torch.onnx.export(dynamo=True, external_data=False)"


def _export_pt2(model: nn.Module, example: torch.Tensor, target: Path) -> str:
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(target))
    return "torch.export.export + torch.export.save"


def _onnx_facts(path: Path) -> int:
    """The file's default-domain opset; raises if any tensor lives in an external data file."""
    onnx = require("onnx")
    from onnx.external_data_helper import uses_external_data

    proto = onnx.load(str(path), load_external_data=False)
    external = [t.name for t in proto.graph.initializer if uses_external_data(t)]
    if external:
        raise ValueError(f"the ONNX file keeps {len(external)} tensors in external data (e.g. {external[0]!r}); "
                         "it is too large for one self-contained file")
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def export(model: nn.Module, path: str | Path, format: str = "onnx", input_shape: Sequence[int] = (3, 32, 32), *,
           check: bool = True, opset: int | None = None, batch_sizes: Sequence[int] = CHECK_BATCHES,
           seed: int = 0, tolerance: float = TOLERANCE) -> ExportReport:
    """Export ``model`` (run in eval mode; its mode is restored afterwards) to ``path``.

    ``format``: ``"onnx"`` (input ``"input"`` ``(batch, *input_shape)``, output ``"logits"``;
    ``opset``: the ai.onnx opset, default the exporter's) or ``"pt2"`` (an ExportedProgram saved
    with ``torch.export.save``). The batch dimension is dynamic. ``input_shape``: one input without
    the batch, e.g. ``(3, 32, 32)``. With ``check`` (default) the file is run on seeded inputs at
    ``batch_sizes`` and must match PyTorch eager within ``tolerance * (1 + max |logit|)``; a file
    that fails is not written. Raises :class:`ValueError` (one line, naming the model and the
    reason) when the model cannot be exported or does not match.
    """
    format = check_format(format)
    shape = check_input_shape(input_shape)
    if not isinstance(model, nn.Module):
        raise ValueError(f"export needs an nn.Module, got {type(model).__name__}")
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"export path {path} is a folder; give a file name such as student.{format}")
    name = model_name(model)
    was_training = model.training
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        example = torch.zeros(EXPORT_BATCH, *shape, device=_device(model))
        try:
            _eager(model, example)
        except ValueError:
            raise
        except Exception as error:
            raise ValueError(f"{name} does not run on an input of shape {(EXPORT_BATCH, *shape)}: {_one_line(error)}") from None
        target = folder / path.name
        started = time.perf_counter()
        try:
            with _quiet():
                exporter = _export_onnx(model, example, target, opset) if format == "onnx" else _export_pt2(model, example, target)
        except MissingExtra:
            raise
        except Exception as error:
            raise ValueError(f"cannot export {name} to {format}: {_one_line(error)}") from None
        seconds = time.perf_counter() - started
        written = sorted(p.name for p in folder.iterdir())
        if written != [path.name]:
            raise ValueError(f"exporting {name} to {format} wrote {written}, not one self-contained file")
        report = ExportReport(model=name, format=format, path=str(path), input_shape=list(shape),
                              bytes=target.stat().st_size, seconds=seconds, exporter=exporter,
                              opset=_onnx_facts(target) if format == "onnx" else None)
        if check:
            result = verify(target, model, shape, format=format, batch_sizes=batch_sizes, seed=seed, tolerance=tolerance)
            report.checked = True
            for key in ("passed", "batch_sizes", "max_abs_diff", "max_abs_logit", "tolerance", "per_batch"):
                setattr(report, key, result[key])
            if not result["passed"]:
                raise ValueError(f"exported {name} ({format}) differs from PyTorch: max abs diff {result['max_abs_diff']:.3g} "
                                 f"> tolerance {result['tolerance']:.3g}; nothing written")
        os.replace(target, path)
        return report
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        model.train(was_training)


class Student(NamedTuple):
    """A saved student: the network (eval mode), the metadata saved with it, and its input shape
    (one image, no batch; ``None`` when the file does not record it)."""

    model: nn.Module
    meta: dict
    input_shape: tuple[int, ...] | None


def load_student(path: str | Path) -> Student:
    """Read a student written by ``xdnb compress --out`` / :func:`xdnb.models.save_student`: the
    network (rebuilt and narrowed by :func:`xdnb.models.load_student`), its metadata (with the
    ``input_shape`` and ``normalization`` it expects) and its input shape. Missing file:
    :class:`FileNotFoundError`; a file that is not a student or cannot be read: :class:`ValueError`
    naming the file.
    """
    from . import models

    try:
        model, info = models.load_student(path)
    except (ValueError, FileNotFoundError):
        raise
    except Exception as error:  # e.g. a constructor that fails to build
        raise ValueError(f"{path} is not a loadable xdnb student: {_one_line(error)}") from None
    meta = {**(info.get("meta") or {}), "input_shape": list(info["input_shape"]), "normalization": info.get("normalization")}
    return Student(model.eval(), meta, check_input_shape(info["input_shape"]))
