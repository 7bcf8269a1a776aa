"""Mixed precision: bf16 autocast where TrainConfig.precision asks for it, fp32 weights throughout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from builders import tiny_dataset
from goalrank.data.storage import PreparedDataset
from goalrank.errors import ConfigError
from goalrank.evaluate.protocol import evaluate_ranker
from goalrank.models.dnn import DNNConfig, DNNRanker
from goalrank.objectives.ranker import PointwiseObjective
from goalrank.runs.folder import RunFolder
from goalrank.train.loop import fit
from goalrank.train.runtime import TrainConfig, autocast_dtype, seed_everything

CPU = torch.device("cpu")


@pytest.mark.parametrize(("device", "precision", "expected"), [
    ("cpu", "auto", None), ("cuda", "auto", torch.bfloat16), ("cuda", "fp32", None), ("cpu", "bf16", torch.bfloat16)])
def test_autocast_dtype_per_device_and_setting(device: str, precision: str, expected: torch.dtype | None) -> None:
    assert autocast_dtype(torch.device(device), precision) is expected


def test_unknown_precision_is_rejected() -> None:
    with pytest.raises(ConfigError, match="train.precision"):
        TrainConfig(precision="fp16")


@pytest.mark.parametrize(("precision", "compute_dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_training_forward_runs_in_the_chosen_dtype_with_fp32_weights(
    tmp_path: Path, precision: str, compute_dtype: torch.dtype
) -> None:
    dataset = PreparedDataset(tiny_dataset(tmp_path / "data"))
    rng = seed_everything(0)
    model = DNNRanker(DNNConfig(n_items=dataset.n_items, list_len=dataset.list_len, d_model=8, n_heads=2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen: set[torch.dtype] = set()
    linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda module, args, out: seen.add(out.dtype) if module.training else None)
    config = TrainConfig(epochs=1, batch_size=16, device="cpu", checkpoint_every=0, precision=precision)
    (tmp_path / "run").mkdir()
    valid = dataset.split("valid")
    fit(model, PointwiseObjective(model), lambda: evaluate_ranker(model, valid, 16, CPU, progress=False), "NDCG@3",
        dataset.split("train"), config, RunFolder(tmp_path / "run"), CPU, rng)
    assert seen == {compute_dtype}
    assert all(v.dtype == before[k].dtype for k, v in model.state_dict().items())
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())  # it did train
