"""One layer's distillation objective as a linear least-squares problem in the student's weights.

For a conv layer with weights ``W`` (C_out, C_in, kh, kw), flattened to ``W: (C_out, D)`` with
``D = C_in·kh·kw`` (column ``c·kh·kw + k`` belongs to input channel ``c``), the pre-activation
output on an input ``x`` is ``unfold(x) @ W.T`` with ``unfold(x): (R, D)``, ``R = N·H'·W'``.
An objective of :mod:`xdnb.objectives` is a sum of terms ``w_t·‖Y_t − X_t Wᵀ‖² / (R·C_out)`` with
``X_t`` the unfolded student-side input mixture and ``Y_t = WT * (teacher-side mixture)`` fixed.
Stacking ``X̃ = [√w_t X_t]``, ``Ỹ = [√w_t Y_t]``::

    f(W) = ‖Ỹ − X̃ Wᵀ‖² / n,   n = R·C_out
         = (c − 2·tr(W B) + tr(W G Wᵀ)) / n,   G = X̃ᵀX̃ (D, D),  B = X̃ᵀỸ (D, C_out),  c = ‖Ỹ‖²

Every kind of layer the engine fits is this problem:

- a **bias** is one more column of ones in ``X`` (the last column of ``W``); the mixtures of the
  objectives are convex (their coefficients sum to 1), so the bias enters every term once. The
  bias column is never pruned and is pulled towards the teacher's bias by the same ridge as the
  weights (``ρ‖W − WT‖²`` over all columns, bias included);
- a **grouped** conv (``groups = g``, depthwise included) is ``g`` independent problems, one per
  group of output channels, each with its own ``G``, ``B`` and ridge scale, held as batched
  (g, D, D) tensors (``D = C_in/g·kh·kw``, plus one for a bias); ``W`` keeps its (C_out, D) layout,
  rows grouped as in the layer's weight;
- a **linear** layer is a 1×1 conv over its input features (rows = samples).

Everything that does not depend on W (the teacher's outputs, the mixtures, G, B, c) is computed
once per layer. Products with the curvature use whichever form is cheaper: the Gram matrix when
there are more rows than columns (many images, shallow layers), the raw rows otherwise (few-shot,
deep layers: R̃ = R·terms < D). A layer whose chosen form would exceed :data:`MEMORY_CAP` bytes
tries the other form, and raises :class:`LayerTooLarge` when neither fits (the engine then leaves
the layer unfitted and says so), never an out-of-memory crash.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.nn import functional as F

from .objectives import Objective, mix

#: Rows processed at once when unfolding (bounds peak memory at about rows × D floats).
ROW_CHUNK = 1 << 16
#: Largest system (bytes) a layer may build: Gram form ~3 copies of g·D² float64, raw-row form
#: rows·D float32 plus the R̃² kernel in float64.
MEMORY_CAP = 4 << 30


class LayerTooLarge(ValueError):
    """The layer's least-squares system would need more than :data:`MEMORY_CAP` bytes."""


def unfold_rows(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """Inputs as rows matching ``layer``'s flattened weight: patches of ``x`` (N, C_in, H, W) as
    (N·H'·W', C_in·kh·kw) for a conv, ``x`` (N, ..., F) as (N·..., F) for a linear."""
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    cols = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)  # (N, D, L)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def output_rows(y: torch.Tensor) -> torch.Tensor:
    """Layer outputs as rows (R, C_out), ordered like :func:`unfold_rows`: conv outputs
    (N, C_out, H', W'), linear outputs (N, ..., C_out)."""
    if y.ndim == 4:
        return y.flatten(2).transpose(1, 2).reshape(-1, y.shape[1])
    return y.reshape(-1, y.shape[-1])


def check_layer(layer: nn.Module, name: str = "layer") -> None:
    """The engine fits ``nn.Conv2d`` (any kernel, stride, padding, dilation, groups, bias) and
    ``nn.Linear`` layers; anything else is a ValueError naming it."""
    if not isinstance(layer, (nn.Conv2d, nn.Linear)):
        raise ValueError(f"{name} is a {type(layer).__name__}; xdnb fits nn.Conv2d and nn.Linear layers")
    if isinstance(layer, nn.Conv2d) and layer.padding_mode != "zeros":
        raise ValueError(f"{name}: padding_mode {layer.padding_mode!r} is not supported (only 'zeros')")


def flat_weight(layer: nn.Module) -> torch.Tensor:
    """``layer``'s weight (and bias, as the last column) as (C_out, D)."""
    w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
    if layer.bias is not None:
        w = torch.cat([w, layer.bias.detach()[:, None]], 1)
    return w


@torch.no_grad()
def write_flat_weight(layer: nn.Module, weight: torch.Tensor) -> None:
    """Set ``layer``'s weight (and bias) from a (C_out, D) matrix laid out as :func:`flat_weight`."""
    columns = layer.weight[0].numel()
    layer.weight.copy_(weight[:, :columns].reshape(layer.weight.shape))
    if layer.bias is not None:
        layer.bias.copy_(weight[:, columns])


class Chunks:
    """One layer's captured data, a chunk of images at a time: iterating yields ``(hT, hS, yT, yS)``,
    the teacher's and the student's inputs of the layer ((n, C_in, H, W) for a conv, (n, ..., F) for
    a linear) and the teacher layer's outputs on them (``WT*hT``, ``WT*hS``), for ``images`` images in
    all; ``output_size``: the elements of one image's output (C_out·H'·W'). Iterable more than once:
    ``make()`` returns a fresh iterable each time (a list, or a generator that recomputes the chunks
    so that only one chunk is held: :data:`xdnb.distill.CAPTURE_BUDGET`)."""

    def __init__(self, make, images: int, output_size: int):
        self._make, self.images, self.output_size = make, images, output_size

    @classmethod
    def of(cls, hT: torch.Tensor, hS: torch.Tensor, yT: torch.Tensor, yS: torch.Tensor) -> "Chunks":
        """All images as one chunk."""
        chunk = [(hT, hS, yT, yS)]
        return cls(lambda: chunk, len(hT), yT.numel() // max(len(yT), 1))

    def __iter__(self):
        return iter(self._make())


class LayerProblem:
    """The quadratic ``f(W)`` of one layer for a fixed objective and fixed inputs.

    Built from the teacher's layer (conv or linear), the objective and the captured inputs
    ``hT``, ``hS`` ((N, C_in, H, W) for a conv, (N, F) for a linear); ``teacher_outputs`` =
    ``(WT*hT, WT*hS)`` if already computed. ``W`` arguments are (C_out, D) float tensors on the
    problem's device, D = :attr:`weight_dim` (+1 for a bias column).
    """

    def __init__(self, objective: Objective, teacher_conv: nn.Module, hT: torch.Tensor | None = None,
                 hS: torch.Tensor | None = None, teacher_outputs: tuple[torch.Tensor, torch.Tensor] | None = None, *,
                 chunks: "Chunks | None" = None):
        check_layer(teacher_conv, "teacher layer")
        if chunks is None:
            if hT is None or hS is None:
                raise ValueError("LayerProblem needs the inputs hT and hS, or chunks")
            if hT.shape != hS.shape:
                raise ValueError(f"teacher and student inputs differ in shape: {tuple(hT.shape)} vs {tuple(hS.shape)}")
            if teacher_outputs is None:
                with torch.no_grad():
                    # the teacher's two convolutions, once per layer: targets are mixtures of them
                    teacher_outputs = teacher_conv(hT), teacher_conv(hS)
            chunks = Chunks.of(hT, hS, *teacher_outputs)
        elif (hT, hS, teacher_outputs) != (None, None, None):
            raise ValueError("give LayerProblem either hT, hS (and teacher_outputs) or chunks, not both")
        self.conv = teacher_conv
        self.groups = teacher_conv.groups if isinstance(teacher_conv, nn.Conv2d) else 1
        self.has_bias = teacher_conv.bias is not None
        self.teacher_weight = flat_weight(teacher_conv)
        self.c_out, self.dim = self.teacher_weight.shape
        self.weight_dim = self.dim - int(self.has_bias)
        self.group_size = teacher_conv.weight[0, 0].numel()
        self.c_in = self.weight_dim // self.group_size  # input channels per group
        terms = [t for t in objective.terms if t.weight != 0.0]
        self.rows_per_term = chunks.output_size * chunks.images // self.c_out
        self.n = self.rows_per_term * self.c_out
        self.terms = [(t.weight, t.teacher_mix, t.student_mix) for t in terms]
        self._sources = chunks
        self.total_rows = self.rows_per_term * len(terms)
        self.keeps_rows = self._choose_form()
        self._gram = self._rhs = None
        self.x_rows = self.y_rows = None
        self.const = 0.0
        self._build()

    def _choose_form(self) -> bool:
        """Raw rows (True) or Gram matrix (False): the cheaper one that fits :data:`MEMORY_CAP`."""
        rows_bytes = 4 * self.total_rows * (self.dim + self.c_out) + 8 * self.total_rows ** 2
        gram_bytes = 3 * 8 * self.groups * self.dim * (self.dim + self.c_out // self.groups)
        fits_rows, fits_gram = rows_bytes <= MEMORY_CAP and self.groups == 1, gram_bytes <= MEMORY_CAP
        prefer_rows = self.groups == 1 and self.total_rows < self.dim
        if (prefer_rows and fits_rows) or (fits_rows and not fits_gram):
            return True
        if fits_gram:
            return False
        raise LayerTooLarge(f"its least-squares system needs {min(rows_bytes, gram_bytes) / 2**30:.1f} GiB "
                            f"({self.total_rows} rows x {self.dim} columns) > the {MEMORY_CAP / 2**30:.1f} GiB cap "
                            "(xdnb.quadratic.MEMORY_CAP)")

    def _term_chunks(self):
        """Yield ``(√w·X, √w·Y)`` row chunks of every term, chunk of images by chunk: (R, D) and
        (R, C_out), or batched per group (g, R, D) and (g, R, C_out/g) for a grouped conv."""
        for hT, hS, yT, yS in self._sources:
            if hT.shape != hS.shape:
                raise ValueError(f"teacher and student inputs differ in shape: {tuple(hT.shape)} vs {tuple(hS.shape)}")
            n_images = hT.shape[0]
            per_image = max(1, yT.numel() // self.c_out // n_images)
            step = max(1, ROW_CHUNK // per_image)
            for weight, teacher_mix, student_mix in self.terms:
                scale = weight ** 0.5
                for start in range(0, n_images, step):
                    sl = slice(start, start + step)
                    x = unfold_rows(mix(student_mix, hT[sl], hS[sl]), self.conv)
                    y = output_rows(mix(teacher_mix, yT[sl], yS[sl]))
                    if self.groups > 1:
                        x = x.reshape(len(x), self.groups, self.weight_dim).transpose(0, 1)
                        y = y.reshape(len(y), self.groups, -1).transpose(0, 1)
                    if self.has_bias:
                        x = torch.cat([x, torch.ones_like(x[..., :1])], -1)
                    yield scale * x, scale * y

    def _build(self) -> None:
        const = 0.0
        if self.keeps_rows:
            xs, ys = zip(*self._term_chunks())
            self.x_rows, self.y_rows = torch.cat(xs), torch.cat(ys)
            const = float(self.y_rows.double().pow(2).sum())
        else:
            device = self.teacher_weight.device
            if self.groups == 1:
                gram = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=device)
                rhs = torch.zeros(self.dim, self.c_out, dtype=torch.float64, device=device)
            else:
                gram = torch.zeros(self.groups, self.dim, self.dim, dtype=torch.float64, device=device)
                rhs = torch.zeros(self.groups, self.dim, self.c_out // self.groups, dtype=torch.float64, device=device)
            for x, y in self._term_chunks():
                gram += (x.transpose(-1, -2) @ x).double()
                rhs += (x.transpose(-1, -2) @ y).double()
                const += float(y.double().pow(2).sum())
            self._gram, self._rhs = gram, rhs
        self.const = const
        self._sources = None  # the raw activations are no longer needed

    # --- columns, channels and the bias -----------------------------------------------------

    def columns_of(self, channels: torch.Tensor) -> torch.Tensor:
        """Column indices (into D) of the given input channels, plus the bias column."""
        channels = torch.as_tensor(channels, device=self.teacher_weight.device)
        offsets = torch.arange(self.group_size, device=channels.device)
        columns = (channels[:, None] * self.group_size + offsets).reshape(-1)
        if self.has_bias:
            columns = torch.cat([columns, torch.tensor([self.weight_dim], device=columns.device)])
        return columns

    def weights_of(self, w: torch.Tensor) -> torch.Tensor:
        """The weight columns of ``w`` (C_out, D): everything but the bias column."""
        return w[:, :self.weight_dim]

    def full_mask(self, weight_mask: torch.Tensor) -> torch.Tensor:
        """A (C_out, D) mask from a (C_out, weight_dim) one: the bias column is always kept."""
        if not self.has_bias:
            return weight_mask
        return torch.cat([weight_mask, torch.ones_like(weight_mask[:, :1])], 1)

    def _by_group(self, w: torch.Tensor) -> torch.Tensor:
        return w.reshape(self.groups, -1, w.shape[-1])

    @property
    def gram(self) -> torch.Tensor:
        """``G = X̃ᵀX̃`` (D, D), float64 ((g, D, D) for a grouped conv)."""
        if self._gram is None:
            x = self.x_rows.double()
            self._gram = x.T @ x
        return self._gram

    @property
    def rhs(self) -> torch.Tensor:
        """``B = X̃ᵀỸ`` (D, C_out), float64 ((g, D, C_out/g) for a grouped conv)."""
        if self._rhs is None:
            self._rhs = self.x_rows.double().T @ self.y_rows.double()
        return self._rhs

    @functools.cached_property
    def curvature_scale(self):
        """``tr(G)/D``: the mean curvature per weight, the unit of the ridge strength (a float;
        a (C_out, 1) tensor, one value per group, for a grouped conv)."""
        if self.keeps_rows:
            return float(self.x_rows.double().pow(2).sum()) / self.dim
        if self.groups == 1:
            return float(torch.diagonal(self._gram).sum()) / self.dim
        per_group = torch.diagonal(self._gram, dim1=1, dim2=2).sum(1) / self.dim
        return per_group.repeat_interleave(self.c_out // self.groups)[:, None]

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
        gram = self.gram if w.dtype == torch.float64 else self._gram32
        if self.groups > 1:
            return torch.bmm(self._by_group(w), gram).reshape(w.shape)
        return w @ gram

    def rhs_t(self, dtype: torch.dtype) -> torch.Tensor:
        """``Bᵀ`` (C_out, D) in ``dtype``."""
        if self.keeps_rows:
            return (self.y_rows.T @ self.x_rows).to(dtype)
        if self.groups > 1:
            return self._rhs.transpose(1, 2).reshape(self.c_out, self.dim).to(dtype)
        return self._rhs.T.to(dtype)

    def diagonal(self) -> torch.Tensor:
        """The diagonal of the curvature for every weight: (D,), or (C_out, D) for a grouped conv."""
        if self.keeps_rows:
            return self.x_rows.double().pow(2).sum(0)
        if self.groups == 1:
            return torch.diagonal(self.gram)
        return torch.diagonal(self.gram, dim1=1, dim2=2).repeat_interleave(self.c_out // self.groups, 0)

    def loss(self, w: torch.Tensor) -> float:
        """``f(W)``, the objective's value (an MSE), for ``W`` (C_out, D)."""
        if self.keeps_rows:
            return float((self.y_rows - self.x_rows @ w.T).double().pow(2).sum()) / self.n
        w64 = w.double()
        quad = (self.apply_gram(w64) * w64).sum() - 2 * (w64 * self.rhs_t(torch.float64)).sum()
        return float(self.const + quad) / self.n

    def grad(self, w: torch.Tensor, rhs_t: torch.Tensor | None = None) -> torch.Tensor:
        """``∇f(W) = 2(W G − Bᵀ)/n``; pass ``rhs_t`` (from :meth:`rhs_t`) to avoid recomputing it."""
        if rhs_t is None:
            rhs_t = self.rhs_t(w.dtype)
        return (self.apply_gram(w) - rhs_t) * (2.0 / self.n)

    def lipschitz(self, iterations: int = 30) -> float:
        """An estimate of the gradient's Lipschitz constant ``2·λ_max(G)/n`` by power iteration."""
        generator = torch.Generator().manual_seed(0)
        v = torch.randn(1 if self.groups == 1 else self.c_out, self.dim, generator=generator).to(self.teacher_weight)
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
        channel mask expanded to columns, see :meth:`columns_of`); ``None`` frees all. ``anchor``
        (C_out, D) defaults to the teacher's weights; ``ρ = ridge · tr(G)/D``. ``ridge = 0`` gives
        the anchor plus the minimum-norm least-squares correction. Returns W (C_out, D) in the
        teacher's dtype.
        """
        anchor = self.teacher_weight if anchor is None else anchor
        if self.groups > 1:
            if columns is not None and len(columns) != self.dim:
                raise ValueError("a grouped conv is solved on all its columns (its input channels are not pruned)")
            return self._solve_grouped(ridge, anchor)
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

    def _solve_grouped(self, ridge: float, anchor: torch.Tensor) -> torch.Tensor:
        """:meth:`solve` of every group at once: batched (g, D, D) systems, each with its own ρ."""
        a = self._by_group(anchor.double())  # (g, C_out/g, D)
        rho = ridge * torch.diagonal(self.gram, dim1=1, dim2=2).sum(1) / self.dim  # (g,)
        residual = self.rhs - self.gram @ a.transpose(1, 2)  # (g, D, C_out/g)
        delta_t = _batched_psd_solve(self.gram, residual, rho)
        return (a + delta_t.transpose(1, 2)).reshape(self.c_out, self.dim).to(anchor.dtype)

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

        # The (C_out, D) float64 buffers are updated in place: at a few million entries a fresh
        # tensor per operation costs more than the arithmetic (each is a new mmap'd block).
        scratch, curved = torch.empty_like(a), torch.empty_like(a)

        def hess(v):  # into ``curved``, overwritten at every call
            curved.copy_(self.apply_gram(v.to(dtype)))
            curved.add_(torch.mul(v, rho, out=scratch))
            return curved.mul_(m)

        diag = self.diagonal()
        b = (self.rhs_t(torch.float64) + rho * a) * m
        precond = m / (diag + rho).clamp_min(1e-300)  # a group with all-zero inputs has no curvature
        w = (a if start is None else start.double()) * m
        r = b - hess(w)
        z = r * precond
        p = z.clone()
        rz = (r * z).sum(1, keepdim=True)
        threshold = (tol ** 2) * b.pow(2).sum(1, keepdim=True)
        for _ in range(iterations):
            if bool((torch.pow(r, 2, out=scratch).sum(1, keepdim=True) <= threshold).all()):
                break
            hp = hess(p)
            # A row whose search direction has no (or, from float32 curvature products, negative)
            # curvature, or whose residual is exactly zero, has converged: it stops moving instead
            # of dividing by ~0 (which overflowed to NaN for some channels on some CPUs).
            curvature = torch.mul(p, hp, out=scratch).sum(1, keepdim=True)
            step = torch.where(curvature > 0, rz / curvature.clamp_min(1e-300), torch.zeros_like(rz))
            w.add_(torch.mul(p, step, out=scratch))
            r.sub_(hp.mul_(step))
            torch.mul(r, precond, out=z)
            rz_new = torch.mul(r, z, out=scratch).sum(1, keepdim=True)
            p.mul_(torch.where(rz > 0, rz_new / rz.clamp_min(1e-300), torch.zeros_like(rz))).add_(z)
            rz = rz_new
        return w.to(anchor.dtype)


def _batched_psd_solve(matrices: torch.Tensor, rhs: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """:func:`_psd_solve` for a batch (g, D, D) with one ρ per matrix (g,)."""
    eye = torch.eye(matrices.shape[-1], dtype=matrices.dtype, device=matrices.device)
    shifted = matrices + rho[:, None, None] * eye
    factor, info = torch.linalg.cholesky_ex(shifted)
    if bool((info == 0).all()):
        return torch.cholesky_solve(rhs, factor)
    return _pseudo_inverse(shifted) @ rhs


def _pseudo_inverse(matrix: torch.Tensor) -> torch.Tensor:
    """The pseudo-inverse of symmetric PSD ``matrix`` (..., D, D): through ``eigh``, or through the
    SVD where LAPACK's ``eigh`` does not converge on an ill-conditioned matrix (seen on grouped
    convs of MobileNetV2 and RegNet with a few images, on some CPUs only)."""
    try:
        return torch.linalg.pinv(matrix, hermitian=True)
    except torch.linalg.LinAlgError:
        return torch.linalg.pinv(matrix)


def _psd_solve(matrix: torch.Tensor, rhs: torch.Tensor, rho: float) -> torch.Tensor:
    """Solve ``(matrix + ρI) x = rhs`` for symmetric PSD ``matrix``; minimum-norm when ρ = 0."""
    if rho > 0:
        shifted = matrix + rho * torch.eye(len(matrix), dtype=matrix.dtype, device=matrix.device)
        factor, info = torch.linalg.cholesky_ex(shifted)
        if int(info) == 0:
            return torch.cholesky_solve(rhs, factor)
    return _pseudo_inverse(matrix + rho * torch.eye(len(matrix), dtype=matrix.dtype, device=matrix.device)) @ rhs
