"""Every ``xdnb`` sub-command over bad values of each argument: one line, never a traceback.

Each case calls :func:`xdnb.cli.main` in-process (fast: nothing is trained, the digits teacher
comes from the session's temporary cache) and asserts a non-zero exit status and that stderr is
either exactly one line ``xdnb: error: ...`` (our checks) or argparse's usage message ending in
one ``error:`` line (wrong types, unknown choices). A case that lets an exception escape fails
with its traceback.
"""

from __future__ import annotations

import re

import pytest
import torch

from xdnb import cli, models

USAGE_ERROR = re.compile(r"^xdnb(?: \w+)?: error: \S")


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits_teacher, cache_dir):
    """Bad inputs on disk: corrupt checkpoints, empty and non-image folders."""
    root = tmp_path_factory.mktemp("bad-inputs")
    good = root / "good.pt"
    torch.save(digits_teacher.state_dict(), good)
    raw = good.read_bytes()
    (root / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    (root / "garbage.pt").write_bytes(b"\x00\x01not a torch file at all" * 50)
    (root / "empty.pt").write_bytes(b"")
    (root / "text.pt").write_text("weights: none\n")
    torch.save([1, 2, 3], root / "list.pt")
    torch.save({"conv.weight": torch.zeros(3, 3)}, root / "wrong-keys.pt")
    torch.save({"spec": {"arch": "nonsense"}, "state_dict": {}}, root / "bad-spec.pt")
    (root / "folder.pt").mkdir()
    (root / "empty-folder" / "train").mkdir(parents=True)
    (root / "empty-folder" / "test").mkdir(parents=True)
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            folder = root / "not-images" / split / name
            folder.mkdir(parents=True)
            (folder / "notes.txt").write_text("not an image")
            bad = root / "bad-images" / split / name
            bad.mkdir(parents=True)
            (bad / "broken.png").write_bytes(b"this is no PNG")
    (root / "a-file").write_text("a file where a folder should be")
    return {"root": root, "cache": str(cache_dir)}


def _cases():
    """(id, argv with {root}/{cache} placeholders, a fragment the message must contain or None)."""
    teacher = [
        ("teacher-unknown-name", ["teacher", "alexnet"], "unknown architecture 'alexnet'"),
        ("teacher-unknown-torchvision", ["teacher", "torchvision:nonet", "--checkpoint", "{root}/good.pt"], "no classification model"),
        ("teacher-stem-not-resnet", ["teacher", "torchvision:vgg11", "--stem", "cifar", "--checkpoint", "{root}/good.pt"], "ResNets"),
        ("teacher-seed-not-int", ["teacher", "--seed", "x"], "invalid int"),
        ("teacher-seed-negative", ["teacher", "--seed", "-1", "--cache-dir", "{cache}"], "seed"),
        ("teacher-vgg16-no-checkpoint", ["teacher", "vgg16"], "checkpoint"),
        ("teacher-missing-checkpoint", ["teacher", "vgg16", "--checkpoint", "{root}/nope.pt"], "does not exist"),
        ("teacher-truncated-checkpoint", ["teacher", "digits", "--checkpoint", "{root}/truncated.pt"], "truncated.pt"),
        ("teacher-garbage-checkpoint", ["teacher", "digits", "--checkpoint", "{root}/garbage.pt"], "garbage.pt"),
        ("teacher-empty-checkpoint", ["teacher", "vgg16", "--checkpoint", "{root}/empty.pt"], "empty.pt"),
        ("teacher-text-checkpoint", ["teacher", "digits", "--checkpoint", "{root}/text.pt"], "text.pt"),
        ("teacher-list-checkpoint", ["teacher", "digits", "--checkpoint", "{root}/list.pt"], "state dict"),
        ("teacher-wrong-keys", ["teacher", "digits", "--checkpoint", "{root}/wrong-keys.pt"], "key"),
        ("teacher-folder-checkpoint", ["teacher", "digits", "--checkpoint", "{root}/folder.pt"], "folder.pt"),
        ("teacher-vgg16-digits-checkpoint", ["teacher", "vgg16", "--checkpoint", "{root}/good.pt"], "shape"),
        ("teacher-bad-data-spec", ["teacher", "--cache-dir", "{cache}", "--data", "mnist"], "unknown dataset"),
        ("teacher-data-no-root", ["teacher", "--cache-dir", "{cache}", "--data", "cifar10-folder"], "root folder"),
        ("teacher-data-missing", ["teacher", "--cache-dir", "{cache}", "--data", "cifar10-folder:{root}/nope"],
         "does not exist"),
        ("teacher-data-empty-folder", ["teacher", "--cache-dir", "{cache}", "--data", "cifar10-folder:{root}/empty-folder"],
         "empty-folder"),
        ("teacher-data-not-images", ["teacher", "--cache-dir", "{cache}", "--data", "cifar10-folder:{root}/not-images"],
         None),
        ("teacher-data-broken-images", ["teacher", "--cache-dir", "{cache}", "--data", "imagenet:{root}/bad-images"],
         None),
        ("teacher-cifar10-missing", ["teacher", "--cache-dir", "{cache}", "--data", "cifar10:{root}/nope"], None),
        ("teacher-cache-is-a-file", ["teacher", "--seed", "7", "--cache-dir", "{root}/a-file"], "a-file"),
    ]
    compress = [
        ("k-not-int", ["--k", "one"], "invalid int"),
        ("k-zero", ["--k", "0"], "k"),
        ("k-negative", ["--k", "-3"], "k"),
        ("k-too-many", ["--k", "100000"], None),
        ("seed-negative", ["--seed", "-1"], "seed"),
        ("views-zero", ["--views", "0"], "views must be an int >= 1, got 0"),
        ("views-not-int", ["--views", "two"], "invalid int"),
        ("augment-unknown", ["--views", "2", "--augment", "flip,blur"], "'blur' is not one of them"),
        ("augment-without-views", ["--augment", "crop"], "augment only applies with views > 1"),
        ("views-with-l1-norm", ["--method", "l1-norm", "--views", "2"], "l1-norm uses no data, so views do not apply"),
        ("arch-unknown", ["--arch", "alexnet", "--data", "digits"], "arch must be one of"),
        ("arch-missing-module", ["--arch", "no_such_pkg.nets:net", "--teacher", "{root}/good.pt", "--data", "digits"], "cannot import"),
        ("num-classes-zero", ["--num-classes", "0"], "num_classes must be an int >= 1 or None, got 0"),
        ("arch-vgg16-no-teacher", ["--arch", "vgg16", "--data", "digits"], "teacher"),
        ("arch-vgg16-no-data", ["--arch", "vgg16"], "--data"),
        ("objective-unknown", ["--objective", "magic"], "method must be one of"),
        ("mu-out-of-range", ["--mu", "3"], "mu"),
        ("mu-not-float", ["--mu", "half"], "invalid float"),
        ("mu-nan", ["--mu", "nan"], "mu"),
        ("mu-with-regression", ["--objective", "regression", "--mu", "0.5"], "mu"),
        ("alpha-without-soft", ["--alpha", "0.5"], "alpha"),
        ("soft-alpha-out-of-range", ["--objective", "soft", "--alpha", "2", "--beta", "0.5"], "alpha"),
        ("soft-missing-beta", ["--objective", "soft", "--alpha", "0.5"], None),
        ("scheme-unknown", ["--scheme", "VGG-Z"], None),
        ("scheme-keep-out-of-range", ["--scheme", "keep:1.5"], None),
        ("scheme-keep-not-number", ["--scheme", "keep:half"], None),
        ("scheme-sparse-out-of-range", ["--scheme", "sparse:-0.2"], None),
        ("scheme-resnet-on-vgg", ["--scheme", "Res-50"], None),
        ("solver-unknown", ["--solver", "sgd"], "invalid choice"),
        ("bn-unknown", ["--bn", "freeze"], "invalid choice"),
        ("ridge-negative", ["--ridge", "-1"], "ridge"),
        ("ridge-inf", ["--ridge", "inf"], "ridge"),
        ("rounds-negative", ["--rounds", "-1"], "rounds"),
        ("steps-zero", ["--steps", "0"], "steps"),
        ("lr-negative", ["--lr", "-0.1"], "lr"),
        ("finetune-steps-negative", ["--finetune-steps", "-5"], "finetune_steps"),
        ("batch-size-zero", ["--batch-size", "0"], "batch_size"),
        ("test-limit-zero", ["--test-limit", "0"], "test_limit"),
        ("device-cuda", ["--device", "cuda"], "CUDA"),
        ("device-cuda-index", ["--device", "cuda:7"], "cuda"),
        ("device-cuda-garbage", ["--device", "cuda:x"], "device"),
        ("device-unknown", ["--device", "tpu"], "device"),
        ("quantize-too-few-bits", ["--quantize", "1"], None),
        ("quantize-too-many-bits", ["--quantize", "9"], None),
        ("quantize-not-int", ["--quantize", "two"], "invalid int"),
        ("quantizer-unknown", ["--quantize", "2", "--quantizer", "magic"], None),
        ("quantizer-without-quantize", ["--quantizer", "proxquant"], "quantize"),
        ("granularity-unknown", ["--quantize", "2", "--granularity", "pixel"], None),
        ("quantize-steps-negative", ["--quantize", "2", "--quantize-steps", "-1"], None),
        ("quantize-baseline", ["--objective", "bp", "--quantize", "2"], "quantize"),
        ("teacher-missing", ["--teacher", "{root}/nope.pt"], "does not exist"),
        ("teacher-truncated", ["--teacher", "{root}/truncated.pt"], "truncated.pt"),
        ("teacher-garbage", ["--teacher", "{root}/garbage.pt"], "garbage.pt"),
        ("teacher-empty-file", ["--teacher", "{root}/empty.pt"], "empty.pt"),
        ("teacher-folder", ["--teacher", "{root}/folder.pt"], "folder.pt"),
        ("teacher-wrong-keys", ["--teacher", "{root}/wrong-keys.pt"], "key"),
        ("data-unknown", ["--data", "mnist"], "unknown dataset"),
        ("data-missing-folder", ["--data", "cifar10-folder:{root}/nope"], "does not exist"),
        ("data-empty-folder", ["--data", "cifar10-folder:{root}/empty-folder"], "empty-folder"),
        ("data-not-images", ["--data", "cifar10-folder:{root}/not-images"], None),
        ("data-broken-images", ["--data", "cifar10-folder:{root}/bad-images"], None),
        ("data-cifar10-missing", ["--data", "cifar10:{root}/nope"], None),
        ("out-into-a-file", ["--k", "1", "--test-limit", "20", "--out", "{root}/a-file/student.pt"], "a-file"),
        ("out-is-a-folder", ["--k", "1", "--test-limit", "20", "--out", "{root}/folder.pt"], "folder.pt"),
    ]
    reproduce = [
        ("preset-unknown", ["nonsense"], "invalid choice"),
        ("workers-zero", ["digits", "--workers", "0"], "workers"),
        ("workers-not-int", ["digits", "--workers", "two"], "invalid int"),
        ("seeds-negative", ["digits", "--seeds", "-1"], "seed"),
        ("seeds-not-int", ["digits", "--seeds", "a"], "invalid int"),
        ("methods-unknown", ["digits", "--methods", "magic"], None),
        ("methods-bad-mu", ["digits", "--methods", "cross:3"], "mu"),
        ("methods-bad-soft", ["digits", "--methods", "soft:0.5"], "soft"),
        ("k-zero", ["digits", "--k", "0"], "k"),
        ("schemes-unknown", ["digits", "--schemes", "VGG-Z"], None),
        ("device-cuda", ["digits", "--device", "cuda"], "CUDA"),
        ("device-unknown", ["digits", "--device", "tpu"], "device"),
        ("solver-unknown", ["digits", "--solver", "sgd"], "invalid choice"),
        ("test-limit-zero", ["digits", "--test-limit", "0"], "test_limit"),
        ("cifar-no-data-root", ["cifar10-vgg16-structured"], "data-root"),
        ("cifar-data-root-missing", ["cifar10-vgg16-structured", "--data-root", "{root}/nope", "--teacher",
                                     "{root}/good.pt"], None),
        ("cifar-data-root-empty", ["cifar10-vgg16-structured", "--data-root", "{root}/empty-folder", "--teacher",
                                   "{root}/good.pt"], None),
        ("cifar-teacher-missing", ["cifar10-vgg16-structured", "--data-root", "{root}/not-images", "--teacher",
                                   "{root}/nope.pt"], None),
        ("cifar-teacher-truncated", ["cifar10-vgg16-structured", "--data-root", "{root}/not-images", "--teacher",
                                     "{root}/truncated.pt"], None),
        ("out-is-a-file", ["digits", "--methods", "regression", "--k", "1", "--seeds", "0", "--no-notebook",
                           "--out", "{root}/a-file"], "a-file"),
    ]
    yield ("no-command", [], "required")
    for name, argv, fragment in teacher:
        yield name, argv, fragment
    for name, argv, fragment in compress:
        yield f"compress-{name}", ["compress", *argv], fragment
    for name, argv, fragment in reproduce:
        yield f"reproduce-{name}", ["reproduce", *argv, *([] if "--out" in argv else ["--out", "{root}/out"])], fragment


CASES = list(_cases())


@pytest.mark.parametrize("argv, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_argument_gives_one_line(argv, fragment, files, capsys, monkeypatch):
    monkeypatch.setenv("XDNB_CACHE", files["cache"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answers on a GPU machine
    argv = [a.format(root=files["root"], cache=files["cache"]) for a in argv]
    try:
        status = cli.main(argv)
    except SystemExit as exit:  # argparse's usage errors
        status = exit.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out, err
    assert status not in (0, None), f"exit status {status} for {argv}; stdout: {out!r}"
    lines = err.strip().splitlines()
    assert lines, f"no message on stderr for {argv}"
    if lines[0].startswith("usage:"):
        assert USAGE_ERROR.match(lines[-1]), err
        message = lines[-1]
    else:
        assert len(lines) == 1, f"more than one line on stderr:\n{err}"
        assert lines[0].startswith("xdnb: error: "), err
        message = lines[0]
    if fragment is not None:
        assert fragment.lower() in message.lower(), f"{message!r} does not mention {fragment!r}"


def test_corrupt_checkpoint_names_the_file(files):
    path = files["root"] / "truncated.pt"
    with pytest.raises(ValueError, match="truncated.pt"):
        models.load_checkpoint(models.digits_net(), path)
    with pytest.raises(ValueError, match="truncated.pt"):
        models.load_model(path)


def test_cuda_without_cuda_is_a_value_error(monkeypatch):
    from xdnb import experiment

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        experiment.resolve_device("cuda")
    assert experiment.resolve_device("auto").type == "cpu"
    assert experiment.resolve_device("cpu").type == "cpu"
