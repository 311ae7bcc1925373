"""Any CNN: torchvision models and a user's own network through trace, compress, removal, save/load."""

import pytest
import torch
import torchvision
from torch import nn

from xdnb import cli, distill, models, pruning, size
from xdnb.graph import trace

SHAPE = (3, 64, 64)


class ConcatNet(nn.Module):
    """A user's CNN: bias convs, a concat of two branches read by one conv, a grouped conv."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=True), nn.ReLU())
        self.left = nn.Sequential(nn.Conv2d(16, 12, 3, padding=1, bias=True), nn.BatchNorm2d(12), nn.ReLU())
        self.right = nn.Sequential(nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.fuse = nn.Sequential(nn.Conv2d(20, 24, 3, padding=1, bias=True), nn.ReLU())
        self.grouped = nn.Sequential(nn.Conv2d(24, 24, 3, padding=1, groups=4, bias=True), nn.BatchNorm2d(24), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(24, 32, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([self.left(x), self.right(x)], 1)
        return self.fc(torch.flatten(self.head(self.grouped(self.fuse(x))), 1))


def concat_net(num_classes: int = 10) -> nn.Module:
    return ConcatNet(num_classes)


MODELS = {
    "resnet18": lambda: torchvision.models.resnet18(num_classes=10),
    "resnet50": lambda: torchvision.models.resnet50(num_classes=10),
    "vgg11_bn": lambda: torchvision.models.vgg11_bn(num_classes=10),
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(num_classes=10),
    "concat": concat_net,
}


def _model(name):
    torch.manual_seed(0)
    model = MODELS[name]()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial BN statistics, so removal errors would show
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


def _images(n=6):
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("name", list(MODELS))
def test_structured_keep_half_gives_a_smaller_network_with_the_masked_logits(name):
    teacher, images = _model(name), _images()
    result = distill.compress(teacher, images, "cross", pruning="keep:0.5", show_progress=False)
    graph = trace(teacher, SHAPE)
    prunable = [s.name for s in graph.sites if s.prunable and s.kind == "conv"]
    assert prunable and set(result.kept_channels) == set(prunable)
    for site in prunable:
        width = teacher.get_submodule(site).in_channels
        assert result.student.get_submodule(site).in_channels == len(result.kept_channels[site]) == max(1, round(width / 2))
    x = _images(3)
    with torch.no_grad():
        assert torch.allclose(result.student(x), result.masked_student(x), atol=1e-4, rtol=1e-4)
        assert not torch.allclose(result.student(x), teacher(x), atol=1e-3)
    assert size.count_params(result.student)["params"] < size.count_params(teacher)["params"]
    assert size.count_flops(result.student, SHAPE)["dense"] < size.count_flops(teacher, SHAPE)["dense"]


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "concat"])
def test_unstructured_sparsity_is_exact_in_every_fitted_layer(name):
    teacher, images = _model(name), _images()
    result = distill.compress(teacher, images, "regression", pruning="sparse:0.9", show_progress=False)
    fitted = trace(teacher, SHAPE).sites
    assert [r["layer"] for r in result.history] == [s.name for s in fitted]
    for site in fitted:
        weight = result.student.get_submodule(site.name).weight
        assert size.sparsity_of(weight) == pytest.approx(0.9, abs=1.0 / weight.numel()), site.name


def test_the_graph_states_what_stays_whole_and_why():
    graph = trace(_model("concat"), SHAPE)
    by_name = {s.name: s for s in graph.sites}
    assert [s.name for s in graph.stems] == ["stem.0"]
    assert set(by_name) == {"left.0", "right.0", "fuse.0", "grouped.0", "head.0"}
    assert "also read by" in by_name["left.0"].reason  # stem output read by both branches
    assert by_name["fuse.0"].prunable and set(by_name["fuse.0"].producers) == {"left.0", "right.0"}  # through the concat
    assert by_name["grouped.0"].reason.startswith("grouped conv")
    assert "grouped conv grouped.0" in by_name["head.0"].reason
    resnet = {s.name: s for s in trace(_model("resnet50"), SHAPE).sites}
    assert resnet["layer1.0.conv2"].prunable and resnet["layer1.0.conv3"].prunable
    assert not resnet["layer1.1.conv1"].prunable and "shared stream" in resnet["layer1.1.conv1"].reason
    mobile = {s.name: s for s in trace(_model("mobilenet_v2"), SHAPE).sites}
    assert mobile["features.2.conv.2"].prunable and not mobile["features.2.conv.1.0"].prunable
    assert "features.2.conv.1.0" in mobile["features.2.conv.2"].coupled  # the depthwise conv goes with it


def test_a_layer_run_twice_is_named():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return self.b(self.b(self.a(x))).mean((2, 3))

    with pytest.raises(ValueError, match="layer 'b' runs twice"):
        trace(Twice(), SHAPE)


def test_res_schemes_generalise_to_bottlenecks():
    graph = trace(_model("resnet50"), SHAPE)
    plan = pruning.structured(graph, "Res-50")
    assert "layer1.0.conv2" in plan.keep and "layer1.0.conv3" in plan.keep and "layer1.0.conv1" not in plan.keep
    assert plan.keep["layer3.5.conv3"] == 128 and not any(s.startswith("layer4") for s in plan.keep)
    assert "layer1.1.conv1" in plan.full_width and "shared stream" in plan.describe()
    assert "layer4.0.conv2" in pruning.structured(graph, "Res-70").keep
    with pytest.raises(ValueError, match="defined for torchvision ResNets"):
        pruning.structured(trace(_model("vgg11_bn"), SHAPE), "Res-50")
    mapping = pruning.structured(graph, {"layer1.0.conv2": 16, "layer2.0.conv3": 0.25})
    assert mapping.keep == {"layer1.0.conv2": 16, "layer2.0.conv3": 32}
    with pytest.raises(ValueError, match="cannot be pruned: its input channels are also read"):
        pruning.structured(graph, {"layer1.1.conv1": 8})


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2"])
def test_save_and_load_any_student_gives_the_same_logits(name, tmp_path):
    arch = f"torchvision:{name}"
    teacher, images = _model(name), _images()
    result = distill.compress(teacher, images, "soft", alpha=0.5, beta=0.5, pruning="keep:0.5", show_progress=False)
    path = models.save_student(result.student, tmp_path / "s.pt", build_args=models.builder(arch, 10), input_shape=SHAPE,
                               kept_channels=result.kept_channels)
    loaded, info = models.load_student(path)
    x = _images(2)
    with torch.no_grad():
        assert torch.equal(loaded(x), result.student(x))
    assert info["build"]["arch"] == arch


def test_the_cli_compresses_a_users_own_model_end_to_end(tmp_path, capsys, monkeypatch):
    """`xdnb compress --arch tests.test_any_cnn:concat_net` on a small image folder, then load it back."""
    from PIL import Image

    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    root = tmp_path / "data"
    g = torch.Generator().manual_seed(0)
    for split, count in (("train", 3), ("test", 2)):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                pixels = (torch.rand(40, 40, 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(root / split / label / f"{i}.png")
    teacher = concat_net(num_classes=2).eval()
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    out = tmp_path / "student.pt"
    code = cli.main(["compress", "--arch", "tests.test_any_cnn:concat_net", "--num-classes", "2", "--teacher",
                     str(tmp_path / "teacher.pt"), "--data", f"cifar10-folder:{root}", "--input-size", "32", "--k", "2",
                     "--scheme", "keep:0.5", "--device", "cpu", "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "saved student" in printed.out and "full width" in printed.out
    student, info = models.load_student(out)
    assert info["input_shape"] == (3, 32, 32) and student.fuse[0].in_channels == 10
    assert info["meta"]["run"]["arch"] == "tests.test_any_cnn:concat_net"
    assert cli.main(["compress", "--arch", "tests.test_any_cnn:no_such", "--teacher", str(tmp_path / "teacher.pt"),
                     "--data", f"cifar10-folder:{root}"]) == 2
    assert "has no callable 'no_such'" in capsys.readouterr().err
