import copy

import pytest
import torch

from xdnb import baselines, models, projections, pruning, size
from xdnb.graph import trace


def test_vgg16_schemes_match_method_tables():
    model = models.vgg()
    graph = trace(model, (3, 32, 32))
    sites = graph.sites
    convs = [model.get_submodule(s.name) for s in sites]
    for name, widths in pruning.VGG16_SCHEMES.items():
        plan = pruning.structured(graph, name)
        kept = [plan.keep.get(s.name, c.in_channels) for s, c in zip(sites, convs)]
        assert [3] + kept == widths, name
    half = pruning.structured(graph, "VGG-50")
    assert [half.keep[s.name] for s in sites] == [c.in_channels // 2 for c in convs]
    assert pruning.parse(graph, "keep:0.25").keep["feature.3"] == 16
    assert pruning.parse(graph, "none") is None


def test_resnet_schemes_skip_sensitive_blocks_and_the_residual_stream():
    model = models.resnet34()
    graph = trace(model, (3, 64, 64))
    for scheme, removed in (("Res-30", 0.3), ("Res-50", 0.5), ("Res-70", 0.7)):
        plan = pruning.structured(graph, scheme)
        assert all(name.endswith(".conv2") for name in plan.keep)
        pruned_blocks = {name.rsplit(".", 1)[0] for name in plan.keep}
        assert not pruned_blocks & set(pruning.RESNET34_SENSITIVE)
        assert plan.keep["layer1.0.conv2"] == round(64 * (1 - removed))
        assert plan.keep["layer3.3.conv2"] == round(256 * (1 - removed))
        assert ("layer4.0.conv2" in plan.keep) == (scheme == "Res-70")
    assert pruning.structured(graph, "Res-70").keep["layer4.2.conv2"] == 256


def test_bad_schemes_are_refused_with_the_allowed_values():
    with pytest.raises(ValueError, match="VGG-16 scheme"):
        pruning.structured(trace(models.digits_net(), (1, 8, 8)), "VGG-A")
    with pytest.raises(ValueError, match="unknown structured scheme 'VGG-Z'"):
        pruning.structured(trace(models.vgg(), (3, 32, 32)), "VGG-Z")
    with pytest.raises(ValueError, match=r"must be a number in \(0, 1\], got"):
        pruning.parse(trace(models.vgg(), (3, 32, 32)), "keep:1.5")
    with pytest.raises(ValueError, match=r"sparsity \(the fraction of weights removed, e.g. 0.9\) must be a number in \(0, 1\)"):
        pruning.unstructured(95)
    with pytest.raises(ValueError, match="cannot keep 99"):
        pruning.structured(trace(models.digits_net(), (1, 8, 8)), [1, 99, 32, 64, 64, 128])


def _randomise(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


@pytest.mark.parametrize("arch", ["vgg", "resnet"])
def test_physically_pruned_network_equals_the_masked_network(arch):
    model = _randomise(models.digits_net() if arch == "vgg" else models.resnet34(num_classes=10))
    x = torch.randn(3, 1, 8, 8) if arch == "vgg" else torch.randn(2, 3, 64, 64)
    plan = pruning.structured(trace(model, x.shape[1:]), 0.5 if arch == "vgg" else "Res-50")
    g = torch.Generator().manual_seed(1)
    masked = copy.deepcopy(model)
    kept = {}
    for name, keep in plan.keep.items():
        conv = masked.get_submodule(name)
        channels = torch.sort(torch.randperm(conv.in_channels, generator=g)[:keep]).values
        kept[name] = channels.tolist()
        drop = torch.ones(conv.in_channels, dtype=torch.bool)
        drop[channels] = False
        with torch.no_grad():
            conv.weight[:, drop] = 0
    small = pruning.remove_channels(copy.deepcopy(masked), kept, x.shape[1:])
    assert torch.allclose(small(x), masked(x), atol=1e-5)
    assert not torch.allclose(masked(x), model(x), atol=1e-3)  # the masking did something
    for name, keep in plan.keep.items():
        assert small.get_submodule(name).in_channels == keep
    assert size.count_params(small)["params"] < size.count_params(model)["params"]
    if arch == "vgg":
        assert small.cfg == [16, 16, "M", 32, 32, "M", 64, 128]  # the last conv feeds the classifier


def test_flops_are_the_hand_count_for_the_full_pruned_and_sparse_network():
    # input (2, 4, 4); conv1 2->4 at 4x4, max-pool, conv2 4->6 and conv3 6->8 at 2x2, avg-pool to
    # 1x1, Linear(8, 5), BN1d, Linear(5, 3). A multiply-add is 2 FLOPs; BN, ReLU and pooling count 0.
    torch.manual_seed(0)
    model = models.vgg([4, "M", 6, 8], num_classes=3, in_channels=2, hidden=5).eval()

    def by_hand(c1, c2, c3):  # output channels of conv1, conv2 (conv3 feeds the classifier: 8)
        convs = 2 * 16 * c1 * 2 * 9 + 2 * 4 * c2 * c1 * 9 + 2 * 4 * c3 * c2 * 9
        return convs + 2 * c3 * 5 + 2 * 5 * 3

    assert by_hand(4, 6, 8) == 7598
    assert size.count_flops(model, (2, 4, 4)) == {"dense": 7598, "effective": 7598}
    graph = trace(model, (2, 4, 4))
    # keep half the input channels of conv2 (4 -> 2) and conv3 (6 -> 3): conv1 and conv2 lose filters
    small, kept, _ = baselines.l1_filter_prune(graph, pruning.structured(graph, 0.5))
    assert [len(kept[s.name]) for s in graph.sites] == [2, 3]
    assert size.count_flops(small, (2, 4, 4)) == {"dense": by_hand(2, 3, 8), "effective": by_hand(2, 3, 8)} == {"dense": 3422, "effective": 3422}
    # half the weights of conv2 and conv3 (the fitted layers) zeroed: effective FLOPs drop by half of theirs
    sparse, _, _ = baselines.l1_filter_prune(graph, pruning.unstructured(0.5))
    conv2, conv3 = 2 * 4 * 6 * 4 * 9, 2 * 4 * 8 * 6 * 9
    assert size.count_flops(sparse, (2, 4, 4)) == {"dense": 7598, "effective": 7598 - conv2 // 2 - conv3 // 2}


def test_l1_filter_prune_keeps_the_largest_filters_and_exact_sparsity():
    model = models.digits_net()
    graph = trace(model, (1, 8, 8))
    plan = pruning.structured(graph, 0.5)
    _, kept, _ = baselines.l1_filter_prune(graph, plan)
    producer = model.feature[0].weight  # producer of feature.3's inputs
    norms = producer.abs().flatten(1).sum(1)
    assert set(kept["feature.3"]) == set(torch.topk(norms, 16).indices.tolist())
    sparse, _, masks = baselines.l1_filter_prune(graph, pruning.unstructured(0.7))
    for name, mask in masks.items():
        weight = sparse.get_submodule(name).weight
        assert size.sparsity_of(weight) == pytest.approx(0.7, abs=1 / weight.numel())
        smallest_kept = model.get_submodule(name).weight.abs()[mask].min()
        assert model.get_submodule(name).weight.abs()[~mask].max() <= smallest_kept


def test_schedules_and_projections():
    assert [projections.linear_budget(10, 4, t, 3) for t in range(5)] == [10, 8, 6, 4, 4]
    w = torch.tensor([[3.0, 3.0, 0.1, 0.1, 2.0, 0.0]])  # three channels of two columns
    assert projections.group_norms(w, 2).tolist() == pytest.approx([18 ** 0.5, 0.02 ** 0.5, 2.0])
    assert projections.keep_top_channels(w, torch.arange(3), 2, 2).tolist() == [0, 2]
    shrunk = projections.group_soft_threshold(w, 1.0, 2)
    assert torch.count_nonzero(shrunk[:, 2:4]) == 0 and shrunk[0, 0] == pytest.approx(3 * (1 - 1 / 18 ** 0.5))
    assert projections.soft_threshold(torch.tensor([-2.0, 0.5, 1.5]), 1.0).tolist() == [-1.0, 0.0, 0.5]


def test_keep_top_weights_keeps_the_largest_inside_the_mask_ties_to_the_lowest_index():
    """The selection keeps what a stable descending sort of |W| (outside the mask last) keeps."""
    w = torch.tensor([[0.5, -2.0, 1.0, 1.0], [1.0, 3.0, 0.0, 1.0]])
    mask = torch.tensor([[True, True, True, True], [True, False, True, True]])
    kept = projections.keep_top_weights(w, mask, 3)  # -2.0, then two of the four 1.0s: the first two
    assert kept.tolist() == [[False, True, True, True], [False, False, False, False]]
    assert projections.keep_top_weights(w, mask, 0).sum() == 0
    assert torch.equal(projections.keep_top_weights(w, mask, 7), mask)
    g = torch.Generator().manual_seed(0)
    for trial in range(50):
        w = torch.round(torch.randn(6, 9, generator=g) * 2) / 2  # many exact ties, zeros among them
        mask = torch.rand(6, 9, generator=g) > 0.3
        budget = int(torch.randint(1, int(mask.sum()) + 1, (1,), generator=g))
        scores = torch.where(mask, w.abs(), torch.full_like(w, -1.0)).flatten()
        expected = torch.zeros(54, dtype=torch.bool)
        expected[torch.argsort(-scores, stable=True)[:budget]] = True
        assert torch.equal(projections.keep_top_weights(w, mask, budget).flatten(), expected), trial
