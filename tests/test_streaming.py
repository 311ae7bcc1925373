"""Streamed capture: above xdnb.distill.CAPTURE_BUDGET the engine holds one chunk of images at a
time, and gives the same student as holding them all."""

import pytest
import torch
import torchvision
from torch import nn

from xdnb import baselines, distill, graph, views
from xdnb.sites import set_bn_statistics


def _resnet():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


IMAGES = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def _budget_for(model, images, chunk):
    """A CAPTURE_BUDGET under which ``images`` are streamed ``chunk`` images at a time."""
    names = [s.name for s in graph.trace(model, tuple(images.shape[1:])).sites]
    modules = dict(model.named_modules())
    with torch.no_grad():
        per_image = max(4 * (2 * x.numel() + 4 * modules[n](x).numel())
                        for n, x in graph.SiteStream(model, names, images[:1]))
    return per_image * chunk


@pytest.fixture
def counted_inputs(monkeypatch):
    """``distill.input_of`` wrapped to record how many images each streamed forward pass got."""
    sizes = []
    original = distill.input_of

    def counting(model, name, images, statistics="running"):
        sizes.append(len(images))
        return original(model, name, images, statistics)

    monkeypatch.setattr(distill, "input_of", counting)
    return sizes


def _compress(model, monkeypatch, budget, **kwargs):
    monkeypatch.setattr(distill, "CAPTURE_BUDGET", budget)
    return distill.compress(model, IMAGES, show_progress=False, seed=3, **kwargs)


@pytest.mark.parametrize("objective, pruning", [("cross", "keep:0.5"), ("regression", None)])
def test_streamed_compression_equals_the_one_pass_compression(objective, pruning, monkeypatch, counted_inputs):
    model = _resnet()
    whole = _compress(model, monkeypatch, 1 << 60, objective=objective, pruning=pruning, views=3)
    assert counted_inputs == [] and "capture_chunk" not in whole.config
    streamed = _compress(model, monkeypatch, _budget_for(model, IMAGES, 4), objective=objective, pruning=pruning, views=3)
    assert streamed.config["capture_chunk"] == 4
    # 15 images (5 x 3 views) in chunks of 4: no forward pass ever saw more than 4 images
    assert counted_inputs and max(counted_inputs) == 4 and min(counted_inputs) >= 1
    assert whole.kept_channels == streamed.kept_channels
    a, b = whole.masked_student.state_dict(), streamed.masked_student.state_dict()
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(b[key], a[key], rtol=2e-3, atol=2e-4, msg=key)
    for ra, rb in zip(whole.history, streamed.history):
        for key in ("estimation_error", "relative_error", "objective_after", "eps_T", "output_power"):
            assert rb[key] == pytest.approx(ra[key], rel=2e-3, abs=1e-6), (ra["layer"], key)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(streamed.student(x), whole.student(x), rtol=1e-2, atol=1e-3)


def test_streamed_unstructured_compression_matches_up_to_near_ties(monkeypatch):
    """Unstructured pruning selects the top weights again and again: float rounding flips a few
    near-ties, and later layers see slightly different inputs; the first layer's support and every
    layer's fit agree."""
    model = _resnet()
    whole = _compress(model, monkeypatch, 1 << 60, objective="regression", pruning="sparse:0.8", views=3)
    streamed = _compress(model, monkeypatch, _budget_for(model, IMAGES, 4), objective="regression", pruning="sparse:0.8", views=3)
    first = whole.history[0]["layer"]
    assert torch.equal(whole.masks[first], streamed.masks[first])
    for name in whole.masks:
        assert streamed.masks[name].sum() == whole.masks[name].sum()  # the same sparsity everywhere
    for ra, rb in zip(whole.history, streamed.history):
        assert rb["objective_after"] == pytest.approx(ra["objective_after"], rel=0.1), ra["layer"]


def test_streamed_bn_train_ends_with_the_statistics_of_all_fit_images(monkeypatch):
    import copy

    from xdnb.sites import reestimate_bn

    model = _resnet()
    streamed = _compress(model, monkeypatch, _budget_for(model, IMAGES, 4), objective="cross", pruning="keep:0.5",
                         views=3, bn="train")
    assert streamed.config["capture_chunk"] == 4
    fresh = copy.deepcopy(streamed.masked_student)
    reestimate_bn(fresh, views.make_views(IMAGES, 3, views.DEFAULT_AUGMENT, 3))
    for (name, a), b in zip(streamed.masked_student.state_dict().items(), fresh.state_dict().values()):
        if "running" in name:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("method", ["fskd", "thinet"])
def test_streamed_layerwise_baselines_equal_the_one_pass_ones(method, monkeypatch):
    model = _resnet()
    labels = torch.arange(5)
    monkeypatch.setattr(distill, "CAPTURE_BUDGET", 1 << 60)
    whole = baselines.run(method, model, IMAGES, labels, "keep:0.5", views=2, show_progress=False)
    monkeypatch.setattr(distill, "CAPTURE_BUDGET", _budget_for(model, IMAGES, 3))
    streamed = baselines.run(method, model, IMAGES, labels, "keep:0.5", views=2, show_progress=False)
    assert whole.kept_channels == streamed.kept_channels
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(streamed.student(x), whole.student(x), rtol=1e-2, atol=1e-3)


def test_bn_statistics_pooled_over_chunks_equal_those_of_all_inputs():
    x = torch.randn(11, 6, 5, 5, generator=torch.Generator().manual_seed(0)) * 3 + 1
    whole, pooled = nn.BatchNorm2d(6), nn.BatchNorm2d(6)
    set_bn_statistics(whole, x)
    set_bn_statistics(pooled, (x[i:i + 4] for i in range(0, 11, 4)))
    torch.testing.assert_close(pooled.running_mean, whole.running_mean)
    torch.testing.assert_close(pooled.running_var, whole.running_var)


def test_capture_chunk_is_none_within_the_budget_and_fits_it_above(monkeypatch):
    model = _resnet()
    names = [s.name for s in graph.trace(model, (3, 32, 32)).sites]
    many = views.Views(IMAGES, 8)
    monkeypatch.setattr(distill, "CAPTURE_BUDGET", 1 << 60)
    assert distill.capture_chunk(model, many, names) is None
    budget = _budget_for(model, IMAGES, 7)
    monkeypatch.setattr(distill, "CAPTURE_BUDGET", budget)
    assert distill.capture_chunk(model, many, names) == 7
    monkeypatch.setattr(distill, "CAPTURE_BUDGET", 1)  # less than one image: still one at a time
    assert distill.capture_chunk(model, many, names) == 1


def test_input_of_stops_at_the_module_and_equals_the_streamed_capture():
    model = _resnet()
    captured = graph.capture_inputs(model, ["layer2.0.conv1", "fc"], IMAGES)
    torch.testing.assert_close(graph.input_of(model, "layer2.0.conv1", IMAGES), captured["layer2.0.conv1"])
    torch.testing.assert_close(graph.input_of(model, "fc", IMAGES), captured["fc"])
    with pytest.raises(ValueError, match="no module 'nope'"):
        graph.input_of(model, "nope", IMAGES)
