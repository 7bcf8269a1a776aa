"""`goalrank bench pier`: PIER's validation passes with and without the order memo, the same lists each pass."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from builders import tiny_dataset
from goalrank.cli import main
from goalrank.models.base import RequestMemo
from goalrank.train.run import train_reward


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bench-pier")
    data = tiny_dataset(root / "data")
    train_reward(data, root / "reward", {"model": {"d_model": 8, "n_heads": 2, "layers": 1},
                                         "train": {"epochs": 1, "device": "cpu"}})
    return data, root / "reward"


def argv(data: Path, reward: Path, *extra: str) -> list[str]:
    return ["bench", "pier", "--data", str(data), "--reward", str(reward), "--requests", "12", "--passes", "3",
            "--steps-between", "2", "--batch-size", "16", "--device", "cpu", *extra]


def test_bench_pier_reports_every_pass_and_scores_each_top_set_once(reward_run, tmp_path: Path, capsys) -> None:
    data, reward = reward_run
    assert main(argv(data, reward, "--json", str(tmp_path / "rows.json"))) == 0
    out = capsys.readouterr().out
    assert "12 validation requests, 3 passes every 2 batches of 16" in out and "same lists" in out
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [row["pass"] for row in rows] == [1, 2, 3]
    assert rows[0]["new_sets"] == 12  # the first pass knows nothing
    assert all(0 <= row["new_sets"] <= 12 for row in rows[1:])
    assert all(row["plain_s"] > 0 and row["memo_s"] > 0 for row in rows)
    table = [line.split("|")[1:-1] for line in out.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [cell.strip() for cell in table[0][:2]] == ["1", "12 / 12"]
    total = sum(row["new_sets"] for row in rows)
    assert f"| **total** | {total} / 36 |" in out


def test_bench_pier_refuses_a_memo_that_changes_a_list(reward_run, monkeypatch, capsys) -> None:
    data, reward = reward_run
    get = RequestMemo.get

    def wrong(self, key):  # a memo that answers with another order than the one it stored
        order = get(self, key)
        return None if order is None else order.flip(0)

    monkeypatch.setattr(RequestMemo, "get", wrong)
    assert main(argv(data, reward)) == 2
    assert "PIER's order memo changed a list" in capsys.readouterr().err
