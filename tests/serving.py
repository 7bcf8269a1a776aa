"""Running the service as ``goalrank serve`` does (build_server: uvicorn with the connection bounds) on a free port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from goalrank.serve.app import RankingService, build_server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running(service: RankingService) -> Iterator[str]:
    """Serve ``service`` (its config's port replaced by a free one) in a thread; yields the base URL."""
    service.config = replace(service.config, host="127.0.0.1", port=free_port())
    server = build_server(service)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not (server.started and service.batcher.ready.is_set()):
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{service.config.port}"
    finally:
        server.should_exit = True
        thread.join()
