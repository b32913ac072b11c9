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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from mriscribe.errors import MriscribeError


class EngineLoadError(MriscribeError):
    """A language model cannot be loaded (missing package, file or server)."""


class GenerationError(MriscribeError):
    """A language model failed while writing."""


class DeadlineExceededError(GenerationError):
    """The deadline passed before the text was complete."""


@dataclass(frozen=True)
class Prompt:
    """The fixed prefix (evaluated once and reused where the engine can), the request's own
    part, and the strings that end the answer."""

    prefix: str
    request: str
    stop: tuple[str, ...] = ()

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


def serialised(
    lock: threading.Lock, deadline: float, library: str, generate: Callable[[], Generation]
) -> Generation:
    """Run ``generate`` holding ``lock`` (a model serves one request at a time), waiting for it
    no later than ``deadline``; a library's own exceptions become GenerationError."""
    if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
        raise DeadlineExceededError("the model was still busy with an earlier request")
    if time.monotonic() >= deadline:  # a late or abandoned request starts no work at all
        lock.release()
        raise DeadlineExceededError("the deadline passed before the model was free")
    try:
        return generate()
    except GenerationError:
        raise
    except Exception as exc:  # model libraries raise assorted exception types; their messages
        # quote paths and values, so only the type goes on
        raise GenerationError(f"{library} failed ({type(exc).__name__})") from None
    finally:
        lock.release()
