"""ASGI middleware: a request id and an access log line per request, and the request size cap."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mriscribe.service.logs import request_id

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("mriscribe.access")


class BodyTooLargeError(Exception):
    """The request body passed the configured limit while it was being received."""


class RequestContextMiddleware:
    """Gives each request an id (the client's X-Request-ID if sane, else a new one), echoes it
    in the response, refuses bodies over ``max_body_bytes`` with 413 (by Content-Length up front,
    and by counting while receiving), and logs one line per request."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, slack_bytes: int = 1024 * 1024) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # Multipart framing adds a little to the files' own bytes; the pipeline checks those.
        self.slack_bytes = slack_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        status = {"code": 500, "started": False}
        limit = self.max_body_bytes + self.slack_bytes
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError
            return message

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["started"] = True
                message.setdefault("headers", [])
                message["headers"].append((b"x-request-id", rid.encode("latin-1")))
            await send(message)

        try:
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                await _send_error(send_with_id, 413, _too_large(self.max_body_bytes))
                return
            try:
                await self.app(scope, counted_receive, send_with_id)
            except BodyTooLargeError:
                if not status["started"]:
                    await _send_error(send_with_id, 413, _too_large(self.max_body_bytes))
            except Exception:  # the last guard: logged here, with this request's id
                log.exception("unexpected failure")
                if not status["started"]:
                    await _send_error(
                        send_with_id,
                        500,
                        f"internal error: logged with request id {rid}",
                    )
        finally:
            log.info(
                "request",
                extra={
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "status": status["code"],
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "request_bytes": received,
                },
            )
            request_id.reset(token)


def _too_large(limit: int) -> str:
    return f"request is larger than the limit of {limit:,} bytes"


async def _send_error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
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
    await send({"type": "http.response.body", "body": body})
