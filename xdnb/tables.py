"""Results tables shaped like the paper's: mean ± sample std over seeds, as markdown and CSV.

:func:`pivot` groups results by a row field (usually the method) and a column field (K, the
scheme, the sparsity, mu, ...), averages the remaining repeats (the seeds) and returns a
:class:`Table`; :func:`size_table` lists parameters and FLOPs per scheme. No pandas: a table is
a few dicts and two tiny writers. Field names understood everywhere: ``method`` (a label such as
``cross(mu=0.6)``), ``k``, ``seed``, ``scheme``, ``sparsity`` (percent removed, unstructured),
``mu``, ``alpha``, ``beta``, ``arch``, ``data``, ``solver``, ``bn``, and any other RunConfig field.
Values: ``accuracy`` (student top-1, %), ``teacher_accuracy`` (%), ``drop`` (teacher − student,
points), ``seconds``.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from .experiment import Result, method_label
from .objectives import OBJECTIVES

VALUES = ("accuracy", "teacher_accuracy", "drop", "seconds")
_LABELS = {"k": "K", "sparsity": "r", "mu": "mu", "alpha": "alpha", "beta": "beta", "seed": "seed"}


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and *sample* standard deviation (n − 1 in the denominator; ``None`` for one value)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std needs at least one value")
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _as_dict(result: Result | dict) -> dict:
    return result.to_dict() if isinstance(result, Result) else result


def field_value(result: Result | dict, name: str):
    """The value of a row/column field or a value name (module docstring) for one result."""
    values = _as_dict(result)
    config = values["config"]
    if name == "method":
        return method_label(config)
    if name == "scheme":
        return config["pruning"] or "none"
    if name == "sparsity":
        spec = config["pruning"] or ""
        return round(100 * float(spec.partition(":")[2]), 6) if spec.startswith("sparse:") else None
    if name == "accuracy":
        return 100 * values["student_accuracy"]
    if name == "teacher_accuracy":
        return 100 * values["teacher_accuracy"]
    if name == "drop":
        return 100 * (values["teacher_accuracy"] - values["student_accuracy"])
    if name == "seconds":
        return values["seconds"]
    if name == "mu" and config["method"] == "cross" and config.get("mu") is None:
        from .objectives import DEFAULT_MU

        return DEFAULT_MU
    if name in config:
        return config[name]
    raise ValueError(f"unknown table field {name!r}; allowed: method, scheme, sparsity, {', '.join(VALUES)} "
                     f"or a RunConfig field ({', '.join(sorted(config))})")


def header_label(name: str, value) -> str:
    """A column/row header: ``K=5``, ``r=90 %``, ``mu=0.6``, or the value itself."""
    if name == "sparsity":
        return f"r={value:g} %"
    if name in _LABELS:
        return f"{_LABELS[name]}={value:g}" if isinstance(value, (int, float)) else f"{_LABELS[name]}={value}"
    return str(value)


def _ordered(values: list) -> list:
    unique = list(dict.fromkeys(values))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in unique):
        return sorted(unique)
    return unique  # labels keep the order they were run in (the preset's order)


@dataclass
class Table:
    """``cells[(row, column)]`` = the repeated values (e.g. one accuracy per seed)."""

    title: str
    row_field: str
    column_field: str
    rows: list
    columns: list
    cells: dict = field(default_factory=dict)
    value: str = "accuracy"
    teacher: float | None = None

    def stats(self, row, column) -> tuple[float, float | None, int] | None:
        """``(mean, sample std, n)`` of a cell, or ``None`` when it is empty."""
        values = self.cells.get((row, column))
        if not values:
            return None
        mean, std = mean_std(values)
        return mean, std, len(values)

    def best(self, column) -> list:
        """The rows with the highest mean in ``column`` (lowest for ``drop`` and ``seconds``); ties
        (equal means, e.g. the same number of test images right) are all returned."""
        scored = [(self.stats(row, column)[0], row) for row in self.rows if self.stats(row, column)]
        if not scored:
            return []
        sign = -1.0 if self.value in ("drop", "seconds") else 1.0
        top = max(sign * mean for mean, _ in scored)
        return [row for mean, row in scored if sign * mean >= top - 1e-9]

    def summary(self) -> list[dict]:
        """One dict per non-empty cell: row, column, mean, std, n (what the CSV holds)."""
        out = []
        for row in self.rows:
            for column in self.columns:
                stats = self.stats(row, column)
                if stats:
                    out.append({self.row_field: row, self.column_field: column, "mean": stats[0], "std": stats[1], "n": stats[2]})
        return out

    def to_markdown(self, decimals: int = 2, bold_best: bool = True) -> str:
        """A markdown table: ``mean ± std`` per cell (best mean per column in bold), the title
        and the number of repeats above it."""
        header = [header_label(self.row_field, "").rstrip("=") if self.row_field in _LABELS else self.row_field]
        header += [header_label(self.column_field, c) for c in self.columns]
        body = []
        best = {c: self.best(c) for c in self.columns
                if bold_best and sum(self.stats(r, c) is not None for r in self.rows) > 1}
        for row in self.rows:
            line = [header_label(self.row_field, row) if self.row_field in _LABELS else str(row)]
            for column in self.columns:
                stats = self.stats(row, column)
                text = "—" if stats is None else _format(stats[0], stats[1], decimals)
                line.append(f"**{text}**" if stats is not None and row in best.get(column, ()) else text)
            body.append(line)
        counts = sorted({len(v) for v in self.cells.values() if v})
        notes = [f"{self.value}" + (" (%)" if self.value in ("accuracy", "teacher_accuracy") else ""),
                 "one run per cell" if counts == [1] else f"mean ± sample std over {'/'.join(map(str, counts))} runs"]
        if self.teacher is not None:
            notes.append(f"teacher {self.teacher:.{decimals}f} %")
        return f"**{self.title}** — {'; '.join(notes)}\n\n{markdown(header, body)}"

    def to_csv(self, decimals: int = 4) -> str:
        """Wide CSV: the row label, then ``<column> mean``, ``<column> std`` for each column
        (empty cells empty; std empty for a single run)."""
        header = [self.row_field]
        for column in self.columns:
            label = header_label(self.column_field, column)
            header += [f"{label} mean", f"{label} std"]
        body = []
        for row in self.rows:
            line = [row]
            for column in self.columns:
                stats = self.stats(row, column)
                line += ["", ""] if stats is None else [round(stats[0], decimals), "" if stats[1] is None else round(stats[1], decimals)]
            body.append(line)
        return csv_text(header, body)


def _format(mean: float, std: float | None, decimals: int) -> str:
    return f"{mean:.{decimals}f}" if std is None else f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def pivot(results: Iterable[Result | dict], rows: str = "method", columns: str = "k", value: str = "accuracy",
          where: dict | None = None, title: str | None = None) -> Table:
    """Group ``results`` into a :class:`Table` (``where``: keep only results whose fields equal
    these values, e.g. ``{"scheme": "VGG-A"}``)."""
    if value not in VALUES:
        raise ValueError(f"value must be one of {', '.join(VALUES)}, got {value!r}")
    chosen = [r for r in map(_as_dict, results)
              if all(field_value(r, name) == wanted for name, wanted in (where or {}).items())]
    if not chosen:
        raise ValueError(f"no results match {where!r}" if where else "no results to tabulate")
    keys = [(field_value(r, rows), field_value(r, columns)) for r in chosen]
    table = Table(title or f"{value} by {rows} and {columns}", rows, columns,
                  _ordered([k[0] for k in keys]), _ordered([k[1] for k in keys]), value=value)
    for (row, column), result in zip(keys, chosen):
        table.cells.setdefault((row, column), []).append(field_value(result, value))
    teachers = {round(field_value(r, "teacher_accuracy"), 6) for r in chosen}
    table.teacher = teachers.pop() if len(teachers) == 1 else None
    return table


def size_table(results: Iterable[Result | dict]) -> tuple[list[str], list[list]]:
    """Parameters and FLOPs per scheme: ``(header, rows)`` for :func:`markdown` / :func:`csv_text`.

    Sizes come from the results themselves (the physically pruned student; non-zero weights and
    effective FLOPs for unstructured sparsity), one row per scheme plus the teacher.
    """
    chosen = list(map(_as_dict, results))
    if not chosen:
        raise ValueError("no results to tabulate")
    header = ["scheme", "params (M)", "params ↓ %", "non-zero (M)", "FLOPs (M)", "FLOPs ↓ %", "effective FLOPs (M)"]
    teacher = chosen[0]["teacher_size"]
    rows = [["teacher", *_size_cells(teacher, teacher)]]
    # prefer a distilled student (every objective gives the same shape for a scheme)
    distilled = [r for r in chosen if r["config"]["method"] in OBJECTIVES]
    by_scheme = {}
    for result in distilled + chosen:
        by_scheme.setdefault(field_value(result, "scheme"), result)
    for scheme in _ordered([field_value(r, "scheme") for r in chosen]):
        result = by_scheme[scheme]
        rows.append([scheme, *_size_cells(result["student_size"], result["teacher_size"])])
    return header, rows


def _size_cells(size: dict, teacher: dict) -> list:
    def reduction(key):
        return round(100 * (1 - size[key] / teacher[key]), 1) if teacher[key] else 0.0

    return [round(size["params"] / 1e6, 3), reduction("params"), round(size["nonzero"] / 1e6, 3),
            round(size["flops_dense"] / 1e6, 2), reduction("flops_dense"), round(size["flops_effective"] / 1e6, 2)]


def markdown(header: Sequence, rows: Sequence[Sequence]) -> str:
    """A GitHub markdown table (``|`` in cells escaped)."""
    def cell(value):
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_text(header: Sequence, rows: Sequence[Sequence]) -> str:
    """CSV text (RFC 4180 quoting, ``\\n`` line ends)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()
