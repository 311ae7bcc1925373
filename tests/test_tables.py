"""Tables (mean ± sample std on known numbers, markdown/CSV writers, sizes) and results figures."""

import csv
import io
import math

import pytest

from xdnb import plots, tables
from xdnb.experiment import RunConfig


def fake(method="cross", k=1, seed=0, accuracy=0.9, teacher=0.99, pruning="keep:0.5", params=50, flops=400, **fields):
    """A result dict with just what tables read (no run needed)."""
    extra = {"mu": 0.6} if method == "cross" else {"alpha": 0.5, "beta": 0.5} if method == "soft" else {}
    config = RunConfig(method=method, k=k, seed=seed, pruning=pruning, **{**extra, **fields}).to_dict()
    return {"config": config, "teacher_accuracy": teacher, "student_accuracy": accuracy,
            "teacher_size": {"params": 200, "nonzero": 200, "flops_dense": 1000, "flops_effective": 1000},
            "student_size": {"params": params, "nonzero": params, "flops_dense": flops, "flops_effective": flops},
            "history": [], "few_shot_indices": [], "kept_channels": {}, "method_config": {}, "seconds": 1.0 + seed,
            "total_seconds": 2.0, "versions": {}}


def test_mean_and_sample_std_on_known_numbers():
    assert tables.mean_std([1, 2, 3, 4]) == (2.5, pytest.approx(math.sqrt(5 / 3), abs=1e-12))
    assert tables.mean_std([90.0, 92.0, 94.0]) == (92.0, 2.0)
    assert tables.mean_std([7.0]) == (7.0, None)
    assert tables.mean_std([3.0, 3.0]) == (3.0, 0.0)
    with pytest.raises(ValueError, match="at least one value"):
        tables.mean_std([])


@pytest.fixture
def results():
    out = []
    for seed, (a1, a5) in enumerate([(0.90, 0.95), (0.92, 0.96), (0.94, 0.97)]):
        out.append(fake("cross", 1, seed, a1))
        out.append(fake("cross", 5, seed, a5))
    for seed, (a1, a5) in enumerate([(0.80, 0.97), (0.86, 0.99), (0.83, 0.98)]):
        out.append(fake("regression", 1, seed, a1))
        out.append(fake("regression", 5, seed, a5))
    return out


def test_pivot_cells_and_markdown(results):
    table = tables.pivot(results, "method", "k", title="demo")
    assert table.rows == ["cross(mu=0.6)", "regression"] and table.columns == [1, 5]
    mean, std, n = table.stats("cross(mu=0.6)", 1)
    assert (round(mean, 10), round(std, 10), n) == (92.0, 2.0, 3)
    mean, std, n = table.stats("regression", 5)
    assert (round(mean, 10), round(std, 10), n) == (98.0, 1.0, 3)
    assert table.best(1) == ["cross(mu=0.6)"] and table.best(5) == ["regression"]
    assert table.teacher == pytest.approx(99.0)
    text = table.to_markdown(decimals=2)
    assert "| method | K=1 | K=5 |" in text
    assert "| cross(mu=0.6) | **92.00 ± 2.00** | 96.00 ± 1.00 |" in text
    assert "| regression | 83.00 ± 3.00 | **98.00 ± 1.00** |" in text
    assert "over 3 runs" in text and "teacher 99.00 %" in text


def test_ties_are_all_bold():
    tied = [fake("cross", 1, 0, 0.9), fake("regression", 1, 0, 0.9), fake("imitation", 1, 0, 0.8)]
    table = tables.pivot(tied, "method", "k")
    assert table.best(1) == ["cross(mu=0.6)", "regression"]
    assert table.to_markdown().count("**90.00**") == 2 and "| imitation | 80.00 |" in table.to_markdown()


def test_csv_is_wide_and_parses(results):
    rows = list(csv.reader(io.StringIO(tables.pivot(results, "method", "k").to_csv())))
    assert rows[0] == ["method", "K=1 mean", "K=1 std", "K=5 mean", "K=5 std"]
    assert rows[1][0] == "cross(mu=0.6)" and float(rows[1][1]) == 92.0 and float(rows[1][2]) == 2.0
    assert float(rows[2][3]) == 98.0
    # a single run has a mean but no std; a missing cell is empty
    one = tables.pivot([fake("cross", 1, 0, 0.5), fake("regression", 2, 0, 0.6)], "method", "k")
    assert "50.00 |" in one.to_markdown() and "—" in one.to_markdown()
    rows = list(csv.reader(io.StringIO(one.to_csv())))
    assert rows[1] == ["cross(mu=0.6)", "50.0", "", "", ""]


def test_where_fields_and_errors(results):
    mixed = results + [fake("cross", 1, 0, 0.5, pruning="sparse:0.9"), fake("cross", 1, 1, 0.7, pruning="sparse:0.9")]
    table = tables.pivot(mixed, "method", "sparsity", where={"k": 1, "scheme": "sparse:0.9"})
    assert table.columns == [90.0] and table.stats("cross(mu=0.6)", 90.0)[0] == pytest.approx(60.0)
    assert tables.header_label("sparsity", 90.0) == "r=90 %"
    drop = tables.pivot(results, "method", "k", value="drop")
    assert drop.stats("regression", 1)[0] == pytest.approx(16.0) and drop.best(1) == ["cross(mu=0.6)"]
    with pytest.raises(ValueError, match="unknown table field 'colour'"):
        tables.pivot(results, "colour", "k")
    with pytest.raises(ValueError, match="value must be one of"):
        tables.pivot(results, "method", "k", value="loss")
    with pytest.raises(ValueError, match="no results match"):
        tables.pivot(results, "method", "k", where={"scheme": "VGG-A"})


def test_size_table_reductions():
    header, rows = tables.size_table([fake("l1-norm", params=90), fake("cross", params=50, flops=250),
                                      fake("cross", pruning="keep:0.25", params=20, flops=100)])
    assert header[:3] == ["scheme", "params (M)", "params ↓ %"]
    assert rows[0][0] == "teacher" and rows[0][2] == 0.0
    # the distilled student is preferred; reductions in percent of the teacher
    assert rows[1][0] == "keep:0.5" and rows[1][2] == 75.0 and rows[1][5] == 75.0
    assert rows[2][0] == "keep:0.25" and rows[2][2] == 90.0 and rows[2][5] == 90.0
    text = tables.markdown(header, rows)
    assert text.count("\n") == 5 and text.startswith("| scheme |")


def test_writers_escape():
    assert tables.markdown(["a|b"], [["x"]]).splitlines()[0] == "| a\\|b |"
    assert tables.csv_text(["a", "b"], [["x,y", 1]]) == 'a,b\n"x,y",1\n'


def test_figures_show_the_table_means(results):
    fig = plots.accuracy_vs_k(results)
    assert [trace.name for trace in fig.data] == ["cross(mu=0.6)", "regression"]
    assert list(fig.data[0].x) == [1, 5] and list(fig.data[0].y) == [92.0, 96.0]
    assert list(fig.data[0].error_y.array) == [2.0, 1.0]
    assert fig.layout.xaxis.type == "log"
    sparse = [fake("cross", 1, s, a, pruning=f"sparse:{r}") for s in (0, 1) for r, a in ((0.5, 0.9), (0.9, 0.7))]
    fig = plots.accuracy_vs_sparsity(sparse)
    assert list(fig.data[0].x) == [50.0, 90.0] and list(fig.data[0].y) == [90.0, 70.0]
    grid = [fake("soft", 1, 0, 0.5 + 0.1 * a + 0.01 * b, alpha=a, beta=b) for a in (0.0, 1.0) for b in (0.0, 0.5)]
    heat = plots.alpha_beta_heatmap(grid)
    assert heat.data[0].z[1][1] == pytest.approx(60.5) and heat.data[0].z[0][1] == pytest.approx(50.5) and list(heat.data[0].x) == ["0", "0.5"]
    mus = [fake("cross", k, 0, 0.8 + mu / 10, mu=mu) for k in (1, 5) for mu in (0.0, 0.5)]
    fig = plots.accuracy_vs_mu(mus)
    assert [t.name for t in fig.data] == ["K=1", "K=5"] and list(fig.data[0].y) == [80.0, 85.0]
