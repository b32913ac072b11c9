"""Sentence patterns with alternatives and typed slots: the machinery of the report grammar.

A pattern is written once, e.g. ``"[Image {image} shows|On image {image} there is] a {kind}."``:
text, ``[a|b|]`` for alternatives (nested, an empty one allowed) and ``{slot}`` for a fact. The
same parsed pattern serves three uses:

- **language**: bound to facts (each slot to the few spellings of one fact), it is a finite set
  of sentences. An alternative that uses a slot the binding leaves out is not in the language,
  so a binding also chooses which alternatives apply ("on all {total} images" only where every
  image is positive).
- **parsing**: with each slot matching its type (any image number, any size, ...), it reads a
  sentence's slot values, which say why a sentence that has the form states the wrong fact.
- **GBNF**: the bound language as a llama.cpp grammar, for servers that decode under one.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

# A binding: each slot to the spellings of one fact ("" marks an alternative as chosen).
Binding = Mapping[str, Sequence[str]]


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Slot:
    name: str


@dataclass(frozen=True)
class Choice:
    options: tuple[Sequence_, ...]


@dataclass(frozen=True)
class Sequence_:  # noqa: N801 (a sequence of parts; the name Sequence is the ABC's)
    parts: tuple[Text | Slot | Choice, ...]


Part = Text | Slot | Choice


class PatternError(ValueError):
    """A pattern is malformed (unbalanced brackets): a programming error, found by tests."""


def parse_pattern(pattern: str) -> Sequence_:
    """``"a [b|c {x}]d"`` -> Sequence_(Text('a '), Choice(...), Text('d'))."""
    tokens = re.findall(r"\{[a-z_]+\}|\[|\]|\||[^\[\]|{]+|\{", pattern)

    def sequence(position: int, nested: bool) -> tuple[Sequence_, int]:
        parts: list[Part] = []
        while position < len(tokens):
            token = tokens[position]
            if token in ("]", "|"):
                if not nested:
                    raise PatternError(f"'{token}' outside brackets in {pattern!r}")
                break
            if token == "[":
                options: list[Sequence_] = []
                position += 1
                while True:
                    option, position = sequence(position, True)
                    options.append(option)
                    if position >= len(tokens):
                        raise PatternError(f"unclosed '[' in {pattern!r}")
                    if tokens[position] == "]":
                        position += 1
                        break
                    position += 1  # "|"
                parts.append(Choice(tuple(options)))
                continue
            if token.startswith("{") and token.endswith("}"):
                parts.append(Slot(token[1:-1]))
            elif parts and isinstance(parts[-1], Text):
                parts[-1] = Text(parts[-1].text + token)
            else:
                parts.append(Text(token))
            position += 1
        return Sequence_(tuple(parts)), position

    parsed, end = sequence(0, False)
    if end != len(tokens):
        raise PatternError(f"unbalanced brackets in {pattern!r}")
    return parsed


def slots(node: Sequence_ | Part) -> set[str]:
    """Every slot a pattern (or part of one) uses."""
    if isinstance(node, Slot):
        return {node.name}
    if isinstance(node, Text):
        return set()
    if isinstance(node, Choice):
        return set().union(*(slots(option) for option in node.options))
    return set().union(*(slots(part) for part in node.parts))


def language(node: Sequence_, binding: Binding) -> list[str]:
    """Every sentence of the pattern under ``binding`` (empty when a required slot is unbound),
    first alternatives first: ``language(...)[0]`` is the canonical path."""
    return list(dict.fromkeys(_strings(node, binding)))


def _strings(node: Sequence_ | Part, binding: Binding) -> Iterator[str]:
    if isinstance(node, Text):
        yield node.text
    elif isinstance(node, Slot):
        yield from binding.get(node.name, ())
    elif isinstance(node, Choice):
        for option in node.options:
            yield from _strings(option, binding)
    else:
        pieces = [list(dict.fromkeys(_strings(part, binding))) for part in node.parts]
        for combination in itertools.product(*pieces):
            yield "".join(combination)


def gbnf(node: Sequence_, binding: Binding, rule: str = "root") -> str:
    """The bound language as a llama.cpp GBNF grammar whose start rule is ``rule``."""
    return f"{rule} ::= {_gbnf(node, binding) or _literal('')}\n"


def _gbnf(node: Sequence_ | Part, binding: Binding) -> str:
    if isinstance(node, Text):
        return _literal(node.text)
    if isinstance(node, Slot):
        values = list(dict.fromkeys(binding.get(node.name, ())))
        return "(" + " | ".join(_literal(v) for v in values) + ")" if values else ""
    if isinstance(node, Choice):
        options = [
            _gbnf(option, binding) or _literal("")
            for option in node.options
            if slots(option) <= set(binding)
        ]
        return "(" + " | ".join(options) + ")" if options else ""
    parts = [_gbnf(part, binding) for part in node.parts]
    if any(not part for part in parts):
        return ""
    return " ".join(parts)


def _literal(text: str) -> str:
    """A GBNF string literal: backslash, quote and every control character escaped."""
    escaped = "".join(
        "\\" + char
        if char in '\\"'
        else f"\\x{ord(char):02X}"
        if ord(char) < 0x20 or ord(char) == 0x7F
        else char
        for char in text
    )
    return f'"{escaped}"'


class Form:
    """One sentence form of the grammar: a name, its pattern and the regular expression each
    slot type matches when the form is used to read a sentence."""

    def __init__(self, name: str, pattern: str, slot_types: Mapping[str, str]) -> None:
        self.name = name
        self.pattern = pattern
        self.node = parse_pattern(pattern)
        missing = slots(self.node) - set(slot_types)
        if missing:
            raise PatternError(f"{name}: slots without a type: {sorted(missing)}")
        self._slot_types = slot_types

    def __repr__(self) -> str:
        return f"Form({self.name!r})"

    def language(self, binding: Binding) -> list[str]:
        return language(self.node, binding)

    def render(self, binding: Binding) -> str:
        """The canonical sentence: the first alternative that the binding allows, each slot's
        first spelling."""
        sentences = self.language({name: values[:1] for name, values in binding.items()})
        if not sentences:
            raise ValueError(f"{self.name}: the binding leaves the form empty")
        return sentences[0]

    @cached_property
    def _reader(self) -> tuple[re.Pattern[str], dict[str, str]]:
        groups: dict[str, str] = {}

        def regex(node: Sequence_ | Part) -> str:
            if isinstance(node, Text):
                return re.escape(node.text)
            if isinstance(node, Slot):
                group = f"g{len(groups)}"
                groups[group] = node.name
                return f"(?P<{group}>{self._slot_types[node.name]})"
            if isinstance(node, Choice):
                return "(?:" + "|".join(regex(option) for option in node.options) + ")"
            return "".join(regex(part) for part in node.parts)

        return re.compile(regex(self.node)), groups

    def read(self, sentence: str) -> dict[str, str] | None:
        """The sentence's slot values if it has this form with any values of the slot types."""
        pattern, groups = self._reader
        match = pattern.fullmatch(sentence)
        if match is None:
            return None
        return {groups[g]: v for g, v in match.groupdict().items() if v is not None}
