import pytest
import torch
from torch import nn

from xdnb import distill, metrics, objectives, quantize
from xdnb.cli import main
from xdnb.experiment import RunConfig
from xdnb.quadratic import LayerProblem
from xdnb.sites import capture_input
from xdnb.solvers import WeightTarget, fit_lstsq

BITS = (2, 4, 8)
FAST = 60  # fitting steps per layer in the tests (the default is quantize.DEFAULT_STEPS)


def _problem(teacher, images, objective="cross", noise=0.2, site="feature.7", seed=0):
    """A real layer problem of the digits teacher whose student input differs from the teacher's."""
    conv = teacher.get_submodule(site)
    hT = capture_input(teacher, site, images)
    generator = torch.Generator().manual_seed(seed)
    hS = (hT + noise * hT.std() * torch.randn(hT.shape, generator=generator)).clamp_min(0)
    return LayerProblem(objectives.get(objective, alpha=0.5, beta=0.5), conv, hT, hS)


def _convs(model):
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def _on_grid(fit, bits):
    """The fitted weight is exactly scale × integer codes in [−q, q]."""
    scale, q = fit.info["scale"], quantize.levels(bits)
    codes = fit.weight / scale
    return bool(torch.equal(codes.round() * scale, fit.weight)) and float(codes.round().abs().max()) <= q


# --- the grid --------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("granularity", ["channel", "tensor"])
@pytest.mark.parametrize("method", ["mse", "max"])
def test_rounding_gives_at_most_2_to_the_k_values(bits, granularity, method):
    weight = torch.randn(16, 300, generator=torch.Generator().manual_seed(bits)) * torch.linspace(0.1, 3, 16)[:, None]
    scale = quantize.choose_scale(weight, bits, granularity, method)
    assert scale.shape == ((16, 1) if granularity == "channel" else (1, 1)) and bool((scale > 0).all())
    q = quantize.quantize(weight, scale, bits)
    # 2q+1 = 2^k − 1 levels: at most 2^k, and all of them used by 300 Gaussian weights at 2 and 4 bits
    assert quantize.distinct_values(q, granularity) <= 2 ** bits - 1
    if bits <= 4:
        assert quantize.distinct_values(q, granularity) == 2 ** bits - 1
    assert torch.equal(q, quantize.codes(weight, scale, bits) * scale)
    if method == "max":  # nothing is clipped: every weight is within half a grid step
        assert bool(((weight - q).abs() <= scale / 2 + 1e-6).all())


def test_mse_scale_rounds_better_than_max_abs_and_zero_rows_are_safe():
    weight = torch.randn(8, 500, generator=torch.Generator().manual_seed(0))
    weight[3] = 0.0
    errors = {m: float((weight - quantize.quantize(weight, quantize.choose_scale(weight, 2, "channel", m), 2)).pow(2).sum())
              for m in quantize.SCALES}
    assert errors["mse"] < 0.8 * errors["max"]
    scale = quantize.choose_scale(weight, 2)
    assert bool(torch.isfinite(scale).all()) and float(quantize.quantize(weight, scale, 2)[3].abs().sum()) == 0.0


# --- STE and the ProxQuant proximal step --------------------------------------------------------


@pytest.mark.parametrize("bits", BITS)
def test_ste_gradient_is_the_identity_inside_the_clipping_range_and_zero_outside(bits):
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(6, 50, generator=generator)
    scale = quantize.choose_scale(weight, bits) * 0.5  # a tight grid: some weights fall outside
    latent = weight.clone().requires_grad_(True)
    upstream = torch.randn(6, 50, generator=generator)
    out = quantize.ste_quantize(latent, scale, bits)
    assert torch.equal(out.detach(), quantize.quantize(weight, scale, bits))
    out.backward(upstream)
    inside = weight.abs() <= quantize.levels(bits) * scale
    assert 0 < int(inside.sum()) < inside.numel()
    assert torch.equal(latent.grad[inside], upstream[inside])
    assert bool((latent.grad[~inside] == 0).all())


def test_prox_step_moves_towards_the_nearest_grid_point_by_at_most_the_threshold():
    weight = torch.randn(4, 200, generator=torch.Generator().manual_seed(2))
    scale = quantize.choose_scale(weight, 2, "channel", "max")
    nearest = quantize.quantize(weight, scale, 2)
    assert torch.equal(quantize.prox_quant(weight, scale, 2, 0.0), weight)
    small = quantize.prox_quant(weight, scale, 2, 0.1 * scale)
    assert bool(((small - weight).abs() <= 0.1 * scale + 1e-6).all())
    assert bool(((small - nearest).abs() <= (weight - nearest).abs() + 1e-6).all())
    assert torch.equal(quantize.prox_quant(weight, scale, 2, scale / 2), nearest)  # max scale: all in range


# --- fitting one layer ---------------------------------------------------------------------------


@pytest.mark.parametrize("objective", ["regression", "cross", "soft"])
@pytest.mark.parametrize("quantizer", ["ste", "proxquant"])
def test_fitted_layers_end_exactly_on_the_grid_and_beat_rounding_on_their_objective(objective, quantizer, digits_teacher, few_shot_5):
    problem = _problem(digits_teacher, few_shot_5[0], objective)
    rounded = quantize.fit("round", problem, bits=2)
    fitted = quantize.fit(quantizer, problem, bits=2, steps=FAST if quantizer == "ste" else 3 * FAST)
    for fit in (rounded, fitted):
        assert _on_grid(fit, 2) and quantize.distinct_values(fit.weight) <= 3
        assert fit.info["objective"] == pytest.approx(problem.loss(fit.weight) + _ridge_term(problem, fit.weight), rel=1e-4)
    assert fitted.info["objective"] < 0.8 * rounded.info["objective"]


def _ridge_term(problem, weight, ridge=0.1):
    return ridge * problem.curvature_scale / problem.n * float((weight - problem.teacher_weight).double().pow(2).sum())


def test_proxquant_without_scale_refit_lies_on_the_starting_grid(digits_teacher, few_shot_5):
    problem = _problem(digits_teacher, few_shot_5[0])
    start = fit_lstsq(problem)
    fit = quantize.fit_proxquant(problem, bits=4, steps=FAST, start=start, refit_scale=False)
    assert torch.equal(fit.info["scale"], quantize.choose_scale(start.weight, 4))
    assert _on_grid(fit, 4) and quantize.distinct_values(fit.weight) <= 15


def test_scale_refit_is_the_exact_minimiser_over_the_scale(digits_teacher, few_shot_5):
    problem = _problem(digits_teacher, few_shot_5[0], "regression")
    fit = quantize.fit_ste(problem, bits=2, steps=FAST, granularity="tensor")
    scale, codes = fit.info["scale"], fit.weight / fit.info["scale"]
    value = problem.loss(fit.weight) + _ridge_term(problem, fit.weight)
    for factor in (0.99, 1.01):
        moved = codes * scale * factor
        assert problem.loss(moved) + _ridge_term(problem, moved) > value


@pytest.mark.parametrize("quantizer", ["ste", "proxquant"])
def test_pruned_weights_stay_zero_in_a_layer_fit(quantizer, digits_teacher, few_shot_5):
    problem = _problem(digits_teacher, few_shot_5[0])
    target = WeightTarget(problem.teacher_weight.numel() // 4)
    start = fit_lstsq(problem, target)
    fit = quantize.fit(quantizer, problem, target, bits=4, steps=FAST, start=start)
    assert torch.equal(fit.mask, start.mask) and bool((fit.weight[~start.mask] == 0).all())


# --- the engine -----------------------------------------------------------------------------------


@pytest.mark.parametrize("granularity", ["channel", "tensor"])
@pytest.mark.parametrize("bits", [2, 4])
def test_every_conv_of_a_compressed_student_takes_at_most_2_to_the_k_values(bits, granularity, digits_teacher, few_shot_5):
    spec = {"bits": bits, "quantizer": "ste", "granularity": granularity, "steps": FAST}
    result = distill.compress(digits_teacher, few_shot_5[0], "cross", quantize=spec)
    convs = _convs(result.student)
    assert len(convs) == 6 and [r["layer"] for r in result.history] == [name for name, _ in convs]
    for name, conv in convs:
        assert quantize.distinct_values(conv.weight, granularity) <= 2 ** bits - 1, name
    assert result.config["quantize"] == {**spec, "scale": "mse", "lr": quantize.DEFAULT_LR["ste"], "refit_scale": True,
                                         "first_conv": True, "ridge": None}


def test_first_conv_can_stay_full_precision(digits_teacher, few_shot_5):
    result = distill.compress(digits_teacher, few_shot_5[0], "regression", quantize={"bits": 2, "steps": 0, "first_conv": False})
    assert torch.equal(result.student.feature[0].weight, digits_teacher.feature[0].weight)
    assert len(result.history) == 5 and quantize.distinct_values(result.student.feature[3].weight) <= 3


@pytest.mark.parametrize("quantizer", ["ste", "proxquant"])
def test_quantized_and_pruned_students_keep_their_zeros(quantizer, digits_teacher, digits_data, few_shot_5):
    images = few_shot_5[0]
    spec = {"bits": 2, "quantizer": quantizer, "steps": FAST}
    sparse = distill.compress(digits_teacher, images, "cross", pruning="sparse:0.7", quantize=spec)
    for name, mask in sparse.masks.items():
        weight = sparse.student.get_submodule(name).weight
        assert bool((weight[~mask] == 0).all()) and quantize.distinct_values(weight) <= 3
        assert pruning_sparsity(weight) >= 0.7 - 1.0 / weight.numel()
    narrow = distill.compress(digits_teacher, images, "soft", alpha=0.5, beta=0.5, pruning="keep:0.5", quantize=spec)
    x = digits_data[1][0][:200]
    assert torch.allclose(narrow.student(x), narrow.masked_student(x), atol=1e-4)
    for name, keep in narrow.kept_channels.items():
        conv = narrow.student.get_submodule(name)
        assert conv.in_channels == len(keep) and quantize.distinct_values(conv.weight) <= 3


def pruning_sparsity(weight):
    return float((weight == 0).sum()) / weight.numel()


def test_same_inputs_give_the_same_quantized_student(digits_teacher, few_shot_5):
    spec = {"bits": 2, "quantizer": "proxquant", "steps": FAST}
    a = distill.compress(digits_teacher, few_shot_5[0], "cross", quantize=spec)
    b = distill.compress(digits_teacher, few_shot_5[0], "cross", quantize=spec)
    for (key, x), y in zip(a.student.state_dict().items(), b.student.state_dict().values()):
        assert torch.equal(x, y), key


def test_two_bit_cross_and_regression_beat_naive_rounding_on_held_out_digits(digits_teacher, digits_data, few_shot_5,
                                                                               record_property):
    """Held-out estimation error L^r at the last layer, 2 bits, K = 5 (reported beside each other)."""
    x_test = digits_data[1][0][:400]
    naive = quantize.round_model(digits_teacher, 2)
    errors = {"naive rounding": metrics.layer_errors(digits_teacher, naive, x_test)[-1]["estimation_error"]}
    for objective in ("regression", "cross"):
        result = distill.compress(digits_teacher, few_shot_5[0], objective, quantize={"bits": 2, "steps": 100})
        errors[objective] = metrics.layer_errors(digits_teacher, result.masked_student, x_test)[-1]["estimation_error"]
    line = ", ".join(f"{name} {value:.4f}" for name, value in errors.items())
    print(f"\n2-bit held-out L^r at the last layer (digits, K=5): {line}")
    record_property("held_out_last_layer_error", errors)
    assert errors["regression"] < errors["naive rounding"] and errors["cross"] < errors["naive rounding"]


# --- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad,message", [
    (1, "bits must be an integer from 2 to 8, got 1"),
    (9, "bits must be an integer from 2 to 8, got 9"),
    (2.5, "bits must be an integer from 2 to 8, got 2.5"),
    ("4", "quantize must be None, a bit width, a dict or a Quantization, got '4'"),
    ({"bits": 4, "quantizer": "lsq"}, "quantizer must be one of ste, proxquant, round, got 'lsq'"),
    ({"bits": 4, "granularity": "row"}, "granularity must be one of channel, tensor, got 'row'"),
    ({"bits": 4, "scale": "l1"}, "scale must be one of mse, max, got 'l1'"),
    ({"bits": 4, "steps": -1}, "steps must be an int >= 0, got -1"),
    ({"bits": 4, "lr": 0}, "lr \\(in grid steps\\) must be a finite number > 0, got 0"),
    ({"quantizer": "ste"}, "quantize needs 'bits'"),
    ({"bits": 4, "bit": 4}, "unknown quantize option 'bit'"),
    ({"bits": 4, "ridge": -1.0}, "quantize ridge must be a finite number >= 0 or None, got -1.0"),
    ({"bits": 4, "first_conv": "no"}, "quantize first_conv must be True or False, got 'no'"),
])
def test_bad_quantize_options_name_the_value(bad, message, digits_teacher, few_shot_5):
    with pytest.raises(ValueError, match=message):
        distill.compress(digits_teacher, few_shot_5[0], "cross", quantize=bad)


def test_bad_fit_arguments_name_the_value(digits_teacher, few_shot_5):
    problem = _problem(digits_teacher, few_shot_5[0])
    with pytest.raises(ValueError, match="quantizer must be one of ste, proxquant, round, got 'adam'"):
        quantize.fit("adam", problem, bits=2)
    with pytest.raises(ValueError, match="bits must be an integer from 2 to 8, got 16"):
        quantize.fit("ste", problem, bits=16)
    with pytest.raises(ValueError, match="strength must be a finite number > 0"):
        quantize.fit("proxquant", problem, bits=2, strength=-1)


def test_run_config_and_cli(capsys):
    assert RunConfig().key() == RunConfig(quantize=None).key() != RunConfig(quantize=4).key()
    assert RunConfig(quantize=4, quantizer="proxquant", granularity="tensor").validate().quantization() == \
        quantize.Quantization(4, "proxquant", "tensor")
    with pytest.raises(ValueError, match="only apply with quantize=BITS"):
        RunConfig(quantizer="proxquant").validate()
    with pytest.raises(ValueError, match="bits must be an integer from 2 to 8, got 1"):
        RunConfig(quantize=1).validate()
    assert main(["compress", "--quantize", "4", "--quantizer", "lsq"]) == 2
    assert "quantizer must be one of ste, proxquant, round, got 'lsq'" in capsys.readouterr().err


def test_quantization_preset(tmp_path):
    from xdnb import presets

    (tmp_path / "train").mkdir(), (tmp_path / "test").mkdir(), (tmp_path / "t.pt").write_bytes(b"")
    chosen = presets.preset("cifar10-vgg16-quant", data_root=tmp_path, teacher=tmp_path / "t.pt", seeds=[0])
    cells = {(c.quantize, c.method, c.k, c.pruning, c.quantizer) for c in chosen.configs}
    assert cells == {(b, m, k, None, "ste") for b in (2, 4) for m in ("regression", "cross", "soft") for k in (1, 5)}
    assert [v.where for v in chosen.views] == [{"quantize": 2}, {"quantize": 4}]
    narrowed = presets.preset("cifar10-vgg16-quant", data_root=tmp_path, teacher=tmp_path / "t.pt", seeds=[0],
                              quantize=4, quantizer="proxquant", methods=["cross"], ks=[1])
    assert [(c.quantize, c.quantizer, c.method, c.k) for c in narrowed.configs] == [(4, "proxquant", "cross", 1)]
    # a quantizer alone (no bit width) keeps both default bit widths
    only_quantizer = presets.preset("cifar10-vgg16-quant", data_root=tmp_path, teacher=tmp_path / "t.pt", seeds=[0],
                                    quantizer="proxquant", methods=["cross"], ks=[1])
    assert [(c.quantize, c.quantizer) for c in only_quantizer.configs] == [(2, "proxquant"), (4, "proxquant")]




def test_a_huge_ridge_makes_ste_round_the_teachers_weights(digits_teacher, few_shot_5):
    problem = _problem(digits_teacher, few_shot_5[0], "regression")
    share = {}
    for ridge in (0.1, 1e6):
        fit = quantize.fit_ste(problem, bits=4, ridge=ridge, refit_scale=False, steps=FAST)
        rounded_teacher = quantize.quantize(problem.teacher_weight, fit.info["scale"], 4)
        share[ridge] = float((fit.weight == rounded_teacher).float().mean())
    assert share[1e6] == 1.0 and share[0.1] < 0.9
    spec = {"bits": 4, "steps": 0, "ridge": 2.0}
    assert distill.compress(digits_teacher, few_shot_5[0], "cross", quantize=spec).config["quantize"]["ridge"] == 2.0
