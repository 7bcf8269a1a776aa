"""Slow, idle and too many clients (limits.py): closed or refused in bounded time, never queued for ever.

The service runs as ``goalrank serve`` runs it (build_server, real sockets on loopback) with short
timeouts, so each bound is seen to act within a second or two.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from goalrank.errors import ConfigError
from goalrank.serve import limits
from goalrank.serve.app import RankingService, ServeConfig
from serving import running

KEEP_ALIVE_S = 0.5
REQUEST_TIMEOUT_S = 1.0
BODY = {"candidates": list(range(8))}  # raw ids of 8 known items of the tiny run (N = 8, L = 3)


@pytest.fixture(scope="module")
def url(goalrank_run: Path) -> Iterator[str]:
    service = RankingService(ServeConfig(run=str(goalrank_run), keep_alive_s=KEEP_ALIVE_S,
                                         request_timeout_s=REQUEST_TIMEOUT_S, max_connections=4))
    with running(service) as base:
        yield base


def connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.settimeout(10)
    return sock


def read_until_closed(sock: socket.socket, drip: bytes = b"") -> tuple[bytes, float]:
    """Everything the server sends until it closes, and the seconds that took; ``drip`` is sent every 0.1 s."""
    start, received = time.monotonic(), b""
    sock.settimeout(0.1)
    while time.monotonic() - start < 10:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            if drip:
                sock.sendall(drip)
            continue
        if not chunk:
            return received, time.monotonic() - start
        received += chunk
    raise AssertionError(f"connection still open after 10 s; received {received!r}")


def test_idle_connection_is_closed_after_keep_alive(url: str) -> None:
    with connect(url) as sock:
        received, seconds = read_until_closed(sock)
    assert received == b""
    assert KEEP_ALIVE_S * 0.8 <= seconds < KEEP_ALIVE_S + 1.0


def test_slow_headers_are_cut_off_with_408(url: str) -> None:
    with connect(url) as sock:
        sock.sendall(b"POST /rank HTTP/1.1\r\nhost: test\r\n")
        received, seconds = read_until_closed(sock, drip=b"x")  # a byte every 0.1 s defeats keep-alive alone
    assert received.startswith(b"HTTP/1.1 408 ")
    assert REQUEST_TIMEOUT_S * 0.8 <= seconds < REQUEST_TIMEOUT_S + 1.0


def test_slow_body_is_cut_off_with_408(url: str) -> None:
    with connect(url) as sock:
        sock.sendall(b"POST /rank HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
                     b"content-length: 1000\r\n\r\n{\"candidates\": [")
        received, seconds = read_until_closed(sock, drip=b" ")
    assert received.startswith(b"HTTP/1.1 408 ") and b"not received within 1 s" in received
    assert REQUEST_TIMEOUT_S * 0.8 <= seconds < REQUEST_TIMEOUT_S + 1.0
    assert httpx.post(f"{url}/rank", json=BODY).status_code == 200  # the service is unharmed


def test_connection_over_max_connections_is_503_and_closed(url: str) -> None:
    held = [connect(url) for _ in range(4)]
    try:
        time.sleep(0.1)  # the server has accepted them
        with connect(url) as extra:
            received, _ = read_until_closed(extra)
        assert received.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in received.lower()
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.1)
    assert httpx.post(f"{url}/rank", json=BODY).status_code == 200


def test_requests_over_max_in_flight_are_503_with_retry_after(goalrank_run: Path) -> None:
    service = RankingService(ServeConfig(run=str(goalrank_run), max_in_flight=2, retry_after_s=3))
    gate, submitted = threading.Event(), threading.Semaphore(0)
    gate.set()  # open for the warm-up
    rank_fn, submit = service.batcher.rank_fn, service.batcher.submit

    def blocked(batch):  # the model is busy until the gate opens
        gate.wait(10)
        return rank_fn(batch)

    def counted(batch):
        future = submit(batch)
        submitted.release()
        return future

    service.batcher.rank_fn, service.batcher.submit = blocked, counted
    with running(service) as base, ThreadPoolExecutor(2) as pool:
        gate.clear()  # warm-up has run; from here the model blocks
        waiting = [pool.submit(httpx.post, f"{base}/rank", json=BODY, timeout=10) for _ in range(2)]
        for _ in range(2):
            assert submitted.acquire(timeout=10)
        refused = httpx.post(f"{base}/rank", json=BODY)
        alive = httpx.get(f"{base}/healthz")
        gate.set()
        answers = [future.result() for future in waiting]
    assert refused.status_code == 503 and refused.headers["retry-after"] == "3"
    assert "over 2 requests in flight" in refused.json()["detail"]
    assert alive.status_code == 200
    assert [answer.status_code for answer in answers] == [200, 200]


@pytest.mark.parametrize("field, value", [("keep_alive_s", float("inf")), ("request_timeout_s", 0.0),
                                          ("max_in_flight", 0), ("max_connections", 0), ("retry_after_s", 0)])
def test_limits_are_validated(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"serve.{field}"):
        ServeConfig(run="r", **{field: value})


def test_the_connection_cap_and_backlog_fit_the_open_file_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """At ``ulimit -n 200`` with 10 descriptors open: a backlog of 200 // 8 = 25 and 200 - 10 - 3·25 - 32 = 83
    connections, so even bursts of accepts never reach the limit (measured: no ``Too many open files``)."""
    monkeypatch.setattr(limits, "_open_descriptors", lambda: 10)
    for soft, expected in [(200, (83, 25)), (1 << 20, (1000, 64))]:
        monkeypatch.setattr(limits.resource, "getrlimit", lambda _, soft=soft: (soft, soft))
        assert limits.connection_budget(1000) == expected
    monkeypatch.setattr(limits.resource, "getrlimit", lambda _: (64, 64))
    with pytest.raises(ConfigError, match="ulimit -n 64: leaves room for 0 connections"):
        limits.connection_budget(1000)
