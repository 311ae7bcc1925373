"""One compression run from a plain configuration: :class:`RunConfig` -> :func:`run` -> :class:`Result`.

A run loads the dataset and the teacher, draws the K-shot set (seeded; the indices are kept in
the result), compresses with a distillation objective or a baseline, optionally fine-tunes,
and measures teacher and student accuracy, parameters, FLOPs and time. Everything in a
:class:`Result` is JSON-serialisable.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import platform
import re
import time
from dataclasses import dataclass, field

import torch

from . import __version__, data, distill, metrics, models, objectives, pruning
from . import quantize as quantize_
from .finetune import finetune
from .sites import check_bn_mode
from .solvers import DEFAULT_RIDGE, DEFAULT_ROUNDS, REFERENCE_LR, REFERENCE_STEPS, SOLVERS

#: Fields added after runs were first stored: at their defaults they stay out of a run's key.
_LATER_FIELDS = {"num_classes": None, "stem": None, "input_size": None, "linear": False}
_FLOAT_FIELDS = ("mu", "alpha", "beta", "ridge", "lr")
_QUANTIZE_DEFAULTS = ("ste", "channel", quantize_.DEFAULT_STEPS)


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides a run's numbers.

    ``data``: a dataset spec of :func:`xdnb.data.load` (``digits``, ``cifar10:ROOT``,
    ``cifar10-folder:ROOT``, ``imagenet:ROOT``). ``arch``: ``digits``, ``vgg16``, ``resnet34``, any
    torchvision classification model (``torchvision:resnet50``) or a constructor
    ``package.module:function`` (:func:`xdnb.models.build`), with ``num_classes`` and ``stem``
    (``"cifar"``: a ResNet's CIFAR stem); ``teacher``: a state-dict path (required except for
    digits and the ImageNet ResNet-34); ``input_size``: resize/crop image folders to this size;
    ``linear``: fit the linear layers too. ``method``: an
    objective (``regression``, ``correction``, ``imitation``, ``cross``, ``soft``) or a
    baseline of :mod:`xdnb.baselines`. ``pruning``: a spec of :func:`xdnb.pruning.parse`.
    ``k``: images per class; ``seed``: K-shot draw (and anything random in the method).
    ``test_limit``: evaluate on a seeded subset of this many test images (``None`` = all).
    ``device``: ``"cpu"``, ``"cuda"`` or ``"auto"`` (a GPU when present).
    ``quantize``: weight bits (2..8) of every conv, fitted with ``quantizer`` (``ste``,
    ``proxquant``, ``round``) at ``granularity`` (``channel``, ``tensor``) in ``quantize_steps``
    steps per layer (objectives only; see :mod:`xdnb.quantize`); ``None`` = full precision.
    ``solver``, ``bn``, ``ridge``, ``rounds``, ``steps`` and ``lr`` are the engine's and apply to the
    objectives only; a baseline reads its own settings from ``options`` (defaults in
    :data:`xdnb.baselines.DEFAULTS`, e.g. ``options={"bn": "keep", "ridge": 0.0}``), and the ones it
    used are recorded in ``Result.method_config``.
    """

    data: str = "digits"
    arch: str = "digits"
    teacher: str | None = None
    method: str = "cross"
    mu: float | None = None
    alpha: float | None = None
    beta: float | None = None
    pruning: str | None = "keep:0.5"
    k: int = 5
    seed: int = 0
    solver: str = "lstsq"
    bn: str = "reestimate"
    ridge: float = DEFAULT_RIDGE
    rounds: int = DEFAULT_ROUNDS
    steps: int = REFERENCE_STEPS
    lr: float = REFERENCE_LR
    finetune_steps: int = 0
    batch_size: int | None = None
    test_limit: int | None = None
    device: str = "auto"
    options: dict = field(default_factory=dict, hash=False)
    #: weight quantization (:mod:`xdnb.quantize`): bits (2..8) or None, and how it is fitted
    quantize: int | None = None
    quantizer: str = "ste"
    granularity: str = "channel"
    quantize_steps: int = quantize_.DEFAULT_STEPS
    num_classes: int | None = None
    stem: str | None = None
    input_size: int | None = None
    linear: bool = False

    def validate(self) -> "RunConfig":
        """Raise ValueError on a bad field (naming it and what is allowed); return self."""
        if not isinstance(self.data, str) or not self.data:
            raise ValueError(f"data must be a dataset spec such as 'digits' or 'cifar10-folder:ROOT', got {self.data!r}")
        if not isinstance(self.arch, str) or not (self.arch in models.ARCHS or ":" in self.arch):
            raise ValueError(f"arch must be one of {', '.join(models.ARCHS)}, torchvision:NAME or package.module:function, "
                             f"got {self.arch!r}")
        if self.stem not in models.STEMS:
            raise ValueError(f"stem must be None or 'cifar', got {self.stem!r}")
        if not isinstance(self.linear, bool):
            raise ValueError(f"linear must be True or False, got {self.linear!r}")
        if self.method not in methods():
            raise ValueError(f"unknown method {self.method!r}; allowed: {', '.join(methods())}")
        if self.method in objectives.OBJECTIVES:
            objectives.get(self.method, mu=self.mu, alpha=self.alpha, beta=self.beta)
        # a parameter the method ignores would make two identical runs look different (sweep keys)
        if self.mu is not None and self.method != "cross":
            raise ValueError(f"mu only applies to method 'cross', not {self.method!r}; leave mu=None")
        if (self.alpha is not None or self.beta is not None) and self.method != "soft":
            raise ValueError(f"alpha and beta only apply to method 'soft', not {self.method!r}; leave them None")
        if self.pruning is not None and not isinstance(self.pruning, str):
            raise ValueError(f"pruning must be a spec string (e.g. 'keep:0.5', 'VGG-A', 'sparse:0.9') or None, got {self.pruning!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        check_bn_mode(self.bn)
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be a positive int, got {self.k!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        for name, low in (("rounds", 0), ("steps", 1), ("finetune_steps", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        for name in ("batch_size", "test_limit", "num_classes", "input_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        for name in ("ridge", "lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not isinstance(self.options, dict):
            raise ValueError(f"options must be a dict of JSON values, got {type(self.options).__name__}")
        try:
            json.dumps(self.options, allow_nan=False)
        except (TypeError, ValueError):
            raise ValueError(f"options must hold only JSON values (str, number, bool, None, list, dict), got {self.options!r}") from None
        if not isinstance(self.device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.quantize is not None:
            if self.method not in objectives.OBJECTIVES:
                raise ValueError(f"quantize applies to the distillation objectives ({', '.join(objectives.OBJECTIVES)}), "
                                 f"not the baseline {self.method!r}; leave quantize=None")
            self.quantization()
        elif (self.quantizer, self.granularity, self.quantize_steps) != _QUANTIZE_DEFAULTS:
            raise ValueError("quantizer, granularity and quantize_steps only apply with quantize=BITS; "
                             f"got quantize=None with {self.quantizer!r}, {self.granularity!r}, {self.quantize_steps!r}")
        if self.arch not in ("digits", "resnet34") and not self.teacher:
            raise ValueError(f"arch {self.arch!r} needs teacher=PATH (a state dict of the trained teacher)")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def key(self) -> str:
        """A stable 16-hex-digit hash of every field: equal configs give equal keys on any machine
        and Python version (canonical JSON: sorted keys, ``repr`` floats). Sweeps use it to skip
        finished runs. Float fields are compared as floats (``mu=1`` and ``mu=1.0`` share a key)."""
        values = self.to_dict()
        for name, default in _LATER_FIELDS.items():
            if values.get(name) == default:
                values.pop(name)
        if values.get("quantize") is None:  # unquantized runs keep the keys they had before quantization existed
            for name in ("quantize", "quantizer", "granularity", "quantize_steps"):
                values.pop(name, None)
        for name in _FLOAT_FIELDS:
            if isinstance(values[name], int) and not isinstance(values[name], bool):
                values[name] = float(values[name])
        return config_key(values)

    def quantization(self) -> "quantize_.Quantization | None":
        """The :class:`~xdnb.quantize.Quantization` of this run (``None`` when not quantized)."""
        if self.quantize is None:
            return None
        return quantize_.Quantization(self.quantize, self.quantizer, self.granularity, steps=self.quantize_steps)

    def replace(self, **changes) -> "RunConfig":
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes).validate()

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown RunConfig field {unknown[0]!r}; allowed: {', '.join(sorted(known))}")
        return cls(**values)


@dataclass
class Result:
    """A finished run (JSON-serialisable through :meth:`to_dict` / :meth:`to_json`).

    Accuracies are fractions in [0, 1]; ``teacher_size``/``student_size``: ``params``, ``nonzero``,
    ``flops_dense``, ``flops_effective``; ``history``: one record per layer (see
    :func:`xdnb.distill.layer_record`); ``seconds``: compression (+ fine-tuning) time,
    ``total_seconds``: the whole run; ``versions``: package versions, the device and torch's
    thread count (numbers are reproducible on the same machine with the same thread count).
    """

    config: dict
    teacher_accuracy: float
    student_accuracy: float
    teacher_size: dict
    student_size: dict
    history: list[dict]
    few_shot_indices: list[int]
    kept_channels: dict
    method_config: dict
    seconds: float
    total_seconds: float
    versions: dict
    #: the compressed network itself (not serialised; ``None`` for results read back from JSON)
    student: object = field(default=None, repr=False, compare=False)

    #: (C, H, W) of one input (absent from results stored before it existed)
    input_shape: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "student"}

    @classmethod
    def from_dict(cls, values: dict) -> "Result":
        fields = [f for f in dataclasses.fields(cls) if f.name != "student"]
        if not isinstance(values, dict):
            raise ValueError(f"a Result is read from a dict, got {type(values).__name__}")
        missing = sorted(f.name for f in fields if f.name not in values and f.default_factory is dataclasses.MISSING)
        unknown = sorted(set(values) - {f.name for f in fields})
        if missing or unknown:
            raise ValueError(f"not a Result: missing fields {missing}, unknown fields {unknown}")
        return cls(**values)

    def to_json(self) -> str:
        """One line of JSON (no NaN/inf: strict JSON that any reader accepts)."""
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "Result":
        return cls.from_dict(json.loads(text))

    @property
    def run_config(self) -> RunConfig:
        """The :class:`RunConfig` this result came from."""
        return RunConfig.from_dict(self.config)


def config_key(config: dict) -> str:
    """The stable key of a config dict (see :meth:`RunConfig.key`)."""
    text = json.dumps(config, sort_keys=True, allow_nan=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def method_label(config: RunConfig | dict) -> str:
    """A short row label: the method name, with ``mu`` for cross and ``alpha, beta`` for soft
    (``cross mu=0.6``, ``soft a=0.5 b=0.5``); defaults are spelled out so labels never hide them."""
    values = config.to_dict() if isinstance(config, RunConfig) else config
    method = values["method"]
    if method == "cross":
        mu = values.get("mu")
        return f"cross mu={objectives.DEFAULT_MU if mu is None else mu:g}"
    if method == "soft":
        return f"soft a={values['alpha']:g} b={values['beta']:g}"
    return method


def methods() -> tuple[str, ...]:
    """Every method name :func:`run` accepts: the objectives, then the baselines."""
    try:
        from .baselines import METHODS as baseline_methods
    except ImportError:  # the baselines module is optional while it is being built
        baseline_methods = ()
    return tuple(objectives.OBJECTIVES) + tuple(baseline_methods)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> a GPU when one is present, else the CPU; ``"cpu"``; ``"cuda"`` / ``"cuda:N"``
    only where CUDA works here: otherwise a ValueError saying so (not torch's error from the
    first CUDA call, deep inside a run)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
            raise ValueError(f"device {device!r}: CUDA is not available on this machine (torch {torch.__version__}, "
                             f"{built}, no usable GPU); use device 'cpu' or 'auto'")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"device {device!r}: this machine has {count} CUDA device(s), numbered 0..{count - 1}")
    return resolved


def versions() -> dict:
    import torchvision

    return {"xdnb": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version()}


@functools.lru_cache(maxsize=4)
def _test_set(spec: str, limit: int | None, input_size: int | None = None):
    dataset = data.load(spec, "test", input_size=input_size)
    indices = None
    if limit is not None and limit < len(dataset):
        indices = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:limit].sort().values.tolist()
    return data.stack(dataset, indices, desc="loading test images")


@functools.lru_cache(maxsize=4)
def _train_set(spec: str, input_size: int | None = None):
    return data.load(spec, "train", input_size=input_size)


def load_teacher(config: RunConfig):
    """The teacher of ``config`` (eval mode, CPU)."""
    return models.teacher(config.arch, checkpoint=config.teacher, num_classes=config.num_classes, stem=config.stem)


@functools.lru_cache(maxsize=4)
def _teacher_accuracy(teacher_fields: tuple, spec: str, limit: int | None, input_size: int | None, device: str) -> float:
    model = load_teacher(RunConfig(data=spec, **dict(teacher_fields))).to(device)
    x_test, y_test = _test_set(spec, limit, input_size)
    return metrics.accuracy(model, x_test, y_test)


def input_shape(config: RunConfig, images: torch.Tensor) -> tuple[int, ...]:
    return tuple(images.shape[1:])


def run(config: RunConfig, callback=None, show_progress: bool = True) -> Result:
    """Execute one run (see module docstring)."""
    config.validate()
    started = time.perf_counter()
    device = resolve_device(config.device)
    teacher = load_teacher(config).to(device)
    train = _train_set(config.data, config.input_size)
    indices = data.few_shot(train, config.k, config.seed)
    images, labels = data.stack(train, indices, desc="loading few-shot images")
    plan = config.pruning
    compress_started = time.perf_counter()
    torch.manual_seed(config.seed)
    if config.method in objectives.OBJECTIVES:
        outcome = distill.compress(
            teacher, images, config.method, mu=config.mu, alpha=config.alpha, beta=config.beta, pruning=plan,
            solver=config.solver, bn=config.bn, ridge=config.ridge, rounds=config.rounds, steps=config.steps,
            lr=config.lr, batch_size=config.batch_size, device=device, callback=callback, show_progress=show_progress,
            quantize=config.quantization(), linear=config.linear,
        )
    else:
        from . import baselines

        outcome = baselines.run(config.method, teacher, images, labels, plan, seed=config.seed, device=device,
                                batch_size=config.batch_size, callback=callback, show_progress=show_progress,
                                **config.options)
    student = outcome.student
    if config.finetune_steps:
        student = finetune(student, images, labels, steps=config.finetune_steps, masks=outcome.masks or None,
                           seed=config.seed, show_progress=show_progress)
    seconds = time.perf_counter() - compress_started
    x_test, y_test = _test_set(config.data, config.test_limit, config.input_size)
    shape = input_shape(config, images)
    teacher_fields = tuple((k, getattr(config, k)) for k in ("arch", "teacher", "num_classes", "stem"))
    return Result(
        config=config.to_dict(),
        teacher_accuracy=_teacher_accuracy(teacher_fields, config.data, config.test_limit, config.input_size, str(device)),
        student_accuracy=metrics.accuracy(student, x_test, y_test),
        teacher_size={**pruning.count_params(teacher), **{f"flops_{k}": v for k, v in pruning.count_flops(teacher, shape).items()}},
        student_size={**pruning.count_params(student), **{f"flops_{k}": v for k, v in pruning.count_flops(student, shape).items()}},
        history=outcome.history,
        few_shot_indices=list(indices),
        kept_channels=outcome.kept_channels,
        method_config=outcome.config,
        seconds=seconds,
        total_seconds=time.perf_counter() - started,
        versions={**versions(), "device": str(device), "threads": torch.get_num_threads()},
        student=student.cpu().eval(),
        input_shape=list(shape),
    )
