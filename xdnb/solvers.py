"""Solvers that fit one layer's weights to a :class:`~xdnb.quadratic.LayerProblem`.

All three take the same arguments and return a :class:`Fit`:

- ``lstsq`` (the fast default): for a fixed mask every objective is a linear least-squares
  problem, solved in closed form with a ridge towards the teacher's weights. Channels (or
  weights) are selected by the same hard projection as the reference, over a few rounds with a
  linearly falling budget, each round re-solving on the surviving channels.
- ``reference``: the authors' protocol: Adam for ``steps`` steps (lr 5e-4); with pruning, the
  kept budget falls linearly to the target over the first third by hard projection onto the
  largest groups (zeroed groups never return); then the mask is frozen and the lr drops 10x.
- ``proximal``: the paper's formulation ``min f(W) + lambda·R(W)``: proximal gradient steps
  (group lasso for channels, L1 for weights) with lambda raised linearly until the target is
  reached, then the mask is frozen and plain gradient steps continue.

A *target* is ``None`` (refit at full width), a :class:`ChannelTarget` (keep that many input
channels) or a :class:`WeightTarget` (keep that many weights).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from . import checks
from .projections import group_norms, group_soft_threshold, keep_top_channels, keep_top_weights, linear_budget, soft_threshold
from .quadratic import LayerProblem

SOLVERS = ("lstsq", "reference", "proximal")
#: The reference code's CIFAR protocol.
REFERENCE_STEPS = 3000
REFERENCE_LR = 5e-4
#: Chosen on validation images (digits train split minus the K-shot set): see bench/README.md.
DEFAULT_RIDGE = 0.1
DEFAULT_ROUNDS = 4
#: Conjugate-gradient steps of the intermediate (ranking-only) rounds of unstructured lstsq.
MASKED_ROUGH_ITERATIONS = 25
MASKED_FINAL_ITERATIONS = 100


@dataclass(frozen=True)
class ChannelTarget:
    keep: int


@dataclass(frozen=True)
class WeightTarget:
    keep: int


@dataclass
class Fit:
    """A fitted layer: ``weight`` (C_out, D); ``channels``: kept input channels (structured) or
    ``None``; ``mask``: (C_out, D) bool of kept weights (unstructured) or ``None``."""

    weight: torch.Tensor
    channels: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    info: dict = field(default_factory=dict)


def _check_target(problem: LayerProblem, target) -> None:
    if isinstance(target, ChannelTarget) and problem.groups > 1:
        raise ValueError("the input channels of a grouped conv are not pruned")
    if isinstance(target, ChannelTarget) and not 1 <= target.keep <= problem.c_in:
        raise ValueError(f"cannot keep {target.keep} of {problem.c_in} input channels")
    if isinstance(target, WeightTarget) and not 1 <= target.keep <= problem.weight_dim * problem.c_out:
        raise ValueError(f"cannot keep {target.keep} of {problem.weight_dim * problem.c_out} weights")


@dataclass(frozen=True)
class LstsqOptions:
    """``lstsq``: ``ridge`` (>= 0) towards the teacher's weights, ``rounds`` (>= 1) of projection."""

    ridge: float = DEFAULT_RIDGE
    rounds: int = DEFAULT_ROUNDS

    def __post_init__(self):
        checks.number("ridge", self.ridge, low=0)
        checks.integer("rounds", self.rounds, low=1)


@dataclass(frozen=True)
class ReferenceOptions:
    """``reference``: Adam ``steps`` (>= 1) at learning rate ``lr`` (> 0)."""

    steps: int = REFERENCE_STEPS
    lr: float = REFERENCE_LR

    def __post_init__(self):
        checks.integer("steps", self.steps, low=1)
        checks.number("lr", self.lr, above=0)


@dataclass(frozen=True)
class ProximalOptions:
    """``proximal``: ``steps`` (>= 1) of proximal gradient (the step size is 1/L, no lr)."""

    steps: int = REFERENCE_STEPS

    def __post_init__(self):
        checks.integer("steps", self.steps, low=1)


#: Each solver's options: the only settings it reads.
SOLVER_OPTIONS = {"lstsq": LstsqOptions, "reference": ReferenceOptions, "proximal": ProximalOptions}


def solver_options(solver: str, **values):
    """The typed options of ``solver`` from keyword values; a setting the solver does not read is
    an error (``solver_options("lstsq", steps=10)`` names ``steps`` and what lstsq reads)."""
    checks.choice("solver", solver, SOLVERS)
    kind = SOLVER_OPTIONS[solver]
    checks.known(f"solver {solver!r}", values, [f.name for f in dataclasses.fields(kind)], "setting")
    return kind(**values)


def options_from(solver: str, settings: dict):
    """The typed options of ``solver`` from a dict that may hold every solver's settings (a
    :class:`~xdnb.experiment.RunConfig`'s flat fields): only the ones ``solver`` reads are taken."""
    checks.choice("solver", solver, SOLVERS)
    kind = SOLVER_OPTIONS[solver]
    return kind(**{f.name: settings[f.name] for f in dataclasses.fields(kind) if f.name in settings})


def fit_lstsq(problem: LayerProblem, target=None, *, ridge: float = DEFAULT_RIDGE, rounds: int = DEFAULT_ROUNDS) -> Fit:
    """Closed-form fit; with a target, ``rounds`` projection rounds with a linearly falling budget."""
    LstsqOptions(ridge, rounds)
    _check_target(problem, target)
    g, c_in = problem.group_size, problem.c_in
    if target is None:
        return Fit(problem.solve(None, ridge), info={"solves": 1})
    if isinstance(target, ChannelTarget):
        kept = torch.arange(c_in, device=problem.teacher_weight.device)
        weight = problem.solve(None, ridge)
        for r in range(1, rounds + 1):
            kept = keep_top_channels(problem.weights_of(weight), kept, linear_budget(c_in, target.keep, r, rounds), g)
            weight = problem.solve(problem.columns_of(kept), ridge)
        return Fit(weight, channels=kept, info={"solves": rounds + 1})
    mask = torch.ones_like(problem.weights_of(problem.teacher_weight), dtype=torch.bool)
    weight = problem.solve(None, ridge)
    total = mask.numel()
    for r in range(1, rounds + 1):
        mask = keep_top_weights(problem.weights_of(weight), mask, linear_budget(total, target.keep, r, rounds))
        # intermediate rounds only rank weights: a rough warm-started solve suffices
        last = r == rounds
        weight = problem.solve_masked(problem.full_mask(mask), max(ridge, 1e-12), start=weight,
                                      iterations=MASKED_FINAL_ITERATIONS if last else MASKED_ROUGH_ITERATIONS)
    return Fit(weight * problem.full_mask(mask), mask=mask, info={"solves": rounds + 1})


def _project(problem, weight, target, kept, mask, budget):
    """Hard projection of ``weight`` to ``budget`` channels / weights; returns the new kept set
    (``mask`` covers the weight columns only: the bias is never pruned)."""
    if isinstance(target, ChannelTarget):
        return keep_top_channels(problem.weights_of(weight), kept, budget, problem.group_size), mask
    return kept, keep_top_weights(problem.weights_of(weight), mask, budget)


def _support(problem, target, kept, mask):
    """A (1, D) or (C_out, D) float multiplier that zeroes everything pruned."""
    if isinstance(target, ChannelTarget):
        column = torch.zeros(problem.dim, dtype=problem.teacher_weight.dtype, device=problem.teacher_weight.device)
        column[problem.columns_of(kept)] = 1.0
        return column[None, :]
    if isinstance(target, WeightTarget):
        return problem.full_mask(mask).to(problem.teacher_weight.dtype)
    return None


def _result(weight, target, kept, mask, info) -> Fit:
    if isinstance(target, ChannelTarget):
        return Fit(weight, channels=kept, info=info)
    if isinstance(target, WeightTarget):
        return Fit(weight, mask=mask, info=info)
    return Fit(weight, info=info)


def _adam(weight: torch.Tensor, lr: float) -> torch.optim.Adam:
    """Adam on one tensor, fused where torch supports it (8x faster per step on a 512x4608
    weight on one CPU thread: 1.3 ms instead of 11.4 ms)."""
    try:
        return torch.optim.Adam([weight], lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam([weight], lr=lr)


def fit_reference(problem: LayerProblem, target=None, *, steps: int = REFERENCE_STEPS, lr: float = REFERENCE_LR) -> Fit:
    """Adam from the teacher's weights; annealed hard projection over the first ``steps // 3``."""
    ReferenceOptions(steps, lr)
    _check_target(problem, target)
    c_in = problem.c_in
    weight = problem.teacher_weight.clone().requires_grad_(True)
    optimizer = _adam(weight, lr)
    rhs_t = problem.rhs_t(weight.dtype)
    ramp = steps // 3
    kept = torch.arange(c_in, device=weight.device)
    mask = torch.ones_like(problem.weights_of(weight), dtype=torch.bool)
    total = c_in if isinstance(target, ChannelTarget) else mask.numel()
    support = _support(problem, target, kept, mask)
    for step in range(steps):
        with torch.no_grad():
            weight.grad = problem.grad(weight, rhs_t)
        optimizer.step()
        with torch.no_grad():
            if target is not None and step < ramp:
                kept, mask = _project(problem, weight, target, kept, mask, linear_budget(total, target.keep, step + 1, ramp))
                support = _support(problem, target, kept, mask)
            if support is not None:
                weight.mul_(support)
        if step + 1 == ramp:
            for group in optimizer.param_groups:
                group["lr"] = lr / 10
    if target is not None and ramp == 0:
        kept, mask = _project(problem, weight.detach(), target, kept, mask, target.keep)
        support = _support(problem, target, kept, mask)
    final = weight.detach() if support is None else weight.detach() * support
    return _result(final, target, kept, mask, {"steps": steps, "lr": lr})


def fit_proximal(problem: LayerProblem, target=None, *, steps: int = REFERENCE_STEPS) -> Fit:
    """Proximal gradient (step 1/L) from the teacher's weights. lambda rises linearly over the first
    third from 0 to the value that zeroes everything (group lasso or L1); once at most the target
    survives, the largest ``target`` groups (weights) are frozen as the mask and gradient steps
    continue without the penalty."""
    ProximalOptions(steps)
    _check_target(problem, target)
    g, c_in = problem.group_size, problem.c_in
    lipschitz = problem.lipschitz()
    step_size = 1.0 / lipschitz if lipschitz > 0 else 0.0
    rhs_t = problem.rhs_t(problem.teacher_weight.dtype)
    weight = problem.teacher_weight.clone()
    kept = torch.arange(c_in, device=weight.device)
    mask = torch.ones_like(problem.weights_of(weight), dtype=torch.bool)
    grad_at_zero = problem.weights_of(-rhs_t * (2.0 / problem.n))
    if isinstance(target, ChannelTarget):
        lam_max = float(group_norms(grad_at_zero, g).max())
    else:
        lam_max = float(grad_at_zero.abs().max())

    def shrink(w, threshold):
        """The penalty's proximal step on the weight columns (the bias is not penalised)."""
        part = problem.weights_of(w)
        part = group_soft_threshold(part, threshold, g) if isinstance(target, ChannelTarget) else soft_threshold(part, threshold)
        return torch.cat([part, w[:, problem.weight_dim:]], 1) if problem.has_bias else part

    ramp = max(1, steps // 3)
    frozen = target is None
    support = None
    lam_at_freeze = None
    for step in range(steps):
        moved = weight - step_size * problem.grad(weight, rhs_t)
        if frozen:
            weight = moved if support is None else moved * support
            continue
        lam = lam_max * min(1.0, (step + 1) / ramp)
        shrunk = shrink(moved, step_size * lam)
        if isinstance(target, ChannelTarget):
            alive = int((group_norms(problem.weights_of(shrunk), g) > 0).sum())
        else:
            alive = int((problem.weights_of(shrunk) != 0).sum())
        if alive <= target.keep or step + 1 >= ramp:
            # freeze: the target's largest groups/weights of the un-shrunk step
            kept, mask = _project(problem, moved, target, kept, mask, target.keep)
            support = _support(problem, target, kept, mask)
            weight, frozen, lam_at_freeze = moved * support, True, lam
        else:
            weight = shrunk
    return _result(weight, target, kept, mask, {"steps": steps, "lambda_at_freeze": lam_at_freeze, "lipschitz": lipschitz})


FIT_FUNCTIONS = {"lstsq": fit_lstsq, "reference": fit_reference, "proximal": fit_proximal}


def fit(solver: str, problem: LayerProblem, target=None, options=None, **values) -> Fit:
    """Fit one layer with the named solver (``lstsq``, ``reference``, ``proximal``) and its
    ``options`` (one of :data:`SOLVER_OPTIONS`' types, or keyword ``values`` checked by
    :func:`solver_options`)."""
    if options is None:
        options = solver_options(solver, **values)
    elif values or not isinstance(options, SOLVER_OPTIONS[checks.choice("solver", solver, SOLVERS)]):
        raise ValueError(f"solver {solver!r} takes options of type {SOLVER_OPTIONS[solver].__name__} or keyword values, "
                         f"not both; got {options!r} and {sorted(values)}")
    return FIT_FUNCTIONS[solver](problem, target, **dataclasses.asdict(options))
