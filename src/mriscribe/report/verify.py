"""The faithfulness check: a parser of the report grammar, bound to the study's facts.

A text is accepted only if it reads completely as sentences of the grammar (report/forms.py)
bound to this study's facts, states every tumour and the study's result, and repeats nothing.
A sentence the grammar does not yield is rejected whatever it says: there is no list of bad
phrasings to slip past. A whole report is checked section by section: its FINDINGS and
IMPRESSION this way, the other sections against exactly what the template makes of the facts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mriscribe.report.facts import StudyFacts
from mriscribe.report.forms import FORMS, RESULT, Bound, bound_forms, required
from mriscribe.report.template import SECTIONS, template_report

MIN_CHARS = 15
_HEADING = re.compile(r"^\s*(findings?|impression)\s*:\s*", re.IGNORECASE)
_SECTION = re.compile(r"^([A-Z][A-Z ]+):[ \t]*$", re.MULTILINE)
_BOUNDARY = re.compile(r"(?<=[.!?;])\s+(?=[A-Z(\"'])")
# A detector named in TECHNIQUE: a name without spaces or sentence punctuation, and its version.
_DETECTOR = re.compile(
    r"^Automated detection with ([^\s(),;:!?]+(?: \(version [^\s(),;:!?]+\))?) at a "
    r"confidence threshold of "
)
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
    "lesion": "a lesion number",
    "side": "a side",
    "extent": "an extent",
    "volume": "a volume",
    "series_count": "a series count",
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
    return 900 + 220 * len(facts.lesions) + 40 * facts.image_count


class _Grammar:
    """One study's bound grammar, indexed for reading: every sentence it yields, by its start,
    with every bound form that yields it (two identical detections yield the same sentence)."""

    def __init__(self, facts: StudyFacts) -> None:
        self.bound = bound_forms(facts)
        sentences: dict[str, list[Bound]] = {}
        for bound in self.bound:
            for sentence in bound.sentences():
                sentences.setdefault(sentence, []).append(bound)
        self.index: dict[str, list[tuple[str, list[Bound]]]] = {}
        for sentence, yielders in sentences.items():
            self.index.setdefault(sentence[:_KEY], []).append((sentence, yielders))
        for entries in self.index.values():
            entries.sort(key=lambda entry: -len(entry[0]))  # the longest sentence first

    def match(self, text: str, position: int) -> tuple[str, list[Bound]] | None:
        """The longest bound sentence at ``position`` that ends there or before a blank."""
        for sentence, yielders in self.index.get(text[position : position + _KEY], ()):
            end = position + len(sentence)
            if text.startswith(sentence, position) and (end == len(text) or text[end] == " "):
                return sentence, yielders
        return None


def _parts(text: str) -> list[tuple[str, str]]:
    """(section, prose) in order: "finding" and "impression" for text under a Findings: or
    Impression: heading, "" for text under none."""
    parts: list[tuple[str, str]] = []
    section = ""
    for line in text.splitlines():
        heading = _HEADING.match(line)
        if heading:
            section = heading.group(1).lower().rstrip("s")
            line = line[heading.end() :]
        if line.strip():
            parts.append((section, " ".join(line.split())))
    return parts


def verify_text(text: str, facts: StudyFacts, *, max_chars: int | None = None) -> Verdict:
    """Check a narrative (FINDINGS and IMPRESSION prose, optionally under Findings:/Impression:
    headings) against ``facts``: every sentence one the bound grammar yields, every tumour
    stated exactly once (in the FINDINGS, where the text has them), the result stated (in the
    IMPRESSION, where it has one), and nothing the study requires left out."""
    text = normalise(text).strip()
    limit = max_chars or max_chars_for(facts)
    if len(text) < MIN_CHARS:
        return Verdict(False, ("the text is empty or too short",))
    reasons: list[str] = []
    if len(text) > limit:
        reasons.append(f"the text is too long ({len(text)} characters, limit {limit})")
    grammar = _Grammar(facts)
    covered: dict[str, list[str]] = {}  # key -> the sections that state it
    used: set[int] = set()  # the bound forms a sentence has been read as
    seen: set[str] = set()
    parts = _parts(text)
    for section, body in parts:
        position = 0
        while position < len(body):
            found = grammar.match(body, position)
            if found is None:
                sentence = _BOUNDARY.split(body[position:], maxsplit=1)[0]
                reasons.append(_why_not(sentence, grammar.bound))
            else:
                sentence, yielders = found
                seen_before = sentence in seen
                seen.add(sentence)
                # Of the bound forms that yield this sentence, the first not yet read: two
                # identical detections may each be stated once, one detection not twice.
                fresh = [bound for bound in yielders if id(bound) not in used]
                if not fresh and seen_before:
                    reasons.append(f"repetition: a sentence is repeated ('{sentence[:60]}')")
                elif not fresh:
                    reasons.append(f"states a fact more than once ('{sentence[:60]}')")
                else:
                    used.add(id(fresh[0]))
                    for key in fresh[0].covers:
                        if key.startswith("lesion ") and key in covered:
                            reasons.append(f"states a lesion more than once ('{sentence[:60]}')")
                        covered.setdefault(key, []).append(section)
            position += len(sentence)
            while position < len(body) and body[position] == " ":
                position += 1
    sections = {section for section, _ in parts}
    for key, what in required(facts).items():
        where = covered.get(key, [])
        if not where:
            reasons.append(f"does not state {what}")
        elif key == RESULT and "impression" in sections and "impression" not in where:
            reasons.append("does not state the study's result in the IMPRESSION")
        elif key.startswith("lesion ") and "finding" in sections and "finding" not in where:
            reasons.append(f"does not state {what} in the FINDINGS")
    unique = tuple(dict.fromkeys(reasons))
    return Verdict(not unique, unique)


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
        wrong = min((_wrong_slots(parsed, candidate) for candidate in candidates), key=len)
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


@dataclass(frozen=True)
class Sections:
    """A report text cut at its "TITLE:" lines (as Report.text writes them): the sections in
    order (a title may come twice: that is for the check to refuse), and any text before the
    first title."""

    parts: tuple[tuple[str, str], ...]
    leading: str = ""

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.parts]

    def body(self, name: str) -> str:
        return next((text for title, text in self.parts if title == name), "")

    @property
    def whole(self) -> bool:
        """A whole report (sections besides FINDINGS and IMPRESSION), not only its narrative."""
        return bool(set(self.names) - {"FINDINGS", "IMPRESSION"})


def split_sections(text: str) -> Sections | None:
    """The text's sections, or None when it has no FINDINGS and IMPRESSION headings (a
    narrative on its own)."""
    headings = list(_SECTION.finditer(text))
    names = [match.group(1) for match in headings]
    if "FINDINGS" not in names or "IMPRESSION" not in names:
        return None
    parts = []
    for index, match in enumerate(headings):
        end = headings[index + 1].start() if index + 1 < len(headings) else len(text)
        parts.append((match.group(1), text[match.end() : end].strip()))
    return Sections(tuple(parts), text[: headings[0].start()].strip())


def verify_sections(
    sections: Sections | dict[str, str],
    facts: StudyFacts,
    *,
    detector: str | None = None,
    whole: bool | None = None,
) -> Verdict:
    """Check a report cut into sections. FINDINGS and IMPRESSION are read by the grammar (the
    tumours stated in the FINDINGS, the result in the IMPRESSION). In a whole report, every
    other section must be exactly what the template makes of ``facts`` with ``detector`` (the
    detector's name and version as the report names it; read from the TECHNIQUE section when
    not given, and then only a name without spaces or sentence punctuation is taken). Text
    before the first section, a section twice, a missing or unknown section: rejected.
    ``whole`` says whether a whole report is expected (None: whether it has other sections)."""
    if isinstance(sections, dict):
        sections = Sections(tuple(sections.items()))
    if whole is None:
        whole = sections.whole
    reasons: list[str] = []
    if sections.leading:
        reasons.append("the report has text before its first section")
    names = sections.names
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        reasons.append(f"the report has a section more than once ({', '.join(repeated)})")
    expected = list(SECTIONS) if whole else ["FINDINGS", "IMPRESSION"]
    missing = [name for name in expected if name not in names]
    extra = sorted({name for name in names if name not in expected})
    if missing:
        reasons.append(f"the report lacks the section(s) {', '.join(missing)}")
    if extra:
        reasons.append(f"the report has section(s) a report cannot have ({', '.join(extra)})")
    if not missing and not extra and not repeated and names != expected:
        reasons.append("the report's sections are out of order")
    if whole:
        if detector is None:
            found = _DETECTOR.match(normalise(sections.body("TECHNIQUE")))
            detector = found.group(1) if found else "?"
        template = template_report(facts, model_name=detector)
        for name in SECTIONS:
            if name in ("FINDINGS", "IMPRESSION") or name not in names:
                continue
            if normalise(sections.body(name)).strip() != normalise(template.sections[name]).strip():
                reasons.append(f"the {name} section is not what the template makes of the findings")
    narrative = "\n".join(
        f"{name.capitalize()}:\n{sections.body(name) or '-'}"
        for name in ("FINDINGS", "IMPRESSION")
        if name in names
    )
    reasons.extend(verify_text(narrative, facts).reasons)
    unique = tuple(dict.fromkeys(reasons))
    return Verdict(not unique, unique)


def verify_report(
    sections: Sections | dict[str, str], facts: StudyFacts, *, detector: str | None = None
) -> Verdict:
    """A whole mriscribe report, every section (see verify_sections)."""
    return verify_sections(sections, facts, detector=detector, whole=True)
