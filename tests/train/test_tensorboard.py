"""Training curves: a run's folder holds TensorBoard events equal to its log.jsonl, one switch turns them off."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from builders import tiny_dataset
from goalrank.runs.folder import RunFolder
from goalrank.train import run as run_module
from goalrank.train.run import train_ranker, train_reward

TRAIN = {"epochs": 2, "patience": 2, "batch_size": 16, "device": "cpu", "lr": 2e-3}
SMALL = {"d_model": 8, "n_heads": 2}


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the run's events as (step, value) pairs, read back by TensorBoard's own reader."""
    events = EventAccumulator(str(RunFolder(run_dir).tensorboard))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _epochs(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in RunFolder(run_dir).log.read_text().splitlines()]
    return [record for record in records if "event" not in record]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("curves")
    data = tiny_dataset(root / "data")  # 64 training lists: 4 batches of 16 per epoch
    reward = root / "reward"
    train_reward(data, reward, {"model": {**SMALL, "layers": 1}, "train": TRAIN})
    goalrank = root / "goalrank"
    train_ranker("goalrank", data, goalrank, {"model": SMALL, "train": TRAIN, "group": {"group_size": 4}}, reward)
    return reward, goalrank


def test_goalrank_run_writes_every_curve(runs: tuple[Path, Path]) -> None:
    _, run = runs
    scalars = _scalars(run)
    assert {"train/loss", "train/lr", "train/step_time_s", "train/nonfinite_skips", "train/group_reward",
            "train/group_reward_std", "train/reference_entropy", "train/supervised", "valid/NDCG@3", "valid/AUC",
            "valid/time_s"} <= set(scalars)
    assert [step for step, _ in scalars["train/loss"]] == list(range(1, 9))  # 2 epochs × 4 steps
    assert all(value == pytest.approx(TRAIN["lr"]) for _, value in scalars["train/lr"])
    assert all(value > 0 for _, value in scalars["train/step_time_s"])
    assert [value for _, value in scalars["train/nonfinite_skips"]] == [0, 0]
    assert all(0 < value <= math.log(4) + 1e-6 for _, value in scalars["train/reference_entropy"])


def test_curves_equal_the_runs_log(runs: tuple[Path, Path]) -> None:
    """Each epoch's mean of the step curves is log.jsonl's train_ value; validation points are its valid_."""
    for run in runs:
        scalars = _scalars(run)
        for index, epoch in enumerate(_epochs(run)):
            steps = [value for step, value in scalars["train/loss"] if 4 * index < step <= 4 * (index + 1)]
            assert sum(steps) / len(steps) == pytest.approx(epoch["train_loss"], rel=1e-5)
            for key, value in epoch.items():
                if key.startswith("valid_") and key != "valid_s":
                    assert scalars[f"valid/{key.removeprefix('valid_')}"][index] == (4 * (index + 1),
                                                                                     pytest.approx(value))


def test_one_switch_turns_the_curves_off(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "data")
    run = tmp_path / "reward"
    train_reward(data, run, {"model": {**SMALL, "layers": 1}, "train": {**TRAIN, "epochs": 1, "tensorboard": False}})
    assert RunFolder(run).is_complete and not RunFolder(run).tensorboard.exists()


def test_a_resumed_run_hides_the_steps_it_replays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed in epoch 2's validation, after its steps were logged: the resumed run logs them once more,
    and TensorBoard shows each step once, with the resumed run's values."""
    data = tiny_dataset(tmp_path / "data")
    run = tmp_path / "reward"
    values = {"model": {**SMALL, "layers": 1}, "train": {**TRAIN, "checkpoint_every": 0}}
    real_metrics, calls = run_module.item_metrics, []

    def dies_in_epoch_two(*args: object) -> dict[str, float]:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_metrics(*args)

    monkeypatch.setattr(run_module, "item_metrics", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train_reward(data, run, values)
    assert [step for step, _ in _scalars(run)["train/loss"]] == list(range(1, 9))  # epoch 2 logged, not saved
    train_reward(data, run, values, resume=True)
    losses = _scalars(run)["train/loss"]
    assert [step for step, _ in losses] == list(range(1, 9))
    second = _epochs(run)[1]["train_loss"]
    assert sum(value for step, value in losses if step > 4) / 4 == pytest.approx(second, rel=1e-5)
