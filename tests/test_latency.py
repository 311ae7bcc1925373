"""The latency harness, structurally: the rows asked for, consistent statistics, threads restored.
No timing assertions here (speed goals belong to bench/latency.py)."""

import pytest
import torch
from torch import nn

from xdnb import latency, models

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    teacher = models.digits_net().eval()
    student = models.vgg([8, "M", 16, "M", 16], in_channels=1, hidden=16).eval()
    return teacher, student


def check_stats(stats: dict, batch_size: int, repeats: int):
    assert stats["repeats"] == repeats
    assert 0 < stats["min_ms"] <= stats["q1_ms"] <= stats["median_ms"] <= stats["q3_ms"] <= stats["max_ms"]
    assert stats["median_ms_per_image"] == pytest.approx(stats["median_ms"] / batch_size)


def test_measure_returns_one_row_per_batch_size_and_thread_count_and_restores_threads(nets):
    teacher, _ = nets
    torch.set_num_threads(1)
    rows = latency.measure(teacher, SHAPE, batch_sizes=(1, 3), threads=(2, 1), warmup=1, repeats=4)
    assert torch.get_num_threads() == 1
    assert [(r["batch_size"], r["threads"]) for r in rows] == [(1, 2), (3, 2), (1, 1), (3, 1)]
    for r in rows:
        assert r["runtime"] == "torch" and r["model"] == "VGG" and r["warmup"] == 1
        check_stats(r, r["batch_size"], 4)
    assert "median ms" in latency.table(rows)


def test_threads_are_restored_after_an_error(nets):
    class Fails(nn.Module):
        def forward(self, x):
            if len(x) > 1:
                raise RuntimeError("boom")
            return x

    torch.set_num_threads(1)
    with pytest.raises(RuntimeError, match="boom"):
        latency.measure(Fails(), SHAPE, batch_sizes=(1, 2), threads=(2,), repeats=1)
    assert torch.get_num_threads() == 1


def test_compare_times_both_side_by_side_and_gives_the_ratio(nets):
    teacher, student = nets
    rows = latency.compare(teacher, student, SHAPE, batch_sizes=(2,), threads=(1,), warmup=0, repeats=5)
    (row,) = rows
    assert (row["runtime"], row["batch_size"], row["threads"], row["repeats"]) == ("torch", 2, 1, 5)
    check_stats(row["teacher"], 2, 5)
    check_stats(row["student"], 2, 5)
    assert row["speedup"] == pytest.approx(row["teacher"]["median_ms"] / row["student"]["median_ms"])
    assert 0 < row["speedup_q1"] <= row["speedup_q3"]
    assert "speed-up" in latency.table(rows)


def test_onnxruntime_and_pt2_files(nets, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from xdnb import export

    student = nets[1]
    onnx_path = export.export(student, tmp_path / "s.onnx", "onnx", SHAPE).path
    rows = latency.measure(onnx_path, SHAPE, batch_sizes=(1,), threads=(1, 2), runtime="onnxruntime", repeats=3)
    assert [(r["runtime"], r["threads"], r["model"]) for r in rows] == [("onnxruntime", 1, "s.onnx"), ("onnxruntime", 2, "s.onnx")]
    for r in rows:
        check_stats(r, 1, 3)
    # a module is exported to a temporary file first
    (row,) = latency.compare(onnx_path, student, SHAPE, batch_sizes=(4,), threads=(1,), runtime="onnxruntime", repeats=2)
    check_stats(row["student"], 4, 2)
    pt2 = export.export(student, tmp_path / "s.pt2", "pt2", SHAPE).path
    (row,) = latency.measure(pt2, SHAPE, batch_sizes=(2,), threads=(1,), repeats=2)
    check_stats(row, 2, 2)


@pytest.mark.parametrize("kwargs, message", [
    ({"runtime": "tvm"}, "runtime must be one of torch, onnxruntime"),
    ({"batch_sizes": (0,)}, "batch_sizes must be a non-empty sequence of positive ints"),
    ({"threads": ()}, "threads must be a non-empty sequence"),
    ({"repeats": 0}, "repeats must be an int >= 1"),
    ({"warmup": -1}, "warmup must be an int >= 0"),
])
def test_bad_arguments(nets, kwargs, message):
    with pytest.raises(ValueError, match=message):
        latency.measure(nets[0], SHAPE, **kwargs)


def test_torch_runtime_rejects_an_onnx_file(tmp_path):
    with pytest.raises(ValueError, match="runtime 'torch' times an nn.Module or a .pt2 file"):
        latency.measure(tmp_path / "s.onnx", SHAPE)


def test_side_by_side_times_several_networks_against_a_reference(nets):
    teacher, student = nets
    rows = latency.side_by_side({"teacher": teacher, "a": student, "b": student}, SHAPE, reference="teacher",
                                batch_sizes=(1,), threads=(1,), warmup=0, repeats=3)
    (row,) = rows
    assert set(row["models"]) == set(row["speedup"]) == set(row["speedup_iqr"]) == {"teacher", "a", "b"}
    assert row["speedup"]["teacher"] == 1.0 and row["speedup_iqr"]["teacher"] == [1.0, 1.0]
    for label in ("a", "b"):
        check_stats(row["models"][label], 1, 3)
    with pytest.raises(ValueError, match="reference 'x' is not one of the labels"):
        latency.side_by_side({"a": student}, SHAPE, reference="x")


def test_a_missing_onnx_file_is_named(tmp_path):
    pytest.importorskip("onnxruntime")
    with pytest.raises(FileNotFoundError, match="missing.onnx does not exist"):
        latency.measure(tmp_path / "missing.onnx", SHAPE, runtime="onnxruntime")
