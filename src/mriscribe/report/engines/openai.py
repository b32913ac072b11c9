"""Any OpenAI-compatible server (vLLM, llama.cpp's server, Ollama, TGI) through the ``openai``
client (the ``openai`` extra): how a deployment moves the language model to a GPU server.

The request carries the whole prompt; servers that cache prompt prefixes (llama.cpp, vLLM)
then evaluate only the new part. The deadline is the HTTP timeout, with no retries.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from mriscribe.report.engines.base import (
    DeadlineExceededError,
    EngineLoadError,
    Generation,
    GenerationError,
    Prompt,
)
from mriscribe.settings import LanguageModel

DEPENDENCIES = ("openai",)
EXTRA = "openai"
_CONNECT_CHECK_S = 10.0


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
        check: bool = True,
    ) -> None:
        import openai

        self._openai = openai
        self.model = model
        self.api = api
        self.name = f"openai:{model}"
        self._client: Any = openai.OpenAI(
            base_url=base_url, api_key=api_key or "none", max_retries=0
        )
        self._closed = threading.Event()
        if check:
            self._check()

    def _check(self) -> None:
        """Fail at load, not at the first report, when the server or model is not there."""
        try:
            models = self._client.models.list(timeout=_CONNECT_CHECK_S)
        except self._openai.APIError as exc:
            raise EngineLoadError(f"the server {_failure(exc)}") from None
        names = [m.id for m in models.data]
        if names and self.model not in names and len(names) > 1:
            raise EngineLoadError(f"the server has no model '{self.model}'")

    def count_tokens(self, text: str) -> int:
        return len(text) // 3 + 1

    def generate(self, prompt: Prompt, *, deadline: float, max_new_tokens: int) -> Generation:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceededError("the deadline passed before the request was sent")
        openai = self._openai
        options: dict[str, Any] = {
            "model": self.model,
            "max_tokens": max_new_tokens,
            "temperature": 0.0,
            "top_p": 1.0,
            "n": 1,
            "stop": list(prompt.stop)[:4],
            "timeout": remaining,
        }
        try:
            if self.api == "chat":
                reply = self._client.chat.completions.create(
                    messages=[{"role": "user", "content": prompt.text}], **options
                )
                choice = reply.choices[0]
                text = choice.message.content or ""
            else:
                reply = self._client.completions.create(prompt=prompt.text, **options)
                choice = reply.choices[0]
                text = choice.text or ""
        except openai.APITimeoutError:
            raise DeadlineExceededError("the server did not answer before the deadline") from None
        except openai.APIError as exc:
            raise GenerationError(f"the server {_failure(exc)}") from None
        usage = reply.usage
        return Generation(
            text=text,
            finish_reason="length" if choice.finish_reason == "length" else "stop",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )

    def close(self) -> None:
        self._client.close()


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
        spec.model, spec.base_url, api_key=os.environ.get(spec.api_key_env), api=spec.api
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
