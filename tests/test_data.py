import hashlib
import io
import pickle
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from xdnb import data


def test_digits_splits_are_fixed_normalised_and_disjoint():
    train, test = data.digits("train"), data.digits("test")
    assert train.images.shape[1:] == (1, 8, 8) and test.images.shape[1:] == (1, 8, 8)
    assert len(train) + len(test) == 1797
    assert abs(float(train.images.mean())) < 1e-4 and abs(float(train.images.std()) - 1) < 1e-2
    assert torch.equal(data.digits("test").images, test.images)
    assert sorted(set(train.targets)) == list(range(10))
    with pytest.raises(ValueError, match="'val'"):
        data.digits("val")


@pytest.mark.parametrize("k", [1, 3, 10])
def test_few_shot_takes_exactly_k_per_class(k):
    train = data.digits("train")
    idx = data.few_shot(train, k, seed=3)
    counts = Counter(train.targets[i] for i in idx)
    assert set(counts.values()) == {k} and len(counts) == 10
    assert len(set(idx)) == len(idx)


def test_few_shot_is_deterministic_per_seed():
    train = data.digits("train")
    assert data.few_shot(train, 5, 7) == data.few_shot(train, 5, 7)
    assert data.few_shot(train, 5, 7) != data.few_shot(train, 5, 8)


def test_few_shot_errors_name_the_bad_value():
    ds = data.TensorImageDataset(torch.zeros(5, 1, 2, 2), [0, 0, 0, 1, 1], ["cat", "dog"])
    with pytest.raises(ValueError, match="class 'dog' has only 2 images, fewer than k=3"):
        data.few_shot(ds, 3, 0)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"must be an int >= 1, got"):
            data.few_shot(ds, bad, 0)
    with pytest.raises(ValueError, match="seed"):
        data.few_shot(ds, 1, -2)


def _write_tree(root, classes=("a", "b", "c"), per_class=4, size=40):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")


def test_imagefolder_reads_a_tree_with_both_transforms(tmp_path):
    _write_tree(tmp_path)
    ds = data.imagefolder(tmp_path, "train", transform="imagenet")
    assert ds.classes == ["a", "b", "c"] and len(ds) == 12
    assert ds[0][0].shape == (3, 224, 224)
    cifar_style = data.load(f"cifar10-folder:{tmp_path}", "test")
    assert cifar_style[0][0].shape == (3, 40, 40)
    images, labels = data.stack(cifar_style, data.few_shot(cifar_style, 2, 0))
    assert images.shape == (6, 3, 40, 40) and labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_missing_roots_raise_helpful_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.imagefolder(tmp_path / "nope", "train")
    with pytest.raises(FileNotFoundError, match="download=True"):
        data.cifar10(tmp_path / "nope")
    with pytest.raises(ValueError, match="allowed: digits"):
        data.load("mnist:/x")
    with pytest.raises(ValueError, match="needs a root"):
        data.load("cifar10")


def _fake_cifar_archive(path):
    """A tiny archive in the CIFAR-10 python layout (2 images per batch file)."""
    rng = np.random.default_rng(0)
    members = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        members[name] = pickle.dumps({"data": rng.integers(0, 255, (2, 3072), dtype=np.uint8), "labels": [0, 1]})
    members["batches.meta"] = pickle.dumps({"label_names": ["airplane", "automobile"]})
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    md5 = {name: hashlib.md5(blob).hexdigest() for name, blob in members.items()}
    return md5, hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def loopback_server(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path/served``; yields its base URL."""
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_cifar10_download_path_with_a_generated_archive(tmp_path, monkeypatch, loopback_server):
    """The real download code path (torchvision's downloader + our wrapper), served on loopback."""
    from torchvision.datasets import CIFAR10

    served, base_url = loopback_server
    archive = served / "cifar-10-python.tar.gz"
    md5, tgz_md5 = _fake_cifar_archive(archive)
    monkeypatch.setattr(CIFAR10, "url", f"{base_url}/cifar-10-python.tar.gz")
    monkeypatch.setattr(CIFAR10, "tgz_md5", tgz_md5)
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names", "md5": md5["batches.meta"]})
    root = tmp_path / "root"
    train = data.cifar10(root, "train", download=True)
    assert len(train) == 10 and train[0][0].shape == (3, 32, 32)
    test = data.load(f"cifar10:{root}", "test")  # now present: no download needed
    assert len(test) == 2 and data.targets_of(test) == [0, 1]
