"""RunConfig validation and keys, Result JSON round trip, determinism of one run."""

import json
import subprocess
import sys

import pytest

from xdnb import distill
from xdnb.experiment import Result, RunConfig, method_label, run


@pytest.fixture(autouse=True)
def _digits_cache(monkeypatch, cache_dir, digits_teacher, one_thread):
    """Runs load the digits teacher the session fixture trained into the temporary cache."""
    monkeypatch.setenv("XDNB_CACHE", str(cache_dir))


TINY = dict(k=1, test_limit=100, device="cpu")


@pytest.mark.parametrize("changes, message", [
    ({"method": "distill"}, "method must be one of .*, got 'distill'"),
    ({"method": "regression", "mu": 0.5}, "mu only applies to method 'cross'"),
    ({"method": "cross", "alpha": 0.5}, "alpha and beta only apply to method 'soft'"),
    ({"method": "soft"}, "alpha and beta"),
    ({"method": "cross", "mu": 1.5}, "mu must be a number in [0, 1], got 1.5"),
    ({"k": 0}, "k must be an int >= 1, got 0"),
    ({"k": 1.0}, "k must be an int >= 1, got 1.0"),
    ({"seed": -1}, "seed must be an int >= 0, got -1"),
    ({"test_limit": 0}, "test_limit must be an int >= 1 or None, got 0"),
    ({"batch_size": True}, "batch_size must be an int >= 1 or None, got True"),
    ({"steps": 0}, "steps must be an int >= 1"),
    ({"ridge": float("nan")}, "ridge must be a finite number"),
    ({"device": "tpu"}, "device must be 'auto', 'cpu' or 'cuda"),
    ({"solver": "sgd"}, "solver must be one of"),
    ({"arch": "vgg19"}, "arch must be one of"),
    ({"arch": "vgg16"}, "needs teacher=PATH"),
    ({"pruning": 0.5}, "pruning must be a spec string"),
    ({"data": ""}, "data must be a non-empty string such as 'digits'"),
    ({"options": {"x": object()}}, "options must hold only JSON values"),
])
def test_bad_config_names_the_field(changes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        RunConfig(**changes).validate()


def test_the_default_key_is_the_one_before_views_existed():
    # hard-coded from RunConfig().key() / .legacy_key() computed on main (73f10ba) before views and
    # augment were fields: at views=1 neither is hashed, so every stored run keeps its key
    assert RunConfig().key() == "8c201560758759e9"
    assert RunConfig().legacy_key() == "dc4924ec90ec0d2b"
    assert RunConfig(method="regression", solver="reference").key() == "a581952bcc149978"
    assert RunConfig(method="fskd").key() == "62555e7cf612c70c"


def test_views_round_trip_and_enter_the_key_only_when_used():
    config = RunConfig(views=8, augment="crop,flip").validate()
    same = RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert same == config and same.key() == config.key()
    assert config.decisive()["views"] == 8 and config.decisive()["augment"] == "flip,crop"
    assert config.key() == RunConfig(views=8).key() != RunConfig().key()
    assert config.key() != config.replace(views=4).key() != config.replace(augment="mixup,flip").key()
    assert "views" not in RunConfig().decisive() and "augment" not in RunConfig().decisive()
    options = config.method_options()
    assert (options.views, options.augment) == (8, "flip,crop")
    assert (RunConfig().method_options().views, RunConfig().method_options().describe().get("views")) == (1, None)


@pytest.mark.parametrize("changes, message", [
    ({"views": 0}, "views must be an int >= 1, got 0"),
    ({"views": 2.0}, "views must be an int >= 1, got 2.0"),
    ({"views": 2, "augment": "blur"}, "augment must be a comma-separated list of mixup, flip, crop, got 'blur'"),
    ({"augment": "crop"}, "augment only applies with views > 1; got views=1 with augment='crop'"),
    ({"method": "l1-norm", "views": 2}, "l1-norm uses no data, so views do not apply to it; leave views=1 .got 2."),
    ({"method": "fskd", "options": {"views": 2}}, "views and augment are RunConfig fields"),
    ({"global_stage": "none"}, "global_stage takes None for no stage"),
    ({"global_stage": "fitnet"}, "global_stage must be one of kd, mir or None, got 'fitnet'"),
    ({"global_stage": "kd", "global_lr": 0}, "global_lr must be a finite number > 0, got 0"),
])
def test_bad_views_name_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**changes).validate()


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown RunConfig field 'kshot'"):
        RunConfig.from_dict({**RunConfig().to_dict(), "kshot": 3})


def test_key_is_stable_and_discriminating():
    config = RunConfig(method="soft", alpha=0.5, beta=1, k=2, seed=3)
    same = RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert same.key() == config.key() == RunConfig(method="soft", alpha=0.5, beta=1.0, k=2, seed=3).key()
    assert len(config.key()) == 16 and set(config.key()) <= set("0123456789abcdef")
    others = {config.replace(seed=4).key(), config.replace(k=3).key(), config.replace(beta=0.75).key(),
              config.replace(ridge=0.2).key(), config.replace(bn="keep").key(), config.key()}
    assert len(others) == 6
    bp = RunConfig(method="bp", k=2)
    assert bp.replace(options={"steps": 2}).key() != bp.key()
    # the same key in a fresh interpreter with another hash seed (nothing depends on hash())
    code = ("from xdnb.experiment import RunConfig; "
            "print(RunConfig(method='soft', alpha=0.5, beta=1.0, k=2, seed=3).key())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": "", "XDNB_QUIET": "1"})
    assert out.stdout.strip() == config.key()


def test_a_key_depends_only_on_what_decides_the_numbers():
    # settings the method's solver never reads leave the key alone; ones it reads change it
    lstsq = RunConfig(method="cross")
    assert lstsq.replace(steps=5, lr=0.1).key() == lstsq.key() != lstsq.replace(rounds=2).key()
    reference = RunConfig(method="cross", solver="reference", steps=200)
    assert reference.replace(ridge=0.5, rounds=2).key() == reference.key() != reference.replace(lr=1e-3).key()
    # with quantization the ridge is read again (by the quantizer)
    quantized = RunConfig(method="cross", solver="reference", steps=200, quantize=4)
    assert quantized.replace(ridge=0.5).key() != quantized.key()
    # a baseline reads none of the engine's settings: setting one is an error, not a silent no-op
    with pytest.raises(ValueError, match="ridge is the engine's setting"):
        RunConfig(method="fskd", ridge=0.5).validate()
    with pytest.raises(ValueError, match="fskd has no option 'ridg'"):
        RunConfig(method="fskd", options={"ridg": 0.5}).validate()
    with pytest.raises(ValueError, match="solver 'lstsq' does not read"):
        distill.EngineOptions.from_settings("lstsq", steps=5)
    with pytest.raises(ValueError, match="options are the baselines' settings"):
        RunConfig(method="cross", options={"bn": "keep"}).validate()


def test_stores_written_before_the_decisive_keys_are_read_through_the_legacy_key():
    # keys computed by xdnb before keys left out ignored settings (git 2f565f8), for these configs
    old = {"dc4924ec90ec0d2b": RunConfig(method="cross"),
           "c491eb98199330e1": RunConfig(method="fskd", options={"bn": "keep"}),
           "9ba7ca4ae9875b09": RunConfig(method="regression", solver="reference", steps=200)}
    for key, config in old.items():
        assert config.legacy_key() == key
        assert config.key() != key  # the new key differs, so the store needs the mapping


def test_method_labels():
    assert method_label(RunConfig(method="cross")) == "cross(mu=0.6)"
    assert method_label(RunConfig(method="cross", mu=0.25)) == "cross(mu=0.25)"
    assert method_label(RunConfig(method="soft", alpha=1.0, beta=0.5)) == "soft(alpha=1, beta=0.5)"
    assert method_label(RunConfig(method="regression").to_dict()) == "regression"


def test_method_labels_name_the_views_only_beyond_one_view():
    assert method_label(RunConfig(method="cross", views=4, augment="crop, flip")) == "cross(mu=0.6) + 4 views (flip,crop)"
    assert method_label(RunConfig(method="regression", views=16, augment="mixup").to_dict()) == "regression + 16 views (mixup)"
    assert method_label(RunConfig(method="regression", views=1)) == "regression"
    stored_before_views = {k: v for k, v in RunConfig(method="cp").to_dict().items() if k not in ("views", "augment")}
    assert method_label(stored_before_views) == "cp"


def test_method_labels_name_the_global_stage_so_runs_with_and_without_one_never_share_a_row():
    with_stage = RunConfig(method="cross", views=16, augment="flip", global_stage="kd", global_steps=50, global_lr=1e-5)
    assert method_label(with_stage) == "cross(mu=0.6) + 16 views (flip) + kd (50 steps, lr 1e-05)"
    assert method_label(RunConfig(method="cross", views=16, augment="flip")) == "cross(mu=0.6) + 16 views (flip)"


@pytest.fixture(scope="module")
def tiny_result(cache_dir, digits_teacher, one_thread):
    import os

    previous = os.environ.get("XDNB_CACHE")
    os.environ["XDNB_CACHE"] = str(cache_dir)
    try:
        return run(RunConfig(method="cross", seed=1, **TINY), show_progress=False)
    finally:
        os.environ.pop("XDNB_CACHE") if previous is None else os.environ.__setitem__("XDNB_CACHE", previous)


def test_result_json_round_trip(tiny_result):
    text = tiny_result.to_json()
    assert "\n" not in text and "NaN" not in text
    back = Result.from_json(text)
    assert back.to_dict() == tiny_result.to_dict()
    assert back.run_config == RunConfig(method="cross", seed=1, **TINY)
    assert back.student is None and tiny_result.student is not None
    assert len(back.few_shot_indices) == 10 and len(back.history) == 5  # the 5 convs after the first
    assert back.versions["device"] == "cpu"
    assert back.student_size["params"] < back.teacher_size["params"]


def test_result_from_dict_names_missing_and_unknown_fields(tiny_result):
    values = tiny_result.to_dict()
    del values["history"]
    with pytest.raises(ValueError, match=r"missing fields \['history'\]"):
        Result.from_dict(values)
    with pytest.raises(ValueError, match=r"unknown fields \['extra'\]"):
        Result.from_dict({**tiny_result.to_dict(), "extra": 1})


def test_same_seed_same_numbers_other_seed_other_images(tiny_result):
    again = run(RunConfig(method="cross", seed=1, **TINY), show_progress=False)
    assert again.student_accuracy == tiny_result.student_accuracy
    assert again.few_shot_indices == tiny_result.few_shot_indices
    assert [h["estimation_error"] for h in again.history] == [h["estimation_error"] for h in tiny_result.history]
    other = run(RunConfig(method="cross", seed=2, **TINY), show_progress=False)
    assert other.few_shot_indices != tiny_result.few_shot_indices
    assert [h["estimation_error"] for h in other.history] != [h["estimation_error"] for h in tiny_result.history]
