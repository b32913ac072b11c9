"""The faithfulness check: a report text is accepted only if every claim in it is in the facts.

A language model's text reaches a reader only after this check accepts it. The check is strict
and literal: it names every detected tumour class and no other; it never calls a positive study
negative or normal; every size, confidence, count and image number matches the facts within
the rounding it was written with; it states no location, side, imaging feature or patient detail
(the facts hold none); and it is on topic, complete and not repetitive. Phrasing it cannot read
is rejected, never waved through: the template report is always there instead.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mriscribe.report.claims import (
    TUMOUR_WORDS,
    Clause,
    normalise,
    parse_clauses,
    sentences,
)
from mriscribe.report.facts import FindingFact, ImageFacts, StudyFacts
from mriscribe.report.template import class_kind, study_result

MIN_CHARS = 15

_LOCATIONS = (
    r"left|right|bilateral(?:ly)?|unilateral|midline|contralateral|ipsilateral|frontal|parietal|"
    r"temporal|occipital|insula[r]?|cerebell(?:ar|um)|brain\s*stem|brainstem|pons|pontine|"
    r"midbrain|medulla|thalam(?:us|ic)|hypothalam(?:us|ic)|basal\s+ganglia|corpus\s+callosum|"
    r"ventric(?:le|les|ular)|periventricular|intraventricular|sella[r]?|suprasellar|parasellar|"
    r"cavernous|optic|chiasm(?:a|atic)?|convexity|falx|falcine|tentorium|tentorial|"
    r"hemispher(?:e|es|ic)|lobes?|cortex|cortical|subcortical|sulc(?:us|i)|gyr(?:us|i)|"
    r"anterior|posterior|superior|inferior|medial|lateral|dorsal|ventral|supratentorial|"
    r"infratentorial|extra-?axial|intra-?axial|dural|dura|skull\s+base|cerebellopontine|"
    r"gland|fossa|cistern|upper|lower|central|peripheral|quadrant|region|para\w+|sagittal|"
    r"coronal|axial|vertex|skull|scalp|orbits?|orbital|spinal|cranial|intracranial|"
    r"posterior\s+fossa|deep|surface|adjacent|near|within\s+the|arising|originating"
)
_FEATURES = (
    r"enhanc\w*|oedema|edema|mass\s+effect|midline\s+shift|herniation|necro\w+|haemorrh\w*|"
    r"hemorrh\w*|bleed\w*|calcif\w+|cystic|solid|infiltrat\w*|invasi\w+|invad\w+|"
    r"hydrocephal\w*|malignan\w*|benign|grade|high-grade|low-grade|aggressive|heterogene\w*|"
    r"homogene\w*|hyperintens\w*|hypointens\w*|isointens\w*|restricted\s+diffusion|vasogenic|"
    r"compress\w*|displac\w*|effacement|spread|metasta\w*|growth|grown|growing|stable|progress\w*|"
    r"prior|previous|previously|unchanged|compared|comparison|interval|new|increased|decreased|"
    r"recurr\w*|residual|post-?operative|resect\w*|surgery|surgical"
)
_PATIENT = (
    r"\d+[- ]year[- ]old|year-old|male|female|man|woman|boy|girl|he|she|his|her|him|history|"
    r"symptoms?|symptomatic|headaches?|seizures?|complain\w*|presented|presents|presenting|"
    r"age|aged|pregnan\w*|patients?|person|subject|individual|coma"
)
_OVERCLAIM = (
    r"confirmed|confirms|definite|definitely|certain|certainly|diagnosed|proven|biopsy|"
    r"false\s+positives?|artefacts?|artifacts?|ignored?|disregard\w*|spurious|lethal|fatal|"
    r"death|prognos\w*|survival|curable|incurable|ruled?\s+out|rules\s+out|discharg\w*|"
    r"reassur\w*|no\s+further\s+action|urgent\w*|emergency"
)
# Counts that are not numbers, and references the facts cannot check.
_VAGUE = (
    r"multiple|several|numerous|many|various|few|some|countless|last|final|latter|former|"
    r"middle|previous|next|remaining\s+images?"
)
_OFF_TOPIC_LINE = re.compile(
    r"^\s*(?:question|questions|answer|answers|exercise|exercises|quiz|solution|user|assistant|"
    r"human|system|ai|bot|model|q|a|instruction|instructions|input|output|response|example|"
    r"step\s*\d+|note|task|prompt|context|facts?|data)\s*\d*\s*[:.)]",
    re.IGNORECASE | re.MULTILINE,
)
_OFF_TOPIC = re.compile(
    r"follow-?up\s+exercises?|multiple[- ]choice|true\s+or\s+false|\b(?:explain|describe|discuss|"
    r"calculate|compute|list|name|identify|choose|select|write|summari[sz]e)\b(?=\s+(?:the|a|an|"
    r"what|how|why|which|your|each|all|three|two))|\bhope\s+this\s+helps\b|\bhere\s+is\b|"
    r"\bhere's\b|\bsure\b[,!]|\bthank|\bfeel\s+free\b|\bplease\b|\bcertainly!|\blet\s+me\b|"
    r"\blet's\b|\bas\s+an\s+ai\b|\blanguage\s+model\b|\bopenai\b|\bchatgpt\b",
    re.IGNORECASE,
)
_PERSON = re.compile(r"\b(?:i|i'm|i've|i'd|me|my|mine|we|we're|our|ours|us|you|your|yours)\b")
_MARKUP = re.compile(r"https?://|www\.|```|<\s*/?\s*[a-z]|[{}\[\]]|#{1,}|\*\*|__|\|", re.IGNORECASE)
_NUMBERED_LIST = re.compile(r"^\s*(?:\d+|[a-d])[.)]\s", re.MULTILINE)
_HEADING = re.compile(
    r"^\s*(?:findings?|impression|conclusion|summary|narrative)\s*:\s*", re.IGNORECASE
)
_DOMAIN = re.compile(
    r"\b(?:image|images|slice|slices|tumou?rs?|lesions?|mass|masses|detect\w*|findings?|"
    r"stud(?:y|ies)|scan|mri|confidence|automated|radiologist\w*|result|threshold|classif\w*|"
    r"class|classes|size|sizes|measur\w*|estimat\w*|spacing|review|indeterminate|negative|"
    r"positive)\b|\u27e6|mm\b",
    re.IGNORECASE,
)
_NEGATION = re.compile(
    r"\b(?:no|not|none|without|neither|nor|absent|free\s+of|negative|excluded?|nothing)\b",
    re.IGNORECASE,
)
_TUMOUR_NOUN = re.compile(
    r"\b(?:tumou?rs?|lesions?|mass|masses|neoplasms?|detections?|detected|abnormalit(?:y|ies)|"
    r"nodules?|findings?)\b",
    re.IGNORECASE,
)
_HEDGE = re.compile(
    r"\b(?:about|approximately|approx|around|roughly|estimated?|estimates)\b|~|\u2248", re.I
)
_NO_DETECTION = re.compile(r"\bno\s+detections?\b|\bnothing\s+(?:was\s+)?detected\b", re.I)
_OTHER = re.compile(r"\b(?:other|further|additional|else|remaining|elsewhere|more)\b", re.I)
_DANGLING = {
    "and",
    "or",
    "the",
    "a",
    "an",
    "of",
    "with",
    "on",
    "in",
    "to",
    "at",
    "by",
    "x",
    "measuring",
    "is",
    "are",
    "was",
    "were",
    "confidence",
    "image",
    "images",
    "approximately",
    "about",
}
_OPS: dict[str, Callable[[int, int], bool]] = {
    "=": operator.eq,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


@dataclass(frozen=True)
class Verdict:
    """Whether a text may reach a reader, and if not, every reason why."""

    accepted: bool
    reasons: tuple[str, ...]


def reason_kind(reason: str) -> str:
    """A reason without what it quotes from the text (a rejected text's words and numbers must
    not reach a reader through the fallback reason): "states a size (30 x 22 mm) that ..." ->
    "states a size"."""
    return re.split(r"\s*\(|\s*'|:\s*'", reason, maxsplit=1)[0].strip(" :;,")


def fact_kind(class_name: str) -> str:
    """The kind a class name is compared by: glioma / meningioma / pituitary, else its letters."""
    kind = class_kind(class_name)
    if kind is not None:
        return kind
    for word in re.findall(r"[a-z]+", class_name.lower()):
        if word in TUMOUR_WORDS:
            return TUMOUR_WORDS[word]
    return "class:" + re.sub(r"[^a-z0-9]", "", class_name.lower())


def max_chars_for(facts: StudyFacts) -> int:
    """The longest acceptable narrative: room for a sentence per finding, no more."""
    return 900 + 220 * min(len(facts.tumours), 200) + 40 * min(facts.image_count, 200)


def verify_text(text: str, facts: StudyFacts, *, max_chars: int | None = None) -> Verdict:
    """Check ``text`` (narrative prose, optionally under Findings:/Impression: headings)."""
    reasons: list[str] = []
    text = normalise(text).strip()
    limit = max_chars or max_chars_for(facts)
    if len(text) < MIN_CHARS:
        return Verdict(False, ("the text is empty or too short",))
    if len(text) > limit:
        reasons.append(f"the text is too long ({len(text)} characters, limit {limit})")
    reasons.extend(_off_topic(text))
    body = "\n".join(_HEADING.sub("", line) for line in text.splitlines())
    reasons.extend(_shape(body))
    reasons.extend(_content(body, facts))
    unique = tuple(dict.fromkeys(reasons))
    return Verdict(not unique, unique)


def _off_topic(text: str) -> list[str]:
    reasons = []
    if "?" in text:
        reasons.append("off-topic: the text asks a question")
    line = _OFF_TOPIC_LINE.search(text)
    if line:
        reasons.append(f"off-topic: a chat, quiz or prompt line ('{line.group(0).strip()}')")
    phrase = _OFF_TOPIC.search(text)
    if phrase:
        reasons.append(f"off-topic: '{phrase.group(0).strip()}'")
    person = _PERSON.search(text.lower())
    if person:
        reasons.append(f"off-topic: speaks in the first or second person ('{person.group(0)}')")
    if _MARKUP.search(text):
        reasons.append("off-topic: markup, links or brackets")
    if _NUMBERED_LIST.search(text):
        reasons.append("off-topic: a numbered list")
    return reasons


def _shape(text: str) -> list[str]:
    reasons = []
    stripped = text.rstrip()
    if not re.search(r"[.!][)\"']?$", stripped):
        reasons.append("cut off: the text does not end with a full sentence")
    else:
        last = re.findall(r"[A-Za-z0-9]+", stripped[-40:])
        if last and last[-1].lower() in _DANGLING:
            reasons.append(f"cut off: the last sentence ends on '{last[-1]}'")
    if text.count("(") != text.count(")"):
        reasons.append("cut off: unbalanced parentheses")
    seen: set[str] = set()
    for sentence in sentences(text):
        key = re.sub(r"\s+", " ", sentence.lower()).strip(" .")
        if len(key) >= 12 and key in seen:
            reasons.append(f"repetition: a sentence is repeated ('{sentence[:60]}')")
            break
        seen.add(key)
    loop = re.search(r"\b(\w+(?:\W+\w+){2,})\W+\1\b", text, re.IGNORECASE)
    if loop:
        reasons.append(f"repetition: '{loop.group(1)[:60]}' repeats")
    return reasons


def _words(pattern: str, text: str) -> list[str]:
    return [m.group(0) for m in re.finditer(rf"\b(?:{pattern})\b", text, re.IGNORECASE)]


def _content(text: str, facts: StudyFacts) -> list[str]:
    reasons: list[str] = []
    result = study_result(facts)
    lowered = text.lower()
    for label, pattern in (
        ("a location or side that the findings do not contain", _LOCATIONS),
        ("an imaging feature that the findings do not contain", _FEATURES),
        ("a patient detail that the findings do not contain", _PATIENT),
        ("a judgement the detector cannot give", _OVERCLAIM),
        ("a count or reference the findings cannot check", _VAGUE),
    ):
        found = _words(pattern, text)
        if found:
            words = ", ".join(dict.fromkeys(w.lower() for w in found))
            reasons.append(f"states {label} ({words})")
    spelled = re.findall(
        r"\b(?:(?:twen|thir|for|fif|six|seven|eigh|nine)ty|hundred|thousand|thirteen|fourteen|"
        r"fifteen|sixteen|seventeen|eighteen|nineteen|half|quarter|dozen)\w*\b",
        lowered,
    )
    if spelled:
        reasons.append(f"states a number in words ({', '.join(dict.fromkeys(spelled))})")
    known = {w for w in TUMOUR_WORDS} | {
        word for f in facts.tumours for word in re.findall(r"[a-z]+", f.class_name.lower())
    }
    unknown = [w for w in re.findall(r"\b[a-z]+omas?\b", lowered) if w not in known]
    if unknown:
        reasons.append(f"names a tumour type the detector does not report ({unknown[0]})")
    for match in re.finditer(r"\b(?:normal|unremarkable|healthy|clear|clean)\b", lowered):
        before = re.split(r"[.:;\n]", lowered[max(0, match.start() - 30) : match.start()])[-1]
        if not re.search(r"\b(?:not|never|no)\b(?:\W+\w+){0,3}\W*$", before):
            reasons.append(f"calls something '{match.group(0)}': an automated read never can")
            break
    for match in re.finditer(
        r"\b(positive|negative|indeterminate)\s+(?:study|scan|examination)", lowered
    ):
        if match.group(1) != result:
            reasons.append(f"calls the study {match.group(1)}, but it is {result}")

    negative_names = {f.class_name for image in facts.images for f in image.negatives}
    negative_names.add("No Tumor")
    clauses = [
        clause
        for sentence in sentences(text)
        for clause in _sentence_clauses(sentence, negative_names, reasons)
    ]
    detected = {fact_kind(f.class_name): f.class_name for f in facts.tumours}
    literal = {
        "class:" + re.sub(r"[^a-z0-9]", "", name.lower()): name
        for name in detected.values()
        if fact_kind(name).startswith("class:")
    }
    for clause in clauses:
        for kind, name in literal.items():
            if re.search(rf"\b{re.escape(name)}\b", clause.text, re.IGNORECASE):
                clause.kinds.append(kind)
    named = {kind for clause in clauses for kind in clause.kinds}
    for kind in sorted(named - set(detected)):
        if facts.positive:
            reasons.append(f"names {kind.removeprefix('class:')}, which was not detected")
        else:
            reasons.append(f"names a tumour ({kind.removeprefix('class:')}), but none was detected")
    for kind in sorted(set(detected) - named):
        reasons.append(f"does not name the detected {detected[kind]}")
    for kind in sorted({k for c in clauses for k in c.negated_kinds} - named):
        if kind not in detected:
            reasons.append(f"names {kind} (as absent), which the findings do not mention")
    for clause in clauses:
        reasons.extend(_clause_problems(clause, facts))
    if facts.positive and not any(_is_positive(c) for c in clauses):
        reasons.append("does not say that a tumour was detected")
    if not facts.positive and facts.images and not any(_is_absence(c) for c in clauses):
        reasons.append("does not say that no tumour was detected")
    return reasons


def _sentence_clauses(sentence: str, negative_names: set[str], reasons: list[str]) -> list[Clause]:
    clauses = parse_clauses(sentence, negative_names)
    if not any(_DOMAIN.search(clause.text) for clause in clauses):
        reasons.append(f"off-topic sentence ('{sentence[:60]}')")
    return clauses


def _plain(clause: Clause) -> str:
    return re.sub(r"\u27e6\d+\u27e7", " ", clause.text)


def _is_absence(clause: Clause) -> bool:
    plain = _plain(clause)
    return (
        bool(_NEGATION.search(plain))
        and (bool(_TUMOUR_NOUN.search(plain)) or bool(clause.negated_kinds))
        and not clause.kinds
    )


def _is_positive(clause: Clause) -> bool:
    plain = _plain(clause)
    if clause.kinds:
        return True
    if _NEGATION.search(plain):
        return False
    return bool(_TUMOUR_NOUN.search(plain) or re.search(r"\bpositive\b", plain, re.I))


def _clause_problems(clause: Clause, facts: StudyFacts) -> list[str]:
    reasons: list[str] = []
    total = facts.image_count
    by_image = {image.number: image for image in facts.images}
    for number in clause.images:
        if number not in by_image:
            reasons.append(f"refers to image {number}, but the study has {total} image(s)")
    images = [by_image[n] for n in clause.images if n in by_image]
    absence = _is_absence(clause)
    positive = _is_positive(clause)
    if positive and not facts.positive:
        reasons.append(f"describes a tumour, but none was detected ('{_plain(clause)[:60]}')")
    other = _OTHER.search(_plain(clause))
    if absence and facts.positive and not images and not other and not clause.classified_negative:
        reasons.append("says no tumour was detected, but the study is positive")
    for kind in dict.fromkeys(clause.kinds):
        if images and not any(kind in _kinds(image) for image in images):
            where = ", ".join(str(image.number) for image in images)
            reasons.append(f"puts {kind} on image {where}, which has no such detection")
    for image in images:
        kinds = _kinds(image)
        if clause.kinds:
            named = set(clause.group_kinds or clause.kinds) | set(clause.kinds)
            if not kinds & named:
                shown = ", ".join(sorted(named))
                reasons.append(f"puts {shown} on image {image.number}, which has no such detection")
        elif positive and image.status != "positive":
            reasons.append(f"describes a tumour on image {image.number}, which has none")
        if absence:
            negated = set(clause.negated_kinds)
            if (negated and negated & kinds) or (not negated and image.status == "positive"):
                reasons.append(f"says image {image.number} has no tumour, but it has one")
        if _NO_DETECTION.search(_plain(clause)) and image.status != "no finding":
            reasons.append(f"says image {image.number} had no detection, but it had one")
        if clause.classified_negative and not image.negatives:
            reasons.append(f"says image {image.number} was classified no tumour, but it was not")
    bound = _bound_findings(clause, facts)
    tumours = [f for f in bound if f in facts.tumours] or (
        [] if clause.images or clause.kinds else list(facts.tumours)
    )
    for values, tol in zip(clause.sizes, clause.size_tolerances, strict=True):
        shown = " x ".join(f"{v:g}" for v in values)
        matching = [f for f in tumours if _size_matches(values, tol, f)]
        if not matching:
            reasons.append(f"states a size ({shown} mm) that no matching detection has")
        elif all(f.size_estimated for f in matching) and not _HEDGE.search(clause.text):
            # No pixel spacing in the file: the size is an estimate and must read as one.
            reasons.append(f"states an estimated size ({shown} mm) as a measurement")
    confidences = [f.confidence * 100 for f in bound or _all_findings(facts)]
    confidences.append(facts.conf_threshold * 100)
    for value, tol in clause.percents:
        if not any(abs(value - c) <= tol for c in confidences):
            reasons.append(f"states a percentage ({value:g}%) that is not in the findings")
    for noun, number, comparison in clause.counts:
        allowed = _allowed_counts(noun, clause, facts)
        if not any(_OPS[comparison](value, number) for value in allowed):
            reasons.append(
                f"states a count ({comparison.strip('=') or ''}{number} "
                f"{noun.removeprefix('kind:')}) that does not match the findings"
            )
    for value in clause.image_totals:
        if value != total:
            reasons.append(f"says the study has {value} images, but it has {total}")
    for number in clause.unexplained_numbers:
        reasons.append(f"states a number ({number}) that the findings do not explain")
    return reasons


def _kinds(image: ImageFacts) -> set[str]:
    return {fact_kind(f.class_name) for f in image.tumours}


def _all_findings(facts: StudyFacts) -> list[FindingFact]:
    return [f for image in facts.images for f in (*image.tumours, *image.negatives)]


def _bound_findings(clause: Clause, facts: StudyFacts) -> list[FindingFact]:
    """The findings a clause speaks of: those on its images, of its classes."""
    found = _all_findings(facts)
    if clause.images:
        found = [f for f in found if f.image_number in clause.images]
    if clause.kinds:
        found = [f for f in found if fact_kind(f.class_name) in clause.kinds]
    return found


def _size_matches(values: Sequence[float], tol: float, fact: FindingFact) -> bool:
    sides = (fact.width_mm, fact.height_mm)
    if len(values) == 1:
        return any(abs(values[0] - side) <= tol for side in (*sides, fact.max_diameter_mm))
    return any(
        all(abs(v - s) <= tol for v, s in zip(values, order, strict=True))
        for order in (sides, sides[::-1])
    )


def _allowed_counts(noun: str, clause: Clause, facts: StudyFacts) -> set[int]:
    tumours = facts.tumours
    on_images = [f for f in tumours if f.image_number in clause.images]
    if noun == "image":
        statuses = (
            facts.positive_images,
            facts.negative_images,
            facts.unremarkable_images,
            facts.negative_images + facts.unremarkable_images,
        )
        return {facts.image_count, len(clause.images), *(len(s) for s in statuses)}
    if noun == "class":
        return {len(facts.classes_detected)}
    if noun.startswith("kind:"):
        kind = noun.removeprefix("kind:")
        return {
            sum(fact_kind(f.class_name) == kind for f in tumours),
            sum(fact_kind(f.class_name) == kind for f in on_images),
        } - ({0} if clause.images and on_images else set())
    per_kind = {fact_kind(f.class_name) for f in tumours}
    allowed = {len(tumours), len(_all_findings(facts))}
    allowed |= {sum(fact_kind(f.class_name) == k for f in tumours) for k in per_kind}
    if clause.images:
        allowed.add(len(on_images))
    return allowed
