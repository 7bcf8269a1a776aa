"""Non-finite steps: skipped and logged without touching the weights; too many abort the run (exit code 2)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from builders import tiny_dataset
from goalrank.cli import main
from goalrank.data.storage import PreparedDataset, RankingBatch
from goalrank.evaluate.protocol import evaluate_ranker
from goalrank.models.dnn import DNNConfig, DNNRanker
from goalrank.objectives.base import ObjectiveFactory
from goalrank.objectives.ranker import PointwiseObjective
from goalrank.runs.folder import RunFolder
from goalrank.runs.registry import MODELS
from goalrank.train.loop import MAX_NONFINITE_STEPS, TrainingDiverged, fit
from goalrank.train.runtime import TrainConfig, seed_everything

CHECKPOINT, LAST = RunFolder(Path()).checkpoint.name, RunFolder(Path()).last.name

TRAIN_LISTS = 64  # tiny_dataset's default train split size
CPU = torch.device("cpu")


class PoisonedObjective:
    """The real pointwise BCE, made non-finite on chosen calls (1-based) in the loss or in its gradient.

    It also checks that a poisoned call changed nothing: the weights seen at the next call must
    equal those seen at the poisoned one.
    """

    def __init__(self, model: torch.nn.Module, poison: dict[int, str]) -> None:
        self.model, self.poison = model, poison
        self.objective = PointwiseObjective(model)
        self.calls = 0
        self.snapshot: dict[str, torch.Tensor] | None = None
        self.unchanged_after_skip: list[bool] = []

    def __call__(self, batch: RankingBatch) -> tuple[torch.Tensor, dict[str, float]]:
        self.calls += 1
        weights = self.model.state_dict()
        if self.snapshot is not None:
            self.unchanged_after_skip.append(all(torch.equal(weights[k], v) for k, v in self.snapshot.items()))
            self.snapshot = None
        loss, stats = self.objective(batch)
        kind = self.poison.get(self.calls)
        if kind is not None:
            self.snapshot = {k: v.clone() for k, v in weights.items()}
        if kind == "loss":
            loss = loss * float("nan")
        elif kind == "gradient":  # finite value 0, but d sqrt(x)/dx = inf at x = 0, and inf * 0 = NaN
            loss = loss + (next(self.model.parameters()).flatten()[0] * 0.0).sqrt()
        return loss, stats


def _fit(tmp_path: Path, poison: dict[int, str], epochs: int, batch_size: int) -> tuple[DNNRanker, PoisonedObjective]:
    dataset = PreparedDataset(tiny_dataset(tmp_path / "data"))
    rng = seed_everything(0)
    model = DNNRanker(DNNConfig(n_items=dataset.n_items, list_len=dataset.list_len, d_model=8, n_heads=2))
    objective = PoisonedObjective(model, poison)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, patience=epochs, device="cpu", checkpoint_every=0)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    valid = dataset.split("valid")
    fit(model, objective, lambda: evaluate_ranker(model, valid, 16, CPU, progress=False), "NDCG@3",
        dataset.split("train"), config, RunFolder(run_dir), CPU, rng)
    return model, objective


def _log(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k in ("event", "epoch", "step", "steps", "reason")} for r in records]


def test_nonfinite_steps_are_skipped_logged_and_leave_weights_untouched(tmp_path: Path) -> None:
    batch_size = 8  # 8 batches per epoch: calls 1-8 are epoch 1, calls 9-16 epoch 2
    model, objective = _fit(tmp_path, {2: "loss", 3: "gradient", 10: "loss"}, epochs=2, batch_size=batch_size)
    assert objective.calls == 2 * TRAIN_LISTS // batch_size
    assert _log(tmp_path / "run") == [
        {"event": "skipped_step", "epoch": 1, "step": 1, "reason": "non-finite loss"},
        {"event": "skipped_step", "epoch": 1, "step": 1, "reason": "non-finite gradient"},
        {"epoch": 1, "steps": 6},
        {"event": "skipped_step", "epoch": 2, "step": 1, "reason": "non-finite loss"},
        {"epoch": 2, "steps": 7},
    ]
    assert objective.unchanged_after_skip == [True, True, True]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    saved = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)["model"]
    assert all(torch.isfinite(t).all() for t in saved.values() if t.is_floating_point())


@pytest.mark.parametrize("skipped", [MAX_NONFINITE_STEPS, MAX_NONFINITE_STEPS + 1])
def test_threshold_tolerates_max_nonfinite_steps_and_aborts_on_the_next(tmp_path: Path, skipped: int) -> None:
    batch_size = 4  # 16 batches in the one epoch, more than MAX_NONFINITE_STEPS + 1
    poison = {call: "loss" for call in range(1, skipped + 1)}
    if skipped <= MAX_NONFINITE_STEPS:
        model, _ = _fit(tmp_path, poison, epochs=1, batch_size=batch_size)
        assert all(torch.isfinite(p).all() for p in model.parameters())
    else:
        with pytest.raises(TrainingDiverged, match=rf"^{skipped} steps had a non-finite loss; aborting"):
            _fit(tmp_path, poison, epochs=1, batch_size=batch_size)


def test_always_nan_loss_exits_2_with_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    class AlwaysNaN(PointwiseObjective):
        def __call__(self, batch: RankingBatch) -> tuple[torch.Tensor, dict[str, float]]:
            loss, stats = super().__call__(batch)
            return loss * float("nan"), stats

    nan_spec = dataclasses.replace(MODELS["dnn"], objective=ObjectiveFactory("nan", lambda i: AlwaysNaN(i.model)))
    monkeypatch.setitem(MODELS, "dnn", nan_spec)
    data, out = tiny_dataset(tmp_path / "data"), tmp_path / "run"
    code = main(["train", "--model", "dnn", "--data", str(data), "--out", str(out), "--set", "model.d_model=8",
                 "--set", "model.n_heads=2", "--set", "train.device=cpu", "--set", "train.batch_size=4"])
    assert code == 2
    *progress_lines, error = capsys.readouterr().err.splitlines()
    assert error == (f"error: {MAX_NONFINITE_STEPS + 1} steps had a non-finite loss; aborting "
                     "(lower train.lr or check the data)")
    assert all(line.startswith("epoch 1/") for line in progress_lines)  # no traceback
    assert not out.exists()  # no checkpoint to resume from: the failed run is removed and does not block a rerun
