"""The cut between a report and a language model: a prompt and a deadline in, text out.

A ``ReportEngine`` takes a prompt (a fixed prefix shared by every request, then the request's
own facts), a deadline on the ``time.monotonic()`` clock and a bound on new tokens, decodes
greedily, and returns the text with why it stopped. It must stop at the deadline (raising
``DeadlineExceededError``); the chain also stops waiting then, so an engine that overruns only
delays the next request, never this one. It knows nothing of studies, facts or verification.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar, runtime_checkable

from mriscribe.errors import MriscribeError

T = TypeVar("T")


class EngineLoadError(MriscribeError):
    """A language model cannot be loaded (missing package, file or server)."""


class GenerationError(MriscribeError):
    """A language model failed while writing."""


class DeadlineExceededError(GenerationError):
    """The deadline passed before the text was complete."""


@dataclass(frozen=True)
class Constraint:
    """What the answer may be, from the report grammar bound to one request's facts: every
    complete answer it allows (a small finite set), and the same language as a llama.cpp GBNF
    grammar for servers that decode under one. An engine that cannot constrain its decoding
    ignores it; the verifier then checks the text as it does any other."""

    answers: tuple[str, ...]
    gbnf: str


@dataclass(frozen=True)
class Prompt:
    """The fixed prefix (evaluated once and reused where the engine can), the request's own
    part, the strings that end the answer, and what the answer may be (``constraint``)."""

    prefix: str
    request: str
    stop: tuple[str, ...] = ()
    constraint: Constraint | None = None
    # The request for an engine that decodes inside the constraint: the facts the constraint
    # forces are left out, as reading them would only cost time (None: ``request``).
    constrained_request: str | None = None

    @property
    def text(self) -> str:
        return self.prefix + self.request


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: Literal["stop", "length"]  # "length": max_new_tokens reached (cut off)
    prompt_tokens: int = 0
    completion_tokens: int = 0


@runtime_checkable
class ReportEngine(Protocol):
    """A loaded language model. ``name`` says which (shown in the JSON, the PDF and /health)."""

    name: str

    def count_tokens(self, text: str) -> int:
        """The number of tokens ``text`` takes (an upper estimate where no tokenizer is local)."""
        ...

    def generate(self, prompt: Prompt, *, deadline: float, max_new_tokens: int) -> Generation:
        """Greedy continuation of ``prompt.text``, ending at a stop string or max_new_tokens;
        DeadlineExceededError once ``time.monotonic()`` passes ``deadline``, GenerationError on any
        other failure."""
        ...

    def close(self) -> None:
        """Free the model (memory, connections)."""
        ...


class ModelTurn:
    """One request at a time on a model (llama.cpp's context is not thread-safe, and one decode
    already uses every thread given to it). A request waits for its turn no later than its own
    deadline, and not at all behind a request that has passed its deadline (a stuck or overrun
    generation): then it fails at once and its report is the template."""

    _POLL_S = 0.02

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holder_deadline: float | None = None

    def run(self, deadline: float, library: str, work: Callable[[], T]) -> T:
        """Run ``work`` in turn; a library's own exceptions become GenerationError."""
        while not self._lock.acquire(timeout=self._POLL_S):
            now = time.monotonic()
            holder = self._holder_deadline
            if holder is not None and now > holder:
                raise DeadlineExceededError(
                    "the model is still busy with an earlier request that passed its deadline"
                )
            if now >= deadline:
                raise DeadlineExceededError("the model was still busy with an earlier request")
        if time.monotonic() >= deadline:  # a late or abandoned request starts no work at all
            self._lock.release()
            raise DeadlineExceededError("the deadline passed before the model was free")
        self._holder_deadline = deadline
        try:
            return work()
        except GenerationError:
            raise
        except Exception as exc:  # model libraries raise assorted exception types; their
            # messages quote paths and values, so only the type goes on
            raise GenerationError(f"{library} failed ({type(exc).__name__})") from None
        finally:
            self._holder_deadline = None
            self._lock.release()

    def __enter__(self) -> None:  # for close(): wait for the running request, however long
        self._lock.acquire()

    def __exit__(self, *_: object) -> None:
        self._lock.release()


def generate_all(
    engine: ReportEngine, prompts: Sequence[Prompt], *, deadline: float, max_new_tokens: int
) -> list[Generation]:
    """The answers to several prompts that share a prefix (the lines of one report): side by
    side where the engine can (``engine.generate_all``), else one after another."""
    together = getattr(engine, "generate_all", None)
    if callable(together):
        answers: list[Generation] = together(
            prompts, deadline=deadline, max_new_tokens=max_new_tokens
        )
        return answers
    return [
        engine.generate(prompt, deadline=deadline, max_new_tokens=max_new_tokens)
        for prompt in prompts
    ]
