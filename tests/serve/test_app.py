"""The ranking service over HTTP on loopback: answers equal offline ``ranker.rank``, errors are 4xx."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from goalrank.data.storage import SPLITS, PreparedDataset, RankingBatch
from goalrank.models.blocks import UNKNOWN_USER
from goalrank.runs.load import load_run
from goalrank.serve.app import RankingService, ServeConfig, create_app
from goalrank.serve.bench import malformed_payloads
from serving import running

MAX_BODY = 4096


def raw(index: int) -> int:
    """tests/builders.py writes item_raw_ids = arange(-1, n_items): item index i is raw id i - 1."""
    return int(index) - 1


def offline_items(ranker: torch.nn.Module, history: list[int], labels: list[int], candidates: list[int],
                  history_len: int, user: int = UNKNOWN_USER) -> list[int]:
    """The reference: ``ranker.rank`` on a hand-built batch of item indices (``user`` a user index,
    the cold-start row by default, as for a request without a known user), mapped to raw ids."""
    pad = [0] * (history_len - len(history))
    batch = RankingBatch(
        users=torch.tensor([user]),
        history=torch.tensor([pad + history]),
        history_labels=torch.tensor([pad + labels]),
        candidates=torch.tensor([candidates]),
        labels=torch.zeros(1, len(candidates)),
        exposed=torch.zeros(1, ranker.list_len, dtype=torch.long),
    )
    lists = ranker.rank(batch).lists[0]
    return [raw(candidates[position]) for position in lists]


@pytest.fixture(scope="module")
def server(goalrank_run: Path) -> Iterator[tuple[str, RankingService]]:
    service = RankingService(ServeConfig(run=str(goalrank_run), max_batch=16, max_wait_ms=20.0,
                                         max_body_bytes=MAX_BODY))
    with running(service) as url:
        yield url, service


@pytest.fixture(scope="module")
def reference(goalrank_run: Path) -> tuple[torch.nn.Module, PreparedDataset]:
    ranker, config = load_run(goalrank_run)
    return ranker, PreparedDataset(config["data"])


def test_rank_equals_offline_ranker(server, reference, goalrank_run: Path) -> None:
    url, service = server
    ranker, dataset = reference
    test = dataset.split("test")
    for row in range(len(test)):
        history = [int(i) for i in test.arrays["history"][row] if i != 0]
        labels = [int(v) for i, v in zip(test.arrays["history"][row], test.arrays["history_labels"][row]) if i != 0]
        candidates = [int(c) for c in test.arrays["candidates"][row]]
        body = {"user": int(test.arrays["users"][row]), "request_id": f"r{row}",
                "history": [{"item": raw(i), "label": v} for i, v in zip(history, labels)],
                "candidates": [raw(c) for c in candidates]}
        answer = httpx.post(f"{url}/rank", json=body).json()
        user = service.catalog.user_index[body["user"]]
        assert answer["items"] == offline_items(ranker, history, labels, candidates, dataset.history_len, user)
        assert answer["request_id"] == f"r{row}"
        assert len(answer["scores"]) == dataset.list_len
        assert answer["scores"] == sorted(answer["scores"], reverse=True)
    digest = hashlib.sha256((goalrank_run / "checkpoint.pt").read_bytes()).hexdigest()
    assert answer["model_version"] == f"goalrank@{digest[:12]}"


def test_fewer_candidates_than_trained_are_ranked_as_given(server, reference) -> None:
    url, _ = server
    ranker, dataset = reference
    candidates = list(range(1, dataset.list_len + 2))  # L + 1 < N items
    answer = httpx.post(f"{url}/rank", json={"history": [], "candidates": [raw(c) for c in candidates]}).json()
    assert answer["items"] == offline_items(ranker, [], [], candidates, dataset.history_len)


def latest_history_brute_force(dataset: PreparedDataset, user: int) -> tuple[list[int], list[int]]:
    """The user's latest logged list by (timestamp, split order, row), its history then its items."""
    best = None
    for order, name in enumerate(SPLITS):
        split = dataset.split(name)
        for row in range(len(split)):
            if split.arrays["users"][row] == user:
                key = (int(split.arrays["timestamps"][row]), order, row)
                if best is None or key > best[0]:
                    best = (key, split)
    (_, _, row), split = best
    arrays = split.arrays
    items = [int(i) for i in arrays["history"][row] if i != 0]
    labels = [int(v) for i, v in zip(arrays["history"][row], arrays["history_labels"][row]) if i != 0]
    for position in arrays["exposed"][row]:
        items.append(int(arrays["candidates"][row][position]))
        labels.append(int(arrays["labels"][row][position]))
    return items[-dataset.history_len:], labels[-dataset.history_len:]


def test_known_user_without_history_gets_latest_logged_history(server, reference) -> None:
    url, service = server
    ranker, dataset = reference
    candidates = list(range(1, dataset.n_candidates + 1))
    for user in (0, 3, 7):
        history, labels = latest_history_brute_force(dataset, user)
        answer = httpx.post(f"{url}/rank", json={"user": user, "candidates": [raw(c) for c in candidates]}).json()
        assert answer["items"] == offline_items(ranker, history, labels, candidates, dataset.history_len,
                                                service.catalog.user_index[user])


def test_cold_start_user_and_unknown_history_items(server, reference) -> None:
    url, _ = server
    ranker, dataset = reference
    candidates = [raw(c) for c in range(5, 5 + dataset.n_candidates)]
    new_user = httpx.post(f"{url}/rank", json={"user": 10_000, "candidates": candidates}).json()
    assert new_user["items"] == offline_items(ranker, [], [], list(range(5, 5 + dataset.n_candidates)),
                                              dataset.history_len)
    with_unknown = [{"item": 2, "label": 1}, {"item": 10**30, "label": 0}, {"item": 4, "label": 0}]
    known_only = [with_unknown[0], with_unknown[2]]
    first = httpx.post(f"{url}/rank", json={"history": with_unknown, "candidates": candidates}).json()
    second = httpx.post(f"{url}/rank", json={"history": known_only, "candidates": candidates}).json()
    assert first["items"] == second["items"]


CANDIDATES = list(range(8))  # raw ids of 8 known items (N = 8, L = 3)
MALFORMED = {
    "unknown field": ({"candidates": CANDIDATES, "limit": 3}, 422, "limit"),
    "string item id": ({"candidates": ["a", *CANDIDATES[1:]]}, 422, "candidates"),
    "float item id": ({"candidates": [1.0, *CANDIDATES[1:]]}, 422, "candidates"),
    "numeric string user": ({"user": "3", "candidates": CANDIDATES}, 422, "user"),
    "label not 0/1": ({"history": [{"item": 1, "label": 2}], "candidates": CANDIDATES}, 422, "label"),
    "history entry extra key": ({"history": [{"item": 1, "label": 1, "t": 5}], "candidates": CANDIDATES}, 422, "t"),
    "duplicate candidates": ({"candidates": [1, 1, *CANDIDATES[2:]]}, 422, "duplicate"),
    "too few candidates": ({"candidates": CANDIDATES[:2]}, 422, "at least 3 items"),
    "too many candidates": ({"candidates": list(range(9))}, 422, "at most 8 items"),
    "boolean label": ({"history": [{"item": 1, "label": True}], "candidates": CANDIDATES}, 422, "label"),
    "float label": ({"history": [{"item": 1, "label": 1.0}], "candidates": CANDIDATES}, 422, "label"),
    "float user": ({"user": 3.0, "candidates": CANDIDATES}, 422, "user"),
    "no candidates": ({"candidates": []}, 422, "candidates"),
    "missing candidates": ({"user": 1}, 422, "candidates"),
    "unknown candidate": ({"candidates": [999, *CANDIDATES[1:]]}, 422, "unknown item id(s) [999]"),
    "overlong request id": ({"candidates": CANDIDATES, "request_id": "x" * 500}, 422, "request_id"),
    "body not an object": ([1, 2, 3], 422, "body"),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_request_is_4xx_with_message(server, kind: str) -> None:
    url, _ = server
    body, status, message = MALFORMED[kind]
    response = httpx.post(f"{url}/rank", json=body)
    assert response.status_code == status
    assert message in response.text


def test_invalid_json_and_oversized_bodies_are_4xx(server) -> None:
    url, _ = server
    broken = httpx.post(f"{url}/rank", content=b'{"candidates": [1, 2', headers={"content-type": "application/json"})
    assert broken.status_code == 422 and "JSON" in broken.text
    large = json.dumps({"candidates": CANDIDATES, "request_id": "x" * MAX_BODY}).encode()
    declared = httpx.post(f"{url}/rank", content=large, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and str(MAX_BODY) in declared.text
    streamed = httpx.post(f"{url}/rank", content=iter([large[:1000], large[1000:]]),
                          headers={"content-type": "application/json"})  # chunked: no Content-Length
    assert "content-length" not in streamed.request.headers
    assert streamed.status_code == 413


def test_concurrent_requests_are_batched_and_routed_back(server, reference) -> None:
    url, service = server
    ranker, dataset = reference
    rng = np.random.default_rng(0)
    requests = [[int(c) for c in rng.choice(np.arange(1, dataset.n_items + 1), dataset.n_candidates, replace=False)]
                for _ in range(48)]
    before = sum(size * count for size, count in service.batcher.batch_sizes.items() if size > 1)
    with httpx.Client() as client, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(
            lambda c: client.post(f"{url}/rank", json={"history": [], "candidates": [raw(i) for i in c]}).json(),
            requests))
    for candidates, answer in zip(requests, answers):
        assert answer["items"] == offline_items(ranker, [], [], candidates, dataset.history_len)
    after = sum(size * count for size, count in service.batcher.batch_sizes.items() if size > 1)
    assert after > before  # some of these requests shared a model call


def test_health_ready_and_openapi(server) -> None:
    url, service = server
    assert httpx.get(f"{url}/healthz").json() == {"status": "alive"}
    assert httpx.get(f"{url}/readyz").json() == {"status": "ready", "model_version": service.model_version}
    schema = httpx.get(f"{url}/openapi.json").json()["components"]["schemas"]
    request = schema["RankRequest"]["properties"]
    assert set(request) == {"user", "history", "candidates", "request_id"}
    assert (request["candidates"]["minItems"], request["candidates"]["maxItems"]) == (3, 8)  # the run's L..N
    assert {k: schema["HistoryItem"]["properties"]["label"][k] for k in ("type", "minimum", "maximum")} == {
        "type": "integer", "minimum": 0, "maximum": 1}


def test_catalog_errors_have_the_schema_shape(server) -> None:
    url, _ = server
    answer = httpx.post(f"{url}/rank", json={"candidates": [999, *CANDIDATES[1:]]})
    assert answer.status_code == 422
    assert answer.json() == {"detail": [{"type": "value_error", "loc": ["body", "candidates"],
                                         "msg": "unknown item id(s) [999]; cold-start candidates are rejected"}]}


def test_readyz_is_503_until_warm_up_has_run(goalrank_run: Path) -> None:
    service = RankingService(ServeConfig(run=str(goalrank_run)))
    transport = httpx.ASGITransport(create_app(service))  # runs no lifespan: no batcher

    async def statuses() -> tuple[int, int]:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return (await client.get("/healthz")).status_code, (await client.get("/readyz")).status_code

    assert asyncio.run(statuses()) == (200, 503)


def test_load_test_malformed_payloads_are_all_4xx(server) -> None:
    url, _ = server
    body = {"user": 1, "history": [{"item": 3, "label": 1}], "candidates": CANDIDATES}
    statuses = [httpx.post(f"{url}/rank", content=payload, headers={"content-type": "application/json"}).status_code
                for payload in malformed_payloads(body, list_len=3)]
    assert statuses == [422] * 7 + [413]
