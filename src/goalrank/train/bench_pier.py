"""`goalrank bench pier`: PIER's validation passes along its training, with and without the order memo.

Scoring the 720 orders of every validation request is almost all of a PIER run's cost (issue #17,
item 4). The memo (``models.base.RequestMemo``) skips requests whose top-L set an earlier pass has
already ordered; how much it saves depends on how fast the pointwise model's top sets settle, so
this benchmark replays a training run as the benchmark trains it: ``steps_between`` batches, then
a validation pass over the same requests, ``passes`` times. Each pass ranks the requests twice in
one process, by a PIER without the memo and by one with it (the same weights), alternating, and
checks that both give the same lists: the memo may change the time, never the answer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from goalrank.config import check
from goalrank.data.storage import PreparedDataset, RankingBatch
from goalrank.errors import GoalRankError
from goalrank.io import write_rows_json
from goalrank.models.pier import PIER
from goalrank.objectives.base import ObjectiveInputs
from goalrank.runs.load import build_model, load_reward_model
from goalrank.runs.registry import MODELS
from goalrank.train.run import build_ranker_config
from goalrank.train.runtime import resolve_device, seed_everything


@dataclass
class BenchPierConfig:
    """`goalrank bench pier`: which training run to replay, and on how many validation requests.

    data, reward: the prepared dataset and the reward-model run (PIER's evaluator). requests: the
    first validation requests ranked each pass. passes: validation passes; steps_between: training
    batches of ``batch_size`` before each (the ``converged`` profile validates every 40). seed: the
    training seed. json: also write one row per pass to this file ("": no).
    """

    data: str
    reward: str
    requests: int = 256
    passes: int = 14
    steps_between: int = 40
    batch_size: int = 128
    seed: int = 0
    device: str = "auto"
    json: str = ""

    def __post_init__(self) -> None:
        for name in ("requests", "passes", "steps_between", "batch_size"):
            check(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))


def bench_pier(config: BenchPierConfig) -> str:
    """Markdown table of each pass's new top-L sets and seconds with and without the memo, and the totals."""
    device = resolve_device(config.device)
    dataset = PreparedDataset(config.data)
    run_config, model_config = build_ranker_config("pier", dataset, {"train": {"seed": config.seed}})
    evaluator = load_reward_model(Path(config.reward), device)
    rng = seed_everything(config.seed)
    plain = build_model("pier", model_config, evaluator).to(device)
    memoised = build_model("pier", model_config, evaluator).to(device)
    assert isinstance(plain, PIER) and isinstance(memoised, PIER)
    memoised.memoise_passes()
    assert memoised.memo is not None
    objective = MODELS["pier"].objective.build(
        ObjectiveInputs(plain, evaluator, run_config.group, run_config.reference, rng, seed=config.seed))
    optimizer = torch.optim.AdamW(plain.parameters(), lr=run_config.train.lr,
                                  weight_decay=run_config.train.weight_decay)
    requests = _first_requests(dataset, config.requests, run_config.train.eval_batch_size, device)
    count = sum(len(batch) for batch in requests)
    training = _endless_batches(dataset, config.batch_size, config.seed, device)
    rows, totals = [], {"plain": 0.0, "memo": 0.0}
    for index in range(config.passes):
        plain.train()
        for _ in range(config.steps_between):
            loss, _ = objective(next(training))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        memoised.load_state_dict(plain.state_dict())
        plain.eval()
        memoised.eval()
        known = len(memoised.memo)
        seconds, lists = {}, {}
        for name, model in (("plain", plain), ("memo", memoised)):
            start = time.perf_counter()
            lists[name] = torch.cat([model.rank(batch).lists for batch in requests])
            seconds[name] = time.perf_counter() - start
            totals[name] += seconds[name]
        if not torch.equal(lists["plain"], lists["memo"]):
            raise GoalRankError(f"pass {index + 1}: PIER's order memo changed a list (a bug: report it)")
        rows.append({"pass": index + 1, "new_sets": len(memoised.memo) - known, "plain_s": seconds["plain"],
                     "memo_s": seconds["memo"]})
    if config.json:
        write_rows_json(Path(config.json), rows)
    table = ["| pass | new top-L sets | without memo s | with memo s |", "|---:|---:|---:|---:|"]
    table += [f"| {row['pass']} | {row['new_sets']} / {count} | {row['plain_s']:.1f} | {row['memo_s']:.1f} |"
              for row in rows]
    table.append(f"| **total** | {sum(row['new_sets'] for row in rows)} / {count * config.passes} | "
                 f"{totals['plain']:.1f} | {totals['memo']:.1f} |")
    header = (f"device {device}, {torch.get_num_threads()} threads, {count} validation requests, {config.passes} "
              f"passes every {config.steps_between} batches of {config.batch_size} (seed {config.seed}); "
              f"same lists with and without the memo every pass; validation time without / with the memo: "
              f"{totals['plain'] / totals['memo']:.2f}×\n\n")
    return header + "\n".join(table)


def _first_requests(dataset: PreparedDataset, requests: int, batch_size: int,
                    device: torch.device) -> list[RankingBatch]:
    """The first ``requests`` validation requests, in batches of ``batch_size``."""
    batches, taken = [], 0
    for batch in dataset.split("valid").batches(batch_size):
        if taken >= requests:
            break
        batch = batch.select(slice(0, requests - taken))
        batches.append(batch.to(device))
        taken += len(batch)
    return batches


def _endless_batches(dataset: PreparedDataset, batch_size: int, seed: int,
                     device: torch.device) -> Iterator[RankingBatch]:
    """Shuffled training batches, epoch after epoch (a new shuffle each epoch)."""
    epoch = 0
    while True:
        for batch in dataset.split("train").batches(batch_size, shuffle=True, seed=seed + epoch):
            yield batch.to(device)
        epoch += 1
