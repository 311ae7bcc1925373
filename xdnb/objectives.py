"""The five layer-wise objectives of cross distillation, as one small family.

Notation (docs/method.md, "Notation"): for layer l, ``hT`` is the teacher's input of the layer
and ``hS`` the student's (it carries the error accumulated by the already-compressed layers);
``WT * h`` is the teacher's pre-activation conv output on ``h``, ``WS * h`` the student's. Every loss is a mean
squared error (squared Frobenius norm averaged per element) of pre-activation outputs, the form
the authors' reference code uses.

Each objective is a weighted sum of *terms* ``w * ‖WT * (a·hT + b·hS) − WS * (c·hT + d·hS)‖²``:

=====================  ==============================================================
regression  ``L^r``    ``‖WT*hT − WS*hS‖²``                    one term, (1,0) vs (0,1)
correction  ``L^c``    ``‖WT*hT − WS*hT‖²``                    one term, (1,0) vs (1,0)
imitation   ``L^i``    ``‖WT*hS − WS*hS‖²``                    one term, (0,1) vs (0,1)
cross(mu)              ``mu·L^c + (1−mu)·L^i``                  two terms
soft(alpha, beta)      ``‖WT*ĥT − WS*ĥS‖²``, ``ĥT = alpha·hT + (1−alpha)·hS``,
                       ``ĥS = (1−beta)·hT + beta·hS``            one term
=====================  ==============================================================

The soft form uses the paper's matrix ``[[alpha, 1−alpha], [1−beta, beta]]``: (1, 1) is
regression, (1, 0) correction, (0, 1) imitation. (Summaries that print the second row as
``[beta, 1−beta]`` use ``beta' = 1 − beta``.)

Because convolution is linear in its input, every term is a linear least-squares problem in WS;
the engine (:mod:`xdnb.distill`) exploits that. The callables here evaluate the losses directly
and serve as the oracle.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from . import checks

#: Reference default of the hard cross connection.
DEFAULT_MU = 0.6
OBJECTIVES = ("regression", "correction", "imitation", "cross", "soft")


def check_unit_interval(name: str, value) -> float:
    """Return ``value`` as float if it lies in [0, 1]; else raise ValueError naming it."""
    return checks.fraction(name, value, zero=True, one=True)


@dataclass(frozen=True)
class Term:
    """``weight * ‖WT * (teacher_mix · (hT, hS)) − WS * (student_mix · (hT, hS))‖²``."""

    weight: float
    teacher_mix: tuple[float, float]
    student_mix: tuple[float, float]


def mix(coefficients: tuple[float, float], hT: torch.Tensor, hS: torch.Tensor) -> torch.Tensor:
    """``a·hT + b·hS`` without arithmetic on a zero coefficient (exact special cases)."""
    a, b = coefficients
    if b == 0.0:
        return hT if a == 1.0 else a * hT
    if a == 0.0:
        return hS if b == 1.0 else b * hS
    return a * hT + b * hS


@dataclass(frozen=True)
class Objective:
    """A layer-wise distillation loss: ``objective(teacher_layer, student_layer, hT, hS)``.

    ``teacher_layer`` / ``student_layer``: conv modules (or any linear maps) taking
    (N, C_in, H, W) to (N, C_out, H', W'); ``hT``, ``hS``: (N, C_in, H, W). Returns a scalar MSE.
    """

    name: str
    terms: tuple[Term, ...]
    params: tuple[tuple[str, float], ...] = ()

    def __call__(self, teacher_layer: nn.Module, student_layer: nn.Module, hT: torch.Tensor, hS: torch.Tensor) -> torch.Tensor:
        loss = hT.new_zeros(())
        for term in self.terms:
            if term.weight == 0.0:
                continue
            target = teacher_layer(mix(term.teacher_mix, hT, hS))
            loss = loss + term.weight * F.mse_loss(student_layer(mix(term.student_mix, hT, hS)), target)
        return loss

    @property
    def student_convolutions(self) -> int:
        """Convolutions of WS per optimisation step (the teacher's parts are fixed per layer)."""
        return sum(1 for t in self.terms if t.weight != 0.0)

    def describe(self) -> dict:
        """JSON-able identity: ``{"objective": name, **params}``."""
        return {"objective": self.name, **dict(self.params)}

    def __str__(self) -> str:
        inner = ", ".join(f"{k}={v:g}" for k, v in self.params)
        return f"{self.name}({inner})" if inner else self.name


def regression() -> Objective:
    """``L^r = ‖WT*hT − WS*hS‖²``: plain layer-wise distillation."""
    return Objective("regression", (Term(1.0, (1.0, 0.0), (0.0, 1.0)),))


def correction() -> Objective:
    """``L^c = ‖WT*hT − WS*hT‖²``: the student layer sees the teacher's input."""
    return Objective("correction", (Term(1.0, (1.0, 0.0), (1.0, 0.0)),))


def imitation() -> Objective:
    """``L^i = ‖WT*hS − WS*hS‖²``: the teacher layer sees the student's input."""
    return Objective("imitation", (Term(1.0, (0.0, 1.0), (0.0, 1.0)),))


def cross(mu: float = DEFAULT_MU) -> Objective:
    """``mu·L^c + (1−mu)·L^i``, mu in [0, 1]."""
    mu = check_unit_interval("mu", mu)
    return Objective("cross", (Term(mu, (1.0, 0.0), (1.0, 0.0)), Term(1.0 - mu, (0.0, 1.0), (0.0, 1.0))), (("mu", mu),))


def soft(alpha: float, beta: float) -> Objective:
    """``‖WT*(alpha·hT + (1−alpha)·hS) − WS*((1−beta)·hT + beta·hS)‖²`` (paper's convention)."""
    alpha = check_unit_interval("alpha", alpha)
    beta = check_unit_interval("beta", beta)
    return Objective("soft", (Term(1.0, (alpha, 1.0 - alpha), (1.0 - beta, beta)),), (("alpha", alpha), ("beta", beta)))


def get(name: str, mu: float | None = None, alpha: float | None = None, beta: float | None = None) -> Objective:
    """An objective by name; ``mu`` for cross (default 0.6), ``alpha``/``beta`` for soft (required)."""
    if isinstance(name, Objective):
        return name
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; allowed: {', '.join(OBJECTIVES)}")
    if name == "cross":
        return cross(DEFAULT_MU if mu is None else mu)
    if name == "soft":
        if alpha is None or beta is None:
            raise ValueError(f"the soft objective needs alpha and beta in [0, 1], got alpha={alpha!r}, beta={beta!r}")
        return soft(alpha, beta)
    return {"regression": regression, "correction": correction, "imitation": imitation}[name]()


def eps_student(student_layer: nn.Module, hT: torch.Tensor, hS: torch.Tensor) -> torch.Tensor:
    """Student-side inconsistency ``eps_S = ‖WS*hT − WS*hS‖²`` (correction ignores it)."""
    return F.mse_loss(student_layer(hT), student_layer(hS))


def eps_teacher(teacher_layer: nn.Module, hT: torch.Tensor, hS: torch.Tensor) -> torch.Tensor:
    """Teacher-side inconsistency ``eps_T = ‖WT*hT − WT*hS‖²`` (constant for a layer)."""
    return F.mse_loss(teacher_layer(hT), teacher_layer(hS))
