"""The tutorial panels driven headlessly: set a control, let its callback run, and check the
figure against direct library calls (distill.compress + metrics.layer_errors)."""

import pytest
import torch

from xdnb import baselines, distill, metrics, plots, tutorial, views, widgets
from xdnb.global_stage import GlobalStage


@pytest.fixture(scope="module")
def bench(digits_teacher, one_thread):
    return tutorial.Bench(teacher=digits_teacher)


def _direct(bench, objective, k=1, seed=0, pruning="keep:0.25", ridge=0.1, bn="reestimate", **kw):
    """What the panel should show, computed without xdnb.tutorial."""
    images, _ = bench.shots(k, seed)
    torch.manual_seed(seed)
    result = distill.compress(bench.teacher, images, objective, pruning=pruning, ridge=ridge, bn=bn,
                              show_progress=False, **kw)
    held = metrics.layer_errors(bench.teacher, result.masked_student, bench.held_images)
    accuracy = metrics.accuracy(result.student, bench.held_images, bench.held_labels)
    return result, held, accuracy


def _relative(records, key="relative_error"):
    """Per-layer values relative to the teacher output power, computed from the library's own
    relative_error (est / power) rather than through xdnb.plots."""
    if key == "relative_error":
        return [r["relative_error"] for r in records]
    return [r[key] * r["relative_error"] / r["estimation_error"] for r in records]


def test_error_panel_matches_the_library_and_follows_its_k_slider(bench, capsys):
    panel = widgets.ErrorPanel(bench)
    held_trace, train_trace = panel.figure.data
    result, held, accuracy = _direct(bench, "regression")
    assert list(held_trace.y) == pytest.approx(_relative(held), rel=1e-9)
    assert list(train_trace.y) == pytest.approx(_relative(result.history), rel=1e-9)
    assert list(held_trace.x) == ["conv2", "conv3", "conv4", "conv5", "conv6"]
    assert panel.trial.accuracy == accuracy
    before = list(held_trace.y)

    panel.controls["k"].value = 2  # what moving the slider does
    assert panel.params["k"] == 2
    after = list(panel.figure.data[0].y)
    assert after != before
    _, held2, accuracy2 = _direct(bench, "regression", k=2)
    assert after == pytest.approx(_relative(held2), rel=1e-9)
    assert f"{100 * accuracy2:.1f} %" in panel.status.value
    assert capsys.readouterr() == ("", "")  # panels never print


def test_the_plot_is_redrawn_after_every_layer_during_a_compression(bench):
    panel = widgets.ErrorPanel(bench)
    lengths = []
    panel.figure.data[1].on_change(lambda trace, y: lengths.append(len(y or ())), "y")
    panel.update(keep=0.5)
    # cleared, then one more layer per engine callback, then the final redraw
    assert lengths[:6] == [0, 1, 2, 3, 4, 5]
    assert panel.controls["keep"].value == 0.5  # update() keeps the controls in sync


def test_cross_panel_mu_slider_redraws_cross_only_and_matches_the_library(bench):
    panel = widgets.CrossPanel(bench)
    assert len(panel.figure.data) == 6  # (regression, cross) x (L^r, eps_S, eps_T)
    reference = panel.reference()
    regression_eps = list(panel.figure.data[1].y)
    panel.controls["mu"].value = 0.3
    assert panel.reference() is reference  # not recomputed for a mu change
    assert list(panel.figure.data[1].y) == regression_eps
    _, held, _ = _direct(bench, "cross", mu=0.3)
    for col, key in enumerate(("relative_error", "eps_S", "eps_T")):
        assert list(panel.figure.data[3 + col].y) == pytest.approx(_relative(held, key), rel=1e-9)
    assert panel.figure.data[3].name == "cross(mu=0.3)"
    assert "bound holds on every layer: yes" in panel.status.value
    panel.controls["ridge"].value = 1e-3
    assert panel.reference() is not reference  # a ridge change does recompute regression


def test_soft_panel_moves_the_ring_and_draws_the_soft_loss(bench):
    grid = tutorial.soft_grid(bench, [0.0, 1.0], [0.0, 1.0], k=1)
    panel = widgets.SoftPanel(bench, grid=grid, value="error")
    heat = panel.figure.data[0]
    assert heat.type == "heatmap" and [list(r) for r in heat.z] == [[round(v, 4) for v in row] for row in grid["error"]]
    panel.controls["alpha"].value = 1.0
    panel.controls["beta"].value = 0.0
    ring = panel.figure.data[panel._ring]
    assert (ring.x[0], ring.y[0]) == (0.0, 1.0)  # x = beta, y = alpha
    _, held, accuracy = _direct(bench, "correction")  # soft(1, 0) is correction
    assert list(panel.figure.data[-1].y) == pytest.approx(_relative(held), rel=1e-9)
    assert "beta' = 1 − beta = 1" in panel.status.value
    assert grid["accuracy"][1][0] == pytest.approx(100 * accuracy)


def test_pruning_panel_shows_kept_channels_or_weights(bench):
    panel = widgets.PruningPanel(bench, removed=0.75)
    teacher_bars, kept_bars, line = panel.figure.data
    assert list(kept_bars.y) == [8, 8, 16, 16, 32]  # a quarter of the input channels 32, 32, 64, 64, 128
    assert list(teacher_bars.y) == [32, 32, 64, 64, 128]
    assert "parameters" in panel.status.value and "FLOPs" in panel.status.value
    panel.controls["kind"].value = "unstructured"
    kept = list(panel.figure.data[1].y)
    assert all(abs(v - 0.25) < 0.01 for v in kept)
    assert len(panel.figure.data[0].y) == 0
    _, held, _ = _direct(bench, "cross", pruning="sparse:0.75")
    assert list(panel.figure.data[2].y) == pytest.approx(_relative(held), rel=1e-9)


def test_bad_values_are_reported_in_the_status_line_and_names_are_checked(bench):
    panel = widgets.ErrorPanel(bench)
    panel._on_change("keep")({"new": 0.0})  # what a control callback would pass; must not raise
    assert "ValueError" in panel.status.value and "keep ratio" in panel.status.value
    with pytest.raises(ValueError, match="no parameter 'mu'"):
        panel.update(mu=0.5)
    with pytest.raises(ValueError, match="no parameter"):
        widgets.CrossPanel(bench, alpha=0.5)


def test_stored_notebook_text_of_a_panel_is_its_description(bench):
    panel = widgets.ErrorPanel(bench, k=5)
    bundle = panel._repr_mimebundle_()
    assert bundle["text/plain"].startswith("ErrorPanel(k=5, keep=0.25")
    assert "application/vnd.jupyter.widget-view+json" in bundle
    snap = panel.snapshot()
    assert list(snap.data[0].y) == list(panel.figure.data[0].y) and snap is not panel.figure


def test_all_controls_wait_for_release(bench):
    panel = widgets.CrossPanel(bench)
    sliders = [c for c in panel.controls.values() if hasattr(c, "continuous_update")]
    assert sliders and not any(c.continuous_update for c in sliders if "Slider" in type(c).__name__)


# --- xdnb.tutorial, the computations behind the panels -------------------------------------------


def test_bench_runs_are_deterministic_and_record_their_settings(bench):
    a, b = bench.run("cross", k=1, seed=1), bench.run("cross", k=1, seed=1)
    assert a.errors() == b.errors() and a.accuracy == b.accuracy
    assert a.settings == {"method": "cross", "k": 1, "seed": 1, "pruning": "keep:0.25", "bn": "reestimate",
                          "solver": "lstsq", "ridge": 0.1, "rounds": 4, "mu": 0.6}
    assert a.label == "cross(mu=0.6)"
    assert a.errors(split="train") == [r["relative_error"] for r in a.train]
    with pytest.raises(ValueError, match="split"):
        a.errors(split="test")
    bound = a.bound(0.6)
    assert all(e <= b for e, b in zip(a.errors(), bound))
    assert bound[2] == pytest.approx(metrics.bound(a.held_out[2], 0.6) * a.held_out[2]["relative_error"]
                                     / a.held_out[2]["estimation_error"])
    with pytest.raises(ValueError, match="method must be one of"):
        bench.run("lasso")


def test_soft_grid_corners_are_the_named_losses(bench):
    grid = tutorial.soft_grid(bench, [0.0, 1.0], [0.0, 1.0], k=1)
    for name, (alpha, beta) in plots.SOFT_CORNERS.items():
        trial = bench.run(name, k=1)
        i, j = grid["alphas"].index(alpha), grid["betas"].index(beta)
        assert grid["accuracy"][i][j] == 100 * trial.accuracy
        assert grid["error"][i][j] == sum(trial.errors())
    assert "regression (1, 1)" in tutorial.grid_summary(grid)


def test_text_tables(bench):
    grid = {"regression": {1: [0.8, 0.9], 5: [0.95, 0.97]}, "cross": {1: [0.85, 0.85]}}
    text = tutorial.format_accuracy(grid)
    lines = text.splitlines()
    assert lines[0].split() == ["K=1", "K=5"]
    assert lines[1].split() == ["regression", "85.0", "±", "7.1", "96.0", "±", "1.4"]
    assert lines[2].split() == ["cross", "85.0", "±", "0.0"]
    table = tutorial.layer_table(["conv2", "conv3"], {"a": [0.12345, 1.0]})
    assert table.splitlines()[1].split() == ["conv2", "0.123"]
    with pytest.raises(ValueError, match="2 layers"):
        tutorial.layer_table(["conv2", "conv3"], {"a": [1.0]})


def test_baselines_run_through_the_bench_and_l1_norm_keeps_bn(bench):
    trial = bench.run("l1-norm", k=1)
    assert trial.settings["bn"] == "keep"
    # the same student built without xdnb.tutorial, its accuracy counted by hand
    images, labels = bench.shots(1, 0)
    direct = baselines.run("l1-norm", bench.teacher, images, labels, tutorial.DEFAULT_PRUNING, show_progress=False)
    with torch.no_grad():
        correct = direct.student.eval()(bench.held_images).argmax(1) == bench.held_labels
    assert trial.accuracy == float(correct.double().mean()) != bench.teacher_accuracy
    # keep: the last conv's outputs and the classifier are never pruned, so their BN statistics are the teacher's
    for name in ("feature.18", "classifier.1"):
        student_bn, teacher_bn = trial.compressed.student.get_submodule(name), bench.teacher.get_submodule(name)
        assert torch.equal(student_bn.running_mean, teacher_bn.running_mean) and torch.equal(student_bn.running_var, teacher_bn.running_var)
    assert [r["layer"] for r in trial.held_out] == ["feature.3", "feature.7", "feature.10", "feature.14", "feature.17"]


# --- notebook 07: views and the global stage -------------------------------------------------------


def test_kshot_errors_are_the_final_student_on_the_kshot_images_not_the_views(bench):
    trial = bench.run("cross", views=4, augment="flip")
    images, _ = bench.shots(1, 0)
    by_hand = metrics.layer_errors(bench.teacher, trial.compressed.masked_student, images)
    assert trial.kshot == by_hand and len(images) == 10
    assert trial.errors(split="kshot") == [r["relative_error"] for r in by_hand]
    # train: the engine's records, on the 40 fit images (the ten originals and their 30 views)
    fit_images = views.make_views(images, 4, "flip", seed=0)
    on_views = metrics.layer_errors(bench.teacher, trial.compressed.masked_student, fit_images)
    assert trial.errors(split="train") == pytest.approx([r["relative_error"] for r in on_views], rel=1e-4)
    assert trial.errors(split="kshot") != pytest.approx(trial.errors(split="train"), rel=1e-2)
    assert trial.gap() == pytest.approx(sum(r["relative_error"] for r in trial.held_out)
                                        - sum(r["relative_error"] for r in by_hand))
    assert trial.settings["views"] == 4 and trial.settings["augment"] == "flip"
    with pytest.raises(ValueError, match="split must be one of held_out, train, kshot, got 'views'"):
        trial.errors(split="views")


def test_one_view_is_the_plain_run_and_its_kshot_errors_are_the_engines(bench):
    plain, one = bench.run("cross"), bench.run("cross", views=1, augment="flip,crop,mixup")
    assert one.errors() == plain.errors() and one.accuracy == plain.accuracy
    assert one.settings == plain.settings  # views=1 records nothing extra: it is the paper's protocol
    # with the K-shot images alone and no global stage, the final student's errors on them are the engine's records
    assert plain.errors(split="kshot") == pytest.approx(plain.errors(split="train"), rel=1e-4)


def _direct_views(bench, n, augment, k=1, **kw):
    """The views panel's red curves without xdnb.tutorial: held-out and K-shot-image records and accuracy."""
    images, _ = bench.shots(k, 0)
    torch.manual_seed(0)
    result = distill.compress(bench.teacher, images, "cross", pruning="keep:0.25", ridge=0.1, bn="reestimate",
                              views=n, augment=augment, seed=0, show_progress=False, **kw)
    return (metrics.layer_errors(bench.teacher, result.masked_student, bench.held_images),
            metrics.layer_errors(bench.teacher, result.masked_student, images),
            metrics.accuracy(result.student, bench.held_images, bench.held_labels))


def test_views_panel_matches_the_library_and_follows_its_views_slider(bench, capsys):
    panel = widgets.ViewsPanel(bench)
    assert (panel.params["views"], panel.params["augment"]) == (views.RECOMMENDED["views"], views.RECOMMENDED["augment"])
    assert len(panel.figure.data) == 4  # (1 view, views) x (held-out, K-shot images)
    _, plain_held, plain_accuracy = _direct(bench, "cross")
    images, _ = bench.shots(1, 0)
    assert list(panel.figure.data[0].y) == pytest.approx(_relative(plain_held), rel=1e-9)
    assert list(panel.figure.data[1].y) == pytest.approx(
        _relative(metrics.layer_errors(bench.teacher, panel.reference().compressed.masked_student, images)), rel=1e-9)
    held, kshot, accuracy = _direct_views(bench, 4, "flip")
    assert list(panel.figure.data[2].y) == pytest.approx(_relative(held), rel=1e-9)
    assert list(panel.figure.data[3].y) == pytest.approx(_relative(kshot), rel=1e-9)
    assert panel.trial.accuracy == accuracy and panel.reference().accuracy == plain_accuracy
    assert f"{100 * accuracy:.1f} %" in panel.status.value and "4 views (flip)" in panel.status.value
    reference, before = panel.reference(), list(panel.figure.data[2].y)

    panel.controls["views"].value = 8  # what moving the slider does
    assert panel.params["views"] == 8 and panel.reference() is reference  # the one-view curves are not recomputed
    assert list(panel.figure.data[2].y) != before
    held8, kshot8, accuracy8 = _direct_views(bench, 8, "flip")
    assert list(panel.figure.data[2].y) == pytest.approx(_relative(held8), rel=1e-9)
    assert list(panel.figure.data[3].y) == pytest.approx(_relative(kshot8), rel=1e-9)
    assert panel.figure.data[2].name == "8 views (flip), held-out"
    assert f"{100 * accuracy8:.1f} %" in panel.status.value
    assert f"{reference.gap():.3f} (1 view) → {panel.trial.gap():.3f}" in panel.status.value
    assert capsys.readouterr() == ("", "")  # panels never print


def test_views_panel_runs_the_global_stage_and_says_when_it_is_shortened(bench):
    panel = widgets.ViewsPanel(bench, views=2, global_stage="mir", global_steps=5)
    held, kshot, accuracy = _direct_views(bench, 2, "flip", global_stage=GlobalStage("mir", steps=5))
    assert list(panel.figure.data[2].y) == pytest.approx(_relative(held), rel=1e-9)
    assert list(panel.figure.data[3].y) == pytest.approx(_relative(kshot), rel=1e-9)
    assert panel.trial.accuracy == accuracy and panel.trial.settings["global_steps"] == 5
    assert "global stage mir for 5 Adam steps (default 400" in panel.status.value
    assert panel.figure.data[2].name == "2 views (flip) + mir, held-out"
    panel.controls["global_stage"].value = "none"
    assert "global stage" not in panel.status.value and "global_stage" not in panel.trial.settings
    with pytest.raises(ValueError, match=r"views must be one of 1, 2, 4, 8, 16, got 3$"):
        panel.update(views=3)
    with pytest.raises(ValueError, match="global_stage must be one of none, kd, mir, got 'fitnet'"):
        widgets.ViewsPanel(bench, global_stage="fitnet")
    assert panel.params["views"] == 2  # a refused value changes nothing


def test_views_panel_never_sends_the_browser_an_undefined_trace_name(bench):
    """A batch that renames some traces sends the others an undefined name, which plotly.js draws
    as "trace 0": every message that carries names must carry a name for each of its traces."""
    panel = widgets.ViewsPanel(bench)
    sent = []
    perform = panel.figure._perform_plotly_update
    panel.figure._perform_plotly_update = lambda *a, **k: (sent.append(k.get("restyle_data") or {}), perform(*a, **k))[1]
    panel.update(k=2, views=8)  # redraws the one-view reference and renames the views curves
    named = [data["name"] for data in sent if "name" in data]
    assert named and all(isinstance(name, str) for names in named for name in names)
    assert [t.name for t in panel.figure.data] == ["1 view (paper), held-out", "1 view (paper), K-shot images",
                                                  "8 views (flip), held-out", "8 views (flip), K-shot images"]
