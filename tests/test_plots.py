"""The per-layer figure builders of xdnb.plots on known inputs (no compression, no I/O)."""

import math
import xml.etree.ElementTree as ET

import plotly.graph_objects as go
import pytest

from xdnb import plots


def _record(index, est, power=2.0, eps_s=0.5, eps_t=0.25, kept=4, in_channels=8, sparsity=0.0):
    return {"layer": f"feature.{index}", "index": index, "estimation_error": est, "relative_error": est / power,
            "correction": 0.1, "imitation": 0.2, "eps_S": eps_s, "eps_T": eps_t, "output_power": power,
            "in_channels_kept": kept, "in_channels": in_channels, "sparsity": sparsity}


HELD = [_record(0, 1.0), _record(1, 2.0, power=4.0), _record(2, 3.0, power=1.0)]
TRAIN = [_record(0, 0.5), _record(1, 0.2, power=4.0), _record(2, 0.0, power=1.0)]
NAMES = {"feature.0": "conv2", "feature.1": "conv3", "feature.2": "conv4"}


def test_layer_value_is_relative_to_the_teacher_output_power():
    r = _record(0, 1.0, power=4.0, eps_s=2.0)
    assert plots.layer_value(r, "relative_error") == 0.25
    assert plots.layer_value(r, "eps_S") == 0.5
    assert plots.layer_value(r, "eps_S", relative=False) == 2.0
    assert plots.layer_value(r, "relative_error", relative=False) == 1.0
    old = {k: v for k, v in r.items() if k != "output_power"}  # records from before output_power existed
    assert plots.layer_value(old, "eps_S") == pytest.approx(0.5)
    unknown = {**old, "estimation_error": 0.0, "relative_error": 0.0}
    assert math.isnan(plots.layer_value(unknown, "eps_S"))


def test_layer_error_figure_draws_held_out_solid_and_train_dotted_per_method():
    fig = plots.layer_error_figure({"regression": HELD, "cross(mu=0.6)": HELD[::-1]}, {"regression": TRAIN}, names=NAMES)
    assert isinstance(fig, go.Figure)
    assert [t.name for t in fig.data] == ["regression, held-out", "regression, train", "cross(mu=0.6), held-out"]
    held, train, cross = fig.data
    assert list(held.x) == ["conv2", "conv3", "conv4"]
    assert list(held.y) == [0.5, 0.5, 3.0]
    assert list(train.y) == [0.25, 0.05, 0.0]
    assert held.line.dash == "solid" and train.line.dash == "dot"
    assert held.line.color == train.line.color == plots.METHOD_COLORS["regression"]
    assert cross.line.color == plots.METHOD_COLORS["cross"]
    assert fig.layout.template.layout.paper_bgcolor == "white"  # the shared light template


def test_layer_error_figure_without_train_names_lines_by_label_only():
    fig = plots.layer_error_figure({"K=1": HELD, "K=5": TRAIN}, log_y=True)
    assert [t.name for t in fig.data] == ["K=1", "K=5"]
    assert fig.layout.yaxis.type == "log"
    assert list(fig.data[0].x) == ["feature.0", "feature.1", "feature.2"]
    assert fig.data[0].line.color != fig.data[1].line.color


def test_inconsistency_figure_has_one_panel_per_key_and_one_legend_entry_per_method():
    fig = plots.inconsistency_figure({"regression": HELD, "cross": TRAIN}, names=NAMES)
    assert len(fig.data) == 6
    assert [t.showlegend for t in fig.data] == [True, False, False, True, False, False]
    eps_s = fig.data[1]
    assert eps_s.xaxis == "x2" and list(eps_s.y) == [0.25, 0.125, 0.5]
    eps_t = fig.data[2]
    assert eps_t.xaxis == "x3" and list(eps_t.y) == [0.125, 0.0625, 0.25]
    assert [a.text for a in fig.layout.annotations] == ["L^r", "eps_S", "eps_T"]


def test_shots_figure_plots_mean_and_sample_std_in_percent():
    fig = plots.shots_figure({"regression": {1: [0.8, 0.9], 5: [0.95]}}, teacher=0.99)
    trace = fig.data[0]
    assert list(trace.x) == [1, 5]
    assert list(trace.y) == [85.0, 95.0]
    assert trace.error_y.array[0] == pytest.approx(7.07, abs=0.01) and trace.error_y.array[1] == 0.0
    assert fig.layout.xaxis.type == "log"
    assert fig.layout.shapes[0].y0 == 99.0


def test_sweep_figure_puts_secondary_series_on_a_right_axis():
    fig = plots.sweep_figure([0, 0.5, 1], {"acc": [1, 2, 3]}, secondary={"err": [3, 2, 1]}, x_title="mu",
                             y_title="accuracy", secondary_title="error")
    assert [t.yaxis or "y" for t in fig.data] == ["y", "y2"]
    assert fig.layout.yaxis2.side == "right" and fig.layout.yaxis2.title.text == "error"


def test_alpha_beta_figure_places_values_corners_and_the_current_point():
    alphas, betas = [0.0, 1.0], [0.0, 0.5, 1.0]
    values = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    fig = plots.alpha_beta_figure(alphas, betas, values, marker=(1.0, 0.5))
    heat, ring = fig.data
    assert heat.type == "heatmap" and [list(r) for r in heat.z] == values
    assert list(heat.x) == betas and list(heat.y) == alphas
    # each cell shows its value; the corners' cells also their names, on a second line of the same text
    assert [list(r) for r in heat.text] == [["1.0", "2.0", "3.0<br>imitation"], ["4.0<br>correction", "5.0", "6.0<br>regression"]]
    assert (ring.y[0], ring.x[0]) == (1.0, 0.5)
    with pytest.raises(ValueError, match="rows"):
        plots.alpha_beta_figure(alphas, betas, [[1.0, 2.0]])


def test_kept_channels_figure_shows_teacher_width_and_kept_channels_or_weights():
    fig = plots.kept_channels_figure({"cross": HELD}, names=NAMES)
    teacher, kept = fig.data
    assert list(teacher.y) == [8, 8, 8] and list(kept.y) == [4, 4, 4]
    assert list(kept.x) == ["conv2", "conv3", "conv4"]
    sparse = [_record(0, 1.0, sparsity=0.75), _record(1, 1.0, sparsity=0.5)]
    fig = plots.kept_channels_figure({"regression": sparse}, weights=True)
    assert len(fig.data) == 1 and list(fig.data[0].y) == [0.25, 0.5]


def test_few_shot_figure_tiles_images_into_one_mosaic():
    import torch

    images = torch.arange(3 * 4 * 4, dtype=torch.float32).reshape(3, 1, 4, 4)
    fig = plots.few_shot_figure(images, [7, 8, 9], columns=2)
    z = fig.data[0].z
    assert len(z) == 2 * 5 - 1 and len(z[0]) == 2 * 5 - 1  # 2 rows, 2 columns, one-pixel gaps
    assert [a.text for a in fig.layout.annotations] == ["7", "8", "9"]
    # a heat map's last row is drawn at the top: it must be the first image's top row
    assert list(z[-1][:4]) == [0.0, 1.0, 2.0, 3.0]
    assert list(z[-4][:4]) == [12.0, 13.0, 14.0, 15.0]


def test_figure_svg_draws_every_line_with_its_style_and_is_valid_xml():
    fig = plots.layer_error_figure({"regression": HELD, "a<b": HELD}, {"regression": TRAIN}, names=NAMES)
    svg = plots.figure_svg(fig, width=600, height=300)
    root = ET.fromstring(svg)  # well-formed (names are escaped)
    ns = "{http://www.w3.org/2000/svg}"
    polylines = root.findall(f"{ns}polyline")
    assert len(polylines) == 3
    assert sum(1 for p in polylines if p.get("stroke-dasharray")) == 1  # the dotted train line
    assert {p.get("stroke") for p in polylines} == {plots.METHOD_COLORS["regression"], fig.data[2].line.color}
    texts = [t.text for t in root.iter(f"{ns}text")]
    assert "a<b, held-out" in texts and "conv3" in texts and "Per-layer estimation error" in texts
    assert len(root.findall(f"{ns}circle")) == 9


def test_figure_svg_handles_log_axes_and_refuses_other_trace_types():
    fig = plots.layer_error_figure({"regression": HELD}, log_y=True)
    root = ET.fromstring(plots.figure_svg(fig))
    labels = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "0.1" in labels and "1" in labels and "10" in labels
    with pytest.raises(ValueError, match="scatter"):
        plots.figure_svg(plots.alpha_beta_figure([0.0], [0.0], [[1.0]]))


def test_method_color_matches_parametrised_labels_and_cycles_unknown_ones():
    assert plots.method_color("cross(mu=0.3)") == plots.METHOD_COLORS["cross"]
    assert plots.method_color("soft(alpha=1, beta=0)") == plots.METHOD_COLORS["soft"]
    assert plots.method_color("K=1", 0) != plots.method_color("K=5", 1)
