"""`goalrank serve`: the ranking service, a FastAPI app over one trained run (paper App. D.3).

GoalRank is generator-only, so serving a request is one model call: encode the candidates once,
decode L items greedily (paper §3.3). The app does no ranking itself: it validates the request
(pydantic, ``extra="forbid"``, strict types), translates raw ids (catalog.py, which documents the
cold-start rules), hands the request to the micro-batcher (batcher.py) and maps the list back.

Endpoints: ``POST /rank``, ``GET /healthz`` (the process answers), ``GET /readyz`` (model loaded
and warm-up done; 503 before), and FastAPI's ``/openapi.json`` and ``/docs``. Every malformed
request is a 4xx with a message: 422 for schema and content errors, 413 for a body over
``max_body_bytes``; a 5xx means a bug.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from goalrank.config import check
from goalrank.io import sha256_file
from goalrank.runs.folder import RunFolder
from goalrank.runs.load import load_ranker, run_dataset
from goalrank.serve.batcher import MicroBatcher
from goalrank.serve.catalog import Catalog, HistoryEvent, RequestError
from goalrank.serve.export import Backend, build_rank_fn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


@dataclass
class ServeConfig:
    """Service settings. ``threads`` sets torch's intra-op threads (0 keeps torch's default)."""

    run: str
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 64
    max_wait_ms: float = 2.0
    max_body_bytes: int = 256 * 1024
    backend: Backend = "auto"
    threads: int = 0

    def __post_init__(self) -> None:
        check(0 <= self.port < 65536, "serve.port", "in [0, 65535]", self.port)
        check(self.max_batch >= 1, "serve.max_batch", ">= 1", self.max_batch)
        check(self.max_wait_ms >= 0, "serve.max_wait_ms", ">= 0", self.max_wait_ms)
        check(self.max_body_bytes >= 1024, "serve.max_body_bytes", ">= 1024", self.max_body_bytes)
        check(self.threads >= 0, "serve.threads", ">= 0", self.threads)


class HistoryItem(BaseModel):
    """One past interaction, most recent last in the request's list."""

    model_config = ConfigDict(extra="forbid", strict=True)
    item: int
    label: Literal[0, 1]


class RankRequest(BaseModel):
    """A ranking request in raw ids; see catalog.py for unknown users and items."""

    model_config = ConfigDict(extra="forbid", strict=True)
    user: int | None = None
    history: list[HistoryItem] | None = None
    candidates: list[int] = Field(min_length=1)
    request_id: str | None = Field(default=None, max_length=128)

    @field_validator("candidates")
    @classmethod
    def _distinct(cls, candidates: list[int]) -> list[int]:
        counts = Counter(candidates)
        repeated = sorted(item for item, count in counts.items() if count > 1)
        if repeated:
            raise ValueError(f"duplicate candidate item id(s) {repeated[:10]}; candidates must be distinct")
        return candidates


class RankResponse(BaseModel):
    """The ranked list (L raw item ids, best first), their scores, and the model that ranked them."""

    items: list[int]
    scores: list[float]
    model_version: str
    request_id: str | None = None


class RankingService:
    """One trained run loaded once: its ranker, catalog and micro-batcher."""

    def __init__(self, config: ServeConfig) -> None:
        if config.threads:
            torch.set_num_threads(config.threads)
        run_dir = Path(config.run)
        self.ranker, run_config = load_ranker(run_dir, "cpu")
        self.model_name = run_config["model_name"]
        self.model_version = f"{run_dir.resolve().name}@{sha256_file(RunFolder(run_dir).checkpoint)[:12]}"
        self.catalog = Catalog(run_dataset(run_config), self.ranker.list_len)
        warmup = self.catalog.example_request()
        rank_fn = build_rank_fn(self.ranker, config.backend, warmup, cache=RunFolder(run_dir).onnx)
        self.batcher = MicroBatcher(rank_fn, config.max_batch, config.max_wait_ms / 1e3, warmup)

    async def rank(self, request: RankRequest) -> RankResponse:
        history = None if request.history is None else [HistoryEvent(h.item, h.label) for h in request.history]
        try:
            batch = self.catalog.encode(request.user, history, request.candidates)
        except RequestError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        output = await asyncio.wrap_future(self.batcher.submit(batch))
        candidates = batch.candidates[0]  # (N,)
        lists = output.lists[0]  # (L,)
        return RankResponse(
            items=self.catalog.raw_items(candidates[lists]),
            scores=[float(s) for s in output.scores[0, lists]],
            model_version=self.model_version,
            request_id=request.request_id,
        )


class BodyLimit:
    """ASGI middleware: 413 when a request body exceeds ``max_bytes``, by header or by stream.

    The body is read here, up to the limit, before the app sees it, so a lying or absent
    Content-Length cannot make the app buffer an unbounded body.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._reject(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                await self._reject(scope, receive, send)
                return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                      send: Callable[[Message], Awaitable[None]]) -> None:
        response = JSONResponse({"detail": f"request body over {self.max_bytes} bytes"}, status_code=413)
        await response(scope, receive, send)


async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
    """422 naming the field and the rule, without echoing the offending input.

    FastAPI's default handler copies the input into the response, and some inputs (non-UTF-8
    bytes, NaN, Infinity, lone surrogates) cannot be encoded, which turned a 422 into a 500
    (found by tests/serve/test_fuzz.py; fastapi issue 13111).
    """
    detail = [{"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
    return Response(json.dumps({"detail": detail}, ensure_ascii=True), status_code=422,
                    media_type="application/json")


def create_app(service: RankingService, max_body_bytes: int) -> FastAPI:
    """The FastAPI app over a loaded service; the batcher runs for the app's lifetime."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.batcher.start()
        try:
            yield
        finally:
            service.batcher.stop()

    app = FastAPI(title="goalrank", summary=f"{service.model_name} ranking service", lifespan=lifespan)
    app.state.service = service
    app.add_exception_handler(RequestValidationError, invalid_request)  # type: ignore[arg-type]  # Starlette's stub types every handler for Exception

    @app.post("/rank", response_model=RankResponse)
    async def rank(request: RankRequest) -> RankResponse:
        return await service.rank(request)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if not service.batcher.ready.is_set():
            return JSONResponse({"status": "warming up"}, status_code=503)
        return JSONResponse({"status": "ready", "model_version": service.model_version})

    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    return app


def serve(config: ServeConfig) -> None:
    """Load the run, then serve it with uvicorn until interrupted."""
    import uvicorn

    app = create_app(RankingService(config), config.max_body_bytes)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
