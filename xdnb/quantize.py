"""Weight quantization of conv layers, fitted layer by layer with any distillation objective.

The paper presents cross distillation as a framework: any regulariser ``R(WS)`` can replace the
pruning penalty. Here ``R`` pulls the student's weights onto a k-bit grid, and the layer's
objective (regression, cross ``mu``, soft ``alpha``/``beta``: a :class:`~xdnb.quadratic.LayerProblem`)
decides where on the grid they land.

Grid (symmetric, zero included): ``scale · {−q, …, −1, 0, 1, …, q}`` with ``q = 2^(k−1) − 1``,
i.e. ``2^k − 1`` levels (k = 2: ternary ``{−s, 0, s}``; k = 4: 15 levels; k = 8: 255 levels), so
a channel (``granularity="channel"``, one scale per output filter) or a whole tensor
(``"tensor"``) takes at most ``2^k − 1 < 2^k`` distinct values. Zero is on the grid, so a pruned
weight stays exactly zero.

Scale: ``"mse"`` (default) searches clipping ratios of the largest magnitude (a coarse and a fine
pass) for the smallest squared rounding error of the starting weights; ``"max"`` is
``max|w| / q`` (nothing clipped). The scale is fixed while fitting; at the end (``refit_scale``)
it is re-solved in closed form for the fitted integer codes, which is exact because the objective
is quadratic in the scale (per channel: ``s = zᵀb / zᵀGz``, ridge included).

Quantizers (same call shape as :mod:`xdnb.solvers`: ``fit(problem, target, **options) -> Fit``):

- ``round``: the nearest grid point of the starting weights (no fitting; the naive baseline).
- ``ste``: straight-through estimator. Latent full-precision weights ``W``; every step the
  gradient of the objective is evaluated at the quantized weights ``Q(W)`` and applied to ``W``
  (identity inside the clipping range ``|w| ≤ q·s``, zero outside: the derivative of the clamp).
  The best quantized iterate is returned (the first one is ``Q(start)``, so the fit is never worse
  than rounding on the objective it minimises).
- ``proxquant`` (Bai, Wang, Liberty, ICLR 2019): no latent copy. A gradient step, then the
  proximal step of ``τ·dist₁(W, grid)``: every weight moves by at most ``τ`` towards its nearest
  grid point (and lands on it when closer). ``τ`` rises linearly from 0 to ``strength`` Adam steps
  (``strength·lr·s``) over the steps, so weights whose gradient no longer pushes them away stay
  on the grid; a final exact projection makes the result lie exactly on the grid.

Both take Adam steps whose learning rate ``lr`` is in *grid steps* (a weight moves about ``lr·s``
per step, whatever the layer's scale or bit width; STE decays it linearly to zero) and minimise the
objective plus the engine's ridge towards the teacher's weights (``ridge``, as
:func:`~xdnb.solvers.fit_lstsq`). They start from a full-precision fit (``start``, by default
:func:`~xdnb.solvers.fit_lstsq` with the same target), whose support (kept channels or weight mask)
they keep.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from . import checks
from .quadratic import LayerProblem
from .solvers import DEFAULT_RIDGE, Fit, fit_lstsq

QUANTIZERS = ("ste", "proxquant", "round")
GRANULARITIES = ("channel", "tensor")
SCALES = ("mse", "max")
#: Bit widths accepted (the paper-style experiments use 2, 4 and 8).
MIN_BITS, MAX_BITS = 2, 8
#: Clipping ratios tried by the ``mse`` scale search in each of its two passes (coarse, fine).
SCALE_CANDIDATES = 32
#: Defaults chosen on validation images of the digits train split: see bench/README.md.
DEFAULT_STEPS = 300
#: Adam learning rates in grid steps, per quantizer.
DEFAULT_LR = {"ste": 0.02, "proxquant": 0.3}
#: ProxQuant: the proximal threshold rises linearly to this many Adam steps (``strength·lr·s``).
DEFAULT_STRENGTH = 1.0


# --- the grid ----------------------------------------------------------------------------------


def check_bits(bits) -> int:
    """``bits`` as an int in [MIN_BITS, MAX_BITS]; ValueError naming the value otherwise."""
    if isinstance(bits, bool) or not isinstance(bits, (int, float)) or not MIN_BITS <= bits <= MAX_BITS or bits != int(bits):
        raise ValueError(f"bits must be an integer from {MIN_BITS} to {MAX_BITS}, got {bits!r}")
    return int(bits)


def _check_choice(name: str, value, allowed: tuple[str, ...]) -> str:
    return checks.choice(name, value, allowed)


def levels(bits: int) -> int:
    """``q = 2^(bits−1) − 1``: the grid is ``scale · {−q..q}`` (``2q + 1`` values)."""
    return 2 ** (check_bits(bits) - 1) - 1


def quantize(weight: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Nearest grid point of every weight: ``s · clamp(round(w / s), −q, q)``.

    ``weight``: (C_out, D); ``scale``: (C_out, 1) per channel or (1, 1) per tensor, positive.
    """
    return codes(weight, scale, bits) * scale


def codes(weight: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """The integer codes in [−q, q] of ``weight`` on the grid of ``scale``."""
    q = levels(bits)
    return torch.clamp(torch.round(weight / scale), -q, q)


def choose_scale(weight: torch.Tensor, bits: int, granularity: str = "channel", method: str = "mse") -> torch.Tensor:
    """The grid scale for ``weight`` (C_out, D): (C_out, 1) per channel, (1, 1) per tensor.

    ``mse``: the clipping ratio ``r`` in (0, 1] of ``s = r·max|w|/q`` with the smallest squared
    rounding error, searched on ``SCALE_CANDIDATES`` evenly spaced ratios and then refined on as
    many between the best one's neighbours; ``max``: ``max|w| / q``. All-zero rows get scale 1.
    """
    q = levels(bits)
    _check_choice("granularity", granularity, GRANULARITIES)
    _check_choice("scale", method, SCALES)
    w = weight.detach()
    top = w.abs().amax(1, keepdim=True) if granularity == "channel" else w.abs().max().reshape(1, 1)
    top = torch.where(top > 0, top, torch.ones_like(top))
    if method == "max":
        return top / q

    def best_of(ratios: list[torch.Tensor]) -> torch.Tensor:
        best, best_error = None, None
        for ratio in ratios:
            err = (w - quantize(w, top * (ratio / q), bits)).pow(2).sum(1, keepdim=True).double()
            err = err if granularity == "channel" else err.sum().reshape(1, 1)
            if best is None:
                best, best_error = ratio, err
            else:
                better = err < best_error
                best, best_error = torch.where(better, ratio, best), torch.where(better, err, best_error)
        return best

    n, step = SCALE_CANDIDATES, 1.0 / SCALE_CANDIDATES
    coarse = best_of([torch.full_like(top, (i + 1) * step) for i in range(n)])
    fine = [(coarse + (i + 0.5) * (2 * step / n) - step).clamp(step / 10, 1.0) for i in range(n)]
    return top * (best_of([coarse, *fine]) / q)


def distinct_values(weight: torch.Tensor, granularity: str = "channel") -> int:
    """The largest number of distinct values in one output channel (``channel``) or in the tensor."""
    _check_choice("granularity", granularity, GRANULARITIES)
    w = weight.detach().reshape(weight.shape[0], -1)
    if granularity == "tensor":
        return int(torch.unique(w).numel())
    return max(int(torch.unique(row).numel()) for row in w)


# --- straight-through estimator and the ProxQuant proximal step --------------------------------


def ste_backward(latent: torch.Tensor, grad: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """The STE's gradient for the latent weights: ``grad`` where ``|w| ≤ q·s``, zero outside."""
    return torch.where(latent.abs() <= levels(bits) * scale, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))


class STEQuantize(torch.autograd.Function):
    """``Q(w)`` forward, :func:`ste_backward` backward (usable in any autograd graph)."""

    @staticmethod
    def forward(ctx, weight, scale, bits):
        ctx.save_for_backward(weight, scale)
        ctx.bits = bits
        return quantize(weight, scale, bits)

    @staticmethod
    def backward(ctx, grad):
        weight, scale = ctx.saved_tensors
        return ste_backward(weight, grad, scale, ctx.bits), None, None


def ste_quantize(weight: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantize ``weight`` with straight-through gradients (see :class:`STEQuantize`)."""
    return STEQuantize.apply(weight, scale, bits)


def prox_quant(weight: torch.Tensor, scale: torch.Tensor, bits: int, threshold: torch.Tensor | float) -> torch.Tensor:
    """Proximal operator of ``threshold · Σ |w − Q(w)|``: each weight moves by at most
    ``threshold`` towards its nearest grid point (and lands on it when closer than that)."""
    nearest = quantize(weight, scale, bits)
    offset = weight - nearest
    return nearest + torch.sign(offset) * (offset.abs() - threshold).clamp_min(0.0)


# --- fitting a LayerProblem ---------------------------------------------------------------------


class _Adam:
    """Adam with a per-channel step size (broadcast ``lr`` of shape (C_out, 1) or (1, 1))."""

    def __init__(self, like: torch.Tensor, betas=(0.9, 0.999), eps=1e-30):
        self.m, self.v = torch.zeros_like(like), torch.zeros_like(like)
        self.betas, self.eps, self.t = betas, eps, 0

    def step(self, grad: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        b1, b2 = self.betas
        self.t += 1
        self.m.mul_(b1).add_(grad, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denominator = (self.v / (1 - b2 ** self.t)).sqrt_().add_(self.eps)
        return (self.m / denominator).mul_(lr / (1 - b1 ** self.t))


class _Objective:
    """``f(W) + (ρ/n)‖W − WT‖²``, the engine's ridge-regularised layer objective, with its
    gradient and its value from one product with the curvature."""

    def __init__(self, problem: LayerProblem, ridge: float):
        if ridge < 0:
            raise ValueError(f"ridge must be >= 0, got {ridge!r}")
        self.problem = problem
        self.rhs_t = problem.rhs_t(problem.teacher_weight.dtype)
        self.coef = ridge * problem.curvature_scale / problem.n
        self.anchor = problem.teacher_weight
        # the many products of an iterative fit use the cheaper form: the raw rows X̃ (R̃, D) when
        # D >= 2·R̃ (few images, deep layers), else a float32 copy of the Gram matrix
        self.rows = problem.keeps_rows and problem.dim >= 2 * problem.x_rows.shape[0]
        self.gram32 = None if self.rows else problem.gram.to(problem.teacher_weight.dtype)

    def apply_gram(self, w: torch.Tensor) -> torch.Tensor:
        return self.problem.apply_gram(w) if self.rows else w @ self.gram32

    def grad(self, w: torch.Tensor) -> tuple[torch.Tensor, float]:
        """``(∇, value)`` at ``w`` (C_out, D)."""
        p = self.problem
        if self.rows:  # residual Ỹ − X̃Wᵀ (C_out, R̃) is small: f = ‖residual‖²/n exactly
            residual = p.y_rows.T - w @ p.x_rows.T
            value = float(residual.double().pow(2).sum()) / p.n
            g = (residual @ p.x_rows) * (-2.0 / p.n)
        else:  # n·f = c − 2·Σ w∘Bᵀ + Σ w∘(WG) = c + Σ w∘(n/2·∇f − Bᵀ); row sums in float32, total in float64
            g = (w @ self.gram32 - self.rhs_t) * (2.0 / p.n)
            value = (p.const + float((w * (0.5 * p.n * g - self.rhs_t)).sum(1).double().sum())) / p.n
        if self.coef:
            diff = w - self.anchor
            value += self.coef * float(diff.pow(2).sum(1).double().sum())
            g = g + (2 * self.coef) * diff
        return g, value

    def value(self, w: torch.Tensor) -> float:
        return self.grad(w)[1]

    def refit_scale(self, z: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Exact minimiser over the scale of the objective at ``scale · z`` for integer codes ``z``
        (per row when ``scale`` is (C_out, 1), shared when (1, 1)); keeps the old scale where the
        codes are all zero or the minimiser is not positive."""
        rho = self.coef * self.problem.n
        z = z.to(self.rhs_t.dtype)
        zg = self.apply_gram(z)
        linear = (z * (self.rhs_t + rho * self.anchor)).double().sum(1, keepdim=True)
        quad = (z * zg).double().sum(1, keepdim=True) + rho * z.double().pow(2).sum(1, keepdim=True)
        if scale.shape[0] == 1:
            linear, quad = linear.sum().reshape(1, 1), quad.sum().reshape(1, 1)
        new = linear / quad.clamp_min(1e-300)
        ok = (quad > 0) & (new > 0)
        return torch.where(ok, new.to(scale.dtype), scale)


def _start(problem: LayerProblem, target, start: Fit | None, ridge: float) -> Fit:
    return start if start is not None else fit_lstsq(problem, target, ridge=ridge)


def _support(problem: LayerProblem, start: Fit) -> torch.Tensor | None:
    """A multiplier that zeroes what ``start`` pruned: (1, D) for channels, (C_out, D) for weights."""
    if start.mask is not None:
        return start.mask.to(problem.teacher_weight.dtype)
    if start.channels is not None:
        column = torch.zeros(problem.dim, dtype=problem.teacher_weight.dtype, device=problem.teacher_weight.device)
        idx = (start.channels[:, None] * problem.group_size + torch.arange(problem.group_size, device=column.device)).reshape(-1)
        column[idx] = 1.0
        return column[None, :]
    return None


def _finish(objective: _Objective, weight: torch.Tensor, scale: torch.Tensor, bits: int, start: Fit,
            support, refit_scale: bool, info: dict) -> Fit:
    """Project onto the grid, optionally re-solve the scale for the codes, package a Fit."""
    z = codes(weight, scale, bits)
    if support is not None:
        z = z * support
    value = objective.value(z * scale)
    if refit_scale:
        new_scale = objective.refit_scale(z, scale)
        new_value = objective.value(z * new_scale)
        if new_value <= value:
            scale, value = new_scale, new_value
    final = z * scale
    info = {**info, "bits": bits, "objective": value, "scale": scale}
    return Fit(final, channels=start.channels, mask=start.mask, info=info)


def _common(problem, target, start, bits, granularity, scale, ridge, steps, lr):
    bits = check_bits(bits)
    _check_choice("granularity", granularity, GRANULARITIES)
    _check_choice("scale", scale, SCALES)
    checks.integer("steps", steps, low=0)
    checks.number("lr (in grid steps)", lr, above=0)
    start = _start(problem, target, start, ridge)
    objective = _Objective(problem, ridge)
    support = _support(problem, start)
    weight = start.weight.clone() if support is None else start.weight * support
    grid = choose_scale(weight, bits, granularity, scale)
    return bits, start, objective, support, weight, grid


def fit_round(problem: LayerProblem, target=None, *, bits: int = 4, granularity: str = "channel", scale: str = "mse",
              ridge: float = DEFAULT_RIDGE, start: Fit | None = None, refit_scale: bool = False) -> Fit:
    """Round the starting weights to the nearest grid point (no data used beyond ``start``)."""
    bits, start, objective, support, weight, grid = _common(problem, target, start, bits, granularity, scale, ridge, 0, 1.0)
    return _finish(objective, weight, grid, bits, start, support, refit_scale, {"quantizer": "round"})


def fit_ste(problem: LayerProblem, target=None, *, bits: int = 4, granularity: str = "channel", scale: str = "mse",
            steps: int = DEFAULT_STEPS, lr: float = DEFAULT_LR["ste"], ridge: float = DEFAULT_RIDGE,
            start: Fit | None = None, refit_scale: bool = True) -> Fit:
    """Straight-through estimator: Adam on latent weights with gradients taken at ``Q(W)``;
    returns the best quantized iterate (see the module docstring)."""
    bits, start, objective, support, latent, grid = _common(problem, target, start, bits, granularity, scale, ridge, steps, lr)
    adam = _Adam(latent)
    best, best_value, best_step = None, math.inf, 0
    for step in range(steps + 1):
        wq = quantize(latent, grid, bits)
        grad, value = objective.grad(wq)
        if value < best_value:
            best, best_value, best_step = wq, value, step
        if step == steps:
            break
        grad = ste_backward(latent, grad, grid, bits)
        if support is not None:
            grad = grad * support
        latent = latent - adam.step(grad, grid * (lr * (1 - step / steps)))
    return _finish(objective, best, grid, bits, start, support, refit_scale,
                   {"quantizer": "ste", "steps": steps, "lr": lr, "best_step": best_step})


def fit_proxquant(problem: LayerProblem, target=None, *, bits: int = 4, granularity: str = "channel", scale: str = "mse",
                  steps: int = DEFAULT_STEPS, lr: float = DEFAULT_LR["proxquant"], ridge: float = DEFAULT_RIDGE,
                  start: Fit | None = None, refit_scale: bool = True, strength: float = DEFAULT_STRENGTH) -> Fit:
    """ProxQuant: Adam gradient steps, each followed by the proximal step towards the nearest grid
    point with a threshold rising linearly to ``strength`` Adam steps (``strength·lr`` grid steps);
    ends with an exact projection onto the grid."""
    checks.number("strength", strength, above=0)
    bits, start, objective, support, weight, grid = _common(problem, target, start, bits, granularity, scale, ridge, steps, lr)
    adam = _Adam(weight)
    for step in range(steps):
        grad, _ = objective.grad(weight)
        if support is not None:
            grad = grad * support
        moved = weight - adam.step(grad, grid * lr)
        weight = prox_quant(moved, grid, bits, grid * (lr * strength * (step + 1) / steps))
    return _finish(objective, weight, grid, bits, start, support, refit_scale,
                   {"quantizer": "proxquant", "steps": steps, "lr": lr})


FIT_FUNCTIONS = {"ste": fit_ste, "proxquant": fit_proxquant, "round": fit_round}


def fit(quantizer: str, problem: LayerProblem, target=None, **options) -> Fit:
    """Fit one layer's quantized weights with the named quantizer (``ste``, ``proxquant``, ``round``)."""
    _check_choice("quantizer", quantizer, QUANTIZERS)
    if problem.has_bias or problem.groups > 1 or isinstance(problem.conv, nn.Linear):
        raise ValueError("quantization is defined for bias-free, ungrouped Conv2d layers; this layer is a "
                         f"{type(problem.conv).__name__} (bias={problem.has_bias}, groups={problem.groups})")
    return FIT_FUNCTIONS[quantizer](problem, target, **options)


# --- the option of xdnb.distill.compress -------------------------------------------------------


@dataclass(frozen=True)
class Quantization:
    """What :func:`xdnb.distill.compress` does with ``quantize=``.

    ``bits`` (2..8), ``quantizer`` (``ste``, ``proxquant``, ``round``), ``granularity``
    (``channel``, ``tensor``), ``scale`` (``mse``, ``max``), ``steps`` and ``lr`` (grid steps;
    ``None`` = the quantizer's default in :data:`DEFAULT_LR`) of the fit, ``refit_scale``, and
    ``first_conv``: also quantize the first conv (image input, not a pruning site; fitted to the
    teacher's output on the images, where every objective is plain regression since hT = hS).
    ``ridge``: the quantized fit's ridge towards the teacher's weights (``None`` = the engine's
    ``ridge``, which the full-precision start uses too).
    """

    bits: int
    quantizer: str = "ste"
    granularity: str = "channel"
    scale: str = "mse"
    steps: int = DEFAULT_STEPS
    lr: float | None = None
    refit_scale: bool = True
    first_conv: bool = True
    ridge: float | None = None

    def __post_init__(self):
        check_bits(self.bits)
        _check_choice("quantizer", self.quantizer, QUANTIZERS)
        _check_choice("granularity", self.granularity, GRANULARITIES)
        _check_choice("scale", self.scale, SCALES)
        checks.integer("quantize steps", self.steps, low=0)
        checks.number("quantize ridge", self.ridge, low=0, optional=True)
        for name in ("refit_scale", "first_conv"):
            checks.flag(f"quantize {name}", getattr(self, name))
        if self.lr is None:
            object.__setattr__(self, "lr", DEFAULT_LR.get(self.quantizer))
        else:
            checks.number("quantize lr (in grid steps)", self.lr, above=0)

    def options(self) -> dict:
        """Keyword arguments of this quantizer's fit function (``round`` takes no steps or lr)."""
        common = {"bits": self.bits, "granularity": self.granularity, "scale": self.scale,
                  "refit_scale": self.refit_scale, **({"ridge": self.ridge} if self.ridge is not None else {})}
        if self.quantizer == "round":
            return common
        return {**common, "steps": self.steps, **({"lr": self.lr} if self.lr is not None else {})}

    def describe(self) -> dict:
        return dataclasses.asdict(self)


def parse(value) -> Quantization | None:
    """``None``, a bit width (int), a dict of :class:`Quantization` fields, or a Quantization."""
    if value is None or isinstance(value, Quantization):
        return value
    if isinstance(value, dict):
        known = {f.name for f in dataclasses.fields(Quantization)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown quantize option {unknown[0]!r}; allowed: {', '.join(sorted(known))}")
        if "bits" not in value:
            raise ValueError(f"quantize needs 'bits' ({MIN_BITS}..{MAX_BITS}), got {value!r}")
        return Quantization(**value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Quantization(check_bits(value))
    raise ValueError(f"quantize must be None, a bit width, a dict or a Quantization, got {value!r}")


@torch.no_grad()
def round_model(model: nn.Module, bits: int, granularity: str = "channel", scale: str = "mse") -> nn.Module:
    """A copy of ``model`` with every conv weight rounded to its nearest grid point (data-free)."""
    rounded = copy.deepcopy(model)
    for module in rounded.modules():
        if isinstance(module, nn.Conv2d):
            w = module.weight.reshape(module.out_channels, -1)
            module.weight.copy_(quantize(w, choose_scale(w, bits, granularity, scale), bits).reshape(module.weight.shape))
    return rounded
