import copy
"""The per-layer least-squares problem against independent oracles (autograd, torch.linalg)."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from xdnb import objectives
from xdnb.quadratic import LayerProblem, unfold_rows, write_flat_weight

OBJECTIVES = [objectives.regression(), objectives.correction(), objectives.imitation(),
              objectives.cross(0.3), objectives.soft(0.7, 0.4)]


def _setup(n, seed=0, c_in=3, c_out=4, size=5, stride=1):
    g = torch.Generator().manual_seed(seed)
    teacher = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
    with torch.no_grad():
        teacher.weight.copy_(torch.randn(teacher.weight.shape, generator=g))
    hT = torch.randn(n, c_in, size, size, generator=g)
    hS = hT + 0.3 * torch.randn(n, c_in, size, size, generator=g)
    w = torch.randn(c_out, c_in * 9, generator=g)
    return teacher, hT, hS, w


def _student(teacher, w):
    student = nn.Conv2d(teacher.in_channels, teacher.out_channels, 3, stride=teacher.stride, padding=1, bias=False)
    with torch.no_grad():
        student.weight.copy_(w.reshape(student.weight.shape))
    return student


# (n=1, c_in=8): fewer rows than columns, the raw-row form; (n=8, c_in=3): the Gram form;
# (n=1, c_in=3): raw for one-term objectives, Gram for cross (2 x 25 rows > 27 columns)
@pytest.mark.parametrize("n,c_in", [(1, 8), (8, 3), (1, 3)])
@pytest.mark.parametrize("objective", OBJECTIVES, ids=str)
def test_loss_and_gradient_match_autograd(n, c_in, objective):
    teacher, hT, hS, w = _setup(n, c_in=c_in)
    problem = LayerProblem(objective, teacher, hT, hS)
    assert problem.keeps_rows == (n * 25 * objective.student_convolutions < c_in * 9)
    student = _student(teacher, w)
    loss = objective(teacher, student, hT, hS)
    loss.backward()
    assert problem.loss(w) == pytest.approx(float(loss.detach()), rel=1e-5)
    assert torch.allclose(problem.grad(w), student.weight.grad.reshape(w.shape), rtol=1e-4, atol=1e-6)


def _stacked_system(objective, teacher, hT, hS):
    """The objective as one least-squares system, built independently of LayerProblem."""
    xs, ys = [], []
    for term in objective.terms:
        x_in = term.student_mix[0] * hT + term.student_mix[1] * hS
        y_in = term.teacher_mix[0] * hT + term.teacher_mix[1] * hS
        y = teacher(y_in).detach().permute(0, 2, 3, 1).reshape(-1, teacher.out_channels)
        xs.append(term.weight ** 0.5 * unfold_rows(x_in, teacher))
        ys.append(term.weight ** 0.5 * y)
    return torch.cat(xs).double(), torch.cat(ys).double()


@pytest.mark.parametrize("n,c_in", [(1, 8), (8, 3)])
@pytest.mark.parametrize("objective", OBJECTIVES, ids=str)
def test_closed_form_matches_torch_lstsq_and_zeroes_the_gradient(n, c_in, objective):
    teacher, hT, hS, _ = _setup(n, seed=1, c_in=c_in)
    problem = LayerProblem(objective, teacher, hT, hS)
    w = problem.solve(None, ridge=0.0)
    x, y = _stacked_system(objective, teacher, hT, hS)
    anchor = teacher.weight.detach().reshape(problem.c_out, -1).double()
    # minimum-norm correction of the teacher's weights (unique when the system is full rank)
    delta = torch.linalg.lstsq(x, y - x @ anchor.T, driver="gelsd").solution
    assert torch.allclose(w.double(), anchor + delta.T, atol=2e-4)
    student = _student(teacher, w)
    objective(teacher, student, hT, hS).backward()
    assert student.weight.grad.abs().max() < 1e-4


@pytest.mark.parametrize("n", [1, 8])
def test_ridge_and_channel_restriction_match_normal_equations(n):
    teacher, hT, hS, _ = _setup(n, seed=2, c_in=6)
    assert LayerProblem(objectives.cross(0.6), teacher, hT, hS).keeps_rows == (n == 1)
    objective = objectives.cross(0.6)
    problem = LayerProblem(objective, teacher, hT, hS)
    columns = torch.tensor([0, 1, 2, 9, 10, 11, 12, 13, 14, 15, 16, 17])  # channels 0 (part), 1
    ridge = 0.05
    w = problem.solve(columns, ridge=ridge)
    x, y = _stacked_system(objective, teacher, hT, hS)
    anchor = teacher.weight.detach().reshape(problem.c_out, -1).double()[:, columns]
    xk = x[:, columns]
    rho = ridge * float((x ** 2).sum()) / x.shape[1]
    expected = torch.linalg.solve(xk.T @ xk + rho * torch.eye(len(columns), dtype=torch.float64), xk.T @ y + rho * anchor.T).T
    assert torch.allclose(w[:, columns].double(), expected, atol=1e-4)
    outside = torch.ones(problem.dim, dtype=torch.bool)
    outside[columns] = False
    assert torch.count_nonzero(w[:, outside]) == 0


@pytest.mark.parametrize("n,c_in", [(1, 8), (8, 3)])
def test_masked_solve_matches_row_by_row_direct_solves(n, c_in):
    teacher, hT, hS, _ = _setup(n, seed=3, c_in=c_in)
    problem = LayerProblem(objectives.soft(0.5, 0.5), teacher, hT, hS)
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(problem.c_out, problem.dim, generator=g) < 0.5
    ridge = 0.01
    w = problem.solve_masked(mask, ridge=ridge, iterations=500, tol=1e-20)
    x, y = _stacked_system(objectives.soft(0.5, 0.5), teacher, hT, hS)
    rho = ridge * float((x ** 2).sum()) / x.shape[1]
    anchor = teacher.weight.detach().reshape(problem.c_out, -1).double()
    for row in range(problem.c_out):
        s = mask[row]
        xs = x[:, s]
        expected = torch.linalg.solve(xs.T @ xs + rho * torch.eye(int(s.sum()), dtype=torch.float64), xs.T @ y[:, row] + rho * anchor[row, s])
        assert torch.allclose(w[row, s].double(), expected, atol=1e-4)
        assert torch.count_nonzero(w[row, ~s]) == 0


def test_strided_convolution_rows_line_up():
    teacher, hT, hS, w = _setup(2, seed=4, size=6, stride=2)
    problem = LayerProblem(objectives.regression(), teacher, hT, hS)
    student = _student(teacher, w)
    with torch.no_grad():
        expected = float(F.mse_loss(student(hS), teacher(hT)))
    assert problem.loss(w) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("layer", [
    nn.Conv2d(4, 6, 3, padding=1, bias=True),
    nn.Conv2d(4, 6, 3, stride=2, dilation=2, padding=2, groups=2, bias=False),
    nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=True),  # depthwise
    nn.Linear(12, 5),
], ids=["bias", "grouped-dilated", "depthwise-bias", "linear"])
def test_every_layer_kind_is_solved_exactly_as_torch_lstsq(layer):
    """Closed form (ridge 0) against torch.linalg.lstsq on the layer's own unfolded system."""
    torch.manual_seed(0)
    layer = layer.double().eval()
    shape = (40, 12) if isinstance(layer, nn.Linear) else (6, layer.in_channels, 7, 7)
    hT, hS = torch.randn(*shape, dtype=torch.float64), torch.randn(*shape, dtype=torch.float64)
    problem = LayerProblem(objectives.regression(), layer, hT, hS)
    w = problem.solve(None, ridge=0.0)
    groups = getattr(layer, "groups", 1)
    x = unfold_rows(hS, layer)
    y = (layer(hT).flatten(2).transpose(1, 2).reshape(-1, w.shape[0]) if x.shape[0] != len(hS) else layer(hT))
    per_in, per_out = x.shape[1] // groups, w.shape[0] // groups
    for j in range(groups):
        xj = x[:, j * per_in:(j + 1) * per_in]
        if layer.bias is not None:
            xj = torch.cat([xj, torch.ones(len(xj), 1, dtype=xj.dtype)], 1)
        expected = torch.linalg.lstsq(xj, y[:, j * per_out:(j + 1) * per_out]).solution.T
        assert torch.allclose(w[j * per_out:(j + 1) * per_out], expected, atol=1e-6)
    student = copy.deepcopy(layer)
    write_flat_weight(student, w)
    with torch.no_grad():
        assert problem.loss(w) == pytest.approx(float(F.mse_loss(student(hS), layer(hT))), rel=1e-6, abs=1e-12)


def test_a_system_over_the_memory_cap_is_refused_not_built(monkeypatch):
    from xdnb import quadratic

    monkeypatch.setattr(quadratic, "MEMORY_CAP", 10_000)
    layer = nn.Linear(200, 3)
    with pytest.raises(quadratic.LayerTooLarge, match="GiB cap"):
        LayerProblem(objectives.regression(), layer, torch.randn(300, 200), torch.randn(300, 200))


def test_pseudo_inverse_falls_back_to_the_svd_when_eigh_does_not_converge(monkeypatch):
    """LAPACK's eigh can fail on an ill-conditioned system (grouped convs, few images, some CPUs):
    the solve must then go through the SVD and still give the minimum-norm solution."""
    from xdnb import quadratic

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(6, 3, generator=generator, dtype=torch.float64)
    matrix = a @ a.T  # rank 3 of 6: singular, so rho = 0 goes through the pseudo-inverse
    rhs = torch.randn(6, 2, generator=generator, dtype=torch.float64)
    expected = torch.linalg.lstsq(matrix, rhs, driver="gelsd").solution
    real_pinv = torch.linalg.pinv
    calls = []

    def failing_eigh_pinv(m, *args, hermitian=False, **kwargs):
        calls.append(hermitian)
        if hermitian:
            raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")
        return real_pinv(m, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "pinv", failing_eigh_pinv)
    solved = quadratic._psd_solve(matrix, rhs, 0.0)
    assert calls == [True, False]
    assert torch.allclose(solved, expected, atol=1e-8)
    batched = quadratic._batched_psd_solve(torch.stack([matrix, matrix]), torch.stack([rhs, rhs]),
                                           torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(batched[1], expected, atol=1e-8)
