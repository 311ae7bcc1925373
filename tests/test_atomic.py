"""xdnb.atomic: a reader sees the old file or the whole new one; nothing is left behind."""

import os
import stat

import pytest
import torch

from xdnb import atomic, models


def test_write_text_makes_folders_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "a" / "b" / "table.md"
    assert atomic.write_text(target, "héllo\n") == target
    assert target.read_text(encoding="utf-8") == "héllo\n"
    assert [p.name for p in target.parent.iterdir()] == ["table.md"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "results.json"
    atomic.write_text(target, "old")

    def half_then_fail(temporary):
        with open(temporary, "w") as f:
            f.write("half of the new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic.replace_with(target, half_then_fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_files_get_the_permissions_of_a_plain_open(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = atomic.write_text(tmp_path / "atomic.txt", "x")
    assert stat.S_IMODE(os.stat(written).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)


def test_a_saved_student_is_written_through_it(tmp_path):
    net = models.build("digits")
    path = models.save_student(net, tmp_path / "student.pt", build_args=models.builder("digits"), input_shape=(1, 8, 8))
    assert [p.name for p in tmp_path.iterdir()] == ["student.pt"]
    loaded, info = models.load_student(path)
    assert info["input_shape"] == (1, 8, 8)
    for name, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)
