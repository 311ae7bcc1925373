"""Sweeps: grids, the results file (atomic lines, damage, resume), executors, presets, notebook 05, CLI."""

import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from xdnb import cli, presets, sweep, views
from xdnb.experiment import RunConfig
from xdnb.sweep import DamagedLineWarning, ResultStore, run_sweep

BASE = RunConfig(test_limit=60, device="cpu")
NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "05_reproduce.ipynb"
#: the row label of the digits preset's cross distillation with the recommended views
CROSS_VIEWS = f"cross(mu=0.6) + {views.RECOMMENDED['views']} views ({views.RECOMMENDED['augment']})"


@pytest.fixture(autouse=True)
def _digits_cache(monkeypatch, cache_dir, digits_teacher, one_thread):
    """Runs (here, in workers and in the notebook kernel) load the session's cached digits teacher."""
    monkeypatch.setenv("XDNB_CACHE", str(cache_dir))
    monkeypatch.setenv("XDNB_QUIET", "1")


def tiny(seeds=(0, 1), methods=("regression", "cross")):
    return sweep.grid(list(methods), [1], ["keep:0.5"], list(seeds), BASE)


def lines(path):
    return Path(path).read_text().splitlines()


def keys_in(path):
    return [json.loads(line)["key"] for line in lines(path)]


def test_grid_order_and_method_specs():
    configs = sweep.grid(["regression", "cross:0.3", "soft:1,0"], [1, 5], ["keep:0.5"], [0, 1], BASE)
    assert len(configs) == 12 and len({c.key() for c in configs}) == 12
    assert [(c.method, c.k, c.seed) for c in configs[:4]] == [("regression", 1, 0), ("regression", 1, 1),
                                                              ("regression", 5, 0), ("regression", 5, 1)]
    assert configs[4].mu == 0.3 and configs[-1].alpha == 1.0 and configs[-1].beta == 0.0
    assert sweep.parse_method("cross") == {"method": "cross", "mu": 0.6}
    assert [c.mu for c in sweep.mu_grid([0, 0.5], [1], [0], base=BASE)] == [0.0, 0.5]
    assert len(sweep.alpha_beta_grid([0, 1], [0, 0.5, 1], [1], [0, 1], base=BASE)) == 12
    with pytest.raises(ValueError, match="soft:ALPHA,BETA"):
        sweep.parse_method("soft:0.5")
    with pytest.raises(ValueError, match="takes no parameters"):
        sweep.parse_method("regression:2")
    with pytest.raises(ValueError, match="method must be one of .*, got 'sgd'"):
        sweep.grid(["sgd"], [1], ["keep:0.5"], [0], BASE)
    with pytest.raises(ValueError, match="ks must be a non-empty list"):
        sweep.grid(["cross"], [], ["keep:0.5"], [0], BASE)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        sweep.grid(["cross"], [0], ["keep:0.5"], [0], BASE)


def test_resume_after_crash_loses_and_duplicates_nothing(tmp_path):
    configs = tiny(seeds=(0, 1, 2))  # 6 runs
    path = tmp_path / "results.jsonl"
    seen = []

    def crash_after_two(result):
        seen.append(result)
        if len(seen) == 2:
            raise KeyboardInterrupt  # the process dies right after storing its second result

    with pytest.raises(KeyboardInterrupt):
        run_sweep(configs, path, on_result=crash_after_two, show_progress=False)
    assert len(lines(path)) == 2
    # ... and a third run died half way through writing its line
    third = sweep.encode_line(sweep.execute(configs[2].to_dict()))
    with open(path, "a") as out:
        out.write(third[: len(third) // 2])
    with pytest.warns(DamagedLineWarning, match=r"results.jsonl:3: damaged result line \(cut short"):
        report = run_sweep(configs, path, show_progress=False)
    assert (report.ran, report.reused) == (4, 2)
    assert sorted(keys_in(path)) == sorted(c.key() for c in configs)  # every run once
    assert [r.run_config for r in report.results] == configs
    assert (tmp_path / "results.jsonl.damaged").read_text() == third[: len(third) // 2] + "\n"
    # a finished sweep is all reused, and the numbers are those of the first pass
    again = run_sweep(configs, path, show_progress=False)
    assert (again.ran, again.reused) == (0, 6)
    assert [r.student_accuracy for r in again.results[:2]] == [r.student_accuracy for r in seen]


def test_slim_stores_keep_the_numbers_drop_the_per_layer_lists_and_resume(tmp_path):
    configs = tiny(seeds=(0,), methods=("cross",))
    full = run_sweep(configs, tmp_path / "full.jsonl", show_progress=False).results[0]
    slim = run_sweep(configs, tmp_path / "slim.jsonl", show_progress=False, slim=True).results[0]
    assert full.history and full.kept_channels  # what slim leaves out is there in a full store
    assert (slim.history, slim.kept_channels) == ([], {})
    assert slim.student_accuracy == full.student_accuracy and slim.config == full.config
    assert slim.student_size == full.student_size and slim.few_shot_indices == full.few_shot_indices
    assert (tmp_path / "slim.jsonl").stat().st_size < (tmp_path / "full.jsonl").stat().st_size / 2
    again = run_sweep(configs, tmp_path / "slim.jsonl", show_progress=False, slim=True)
    assert (again.ran, again.reused) == (0, 1)


def test_resume_after_the_process_is_killed(tmp_path):
    """A real crash: SIGKILL a sweep in another process once it has stored a few runs."""
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "results.jsonl"
    script = ("import sys, torch; torch.set_num_threads(1)\n"
              "from xdnb import sweep\nfrom xdnb.experiment import RunConfig\n"
              "configs = sweep.grid(['regression', 'cross'], [1, 2], ['keep:0.5'], range(5), "
              "RunConfig(test_limit=60, device='cpu'))\n"
              "sweep.run_sweep(configs, sys.argv[1], show_progress=False)\n")
    child = subprocess.Popen([sys.executable, "-c", script, str(path)])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if path.exists() and path.read_bytes().count(b"\n") >= 3:
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL, "the sweep finished before it could be killed"
    configs = sweep.grid(["regression", "cross"], [1, 2], ["keep:0.5"], range(5), BASE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DamagedLineWarning)  # the kill may or may not cut a line
        report = run_sweep(configs, path, show_progress=False)
    assert report.reused >= 3 and report.ran + report.reused == 20
    assert sorted(keys_in(path)) == sorted(c.key() for c in configs)


def test_lines_with_a_legacy_key_are_reused_under_the_new_key(tmp_path):
    configs = tiny()
    path = tmp_path / "results.jsonl"
    run_sweep(configs, path, show_progress=False)
    old = []
    for line in lines(path):  # rewrite each line as an older xdnb wrote it: keyed by the legacy key
        record = json.loads(line)
        record["key"] = RunConfig.from_dict(record["result"]["config"]).legacy_key()
        old.append(json.dumps(record))
    assert all(json.loads(a)["key"] != json.loads(b)["key"] for a, b in zip(old, lines(path)))
    path.write_text("\n".join(old) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DamagedLineWarning)
        report = run_sweep(configs, path, show_progress=False)
    assert report.ran == 0 and report.reused == len(configs)
    assert sorted(ResultStore(path).load()) == sorted(c.key() for c in configs)


def test_damaged_lines_are_reported_set_aside_and_rerun(tmp_path):
    configs = tiny()
    path = tmp_path / "results.jsonl"
    run_sweep(configs, path, show_progress=False)
    good = lines(path)
    record = json.loads(good[1])
    computed = record["result"]["student_accuracy"]
    record["result"]["student_accuracy"] += 0.125  # valid JSON, but not what was computed
    tampered = json.dumps(record)
    path.write_bytes("\n".join([good[0], "{not json", tampered, good[2], good[3]]).encode() + b"\n\xff\xfe\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        done = ResultStore(path).load()
    messages = [str(w.message) for w in caught if issubclass(w.category, DamagedLineWarning)]
    assert len(messages) == 3
    assert ":2: damaged result line (not JSON" in messages[0]
    assert ":3: damaged result line (checksum mismatch)" in messages[1]
    assert ":6: damaged result line (not UTF-8)" in messages[2]
    assert set(done) == {configs[0].key(), configs[2].key(), configs[3].key()}
    # kept byte for byte, not dropped
    assert (tmp_path / "results.jsonl.damaged").read_bytes() == f"{{not json\n{tampered}\n".encode() + b"\xff\xfe\n"
    assert len(lines(path)) == 3
    report = run_sweep(configs, path, show_progress=False)  # re-runs only the damaged one
    assert (report.ran, report.reused) == (1, 3)
    assert sorted(keys_in(path)) == sorted(c.key() for c in configs)
    assert report.results[1].student_accuracy == computed


def test_a_failed_append_leaves_no_partial_line(tmp_path, monkeypatch):
    configs = tiny(seeds=(0,), methods=("regression",))
    path = tmp_path / "results.jsonl"
    run_sweep(configs, path, show_progress=False)
    before = path.read_bytes()
    real_write = os.write

    def half_then_fail(fd, data):
        real_write(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sweep.os, "write", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        ResultStore(path).append(sweep.execute(tiny(seeds=(5,), methods=("regression",))[0].to_dict()))
    monkeypatch.undo()
    assert path.read_bytes() == before
    # a cut-short last line left by a crash is never glued to the next one
    path.write_bytes(before + b'{"key":"abc","che')
    store = ResultStore(path)
    store.append(json.loads(before.splitlines()[0])["result"])
    with pytest.warns(DamagedLineWarning, match=":2: damaged"):
        assert len(store.load()) == 1
    assert len(lines(path)) == 2


def test_failures_stop_the_sweep_but_keep_finished_runs(tmp_path):
    good = tiny(seeds=(0,))
    broken = BASE.replace(method="regression", data="cifar10-folder:/nonexistent/xdnb", k=1)
    path = tmp_path / "results.jsonl"
    with ThreadPoolExecutor(1) as pool, pytest.raises(FileNotFoundError, match="/nonexistent/xdnb"):
        run_sweep(good + [broken], path, executor=pool, show_progress=False)
    assert sorted(keys_in(path)) == sorted(c.key() for c in good)
    with pytest.raises(FileNotFoundError):
        run_sweep([broken] + good, tmp_path / "sequential.jsonl", show_progress=False)
    with pytest.raises(ValueError, match="either executor or workers"):
        run_sweep(good, path, executor=ThreadPoolExecutor(1), workers=2)
    with pytest.raises(ValueError, match="k must be an int >= 1"):  # nothing runs on a bad config
        run_sweep(good + [RunConfig(k=0)], tmp_path / "never.jsonl")
    assert not (tmp_path / "never.jsonl").exists()


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, cache_dir, digits_teacher, one_thread):
    os.environ["XDNB_CACHE"] = str(cache_dir)
    report = run_sweep(tiny(seeds=(0, 1, 2)), tmp_path_factory.mktemp("seq") / "r.jsonl", show_progress=False)
    return {r.run_config.key(): r for r in report.results}


def test_dask_executor_gives_the_sequential_numbers(tmp_path, sequential):
    import distributed  # the test extra installs dask[distributed]
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        report = run_sweep(tiny(seeds=(0, 1, 2)), tmp_path / "r.jsonl", executor=client.get_executor(),
                           show_progress=False)
    assert report.ran == 6 and len(lines(tmp_path / "r.jsonl")) == 6
    for result in report.results:
        expected = sequential[result.run_config.key()]
        assert result.student_accuracy == expected.student_accuracy
        assert result.few_shot_indices == expected.few_shot_indices


def test_process_pool_gives_the_sequential_numbers(tmp_path, sequential):
    report = run_sweep(tiny(seeds=(0, 1, 2)), tmp_path / "r.jsonl", workers=2, show_progress=False)
    assert report.ran == 6 and sorted(keys_in(tmp_path / "r.jsonl")) == sorted(sequential)
    assert {r.versions["threads"] for r in report.results} == {1}
    for result in report.results:
        assert result.student_accuracy == sequential[result.run_config.key()].student_accuracy


def test_presets_shapes_and_missing_inputs(tmp_path):
    digits = presets.preset("digits")
    methods = presets.available_methods()
    assert len(digits.configs) == (len(methods) + 2) * 4 * 3 and methods[-2:] == ["cross", presets.SOFT]
    assert {c.k for c in digits.configs} == {1, 2, 5, 10} and {c.pruning for c in digits.configs} == {"keep:0.25"}
    small = presets.preset("digits", methods=["cross"], ks=[1], seeds=[4], test_limit=50)
    assert [(c.method, c.k, c.seed, c.test_limit, c.views) for c in small.configs] == [
        ("cross", 1, 4, 50, 1), ("cross", 1, 4, 50, views.RECOMMENDED["views"])]
    assert len(presets.preset("mu-sweep").configs) == 11 * 2 * 3
    assert len(presets.preset("alpha-beta-grid", seeds=[0]).configs) == 25
    with pytest.raises(FileNotFoundError, match="pass data_root=ROOT"):
        presets.preset("cifar10-vgg16-structured")
    with pytest.raises(FileNotFoundError, match=r"no CIFAR-10 under .*pass --data-root"):
        presets.preset("cifar10-vgg16-structured", data_root=tmp_path)
    (tmp_path / "train").mkdir(), (tmp_path / "test").mkdir()
    with pytest.raises(FileNotFoundError, match="needs the teacher: pass teacher=PATH"):
        presets.preset("cifar10-vgg16-unstructured", data_root=tmp_path)
    (tmp_path / "t.pt").write_bytes(b"")
    structured = presets.preset("cifar10-vgg16-structured", data_root=tmp_path, teacher=tmp_path / "t.pt", seeds=[0])
    assert {c.pruning for c in structured.configs} == set(presets.VGG_SCHEMES)
    assert structured.configs[0].data == f"cifar10-folder:{tmp_path.resolve()}"
    unstructured = presets.preset("cifar10-vgg16-unstructured", data_root=tmp_path, teacher=tmp_path / "t.pt")
    assert not {"fskd", "thinet", "cp"} & {c.method for c in unstructured.configs}
    pairs = [(c.method, c.pruning, c.k, c.seed, c.alpha) for c in unstructured.configs]
    assert len(pairs) == len(set(pairs))
    assert {c.k for c in unstructured.configs if c.pruning == "sparse:0.9"} == {1, 2, 3, 5, 10}
    assert {c.k for c in unstructured.configs if c.pruning == "sparse:0.5"} == {1}
    with pytest.raises(FileNotFoundError, match="train and .*val"):
        presets.preset("imagenet-resnet34-structured", data_root=tmp_path)
    with pytest.raises(ValueError, match="unknown preset 'cifar100'"):
        presets.preset("cifar100")
    with pytest.raises(ValueError, match="pass mus instead of methods"):
        presets.preset("mu-sweep", methods=["cross"])
    with pytest.raises(ValueError, match="preset-owned option 'k'"):
        presets.preset("digits", k=3)


def test_digits_preset_runs_the_views_pipeline_as_rows_of_its_own(tmp_path):
    digits = presets.preset("digits")
    paper = [c for c in digits.configs if c.views == 1]
    extra = [c for c in digits.configs if c.views != 1]
    assert views.RECOMMENDED["views"] > 1
    assert [(c.method, c.k, c.seed) for c in paper] == [(c.method, c.k, c.seed) for c in presets.preset("digits", views=1).configs]
    assert len(paper) == len(presets.available_methods()) * 4 * 3
    assert sorted({c.method for c in extra}) == ["cross", "regression"] and len(extra) == 2 * 4 * 3
    assert {(c.views, c.augment, c.pruning) for c in extra} == {(views.RECOMMENDED["views"], views.RECOMMENDED["augment"],
                                                                 presets.DIGITS_SCHEME)}
    assert len({c.key() for c in digits.configs}) == len(digits.configs)
    # the table keeps the two protocols apart: paper runs at 80 %, views runs at 90 %
    fake = [{"config": c.to_dict(), "student_accuracy": 0.8 if c.views == 1 else 0.9, "teacher_accuracy": 0.99}
            for c in digits.configs if c.k == 1]
    table = digits.tables(fake)[0]
    regression_views = f"regression + {views.RECOMMENDED['views']} views ({views.RECOMMENDED['augment']})"
    assert table.rows[-2:] == [regression_views, CROSS_VIEWS] and "cross(mu=0.6)" in table.rows
    assert table.stats("cross(mu=0.6)", 1)[:2] == (80.0, 0.0) and table.stats(CROSS_VIEWS, 1)[:2] == (90.0, 0.0)
    assert f"| {CROSS_VIEWS} | **90.00 ± 0.00** |" in table.to_markdown()
    # overrides: another setting, none at all, baselines only, and one-line errors
    other = presets.preset("digits", methods=["regression", "fskd"], views=8, augment="crop", ks=[1], seeds=[0])
    assert [(c.method, c.views, c.augment) for c in other.configs] == [
        ("regression", 1, views.DEFAULT_AUGMENT), ("fskd", 1, views.DEFAULT_AUGMENT), ("regression", 8, "crop")]
    assert {c.views for c in presets.preset("digits", methods=["fskd", "cp"]).configs} == {1}
    with pytest.raises(ValueError, match=r"^augment only applies with views > 1; got views=1 with augment='flip'$"):
        presets.preset("digits", views=1, augment="flip")
    with pytest.raises(ValueError, match="views must be an int >= 1, got 0"):
        presets.preset("digits", views=0)
    with pytest.raises(ValueError, match="'blur' is not one of them"):
        presets.preset("digits", augment="blur")
    # the other presets: views apply to the objectives, the baselines keep one view per image
    (tmp_path / "train").mkdir(), (tmp_path / "test").mkdir(), (tmp_path / "t.pt").write_bytes(b"")
    structured = presets.preset("cifar10-vgg16-structured", data_root=tmp_path, teacher=tmp_path / "t.pt", seeds=[0],
                                ks=[1], schemes=["VGG-A"], views=2)
    assert {(c.method, c.views) for c in structured.configs} == (
        {(m, 2) for m in ("regression", "correction", "imitation", "cross", "soft")}
        | {(m, 1) for m in ("l1-norm", "bp", "fitnet", "fskd", "thinet", "cp")})
    assert {c.views for c in presets.preset("mu-sweep", seeds=[0]).configs} == {1}


def test_notebook_05_runs_under_papermill(tmp_path):
    import papermill  # the test extra installs papermill
    out = tmp_path / "out"
    executed = tmp_path / "05.ipynb"
    parameters = {"preset": "digits", "methods": ["regression", "cross"], "ks": [1, 2], "seeds": [0, 1],
                  "options": {"test_limit": 60, "device": "cpu"}, "out_dir": str(out)}
    papermill.execute_notebook(str(NOTEBOOK), str(executed), parameters=parameters, progress_bar=False,
                               cwd=str(tmp_path), kernel_name="python3")
    text = executed.read_text()
    assert "16 runs done now, 0 found finished in results.jsonl" in text  # 8 of the paper's protocol, 8 with views
    assert "| method | K=1 | K=2 |" in text and "| cross(mu=0.6) |" in text and f"| {CROSS_VIEWS} |" in text
    assert len(lines(out / "results.jsonl")) == 16
    plan = presets.preset("digits", methods=["regression", "cross"], ks=[1, 2], seeds=[0, 1], test_limit=60, device="cpu")
    report = run_sweep(plan.configs, out / "results.jsonl", show_progress=False)
    assert report.ran == 0  # the notebook stored exactly these runs
    assert (out / "table.md").read_text() == plan.markdown(report.results)
    assert (out / "figure.html").stat().st_size > 1000 and json.loads((out / "summary.json").read_text())["runs"] == 16


def test_cli_reproduce_library_path_and_errors(tmp_path, capsys):
    code = cli.main(["reproduce", "digits", "--no-notebook", "--out", str(tmp_path), "--methods", "cross",
                     "--k", "1", "--seeds", "0", "1", "--test-limit", "60", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0 and "digits: 4 runs" in printed and "| cross(mu=0.6) |" in printed and f"| {CROSS_VIEWS} |" in printed
    assert len(lines(tmp_path / "results.jsonl")) == 4
    assert cli.main(["reproduce", "cifar10-vgg16-structured", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("xdnb: error: this preset needs CIFAR-10") and "--data-root" in error
    assert error.count("\n") == 1
    assert cli.main(["reproduce", "digits", "--methods", "sgd"]) == 2
    assert "method must be one of" in capsys.readouterr().err
