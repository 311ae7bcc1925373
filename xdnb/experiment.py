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
import platform
import re
import time
from dataclasses import dataclass, field

import torch

from . import __version__, baselines, checks, data, distill, methods, metrics, models, objectives, size
from . import global_stage as global_stage_
from . import quantize as quantize_
from . import views as views_
from .finetune import finetune
from .solvers import DEFAULT_RIDGE, DEFAULT_ROUNDS, REFERENCE_LR, REFERENCE_STEPS

#: Optional features at their "off" value: left out of a run's key (see :meth:`RunConfig.decisive`).
_OFF = {"num_classes": None, "stem": None, "input_size": None, "linear": False, "views": 1, "global_stage": None}
_FLOAT_FIELDS = ("mu", "alpha", "beta", "ridge", "lr", "global_lr", "temperature")
#: The global stage's settings (objectives only), left out of a key while ``global_stage`` is None.
GLOBAL_FIELDS = ("global_steps", "global_lr", "temperature")
_QUANTIZE_DEFAULTS = ("ste", "channel", quantize_.DEFAULT_STEPS)
#: The engine's settings (objectives only; a baseline reads ``options``).
ENGINE_FIELDS = ("solver", "bn", "ridge", "rounds", "steps", "lr")
QUANTIZE_FIELDS = ("quantizer", "granularity", "quantize_steps")


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
    used are recorded in ``Result.method_config``. ``views``: label-free views per K-shot image
    for the layer-wise fit and BN re-estimation, the original included, with the augmentations
    ``augment`` (:func:`xdnb.views.make_views`, drawn with ``seed``); 1 = the paper's protocol and
    ``augment`` unused; every method but the data-free l1-norm (:data:`xdnb.views.RECOMMENDED`
    names the setting chosen on digits validation images). ``global_stage``: ``None`` (the paper's
    protocol), ``"kd"`` or ``"mir"`` after the layer-wise fit (:mod:`xdnb.global_stage`), with
    ``global_steps``, ``global_lr`` and ``kd``'s ``temperature``; objectives only (the ``kd`` and
    ``mir`` baselines run it from the L1-norm student).
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
    #: label-free views per K-shot image (:mod:`xdnb.views`); 1 = the paper's protocol
    views: int = 1
    augment: str = views_.DEFAULT_AUGMENT
    #: a label-free end-to-end stage after the layer-wise fit (:mod:`xdnb.global_stage`); None = none
    global_stage: str | None = None
    global_steps: int = global_stage_.DEFAULT_STEPS
    global_lr: float = global_stage_.DEFAULT_LR
    temperature: float = global_stage_.DEFAULT_TEMPERATURE

    def validate(self) -> "RunConfig":
        """Raise ValueError on a bad field (naming it and what is allowed); return self."""
        checks.text("data", self.data, "'digits' or 'cifar10-folder:ROOT'")
        if not isinstance(self.arch, str) or not (self.arch in models.ARCHS or ":" in self.arch):
            raise ValueError(f"arch must be one of {', '.join(models.ARCHS)}, torchvision:NAME or package.module:function, "
                             f"got {self.arch!r}")
        checks.choice("stem", self.stem, [s for s in models.STEMS if s is not None], optional=True)
        checks.flag("linear", self.linear)
        methods.params_of(self.method, self.mu, self.alpha, self.beta)
        if self.pruning is not None and not isinstance(self.pruning, str):
            raise ValueError(f"pruning must be a spec string (e.g. 'keep:0.5', 'VGG-A', 'sparse:0.9') or None, got {self.pruning!r}")
        checks.integer("k", self.k, low=1)
        checks.integer("seed", self.seed, low=0)
        checks.integer("finetune_steps", self.finetune_steps, low=0)
        for name in ("batch_size", "test_limit", "num_classes", "input_size"):
            checks.integer(name, getattr(self, name), low=1, optional=True)
        checks.json_dict("options", self.options)
        checks.integer("views", self.views, low=1)
        views_.parse_augment(self.augment)
        if self.views == 1 and self.augment != _DEFAULTS["augment"]:
            raise ValueError(f"augment only applies with views > 1; got views=1 with augment={self.augment!r}")
        if self.views > 1 and self.method == "l1-norm":
            raise ValueError(f"l1-norm uses no data, so views do not apply to it; leave views=1 (got {self.views!r})")
        if "views" in self.options or "augment" in self.options:
            raise ValueError(f"views and augment are RunConfig fields (views=..., augment=...), not options; "
                             f"got options={self.options!r}")
        if self.global_stage == "none":
            raise ValueError("global_stage takes None for no stage (the CLI's 'none'), 'kd' or 'mir'; got 'none'")
        checks.choice("global_stage", self.global_stage, global_stage_.STAGES, optional=True)
        if self.global_stage is None and any(getattr(self, f) != _DEFAULTS[f] for f in GLOBAL_FIELDS):
            changed = next(f for f in GLOBAL_FIELDS if getattr(self, f) != _DEFAULTS[f])
            raise ValueError(f"{changed} only applies with global_stage='kd' or 'mir'; got global_stage=None "
                             f"with {changed}={getattr(self, changed)!r}")
        if not isinstance(self.device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.method in objectives.OBJECTIVES:
            if self.options:
                raise ValueError(f"options are the baselines' settings; the objective {self.method!r} takes the fields "
                                 f"solver, bn, ridge, rounds, steps, lr (got options={self.options!r})")
            if self.quantize is None and (self.quantizer, self.granularity, self.quantize_steps) != _QUANTIZE_DEFAULTS:
                raise ValueError("quantizer, granularity and quantize_steps only apply with quantize=BITS; "
                                 f"got quantize=None with {self.quantizer!r}, {self.granularity!r}, {self.quantize_steps!r}")
            self.quantization()
            for name in ("ridge", "lr"):
                checks.number(name, getattr(self, name), low=0)
            for name, low in (("rounds", 0), ("steps", 1)):
                checks.integer(name, getattr(self, name), low=low)
            self.method_options()
        else:
            if self.quantize is not None:
                raise ValueError(f"quantize applies to the distillation objectives ({', '.join(objectives.OBJECTIVES)}), "
                                 f"not the baseline {self.method!r}; leave quantize=None")
            if self.global_stage is not None:
                raise ValueError(f"global_stage runs after the objectives' layer-wise fit, not after the baseline "
                                 f"{self.method!r}; for L1-norm then {self.global_stage}, use method={self.global_stage!r}")
            changed = [f for f in ENGINE_FIELDS + QUANTIZE_FIELDS + ("linear",) if getattr(self, f) != _DEFAULTS[f]]
            if changed:
                raise ValueError(f"{changed[0]} is the engine's setting and applies to the objectives only; the baseline "
                                 f"{self.method!r} reads its settings from options (e.g. options={{'bn': 'keep'}}; "
                                 f"allowed: {', '.join(baselines.DEFAULTS[self.method]) or 'none'})")
            self.method_options()
        if self.arch not in ("digits", "resnet34") and not self.teacher:
            raise ValueError(f"arch {self.arch!r} needs teacher=PATH (a state dict of the trained teacher)")
        return self

    def method_options(self):
        """The typed options of this run's method (:func:`xdnb.methods.options_for`): for an
        objective the engine's settings its solver reads, for a baseline its ``options``."""
        if self.method in objectives.OBJECTIVES:
            stage = None if self.global_stage is None else global_stage_.GlobalStage(
                self.global_stage, self.global_steps, self.global_lr, self.temperature)
            return distill.EngineOptions.from_settings(self.solver, self.bn, self.linear, self.quantization(), strict=False,
                                                       views=self.views, augment=self.augment, global_stage=stage,
                                                       **{name: getattr(self, name) for name in distill.ENGINE_SETTINGS})
        views = {"views": self.views, "augment": self.augment} if self.views > 1 else {}
        return methods.options_for(self.method, {**self.options, **views})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def decisive(self) -> dict:
        """The fields that decide this run's numbers: every field except the engine settings its
        method does not read (a baseline reads none of solver, bn, ridge, rounds, steps, lr; lstsq
        does not read steps or lr, ...), the quantization fields of an unquantized run, and the
        optional features while they are off (``num_classes``, ``stem``, ``input_size`` None,
        ``linear`` False, ``views`` 1 and then ``augment`` too: a field added later at its off
        value leaves earlier keys unchanged). ``augment`` is hashed in its canonical spelling."""
        values = self.to_dict()
        for name, off in _OFF.items():
            if values.get(name) == off:
                values.pop(name)
        _augment_decisive(values)
        _global_decisive(values)
        if values.get("quantize") is None:
            for name in QUANTIZE_FIELDS:
                values.pop(name, None)
        if self.method in objectives.OBJECTIVES:
            reads = set(distill.solver_fields(self.solver)) | ({"ridge"} if self.quantize is not None else set())
            for name in set(distill.ENGINE_SETTINGS) - reads:
                values.pop(name)
            values.pop("options")
        else:
            for name in ENGINE_FIELDS:
                values.pop(name)
        for name in _FLOAT_FIELDS:
            if name in values and isinstance(values[name], int) and not isinstance(values[name], bool):
                values[name] = float(values[name])
        return values

    def key(self) -> str:
        """A stable 16-hex-digit hash of :meth:`decisive`: equal configs give equal keys on any
        machine and Python version (canonical JSON: sorted keys, ``repr`` floats), and two configs
        that differ only in a setting their method ignores share a key. Sweeps use it to skip
        finished runs. Float fields are compared as floats (``mu=1`` and ``mu=1.0`` share a key)."""
        return config_key(self.decisive())

    def legacy_key(self) -> str:
        """The key this config had in stores written before keys left out the settings a method
        ignores (every field hashed, except the optional features and quantization when off).
        :class:`xdnb.sweep.ResultStore` reads such lines under their new :meth:`key`."""
        values = self.to_dict()
        for name, off in _OFF.items():
            if name not in ("quantize",) and values.get(name) == off:
                values.pop(name)
        _augment_decisive(values)
        _global_decisive(values)
        if values.get("quantize") is None:
            for name in ("quantize",) + QUANTIZE_FIELDS:
                values.pop(name, None)
        for name in _FLOAT_FIELDS:
            if isinstance(values.get(name), int) and not isinstance(values[name], bool):
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


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig) if f.default is not dataclasses.MISSING}


def _global_decisive(values: dict) -> None:
    """In place: drop the global stage's settings when there is none, and mir's unread temperature."""
    stage = values.get("global_stage")
    for name in GLOBAL_FIELDS:
        if stage is None or (name == "temperature" and stage == "mir"):
            values.pop(name, None)


def _augment_decisive(values: dict) -> None:
    """In place: drop ``augment`` when there are no extra views, else spell it canonically."""
    if values.get("views", 1) == 1:
        values.pop("augment", None)
    elif "augment" in values:
        values["augment"] = views_.canonical_augment(values["augment"])


@dataclass
class Result:
    """A finished run (JSON-serialisable through :meth:`to_dict` / :meth:`to_json`).

    Accuracies are fractions in [0, 1]; ``teacher_size``/``student_size``: ``params``, ``nonzero``,
    ``flops_dense``, ``flops_effective``; ``history``: one record per layer (see
    :func:`xdnb.metrics.layer_record`); ``seconds``: compression (+ fine-tuning) time,
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
    """A run's row label, :func:`xdnb.methods.label` of its method and parameters
    (``cross(mu=0.6)``, ``soft(alpha=0.5, beta=0.5)``, ``fskd``), followed by its views only when
    it fits on more than one view per image (``cross(mu=0.6) + 4 views (flip)``): runs of the
    paper's protocol (``views`` 1, or results stored before views existed) keep their label; then
    its global stage, if any (``... + kd (50 steps, lr 1e-05)``), so runs with and without one never
    share a row."""
    values = config.to_dict() if isinstance(config, RunConfig) else config
    label = methods.label(values["method"], values)
    count = values.get("views", 1)
    if count > 1:
        label += f" + {count} views ({views_.canonical_augment(values.get('augment', views_.DEFAULT_AUGMENT))})"
    if values.get("global_stage"):
        label += f" + {values['global_stage']} ({values['global_steps']} steps, lr {values['global_lr']:g})"
    return label


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


#: Test sets up to this many bytes of decoded images are held in memory between the runs of one
#: process (CIFAR-10's 10 000 images: 123 MB); larger ones (ImageNet's validation set: ~30 GB) are
#: decoded batch by batch at every evaluation. Both give the same numbers (the same batches of 100).
IN_MEMORY_BYTES = 1 << 29


@functools.lru_cache(maxsize=4)
def _test_set(spec: str, limit: int | None, input_size: int | None = None):
    """The evaluation images of a run: the test split, or a seeded subset of ``limit`` of them;
    decoded into memory when small (:data:`IN_MEMORY_BYTES`), else a dataset streamed in batches."""
    dataset = data.load(spec, "test", input_size=input_size)
    indices = None
    if limit is not None and limit < len(dataset):
        indices = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:limit].sort().values.tolist()
    count = len(dataset) if indices is None else len(indices)
    image = dataset[0][0]
    if count * image.numel() * image.element_size() <= IN_MEMORY_BYTES:
        return data.stack(dataset, indices, desc="loading test images")
    return dataset if indices is None else torch.utils.data.Subset(dataset, indices)


def evaluate(model, test_set) -> float:
    """Top-1 accuracy of ``model`` on :func:`_test_set`'s in-memory ``(images, labels)`` or streamed dataset."""
    if isinstance(test_set, tuple):
        return metrics.accuracy(model, *test_set)
    return metrics.accuracy_on(model, test_set)


@functools.lru_cache(maxsize=4)
def _train_set(spec: str, input_size: int | None = None):
    return data.load(spec, "train", input_size=input_size)


def load_teacher(config: RunConfig):
    """The teacher of ``config`` (eval mode, CPU)."""
    return models.teacher(config.arch, checkpoint=config.teacher, num_classes=config.num_classes, stem=config.stem)


@functools.lru_cache(maxsize=4)
def _teacher_accuracy(teacher_fields: tuple, spec: str, limit: int | None, input_size: int | None, device: str) -> float:
    model = load_teacher(RunConfig(data=spec, **dict(teacher_fields))).to(device)
    return evaluate(model, _test_set(spec, limit, input_size))


def run(config: RunConfig, callback=None, show_progress: bool = True) -> Result:
    """Execute one run (see module docstring)."""
    config.validate()
    started = time.perf_counter()
    device = resolve_device(config.device)
    teacher = load_teacher(config).to(device)
    train = _train_set(config.data, config.input_size)
    indices = data.few_shot(train, config.k, config.seed)
    images, labels = data.stack(train, indices, desc="loading few-shot images")
    compress_started = time.perf_counter()
    torch.manual_seed(config.seed)
    outcome = methods.compress(config.method, teacher, images, labels, pruning=config.pruning, mu=config.mu,
                               alpha=config.alpha, beta=config.beta, options=config.method_options(), seed=config.seed,
                               device=device, batch_size=config.batch_size, callback=callback, show_progress=show_progress)
    student = outcome.student
    if config.finetune_steps:
        student = finetune(student, images, labels, steps=config.finetune_steps, masks=outcome.masks or None,
                           seed=config.seed, show_progress=show_progress)
    seconds = time.perf_counter() - compress_started
    shape = tuple(images.shape[1:])
    teacher_fields = tuple((k, getattr(config, k)) for k in ("arch", "teacher", "num_classes", "stem"))
    return Result(
        config=config.to_dict(),
        teacher_accuracy=_teacher_accuracy(teacher_fields, config.data, config.test_limit, config.input_size, str(device)),
        student_accuracy=evaluate(student, _test_set(config.data, config.test_limit, config.input_size)),
        teacher_size=size.measure(teacher, shape),
        student_size=size.measure(student, shape),
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
