"""`goalrank bench train`: where a GoalRank training step spends its time.

For each group size K the step is split into its three stages — group construction (the
auxiliary policies, App. C), reward scoring (the frozen reward model), and loss + backward
(teacher-forced log π_θ of the K lists, Eq. 5) — and compared with a plain supervised step
(−log π_θ of the logged list only) on the same batches. Medians over timed steps after warm-up.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from goalrank.config import from_dict
from goalrank.data.storage import PreparedDataset
from goalrank.groups import GroupConfig
from goalrank.models.goalrank import GeneratorConfig, GoalRankGenerator
from goalrank.train.losses import supervised_loss
from goalrank.train.objectives import GroupRelativeObjective, ReferenceConfig
from goalrank.train.run import load_reward_model
from goalrank.train.runtime import resolve_device, seed_everything


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[object, float]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def bench_train(data_dir: Path, reward_dir: Path, group_sizes: list[int], batch_size: int, steps: int,
                warmup: int = 2, device_name: str = "auto", mix: dict[str, float] | None = None) -> str:
    """Markdown table of median milliseconds per stage of a training step, per group size K."""
    device = resolve_device(device_name)
    rng = seed_everything(0)
    dataset = PreparedDataset(data_dir)
    generator = GoalRankGenerator(GeneratorConfig(n_items=dataset.n_items, list_len=dataset.list_len)).to(device)
    evaluator = load_reward_model(reward_dir, device)
    optimizer = torch.optim.AdamW(generator.parameters(), lr=1e-4)
    batches = [b.to(device) for b, _ in zip(dataset.split("train").batches(batch_size, shuffle=True), range(warmup + steps))]

    def supervised_step(batch: object) -> None:
        encoding = generator.encode(batch)
        loss = supervised_loss(generator.log_prob(encoding, batch.exposed[:, None])[:, 0])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    base = [_timed(lambda b=b: supervised_step(b), device)[1] for b in batches][warmup:]
    rows = ["| K | group construction ms | reward scoring ms | loss+backward ms | step ms | step / supervised |",
            "|---:|---:|---:|---:|---:|---:|"]
    for k in group_sizes:
        group_config = from_dict(GroupConfig, {"group_size": k, **({"mix": mix} if mix else {})})
        objective = GroupRelativeObjective(generator, evaluator, group_config, ReferenceConfig(), rng)
        times: list[tuple[float, float, float]] = []
        for batch in batches:
            encoding, t_encode = _timed(lambda b=batch: generator.encode(b), device)
            group, t_group = _timed(lambda b=batch, e=encoding: objective.build_group(b, e), device)
            (_, reference), t_reward = _timed(lambda b=batch, g=group: objective.reference_policy(b, g), device)

            def backward(b=batch, e=encoding, g=group, r=reference) -> None:
                loss, _ = objective.loss(b, e, g, r)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

            _, t_loss = _timed(backward, device)
            times.append((t_group, t_reward, t_encode + t_loss))
        times = times[warmup:]
        group_ms, reward_ms, loss_ms = (1000 * statistics.median(t[i] for t in times) for i in range(3))
        step_ms = 1000 * statistics.median(sum(t) for t in times)
        rows.append(f"| {k} | {group_ms:.1f} | {reward_ms:.1f} | {loss_ms:.1f} | {step_ms:.1f} | "
                    f"{step_ms / (1000 * statistics.median(base)):.2f}× |")
    header = (f"device {device}, batch {batch_size}, N={dataset.n_candidates}, L={dataset.list_len}, "
              f"median of {steps} steps after {warmup} warm-up; supervised step "
              f"{1000 * statistics.median(base):.1f} ms\n\n")
    return header + "\n".join(rows)
