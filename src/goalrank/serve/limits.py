"""What one client may hold of the service: a connection, a request in progress, a place in the queue.

Without these bounds a few slow or idle clients take the service down for everyone: uvicorn
closes a connection only some seconds after a response, so a socket that never sends a request,
or sends its headers or body a byte at a time, is held for ever, and enough of them exhaust the
process's file descriptors (``Too many open files``); and every accepted request waits in the
micro-batcher's queue however long it grows. So:

* ``BodyLimit`` (ASGI middleware): a body over ``max_body_bytes`` is answered 413 before the app
  buffers it;
* ``GuardedH11Protocol`` (per connection, below the app): a connection with no request in
  progress, new or after a response, is closed after ``keep_alive_s`` without a byte; a request
  whose headers and body have not all arrived ``request_timeout_s`` after its first byte is
  answered 408 and its connection closed; a connection beyond ``max_connections`` open ones is
  answered 503 and closed at once, so its descriptor is freed (``connection_budget`` fits the cap
  and the listen backlog to ``ulimit -n``);
* ``InFlightLimit`` (ASGI middleware): beyond ``max_in_flight`` requests being served at once, a
  request is answered 503 with ``Retry-After`` instead of queueing, so latency stays bounded
  under overload and the caller knows to come back. The probes (``/healthz``, ``/readyz``) are
  exempt, so an overloaded service still says it is alive.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
from fastapi.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

from goalrank.errors import ConfigError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PROBES = frozenset({"/healthz", "/readyz"})
DESCRIPTOR_RESERVE = 32  # descriptors kept free for the listening socket, logs and files opened later
ACCEPT_BACKLOG = 64  # connections accepted at a time (uvicorn's default 2048 would outrun any cap)
ACCEPT_BURSTS = 3  # bursts of accepts that can land before the refused ones are closed
MIN_CONNECTIONS = 8


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-connection bounds of ``GuardedH11Protocol`` (from a validated ServeConfig)."""

    keep_alive_s: float
    request_timeout_s: float
    max_connections: int
    retry_after_s: int


def connection_budget(max_connections: int) -> tuple[int, int]:
    """(connections, listen backlog) that fit the process's open-file limit (``ulimit -n``).

    A connection over the cap is refused only after it is accepted, which takes a descriptor, and
    asyncio accepts up to ``backlog`` connections at a time before any of them is refused: so the
    descriptors already open, a few bursts of ``backlog`` and DESCRIPTOR_RESERVE must fit beside
    the cap. Otherwise ``accept`` fails first, and the server floods its log with
    ``Too many open files`` instead of answering 503. The backlog is ACCEPT_BACKLOG, less under a
    small limit.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections, ACCEPT_BACKLOG
    backlog = max(1, min(ACCEPT_BACKLOG, soft // 8))
    spare = soft - _open_descriptors() - ACCEPT_BURSTS * backlog - DESCRIPTOR_RESERVE
    if spare < MIN_CONNECTIONS:
        raise ConfigError(f"ulimit -n {soft}: leaves room for {max(spare, 0)} connections (at least "
                          f"{MIN_CONNECTIONS} needed); raise the open-file limit")
    return min(max_connections, spare), backlog


def _open_descriptors() -> int:
    """Descriptors this process has open (Linux /proc; elsewhere DESCRIPTOR_RESERVE as a guess)."""
    fds = Path("/proc/self/fd")
    return len(os.listdir(fds)) if fds.is_dir() else DESCRIPTOR_RESERVE


def _raw_response(status: int, reason: str, detail: str, headers: dict[str, str]) -> bytes:
    """A complete HTTP/1.1 response that closes the connection, for answers outside h11's state machine."""
    body = json.dumps({"detail": detail}).encode()
    lines = [f"HTTP/1.1 {status} {reason}", "content-type: application/json", f"content-length: {len(body)}",
             "connection: close", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def guarded_protocol(limits: ConnectionLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol class with ``limits`` bound (uvicorn takes a class, not an instance)."""

    class Bound(GuardedH11Protocol):
        connection_limits = limits

    return Bound


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 connection with an idle timer from the start, a request deadline and a connection cap.

    uvicorn's keep-alive timer (``timeout_keep_alive``, our ``keep_alive_s``) runs only after a
    response and stops at the next byte; this class also starts it when the connection opens, and
    adds a deadline from a request's first byte to the end of its body.
    """

    connection_limits: ConnectionLimits

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._request_deadline: asyncio.TimerHandle | None = None
        if len(self.connections) > self.connection_limits.max_connections:
            retry = str(self.connection_limits.retry_after_s)
            transport.write(_raw_response(503, "Service Unavailable", "too many open connections; retry later",
                                          {"retry-after": retry}))
            transport.close()
            return
        self.timeout_keep_alive = self.connection_limits.keep_alive_s  # type: ignore[assignment]  # uvicorn types it int
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        if self._request_deadline is None and self.conn.their_state is h11.IDLE:
            self._request_deadline = self.loop.call_later(self.connection_limits.request_timeout_s, self._too_slow)
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE and self.conn.their_state is not h11.SEND_BODY:
            self._cancel_deadline()  # the request has fully arrived (or broke h11, which answered 400)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        self._cancel_deadline()
        if self.conn.their_state is h11.SEND_BODY:  # answered (413, 503) before the body came: drop the rest
            self.transport.close()
        super().on_response_complete()

    def _cancel_deadline(self) -> None:
        if self._request_deadline is not None:
            self._request_deadline.cancel()
            self._request_deadline = None

    def _too_slow(self) -> None:
        """The request did not arrive in time: 408 unless the app is answering it already, then close."""
        self._request_deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or not self.cycle.response_started or self.cycle.response_complete:
            timeout = self.connection_limits.request_timeout_s
            self.transport.write(_raw_response(408, "Request Timeout",
                                               f"request not received within {timeout:g} s", {}))
        self.transport.close()


class InFlightLimit:
    """ASGI middleware: 503 with ``Retry-After`` while ``max_in_flight`` requests are being served.

    Counted from the moment the app takes a request to its answer, so a request queued in the
    micro-batcher counts; the probes are exempt.
    """

    def __init__(self, app: ASGIApp, max_in_flight: int, retry_after_s: int) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.retry_after_s = retry_after_s
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            body = json.dumps({"detail": f"over {self.max_in_flight} requests in flight; retry later"}).encode()
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"), (b"retry-after",
                                                                              str(self.retry_after_s).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class BodyLimit:
    """ASGI middleware: 413 when a request body exceeds ``max_bytes``, by header or by stream.

    The body is read here, up to the limit, before the app sees it, so a lying or absent
    Content-Length cannot make the app buffer an unbounded body.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse({"detail": f"request body over {self.max_bytes} bytes"}, status_code=413)
        await response(scope, receive, send)
