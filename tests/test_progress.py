"""Progress off a terminal: whole stage lines with a percentage, at most LINE_INTERVAL_S apart (no bar redraws)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from builders import tiny_dataset
from goalrank import progress as progress_module
from goalrank.cli import main
from goalrank.progress import LINE_INTERVAL_S, progress

LINE = re.compile(r"^(?P<stage>[^:]+): (?P<done>\d+)/(?P<total>\d+) (?P<unit>\w+) \((?P<pct>\d+)%\), \d+ s")


def test_lines_at_start_every_interval_and_end(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    clock = itertools.count(0.0, LINE_INTERVAL_S * 0.4)  # every step takes 0.4 intervals
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    bar = progress(range(10), "build lists", unit="chunk")
    for step in bar:
        bar.set_postfix(loss=f"{step / 10:.1f}")
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines() == [
        "build lists: 0/10 chunk (0%), 0 s",
        "build lists: 3/10 chunk (30%), 12 s, 28 s left, loss=0.2",  # 4 s a step, 7 steps to go
        "build lists: 6/10 chunk (60%), 24 s, 16 s left, loss=0.5",
        "build lists: 9/10 chunk (90%), 36 s, 4 s left, loss=0.8",
        "build lists: 10/10 chunk (100%), 44 s, loss=0.9",
    ]


def test_a_resumed_stage_paces_its_time_left_on_the_steps_it_timed(monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    clock = itertools.count(0.0, LINE_INTERVAL_S * 0.5)  # every step takes 0.5 intervals: 5 s
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    assert list(progress(range(4), "epoch 2/3", total=10, unit="step", initial=6)) == [0, 1, 2, 3]
    assert capsys.readouterr().err.splitlines() == [
        "epoch 2/3: 6/10 step (60%), 0 s",
        "epoch 2/3: 8/10 step (80%), 10 s, 10 s left",  # two timed steps of 5 s, two to go
        "epoch 2/3: 10/10 step (100%), 20 s",
    ]


def test_a_stage_its_consumer_stops_early_still_prints_its_last_count(monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The training loop caps an epoch by breaking on the batch after its last step."""
    clock = itertools.count(0.0, LINE_INTERVAL_S * 0.1)
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    for step in progress(range(100), "epoch 1/2", total=5, unit="step"):
        if step >= 5:
            break
    assert capsys.readouterr().err.splitlines() == ["epoch 1/2: 0/5 step (0%), 0 s",
                                                   "epoch 1/2: 5/5 step (100%), 6 s"]  # 1 s a clock read


def test_disabled_progress_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(progress(range(3), "stage", enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_prepare_and_train_show_stage_lines_when_stderr_is_not_a_terminal(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "log.csv"
    log.write_text("user,item,timestamp,label\n" + "".join(f"{u},{i},{u * 100 + i},{(u + i) % 2}\n"
                                                        for u in range(30) for i in range(12)))
    assert main(["prepare", "--source", "generic", "--input", str(log), "--out", str(tmp_path / "d"),
                 "--set", "kcore=1", "--set", "n_candidates=8", "--set", "history_len=2"]) == 0
    prepared = [LINE.match(line) for line in capsys.readouterr().err.splitlines()]
    assert {m["stage"] for m in prepared if m and m["pct"] == "100"} >= {"train", "valid", "test"}
    data = tiny_dataset(tmp_path / "tiny")
    assert main(["train", "--model", "dnn", "--data", str(data), "--out", str(tmp_path / "run"), "--set",
                 "model.d_model=8", "--set", "model.n_heads=2", "--set", "train.device=cpu",
                 "--set", "train.epochs=1"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    trained = [m for m in map(LINE.match, err.splitlines()) if m and m["stage"] == "epoch 1/1"]
    assert [(m["done"], m["total"], m["pct"]) for m in trained] == [("0", "1", "0"), ("1", "1", "100")]
