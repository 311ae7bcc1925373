"""A *global stage*: end-to-end, label-free distillation of the whole student after it is pruned.

The paper fits the student layer by layer and stops there. Since then the field has also trained
the pruned network end to end against the teacher, without labels (docs/method.md, "What xdnb
adds beyond the paper"). :func:`train` does so on the K-shot images, on fresh label-free views at every step
(:func:`xdnb.views.make_views`), with one of two losses (:data:`STAGES`):

``kd``
    knowledge distillation on the logits: ``T² · KL(softmax(t/T) ‖ softmax(s/T))`` per image,
    ``T`` the temperature (Hinton et al. 2015).
``mir``
    an MSE between the student's and the teacher's last feature map before global pooling
    (MiR, Wang et al. CVPR 2022), found for any model by :func:`xdnb.graph.final_feature_map`;
    the head (everything after that map) gets no gradient, so it stays as it was (the teacher's,
    unless it was pruned or fitted).

Adam at learning rate ``lr`` for ``steps`` steps, each on a fresh draw of ``views`` views per
image (with ``views = 1``: the K-shot images themselves at every step). The student is in eval
mode throughout: batch norm keeps the running statistics it has (re-estimated by the layer-wise
fit) and only learns its affine parameters, so the network trained is the network evaluated (with
K·views images a step, batch statistics would be noisy). Pruning survives: a channel-pruned
student is trained physically narrow (removed channels do not exist) and an unstructured one
under its weight masks (``torch.nn.utils.prune``), so every pruned weight stays exactly zero.

The defaults (:data:`DEFAULT_STEPS`, :data:`DEFAULT_LR`) were chosen on digits validation images:
bench/README.md, "The global stage". They do not carry over to CIFAR-10: on a VGG-16 student
(VGG-C, K = 1, after cross on 16 views) lr 1e-3 drops validation accuracy from 84 % to under 50 %,
and 1e-4 or 1e-5 brought no gain in 100 steps (bench/README.md, "The global stage on CIFAR-10").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import prune

from . import checks
from . import views as views_
from .graph import final_feature_map, forward_with_feature_map
from .progress import progress

STAGES = ("kd", "mir")
#: Adam steps and learning rate (chosen on digits validation images; bench/README.md).
DEFAULT_STEPS = 400
DEFAULT_LR = 1e-3
#: The distillation temperature of ``kd`` (FitNet's and the usual choice).
DEFAULT_TEMPERATURE = 4.0
#: The setting for CIFAR-10, from a probe on CIFAR-10 validation images (seed 0; bench/README.md,
#: "The global stage on CIFAR-10"): after cross on 16 views, kd and mir at lr 1e-3, 1e-4, 1e-5 for
#: 25-400 steps; 50 steps at 1e-5 was the best cell for both stages, and still 0.5 points *below*
#: the layer-wise fit alone. What the results page runs on CIFAR-10; not shown to help there.
RECOMMENDED_CIFAR10 = {"global_steps": 50, "global_lr": 1e-5}


@dataclass(frozen=True)
class GlobalStage:
    """One global stage: ``kind`` (``kd`` or ``mir``), Adam ``steps`` (>= 1) at learning rate
    ``lr`` (> 0), and ``kd``'s ``temperature`` (> 0; ``mir`` does not read it)."""

    kind: str
    steps: int = DEFAULT_STEPS
    lr: float = DEFAULT_LR
    temperature: float = DEFAULT_TEMPERATURE

    def __post_init__(self):
        checks.choice("global_stage", self.kind, STAGES)
        checks.integer("global_steps", self.steps, low=1)
        checks.number("global_lr", self.lr, above=0)
        checks.number("temperature", self.temperature, above=0)

    def describe(self) -> dict:
        """The settings that decide the numbers, as recorded in a result's config."""
        return {"global_stage": self.kind, "global_steps": self.steps, "global_lr": self.lr,
                **({"temperature": self.temperature} if self.kind == "kd" else {})}


def parse(stage, steps: int | None = None, lr: float | None = None, temperature: float | None = None) -> GlobalStage | None:
    """A :class:`GlobalStage` from ``stage`` (``None`` or ``"none"``: no stage; ``"kd"``, ``"mir"``;
    or a :class:`GlobalStage`) and the settings (``None`` = the defaults)."""
    if isinstance(stage, GlobalStage):
        if (steps, lr, temperature) != (None, None, None):
            raise ValueError("give the global stage's steps, lr and temperature inside the GlobalStage, not beside it")
        return stage
    if stage is None or stage == "none":
        if (steps, lr, temperature) != (None, None, None):
            raise ValueError("global steps, lr and temperature apply with a global stage (kd or mir); got none")
        return None
    checks.choice("global_stage", stage, ("none", *STAGES))
    return GlobalStage(stage, DEFAULT_STEPS if steps is None else steps, DEFAULT_LR if lr is None else lr,
                       DEFAULT_TEMPERATURE if temperature is None else temperature)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T² · KL(softmax(t/T) ‖ softmax(s/T))``, averaged over the batch (logits (N, classes))."""
    t = temperature
    return t * t * F.kl_div(F.log_softmax(student_logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                            reduction="batchmean", log_target=True)


def train(stage: GlobalStage, teacher: nn.Module, student: nn.Module, images: torch.Tensor, *, views: int = 1,
          augment: str = views_.DEFAULT_AUGMENT, seed: int = 0, masks: dict[str, torch.Tensor] | None = None,
          batch_size: int | None = None, show_progress: bool = True,
          callback: Callable[[int, float], None] | None = None) -> dict:
    """Train ``student`` in place against ``teacher`` with ``stage`` on the K-shot ``images`` (N, C,
    H, W), label-free; returns what to record (``global_loss_first``/``_last``: the loss of the
    first and last step; ``global_seconds``).

    Each step draws ``views`` fresh views per image (``augment``; seeded from ``seed`` and the step)
    and uses all N·views of them, or a seeded random ``batch_size`` of them. ``masks``: module name
    -> bool weight mask (True = kept) that must survive (unstructured pruning). ``callback(step,
    loss)`` runs after every step (1-based; ``student`` holds that step's weights). ``student`` has the
    teacher's forward code (the same model, possibly narrower); the teacher is not modified.
    """
    if not isinstance(stage, GlobalStage):
        raise ValueError(f"stage must be a GlobalStage, got {stage!r}")
    views = checks.integer("views", views, low=1)
    checks.integer("batch_size", batch_size, low=1, optional=True)
    started = time.perf_counter()
    device = next(student.parameters()).device
    teacher, images = teacher.to(device).eval(), images.to(device)
    where = final_feature_map(teacher, tuple(images.shape[1:])) if stage.kind == "mir" else None
    modules = dict(student.named_modules())
    masks = masks or {}
    for name, mask in masks.items():
        prune.custom_from_mask(modules[name], "weight", mask.to(device))
    optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=stage.lr)
    generator = torch.Generator().manual_seed(checks.integer("seed", seed, low=0))
    student.eval()
    losses = []
    try:
        for _ in progress(range(stage.steps), desc=f"global stage ({stage.kind})", enabled=show_progress):
            step_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
            batch = views_.make_views(images, views, augment, step_seed)
            if batch_size is not None and len(batch) > batch_size:
                batch = batch[torch.randperm(len(batch), generator=generator)[:batch_size].to(device)]
            if where is None:
                with torch.no_grad():
                    target = teacher(batch)
                loss = kd_loss(student(batch), target, stage.temperature)
            else:
                with torch.no_grad():
                    _, target = forward_with_feature_map(teacher, batch, where)
                _, feature = forward_with_feature_map(student, batch, where)
                loss = F.mse_loss(feature, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if callback is not None:
                callback(len(losses), losses[-1])
    finally:
        for name in masks:
            prune.remove(modules[name], "weight")
    student.eval()
    return {"global_loss_first": losses[0], "global_loss_last": losses[-1],
            "global_seconds": time.perf_counter() - started}
