"""Sweeps: many :class:`~xdnb.experiment.RunConfig` runs, resumable, on any executor.

- :func:`grid` builds the product methods × K × schemes × seeds (:func:`mu_grid` and
  :func:`alpha_beta_grid` the ablation grids) as a list of configs.
- :class:`ResultStore` keeps one JSON line per finished run. Each line carries the run's key
  (:meth:`RunConfig.key`, a stable hash of the config) and a checksum of its result, and is
  appended whole under a file lock and fsynced. A line that is cut short, unparsable or fails its
  checksum is *damaged*: it is reported (a :class:`DamagedLineWarning` naming the line number),
  moved to ``<file>.damaged`` (nothing is thrown away) and its run is done again. A line written
  before run keys left out the settings a method ignores carries its config's
  :meth:`~xdnb.experiment.RunConfig.legacy_key`: it is read under the config's present key (the
  migration is this mapping; the file is not rewritten).
- :func:`run_sweep` reads the store, skips the configs already finished and runs the rest on a
  ``concurrent.futures.Executor``: in this process by default, a local process pool
  (``workers=N``), or any executor you pass, e.g. a Dask cluster's ``client.get_executor()``.
  Each result is stored as soon as it arrives, so an interrupted sweep loses at most the runs
  that were in flight. With ``slim=True`` each result is stored as its :func:`summary` (config
  and numbers without the per-layer lists: about 2 KB a run instead of tens), small enough for a
  store that is kept in git and so outlives the machine it ran on.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import threading
import warnings
from concurrent.futures import FIRST_COMPLETED, Executor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

from . import atomic, checks, objectives
from .experiment import Result, RunConfig, run
from .progress import progress

try:  # POSIX file locks; elsewhere only this process's threads are serialised
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class DamagedLineWarning(UserWarning):
    """A results line that is not a whole, checksummed result; its run will be re-run."""


# --- methods and grids -------------------------------------------------------------------------


def parse_method(spec: str) -> dict:
    """RunConfig fields of a method spec: ``NAME``, ``cross:MU`` or ``soft:ALPHA,BETA``.

    >>> parse_method("soft:0.5,0.25")
    {'method': 'soft', 'alpha': 0.5, 'beta': 0.25}
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"a method spec is a non-empty string (e.g. 'cross', 'cross:0.6', 'soft:0.5,0.5'), got {spec!r}")
    name, _, args = spec.partition(":")
    if name == "cross":
        return {"method": "cross", "mu": objectives.DEFAULT_MU if not args else _number(spec, args)}
    if name == "soft":
        parts = args.split(",") if args else []
        if len(parts) != 2:
            raise ValueError(f"the soft method needs alpha and beta: 'soft:ALPHA,BETA' (e.g. 'soft:0.5,0.5'), got {spec!r}")
        return {"method": "soft", "alpha": _number(spec, parts[0]), "beta": _number(spec, parts[1])}
    if args:
        raise ValueError(f"method {name!r} takes no parameters, got {spec!r}")
    return {"method": name}


def _number(spec: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"bad number {text!r} in method spec {spec!r}") from None


def grid(methods: Sequence[str | dict], ks: Sequence[int], schemes: Sequence[str | None], seeds: Sequence[int],
         base: RunConfig | None = None) -> list[RunConfig]:
    """The product methods × schemes × K × seeds as configs (validated), in that nesting order.

    ``methods``: specs of :func:`parse_method` or dicts of RunConfig fields (``{"method": "cross",
    "mu": 0.3}``); ``schemes``: pruning specs (``"VGG-A"``, ``"keep:0.5"``, ``"sparse:0.9"``);
    ``base``: every other field (data, arch, teacher, solver, device, ...).
    """
    base = base or RunConfig()
    lists = {}
    for name, values in (("methods", methods), ("ks", ks), ("schemes", schemes), ("seeds", seeds)):
        if isinstance(values, (str, bytes, dict)) or not isinstance(values, Iterable):
            raise ValueError(f"{name} must be a non-empty list, got {values!r}")
        lists[name] = list(values)
        if not lists[name]:
            raise ValueError(f"{name} must be a non-empty list, got {values!r}")
    methods, ks, schemes, seeds = lists["methods"], lists["ks"], lists["schemes"], lists["seeds"]
    configs = []
    for method, scheme, k, seed in itertools.product(methods, schemes, ks, seeds):
        fields = parse_method(method) if isinstance(method, str) else dict(method)
        fields.setdefault("mu", None), fields.setdefault("alpha", None), fields.setdefault("beta", None)
        configs.append(replace(base, **fields, pruning=scheme, k=k, seed=seed).validate())
    return configs


def mu_grid(mus: Sequence[float], ks: Sequence[int], seeds: Sequence[int], scheme: str | None = "keep:0.5",
            base: RunConfig | None = None) -> list[RunConfig]:
    """Cross distillation for each ``mu`` (ablation: mu = 0 is imitation, 1 correction)."""
    return grid([{"method": "cross", "mu": float(mu)} for mu in mus], ks, [scheme], seeds, base)


def alpha_beta_grid(alphas: Sequence[float], betas: Sequence[float], ks: Sequence[int], seeds: Sequence[int],
                    scheme: str | None = "keep:0.5", base: RunConfig | None = None) -> list[RunConfig]:
    """Soft cross distillation on the (alpha, beta) grid (paper convention: (1, 1) = regression)."""
    methods = [{"method": "soft", "alpha": float(a), "beta": float(b)} for a in alphas for b in betas]
    return grid(methods, ks, [scheme], seeds, base)


# --- the results file --------------------------------------------------------------------------


def _canonical(values) -> str:
    return json.dumps(values, sort_keys=True, allow_nan=False, separators=(",", ":"))


def _checksum(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def encode_line(result: Result | dict) -> str:
    """One results line (ending in a newline): ``{"key", "check", "result"}``."""
    values = result.to_dict() if isinstance(result, Result) else result
    values = json.loads(_canonical(_finite(values)))
    payload = _canonical(values)
    key = RunConfig.from_dict(values["config"]).key()
    return '{"key":%s,"check":"%s","result":%s}\n' % (json.dumps(key), _checksum(payload), payload)


#: The fields of a result that grow with the network (one entry per layer): :func:`summary` empties them.
PER_LAYER_FIELDS = ("history", "kept_channels")


def summary(result: Result | dict) -> dict:
    """``result`` as a dict with its per-layer lists emptied (:data:`PER_LAYER_FIELDS`): the run's
    config, accuracies, sizes, times and versions, still a valid :class:`Result`."""
    values = dict(result.to_dict() if isinstance(result, Result) else result)
    for name in PER_LAYER_FIELDS:
        values[name] = type(values[name])()
    return values


def decode_line(line: str) -> tuple[str, dict]:
    """``(key, result dict)`` of a line from :func:`encode_line`; ValueError saying what is wrong."""
    if not line.endswith("\n"):
        raise ValueError("cut short (no end of line)")
    try:
        record = json.loads(line)
    except ValueError as error:
        raise ValueError(f"not JSON ({error.msg})") from None
    if not isinstance(record, dict) or set(record) != {"key", "check", "result"}:
        raise ValueError("not a results record (expected the fields key, check, result)")
    result = record["result"]
    if not isinstance(result, dict) or _checksum(_canonical(result)) != record["check"]:
        raise ValueError("checksum mismatch")
    try:
        Result.from_dict(result)
        config = RunConfig.from_dict(result["config"])
        key = config.key()
    except (TypeError, ValueError) as error:
        raise ValueError(f"not a result ({error})") from None
    if record["key"] not in (key, config.legacy_key()):  # a line of an older store: filed under its new key
        raise ValueError(f"key {record['key']!r} does not match its config (key {key!r})")
    return key, result


def _finite(values):
    """Non-finite floats (a diverged error, say) become None: results stay strict JSON."""
    if isinstance(values, float):
        return values if math.isfinite(values) else None
    if isinstance(values, dict):
        return {k: _finite(v) for k, v in values.items()}
    if isinstance(values, (list, tuple)):
        return [_finite(v) for v in values]
    return values


_THREAD_LOCK = threading.RLock()


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1)


class ResultStore:
    """A JSON-lines results file with atomic appends and damage-tolerant reading (module docstring).

    ``store.load()`` -> ``{key: result dict}`` (first copy of each key), repairing the file;
    ``store.append(result)`` adds one line. Damaged lines go to ``<path>.damaged``.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self.damaged_path = self.path.with_name(self.path.name + ".damaged")
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    @contextlib.contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _THREAD_LOCK, open(self.lock_path, "a") as handle:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(handle, fcntl.LOCK_UN)

    def load(self, repair: bool = True) -> dict[str, dict]:
        """Finished results by key. Each damaged line is reported with its line number; with
        ``repair`` it is moved, byte for byte, to :attr:`damaged_path` and the file is rewritten
        atomically without it."""
        with self._locked():
            if not self.path.exists():
                return {}
            lines = self.path.read_bytes().splitlines(keepends=True)
            results, good, damaged = {}, [], []
            for number, line in enumerate(lines, 1):
                if not line.strip():  # blank: nothing to keep or report
                    continue
                try:
                    key, result = decode_line(line.decode("utf-8"))
                except (UnicodeDecodeError, ValueError) as error:
                    reason = "not UTF-8" if isinstance(error, UnicodeDecodeError) else str(error)
                    damaged.append(line)
                    where = f"moved to {self.damaged_path.name}; " if repair else ""
                    warnings.warn(f"{self.path}:{number}: damaged result line ({reason}); {where}its run will be re-run",
                                  DamagedLineWarning, stacklevel=2)
                    continue
                if key not in results:  # a second copy (two sweeps on one file) adds nothing
                    results[key] = result
                good.append(line)
            if repair and len(good) != len(lines):
                self._rewrite(good, damaged)
            return results

    def _rewrite(self, good: list[bytes], damaged: list[bytes]) -> None:
        """Save ``damaged`` lines to the side file first, then replace the results file by
        ``good`` (write a temporary file, fsync, rename): a crash in between loses nothing."""
        if damaged:
            with open(self.damaged_path, "ab") as out:
                out.writelines(line if line.endswith(b"\n") else line + b"\n" for line in damaged)
                out.flush()
                os.fsync(out.fileno())
        atomic.replace_with(self.path, lambda temporary: Path(temporary).write_bytes(b"".join(good)))

    def append(self, result: Result | dict) -> str:
        """Append one result line atomically (whole line or nothing, fsynced); returns its key.

        A crash in the middle leaves at most a cut-short last line, which :meth:`load` reports as
        damaged; a failed write (disk full) is truncated away before the error is raised.
        """
        line = encode_line(result).encode("utf-8")
        with self._locked():
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size and _last_byte(self.path) != b"\n":
                    line = b"\n" + line  # never glue a line onto a cut-short one
                try:
                    written = os.write(fd, line)
                    if written != len(line):
                        raise OSError(f"short write ({written} of {len(line)} bytes) to {self.path}")
                    os.fsync(fd)
                except BaseException:
                    os.ftruncate(fd, size)
                    raise
            finally:
                os.close(fd)
        return json.loads(line)["key"]

    def results(self) -> list[Result]:
        """All finished results, in file order."""
        return [Result.from_dict(r) for r in self.load(repair=False).values()]


# --- running -----------------------------------------------------------------------------------


def execute(config: dict) -> dict:
    """Run one config (a dict) and return its result dict: the picklable unit of work that
    :func:`run_sweep` submits to an executor."""
    return run(RunConfig.from_dict(config), show_progress=False).to_dict()


def _init_worker(threads: int) -> None:
    import torch

    os.environ["XDNB_QUIET"] = "1"
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def process_pool(workers: int, threads: int = 1) -> Executor:
    """A local process pool whose workers use ``threads`` torch threads each (spawned, not
    forked: safe after torch has started threads)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    checks.integer("workers", workers, low=1)
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(threads,))


@dataclass
class SweepReport:
    """What :func:`run_sweep` did: ``results`` in the order of the configs, how many were run now
    and how many were found finished in the results file."""

    results: list[Result]
    ran: int
    reused: int
    path: Path


def run_sweep(configs: Sequence[RunConfig], path: str | Path, *, executor: Executor | None = None,
              workers: int | None = None, show_progress: bool = True, desc: str = "sweep",
              on_result: Callable[[Result], None] | None = None, slim: bool = False) -> SweepReport:
    """Run every config not yet in the results file ``path`` (JSON lines, see :class:`ResultStore`).

    ``executor``: any ``concurrent.futures.Executor`` (e.g. ``dask.distributed.Client(...)
    .get_executor()``); it is not shut down. Otherwise ``workers`` > 1 starts a local process pool
    (one torch thread per worker); by default runs go one after another in this process.
    Configs are validated before anything runs; duplicates run once. ``on_result(result)`` sees
    each new result. If a run fails, the runs not yet started are cancelled, finished ones stay
    stored, and the error is raised: fix it and call again to resume. ``slim``: store each result
    as its :func:`summary` (and return it so).
    """
    configs = [config.validate() for config in configs]
    if not configs:
        raise ValueError("a sweep needs at least one config")
    if executor is not None and workers not in (None, 1):
        raise ValueError("pass either executor or workers, not both")
    store = ResultStore(path)
    done = store.load()
    keys = [config.key() for config in configs]
    todo = list({key: config for key, config in zip(keys, configs) if key not in done}.items())
    reused = len({key for key in keys if key in done})

    def record(key: str, values: dict) -> None:
        if slim:
            values = summary(values)
        store.append(values)
        done[key] = json.loads(_canonical(_finite(values)))
        if on_result is not None:
            on_result(Result.from_dict(done[key]))

    owned = None
    if executor is None and workers is not None and workers > 1 and len(todo) > 1:
        owned = executor = process_pool(workers)
    try:
        if todo and executor is None:
            for key, config in progress(todo, desc=desc, total=len(todo), enabled=show_progress):
                record(key, execute(config.to_dict()))
        elif todo:
            _prepare(config for _, config in todo)
            _run_on(executor, todo, record, show_progress, desc)
    finally:
        if owned is not None:
            owned.shutdown(wait=True, cancel_futures=True)
    return SweepReport([Result.from_dict(done[key]) for key in keys], len(todo), reused, store.path)


def _prepare(configs: Iterable[RunConfig]) -> None:
    """Load (train and cache, for digits) each teacher once here, so parallel workers do not
    all train the same teacher at the same time."""
    from .experiment import load_teacher

    seen = set()
    for config in configs:
        if (config.arch, config.teacher) not in seen:
            seen.add((config.arch, config.teacher))
            load_teacher(config)


def _run_on(executor: Executor, todo, record, show_progress: bool, desc: str) -> None:
    """Submit every run, store each result as it arrives. After a failure the runs not yet
    started are cancelled, those already running are awaited and stored, then the error is raised."""
    pending = {executor.submit(execute, config.to_dict()): key for key, config in todo}
    bar = progress(range(len(pending)), desc=desc, total=len(pending), enabled=show_progress)
    error = None
    try:
        while pending:
            finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for future in finished:
                key = pending.pop(future)
                if future.cancelled():
                    continue
                if future.exception() is not None:
                    if error is None:
                        error = future.exception()
                        for other in pending:
                            other.cancel()
                    continue
                record(key, future.result())
                bar.update(1)
    except BaseException:  # interrupted: stop what has not started; stored results stay
        for future in pending:
            future.cancel()
        raise
    finally:
        bar.close()
    if error is not None:
        raise error
