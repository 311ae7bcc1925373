"""Export round trips (ONNX in onnxruntime, torch.export .pt2) against PyTorch eager, clear errors,
and the ``xdnb export`` command on good and bad input."""

import sys

import numpy as np
import pytest
import torch
from torch import nn

from xdnb import export as xexport
from xdnb import models
from xdnb.cli import main

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")


def within_tolerance(got, expected) -> bool:
    got, expected = torch.as_tensor(got), torch.as_tensor(expected)
    return float((got - expected).abs().max()) <= xexport.TOLERANCE * (1 + float(expected.abs().max()))


@pytest.fixture(scope="module")
def digits_student():
    """A physically smaller digits student (random teacher weights: shapes matter here, not accuracy)."""
    from xdnb import distill

    torch.manual_seed(0)
    teacher = models.digits_net().eval()
    images = torch.randn(20, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    student = distill.compress(teacher, images, "cross", pruning="keep:0.5", show_progress=False).student
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())
    return student.eval()


@pytest.fixture(scope="module")
def resnet18():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


def run_exported(path, x: torch.Tensor) -> torch.Tensor:
    """Run an exported file independently of xdnb.export's own check."""
    if str(path).endswith(".onnx"):
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        return torch.export.load(str(path)).module()(x)


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
@pytest.mark.parametrize("which, shape", [("digits_student", (1, 8, 8)), ("resnet18", (3, 32, 32))])
def test_round_trip_matches_pytorch_at_a_batch_size_not_used_at_export(request, tmp_path, fmt, which, shape):
    model = request.getfixturevalue(which)
    path = tmp_path / f"model.{fmt}"
    report = xexport.export(model, path, fmt, shape)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # one self-contained file, no side file
    assert report.checked and report.passed and report.format == fmt and report.model == type(model).__name__
    assert report.batch_sizes == list(xexport.CHECK_BATCHES) and [r["batch_size"] for r in report.per_batch] == [1, 16]
    assert report.max_abs_diff <= report.tolerance == pytest.approx(xexport.TOLERANCE * (1 + report.max_abs_logit))
    assert report.bytes == path.stat().st_size and report.input_shape == list(shape)
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(5))  # 3: neither the traced 2 nor the checked 1, 16
    with torch.no_grad():
        expected = model(x)
    got = run_exported(path, x)
    assert got.shape == (3, 10) and within_tolerance(got, expected)
    if fmt == "onnx":
        proto = onnx.load(str(path))
        assert report.opset == next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        (dim, *rest), = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input]
        assert isinstance(dim, str) and rest == list(shape)  # a symbolic (dynamic) batch dimension


def test_export_keeps_the_model_mode_and_verify_reports_a_mismatch(tmp_path, digits_student):
    digits_student.train()
    try:
        xexport.export(digits_student, tmp_path / "s.onnx", "onnx", (1, 8, 8))
        assert digits_student.training
    finally:
        digits_student.eval()
    other = models.digits_net().eval()
    result = xexport.verify(tmp_path / "s.onnx", other, (1, 8, 8))
    assert not result["passed"] and result["max_abs_diff"] > result["tolerance"]
    assert xexport.verify(tmp_path / "s.onnx", digits_student, (1, 8, 8), batch_sizes=(7,))["passed"]


class Branchy(nn.Module):
    """Data-dependent control flow: torch.export cannot trace it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.fc(x.flatten(1))
        return x if x.sum() > 0 else -x


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_unsupported_model_gives_one_line_naming_model_and_reason(tmp_path, fmt, capfd):
    with pytest.raises(ValueError) as info:
        xexport.export(Branchy(), tmp_path / f"b.{fmt}", fmt, (1, 8, 8))
    message = str(info.value)
    assert message.startswith(f"cannot export Branchy to {fmt}: ") and "\n" not in message and len(message) < 400
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary folder left
    assert "def forward" not in capfd.readouterr().err  # the exporter's graph dumps are kept quiet


def test_bad_arguments_are_clear(tmp_path, digits_student):
    with pytest.raises(ValueError, match=r"VGG does not run on an input of shape \(2, 3, 8, 8\)"):
        xexport.export(digits_student, tmp_path / "s.onnx", "onnx", (3, 8, 8))
    with pytest.raises(ValueError, match="unknown export format 'tflite'; allowed: onnx, pt2"):
        xexport.export(digits_student, tmp_path / "s.tflite", "tflite", (1, 8, 8))
    with pytest.raises(ValueError, match="input_shape must be positive ints"):
        xexport.export(digits_student, tmp_path / "s.onnx", "onnx", (1, 0, 8))
    with pytest.raises(ValueError, match="needs an nn.Module"):
        xexport.export("not a model", tmp_path / "s.onnx", "onnx", (1, 8, 8))
    with pytest.raises(FileNotFoundError):
        xexport.verify(tmp_path / "missing.onnx", digits_student, (1, 8, 8))


def test_missing_extra_says_how_to_install(monkeypatch, tmp_path, digits_student):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # makes `import onnxscript` fail
    with pytest.raises(xexport.MissingExtra, match=r"onnxscript is not installed .*xdnb\[export\]") as info:
        xexport.export(digits_student, tmp_path / "s.onnx", "onnx", (1, 8, 8))
    assert isinstance(info.value, ValueError) and isinstance(info.value, ImportError)


# --- the command line -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_student(tmp_path_factory, one_thread):
    """``xdnb compress --out s.pt`` on digits with a random-weight teacher checkpoint (no training)."""
    folder = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    torch.save(models.digits_net().state_dict(), folder / "teacher.pt")
    code = main(["compress", "--teacher", str(folder / "teacher.pt"), "--k", "1", "--test-limit", "50",
                 "--device", "cpu", "--out", str(folder / "s.pt")])
    assert code == 0
    return folder / "s.pt"


def test_cli_export_onnx_runs_with_the_students_logits_and_writes_a_card(saved_student, capsys):
    from xdnb import card

    out = saved_student.with_name("cli.onnx")
    assert main(["export", str(saved_student), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "exported" in printed and "verified" in printed and "model card" in printed
    student = xexport.load_student(saved_student)
    assert student.input_shape == (1, 8, 8)
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert within_tolerance(run_exported(out, x), student.model(x))
    json_path, md_path = card.card_paths(out)
    info = card.read_card(json_path)
    assert info["export"]["passed"] and info["export"]["format"] == "onnx" and info["student_file"] == str(out)
    assert info["few_shot_indices"] == student.meta["few_shot_indices"]
    exported_rows = [r for r in info["latency"] if r.get("model") == "cli.onnx"]
    assert [r["batch_size"] for r in exported_rows] == [1, 64] and {r["runtime"] for r in exported_rows} == {"onnxruntime"}
    assert md_path.is_file() and "## Export" in md_path.read_text(encoding="utf-8")


def test_cli_export_pt2_with_the_default_output_name(saved_student, capsys):
    assert main(["export", str(saved_student), "--format", "pt2"]) == 0
    assert saved_student.with_suffix(".pt2").is_file()
    assert saved_student.with_name("s.pt2.card.json").is_file()


def _bad_inputs(folder, saved_student):
    (folder / "notes.txt").write_text("not a model\n")
    torch.save(models.digits_net().state_dict(), folder / "state_dict.pt")  # a checkpoint, not a student
    data = saved_student.read_bytes()
    (folder / "corrupt.pt").write_bytes(data[: len(data) // 2])
    return {  # (arguments, what the one line must contain: the reason, or at least the file)
        "missing file": ([str(folder / "nothing.pt")], "nothing.pt does not exist"),
        "unknown format": ([str(saved_student), "--format", "tflite"], "unknown export format 'tflite'"),
        "not a student (state dict)": ([str(folder / "state_dict.pt")], "state_dict.pt"),
        "not a student (text)": ([str(folder / "notes.txt")], "notes.txt"),
        "corrupt file": ([str(folder / "corrupt.pt")], "corrupt.pt"),
        "would overwrite itself": ([str(saved_student), "--out", str(saved_student)], "would overwrite the student"),
    }


def test_cli_bad_input_gives_one_clear_line(tmp_path, saved_student, capsys):
    for case, (argv, message) in _bad_inputs(tmp_path, saved_student).items():
        code = main(["export", *argv, "--out", str(tmp_path / "x.onnx")] if "--out" not in argv else ["export", *argv])
        err = capsys.readouterr().err
        assert code != 0, case
        assert err.count("\n") == 1 and err.startswith("xdnb: error: ") and message in err, (case, err)
        assert "student" in err or case == "unknown format", (case, err)
    assert not (tmp_path / "x.onnx").exists()


def test_exported_onnx_logits_are_float32_numpy(tmp_path, digits_student):
    path = tmp_path / "s.onnx"
    xexport.export(digits_student, path, "onnx", (1, 8, 8), check=False)
    session = xexport.onnx_session(path, threads=1)
    (logits,) = session.run(None, {"input": np.zeros((4, 1, 8, 8), dtype=np.float32)})
    assert logits.dtype == np.float32 and logits.shape == (4, 10)
