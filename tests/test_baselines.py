import copy
import time

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from xdnb import baselines, distill, metrics, objectives, pruning
from xdnb.quadratic import LayerProblem, output_rows, unfold_rows
from xdnb.graph import trace
from xdnb.sites import capture_input

DIGITS = (1, 8, 8)


def find_sites(model):
    return trace(model, DIGITS).sites


@pytest.fixture(scope="module")
def plan(digits_teacher):
    return pruning.structured(trace(digits_teacher, DIGITS), 0.5)


@pytest.fixture(scope="module")
def l1_accuracy(digits_teacher, digits_data, plan):
    _, (x_test, y_test) = digits_data
    no_data, _, _ = baselines.l1_filter_prune(trace(digits_teacher, DIGITS), plan)
    return metrics.accuracy(no_data, x_test, y_test)


@pytest.fixture(scope="module")
def engine_record_keys(digits_teacher, few_shot_5, plan):
    images, _ = few_shot_5
    return set(distill.compress(digits_teacher, images, "regression", pruning=plan, show_progress=False).history[0])


@pytest.mark.parametrize("method", [m for m in baselines.METHODS if m != "l1-norm"])
def test_every_method_beats_data_free_l1_norm(method, digits_teacher, digits_data, few_shot_5, plan, l1_accuracy,
                                              engine_record_keys):
    _, (x_test, y_test) = digits_data
    images, labels = few_shot_5
    started = time.perf_counter()
    result = baselines.run(method, digits_teacher, images, labels, plan)
    elapsed = time.perf_counter() - started
    assert metrics.accuracy(result.student, x_test, y_test) > l1_accuracy + 0.02
    # physically smaller, and the teacher-width twin computes the same function
    for site, keep in plan.keep.items():
        assert result.student.get_submodule(site).in_channels == keep == len(result.kept_channels[site])
    assert torch.allclose(result.student(x_test[:200]), result.masked_student(x_test[:200]), atol=1e-4)
    assert len(metrics.layer_errors(digits_teacher, result.masked_student, images)) == 5
    assert result.config["method"] == method and result.config["pruning"] == "keep:0.5"
    assert 0 < result.seconds <= elapsed  # wall time of the run, in seconds
    if method in baselines.STRUCTURED_ONLY:
        assert result.config["bn"] == "reestimate"
        assert [r["layer"] for r in result.history] == [s.name for s in find_sites(digits_teacher)]
        assert all(set(r) == engine_record_keys for r in result.history)
    elif method in ("kd", "mir"):  # L1-norm, BN re-estimated, then the global stage
        assert result.history == [] and result.config["bn"] == "reestimate" and "global_loss_last" in result.config
    else:
        assert result.history == [] and result.config["bn"] == "train"


def test_l1_norm_removes_exactly_the_smallest_norm_filters(digits_teacher, digits_data, few_shot_5, plan):
    images, labels = few_shot_5
    x_test = digits_data[1][0][:200]
    result = baselines.run("l1-norm", digits_teacher, images, labels, plan)
    teacher_modules = dict(digits_teacher.named_modules())
    for site in find_sites(digits_teacher):
        kept = result.kept_channels[site.name]
        norms = teacher_modules[site.producers[0]].weight.abs().sum((1, 2, 3))
        removed = sorted(set(range(len(norms))) - set(kept))
        assert len(kept) == plan.keep[site.name] and norms[removed].max() < norms[kept].min()
        filters = teacher_modules[site.producers[0]].weight[kept]
        if site.producers[0] in result.kept_channels:  # the producer's own inputs are pruned too
            filters = filters[:, result.kept_channels[site.producers[0]]]
        assert torch.equal(result.student.get_submodule(site.producers[0]).weight, filters)
    assert torch.allclose(result.student(x_test), result.masked_student(x_test), atol=1e-5)
    assert result.config["bn"] == "keep" and result.history == []

    sparse = baselines.run("l1-norm", digits_teacher, images, labels, pruning.unstructured(0.7))
    for site in find_sites(digits_teacher):
        weight, original = sparse.student.get_submodule(site.name).weight, teacher_modules[site.name].weight
        zeroed = ~sparse.masks[site.name]
        assert int(zeroed.sum()) == round(0.7 * weight.numel()) and torch.all(weight[zeroed] == 0)
        assert original[zeroed].abs().max() <= original[~zeroed].abs().min()


def test_folding_the_fskd_pointwise_conv_leaves_outputs_unchanged():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5, 7, 7, generator=generator)
    weight = torch.randn(8, 5, 3, 3, generator=generator)
    q = torch.randn(8, 8, generator=generator)
    two_convs = F.conv2d(F.conv2d(x, weight, padding=1), q[:, :, None, None])
    folded = F.conv2d(x, baselines.fold_pointwise(weight, q), padding=1)
    assert torch.allclose(folded, two_convs, atol=1e-4)
    # Q with ridge 0 is the least-squares solution of Q(W*x) ≈ target
    target = torch.randn(4, 8, 7, 7, generator=generator)
    student_out = F.conv2d(x, weight, padding=1)
    q_fit = baselines.fskd_pointwise(target, student_out, ridge=0.0)
    expected = torch.linalg.lstsq(output_rows(student_out).double(), output_rows(target).double()).solution.T
    assert torch.allclose(q_fit.double(), expected, atol=1e-4)


def test_fskd_keeps_the_l1_channels_and_only_reduces_each_layers_error(digits_teacher, few_shot_5, plan):
    images, labels = few_shot_5
    result = baselines.run("fskd", digits_teacher, images, labels, plan, bn="keep")
    _, l1_kept, _ = baselines.l1_filter_prune(trace(digits_teacher, DIGITS), plan)
    assert result.kept_channels == l1_kept
    teacher_modules = dict(digits_teacher.named_modules())
    for site in find_sites(digits_teacher):
        kept = torch.tensor(result.kept_channels[site.name])
        t_conv, s_conv = teacher_modules[site.name], result.masked_student.get_submodule(site.name)
        pruned = torch.ones(t_conv.in_channels, dtype=torch.bool)
        pruned[kept] = False
        assert torch.all(s_conv.weight[:, pruned] == 0)
        hT = capture_input(digits_teacher, site.name, images)
        hS = capture_input(result.masked_student, site.name, images)  # bn="keep": what the fit saw
        target = t_conv(hT)
        l1_weight = t_conv.weight * (~pruned)[None, :, None, None]
        with torch.no_grad():
            assert F.mse_loss(s_conv(hS), target) < F.mse_loss(F.conv2d(hS, l1_weight, padding=1), target)


@pytest.mark.parametrize("method", ["thinet", "cp"])
def test_thinet_and_cp_refits_match_lstsq(method, digits_teacher, few_shot_5, plan):
    images, labels = few_shot_5
    result = baselines.run(method, digits_teacher, images, labels, plan, bn="keep", ridge=0.0)
    teacher_modules = dict(digits_teacher.named_modules())
    checked = 0
    for site in find_sites(digits_teacher):
        t_conv, s_conv = teacher_modules[site.name], result.masked_student.get_submodule(site.name)
        columns = (torch.tensor(result.kept_channels[site.name])[:, None] * 9 + torch.arange(9)).reshape(-1)
        hT = capture_input(digits_teacher, site.name, images)
        hS = capture_input(result.masked_student, site.name, images)  # bn="keep": what the fit saw
        x = unfold_rows(hS, t_conv)[:, columns].double()
        if len(x) <= len(columns) or torch.linalg.matrix_rank(x) < len(columns):
            continue  # under-determined: least squares has no unique solution to compare with
        expected = torch.linalg.lstsq(x, output_rows(t_conv(hT)).double()).solution.T
        weight = s_conv.weight.reshape(s_conv.out_channels, -1)
        assert torch.allclose(weight[:, columns].double(), expected, atol=1e-4, rtol=1e-3), site.name
        assert int(torch.count_nonzero(weight)) <= weight.shape[0] * len(columns)
        checked += 1
    assert checked >= 3


def test_thinet_greedy_equals_the_naive_greedy_with_one_forward_per_candidate():
    generator = torch.Generator().manual_seed(1)
    conv = torch.nn.Conv2d(7, 5, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
    hT = torch.randn(3, 7, 6, 6, generator=generator)
    hS = hT + 0.5 * torch.randn(3, 7, 6, 6, generator=generator)  # accumulated error
    problem = LayerProblem(objectives.regression(), conv, hT, hS)
    kept = baselines.thinet_select(*baselines.channel_gram(problem, problem.teacher_weight), keep=3)
    alive, target = list(range(7)), conv(hT).detach()
    while len(alive) > 3:
        def error(without):
            mask = torch.zeros(7)
            mask[[c for c in alive if c != without]] = 1
            with torch.no_grad():
                return float(F.mse_loss(F.conv2d(hS, conv.weight * mask[None, :, None, None], padding=1), target))
        alive.remove(min(alive, key=error))
    assert kept.tolist() == alive


def test_cp_lasso_support_is_exactly_the_target_and_agrees_with_coordinate_descent():
    from sklearn.linear_model import Lasso

    generator = torch.Generator().manual_seed(2)
    z = torch.randn(200, 12, generator=generator, dtype=torch.float64)  # channel contributions as columns
    y = z[:, :4] @ torch.tensor([3.0, -2.0, 1.5, 1.0], dtype=torch.float64) + 0.3 * torch.randn(200, generator=generator, dtype=torch.float64)
    for keep in (1, 3, 5, 9):
        kept, info = baselines.cp_select(z.T @ z, z.T @ y, keep)
        assert len(kept) == keep and info["exact"] and info["nonzero"] == keep
        # the same LASSO (‖y − zβ‖² + λ‖β‖₁) solved by coordinate descent has this support
        beta = Lasso(alpha=info["lambda"] / (2 * len(z)), fit_intercept=False, tol=1e-12, max_iter=100000).fit(z.numpy(), y.numpy()).coef_
        assert sorted(torch.nonzero(torch.as_tensor(beta)).flatten().tolist()) == kept.tolist()


def test_cp_takes_the_smallest_lambda_when_the_path_hits_the_width_twice():
    """Correlated channels: along the LASSO path, 3 channels are non-zero on two separate
    stretches with different supports; CP takes the smaller-lambda one (the least shrinkage)."""
    from sklearn.linear_model import Lasso

    generator = torch.Generator().manual_seed(0)
    base = torch.randn(60, 4, generator=generator, dtype=torch.float64)
    z = base @ torch.randn(4, 8, generator=generator, dtype=torch.float64) + 0.3 * torch.randn(60, 8, generator=generator, dtype=torch.float64)
    y = z @ torch.randn(8, generator=generator, dtype=torch.float64) + 0.5 * torch.randn(60, generator=generator, dtype=torch.float64)
    kept, info = baselines.cp_select(z.T @ z, z.T @ y, 3)
    # coordinate descent on a dense grid of lambdas, largest first: every support with 3 channels
    lam_max = 2 * float((z.T @ y).abs().max())
    supports = []
    for lam in np.geomspace(lam_max, lam_max * 1e-4, 300):
        beta = Lasso(alpha=lam / (2 * len(z)), fit_intercept=False, tol=1e-12, max_iter=100000).fit(z.numpy(), y.numpy()).coef_
        support = np.nonzero(beta)[0].tolist()
        if len(support) == 3 and (not supports or supports[-1] != support):
            supports.append(support)
    assert len(supports) >= 2, "the example must reach 3 channels twice with different supports"
    assert kept.tolist() == supports[-1] != supports[0]


def test_cp_reaches_exactly_the_target_width_in_every_layer(digits_teacher, few_shot_5, plan):
    images, labels = few_shot_5
    result = baselines.run("cp", digits_teacher, images, labels, plan)
    assert set(result.config["lasso"]) == set(plan.keep)
    for site, keep in plan.keep.items():
        lasso = result.config["lasso"][site]
        assert lasso["exact"] and lasso["nonzero"] == keep == len(result.kept_channels[site]) and lasso["lambda"] > 0


@pytest.mark.parametrize("method", ["bp", "fitnet"])
def test_bp_and_fitnet_keep_unstructured_masks(method, digits_teacher, few_shot_5):
    images, labels = few_shot_5
    plan = pruning.unstructured(0.7)
    _, _, l1_masks = baselines.l1_filter_prune(trace(digits_teacher, DIGITS), plan)
    result = baselines.run(method, digits_teacher, images, labels, plan, steps=15, lr=1e-3)
    assert result.masks.keys() == l1_masks.keys() and result.kept_channels == {}
    for site, mask in l1_masks.items():
        weight = result.student.get_submodule(site).weight
        assert torch.equal(result.masks[site], mask) and torch.all(weight[~mask] == 0)
        assert not torch.equal(weight, digits_teacher.get_submodule(site).weight * mask)  # it did train
    # nothing was removed physically: the compressed network is one model, not two copies
    assert result.student is result.masked_student


def test_fitnet_hints_and_regressors(digits_teacher, few_shot_5, plan):
    images, labels = few_shot_5
    assert baselines.hint_points(digits_teacher, DIGITS) == [("feature.6", "feature.3"), ("feature.13", "feature.10"), ("pool", "feature.17")]
    result = baselines.run("fitnet", digits_teacher, images, labels, plan, steps=5)
    # the last conv's output is never pruned: no regressor there
    assert result.config["hints"] == ["feature.6", "feature.13", "pool"]
    assert result.config["regressors"] == ["feature.6", "feature.13"]


def test_same_seed_same_student_and_the_teacher_is_untouched(digits_teacher, few_shot_5, plan):
    images, labels = few_shot_5
    before = copy.deepcopy(digits_teacher.state_dict())
    seen = []
    for method, options in (("fitnet", {"steps": 10}), ("thinet", {})):
        a = baselines.run(method, digits_teacher, images, labels, plan, seed=3, callback=seen.append, **options)
        b = baselines.run(method, digits_teacher, images, labels, plan, seed=3, **options)
        for (key, x), y in zip(a.student.state_dict().items(), b.student.state_dict().values()):
            assert torch.equal(x, y), (method, key)
    assert [r["index"] for r in seen] == list(range(5))  # only the layer-wise run calls back
    for key, value in digits_teacher.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("bn", ["reestimate", "keep", "train"])
def test_every_bn_mode_runs_and_is_recorded(bn, digits_teacher, few_shot_5, plan):
    images, labels = few_shot_5
    for method, options in (("fskd", {}), ("bp", {"steps": 3})):
        result = baselines.run(method, digits_teacher, images, labels, plan, bn=bn, **options)
        assert result.config["bn"] == bn and result.config["bn_description"]
        kept = result.kept_channels["feature.3"]
        same_stats = torch.equal(result.student.feature[1].running_mean, digits_teacher.feature[1].running_mean[kept])
        assert same_stats == (bn == "keep"), method


def test_bad_names_plans_and_options_say_what_is_allowed(digits_teacher, few_shot_5, plan):
    images, labels = few_shot_5
    with pytest.raises(ValueError, match=r"unknown baseline 'thinnet'; allowed: l1-norm, bp, fitnet, fskd, thinet, cp"):
        baselines.run("thinnet", digits_teacher, images, labels, plan)
    for method in baselines.STRUCTURED_ONLY:
        with pytest.raises(ValueError, match=rf"{method} prunes channels only.*unstructured plan 'sparse:0.5'"):
            baselines.run(method, digits_teacher, images, labels, "sparse:0.5")
        with pytest.raises(ValueError, match=rf"{method} prunes channels only.*got no pruning"):
            baselines.run(method, digits_teacher, images, labels, None)
    with pytest.raises(ValueError, match=r"cp has no option 'mu'; allowed: views, augment, bn, ridge"):
        baselines.run("cp", digits_teacher, images, labels, plan, mu=0.6)
    with pytest.raises(ValueError, match=r"l1-norm has no option 'bn'; allowed: none"):
        baselines.run("l1-norm", digits_teacher, images, labels, plan, bn="keep")
    with pytest.raises(ValueError, match=r"thinet: ridge must be a finite number >= 0, got -1"):
        baselines.run("thinet", digits_teacher, images, labels, plan, ridge=-1)
    with pytest.raises(ValueError, match=r"bp: steps must be an int >= 0, got 2.5"):
        baselines.run("bp", digits_teacher, images, labels, plan, steps=2.5)
    with pytest.raises(ValueError, match=r"bn must be one of reestimate, keep, train, got 'eval'"):
        baselines.run("fskd", digits_teacher, images, labels, plan, bn="eval")
    with pytest.raises(ValueError, match=r"unknown structured scheme 'VGG-Z'"):
        baselines.run("bp", digits_teacher, images, labels, "VGG-Z")
    with pytest.raises(ValueError, match=r"images must be"):
        baselines.run("bp", digits_teacher, images, labels[:3], plan)


def test_resnet34_res50_runs_layer_wise_and_with_hints():
    from xdnb import models

    torch.manual_seed(0)
    teacher = models.resnet34(num_classes=10).eval()
    # 64x64 inputs: stage 4 still has 2x2 maps, so re-estimated BN statistics are not degenerate
    images, labels = torch.randn(8, 3, 64, 64), torch.arange(8)
    plan = pruning.structured(trace(teacher, (3, 64, 64)), "Res-50")
    for method, options in (("thinet", {}), ("fitnet", {"steps": 1})):
        result = baselines.run(method, teacher, images, labels, plan, **options)
        for site, keep in plan.keep.items():
            assert result.student.get_submodule(site).in_channels == keep
        assert torch.allclose(result.student(images), result.masked_student(images), atol=1e-4, rtol=1e-4)
    assert len(result.kept_channels) == len(plan.keep) == 8  # stages 1-3: 2 + 2 + 4 blocks outside the sensitive ones
    assert result.config["regressors"] == [] and result.config["hints"] == ["maxpool", "layer2.0.conv1", "layer3.0.conv1", "layer4.0.conv1", "avgpool"]
