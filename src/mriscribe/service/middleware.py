"""ASGI middleware: request ids, arrival times, the body's size cap and idle timeout, and one
access log line (and metrics observation) per request."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

from mriscribe.service.logs import request_id

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("mriscribe.access")

# A client's X-Request-ID is echoed only in this form; it may still hold a name, so it is never
# logged: logs carry the server's own id, which every response names in X-Server-Request-ID.
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
SERVER_ID_HEADER = b"x-server-request-id"
_ARRIVAL = "mriscribe_arrival"
# Where the API-key check leaves the id (public) of the key a request used, for the log.
KEY_ID_STATE = "mriscribe_key_id"
# Paths logged as they are; any other path is client text (a 404 for /analyze/Doe_John).
_KNOWN_PATHS = frozenset(
    {"/", "/health", "/analyze", "/analyze-json", "/docs", "/openapi.json", "/metrics"}
)
# Told of each finished request: its scope (with the matched route), status and seconds.
Observer = Callable[[Scope, int, float], None]


class BodyTooLargeError(Exception):
    """The request body passed the configured limit while it was being received."""


class BodyIdleError(Exception):
    """The client paused longer than the idle timeout while sending the request body."""


class BodySlowError(Exception):
    """The request body was still arriving when the body timeout, counted from arrival, ran out."""


def arrival_time(scope: Scope) -> float:
    """When the middleware first saw the request, on the ``time.monotonic()`` clock."""
    return float(scope.get("state", {}).get(_ARRIVAL, time.monotonic()))


class RequestContextMiddleware:
    """Gives each request the server's own id (logged, and sent in X-Server-Request-ID) and
    echoes the client's X-Request-ID if it is in a safe form, else the server's; records the
    arrival time; refuses bodies over ``max_body_bytes`` with 413 (by Content-Length up front,
    and by counting while receiving), and with 408 bodies that pause for more than
    ``idle_timeout_s`` or are still arriving ``body_timeout_s`` after the request did (a client
    trickling bytes would otherwise hold its admission place for ever); logs one line a
    request (with the id, never the key, of the API key it used) and hands it to
    ``observe`` (the metrics)."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        idle_timeout_s: float = 30.0,
        body_timeout_s: float = 300.0,
        slack_bytes: int = 1024 * 1024,
        observe: Observer | None = None,
    ) -> None:
        self.app = app
        self.observe = observe
        self.max_body_bytes = max_body_bytes
        self.idle_timeout_s = idle_timeout_s
        self.body_timeout_s = body_timeout_s
        # Multipart framing adds a little to the files' own bytes; the upload checks those.
        self.slack_bytes = slack_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(
            scope,
            receive,
            send,
            max_bytes=self.max_body_bytes + self.slack_bytes,
            idle_timeout_s=self.idle_timeout_s,
            body_timeout_s=self.body_timeout_s,
        )
        token = request_id.set(exchange.server_id)
        try:
            await self._serve(exchange)
        finally:
            seconds = exchange.log_access()
            if self.observe is not None:
                self.observe(exchange.scope, exchange.status, seconds)
            request_id.reset(token)

    async def _serve(self, exchange: _Exchange) -> None:
        if exchange.declared_length() > exchange.max_bytes:
            await exchange.fail(413, _too_large(self.max_body_bytes))
            return
        try:
            await self.app(exchange.scope, exchange.receive, exchange.send)
        except BodyTooLargeError:
            await exchange.fail(413, _too_large(self.max_body_bytes))
        except BodyIdleError:
            await exchange.fail(
                408, f"the request body paused for more than {self.idle_timeout_s:g} s"
            )
        except BodySlowError:
            await exchange.fail(
                408, f"the request body took more than {self.body_timeout_s:g} s to arrive"
            )
        except Exception:  # the last guard: logged here, with this request's id
            log.exception("unexpected failure")
            await exchange.fail(500, f"internal error: logged with request id {exchange.server_id}")


class _Exchange:
    """One request on its way through: its ids, the body received so far, the response status."""

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        max_bytes: int,
        idle_timeout_s: float,
        body_timeout_s: float,
    ) -> None:
        arrived = time.monotonic()
        scope.setdefault("state", {})[_ARRIVAL] = arrived
        self.scope = scope
        self.max_bytes = max_bytes
        self.idle_timeout_s = idle_timeout_s
        self.body_deadline = arrived + body_timeout_s
        self.headers = dict(scope.get("headers") or [])
        self.server_id = uuid.uuid4().hex
        self.client_id = _client_id(self.headers.get(b"x-request-id", b""))
        self.started = time.perf_counter()
        self.status = 500
        self.responding = False
        self.received = 0
        self.body_done = False
        self._receive = receive
        self._send = send

    def declared_length(self) -> int:
        length = self.headers.get(b"content-length", b"")
        return int(length) if length.isdigit() else 0

    async def receive(self) -> Message:
        """The next message; BodyIdleError if the body pauses too long, BodySlowError if it is
        still arriving at the body deadline, BodyTooLargeError once it passes the cap."""
        if self.body_done:
            return await self._receive()
        left = self.body_deadline - time.monotonic()
        with anyio.move_on_after(min(self.idle_timeout_s, max(0.0, left))):
            message = await self._receive()
            self._count(message)
            return message
        raise BodyIdleError if left > self.idle_timeout_s else BodySlowError

    def _count(self, message: Message) -> None:
        if message["type"] != "http.request":  # the client went away
            self.body_done = True
            return
        self.received += len(message.get("body", b""))
        self.body_done = not message.get("more_body", False)
        if self.received > self.max_bytes:
            raise BodyTooLargeError

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.responding = True
            echoed = (self.client_id or self.server_id).encode("ascii")
            message["headers"] = [
                *message.get("headers", []),
                (b"x-request-id", echoed),
                (SERVER_ID_HEADER, self.server_id.encode("ascii")),
            ]
        await self._send(message)

    async def fail(self, status: int, error: str) -> None:
        """Answer with a JSON error and close the connection, unless a response has begun."""
        if self.responding:
            return
        body = json.dumps({"error": error}).encode()
        await self.send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await self.send({"type": "http.response.body", "body": body})

    def log_access(self) -> float:
        """Log the access line; the request's duration in seconds."""
        seconds = time.perf_counter() - self.started
        path = str(self.scope.get("path", ""))
        if path not in _KNOWN_PATHS:
            path = "/docs-assets/..." if path.startswith("/docs-assets/") else "(other)"
        extra: dict[str, object] = {
            "method": self.scope.get("method"),
            "path": path,
            "status": self.status,
            "duration_ms": round(seconds * 1000, 2),
            "request_bytes": self.received,
        }
        key_id = self.scope.get("state", {}).get(KEY_ID_STATE)
        if key_id is not None:
            extra["key_id"] = key_id
        log.info("request", extra=extra)
        return seconds


def _client_id(header: bytes) -> str | None:
    """The client's request id if it is in the safe form, else None (a new id is used)."""
    value = header.decode("latin-1")
    return value if SAFE_REQUEST_ID.fullmatch(value) else None


def _too_large(limit: int) -> str:
    return f"request is larger than the limit of {limit:,} bytes"
