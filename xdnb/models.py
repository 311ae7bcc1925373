"""Networks, checkpoints and teachers.

- :func:`vgg` builds the "network-slimming" VGG of METHOD.md from a channel list (state-dict keys
  ``feature.N.*`` and ``classifier.N.*``, so the reference code's checkpoints load unchanged);
  :data:`VGG16_CFG` is VGG-16 for CIFAR-10 and :func:`digits_net` the small default for digits.
- :func:`resnet34` is torchvision's ResNet-34, optionally with its ImageNet weights.
- :func:`load_checkpoint` loads a state dict with ``weights_only=True`` and explains mismatches.
- :func:`save_model` / :func:`load_model` store any (possibly pruned, smaller) network with the
  description needed to rebuild it.
- :func:`teacher` loads a cached teacher or trains it (digits) and caches it.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

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


def model_spec(model: nn.Module) -> dict:
    """A JSON-able description from which :func:`build_model` rebuilds the full-width network."""
    if isinstance(model, VGG):
        return {"arch": "vgg", "cfg": model.cfg, "num_classes": model.num_classes, "in_channels": model.in_channels, "hidden": model.hidden}
    from torchvision.models import ResNet

    if isinstance(model, ResNet) and [len(s) for s in (model.layer1, model.layer2, model.layer3, model.layer4)] == [3, 4, 6, 3]:
        return {"arch": "resnet34", "num_classes": model.fc.out_features}
    raise ValueError(f"no spec for model type {type(model).__name__}; supported: VGG, ResNet-34")


def build_model(spec: dict) -> nn.Module:
    """Build a network (random weights) from :func:`model_spec`'s description."""
    if spec.get("arch") == "vgg":
        return vgg(spec["cfg"], spec["num_classes"], spec["in_channels"], spec["hidden"])
    if spec.get("arch") == "resnet34":
        return resnet34(None, spec["num_classes"])
    raise ValueError(f"unknown arch in spec {spec!r}; allowed: 'vgg', 'resnet34'")


def _atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_model(model: nn.Module, path: str | Path, **meta) -> Path:
    """Save ``model`` (weights + :func:`model_spec`) atomically; ``meta`` values must be JSON-like."""
    path = Path(path).expanduser()
    _atomic_save({"spec": model_spec(model), "state_dict": model.state_dict(), "meta": meta}, path)
    return path


def _resize_modules_to(model: nn.Module, state: dict) -> None:
    """Replace Conv2d / BatchNorm / Linear modules whose shapes differ from ``state`` by modules of
    the checkpoint's shapes (a physically pruned network has narrower layers than its spec)."""
    for name, module in list(model.named_modules()):
        key = f"{name}.weight"
        if key not in state or state[key].shape == module.weight.shape:
            continue
        shape = state[key].shape
        if isinstance(module, nn.Conv2d):
            new = nn.Conv2d(shape[1] * module.groups, shape[0], module.kernel_size, module.stride, module.padding,
                            module.dilation, module.groups, module.bias is not None)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            new = type(module)(shape[0], module.eps, module.momentum, module.affine, module.track_running_stats)
        elif isinstance(module, nn.Linear):
            new = nn.Linear(shape[1], shape[0], module.bias is not None)
        else:
            raise ValueError(f"cannot resize module {name!r} of type {type(module).__name__}")
        parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        setattr(parent, name.rpartition(".")[2], new)


def load_model(path: str | Path) -> nn.Module:
    """Load a network saved by :func:`save_model`, rebuilding pruned (narrower) layers."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} " + ("is a folder, not a file" if path.is_dir() else "does not exist"))
    saved = _read(path, "model file")
    if not isinstance(saved, dict) or "spec" not in saved:
        raise ValueError(f"{path} was not written by xdnb.models.save_model (no 'spec'); use load_checkpoint")
    model = build_model(saved["spec"])
    _resize_modules_to(model, saved["state_dict"])
    return load_checkpoint(model, saved["state_dict"]).eval()


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


TEACHERS = ("digits", "vgg16", "resnet34")
DIGITS_TEACHER_EPOCHS = 30


def teacher(name: str = "digits", seed: int = 0, cache_dir: str | Path | None = None,
            checkpoint: str | Path | None = None) -> nn.Module:
    """A trained teacher in eval mode.

    - ``"digits"``: :func:`digits_net` trained on the digits train split (seeded), cached as
      ``<cache>/teachers/digits-seed<seed>.pt`` and loaded from there afterwards;
    - ``"vgg16"``: VGG-16 for CIFAR-10 from ``checkpoint`` (e.g. the network-slimming checkpoint);
    - ``"resnet34"``: torchvision's ImageNet ResNet-34 (or ``checkpoint`` if given).
    """
    if name not in TEACHERS:
        raise ValueError(f"unknown teacher {name!r}; allowed: {', '.join(TEACHERS)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if name == "vgg16":
        if checkpoint is None:
            raise ValueError("the vgg16 teacher needs checkpoint=PATH (a network-slimming VGG-16 state dict)")
        return load_checkpoint(vgg(VGG16_CFG), checkpoint).eval()
    if name == "resnet34":
        return (load_checkpoint(resnet34(), checkpoint) if checkpoint else resnet34("imagenet")).eval()
    if checkpoint is not None:
        return load_checkpoint(digits_net(), checkpoint).eval()
    path = cache_root(cache_dir) / "teachers" / f"digits-seed{seed}.pt"
    if path.exists():
        return load_checkpoint(digits_net(), path).eval()
    from .data import digits, stack

    images, labels = stack(digits("train"))
    threads = torch.get_num_threads()
    # one thread and a forked RNG: the same weights whatever the caller's thread count or RNG state
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = digits_net()
            train_classifier(model, images, labels, DIGITS_TEACHER_EPOCHS, seed, desc="training digits teacher")
    finally:
        torch.set_num_threads(threads)
    _atomic_save(model.state_dict(), path)
    return model
