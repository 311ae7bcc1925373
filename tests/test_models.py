import hashlib

import pytest
import torch

from xdnb import metrics, models


def network_slimming_state_dict(cfg=models.VGG16_CFG, num_classes=10, seed=0):
    """A state dict in the reference code's VGG layout, built from the description in
    docs/method.md, "Networks" (not from xdnb.models): Conv/BN/ReLU triples and single MaxPools in `feature`, then
    classifier.0 Linear, classifier.1 BN1d, classifier.3 Linear."""
    g = torch.Generator().manual_seed(seed)
    sd, idx, c_in = {}, 0, 3
    for item in cfg:
        if item == "M":
            idx += 1
            continue
        sd[f"feature.{idx}.weight"] = torch.randn(item, c_in, 3, 3, generator=g) * 0.05
        for name, value in (("weight", torch.rand(item, generator=g) + 0.5), ("bias", torch.randn(item, generator=g) * 0.1),
                            ("running_mean", torch.randn(item, generator=g) * 0.1), ("running_var", torch.rand(item, generator=g) + 0.5)):
            sd[f"feature.{idx + 1}.{name}"] = value
        sd[f"feature.{idx + 1}.num_batches_tracked"] = torch.tensor(100)
        idx, c_in = idx + 3, item
    sd["classifier.0.weight"] = torch.randn(512, c_in, generator=g) * 0.05
    sd["classifier.0.bias"] = torch.zeros(512)
    for name, value in (("weight", torch.ones(512)), ("bias", torch.zeros(512)), ("running_mean", torch.zeros(512)), ("running_var", torch.ones(512))):
        sd[f"classifier.1.{name}"] = value
    sd["classifier.1.num_batches_tracked"] = torch.tensor(100)
    sd["classifier.3.weight"] = torch.randn(num_classes, 512, generator=g) * 0.05
    sd["classifier.3.bias"] = torch.zeros(num_classes)
    return sd


def test_vgg16_loads_a_network_slimming_checkpoint_unchanged(tmp_path):
    sd = network_slimming_state_dict()
    path = tmp_path / "teacher.pt"
    torch.save(sd, path)
    model = models.load_checkpoint(models.vgg(models.VGG16_CFG), path)
    for key, value in sd.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert models.teacher("vgg16", checkpoint=path).cfg == models.VGG16_CFG


def test_checkpoint_wrappers_and_prefixes_are_accepted(tmp_path):
    sd = network_slimming_state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, tmp_path / "wrapped.pt")
    model = models.load_checkpoint(models.vgg(), tmp_path / "wrapped.pt")
    assert torch.equal(model.feature[0].weight, sd["feature.0.weight"])


def test_checkpoint_mismatch_names_key_and_shapes(tmp_path):
    sd = network_slimming_state_dict()
    sd["feature.3.weight"] = torch.zeros(64, 32, 3, 3)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"'feature.3.weight'.*\(64, 32, 3, 3\).*\(64, 64, 3, 3\)"):
        models.load_checkpoint(models.vgg(), tmp_path / "bad.pt")
    sd = network_slimming_state_dict()
    del sd["classifier.3.bias"]
    with pytest.raises(ValueError, match="lacks key 'classifier.3.bias'"):
        models.load_checkpoint(models.vgg(), sd)
    sd = network_slimming_state_dict()
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unexpected key 'extra.weight'"):
        models.load_checkpoint(models.vgg(), sd)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.load_checkpoint(models.vgg(), tmp_path / "missing.pt")


def test_save_and_load_student_round_trip_with_narrow_layers(tmp_path):
    from xdnb import distill

    torch.manual_seed(0)
    teacher = models.digits_net().eval()
    images = torch.randn(20, 1, 8, 8)
    result = distill.compress(teacher, images, "regression", pruning="keep:0.5", show_progress=False)
    path = models.save_student(result.student, tmp_path / "s.pt", build_args=models.builder("digits"),
                               input_shape=(1, 8, 8), kept_channels=result.kept_channels,
                               normalization={"mean": [0.1], "std": [0.3]}, meta={"note": "x"})
    loaded, info = models.load_student(path)
    assert loaded.cfg == result.student.cfg == [16, 16, "M", 32, 32, "M", 64, 128]
    assert torch.equal(loaded(images), result.student(images))
    assert info["input_shape"] == (1, 8, 8) and info["normalization"]["std"] == [0.3] and info["meta"] == {"note": "x"}
    torch.save(result.student.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not written by xdnb.models.save_student"):
        models.load_student(tmp_path / "plain.pt")
    (tmp_path / "broken.pt").write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="broken.pt"):
        models.load_student(tmp_path / "broken.pt")
    with pytest.raises(FileNotFoundError):
        models.load_student(tmp_path / "missing.pt")


def test_resnet34_imagenet_weights_download_and_cache(tmp_path, monkeypatch):
    """The download path of resnet34("imagenet"), fed a generated file over loopback HTTP."""
    import functools
    import http.server
    import threading

    from torchvision.models import ResNet34_Weights

    reference = models.resnet34(None)
    served = tmp_path / "served"
    served.mkdir()
    blob_path = served / "tmp.pth"
    torch.save(reference.state_dict(), blob_path)
    digest = hashlib.sha256(blob_path.read_bytes()).hexdigest()
    name = f"resnet34-{digest[:8]}.pth"
    blob_path.rename(served / name)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        monkeypatch.setattr(ResNet34_Weights.IMAGENET1K_V1.value, "url", f"http://127.0.0.1:{server.server_address[1]}/{name}")
        model = models.resnet34("imagenet")
    finally:
        server.shutdown()
        server.server_close()
    assert (tmp_path / "torch" / "hub" / "checkpoints" / name).exists()
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    (served / name).unlink()  # a second call must use the cache, not the network
    assert torch.equal(models.resnet34("imagenet").fc.weight, reference.fc.weight)
    with pytest.raises(ValueError, match="weights must be None or 'imagenet'"):
        models.resnet34("cifar")


def test_digits_teacher_is_accurate_cached_and_deterministic(digits_teacher, digits_data, cache_dir, tmp_path):
    _, (x_test, y_test) = digits_data
    assert metrics.accuracy(digits_teacher, x_test, y_test) >= 0.97
    assert (cache_dir / "teachers" / "digits-seed0.pt").exists()
    again = models.teacher("digits", seed=0, cache_dir=tmp_path)  # trained afresh, same seed
    for (key, a), b in zip(digits_teacher.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), key
    cached = models.teacher("digits", seed=0, cache_dir=tmp_path)
    assert torch.equal(cached.feature[0].weight, again.feature[0].weight)


def test_teacher_errors():
    with pytest.raises(ValueError, match="unknown architecture 'alexnet'"):
        models.teacher("alexnet")
    with pytest.raises(ValueError, match="torchvision has no classification model 'nonet'"):
        models.teacher("torchvision:nonet", checkpoint="x.pt")
    with pytest.raises(ValueError, match="cannot import 'no_such_package.models'"):
        models.build("no_such_package.models:net")
    with pytest.raises(ValueError, match="checkpoint=PATH"):
        models.teacher("vgg16")
