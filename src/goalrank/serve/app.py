"""`goalrank serve`: the ranking service, a FastAPI app over one trained run (paper App. D.3).

GoalRank is generator-only, so serving a request is one model call: encode the candidates once,
decode L items greedily (paper §3.3). The app does no ranking itself: it validates the request
(pydantic, ``extra="forbid"``, strict types), translates raw ids (catalog.py, which documents the
cold-start rules), hands the request to the micro-batcher (batcher.py) and maps the list back.

Endpoints: ``POST /rank``, ``GET /healthz`` (the process answers), ``GET /readyz`` (model loaded
and warm-up done; 503 before), and FastAPI's ``/openapi.json`` and ``/docs``. Every malformed
request is a 4xx with a message: 422 for schema and content errors, 413 for a body over
``max_body_bytes``, 408 for one too slow to arrive; 503 with ``Retry-After`` under overload
(limits.py); a 5xx means a bug.

The published OpenAPI schema is the contract, and tests/serve/test_schema.py holds the service to
it with schemathesis: the candidate count's bounds L..N are the run's own (``rank_request_model``),
every error answer has the documented shape, and integers are strict: ``3``, never ``3.0``, ``"3"``
or ``true`` (labels included), stricter than JSON Schema's ``integer``, which admits ``3.0``.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from goalrank.config import check
from goalrank.data.storage import RankingBatch
from goalrank.io import sha256_file
from goalrank.models.base import RankOutput
from goalrank.runs.folder import RunFolder
from goalrank.runs.load import load_ranker, run_dataset
from goalrank.serve.batcher import MicroBatcher
from goalrank.serve.catalog import Catalog, HistoryEvent, RequestError
from goalrank.serve.export import Backend, build_rank_fn
from goalrank.serve.limits import BodyLimit, ConnectionLimits, InFlightLimit, connection_budget, guarded_protocol

MAX_TIMEOUT_S = 3600.0


@dataclass
class ServeConfig:
    """Service settings. ``threads`` sets torch's intra-op threads (0 keeps torch's default).

    The client bounds (limits.py says why each exists): a connection without a request in
    progress is closed after ``keep_alive_s``; a request must arrive, headers and body, within
    ``request_timeout_s`` of its first byte (else 408); at most ``max_connections`` are open (lowered
    to fit ``ulimit -n``) and ``max_in_flight`` requests served at once, beyond which the answer is
    503 with ``Retry-After: retry_after_s``.
    """

    run: str
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 64
    max_wait_ms: float = 2.0
    max_body_bytes: int = 256 * 1024
    backend: Backend = "auto"
    threads: int = 0
    keep_alive_s: float = 5.0
    request_timeout_s: float = 30.0
    max_connections: int = 1000
    max_in_flight: int = 128
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        check(0 <= self.port < 65536, "serve.port", "in [0, 65535]", self.port)
        check(self.max_batch >= 1, "serve.max_batch", ">= 1", self.max_batch)
        check(self.max_wait_ms >= 0, "serve.max_wait_ms", ">= 0", self.max_wait_ms)
        check(self.max_body_bytes >= 1024, "serve.max_body_bytes", ">= 1024", self.max_body_bytes)
        check(self.threads >= 0, "serve.threads", ">= 0", self.threads)
        for name in ("keep_alive_s", "request_timeout_s"):
            value = getattr(self, name)
            check(math.isfinite(value) and 0 < value <= MAX_TIMEOUT_S, f"serve.{name}",
                  f"a number of seconds in (0, {MAX_TIMEOUT_S:g}]", value)
        for name in ("max_connections", "max_in_flight", "retry_after_s"):
            check(getattr(self, name) >= 1, f"serve.{name}", ">= 1", getattr(self, name))


class HistoryItem(BaseModel):
    """One past interaction, most recent last in the request's list."""

    model_config = ConfigDict(extra="forbid", strict=True)
    item: int
    label: int = Field(ge=0, le=1, description="1 if the user responded to the item, else 0")


class RankRequest(BaseModel):
    """A ranking request in raw ids; see catalog.py for unknown users and items.

    The candidate count's bounds are the run's (L..N), set by ``rank_request_model``; this class
    alone requires one candidate.
    """

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


def rank_request_model(catalog: Catalog) -> type[RankRequest]:
    """RankRequest with the run's candidate bounds, so that the schema says what the catalog requires."""
    candidates = Field(
        min_length=catalog.list_len, max_length=catalog.max_candidates,
        description=f"between L={catalog.list_len} and N={catalog.max_candidates} distinct known item ids")
    return create_model("RankRequest", __base__=RankRequest, __doc__=RankRequest.__doc__,
                        candidates=(list[int], candidates))


class RankResponse(BaseModel):
    """The ranked list (L raw item ids, best first), their scores, and the model that ranked them."""

    items: list[int]
    scores: list[float]
    model_version: str
    request_id: str | None = None


class ErrorMessage(BaseModel):
    """The answer to a request refused before validation: unreadable, too large, too slow, or the service overloaded."""

    detail: str


class Readiness(BaseModel):
    """``/readyz``: ``ready`` with the model version once warm-up has run, ``warming up`` (503) before."""

    status: str
    model_version: str | None = None


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
REFUSALS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorMessage, "description": "the body is not text FastAPI can parse (e.g. not UTF-8)"},
    408: {"model": ErrorMessage, "description": "the request did not arrive within request_timeout_s"},
    413: {"model": ErrorMessage, "description": "the body is over max_body_bytes"},
    503: {"model": ErrorMessage, "description": "overloaded: over max_in_flight requests or max_connections",
          "headers": RETRY_AFTER},
}


class RankingService:
    """One trained run loaded once: its ranker, catalog and micro-batcher, and the settings it serves with."""

    def __init__(self, config: ServeConfig) -> None:
        if config.threads:
            torch.set_num_threads(config.threads)
        self.config = config
        run_dir = Path(config.run)
        self.ranker, run_config = load_ranker(run_dir, "cpu")
        self.model_name = run_config["model_name"]
        self.model_version = f"{run_dir.resolve().name}@{sha256_file(RunFolder(run_dir).checkpoint)[:12]}"
        self.catalog = Catalog(run_dataset(run_config), self.ranker.list_len)
        warmup = self.catalog.example_request()
        rank_fn = build_rank_fn(self.ranker, config.backend, warmup, cache=RunFolder(run_dir).onnx)
        self.batcher = MicroBatcher(rank_fn, config.max_batch, config.max_wait_ms / 1e3, warmup)

    async def rank(self, request: RankRequest) -> RankResponse:
        try:
            batch = self.encode(request)
        except RequestError as exc:
            detail = [{"type": "value_error", "loc": ["body", exc.field], "msg": exc.message}]
            raise HTTPException(status_code=422, detail=detail) from exc
        output = await asyncio.wrap_future(self.batcher.submit(batch))
        return self.respond(request, batch, output)

    def encode(self, request: RankRequest) -> RankingBatch:
        """The request as a batch of one row (catalog.py's rules); RequestError says what to change."""
        history = None if request.history is None else [HistoryEvent(h.item, h.label) for h in request.history]
        return self.catalog.encode(request.user, history, request.candidates)

    def respond(self, request: RankRequest, batch: RankingBatch, output: RankOutput) -> RankResponse:
        """The ranker's (1, ·) output for ``batch`` in the request's raw ids, best first."""
        candidates = batch.candidates[0]  # (N,)
        lists = output.lists[0]  # (L,)
        return RankResponse(
            items=self.catalog.raw_items(candidates[lists]),
            scores=[float(s) for s in output.scores[0, lists]],
            model_version=self.model_version,
            request_id=request.request_id,
        )


async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
    """422 naming the field and the rule, without echoing the offending input.

    FastAPI's default handler copies the input into the response, and some inputs (non-UTF-8
    bytes, NaN, Infinity, lone surrogates) cannot be encoded, which turned a 422 into a 500
    (found by tests/serve/test_fuzz.py; fastapi issue 13111).
    """
    detail = [{"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
    return Response(json.dumps({"detail": detail}, ensure_ascii=True), status_code=422,
                    media_type="application/json")


def create_app(service: RankingService) -> FastAPI:
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

    async def rank(request: RankRequest) -> RankResponse:
        return await service.rank(request)

    rank.__annotations__["request"] = rank_request_model(service.catalog)  # FastAPI validates by the annotation
    app.post("/rank", response_model=RankResponse, responses=REFUSALS)(rank)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", responses={200: {"model": Readiness}, 503: {"model": Readiness}})
    async def readyz() -> JSONResponse:
        if not service.batcher.ready.is_set():
            return JSONResponse({"status": "warming up"}, status_code=503)
        return JSONResponse({"status": "ready", "model_version": service.model_version})

    config = service.config
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    app.add_middleware(InFlightLimit, max_in_flight=config.max_in_flight, retry_after_s=config.retry_after_s)
    return app


def build_server(service: RankingService) -> uvicorn.Server:
    """uvicorn over the app, with the connection bounds of limits.py."""
    config = service.config
    max_connections, backlog = connection_budget(config.max_connections)
    limits = ConnectionLimits(keep_alive_s=config.keep_alive_s, request_timeout_s=config.request_timeout_s,
                              max_connections=max_connections, retry_after_s=config.retry_after_s)
    return uvicorn.Server(uvicorn.Config(create_app(service), host=config.host, port=config.port, backlog=backlog,
                                         log_level="warning", http=guarded_protocol(limits)))


def serve(config: ServeConfig) -> None:
    """Load the run, then serve it with uvicorn until interrupted."""
    build_server(RankingService(config)).run()
