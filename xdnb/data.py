"""Datasets and K-shot sampling.

Three sources, all returning map-style datasets with ``.targets`` (a list of int labels) and
``.classes`` (class names, index = label):

- :func:`digits`: scikit-learn's bundled 8x8 digits, the embedded offline default (1x8x8 tensors);
- :func:`cifar10`: torchvision's CIFAR-10 (binary release; download is opt-in);
- :func:`imagefolder`: any class-per-folder tree (ImageNet, the CIFAR-10 JPEG export).

:func:`few_shot` draws exactly K images per class with a seeded shuffle; :func:`stack` turns a
dataset (or a subset of it) into one ``(images, labels)`` pair of tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from . import checks
from .progress import progress

#: Network-slimming CIFAR-10 normalisation (docs/method.md, "Networks").
CIFAR10_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR10_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
#: torchvision's ImageNet normalisation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The digits train/test split is fixed (not the run's seed) so every run sees the same test set.
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.25


class TensorImageDataset(Dataset):
    """Images already in memory. ``images``: (N, C, H, W) float32; ``targets``: N ints."""

    def __init__(self, images: torch.Tensor, targets: Sequence[int], classes: Sequence[str]):
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images = images
        self.targets = [int(t) for t in targets]
        self.classes = list(classes)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.images[i], self.targets[i]


def digits(split: str = "train") -> TensorImageDataset:
    """scikit-learn's 1797 handwritten digits as 1x8x8 images, normalised to zero mean, unit std.

    The split (75 % train / 25 % test, stratified) is fixed by :data:`DIGITS_SPLIT_SEED`; the
    normalisation uses the train split's pixel mean and std for both splits.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    bunch = load_digits()
    x = bunch.images.astype(np.float32) / 16.0
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, stratify=y, random_state=DIGITS_SPLIT_SEED
    )
    mean, std = float(x_train.mean()), float(x_train.std())
    x_split, y_split = (x_train, y_train) if split == "train" else (x_test, y_test)
    images = torch.from_numpy((x_split - mean) / std).unsqueeze(1).contiguous()
    return TensorImageDataset(images, y_split.tolist(), [str(d) for d in range(10)])


def cifar_transform(size: int | None = None):
    """ToTensor + the network-slimming CIFAR-10 normalisation (no augmentation); ``size``: resize
    and centre-crop to ``size`` × ``size`` first (default: the images as they are, 32×32)."""
    from torchvision import transforms

    resize = [transforms.Resize(size), transforms.CenterCrop(size)] if size else []
    return transforms.Compose([*resize, transforms.ToTensor(), transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)])


def imagenet_transform(size: int | None = None):
    """The standard ImageNet evaluation transform: resize 256, centre crop 224, normalise
    (``size``: crop ``size`` after resizing to ``size·256/224``)."""
    from torchvision import transforms

    crop = size or 224
    return transforms.Compose(
        [
            transforms.Resize(int(round(crop * 256 / 224))),
            transforms.CenterCrop(crop),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def normalization(spec: str) -> dict:
    """The normalisation a dataset spec applies to images in [0, 1]: ``{"mean": [...], "std": [...]}``
    per channel (what a saved or exported student expects of its inputs)."""
    kind = spec.partition(":")[0]
    if kind == "digits":
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        bunch = load_digits()
        x_train, _ = train_test_split(bunch.images.astype(np.float32) / 16.0, test_size=DIGITS_TEST_FRACTION,
                                      stratify=bunch.target, random_state=DIGITS_SPLIT_SEED)
        return {"mean": [float(x_train.mean())], "std": [float(x_train.std())]}
    if kind in ("cifar10", "cifar10-folder"):
        return {"mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD)}
    if kind == "imagenet":
        return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    raise ValueError(f"unknown dataset {kind!r} in {spec!r}; allowed: {', '.join(DATASET_KINDS)}")


def cifar10(root: str | Path, split: str = "train", download: bool = False):
    """torchvision's CIFAR-10 (python release) under ``root``, normalised as in docs/method.md
    ("Networks").

    Without the files in ``root/cifar-10-batches-py`` and without ``download=True`` this raises a
    :class:`FileNotFoundError` that says how to get them.
    """
    from torchvision.datasets import CIFAR10

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root).expanduser()
    if not download and not (root / CIFAR10.base_folder).is_dir():
        raise FileNotFoundError(
            f"CIFAR-10 not found under {root} (expected {root / CIFAR10.base_folder}). "
            "Pass download=True (CLI: --download) to fetch it (163 MB), or point "
            "'cifar10-folder:ROOT' at a class-per-folder JPEG export."
        )
    return CIFAR10(str(root), train=(split == "train"), transform=cifar_transform(), download=download)


def imagefolder(root: str | Path, split: str | None = None, transform: str = "imagenet", size: int | None = None):
    """A class-per-folder image tree, read with ``torchvision.datasets.ImageFolder``.

    ``root/split`` is used when ``split`` is given (e.g. ``"train"``, ``"test"``, ``"val"``).
    ``transform`` is ``"imagenet"`` (resize 256, centre crop 224) or ``"cifar"`` (32x32 as is);
    ``size``: the input size (centre crop) instead of the transform's default.
    """
    from torchvision.datasets import ImageFolder

    transforms = {"imagenet": imagenet_transform, "cifar": cifar_transform}
    if transform not in transforms:
        raise ValueError(f"transform must be one of {sorted(transforms)}, got {transform!r}")
    folder = Path(root).expanduser() / split if split else Path(root).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"image folder {folder} does not exist; expected one sub-folder per class"
            + (f" under {Path(root).expanduser()}/{split}" if split else "")
        )
    checks.integer("input_size", size, low=1, optional=True)
    return ImageFolder(str(folder), transform=transforms[transform](size))


#: Dataset specs understood by :func:`load`.
DATASET_KINDS = ("digits", "cifar10", "cifar10-folder", "imagenet")


def load(spec: str, split: str = "train", download: bool = False, input_size: int | None = None):
    """Open a dataset from a spec string: ``digits``, ``cifar10:ROOT``, ``cifar10-folder:ROOT``
    (the JPEG export, ``ROOT/train`` and ``ROOT/test``) or ``imagenet:ROOT`` (``ROOT/train``,
    ``ROOT/val``; ``split="test"`` reads ``val``). ``input_size``: for the image folders, resize
    and centre-crop to this size (e.g. 64 for a torchvision model on CIFAR images)."""
    if input_size is not None and spec.partition(":")[0] not in ("cifar10-folder", "imagenet"):
        raise ValueError(f"an input size applies to image folders (cifar10-folder:ROOT, imagenet:ROOT), not {spec!r}")
    kind, _, root = spec.partition(":")
    if kind not in DATASET_KINDS:
        raise ValueError(f"unknown dataset {kind!r} in {spec!r}; allowed: {', '.join(DATASET_KINDS)}")
    if kind == "digits":
        return digits(split)
    if not root:
        raise ValueError(f"dataset {kind!r} needs a root folder: '{kind}:PATH'")
    if kind == "cifar10":
        return cifar10(root, split, download=download)
    if kind == "cifar10-folder":
        return imagefolder(root, split, transform="cifar", size=input_size)
    return imagefolder(root, "val" if split == "test" else split, transform="imagenet", size=input_size)


def targets_of(dataset) -> list[int]:
    """The integer label of every item, without decoding images where the dataset allows it."""
    if isinstance(dataset, Subset):
        parent = targets_of(dataset.dataset)
        return [parent[i] for i in dataset.indices]
    if hasattr(dataset, "targets"):
        return [int(t) for t in dataset.targets]
    return [int(dataset[i][1]) for i in range(len(dataset))]


def few_shot(dataset, k: int, seed: int) -> list[int]:
    """Indices of exactly ``k`` items per class, chosen by a seeded shuffle of each class.

    The result is ordered class by class (class 0's picks first) and is identical for the same
    ``(dataset, k, seed)`` on every run and machine. Raises :class:`ValueError` when ``k`` is not a
    positive int or a class has fewer than ``k`` items (naming that class).
    """
    checks.integer("k (images per class)", k, low=1)
    checks.integer("seed", seed, low=0)
    labels = torch.tensor(targets_of(dataset), dtype=torch.long)
    if len(labels) == 0:
        raise ValueError("the dataset is empty")
    names = getattr(dataset, "classes", None)
    generator = torch.Generator().manual_seed(int(seed))
    chosen: list[int] = []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        if len(members) < k:
            name = names[label] if names is not None and label < len(names) else label
            raise ValueError(
                f"class {name!r} has only {len(members)} images, fewer than k={k}; choose k <= {len(members)}"
            )
        order = torch.randperm(len(members), generator=generator)
        chosen.extend(members[order[:k]].tolist())
    return chosen


def stack(dataset, indices: Sequence[int] | None = None, batch_size: int = 256, desc: str = "loading images"):
    """Load ``dataset`` (or ``dataset[indices]``) into memory as ``(images, labels)``.

    ``images``: (N, C, H, W) float32, ``labels``: (N,) int64. In-memory datasets are sliced
    directly; others are decoded in batches with a progress bar.
    """
    if isinstance(dataset, TensorImageDataset):
        idx = torch.arange(len(dataset)) if indices is None else torch.as_tensor(list(indices), dtype=torch.long)
        return dataset.images[idx], torch.tensor(dataset.targets, dtype=torch.long)[idx]
    subset = dataset if indices is None else Subset(dataset, list(indices))
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False)
    images, labels = [], []
    for x, y in progress(loader, desc=desc, total=len(loader)):
        images.append(x)
        labels.append(torch.as_tensor(y))
    return torch.cat(images), torch.cat(labels).long()
