"""Networks, checkpoints and teachers.

- :func:`vgg` builds the "network-slimming" VGG of docs/method.md ("Networks") from a channel
  list (state-dict keys ``feature.N.*`` and ``classifier.N.*``, so the reference code's
  checkpoints load unchanged);
  :data:`VGG16_CFG` is VGG-16 for CIFAR-10 and :func:`digits_net` the small default for digits.
- :func:`build` makes any supported architecture from a name: ``digits``, ``vgg16``, any
  torchvision classification model (``torchvision:resnet50``; ``stem="cifar"`` gives a ResNet the
  CIFAR stem of the shared ResNet-18 teacher) or a user's constructor ``package.module:function``;
- :func:`resnet34` is torchvision's ResNet-34, optionally with its ImageNet weights.
- :func:`load_checkpoint` loads a state dict with ``weights_only=True`` and explains mismatches.
- :func:`save_student` / :func:`load_student` store any compressed network safely: its state dict,
  how to build the full-width model (:func:`build`'s arguments), the kept input channels of each
  pruned layer (the model is rebuilt and narrowed on load) and the input shape and normalisation
  it expects; nothing needs pickled modules.
- :func:`teacher` loads a cached teacher or trains it (digits) and caches it.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from . import atomic, checks
from .progress import progress

#: VGG-16 for CIFAR-10: 13 conv3x3 layers, 'M' = 2x2 max-pool.
VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
#: The digits default: 6 conv layers on 8x8 inputs (8 -> 4 -> 2, then the 2x2 average pool).
DIGITS_CFG = [32, 32, "M", 64, 64, "M", 128, 128]
DIGITS_HIDDEN = 128

#: Environment variable overriding the default cache folder ``~/.cache/xdnb``.
CACHE_ENV = "XDNB_CACHE"


class VGG(nn.Module):
    """Network-slimming VGG: ``feature`` (Conv(no bias)/BN/ReLU, 'M' = MaxPool 2x2), then
    AvgPool2d(2), flatten, ``classifier`` = Linear(c, hidden), BN1d, ReLU, Linear(hidden, classes).

    Input: (N, in_channels, H, W) with H, W such that the last feature map is 2x2 after the
    max-pools (32 for VGG-16 on CIFAR, 8 for the digits default). Output: (N, num_classes) logits.
    """

    def __init__(self, cfg: Sequence, num_classes: int = 10, in_channels: int = 3, hidden: int = 512):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            if not isinstance(item, int) or item < 1:
                raise ValueError(f"cfg entries must be positive ints or 'M', got {item!r} in {list(cfg)}")
            layers += [nn.Conv2d(channels, item, 3, padding=1, bias=False), nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
            channels = item
        self.feature = nn.Sequential(*layers)
        self.pool = nn.AvgPool2d(2)
        self.classifier = nn.Sequential(
            nn.Linear(channels, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes)
        )
        self.in_channels, self.num_classes, self.hidden = in_channels, num_classes, hidden

    @property
    def cfg(self) -> list:
        """The channel list of the network as it is now (pruned widths included)."""
        return ["M" if isinstance(m, nn.MaxPool2d) else m.out_channels for m in self.feature if isinstance(m, (nn.Conv2d, nn.MaxPool2d))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.feature(x))
        return self.classifier(torch.flatten(x, 1))


def vgg(cfg: Sequence = VGG16_CFG, num_classes: int = 10, in_channels: int = 3, hidden: int = 512) -> VGG:
    """A network-slimming VGG from a channel list (see :class:`VGG`)."""
    return VGG(cfg, num_classes, in_channels, hidden)


def digits_net() -> VGG:
    """The small default for the 8x8 digits: 6 convs (32, 32 | 64, 64 | 128, 128), ~0.3 M params."""
    return VGG(DIGITS_CFG, num_classes=10, in_channels=1, hidden=DIGITS_HIDDEN)


def resnet34(weights: str | None = None, num_classes: int = 1000) -> nn.Module:
    """torchvision's ResNet-34; ``weights="imagenet"`` loads the torchvision ImageNet weights
    (73.3 % top-1), downloading them once into torch's hub cache (``$TORCH_HOME``)."""
    from torchvision.models import ResNet34_Weights
    from torchvision.models import resnet34 as tv_resnet34

    if weights not in (None, "imagenet"):
        raise ValueError(f"weights must be None or 'imagenet', got {weights!r}")
    model = tv_resnet34(weights=None, num_classes=num_classes)
    if weights == "imagenet":
        if num_classes != 1000:
            raise ValueError(f"ImageNet weights have 1000 classes, not num_classes={num_classes}")
        url = ResNet34_Weights.IMAGENET1K_V1.url
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), hash_prefix=path.stem.split("-")[-1])
        load_checkpoint(model, path)
    return model


def _unwrap_state_dict(obj) -> dict:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError("checkpoint is not a state dict of tensors (or a dict with a 'state_dict' entry)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def _read(path: Path, what: str):
    """``torch.load(path, weights_only=True)`` on the CPU. A file torch cannot read (truncated,
    corrupt, empty, not a torch file, or holding pickled objects other than tensors and plain
    containers) raises :class:`ValueError` naming the file and the problem in one line, instead
    of torch's zip-reader or unpickling error."""
    import pickle
    import zipfile

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, UnicodeDecodeError, AttributeError,
            ImportError, IndexError, KeyError, TypeError, ValueError) as error:
        size = path.stat().st_size
        text = str(error)
        if isinstance(error, pickle.UnpicklingError):  # keep torch's reason, not its paragraph of advice
            found = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\s*\n|Check the documentation|$)", text, re.S)
            detail = " ".join(found.group(1).split()) if found else ""
        else:
            detail = " ".join(text.split()).split(". ")[0]
        detail = detail.rstrip(".")[:160]
        if size == 0 or isinstance(error, EOFError):
            problem = "it is empty or cut short"
        elif isinstance(error, pickle.UnpicklingError):
            problem = ("it is not a torch file, or it holds pickled objects other than tensors "
                       "(xdnb loads with weights_only=True)")
        else:
            problem = "it is truncated or corrupt"
        raise ValueError(f"cannot read {what} {path} ({size:,} bytes): {problem}"
                         + (f" [torch: {type(error).__name__}: {detail}]" if detail else "")) from error


def load_checkpoint(model: nn.Module, path_or_state) -> nn.Module:
    """Load a checkpoint into ``model`` (in place) and return it.

    Reads files with ``torch.load(..., weights_only=True)``; accepts a plain state dict or one
    wrapped as ``{"state_dict": ...}``; strips a ``module.`` (DataParallel) prefix. A missing or
    unexpected key or a shape mismatch raises :class:`ValueError` naming the first offending key
    (and both shapes). ``num_batches_tracked`` buffers may be absent (older checkpoints).
    """
    if isinstance(path_or_state, (str, Path)):
        path = Path(path_or_state).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} " + ("is a folder, not a file" if path.is_dir() else "does not exist"))
        state = _read(path, "checkpoint")
    else:
        state = path_or_state
    state = _unwrap_state_dict(state)
    expected = model.state_dict()
    for key, value in expected.items():
        if key not in state:
            if key.endswith("num_batches_tracked"):
                state[key] = value.clone()
                continue
            raise ValueError(f"checkpoint lacks key {key!r} (expected shape {tuple(value.shape)})")
        if state[key].shape != value.shape:
            raise ValueError(
                f"shape mismatch at {key!r}: checkpoint has {tuple(state[key].shape)}, model expects {tuple(value.shape)}"
            )
    for key in state:
        if key not in expected:
            raise ValueError(f"checkpoint has unexpected key {key!r} (shape {tuple(state[key].shape)})")
    model.load_state_dict(state)
    return model


STEMS = (None, "cifar")
#: Architecture names :func:`build` understands (plus ``torchvision:NAME`` and ``package.module:function``).
ARCHS = ("digits", "vgg16", "resnet34")
STUDENT_FORMAT = "xdnb-student"


def _constructor(arch: str):
    """The callable behind a ``torchvision:NAME`` or ``package.module:function`` architecture."""
    import importlib

    source, _, attribute = arch.partition(":")
    if source == "torchvision":
        import torchvision

        if attribute not in torchvision.models.list_models(module=torchvision.models):
            raise ValueError(f"torchvision has no classification model {attribute!r} (see torchvision.models.list_models())")
        return functools.partial(torchvision.models.get_model, attribute, weights=None)
    if not source or not attribute:
        raise ValueError(f"unknown architecture {arch!r}; allowed: {', '.join(ARCHS)}, torchvision:NAME or package.module:function")
    try:
        module = importlib.import_module(source)
    except ImportError as error:
        raise ValueError(f"cannot import {source!r} for architecture {arch!r}: {error}") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ValueError(f"{source!r} has no callable {attribute!r} (architecture {arch!r})")
    return function


def build(arch: str, num_classes: int | None = None, stem: str | None = None) -> nn.Module:
    """A network with random weights (eval mode) from an architecture name (see module docstring).

    ``num_classes``: passed to the constructor when given (``digits`` and ``vgg16`` have 10).
    ``stem="cifar"``: for a torchvision ResNet, ``conv1`` becomes a 3×3 stride-1 conv (the
    max-pool is kept), exactly the shared ResNet-18 CIFAR-10 teacher; a state dict would load
    into the wrong stem too (the shapes match), so this must be chosen explicitly.
    """
    if not isinstance(arch, str) or not arch:
        raise ValueError(f"arch must be a name such as 'digits', 'vgg16', 'torchvision:resnet18' or 'pkg.mod:fn', got {arch!r}")
    if stem not in STEMS:
        raise ValueError(f"stem must be None or 'cifar', got {stem!r}")
    checks.integer("num_classes", num_classes, low=1, optional=True)
    if arch in ("digits", "vgg16"):
        if num_classes not in (None, 10) or stem is not None:
            raise ValueError(f"arch {arch!r} has 10 classes and its own stem; leave num_classes and stem unset")
        return (digits_net() if arch == "digits" else vgg(VGG16_CFG)).eval()
    if arch == "resnet34":
        arch = "torchvision:resnet34"
    function = _constructor(arch)
    model = function(num_classes=num_classes) if num_classes is not None else function()
    if not isinstance(model, nn.Module):
        raise ValueError(f"{arch} returned a {type(model).__name__}, not an nn.Module")
    if stem == "cifar":
        from torchvision.models import ResNet

        if not isinstance(model, ResNet):
            raise ValueError(f"stem 'cifar' applies to torchvision ResNets; {arch} is a {type(model).__name__}")
        model.conv1 = nn.Conv2d(3, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    return model.eval()


def builder(arch: str, num_classes: int | None = None, stem: str | None = None) -> dict:
    """:func:`build`'s arguments as a JSON-able dict (what a saved student records)."""
    return {"arch": arch, "num_classes": num_classes, "stem": stem}


def save_student(student: nn.Module, path: str | Path, *, build_args: dict, input_shape, kept_channels: dict | None = None,
                 normalization: dict | None = None, meta: dict | None = None) -> Path:
    """Save a compressed ``student`` atomically in a ``weights_only`` format.

    ``build_args``: :func:`builder`'s dict for the *full-width* model; ``kept_channels``: site ->
    kept input channels (teacher numbering) of every pruned layer; ``input_shape``: (C, H, W) it
    expects; ``normalization``: ``{"mean": [...], "std": [...]}`` applied to [0, 1] images (or
    ``None``: inputs as the dataset gives them); ``meta``: JSON-like extras (the run, accuracy…).
    """
    path = Path(path).expanduser()
    payload = {
        "format": STUDENT_FORMAT, "version": 1, "build": dict(build_args),
        "kept_channels": {k: [int(i) for i in v] for k, v in (kept_channels or {}).items()},
        "input_shape": [int(v) for v in input_shape], "normalization": normalization,
        "state_dict": student.state_dict(), "meta": json.loads(json.dumps(meta or {}, default=str)),  # plain JSON types only
    }
    atomic.replace_with(path, lambda temporary: torch.save(payload, temporary))
    return path


def read_student_file(path: str | Path) -> dict:
    """The raw contents of a file written by :func:`save_student` (ValueError for anything else)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"student file {path} " + ("is a folder, not a file" if path.is_dir() else "does not exist"))
    saved = _read(path, "student file")
    if not isinstance(saved, dict) or saved.get("format") != STUDENT_FORMAT:
        raise ValueError(f"{path} was not written by xdnb.models.save_student (xdnb compress --out); "
                         "for a plain state dict use xdnb.models.load_checkpoint")
    return saved


def load_student(path: str | Path) -> tuple[nn.Module, dict]:
    """Load a student saved by :func:`save_student`: the full-width model is rebuilt with
    :func:`build`, narrowed to the kept channels, and given the saved weights. Returns ``(model
    in eval mode, info)`` with ``info`` = ``build``, ``kept_channels``, ``input_shape``,
    ``normalization``, ``meta``."""
    from .pruning import remove_channels

    saved = read_student_file(path)
    model = build(**saved["build"])
    shape = tuple(saved["input_shape"])
    remove_channels(model, saved["kept_channels"], shape)
    load_checkpoint(model, saved["state_dict"])
    info = {k: saved[k] for k in ("build", "kept_channels", "normalization", "meta")}
    return model.eval(), {**info, "input_shape": shape}


def load_model(path: str | Path) -> nn.Module:
    """The network of a student file (:func:`load_student` without the description)."""
    return load_student(path)[0]


def cache_root(override: str | Path | None = None) -> Path:
    """The cache folder: ``override``, else ``$XDNB_CACHE``, else ``~/.cache/xdnb``."""
    if override is not None:
        return Path(override).expanduser()
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "xdnb").expanduser()


def train_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int, seed: int,
                     lr: float = 3e-3, batch_size: int = 64, weight_decay: float = 5e-4,
                     desc: str = "training") -> nn.Module:
    """Train ``model`` with Adam + cosine schedule on in-memory ``images`` (N, C, H, W) and
    ``labels`` (N,). Deterministic for a fixed seed and thread count."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * ((len(images) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    model.train()
    for _ in progress(range(epochs), desc=desc):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch_size):
            batch = order[start:start + batch_size]
            if len(batch) < 2:  # BatchNorm needs two samples
                continue
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


DIGITS_TEACHER_EPOCHS = 30


def teacher(name: str = "digits", seed: int = 0, cache_dir: str | Path | None = None,
            checkpoint: str | Path | None = None, num_classes: int | None = None, stem: str | None = None) -> nn.Module:
    """A trained teacher in eval mode.

    - ``"digits"``: :func:`digits_net` trained on the digits train split (seeded), cached as
      ``<cache>/teachers/digits-seed<seed>.pt`` and loaded from there afterwards;
    - ``"resnet34"`` without ``checkpoint``: torchvision's ImageNet ResNet-34;
    - any other architecture of :func:`build` (``vgg16``, ``torchvision:resnet18``,
      ``pkg.mod:fn``, with ``num_classes`` and ``stem``): built, then ``checkpoint`` (a state
      dict, read with ``weights_only=True``) loaded into it.
    """
    checks.integer("seed", seed, low=0)
    if name == "resnet34" and checkpoint is None and stem is None and num_classes in (None, 1000):
        return resnet34("imagenet").eval()
    if name != "digits":
        model = build(name, num_classes, stem)
        if checkpoint is None:
            raise ValueError(f"the {name} teacher needs checkpoint=PATH (CLI: --teacher PATH), a state dict of its trained weights")
        return load_checkpoint(model, checkpoint).eval()
    if num_classes not in (None, 10) or stem is not None:
        raise ValueError("the digits teacher has 10 classes and its own stem; leave num_classes and stem unset")
    if checkpoint is not None:
        return load_checkpoint(digits_net(), checkpoint).eval()
    path = cache_root(cache_dir) / "teachers" / f"digits-seed{seed}.pt"
    if path.exists():
        return load_checkpoint(digits_net(), path).eval()
    train_digits_teacher(seed, path)
    return load_checkpoint(digits_net(), path).eval()


#: The environment the digits teacher is trained in: torch's CPU kernels pick different code paths
#: (and give different weights) under ``OMP_NUM_THREADS=1`` than under ``torch.set_num_threads(1)``
#: alone, so training runs in a child process with these set, whatever the caller's environment.
TRAINING_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def train_digits_teacher(seed: int, path: str | Path) -> None:
    """Train the digits teacher for ``seed`` and save its state dict to ``path``, in a child
    process with :data:`TRAINING_ENV` (the same weights from a shell, a notebook kernel or a test)."""
    import subprocess
    import sys

    code = "import sys; from xdnb.models import _train_digits_teacher_here; _train_digits_teacher_here(int(sys.argv[1]), sys.argv[2])"
    env = {**os.environ, **TRAINING_ENV}
    Path(path).parent.mkdir(parents=True, exist_ok=True)  # an unusable cache folder fails here, in one line
    completed = subprocess.run([sys.executable, "-c", code, str(seed), str(path)], env=env)
    if completed.returncode != 0 or not Path(path).exists():
        raise RuntimeError(f"training the digits teacher (seed {seed}) failed in its child process (exit {completed.returncode})")


def _train_digits_teacher_here(seed: int, path: str) -> None:
    from .data import digits, stack

    images, labels = stack(digits("train"))
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = digits_net()
    train_classifier(model, images, labels, DIGITS_TEACHER_EPOCHS, seed, desc="training digits teacher")
    atomic.replace_with(path, lambda temporary: torch.save(model.state_dict(), temporary))
