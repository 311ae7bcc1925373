"""One layer's distillation objective as a linear least-squares problem in the student's weights.

For a conv layer with weights ``W`` (C_out, C_in, kh, kw), flattened to ``W: (C_out, D)`` with
``D = C_in·kh·kw`` (column ``c·kh·kw + k`` belongs to input channel ``c``), the pre-activation
output on an input ``x`` is ``unfold(x) @ W.T`` with ``unfold(x): (R, D)``, ``R = N·H'·W'``.
An objective of :mod:`xdnb.objectives` is a sum of terms ``w_t·‖Y_t − X_t Wᵀ‖² / (R·C_out)`` with
``X_t`` the unfolded student-side input mixture and ``Y_t = WT * (teacher-side mixture)`` fixed.
Stacking ``X̃ = [√w_t X_t]``, ``Ỹ = [√w_t Y_t]``::

    f(W) = ‖Ỹ − X̃ Wᵀ‖² / n,   n = R·C_out
         = (c − 2·tr(W B) + tr(W G Wᵀ)) / n,   G = X̃ᵀX̃ (D, D),  B = X̃ᵀỸ (D, C_out),  c = ‖Ỹ‖²

Everything that does not depend on W (the teacher's outputs, the mixtures, G, B, c) is computed
once per layer. Products with the curvature use whichever form is cheaper: the Gram matrix when
there are more rows than columns (many images, shallow layers), the raw rows otherwise (few-shot,
deep layers: R̃ = R·terms < D).
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.nn import functional as F

from .objectives import Objective, mix

#: Rows processed at once when unfolding (bounds peak memory at about rows × D floats).
ROW_CHUNK = 1 << 16


def unfold_rows(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """Patches of ``x`` (N, C_in, H, W) as rows (N·H'·W', C_in·kh·kw) matching ``conv``'s weight."""
    cols = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)  # (N, D, L)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def output_rows(y: torch.Tensor) -> torch.Tensor:
    """Conv outputs (N, C_out, H', W') as rows (N·H'·W', C_out), ordered like :func:`unfold_rows`."""
    return y.flatten(2).transpose(1, 2).reshape(-1, y.shape[1])


def check_conv(conv: nn.Module, name: str = "layer") -> None:
    """The engine fits bias-free, ungrouped 2-d convolutions (VGG and ResNet convs are)."""
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"{name} is a {type(conv).__name__}, not a Conv2d")
    if conv.bias is not None or conv.groups != 1:
        raise ValueError(f"{name}: only bias-free, groups=1 convolutions are supported (bias={conv.bias is not None}, groups={conv.groups})")


class LayerProblem:
    """The quadratic ``f(W)`` of one layer for a fixed objective and fixed inputs.

    Built from the teacher's conv, the objective and the captured inputs ``hT``, ``hS``
    (N, C_in, H, W); ``teacher_outputs`` = ``(WT*hT, WT*hS)`` if already computed. ``W``
    arguments are (C_out, D) float tensors on the problem's device.
    """

    def __init__(self, objective: Objective, teacher_conv: nn.Conv2d, hT: torch.Tensor, hS: torch.Tensor,
                 teacher_outputs: tuple[torch.Tensor, torch.Tensor] | None = None):
        check_conv(teacher_conv, "teacher layer")
        if hT.shape != hS.shape:
            raise ValueError(f"teacher and student inputs differ in shape: {tuple(hT.shape)} vs {tuple(hS.shape)}")
        self.conv = teacher_conv
        self.teacher_weight = teacher_conv.weight.detach().reshape(teacher_conv.out_channels, -1)
        self.c_out, self.dim = self.teacher_weight.shape
        self.group_size = self.dim // teacher_conv.in_channels
        terms = [t for t in objective.terms if t.weight != 0.0]
        if teacher_outputs is None:
            with torch.no_grad():
                # the teacher's two convolutions, once per layer: targets are mixtures of them
                teacher_outputs = teacher_conv(hT), teacher_conv(hS)
        yT, yS = teacher_outputs
        self.rows_per_term = yT.numel() // self.c_out
        self.n = self.rows_per_term * self.c_out
        self.terms = [(t.weight, t.teacher_mix, t.student_mix) for t in terms]
        self._sources = (hT, hS, yT, yS)
        self.total_rows = self.rows_per_term * len(terms)
        self.keeps_rows = self.total_rows < self.dim
        self._gram = self._rhs = None
        self.x_rows = self.y_rows = None
        self.const = 0.0
        self._build()

    def _term_chunks(self):
        """Yield ``(√w·X, √w·Y)`` row chunks of every term."""
        hT, hS, yT, yS = self._sources
        n_images = hT.shape[0]
        per_image = max(1, self.rows_per_term // n_images)
        step = max(1, ROW_CHUNK // per_image)
        for weight, teacher_mix, student_mix in self.terms:
            scale = weight ** 0.5
            for start in range(0, n_images, step):
                sl = slice(start, start + step)
                x = unfold_rows(mix(student_mix, hT[sl], hS[sl]), self.conv)
                y = output_rows(mix(teacher_mix, yT[sl], yS[sl]))
                yield scale * x, scale * y

    def _build(self) -> None:
        const = 0.0
        if self.keeps_rows:
            xs, ys = zip(*self._term_chunks())
            self.x_rows, self.y_rows = torch.cat(xs), torch.cat(ys)
            const = float(self.y_rows.double().pow(2).sum())
        else:
            gram = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=self.teacher_weight.device)
            rhs = torch.zeros(self.dim, self.c_out, dtype=torch.float64, device=self.teacher_weight.device)
            for x, y in self._term_chunks():
                gram += (x.T @ x).double()
                rhs += (x.T @ y).double()
                const += float(y.double().pow(2).sum())
            self._gram, self._rhs = gram, rhs
        self.const = const
        self._sources = None  # the raw activations are no longer needed

    @property
    def gram(self) -> torch.Tensor:
        """``G = X̃ᵀX̃`` (D, D), float64."""
        if self._gram is None:
            x = self.x_rows.double()
            self._gram = x.T @ x
        return self._gram

    @property
    def rhs(self) -> torch.Tensor:
        """``B = X̃ᵀỸ`` (D, C_out), float64."""
        if self._rhs is None:
            self._rhs = self.x_rows.double().T @ self.y_rows.double()
        return self._rhs

    @functools.cached_property
    def curvature_scale(self) -> float:
        """``tr(G)/D``: the mean curvature per weight, the unit of the ridge strength."""
        if self.keeps_rows:
            return float(self.x_rows.double().pow(2).sum()) / self.dim
        return float(torch.diagonal(self._gram).sum()) / self.dim

    @functools.cached_property
    def _kernel(self) -> torch.Tensor:
        """``X̃X̃ᵀ`` (R̃, R̃) in float32 (raw-row form only)."""
        return self.x_rows @ self.x_rows.T

    def _restricted_kernel(self, columns: torch.Tensor) -> torch.Tensor:
        """``X̃ₖX̃ₖᵀ`` for the columns ``columns``: from the full kernel minus the dropped columns
        when fewer are dropped than kept (channel selection drops a few at a time)."""
        if len(columns) == self.dim:
            return self._kernel
        dropped = torch.ones(self.dim, dtype=torch.bool, device=columns.device)
        dropped[columns] = False
        if int(dropped.sum()) < len(columns):
            xd = self.x_rows[:, dropped]
            return self._kernel - xd @ xd.T
        xk = self.x_rows[:, columns]
        return xk @ xk.T

    @functools.cached_property
    def _gram32(self) -> torch.Tensor:
        """``G`` in float32, for the many products of the iterative solvers."""
        return self.gram.float()

    def apply_gram(self, w: torch.Tensor) -> torch.Tensor:
        """``W G`` (C_out, D) for ``W`` (C_out, D), through the cheaper of the two forms: the raw
        rows cost two products of R̃·D·C_out, the Gram matrix one of D²·C_out."""
        if self.keeps_rows and 2 * self.total_rows < self.dim:
            return (w @ self.x_rows.T) @ self.x_rows
        if w.dtype == torch.float64:
            return w @ self.gram
        return w @ self._gram32

    def rhs_t(self, dtype: torch.dtype) -> torch.Tensor:
        """``Bᵀ`` (C_out, D) in ``dtype``."""
        if self.keeps_rows:
            return (self.y_rows.T @ self.x_rows).to(dtype)
        return self._rhs.T.to(dtype)

    def loss(self, w: torch.Tensor) -> float:
        """``f(W)``, the objective's value (an MSE), for ``W`` (C_out, D)."""
        if self.keeps_rows:
            return float((self.y_rows - self.x_rows @ w.T).double().pow(2).sum()) / self.n
        w64 = w.double()
        quad = (w64 @ self._gram * w64).sum() - 2 * (w64 * self._rhs.T).sum()
        return float(self.const + quad) / self.n

    def grad(self, w: torch.Tensor, rhs_t: torch.Tensor | None = None) -> torch.Tensor:
        """``∇f(W) = 2(W G − Bᵀ)/n``; pass ``rhs_t`` (from :meth:`rhs_t`) to avoid recomputing it."""
        if rhs_t is None:
            rhs_t = self.rhs_t(w.dtype)
        return (self.apply_gram(w) - rhs_t) * (2.0 / self.n)

    def lipschitz(self, iterations: int = 30) -> float:
        """An estimate of the gradient's Lipschitz constant ``2·λ_max(G)/n`` by power iteration."""
        generator = torch.Generator().manual_seed(0)
        v = torch.randn(1, self.dim, generator=generator).to(self.teacher_weight)
        top = 0.0
        for _ in range(iterations):
            gv = self.apply_gram(v)
            top = float(gv.norm())
            if top == 0.0:
                return 0.0
            v = gv / top
        return 2.0 * top / self.n * 1.01

    def solve(self, columns: torch.Tensor | None = None, ridge: float = 0.1, anchor: torch.Tensor | None = None) -> torch.Tensor:
        """Closed-form minimiser of ``f(W) + ρ‖W − anchor‖²`` with W zero outside ``columns``.

        ``columns``: indices (into D) of the free columns, shared by all output channels (a
        channel mask expanded to columns); ``None`` frees all. ``anchor`` (C_out, D) defaults to
        the teacher's weights; ``ρ = ridge · tr(G)/D``. ``ridge = 0`` gives the anchor plus the
        minimum-norm least-squares correction. Returns W (C_out, D) in the teacher's dtype.
        """
        anchor = self.teacher_weight if anchor is None else anchor
        if columns is None:
            columns = torch.arange(self.dim, device=anchor.device)
        rho = ridge * self.curvature_scale
        a = anchor[:, columns].double()
        if self.keeps_rows:
            # dual form: Δᵀ = X̃ₖᵀ (X̃ₖX̃ₖᵀ + ρI)⁻¹ (Ỹ − X̃ₖ aᵀ), cost R̃²·D instead of D³; the
            # products in float32 (like the Gram form), the factorisation in float64
            xk = self.x_rows[:, columns]
            residual = self.y_rows.double() - (xk @ anchor[:, columns].T).double()
            kernel = self._restricted_kernel(columns).double()
            delta_t = (xk.T @ _psd_solve(kernel, residual, rho).to(xk.dtype)).double()
        else:
            gram = self.gram[columns][:, columns]
            residual = self.rhs[columns] - gram @ a.T
            delta_t = _psd_solve(gram, residual, rho)
        w = torch.zeros_like(anchor, dtype=torch.float64)
        w[:, columns] = a + delta_t.T
        return w.to(anchor.dtype)

    def solve_masked(self, mask: torch.Tensor, ridge: float = 0.1, anchor: torch.Tensor | None = None,
                     start: torch.Tensor | None = None, iterations: int = 200, tol: float = 1e-6) -> torch.Tensor:
        """Minimise ``f(W) + ρ‖W − anchor‖²`` with W zero where ``mask`` (C_out, D) is False.

        Each output channel has its own support (unstructured sparsity), so this runs a batched,
        Jacobi-preconditioned conjugate gradient over all channels at once, from ``start`` (default:
        the masked anchor), until every channel's residual is below ``tol`` relative to its
        right-hand side or after ``iterations`` steps. Curvature products run in float32 (the
        cheaper of the Gram and raw-row forms, see :meth:`apply_gram`), the iteration in float64.
        ``ridge`` must be positive here (the problem is then strictly convex).
        """
        if ridge <= 0:
            raise ValueError(f"solve_masked needs ridge > 0, got {ridge!r}")
        anchor = self.teacher_weight if anchor is None else anchor
        rho = ridge * self.curvature_scale
        m = mask.to(torch.float64)
        a = anchor.double()
        dtype = self.teacher_weight.dtype

        def hess(v):
            return (self.apply_gram(v.to(dtype)).double() + rho * v) * m

        if self.keeps_rows:
            diag = self.x_rows.double().pow(2).sum(0)
        else:
            diag = torch.diagonal(self.gram)
        b = (self.rhs_t(torch.float64) + rho * a) * m
        precond = m / (diag + rho)
        w = (a if start is None else start.double()) * m
        r = b - hess(w)
        z = r * precond
        p = z.clone()
        rz = (r * z).sum(1, keepdim=True)
        threshold = (tol ** 2) * b.pow(2).sum(1, keepdim=True)
        for _ in range(iterations):
            if bool((r.pow(2).sum(1, keepdim=True) <= threshold).all()):
                break
            hp = hess(p)
            step = rz / (p * hp).sum(1, keepdim=True).clamp_min(1e-300)
            w = w + step * p
            r = r - step * hp
            z = r * precond
            rz_new = (r * z).sum(1, keepdim=True)
            p = z + (rz_new / rz.clamp_min(1e-300)) * p
            rz = rz_new
        return w.to(anchor.dtype)


def _psd_solve(matrix: torch.Tensor, rhs: torch.Tensor, rho: float) -> torch.Tensor:
    """Solve ``(matrix + ρI) x = rhs`` for symmetric PSD ``matrix``; minimum-norm when ρ = 0."""
    if rho > 0:
        shifted = matrix + rho * torch.eye(len(matrix), dtype=matrix.dtype, device=matrix.device)
        factor, info = torch.linalg.cholesky_ex(shifted)
        if int(info) == 0:
            return torch.cholesky_solve(rhs, factor)
    return torch.linalg.pinv(matrix + rho * torch.eye(len(matrix), dtype=matrix.dtype, device=matrix.device), hermitian=True) @ rhs
