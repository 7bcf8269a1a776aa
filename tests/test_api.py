"""The Python API drives the whole pipeline; its ranker answers exactly as the HTTP service does."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from goalrank import api
from goalrank.config import to_dict
from goalrank.data.storage import PreparedDataset
from goalrank.groups import GroupConfig
from goalrank.io import read_json, read_recorded_json
from goalrank.serve.app import RankingService, RankResponse, ServeConfig, create_app
from goalrank.simulate import SimConfig
from goalrank.simulate.folder import SimulatorFolder
from goalrank.train.run import RankerRunConfig
from goalrank.train.runtime import TrainConfig

WORLD = SimConfig(n_users=60, n_items=40, sessions_per_user=5, list_len=3)
PREPARE = {"source": "simulator", "kcore": 2, "n_candidates": 8, "history_len": 5, "retriever": {"epochs": 1}}
TRAIN = TrainConfig(epochs=1, batch_size=32, device="cpu")


async def _served(run: api.Run, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """POST /rank answers of the app `goalrank serve` runs (lifespan and micro-batcher live), in process."""
    app = create_app(RankingService(ServeConfig(run=str(run.path), max_body_bytes=64 * 1024)))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://service") as client:
            return [await client.post("/rank", json=body) for body in bodies]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[api.Run, PreparedDataset]:
    root = tmp_path_factory.mktemp("api")
    world = api.simulate(root / "world", WORLD)  # configs as a dataclass ...
    data = api.prepare(root / "data", {**PREPARE, "input": world})  # ... or as a dict of its fields
    reward = api.train("reward", data, root / "reward", {"model": {"d_model": 8}, "train": TRAIN})
    run = api.train("goalrank", data.root, root / "goalrank",
                    RankerRunConfig(model={"d_model": 8}, train=TRAIN, group=GroupConfig(group_size=4)), reward=reward)
    return run, data


def test_a_dict_config_is_the_dataclass(tmp_path: Path, pipeline: tuple[api.Run, PreparedDataset]) -> None:
    world = api.simulate(tmp_path / "world", {"n_users": 60, "n_items": 40, "sessions_per_user": 5, "list_len": 3})
    first = read_json(SimulatorFolder(Path(pipeline[1].manifest["simulator"])).manifest)
    assert read_json(SimulatorFolder(world).manifest)["config"] == first["config"] == to_dict(WORLD)


def test_train_returns_a_handle_on_its_run(pipeline: tuple[api.Run, PreparedDataset]) -> None:
    run, data = pipeline
    assert run.model_name == "goalrank" and run.config["group"]["group_size"] == 4
    assert run.config["data"] == str(data.root.resolve())
    assert run.metrics["best_epoch"] == 1 and "valid_NDCG@3" in run.metrics
    assert any(run.tensorboard.iterdir())


def test_evaluate_returns_the_metrics_it_writes(pipeline: tuple[api.Run, PreparedDataset]) -> None:
    run, _ = pipeline
    metrics = api.evaluate(run, split="valid", beam_width=2)
    assert {"H@3", "NDCG@3", "MAP@3", "F1@3", "AUC", "complete_NDCG@3", "true_reward", "oracle_ratio"} <= set(metrics)
    assert metrics == read_recorded_json(run.folder.evaluation("valid"))
    assert 0 < metrics["oracle_ratio"] <= 1 + 1e-6


def test_load_ranker_answers_as_the_service_does(pipeline: tuple[api.Run, PreparedDataset]) -> None:
    run, data = pipeline
    ranker = api.load_ranker(run.path)
    items, users = data.item_raw_ids, data.user_raw_ids
    test = data.split("test").arrays
    requests = []
    for row in range(min(len(test["users"]), 8)):
        history = [(int(items[i]), int(label)) for i, label in zip(test["history"][row], test["history_labels"][row])
                   if i != 0]
        candidates = [int(items[i]) for i in test["candidates"][row]]
        user = int(users[test["users"][row]])
        requests += [(user, history, candidates), (user, None, candidates[::-1]), (None, [], candidates[:5])]
    bodies = [{"user": user, "candidates": candidates, "request_id": "r",
               **({} if history is None else {"history": [{"item": i, "label": label} for i, label in history]})}
              for user, history, candidates in requests]
    unknown = [*requests[0][2][:-1], 10**9]
    *served, refused = asyncio.run(_served(run, [*bodies, {"candidates": unknown}]))
    for (user, history, candidates), answer in zip(requests, served):
        assert answer.status_code == 200
        assert ranker.rank(user, history, candidates, request_id="r") == RankResponse(**answer.json())
    assert refused.status_code == 422
    with pytest.raises(ValueError) as error:
        ranker.rank(None, None, unknown)
    (detail,) = refused.json()["detail"]  # the service's 422: one {type, loc, msg} per problem
    assert str(error.value) == f"{detail['loc'][-1]}: {detail['msg']}"
    with pytest.raises(ValueError, match="duplicate candidate"):
        ranker.rank(None, None, [requests[0][2][0]] * 4)
