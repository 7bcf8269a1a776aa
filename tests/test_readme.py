"""The README's result tables against ``results/``: every figure there is typed by hand from the
report, so these tests catch a table left behind when a run lands or is read back differently.

The chain is checked in two links: the committed report is what ``goalrank report`` writes from
``results/`` alone today, and each README cell is that report's figure rounded to three decimals.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from goalrank.cli import main

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
REPORT = ROOT / "results" / "report" / "report.md"
ROUNDED = 0.0005 + 1e-9  # a three-decimal README cell of a four-decimal report cell
SCALED = {"k": 1e3, "M": 1e6}
NOT_RUN = "not run yet"


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _table_after(text: str, heading: str) -> list[dict[str, str]]:
    """The first markdown table after the line that starts with ``heading``, as rows by column name."""
    lines = text[text.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = list(itertools.takewhile(lambda line: line.startswith("|"), lines[start:]))
    header = _cells(table[0])
    return [dict(zip(header, _cells(line), strict=True)) for line in table[2:]]


def _report_rows(report: str, section: str) -> dict[str, dict[str, str]]:
    """A report section's summary table: {row label: {column: cell}}."""
    return {row["model"]: row for row in _table_after(report, f"## {section}")}


def _mean_std(cell: str) -> tuple[float, float | None]:
    mean, _, std = cell.partition(" ± ")
    return float(mean.strip("*")), float(std.strip("*")) if std else None


def _assert_rounds_to(readme: str, report: str, where: str, means_only: bool = False) -> None:
    (mean, std), (full_mean, full_std) = _mean_std(readme), _mean_std(report)
    assert abs(mean - full_mean) <= ROUNDED, f"{where}: README {readme}, report {report}"
    if means_only:
        return
    assert (std is None) == (full_std is None), f"{where}: README {readme}, report {report}"
    if std is not None and full_std is not None:
        assert abs(std - full_std) <= ROUNDED, f"{where}: README {readme}, report {report}"


def _check_table(readme_rows: list[dict[str, str]], report: dict[str, dict[str, str]], label_of: dict[str, str],
                 where: str) -> None:
    """Each README row against the report row ``label_of`` names: the seed count and every metric
    column (README spells ``complete NDCG@6`` what the report spells ``complete_NDCG@6``)."""
    for row in readme_rows:
        first = next(iter(row.values()))
        label = label_of[first]
        if row["seeds"] == "0":
            assert label not in report, f"{where}: {label} is in the report but the README says not run"
            continue
        assert report[label]["seeds"] == row["seeds"], f"{where}: {label} seeds"
        for column, cell in row.items():
            key = column.replace(" ", "_")
            if key in report[label] and column not in ("model", "seeds"):
                _assert_rounds_to(cell, report[label][key], f"{where}: {label} {column}")


@pytest.fixture(scope="module")
def texts() -> tuple[str, str]:
    return README.read_text(encoding="utf-8"), REPORT.read_text(encoding="utf-8")


def test_the_committed_report_is_what_goalrank_report_writes_from_results(tmp_path: Path) -> None:
    assert main(["report", str(ROOT / "results"), "--out", str(tmp_path)]) == 0
    fresh, committed = ((folder / "report.md").read_text(encoding="utf-8") for folder in (tmp_path, REPORT.parent))
    assert fresh.split("\n## ", 1)[1] == committed.split("\n## ", 1)[1]  # the header holds the time taken


@pytest.mark.parametrize(("heading", "section"), [
    ("### Table 1, default simulator world", "Table 1 — sim (test split)"),
    ("### Table 1, ML-100K", "Table 1 — ml100k (test split)")])
def test_the_readme_table1_is_the_reports(texts: tuple[str, str], heading: str, section: str) -> None:
    readme, report = texts
    rows, reported = _table_after(readme, heading), _report_rows(report, section)
    label_of = {row["method"]: row["method"].strip("`") for row in rows}
    assert sorted(label_of.values()) == sorted(reported), heading  # every method and sanity row, none other
    _check_table(rows, reported, label_of, heading)


def test_the_readme_table3_is_the_reports(texts: tuple[str, str]) -> None:
    readme, report = texts
    heading = "### Table 3, group size and reward bias"
    sizes = _table_after(readme, heading)
    assert [row["K"] for row in sizes] == ["3", "5", "8", "10", "20", "50", "80", "100"]
    _check_table(sizes, _report_rows(report, "Group size K (Table 3) — sim"),
                 {row["K"]: f"GoalRank K={row['K']}" for row in sizes}, "group size")
    biases = _table_after(readme[readme.index(heading) + len(heading):], "| β |")
    _check_table(biases, _report_rows(report, "Reward-model bias β (Table 3) — sim"),
                 {row["β"]: f"GoalRank β={row['β']}" for row in biases}, "bias")


def test_the_readme_scaling_table_is_the_reports(texts: tuple[str, str]) -> None:
    """Cells ``NDCG@6 / true reward (parameters, seeds)``, means over those seeds; MG-E's last row
    lists its G points in turn."""
    readme, report = texts
    rows = _table_after(readme, "### Scaling, Fig. 3")
    reported = _report_rows(report, "Scaling (Fig. 3) — sim")
    by_prefix = {label.split(" (")[0]: row for label, row in reported.items()}
    checked = 0
    for row in rows:
        size = row["size"]
        for column, cell in list(row.items())[1:]:
            method = column.split(" (")[0]
            if not cell:  # the MG-E row has only its own column
                continue
            if size.startswith("MG-E"):
                pairs = [pair.split(" / ") for pair in cell.split(", ")] if cell else []
                points = [f"MG-E {g}" for g in re.findall(r"G-\d+", size)]
                cases = [(point, ndcg, reward, None) for point, (ndcg, reward) in zip(points, pairs, strict=True)]
            elif cell == NOT_RUN:
                assert f"{method} {size}" not in by_prefix, f"{method} {size} is in the report, README: not run"
                continue
            else:
                found = re.fullmatch(r"([\d.]+) / ([\d.]+) \(([\d.]+)([kM]), (\d+) seeds?\)", cell)
                assert found, f"scaling {method} {size}: {cell!r}"
                ndcg, reward, count, unit, seeds = found.groups()
                assert seeds == by_prefix[f"{method} {size}"]["seeds"], f"scaling {method} {size}: seeds"
                cases = [(f"{method} {size}", ndcg, reward, float(count) * SCALED[unit])]
            for label, ndcg, reward, parameters in cases:
                full = by_prefix[label]
                _assert_rounds_to(ndcg, full["NDCG@6"], f"scaling {label} NDCG@6", means_only=True)
                _assert_rounds_to(reward, full["true_reward"], f"scaling {label} true reward", means_only=True)
                if parameters is not None:
                    millions = re.search(r"\(([\d.]+)M params\)", full["model"])  # "GoalRank 32x1 (0.097M params)"
                    assert millions, f"scaling {label}: {full['model']!r}"
                    reported_parameters = float(millions.group(1)) * 1e6
                    assert parameters == pytest.approx(reported_parameters, rel=0.05), f"scaling {label} size"
                checked += 1
    assert checked == len(by_prefix)  # every point of the report, MG-E's included, is in the README
