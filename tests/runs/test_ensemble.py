"""`goalrank ensemble`: MG-E assembled from separately trained runs serves the evaluator's best of their lists."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from builders import make_batch, tiny_dataset
from goalrank.cli import main
from goalrank.data.storage import PreparedDataset
from goalrank.errors import ConfigError
from goalrank.evaluate.protocol import evaluate_ranker
from goalrank.experiments.evaluation import EvaluateConfig, evaluate_run
from goalrank.models.mge import MultiGenerator
from goalrank.runs.ensemble import write_ensemble
from goalrank.runs.load import load_ranker, load_reward_model

TINY = ["--set", "train.epochs=1", "--set", "train.device=cpu", "--set", "train.batch_size=32",
        "--set", "model.d_model=16", "--set", "model.n_heads=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ensemble")
    data = tiny_dataset(root / "data", n_items=30, n_candidates=8, list_len=3, history_len=5)
    runs = {"data": data, "reward": root / "reward", "dnn": root / "dnn", "prm": root / "prm"}
    assert main(["train", "--model", "reward", "--data", str(data), "--out", str(runs["reward"]), *TINY,
                 "--set", "model.layers=1"]) == 0
    for name, seed in (("dnn", 0), ("prm", 1)):
        assert main(["train", "--model", name, "--data", str(data), "--out", str(runs[name]), *TINY,
                     "--set", f"train.seed={seed}"]) == 0
    return runs


def test_ensemble_run_ranks_with_the_evaluators_best_member_list(trained: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "mge"
    assert main(["ensemble", "--generators", f"{trained['dnn']},{trained['prm']}", "--reward",
                 str(trained["reward"]), "--out", str(out)]) == 0
    ensemble, _ = load_ranker(out)
    assert isinstance(ensemble, MultiGenerator) and len(ensemble.generators) == 2
    members = [load_ranker(trained[name])[0] for name in ("dnn", "prm")]
    evaluator = load_reward_model(trained["reward"], "cpu")
    batch = make_batch(6, n_candidates=8, list_len=3, n_items=30, history_len=5)
    with torch.inference_mode():
        proposals = torch.stack([member.rank(batch).lists for member in members], dim=1)  # (B, 2, L)
        best = evaluator.list_reward(batch, proposals).argmax(dim=1)
        assert torch.equal(ensemble.rank(batch).lists, proposals[torch.arange(6), best])


def test_ensemble_run_evaluates_like_a_trained_run(trained: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """An ensemble folder has no train section and no metrics.json: evaluate it without a warning."""
    out = tmp_path / "mge"
    write_ensemble(out, [trained["dnn"], trained["prm"]], trained["reward"])
    title, metrics = evaluate_run(EvaluateConfig(run=str(out), split="valid"))
    assert "warning" not in capsys.readouterr().err
    ensemble, _ = load_ranker(out)
    expected = evaluate_ranker(ensemble, PreparedDataset(trained["data"]).split("valid"), 512, torch.device("cpu"),
                               progress=False)
    assert title.startswith("mge-ensemble on valid") and metrics == pytest.approx(expected)
    assert (out / "eval-valid.json").is_file()


def test_ensemble_refuses_no_generators(trained: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="generators"):
        write_ensemble(tmp_path / "mge", [], trained["reward"])
