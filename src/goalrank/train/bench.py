"""`goalrank bench train`: where a GoalRank training step spends its time.

For each group size K the step is split into its three stages — group construction (the
auxiliary policies, App. C), reward scoring (the frozen reward model), and loss + backward
(teacher-forced log π_θ of the K lists, Eq. 5) — and compared with a plain supervised step
(−log π_θ of the logged list only) on the same batches. Medians over timed steps after warm-up.
Each step's FLOPs are counted once (FlopCounterMode) and turned into MFU against a peak (see
``goalrank.perf``): the issue asks for MFU of the GoalRank training step, the paper reports 12.65 %.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from goalrank.config import check, from_dict
from goalrank.data.storage import PreparedDataset, RankingBatch
from goalrank.groups import GroupConfig
from goalrank.io import write_rows_json
from goalrank.models.goalrank import GeneratorConfig, GoalRankGenerator
from goalrank.objectives.group_relative import GroupRelativeObjective
from goalrank.objectives.losses import supervised_loss
from goalrank.objectives.reference import ReferenceConfig
from goalrank.perf import count_flops, counted, matmul_peak_flops, timed
from goalrank.runs.load import data_fields, load_reward_model
from goalrank.train.run import training_popularity
from goalrank.train.runtime import Precision, autocast, autocast_dtype, resolve_device, seed_everything

MFU_PEAK_SIZE = {"cpu": 1024, "cuda": 8192}  # large enough to saturate the device's matmul units


@dataclass(frozen=True)
class StepCost:
    """Median wall time of a step and the FLOPs it performs (FlopCounterMode: matmuls, attention)."""

    seconds: float
    flops: int

    def mfu(self, peak: float) -> float:
        return self.flops / self.seconds / peak


@dataclass
class BenchTrainConfig:
    """`goalrank bench train`: which steps to time, on what.

    data, reward: the prepared dataset and the reward-model run. group_sizes: the K values timed.
    steps: timed steps per K, after ``warmup`` untimed ones. policies: the group's policy names
    (equal weights; empty: the ``GroupConfig`` mix). precision: as ``train.precision``.
    peak_tflops: the MFU peak, e.g. a datasheet figure (None: the measured matmul peak). json: also
    write one row per step kind (``K`` 0: the supervised step) to this file ("": no).
    """

    data: str
    reward: str
    group_sizes: tuple[int, ...] = (5, 20, 100)
    batch_size: int = 128
    steps: int = 5
    warmup: int = 2
    policies: tuple[str, ...] = ()
    device: str = "auto"
    precision: Precision = "auto"
    peak_tflops: float | None = None
    json: str = ""

    def __post_init__(self) -> None:
        check(min(self.group_sizes, default=0) >= 2, "group_sizes", "integers >= 2, at least one", self.group_sizes)
        for name in ("batch_size", "steps"):
            check(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))
        check(self.warmup >= 0, "warmup", ">= 0", self.warmup)
        check(self.peak_tflops is None or (math.isfinite(self.peak_tflops) and self.peak_tflops > 0),
              "peak_tflops", "unset or a finite number > 0", self.peak_tflops)


def bench_train(config: BenchTrainConfig) -> str:
    """Markdown table of median milliseconds per stage of a training step, per group size K, with MFU.

    MFU = FLOPs of a step / its median time / peak, the peak being ``peak_tflops`` if given, else
    the measured matmul peak of the device in the step's compute dtype (``goalrank.perf``).
    """
    batch_size, steps, warmup, precision = config.batch_size, config.steps, config.warmup, config.precision
    peak_tflops = config.peak_tflops
    mix = {name: 1.0 for name in config.policies} or None
    device = resolve_device(config.device)
    rng = seed_everything(0)
    dataset = PreparedDataset(config.data)
    generator = GoalRankGenerator(from_dict(GeneratorConfig, data_fields(dataset), "model")).to(device)
    evaluator = load_reward_model(Path(config.reward), device)
    optimizer = torch.optim.AdamW(generator.parameters(), lr=1e-4)
    train_batches = dataset.split("train").batches(batch_size, shuffle=True)
    batches = [batch.to(device) for batch, _ in zip(train_batches, range(warmup + steps), strict=False)]
    dtype = autocast_dtype(device, precision) or torch.float32
    peak = peak_tflops * 1e12 if peak_tflops else matmul_peak_flops(device, dtype, size=MFU_PEAK_SIZE[device.type])

    def optimise(loss: torch.Tensor) -> None:
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def supervised_step(batch: RankingBatch) -> None:
        with autocast(device, precision):
            encoding = generator.encode(batch)
            loss = supervised_loss(generator.log_prob(encoding, batch.exposed[:, None])[:, 0])
        optimise(loss)

    base_times = [timed(partial(supervised_step, batch), device)[1] for batch in batches][warmup:]
    base = StepCost(statistics.median(base_times), count_flops(lambda: supervised_step(batches[0])))
    json_rows = [{"K": 0, "step_ms": 1000 * base.seconds, "ratio": 1.0, "mfu": base.mfu(peak), "flops": base.flops}]
    # "without groups": the step's FLOPs other than group construction's over the supervised step's, the ratio
    # a free group construction would leave at equal MFU (what no speed-up of the loss alone can beat)
    rows = ["| K | group construction ms | reward scoring ms | loss+backward ms | step ms | step / supervised "
            "| GFLOP / step | GFLOP: group / reward / loss+backward | FLOPs without groups / supervised | MFU |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k in config.group_sizes:
        group_config = from_dict(GroupConfig, {"group_size": k, **({"mix": mix} if mix else {})})
        objective = GroupRelativeObjective(generator, evaluator, group_config, ReferenceConfig(), rng,
                                           popularity=training_popularity(dataset, device))

        def stages(batch: RankingBatch, measure: Callable[[Callable[[], Any]], tuple[Any, float]],
                   objective: GroupRelativeObjective = objective) -> tuple[float, float, float]:
            """What ``measure`` (seconds or FLOPs) gives group construction, reward scoring and the rest."""
            with autocast(device, precision):
                encoding, encode = measure(lambda: generator.encode(batch))
                group, building = measure(lambda: objective.build_group(batch, encoding))
                (_, reference), scoring = measure(lambda: objective.reference_policy(batch, group))
                loss, forward = measure(lambda: objective.loss(batch, encoding, group, reference)[0])
            _, backward = measure(lambda: optimise(loss))
            return building, scoring, encode + forward + backward

        times = [stages(batch, partial(timed, device=device)) for batch in batches][warmup:]
        group_ms, reward_ms, loss_ms = (1000 * statistics.median(t[i] for t in times) for i in range(3))
        flops = stages(batches[0], counted)
        cost = StepCost(statistics.median(sum(t) for t in times), int(sum(flops)))
        json_rows.append({"K": k, "step_ms": 1000 * cost.seconds, "ratio": cost.seconds / base.seconds,
                          "mfu": cost.mfu(peak), "flops": cost.flops, "group_ms": group_ms, "reward_ms": reward_ms,
                          "loss_ms": loss_ms, "group_flops": flops[0], "reward_flops": flops[1],
                          "loss_flops": flops[2]})
        rows.append(f"| {k} | {group_ms:.1f} | {reward_ms:.1f} | {loss_ms:.1f} | {1000 * cost.seconds:.1f} | "
                    f"{cost.seconds / base.seconds:.2f}× | {cost.flops / 1e9:.1f} | "
                    + " / ".join(f"{f / 1e9:.1f}" for f in flops) + f" | {(flops[1] + flops[2]) / base.flops:.2f}× | "
                    f"{100 * cost.mfu(peak):.2f} % |")
    if config.json:
        write_rows_json(Path(config.json), json_rows)
    peak_source = "given" if peak_tflops else f"measured {MFU_PEAK_SIZE[device.type]}² matmul"
    header = (f"device {device}, {torch.get_num_threads()} threads, compute dtype {dtype}, batch {batch_size}, "
              f"N={dataset.n_candidates}, L={dataset.list_len}, median of {steps} steps after {warmup} warm-up; "
              f"supervised step {1000 * base.seconds:.1f} ms, {base.flops / 1e9:.1f} GFLOP, MFU "
              f"{100 * base.mfu(peak):.2f} %; peak {peak / 1e12:.3f} TFLOP/s ({peak_source})\n\n")
    return header + "\n".join(rows)
