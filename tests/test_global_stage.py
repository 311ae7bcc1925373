"""The global stage (kd, mir), the kd and mir baselines, and views for every baseline (issue 14)."""

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from xdnb import baselines, cli, distill, experiment, global_stage, graph, methods, metrics, size


@pytest.fixture(scope="module")
def one_shot(digits_data):
    from xdnb import data

    train, _ = digits_data
    return data.stack(train, data.few_shot(train, 1, seed=0))


class PoolsInForward(nn.Module):
    """Pools with a functional mean inside ``forward``: no pooling module to hook."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).mean((2, 3)))


class FullyConvolutional(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


def test_the_final_feature_map_is_found_for_pooling_modules_and_functional_pooling():
    resnet = torchvision.models.resnet18(num_classes=10).eval()
    where = graph.final_feature_map(resnet, (3, 64, 64))
    assert where.shape == (512, 2, 2) and where.op == "adaptive_avg_pool2d"
    seen = {}
    handle = resnet.layer4.register_forward_hook(lambda m, i, o: seen.setdefault("layer4", o))
    x = torch.randn(2, 3, 64, 64)
    logits, feature = graph.forward_with_feature_map(resnet, x, where)
    handle.remove()
    assert torch.equal(feature, seen["layer4"]) and torch.allclose(logits, resnet(x))

    functional = PoolsInForward().eval()
    where = graph.final_feature_map(functional, (3, 10, 10))
    assert where.op == "mean" and where.shape == (8, 10, 10)
    x = torch.randn(3, 3, 10, 10)
    _, feature = graph.forward_with_feature_map(functional, x, where)
    assert torch.allclose(feature, F.relu(functional.conv(x)))
    with pytest.raises(ValueError, match="FullyConvolutional never pools or flattens its feature map"):
        graph.final_feature_map(FullyConvolutional(), (3, 8, 8))


def test_kd_loss_is_zero_for_equal_logits_and_matches_its_formula():
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    assert float(global_stage.kd_loss(t, t, 4.0)) == pytest.approx(0.0, abs=1e-6)
    p = F.softmax(t / 2, 1)
    expected = 4 * (p * (p.log() - F.log_softmax(s / 2, 1))).sum(1).mean()
    assert float(global_stage.kd_loss(s, t, 2.0)) == pytest.approx(float(expected), rel=1e-5)


def test_a_global_stage_on_views_beats_the_layerwise_fit_alone_and_keeps_the_pruning(digits_teacher, one_shot, digits_data):
    images, _ = one_shot
    _, (x_test, y_test) = digits_data
    alone = distill.compress(digits_teacher, images, "cross", pruning="keep:0.25", views=8, show_progress=False)
    accuracy = metrics.accuracy(alone.student, x_test, y_test)
    for stage in ("kd", "mir"):
        trained = distill.compress(digits_teacher, images, "cross", pruning="keep:0.25", views=8, global_stage=stage,
                                   show_progress=False)
        assert metrics.accuracy(trained.student, x_test, y_test) > accuracy + 0.02, stage
        assert trained.config["global_stage"] == stage and trained.config["global_loss_last"] < trained.config["global_loss_first"]
        untimed = [[{k: v for k, v in r.items() if k != "seconds"} for r in run.history] for run in (trained, alone)]
        assert trained.kept_channels == alone.kept_channels and untimed[0] == untimed[1]
        assert size.count_params(trained.student) == size.count_params(alone.student)
        with torch.no_grad():
            assert torch.allclose(trained.student(x_test[:50]), trained.masked_student(x_test[:50]), atol=1e-4)
    # mir trains the backbone only: the head after the final feature map keeps the fitted weights
    mir = distill.compress(digits_teacher, images, "cross", pruning="keep:0.25", views=8, global_stage="mir",
                           show_progress=False)
    for name, value in alone.student.classifier.state_dict().items():
        assert torch.equal(value, mir.student.classifier.state_dict()[name]), name
    assert not torch.equal(alone.student.feature[-3].weight, mir.student.feature[-3].weight)
    assert "temperature" not in mir.config and trained.config.get("temperature") is None


def test_per_layer_errors_after_a_global_stage_compare_with_the_layerwise_ones(digits_teacher, one_shot, digits_data):
    """The widened student keeps the layer-wise values of the removed filters (read by no layer, but
    counted in their layer's error): before, they were zeros and a layer whose outputs are 75 %
    pruned showed a relative error near 0.75 after a stage of any length."""
    images, _ = one_shot
    _, (x_test, _) = digits_data
    alone = distill.compress(digits_teacher, images, "cross", pruning="keep:0.25", views=4, show_progress=False)
    for stage in ("kd", "mir"):
        one = distill.compress(digits_teacher, images, "cross", pruning="keep:0.25", views=4, show_progress=False,
                               global_stage=global_stage.GlobalStage(stage, steps=1, lr=1e-6))
        with torch.no_grad():
            assert torch.allclose(one.student(x_test[:50]), one.masked_student(x_test[:50]), atol=1e-4)
        before = [r["relative_error"] for r in metrics.layer_errors(digits_teacher, alone.masked_student, x_test)]
        after = [r["relative_error"] for r in metrics.layer_errors(digits_teacher, one.masked_student, x_test)]
        assert after == pytest.approx(before, rel=1e-2), stage  # one tiny step moves little
        conv2 = one.kept_channels["feature.7"]  # conv3's kept inputs: conv2's live filters
        removed = sorted(set(range(32)) - set(conv2))
        assert torch.equal(one.masked_student.feature[3].weight[removed], alone.masked_student.feature[3].weight[removed])


def test_unstructured_masks_survive_the_global_stage(digits_teacher, one_shot):
    images, _ = one_shot
    result = distill.compress(digits_teacher, images, "regression", pruning="sparse:0.9", views=4,
                              global_stage=global_stage.GlobalStage("kd", steps=20), show_progress=False)
    for name, mask in result.masks.items():
        weight = result.student.get_submodule(name).weight
        assert int(((weight != 0) & ~mask).sum()) == 0, name  # nothing pruned came back
        assert float((weight == 0).float().mean()) >= 0.9 - 1e-3, name


def test_the_global_stage_is_seeded(digits_teacher, one_shot):
    images, _ = one_shot
    stage = global_stage.GlobalStage("kd", steps=15)
    runs = [distill.compress(digits_teacher, images, "cross", pruning="keep:0.5", views=4, global_stage=stage, seed=s,
                             show_progress=False) for s in (3, 3, 4)]
    weights = [r.student.feature[3].weight for r in runs]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_the_global_stage_works_on_torchvision_models(name):
    torch.manual_seed(0)
    teacher = getattr(torchvision.models, name)(num_classes=10).eval()
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for stage in ("kd", "mir"):
        result = distill.compress(teacher, images, "regression", pruning="keep:0.5", views=2,
                                  global_stage=global_stage.GlobalStage(stage, steps=2), show_progress=False)
        # in float64: BN variances re-estimated on 4 random images reach 1e-7 here and blow float32's
        # summation-order noise up to whole logits (the two networks agree exactly in float64)
        with torch.no_grad():
            x = images.double()
            assert torch.allclose(result.student.double()(x), result.masked_student.double()(x), atol=1e-8), stage
        assert size.count_params(result.student)["params"] < size.count_params(teacher)["params"]


def test_bad_global_stage_settings_are_one_clear_line(digits_teacher, one_shot):
    images, _ = one_shot
    with pytest.raises(ValueError, match="global_stage must be one of none, kd, mir, got 'fitnet'"):
        distill.compress(digits_teacher, images, "cross", global_stage="fitnet")
    with pytest.raises(ValueError, match="global_steps must be an int >= 1, got 0"):
        global_stage.GlobalStage("kd", steps=0)
    with pytest.raises(ValueError, match="apply with a global stage"):
        global_stage.parse(None, steps=10)


def test_kd_and_mir_baselines_recover_from_l1_norm_and_record_their_settings(digits_teacher, one_shot, digits_data):
    images, labels = one_shot
    _, (x_test, y_test) = digits_data
    l1 = metrics.accuracy(methods.compress("l1-norm", digits_teacher, images, labels, pruning="keep:0.25",
                                           show_progress=False).student, x_test, y_test)
    for name in ("kd", "mir"):
        result = methods.compress(name, digits_teacher, images, labels, pruning="keep:0.25", options={"views": 8},
                                  show_progress=False)
        assert metrics.accuracy(result.student, x_test, y_test) > l1 + 0.2, name
        assert result.config["views"] == 8 and result.config["global_loss_last"] < result.config["global_loss_first"]
        assert result.config["bn"] == "reestimate" and "re-estimated" in result.config["bn_description"]
    assert baselines.DEFAULTS["kd"]["temperature"] == global_stage.DEFAULT_TEMPERATURE
    assert "temperature" not in baselines.DEFAULTS["mir"]
    with pytest.raises(ValueError, match="kd: bn must be one of reestimate, keep, got 'train'"):
        methods.compress("kd", digits_teacher, images, labels, pruning="keep:0.5", options={"bn": "train"})


def test_every_baseline_but_l1_norm_takes_views(digits_teacher, one_shot):
    images, labels = one_shot
    site = graph.trace(digits_teacher, tuple(images.shape[1:])).sites[-1].name
    for name in ("fskd", "thinet", "cp", "bp", "fitnet"):
        options = {"steps": 3} if name in ("bp", "fitnet") else {}
        plain = methods.compress(name, digits_teacher, images, labels, pruning="keep:0.5", options=options,
                                 show_progress=False)
        more = methods.compress(name, digits_teacher, images, labels, pruning="keep:0.5",
                                options={**options, "views": 3}, show_progress=False)
        assert more.config["views"] == 3 and plain.config["views"] == 1 and more.config["images"] == len(images)
        assert not torch.equal(plain.masked_student.get_submodule(site).weight,
                               more.masked_student.get_submodule(site).weight), name
    with pytest.raises(ValueError, match="l1-norm uses no data, so views do not apply"):
        methods.compress("l1-norm", digits_teacher, images, labels, pruning="keep:0.5", options={"views": 2})
    with pytest.raises(ValueError, match="bp: augment 'mixup': mixup blends two images"):
        methods.compress("bp", digits_teacher, images, labels, pruning="keep:0.5", options={"views": 2, "augment": "mixup"})


def test_labelled_views_carry_their_images_label():
    images = torch.randn(3, 1, 8, 8)
    labels = torch.tensor([4, 0, 7])
    x, y = baselines.labelled_views(images, labels, 4, "flip,crop", seed=0)
    assert x.shape == (12, 1, 8, 8) and y.tolist() == [4, 0, 7] * 4
    assert torch.equal(x[:3], images)


def test_run_config_keys_and_checks_of_the_global_stage():
    base = experiment.RunConfig(k=1)
    assert base.key() == experiment.RunConfig(k=1, global_steps=400, temperature=4.0).key()
    kd = base.replace(global_stage="kd", views=8)
    assert kd.key() != base.replace(views=8).key()
    assert kd.key() != kd.replace(temperature=2.0).key()
    mir = base.replace(global_stage="mir")
    assert mir.key() == mir.replace(temperature=2.0).key()  # mir does not read the temperature
    assert kd.method_options().global_stage == global_stage.GlobalStage("kd")
    assert base.replace(method="kd", views=8).method_options().views == 8
    with pytest.raises(ValueError, match="global_steps only applies with global_stage='kd' or 'mir'"):
        base.replace(global_steps=10)
    with pytest.raises(ValueError, match="not after the baseline 'fskd'; for L1-norm then kd, use method='kd'"):
        base.replace(method="fskd", global_stage="kd")
    with pytest.raises(ValueError, match="l1-norm uses no data"):
        base.replace(method="l1-norm", views=4)
    with pytest.raises(ValueError, match="views and augment are RunConfig fields"):
        base.replace(method="bp", options={"views": 4})


def test_cli_global_stage_flags_reach_the_run_config(captured_runs, monkeypatch, capsys):
    from conftest import RunCaptured

    seen = captured_runs
    with pytest.raises(RunCaptured):
        cli.main(["compress", "--k", "1", "--views", "8", "--global-stage", "mir", "--global-steps", "50",
                  "--global-lr", "0.0005"])
    with pytest.raises(RunCaptured):
        cli.main(["compress", "--global-stage", "none"])
    assert (seen[0].global_stage, seen[0].global_steps, seen[0].global_lr) == ("mir", 50, 0.0005)
    assert seen[1].global_stage is None and seen[1].key() == experiment.RunConfig().key()
    monkeypatch.undo()
    assert cli.main(["compress", "--method", "bp", "--global-stage", "kd"]) == 2
    assert "use method='kd'" in capsys.readouterr().err


def test_the_cli_runs_the_views_and_global_stage_pipeline_end_to_end(capsys):
    code = cli.main(["compress", "--k", "1", "--pruning", "keep:0.25", "--views", "4", "--global-stage", "kd",
                     "--global-steps", "30", "--test-limit", "100"])
    out = capsys.readouterr().out
    assert code == 0 and "'global_stage': 'kd'" in out and "'views': 4" in out


def test_cifar10_settings_are_valid_runs_with_their_own_keys():
    """The CIFAR-10 settings of the global stage and of the kd/mir baselines are accepted where the
    results page passes them, reach the method, and give keys apart from the digits defaults (so a
    resumed sweep reruns the runs stored at the old setting instead of reusing them)."""
    from xdnb import baselines, global_stage
    from xdnb.experiment import RunConfig

    for name in ("kd", "mir"):
        tuned = RunConfig(method=name, options=dict(baselines.RECOMMENDED_CIFAR10))
        stage = tuned.method_options().stage()
        assert (stage.steps, stage.lr) == (baselines.RECOMMENDED_CIFAR10["steps"], baselines.RECOMMENDED_CIFAR10["lr"])
        assert tuned.key() != RunConfig(method=name).key()
        after_fit = RunConfig(method="cross", views=16, augment="flip,crop,mixup", global_stage=name,
                              **global_stage.RECOMMENDED_CIFAR10)
        assert after_fit.key() != RunConfig(method="cross", views=16, augment="flip,crop,mixup", global_stage=name).key()
