"""The HTTP server: uvicorn with a header timeout and JSON answers to requests it cannot parse."""

from __future__ import annotations

import asyncio
import json
import logging
import re

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol
from uvicorn.server import ServerState

from mriscribe.service.app import create_app
from mriscribe.service.auth import check_exposure
from mriscribe.service.memory import tune_allocator
from mriscribe.settings import Settings

log = logging.getLogger("mriscribe.service")

# A request line and headers larger than this are refused (431) before they are complete.
MAX_HEAD_BYTES = 16 * 1024
# The part of an h11 error message before anything it quotes from the request.
_QUOTED = re.compile(r"\s*(?:[:({]|\bb['\"]|\bbytearray\b)")


def prepare(settings: Settings) -> FastAPI:
    """The app for ``settings``, or SettingsError (naming the setting) before anything listens:
    if it would be reachable beyond loopback without API keys (unless allowed), or its keys,
    their secret, the rate limits or the CORS origins are misconfigured."""
    check_exposure(settings)
    return create_app(settings)


def run(settings: Settings, app: FastAPI | None = None) -> None:
    """Serve ``app`` (default: the app for ``settings``) until stopped (logging is the
    caller's to configure).

    uvicorn's ``limit_concurrency`` stays off: it counts idle keep-alive connections and answers
    in plain text. Load is bounded instead by the app's admission (JSON 503 with Retry-After)
    and by the header timeout, which frees connections that never complete a request.
    """
    if app is None:
        app = prepare(settings)
    tune_allocator()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        proxy_headers=True,
        forwarded_allow_ips=settings.trusted_proxies,
        http=protocol_class(settings.header_timeout_s),
        ws="none",  # the service has no WebSocket routes: upgrade requests are plain HTTP
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


def protocol_class(header_timeout_s: float) -> type[GuardedH11Protocol]:
    """The HTTP protocol for uvicorn's ``http=``, with this header timeout."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"header_timeout_s": header_timeout_s})


class _Connection(h11.Connection):
    """An h11 connection that keeps the protocol error it last raised, for the answer to name."""

    last_error: h11.RemoteProtocolError | None = None

    def next_event(self) -> object:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.last_error = exc
            raise


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus: a connection must complete each request's line and headers
    within ``header_timeout_s`` of opening or of its last response, else it is closed (a client
    trickling bytes can no longer hold it forever); and a request h11 rejects (a bad
    Content-Length, a malformed line) gets a JSON error, like every other error."""

    header_timeout_s: float = 10.0

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, object],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.conn = _Connection(h11.SERVER, config.h11_max_incomplete_event_size or MAX_HEAD_BYTES)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:
            self._cancel_header_timer()  # a request's head is complete

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Unless a pipelined request has already begun, the next one has its own time.
        if not self.transport.is_closing() and self.cycle.response_complete:
            self._arm_header_timer()

    def send_400_response(self, msg: str) -> None:
        error = self.conn.last_error
        status = error.error_status_hint if error is not None else 400
        body = json.dumps({"error": f"invalid HTTP request: {_reason(error)}"}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        events = (
            h11.Response(status_code=status, headers=headers, reason=STATUS_PHRASES[status]),
            h11.Data(data=body),
            h11.EndOfMessage(),
        )
        try:
            for event in events:
                self.transport.write(self.conn.send(event) or b"")
        except h11.LocalProtocolError:  # a response had begun: nothing more can be said
            pass
        self.transport.close()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            log.info("connection closed: no complete request within the header timeout")
            self.transport.close()


def _reason(error: h11.RemoteProtocolError | None) -> str:
    """What h11 found wrong, without anything it quotes from the request."""
    text = _QUOTED.split(str(error or ""), maxsplit=1)[0]
    text = "".join(ch for ch in text if ch.isascii() and ch.isprintable()).strip()[:100]
    return text or "malformed request"
