"""Any OpenAI-compatible server (vLLM, llama.cpp's server, Ollama, TGI) through the ``openai``
client (the ``openai`` extra): how a deployment moves the language model to a GPU server.

The request carries the whole prompt; servers that cache prompt prefixes (llama.cpp, vLLM)
then evaluate only the new part. Where the prompt carries the report grammar
(``prompt.constraint``), the request carries it too, as GBNF in the body field the link names
(``grammar_field``: "grammar" for llama.cpp's server, "guided_grammar" for vLLM), so the server
can decode only what the grammar allows. A server that refuses a request with that field (HTTP
400 or 422) gets it once more without, in the same deadline, and never again from this engine;
the verifier checks the text either way.

The deadline bounds the whole response, not each read: the completion is streamed and the
deadline checked between chunks; the exchange runs on a thread of its own (at most
``_MAX_IN_FLIGHT`` at once) while the caller waits for it no later than the deadline; and every
connect, read and write of that thread ends by the deadline, so a server that stalls, never
answers or trickles its headers or body a byte at a time frees the thread then too. With every
thread still held by earlier requests, a request fails at once rather than queueing. No retries
otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from mriscribe.report.engines.base import (
    DeadlineExceededError,
    EngineLoadError,
    Generation,
    GenerationError,
    Prompt,
)
from mriscribe.settings import LanguageModel

log = logging.getLogger(__name__)

DEPENDENCIES = ("openai",)
EXTRA = "openai"
_CONNECT_CHECK_S = 10.0
# Requests of one engine in flight at once, abandoned ones included (each on its own thread).
_MAX_IN_FLIGHT = 4
# The shortest wait a socket operation is given once its request's deadline has passed: long
# enough to take what has already arrived, too short to wait for more.
_MIN_IO_S = 0.001
_LATE = "the server did not finish before the deadline"

# The deadline (time.monotonic()) of the request the current thread is exchanging, if any.
_thread_deadline = threading.local()


class OpenAIEngine:
    """A model on a server. Token counts are estimated (three characters a token, an upper
    bound for report text), since the server's tokenizer is not here."""

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key: str | None = None,
        api: str = "completions",
        grammar_field: str | None = "grammar",
        check: bool = True,
    ) -> None:
        import openai

        self._openai = openai
        self.model = model
        self.api = api
        self.name = f"openai:{model}"
        self.grammar_field = grammar_field
        self._grammar_refused = False
        self._grammar_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(_MAX_IN_FLIGHT)
        self._client: Any = openai.OpenAI(
            base_url=base_url, api_key=api_key or "none", max_retries=0
        )
        # Where the client's connection pools are not where httpx keeps them, the caller still
        # returns by the deadline; only an abandoned thread may then outlive it.
        self.io_bounded = _bound_io_by_deadline(self._client)
        if not self.io_bounded:
            log.warning(
                "the HTTP client's connections could not be bound by the report deadline; "
                "reports still return by it, but an abandoned request may hold a thread longer",
                extra={"model": self.name},
            )
        if check:
            self._check()

    def _check(self) -> None:
        """Fail at load, not at the first report, when the server or model is not there."""
        _thread_deadline.value = time.monotonic() + _CONNECT_CHECK_S  # the whole check
        try:
            models = self._client.models.list(timeout=_CONNECT_CHECK_S)
        except self._openai.APIError as exc:
            raise EngineLoadError(f"the server {_failure(exc)}") from None
        finally:
            _thread_deadline.value = None
        names = [m.id for m in models.data]
        if names and self.model not in names and len(names) > 1:
            raise EngineLoadError(f"the server has no model '{self.model}'")

    def count_tokens(self, text: str) -> int:
        return len(text) // 3 + 1

    @property
    def sends_grammar(self) -> bool:
        """Whether a prompt's constraint goes to the server (a field is set, and the server has
        not refused it)."""
        return self.grammar_field is not None and not self._grammar_refused

    def generate(self, prompt: Prompt, *, deadline: float, max_new_tokens: int) -> Generation:
        if time.monotonic() >= deadline:
            raise DeadlineExceededError("the deadline passed before the request was sent")
        if not self._slots.acquire(blocking=False):
            raise DeadlineExceededError("the server is still busy with earlier requests")
        request = _Request(deadline)
        worker = threading.Thread(
            target=self._run,
            args=(request, prompt, max_new_tokens),
            name="openai-request",
            daemon=True,  # an abandoned exchange never holds up the process's exit
        )
        try:
            worker.start()
        except BaseException:
            self._slots.release()
            raise
        try:
            return request.future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            request.abandon()
            raise DeadlineExceededError(_LATE) from None

    def _run(self, request: _Request, prompt: Prompt, max_new_tokens: int) -> None:
        """The exchange, on its own thread: every socket operation ends by the deadline."""
        _thread_deadline.value = request.deadline
        error: BaseException | None = None
        generation: Generation | None = None
        try:
            generation = self._exchange(request, prompt, max_new_tokens)
        except BaseException as exc:  # handed to the caller, who maps it
            error = exc
        finally:
            _thread_deadline.value = None
            self._slots.release()
        if error is not None:
            request.future.set_exception(error)
        else:
            request.future.set_result(generation)

    def _exchange(self, request: _Request, prompt: Prompt, max_new_tokens: int) -> Generation:
        """One answer, in our errors: their messages never quote the server's address, its
        reply or the prompt."""
        openai = self._openai
        try:
            return self._answer(request, prompt, max_new_tokens)
        except GenerationError:
            raise
        except Exception as exc:
            if (
                isinstance(exc, openai.APITimeoutError)
                or request.abandoned
                or time.monotonic() >= request.deadline
            ):
                raise DeadlineExceededError(_LATE) from None
            if isinstance(exc, openai.APIError):
                raise GenerationError(f"the server {_failure(exc)}") from None
            raise GenerationError(f"the server's answer failed ({type(exc).__name__})") from None

    def _answer(self, request: _Request, prompt: Prompt, max_new_tokens: int) -> Generation:
        """With the grammar where there is one to send; a server that refuses the request with
        it gets it once more without, and no grammar after that answer comes back."""
        constraint = prompt.constraint
        field = self.grammar_field
        if constraint is None or field is None or self._grammar_refused:
            return self._attempt(request, prompt, max_new_tokens, None)
        refusals = (self._openai.BadRequestError, self._openai.UnprocessableEntityError)
        try:
            return self._attempt(request, prompt, max_new_tokens, {field: constraint.gbnf})
        except refusals:
            pass
        result = self._attempt(request, prompt, max_new_tokens, None)
        # Refused with the grammar and answered without it: this server does not take it.
        self._refuse_grammar()
        return result

    def _refuse_grammar(self) -> None:
        with self._grammar_lock:
            if self._grammar_refused:
                return
            self._grammar_refused = True
        log.warning(
            "the language model server refused the report grammar; requests go without it and "
            "the verifier checks the text",
            extra={"model": self.name, "grammar_field": self.grammar_field},
        )

    def _attempt(
        self,
        request: _Request,
        prompt: Prompt,
        max_new_tokens: int,
        extra_body: dict[str, str] | None,
    ) -> Generation:
        remaining = request.deadline - time.monotonic()
        if remaining <= 0 or request.abandoned:
            raise DeadlineExceededError("the deadline passed before the request was sent")
        options: dict[str, Any] = {
            "model": self.model,
            "max_tokens": max_new_tokens,
            "temperature": 0.0,
            "top_p": 1.0,
            "n": 1,
            "stop": list(prompt.stop)[:4],
            "stream": True,
            "timeout": remaining,
        }
        if extra_body:
            options["extra_body"] = extra_body
        chat = self.api == "chat"
        if chat:
            stream = self._client.chat.completions.create(
                messages=[{"role": "user", "content": prompt.text}], **options
            )
        else:
            stream = self._client.completions.create(prompt=prompt.text, **options)
        request.hold(stream)
        with stream:
            return _collect(stream, request, chat=chat)

    def close(self) -> None:
        self._client.close()


class _Request:
    """One exchange: its deadline, its result, and whether the caller has stopped waiting."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.future: Future[Generation] = Future()
        self._abandoned = threading.Event()
        self._lock = threading.Lock()
        self._stream: Any = None

    @property
    def abandoned(self) -> bool:
        return self._abandoned.is_set()

    def hold(self, stream: Any) -> None:
        """The response being read, for ``abandon`` to close; closed at once if too late."""
        with self._lock:
            self._stream = stream
        if self.abandoned:
            _close_quietly(stream)

    def abandon(self) -> None:
        """The caller has stopped waiting: close the response (best effort; the thread's own
        reads end by the deadline anyway) so the server sees the client go."""
        self._abandoned.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            _close_quietly(stream)


def _close_quietly(stream: Any) -> None:
    # Closing a response another thread reads: whatever that raises is moot.
    with contextlib.suppress(Exception):
        stream.close()


def _collect(chunks: Iterable[Any], request: _Request, *, chat: bool) -> Generation:
    """The streamed answer put together, checking the deadline between chunks. Servers that do
    not report usage when streaming get the number of chunks with text as the completion's
    tokens (one token a chunk, as llama.cpp and vLLM stream) and 0 for the prompt's."""
    pieces: list[str] = []
    finish: str | None = None
    usage: Any = None
    for chunk in chunks:
        if request.abandoned or time.monotonic() >= request.deadline:
            raise DeadlineExceededError(_LATE)
        usage = getattr(chunk, "usage", None) or usage
        for choice in getattr(chunk, "choices", None) or ():
            if getattr(choice, "index", 0) != 0:
                continue
            if chat:
                piece = getattr(getattr(choice, "delta", None), "content", None)
            else:
                piece = getattr(choice, "text", None)
            if piece:
                pieces.append(piece)
            finish = getattr(choice, "finish_reason", None) or finish
    if finish is None:
        raise GenerationError("the server's answer broke off before its end")
    return Generation(
        text="".join(pieces),
        finish_reason="length" if finish == "length" else "stop",
        prompt_tokens=getattr(usage, "prompt_tokens", None) or 0,
        completion_tokens=getattr(usage, "completion_tokens", None) or len(pieces),
    )


# Every socket operation of a request's thread ends by its deadline --------------------------


def _bounded(timeout: float | None) -> float | None:
    """``timeout`` cut to the time left before the current thread's request deadline."""
    deadline: float | None = getattr(_thread_deadline, "value", None)
    if deadline is None:
        return timeout
    left = max(deadline - time.monotonic(), _MIN_IO_S)
    return left if timeout is None else min(timeout, left)


class _DeadlineStream:
    """A connection whose reads, writes and TLS handshake end by the deadline of whichever
    request's thread uses it (the client's own timeouts are per operation)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data: bytes = self._stream.read(max_bytes, _bounded(timeout))
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _bounded(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> _DeadlineStream:
        secure = self._stream.start_tls(ssl_context, server_hostname, _bounded(timeout))
        return _DeadlineStream(secure)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _DeadlineBackend:
    """The connection pool's network backend, its connects and connections deadline-bound."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, **options: Any
    ) -> _DeadlineStream:
        return _DeadlineStream(
            self._backend.connect_tcp(host, port, timeout=_bounded(timeout), **options)
        )

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, **options: Any
    ) -> _DeadlineStream:
        return _DeadlineStream(
            self._backend.connect_unix_socket(path, timeout=_bounded(timeout), **options)
        )

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


def _bound_io_by_deadline(client: Any) -> bool:
    """Put ``_DeadlineBackend`` under the openai client's connection pools (httpx's transports
    keep an httpcore pool, which keeps its network backend); False where they are not there.
    The pools make their connections through it, so it holds for reused connections too."""
    http = getattr(client, "_client", None)
    mounts = getattr(http, "_mounts", None) or {}
    bounded = False
    for transport in (getattr(http, "_transport", None), *mounts.values()):
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if backend is None or not hasattr(backend, "connect_tcp"):
            continue
        if not isinstance(backend, _DeadlineBackend):
            pool._network_backend = _DeadlineBackend(backend)
        bounded = True
    return bounded


def _failure(exc: Exception) -> str:
    """What went wrong with the server, in our words: its reply's body, its address and the
    client's message (which repeat what the server said) never reach a report or a log."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return f"answered with an error (HTTP {status})"
    if "Connection" in type(exc).__name__:
        return "could not be reached"
    return f"failed ({type(exc).__name__})"


def load(spec: LanguageModel, *, warm_prefix: str = "") -> OpenAIEngine:
    if not spec.base_url:
        raise EngineLoadError("the openai engine needs base_url (the server's /v1 URL)")
    engine = OpenAIEngine(
        spec.model,
        spec.base_url,
        api_key=os.environ.get(spec.api_key_env),
        api=spec.api,
        grammar_field=spec.grammar_field,
    )
    if warm_prefix:
        # One tiny request puts the prefix in the server's prompt cache (where it has one).
        try:
            engine.generate(
                Prompt(warm_prefix, "", ("\n",)), deadline=time.monotonic() + 30, max_new_tokens=1
            )
        except GenerationError as exc:
            raise EngineLoadError(f"a first request failed ({exc})") from None
    return engine
