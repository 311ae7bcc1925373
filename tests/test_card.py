"""The model card: every required field present and equal to the Result's values; written
atomically as JSON and markdown; the card ``xdnb compress --out`` writes and saves with the student."""

import importlib.util
import json

import pytest
import torch

from xdnb import card, latency, models
from xdnb.cli import main
from xdnb.experiment import RunConfig, run

REQUIRED = ("method", "method_config", "k", "seed", "few_shot_indices", "bn", "scheme", "teacher_accuracy",
            "student_accuracy", "params", "flops", "latency", "speedup", "versions", "machine")


@pytest.fixture(scope="module")
def random_teacher(tmp_path_factory):
    path = tmp_path_factory.mktemp("card") / "teacher.pt"
    torch.manual_seed(0)
    torch.save(models.digits_net().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def result(random_teacher, one_thread):
    config = RunConfig(teacher=str(random_teacher), method="cross", mu=0.5, k=2, seed=3, test_limit=50, device="cpu")
    return run(config, show_progress=False)


@pytest.fixture(scope="module")
def timed(result):
    teacher = models.load_checkpoint(models.digits_net(), result.config["teacher"]).eval()
    return latency.compare(teacher, result.student, (1, 8, 8), batch_sizes=(1, 4), threads=(1,), warmup=0, repeats=3)


def test_card_from_result_has_every_field_equal_to_the_result(result, timed, tmp_path):
    info = card.card_from_result(result, timed, input_shape=(1, 8, 8))
    json_path, md_path = card.write_card(tmp_path / "s.pt.card", info)
    assert (json_path.name, md_path.name) == ("s.pt.card.json", "s.pt.card.md")
    back = card.read_card(json_path)
    assert set(REQUIRED) <= set(back)
    c = result.config
    assert (back["method"], back["k"], back["seed"], back["scheme"]) == ("cross", 2, 3, c["pruning"])
    assert back["method_config"] == result.method_config and back["method_config"]["mu"] == 0.5
    assert back["bn"] == result.method_config["bn"] == c["bn"]
    assert back["few_shot_indices"] == result.few_shot_indices and len(back["few_shot_indices"]) == 20
    assert back["teacher_accuracy"] == result.teacher_accuracy and back["student_accuracy"] == result.student_accuracy
    assert back["params"] == {"teacher": result.teacher_size["params"], "student": result.student_size["params"],
                              "student_nonzero": result.student_size["nonzero"]}
    assert back["flops"]["teacher"] == result.teacher_size["flops_dense"]
    assert back["flops"]["student"] == result.student_size["flops_dense"]
    assert back["flops"]["reduction"] == pytest.approx(result.teacher_size["flops_dense"] / result.student_size["flops_dense"])
    assert back["latency"] == json.loads(json.dumps(timed))
    assert [(s["batch_size"], s["threads"]) for s in back["speedup"]] == [(1, 1), (4, 1)]
    assert [s["speedup"] for s in back["speedup"]] == [r["speedup"] for r in timed]
    assert back["run_config"] == c and back["run_versions"]["torch"] == str(torch.__version__)
    assert back["input"]["shape"] == [1, 8, 8]
    versions, box = back["versions"], back["machine"]
    assert {"xdnb", "torch", "torchvision", "python"} <= set(versions)
    assert ("onnxruntime" in versions) == (importlib.util.find_spec("onnxruntime") is not None)
    assert {"platform", "cpu_model", "cores", "torch_threads"} <= set(box) and box["cores"] >= 1
    md = md_path.read_text(encoding="utf-8")
    for text in ("cross", "K = 2", "seed 3", str(result.few_shot_indices[0]), "reestimate", c["pruning"],
                 f"{100 * result.student_accuracy:.2f} %", f"{result.student_size['params']:,}", "speed-up", "torch 2"):
        assert text in md, text
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary files


def test_cli_compress_writes_the_card_next_to_the_student_and_saves_it_inside(random_teacher, tmp_path, capsys):
    out = tmp_path / "s.pt"
    assert main(["compress", "--teacher", str(random_teacher), "--k", "1", "--seed", "2", "--test-limit", "50",
                 "--device", "cpu", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "speed-up" in printed and "model card" in printed
    json_path, md_path = card.card_paths(out)
    info = card.read_card(json_path)
    assert md_path.is_file() and set(REQUIRED) <= set(info)
    assert info["seed"] == 2 and info["k"] == 1 and info["input"]["shape"] == [1, 8, 8]
    rows = info["latency"]
    assert [(r["runtime"], r["batch_size"]) for r in rows] == [("torch", 1), ("torch", 64)]
    assert all(r["threads"] == torch.get_num_threads() and "teacher" in r and "student" in r for r in rows)
    from xdnb.export import load_student

    saved = load_student(out)
    assert saved.input_shape == (1, 8, 8) and saved.meta["card"]["few_shot_indices"] == info["few_shot_indices"]


def test_card_for_an_export_of_a_file_without_a_saved_card():
    meta = {"run": {"method": "regression", "k": 5, "seed": 1, "bn": "keep", "pruning": "VGG-C", "arch": "vgg16"},
            "student_accuracy": 0.5, "few_shot_indices": [1, 2, 3]}
    report = {"path": "s.onnx", "format": "onnx", "opset": 20, "bytes": 10, "exporter": "x", "checked": True,
              "batch_sizes": [1, 16], "max_abs_diff": 0.0, "tolerance": 1e-4, "tolerance_rule": "rule"}
    info = card.card_for_export(meta, report, [], input_shape=(3, 32, 32), student_file="s.onnx")
    assert (info["method"], info["k"], info["seed"], info["bn"], info["scheme"]) == ("regression", 5, 1, "keep", "VGG-C")
    assert info["few_shot_indices"] == [1, 2, 3] and info["export"] == report and info["input"]["shape"] == [3, 32, 32]
    assert "## Export" in card.markdown(info)
