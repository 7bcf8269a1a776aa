"""`goalrank evaluate`: evaluate a trained run on a split and render the result."""

from __future__ import annotations

from pathlib import Path

from goalrank.data.storage import PreparedDataset
from goalrank.errors import ConfigError
from goalrank.evaluate.protocol import TrueReward, evaluate_ranker, simulator_for
from goalrank.io import write_recorded_json
from goalrank.train.run import REWARD, load_run
from goalrank.train.runtime import resolve_device


def evaluate_run(run_dir: Path, data_dir: Path | None, split: str, beam_width: int) -> str:
    """Evaluate ``run_dir`` on ``split``; writes ``run_dir/eval-<split>.json`` and returns a table."""
    device = resolve_device("auto")
    model, config = load_run(run_dir, device)
    if config["model_name"] == REWARD:
        raise ConfigError(f"--run {run_dir}: is a reward-model run; evaluate a ranker run")
    dataset = PreparedDataset(data_dir or config["data"])
    simulator = simulator_for(dataset)
    true_reward = TrueReward(simulator, dataset, beam_width) if simulator is not None else None
    metrics = evaluate_ranker(model, dataset.split(split), config["train"]["eval_batch_size"], device, true_reward)
    write_recorded_json(Path(run_dir) / f"eval-{split}.json", metrics)
    return format_metrics(f"{config['model_name']} on {split}", metrics)


def format_metrics(title: str, metrics: dict[str, float]) -> str:
    """A two-column markdown table; rates in [0, 1] are shown as percentages like the paper."""
    lines = [f"| {title} | value |", "|---|---|"]
    for key, value in metrics.items():
        shown = f"{value:.0f}" if key.startswith("n_") else f"{value:.4f}"
        lines.append(f"| {key} | {shown} |")
    return "\n".join(lines)
