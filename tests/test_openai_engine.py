"""The openai engine's deadline and grammar against real servers on 127.0.0.1: raw sockets that
stall or trickle, a tiny HTTP server that refuses the grammar field, and llama-cpp-python's own
server (``python -m llama_cpp.server``) decoding under the grammar."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from conftest import SIMPLE
from mriscribe.report.engines import Constraint, DeadlineExceededError, GenerationError, Prompt
from mriscribe.report.engines.openai import OpenAIEngine, load
from mriscribe.report.writer import ReportWriter
from mriscribe.settings import LanguageModel, Settings

# The deadline bound the engine promises: the deadline plus scheduling slack.
SLACK_S = 0.2

GLIOMA = Constraint(
    answers=(
        "Image 1 shows a suspected glioma measuring 31.5 x 24.0 mm.",
        "On image 1 there is a suspected glioma measuring 31.5 x 24.0 mm.",
    ),
    gbnf='root ::= "Image 1 shows a suspected glioma measuring 31.5 x 24.0 mm." | '
    '"On image 1 there is a suspected glioma measuring 31.5 x 24.0 mm."\n',
)
GLIOMA_PROMPT = Prompt(
    prefix="Write one sentence of a brain MRI report for each line of facts.\n\n",
    request="Facts: image 1, glioma (suspected), 31.5 x 24.0 mm.\nSentence:",
    stop=("\n",),
    constraint=GLIOMA,
)


# Servers that stall or trickle -----------------------------------------------------------------

_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n"
_EVENT = (
    b'data: {"id": "x", "object": "text_completion", "created": 0, "model": "m", '
    b'"choices": [{"index": 0, "text": "Image 1 shows", "finish_reason": null}]}\n\n'
)


class SlowServer:
    """A raw TCP server on 127.0.0.1 that reads each HTTP request and then, by ``mode``:
    "silent" never answers; "headers" sends the status line and trickles the header lines one
    byte every ``interval`` seconds; "body" sends the status line and headers at once and
    trickles the body (a server-sent event) likewise. It gives up after ``give_up_s`` (so a
    client without a total deadline comes back late rather than never)."""

    def __init__(self, mode: str, interval: float = 1.0, give_up_s: float = 20.0) -> None:
        self.mode = mode
        self.interval = interval
        self.give_up_s = give_up_s
        self.requests = 0
        self._stop = threading.Event()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen()
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/v1"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            try:
                _read_request(connection)
                self.requests += 1
                if self.mode == "headers":
                    connection.sendall(b"HTTP/1.1 200 OK\r\n")
                    trickle = b"X-Slow: " + b"a" * 10_000 + b"\r\n\r\n"
                elif self.mode == "body":
                    connection.sendall(_HEAD + b"\r\n")
                    trickle = _EVENT * 100
                else:
                    trickle = b""
                given_up = time.monotonic() + self.give_up_s
                for byte in trickle:
                    if self._stop.wait(self.interval) or time.monotonic() > given_up:
                        return
                    connection.sendall(bytes([byte]))
                self._stop.wait(max(0.0, given_up - time.monotonic()))
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._listener.close()


def _read_request(connection: socket.socket) -> bytes:
    """One HTTP request (head and a Content-Length body) off ``connection``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            raise OSError("the client went away")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            raise OSError("the client went away")
        body += chunk
    return body


@pytest.fixture
def slow_server(request: pytest.FixtureRequest) -> Iterator[SlowServer]:
    mode, interval = request.param
    server = SlowServer(mode, interval)
    yield server
    server.close()


MODES = [
    pytest.param(("silent", 1.0), id="no-answer"),
    pytest.param(("headers", 1.0), id="headers-1-byte-a-second"),
    pytest.param(("body", 1.0), id="body-1-byte-a-second"),
    # Faster than any per-read timeout the deadline could set: only a total bound stops these.
    pytest.param(("headers", 0.05), id="headers-20-bytes-a-second"),
    pytest.param(("body", 0.05), id="body-20-bytes-a-second"),
]


@pytest.mark.parametrize("slow_server", MODES, indirect=True)
def test_generate_returns_by_the_deadline_whatever_the_server_does(slow_server):
    engine = OpenAIEngine("m", slow_server.url, check=False)
    try:
        deadline = time.monotonic() + 0.7
        with pytest.raises(DeadlineExceededError) as caught:
            engine.generate(GLIOMA_PROMPT, deadline=deadline, max_new_tokens=32)
        assert time.monotonic() <= deadline + SLACK_S
        assert slow_server.requests == 1
        assert "127.0.0.1" not in str(caught.value)
    finally:
        engine.close()


@pytest.mark.parametrize(
    "slow_server",
    [pytest.param(("headers", 1.0), id="headers"), pytest.param(("body", 1.0), id="body")],
    indirect=True,
)
def test_five_reports_through_a_trickling_server_are_the_template_in_time(slow_server):
    engine = OpenAIEngine("m", slow_server.url, check=False)
    writer = ReportWriter(Settings(report_engine="chain", report_deadline_s=1.0), engines=[engine])
    try:
        for _ in range(5):
            started = time.monotonic()
            report = writer.write(SIMPLE, model_name="detector")
            assert time.monotonic() - started <= 1.0 + SLACK_S
            assert report.engine == "template"
            assert report.fallback_reason is not None
            assert "deadline" in report.fallback_reason
    finally:
        writer.close()


@pytest.mark.parametrize("slow_server", [("headers", 1.0)], indirect=True)
def test_abandoned_requests_do_not_hold_the_engine_busy(slow_server):
    """Each abandoned request's thread ends by its deadline too, so more requests than the
    engine has threads in flight still each get their own try, never 'busy'."""
    engine = OpenAIEngine("m", slow_server.url, check=False)
    try:
        for _ in range(6):
            with pytest.raises(DeadlineExceededError) as caught:
                engine.generate(GLIOMA_PROMPT, deadline=time.monotonic() + 0.4, max_new_tokens=8)
            assert "busy" not in str(caught.value)
        assert slow_server.requests == 6
    finally:
        engine.close()


def test_a_stalled_connect_returns_by_the_deadline():
    """A listener whose accept queue is full: the kernel drops further SYNs, so connect hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers: list[socket.socket] = []
    engine = OpenAIEngine("m", f"http://127.0.0.1:{address[1]}/v1", check=False)
    try:
        for _ in range(4):  # fill the queue (these connects themselves may or may not complete)
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(address)
            fillers.append(filler)
        time.sleep(0.1)
        deadline = time.monotonic() + 0.5
        with pytest.raises(DeadlineExceededError):
            engine.generate(GLIOMA_PROMPT, deadline=deadline, max_new_tokens=8)
        assert time.monotonic() <= deadline + SLACK_S
    finally:
        engine.close()
        for filler in fillers:
            filler.close()
        listener.close()


# A server that refuses the grammar field ----------------------------------------------------


class CompletionsServer:
    """A tiny real HTTP server on 127.0.0.1 with /v1/completions: HTTP 400 for a body that has
    any of ``refuse`` (all bodies when ``refuse`` is None), else a completion of ``answer``
    (streamed when asked). It keeps every request body it was sent."""

    def __init__(self, answer: str, refuse: tuple[str, ...] | None = ("grammar",)) -> None:
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                models = {"object": "list", "data": [{"id": "m", "object": "model"}]}
                self._send(200, "application/json", json.dumps(models).encode())

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.bodies.append(body)
                if refuse is None or any(field in body for field in refuse):
                    self._send(400, "application/json", b'{"error": {"message": "bad field"}}')
                    return
                choice = {"index": 0, "text": answer, "finish_reason": "stop", "logprobs": None}
                reply = {"id": "c", "object": "text_completion", "created": 0, "model": "m"}
                if body.get("stream"):
                    events = [
                        {**reply, "choices": [{**choice, "finish_reason": None}]},
                        {**reply, "choices": [{**choice, "text": ""}]},
                    ]
                    data = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events)
                    self._send(200, "text/event-stream", data + b"data: [DONE]\n\n")
                else:
                    usage = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
                    data = json.dumps({**reply, "choices": [choice], "usage": usage}).encode()
                    self._send(200, "application/json", data)

            def _send(self, status: int, kind: str, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_a_server_that_refuses_the_grammar_gets_the_request_again_without_it(caplog):
    server = CompletionsServer(GLIOMA.answers[0])
    engine = OpenAIEngine("m", server.url, check=False)
    try:
        with caplog.at_level(logging.WARNING, logger="mriscribe.report.engines.openai"):
            first = engine.generate(GLIOMA_PROMPT, deadline=time.monotonic() + 1, max_new_tokens=32)
            second = engine.generate(
                GLIOMA_PROMPT, deadline=time.monotonic() + 1, max_new_tokens=32
            )
        assert first.text == second.text == GLIOMA.answers[0]
        assert first.finish_reason == "stop"
        assert first.completion_tokens == 1  # no usage when streaming: the chunks with text
        assert [("grammar" in body) for body in server.bodies] == [True, False, False]
        assert server.bodies[0]["grammar"] == GLIOMA.gbnf
        assert all(body["stream"] is True for body in server.bodies)
        assert not engine.sends_grammar
        refusals = [r for r in caplog.records if "grammar" in r.getMessage()]
        assert len(refusals) == 1  # logged once
        assert "127.0.0.1" not in refusals[0].getMessage()
        assert "bad field" not in refusals[0].getMessage()
    finally:
        engine.close()
        server.close()


def test_a_request_refused_without_the_grammar_too_keeps_the_grammar():
    server = CompletionsServer(GLIOMA.answers[0], refuse=None)
    engine = OpenAIEngine("m", server.url, check=False)
    try:
        with pytest.raises(GenerationError) as caught:
            engine.generate(GLIOMA_PROMPT, deadline=time.monotonic() + 1, max_new_tokens=32)
        assert str(caught.value) == "the server answered with an error (HTTP 400)"
        assert not isinstance(caught.value, DeadlineExceededError)
        assert [("grammar" in body) for body in server.bodies] == [True, False]
        assert engine.sends_grammar  # the grammar was not why
    finally:
        engine.close()
        server.close()


@pytest.mark.parametrize("field", ["guided_grammar", None])
def test_the_grammar_goes_in_the_field_the_link_names(field):
    server = CompletionsServer(GLIOMA.answers[1])
    spec = LanguageModel(engine="openai", model="m", base_url=server.url, grammar_field=field)
    engine = load(spec)
    try:
        generation = engine.generate(
            GLIOMA_PROMPT, deadline=time.monotonic() + 1, max_new_tokens=32
        )
        assert generation.text == GLIOMA.answers[1]
        (body,) = server.bodies
        assert "grammar" not in body
        if field is None:
            assert not any("grammar" in key for key in body)
        else:
            assert body[field] == GLIOMA.gbnf
    finally:
        engine.close()
        server.close()


def test_an_empty_grammar_field_in_a_config_file_sends_none():
    assert LanguageModel(engine="openai", grammar_field="").grammar_field is None
    assert LanguageModel(engine="openai").grammar_field == "grammar"


def test_a_prompt_without_a_constraint_sends_no_grammar():
    server = CompletionsServer("Image 1 shows a suspected glioma.")
    engine = OpenAIEngine("m", server.url, check=False)
    try:
        plain = Prompt(GLIOMA_PROMPT.prefix, GLIOMA_PROMPT.request, ("\n",))
        engine.generate(plain, deadline=time.monotonic() + 1, max_new_tokens=32)
        (body,) = server.bodies
        assert "grammar" not in body
        assert engine.sends_grammar
    finally:
        engine.close()
        server.close()


# llama-cpp-python's own server -----------------------------------------------------------------


# A shared server may queue requests; the text, not the time, is the point of these.
_PATIENT_S = 120.0


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_the_real_server_decodes_under_the_grammar(llama_server, api):
    engine = OpenAIEngine("gemma-3-270m", llama_server, api=api)
    try:
        generation = engine.generate(
            GLIOMA_PROMPT, deadline=time.monotonic() + _PATIENT_S, max_new_tokens=48
        )
        assert generation.text in GLIOMA.answers
        assert generation.finish_reason == "stop"
        assert generation.completion_tokens > 0
        assert engine.sends_grammar
    finally:
        engine.close()


def test_the_real_server_gets_no_grammar_when_the_field_is_none(llama_server):
    """A grammar no greedy continuation would follow: the text obeys it exactly when it is
    sent, and does not when ``grammar_field`` is None."""
    odd = Constraint(answers=("Zebra quartz 77.",), gbnf='root ::= "Zebra quartz 77."\n')
    prompt = Prompt(GLIOMA_PROMPT.prefix, GLIOMA_PROMPT.request, ("\n",), odd)
    texts = {}
    for field in ("grammar", None):
        engine = OpenAIEngine("gemma-3-270m", llama_server, grammar_field=field)
        try:
            texts[field] = engine.generate(
                prompt, deadline=time.monotonic() + _PATIENT_S, max_new_tokens=16
            ).text
        finally:
            engine.close()
    assert texts["grammar"] == "Zebra quartz 77."
    assert texts[None] != "Zebra quartz 77."


def test_the_real_server_cut_at_max_tokens_is_length(llama_server):
    engine = OpenAIEngine("gemma-3-270m", llama_server)
    try:
        plain = Prompt(GLIOMA_PROMPT.prefix, GLIOMA_PROMPT.request, ())
        generation = engine.generate(
            plain, deadline=time.monotonic() + _PATIENT_S, max_new_tokens=2
        )
        assert generation.finish_reason == "length"
        assert 0 < generation.completion_tokens <= 2
    finally:
        engine.close()
