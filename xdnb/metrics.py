"""Measurements: top-1 accuracy, per-layer estimation error and inconsistencies, the bound.

Per-layer quantities compare a teacher with a student *of the same width* (pass
``Compressed.masked_student``, where pruned channels are zeroed rather than removed) on any image
set: the few-shot images the student was fitted on, or held-out images.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .graph import SiteStream, trace
from .progress import progress


@torch.no_grad()
def layer_record(teacher_conv: nn.Conv2d, student_conv: nn.Conv2d, hT: torch.Tensor, hS: torch.Tensor) -> dict:
    """Per-layer errors of a (teacher, student) conv pair on inputs ``hT``, ``hS`` (N, C_in, H, W).

    Keys (all MSEs of pre-activation outputs): ``estimation_error`` L^r = ‖WT*hT − WS*hS‖²,
    ``relative_error`` = L^r / mean((WT*hT)²), ``correction`` L^c, ``imitation`` L^i,
    ``eps_S`` = ‖WS*hT − WS*hS‖², ``eps_T`` = ‖WT*hT − WT*hS‖².
    """
    return record_from_outputs(teacher_conv(hT), teacher_conv(hS), student_conv(hT), student_conv(hS))


@torch.no_grad()
def record_from_outputs(tT: torch.Tensor, tS: torch.Tensor, sT: torch.Tensor, sS: torch.Tensor) -> dict:
    """:func:`layer_record` from the four conv outputs ``WT*hT, WT*hS, WS*hT, WS*hS``.
    ``output_power`` = mean((WT*hT)²), the scale that turns any of the errors into a relative one."""
    est = float(F.mse_loss(sS, tT))
    power = float(tT.pow(2).mean())
    return {
        "estimation_error": est,
        "relative_error": est / max(power, 1e-30),
        "correction": float(F.mse_loss(sT, tT)),
        "imitation": float(F.mse_loss(sS, tS)),
        "eps_S": float(F.mse_loss(sT, sS)),
        "eps_T": float(F.mse_loss(tT, tS)),
        "output_power": power,
    }


def combine_records(parts: list[tuple[int, dict]]) -> dict:
    """One record from the records of chunks of images, ``(images in the chunk, record)`` each (the
    engine's streamed capture): every value is a mean over the chunk's elements, so the whole is
    the image-weighted mean, except ``relative_error``, the ratio of the two combined means. A
    single chunk's record is returned as it is."""
    if len(parts) == 1:
        return dict(parts[0][1])
    total = sum(n for n, _ in parts)
    combined = {key: sum(n * record[key] for n, record in parts) / total for key in parts[0][1]}
    if "relative_error" in combined:
        combined["relative_error"] = combined["estimation_error"] / max(combined["output_power"], 1e-30)
    return combined


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 100) -> float:
    """Top-1 accuracy (a fraction in [0, 1]) of ``model`` in eval mode on ``images`` (N, C, H, W).

    Batches of 100 run ~20 % faster than 500 on a 2-core CPU for VGG-16 (bench/README.md).
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(images[start:start + batch_size].to(device))
        correct += int((logits.argmax(1).cpu() == labels[start:start + batch_size]).sum())
    model.train(was_training)
    return correct / max(len(labels), 1)


@torch.no_grad()
def accuracy_on(model: nn.Module, dataset, batch_size: int = 100) -> float:
    """Top-1 accuracy over a dataset that yields ``(image, label)`` (decoded in batches)."""
    from torch.utils.data import DataLoader

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for x, y in progress(loader, desc="evaluating", total=len(loader)):
        correct += int((model(x.to(device)).argmax(1).cpu() == torch.as_tensor(y)).sum())
        total += len(y)
    model.train(was_training)
    return correct / max(total, 1)


@torch.no_grad()
def layer_errors(teacher: nn.Module, student: nn.Module, images: torch.Tensor, batch_size: int | None = None,
                 linear: bool = False) -> list[dict]:
    """Per-site errors of ``student`` against ``teacher`` on ``images`` (eval-mode BN).

    One dict per conv site, front to back, with ``layer``, ``index`` and the keys of
    :func:`layer_record` (estimation error L^r, relative error, L^c, L^i, eps_S,
    eps_T) plus ``bound``: ``2·(mu·L^c + (1−mu)·L^i) + 2·(mu·eps_S + (1−mu)·eps_T)`` at mu = 0.5
    (see :func:`bound`). Site inputs are streamed front to back, one forward pass per network
    (:class:`xdnb.graph.SiteStream`). ``linear``: include the linear layers (as in a compression
    with ``linear=True``). Raises ValueError if the widths differ (pass the masked student).
    """
    teacher_modules, student_modules = dict(teacher.named_modules()), dict(student.named_modules())
    sites = trace(teacher, tuple(images.shape[1:]), linear=linear).sites
    for site in sites:
        t_conv, s_conv = teacher_modules[site.name], student_modules.get(site.name)
        if s_conv is None or s_conv.weight.shape != t_conv.weight.shape:
            got = None if s_conv is None else tuple(s_conv.weight.shape)
            raise ValueError(
                f"student layer {site.name} has weight shape {got}, teacher {tuple(t_conv.weight.shape)}: "
                "per-layer errors need the same width (use Compressed.masked_student)"
            )
    was_training = (teacher.training, student.training)
    teacher.eval(), student.eval()
    names = [site.name for site in sites]
    rows = []
    streams = zip(SiteStream(teacher, names, images, batch_size), SiteStream(student, names, images, batch_size))
    for index, ((name, hT), (_, hS)) in enumerate(streams):
        record = layer_record(teacher_modules[name], student_modules[name], hT, hS)
        record["bound"] = bound(record, 0.5)
        rows.append({"layer": name, "index": index, **record})
    teacher.train(was_training[0]), student.train(was_training[1])
    return rows


def bound(record: dict, mu: float) -> float:
    """The bound on the estimation error for one layer's record (docs/method.md, "Inconsistencies
    and the bound"): ``L^r <= 2·(mu·L^c + (1−mu)·L^i) + 2·(mu·eps_S + (1−mu)·eps_T)``. It
    follows from ``sqrt(L^r) <= sqrt(L^c) + sqrt(eps_S)`` and
    ``sqrt(L^r) <= sqrt(L^i) + sqrt(eps_T)``."""
    return 2 * (mu * record["correction"] + (1 - mu) * record["imitation"]) + 2 * (
        mu * record["eps_S"] + (1 - mu) * record["eps_T"]
    )


def bound_holds(record: dict, mu: float, rtol: float = 1e-6) -> bool:
    """Whether both square-root inequalities and the combined bound hold for ``record``."""
    lr = math.sqrt(record["estimation_error"])
    slack = rtol * (1 + lr)
    return (
        lr <= math.sqrt(record["correction"]) + math.sqrt(record["eps_S"]) + slack
        and lr <= math.sqrt(record["imitation"]) + math.sqrt(record["eps_T"]) + slack
        and record["estimation_error"] <= bound(record, mu) * (1 + rtol) + rtol
    )
