"""The faithfulness check: a parser of the report grammar, bound to the study's facts.

A text is accepted only if it reads completely as sentences of the grammar (report/forms.py)
bound to this study's facts, states every tumour and the study's result, and repeats nothing.
A sentence the grammar does not yield is rejected whatever it says: there is no list of bad
phrasings to slip past. A whole report is checked section by section: its FINDINGS and
IMPRESSION this way, the other sections against exactly what the template makes of the facts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from mriscribe.report.facts import StudyFacts
from mriscribe.report.forms import FORMS, RESULT, Bound, bound_forms, tumour_key
from mriscribe.report.grammar import Form
from mriscribe.report.template import SECTIONS, template_report

MIN_CHARS = 15
_HEADING = re.compile(r"^\s*(?:findings?|impression)\s*:\s*", re.IGNORECASE)
_SECTION = re.compile(r"^([A-Z][A-Z ]+):[ \t]*$", re.MULTILINE)
_BOUNDARY = re.compile(r"(?<=[.!?;])\s+(?=[A-Z(\"'])")
_DETECTOR = re.compile(r"^Automated detection with (.+?) at a confidence threshold of ")
_KEY = 14  # sentences are indexed by their first characters
_ASCII = {
    "\u00d7": "x",
    "\u2013": "-",
    "\u2014": "-",
    "\u2011": "-",
    "\u2019": "'",
    "\u2018": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u00a0": " ",
}
_SLOT_WORDS = {
    "image": "an image number",
    "images": "image numbers",
    "negative_images": "image numbers",
    "empty_images": "image numbers",
    "kind": "a tumour class",
    "class_name": "a class",
    "size": "a size",
    "longest": "a size",
    "confidence": "a confidence",
    "threshold": "a threshold",
    "count": "a count",
    "total": "an image count",
    "positive_count": "an image count",
    "hedge": "a size as a measurement or an estimate",
    "counts": "counts by class",
    "class_counts": "counts by class",
    "classes": "classes",
    "negative_names": "a class",
    "tumours": "a count",
    "were": "a count",
}


@dataclass(frozen=True)
class Verdict:
    """Whether a text may reach a reader, and if not, every reason why."""

    accepted: bool
    reasons: tuple[str, ...]


def reason_kind(reason: str) -> str:
    """A reason without what it quotes from the text (a rejected text's words and numbers must
    not reach a reader through the fallback reason): "states a size ('30 x 22 mm') that ..." ->
    "states a size"."""
    return re.split(r"\s*\(|\s*'|:\s*'", reason, maxsplit=1)[0].strip(" :;,")


def normalise(text: str) -> str:
    """Unicode punctuation to ASCII and every run of blanks to one space, per line."""
    for old, new in _ASCII.items():
        text = text.replace(old, new)
    return "\n".join(" ".join(line.split()) for line in text.splitlines())


def max_chars_for(facts: StudyFacts) -> int:
    """The longest acceptable narrative: room for a sentence per finding, no more."""
    return 900 + 220 * min(len(facts.tumours), 200) + 40 * min(facts.image_count, 200)


class _Grammar:
    """One study's bound grammar, indexed for reading: every sentence it yields, by its start."""

    def __init__(self, facts: StudyFacts) -> None:
        self.bound = bound_forms(facts)
        self.index: dict[str, list[tuple[str, Bound]]] = {}
        for bound in self.bound:
            for sentence in bound.sentences():
                self.index.setdefault(sentence[:_KEY], []).append((sentence, bound))
        for entries in self.index.values():
            entries.sort(key=lambda entry: -len(entry[0]))  # the longest sentence first

    def match(self, text: str, position: int) -> tuple[str, Bound] | None:
        """The longest bound sentence at ``position`` that ends there or before a blank."""
        for sentence, bound in self.index.get(text[position : position + _KEY], ()):
            end = position + len(sentence)
            if text.startswith(sentence, position) and (end == len(text) or text[end] == " "):
                return sentence, bound
        return None


def verify_text(text: str, facts: StudyFacts, *, max_chars: int | None = None) -> Verdict:
    """Check a narrative (FINDINGS and IMPRESSION prose, optionally under Findings:/Impression:
    headings) against ``facts``."""
    text = normalise(text).strip()
    limit = max_chars or max_chars_for(facts)
    if len(text) < MIN_CHARS:
        return Verdict(False, ("the text is empty or too short",))
    reasons: list[str] = []
    if len(text) > limit:
        reasons.append(f"the text is too long ({len(text)} characters, limit {limit})")
    body = " ".join(_HEADING.sub("", line) for line in text.splitlines() if line.strip())
    body = " ".join(body.split())
    grammar = _Grammar(facts)
    covered: set[str] = set()
    seen: set[str] = set()
    position = 0
    while position < len(body):
        found = grammar.match(body, position)
        if found is None:
            sentence = _BOUNDARY.split(body[position:], maxsplit=1)[0]
            reasons.append(_why_not(sentence, grammar.bound))
        else:
            sentence, bound = found
            covered |= bound.covers
            if sentence in seen:
                reasons.append(f"repetition: a sentence is repeated ('{sentence[:60]}')")
            seen.add(sentence)
        position += len(sentence)
        while position < len(body) and body[position] == " ":
            position += 1
    reasons.extend(_missing(facts, covered))
    unique = tuple(dict.fromkeys(reasons))
    return Verdict(not unique, unique)


def _missing(facts: StudyFacts, covered: set[str]) -> list[str]:
    """What the text must state and does not: every tumour, and the study's result."""
    reasons = []
    for image in facts.images:
        for fact in image.tumours:
            if tumour_key(fact, image) not in covered:
                reasons.append(
                    f"does not state the detected {fact.class_name} on image {image.number}"
                )
    if RESULT not in covered:
        reasons.append("does not state the study's result")
    return reasons


def _why_not(sentence: str, bound: list[Bound]) -> str:
    """Why a sentence is not in the study's grammar: it has no form at all, its form does not
    apply to this study, or a slot states what its facts do not hold."""
    shown = sentence[:80]
    for form in FORMS:
        parsed = form.read(sentence)
        if parsed is None:
            continue
        candidates = [b for b in bound if b.form is form]
        if not candidates:
            return f"a {form.name} sentence, which the findings do not allow ('{shown}')"
        wrong = min((_wrong_slots(parsed.values, candidate) for candidate in candidates), key=len)
        if not wrong:  # every slot has a bound spelling, but not in this combination
            return f"a {form.name} sentence that mixes the facts of different findings ('{shown}')"
        words = ", ".join(dict.fromkeys(_SLOT_WORDS.get(slot, slot) for slot in wrong))
        return f"a {form.name} sentence states {words} that the findings do not hold ('{shown}')"
    return f"a sentence outside the report grammar ('{shown}')"


def _wrong_slots(values: dict[str, str], candidate: Bound) -> list[str]:
    return [
        slot
        for slot, value in values.items()
        if value not in candidate.binding.get(slot, ()) and _SLOT_WORDS.get(slot)
    ]


# Whole reports -------------------------------------------------------------------------------


def split_sections(text: str) -> dict[str, str] | None:
    """A whole report's sections ("TITLE:" lines, as Report.text writes them), or None when the
    text has no FINDINGS and IMPRESSION headings (a narrative on its own)."""
    headings = list(_SECTION.finditer(text))
    names = [match.group(1) for match in headings]
    if "FINDINGS" not in names or "IMPRESSION" not in names:
        return None
    sections: dict[str, str] = {}
    for index, match in enumerate(headings):
        end = headings[index + 1].start() if index + 1 < len(headings) else len(text)
        sections[match.group(1)] = text[match.end() : end].strip()
    return sections


def verify_report(sections: dict[str, str], facts: StudyFacts) -> Verdict:
    """Check every section of a whole mriscribe report: FINDINGS and IMPRESSION by the grammar,
    the others against exactly what the template makes of ``facts`` (the detector's name is read
    from the TECHNIQUE section; every other word of those sections must be the template's)."""
    reasons: list[str] = []
    if list(sections) != list(SECTIONS):
        missing = [name for name in SECTIONS if name not in sections]
        extra = [name for name in sections if name not in SECTIONS]
        if missing:
            reasons.append(f"the report lacks the section(s) {', '.join(missing)}")
        if extra:
            reasons.append(f"the report has section(s) a report cannot have ({', '.join(extra)})")
        if not missing and not extra:
            reasons.append("the report's sections are out of order")
    technique = normalise(sections.get("TECHNIQUE", ""))
    detector = _DETECTOR.match(technique)
    template = template_report(facts, model_name=detector.group(1) if detector else "?")
    for name in SECTIONS:
        if name in ("FINDINGS", "IMPRESSION") or name not in sections:
            continue
        if normalise(sections[name]).strip() != normalise(template.sections[name]).strip():
            reasons.append(f"the {name} section is not what the template makes of the findings")
    narrative = "\n".join(
        f"{name.capitalize()}:\n{sections[name]}"
        for name in ("FINDINGS", "IMPRESSION")
        if name in sections
    )
    if narrative:
        reasons.extend(verify_text(narrative, facts).reasons)
    unique = tuple(dict.fromkeys(reasons))
    return Verdict(not unique, unique)


def forms_of(sentences: Iterable[str]) -> list[Form | None]:
    """The form each sentence has (with any slot values), or None: for tests and tools."""
    found: list[Form | None] = []
    for sentence in sentences:
        found.append(next((form for form in FORMS if form.read(sentence) is not None), None))
    return found
