"""Greedy decoding inside the report grammar, the lines of one report side by side (llama.cpp).

Each prompt carries the finite set of answers the grammar allows for its line. At each step a
sequence may continue only with the first token of one of its allowed continuations (as the
tokenizer spells them), and takes the one the model scores highest: the model chooses the words,
the grammar the facts. Where the allowed answers agree on what comes next, that span is appended
in one batch instead of token by token, and once one answer is left the sequence is complete
without evaluating it at all. Every line shares the cached prefix and the study's header: the
shared tokens are evaluated once on sequence 0 and copied (in the unified cache, a copy is a
reference) to one sequence per line, and each step decodes every unfinished line in one batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mriscribe.report.engines.base import Constraint, DeadlineExceededError, GenerationError

if TYPE_CHECKING:
    from mriscribe.report.engines.llama_cpp import LlamaCppEngine

_END = "\n"
_CHUNK = 32  # tokens decoded between two looks at the deadline


class _Line:
    """One line's sequence: its cache position, what it has written and what it may write."""

    def __init__(self, seq: int, position: int, constraint: Constraint) -> None:
        self.seq = seq
        self.position = position  # the next cache position
        self.text = ""
        # The answer follows the prompt's ">" with one space, and the line ends after it.
        self.allowed = [f" {answer}{_END}" for answer in constraint.answers]
        self.pending: list[int] = []  # tokens chosen but not yet evaluated
        self.done = not self.allowed

    def remainders(self) -> list[str]:
        return [a[len(self.text) :] for a in self.allowed if a.startswith(self.text)]


def decode_side_by_side(
    engine: LlamaCppEngine,
    prompts: Sequence[list[int]],
    constraints: Sequence[Constraint],
    deadline: float,
) -> list[str]:
    """The answer to each prompt (token lists sharing a prefix), each one of its constraint's
    answers; DeadlineExceededError when the deadline comes first."""
    import llama_cpp

    llm = engine._llm
    if any(not c.answers for c in constraints):
        raise GenerationError("a line has no allowed answer")
    shared = _common_prefix(prompts)
    longest = max(len(p) for p in prompts) + max(len(a) for c in constraints for a in c.answers)
    if longest + 8 > llm.n_ctx():
        raise GenerationError(f"the prompt ({longest} tokens) leaves no room in the context")
    engine._evaluate(list(prompts[0][:shared]), deadline, last=False)
    lines = [_Line(n + 1, shared, c) for n, c in enumerate(constraints)]
    context = llm._ctx
    batch = llama_cpp.llama_batch_init(_CHUNK, 0, 1)
    try:
        for line in lines:
            context.kv_cache_seq_cp(0, line.seq, 0, shared)
            line.pending = list(prompts[line.seq - 1][shared:])
        step_s = 0.0
        while True:
            active = [line for line in lines if not line.done and line.pending]
            if not active:
                break
            started = time.monotonic()
            if started + step_s > deadline:
                raise DeadlineExceededError("the deadline came before the report was written")
            rows = _decode(llama_cpp, context.ctx, batch, _CHUNK, engine._vocab, active, deadline)
            for line, row in rows:
                _choose(engine, line, row)
            step_s = time.monotonic() - started
        return [line.text.strip() for line in lines]
    finally:
        llama_cpp.llama_batch_free(batch)
        for line in lines:
            context.kv_cache_seq_rm(line.seq, -1, -1)


def _common_prefix(prompts: Sequence[list[int]]) -> int:
    """Tokens every prompt starts with (at least one token of each is left to evaluate)."""
    shortest = min(len(p) for p in prompts)
    shared = 0
    while shared < shortest - 1 and all(p[shared] == prompts[0][shared] for p in prompts):
        shared += 1
    return shared


def _decode(
    llama_cpp: Any,
    ctx: Any,
    batch: Any,
    size: int,
    vocab: int,
    lines: list[_Line],
    deadline: float,
) -> Iterator[tuple[_Line, np.ndarray]]:
    """Evaluate every line's pending tokens (in batches of at most ``size``, the deadline
    checked before each) and yield the logits after each line's last one, valid until the next
    batch: use them before asking for the next."""
    queue = [
        (line, line.pending[index], line.position + index, index == len(line.pending) - 1)
        for line in lines
        for index in range(len(line.pending))
    ]
    for line in lines:
        line.position += len(line.pending)
        line.pending = []
    for start in range(0, len(queue), size):
        if time.monotonic() > deadline:
            raise DeadlineExceededError("the deadline passed while reading the prompt")
        chunk = queue[start : start + size]
        wanted: list[tuple[_Line, int]] = []
        for slot, (line, token, position, last) in enumerate(chunk):
            batch.token[slot] = token
            batch.pos[slot] = position
            batch.n_seq_id[slot] = 1
            batch.seq_id[slot][0] = line.seq
            batch.logits[slot] = last
            if last:
                wanted.append((line, slot))
        batch.n_tokens = len(chunk)
        if llama_cpp.llama_decode(ctx, batch) != 0:
            if time.monotonic() > deadline:  # aborted by the engine's callback
                raise DeadlineExceededError("the deadline came in the middle of a step")
            raise GenerationError("llama.cpp could not decode a batch")
        for line, slot in wanted:
            pointer = llama_cpp.llama_get_logits_ith(ctx, slot)
            yield line, np.ctypeslib.as_array(pointer, shape=(vocab,))


def _choose(engine: LlamaCppEngine, line: _Line, logits: np.ndarray) -> None:
    """Take the allowed token the model scores highest, then the span every allowed answer
    agrees on after it (to be evaluated with the next step), or finish the line."""
    options: dict[int, str] = {}
    for remainder in line.remainders():
        tokens = engine.spelling(remainder)
        if tokens:
            token, piece = tokens[0]
            if remainder.startswith(piece):
                options.setdefault(token, piece)
    if not options:  # no tokenizer spelling fits: take the first remainder's text whole
        line.text += line.remainders()[0]
        line.done = True
        return
    token = max(options, key=lambda t: float(logits[t]))
    line.text += options[token]
    line.pending = [token]
    remainders = line.remainders()
    if len(remainders) == 1:
        # One answer left (every answer ends the line, so a complete one is alone): nothing
        # more for the model to choose.
        line.text += remainders[0]
        line.done = True
        return
    agreed = _agreed(remainders)
    if agreed:
        line.text += agreed
        line.pending += [token for token, _ in engine.spelling(agreed)]


def _agreed(remainders: list[str]) -> str:
    """What every remainder starts with, up to its last word boundary (so the model chooses
    the next word from its start)."""
    first, last = min(remainders), max(remainders)
    common = 0
    while common < min(len(first), len(last)) and first[common] == last[common]:
        common += 1
    cut = first.rfind(" ", 0, common)
    return first[:cut] if cut > 0 else ""
