"""Adversarial mutants: faithful report texts, each made unfaithful to its facts in one known way.

The faithful sources are the template's FINDINGS and IMPRESSION for seeded random studies and
the prompt's worked examples (their answers, and the template's text for their facts). Each
mutator makes one kind of change (a value swapped, a count off by one, a location inserted...)
and returns None where that change cannot apply to a text, or would not change any fact: every
mutant states something its facts do not hold, so a verifier must reject every one.

A mutator finds what a sentence says through the *slots* of the faithful text: a size, a
confidence or a longest side is bound to the finding its sentence states (same image number,
class, and the very number the template or the example wrote for it), so a mutator knows which
fact it changes and checks that the new value really differs from it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache

from mriscribe.report.facts import FindingFact, StudyFacts, image_facts, is_negative_class
from mriscribe.report.prompt import EXAMPLES
from mriscribe.report.template import template_report

CLASSES = ("Glioma", "Meningioma", "Pituitary", "No Tumor")
TUMOUR_CLASSES = ("Glioma", "Meningioma", "Pituitary")
DEFAULT = "default 0.5 mm/px (estimate)"
DICOM = "DICOM PixelSpacing"
STUDIES = 300  # seeded random studies whose template text is mutated
PER_KIND = 100  # mutants kept per kind (the examples' first, then the random studies')

# The phrase the examples' answers name each kind by ("a suspected pituitary tumour").
KIND_WORD = {"glioma": "glioma", "meningioma": "meningioma", "pituitary": "pituitary tumour"}


def class_kind(name: str) -> str | None:
    """ "glioma", "meningioma", "pituitary", "negative" or None: what a class name or a text's
    word for it ("Glioma", "gliomas", "pituitary tumour", "No Tumor") names. The mutants' own
    reading, independent of the code under test."""
    if is_negative_class(name) or re.fullmatch(r"no tumou?rs?", name, re.IGNORECASE):
        return "negative"
    lowered = name.lower()
    for stem, kind in (("glio", "glioma"), ("mening", "meningioma"), ("pituitar", "pituitary")):
        if stem in lowered:
            return kind
    return None


def study_result(facts: StudyFacts) -> str:
    """ "positive" (a tumour), "negative" (every image classified No Tumor), else
    "indeterminate" (an image without any detection above the threshold)."""
    if facts.positive:
        return "positive"
    return "negative" if facts.images and not facts.unremarkable_images else "indeterminate"


# The faithful sources -----------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """A faithful text, its facts, and every sentence of its study's faithful texts."""

    name: str
    study: str  # texts of one study share it (a foreign sentence comes from another study)
    text: str
    facts: StudyFacts
    own: frozenset[str]
    joiner: str  # between sentences: "\n" (the template) or " " (an example's answers)
    impression: int  # where the IMPRESSION starts in the text

    def section(self, position: int) -> str:
        return "IMPRESSION" if position >= self.impression else "FINDINGS"


@dataclass(frozen=True)
class Mutant:
    kind: str
    source: str
    change: str  # what was changed, for a failure message
    text: str
    facts: StudyFacts


Mutation = tuple[str, str]  # (the mutant text, what was changed)
Mutator = Callable[[Source, random.Random], Mutation | None]


def random_study(seed: int) -> StudyFacts:
    """1-8 images with 0-2 findings each: random classes (No Tumor among them), confidences of
    25-99%, sides of 4-60 mm, each image's spacing from its file or an estimate."""
    rng = random.Random(f"mutant study {seed}")
    images = []
    for number in range(1, rng.randint(1, 8) + 1):
        estimated = rng.random() < 0.5
        found = [
            FindingFact(
                number,
                rng.choice(CLASSES),
                rng.uniform(0.25, 0.99),
                rng.uniform(4.0, 60.0),
                rng.uniform(4.0, 60.0),
                estimated,
            )
            for _ in range(rng.randint(0, 2))
        ]
        images.append(image_facts(number, found, DEFAULT if estimated else DICOM, estimated))
    return StudyFacts(tuple(images), 0.25)


def narrative(facts: StudyFacts) -> str:
    """The template's FINDINGS and IMPRESSION, as the verifier is given a model's narrative."""
    sections = template_report(facts, model_name="mriscribe-yolov8n", model_version="1.0").sections
    return f"Findings:\n{sections['FINDINGS']}\nImpression:\n{sections['IMPRESSION']}"


@cache
def faithful_sources() -> tuple[Source, ...]:
    """The worked examples (answers joined, answers under headings, the template's text) and
    the template's text for STUDIES random studies, examples first."""
    sources: list[Source] = []
    for n, (facts, answers) in enumerate(EXAMPLES, start=1):
        findings = " ".join(answers[:-1])
        headed = f"Findings: {findings}\nImpression: {answers[-1]}"
        texts = {
            "answers": (" ".join(answers), " ", len(findings) + 1),
            "headed": (headed, " ", headed.index("\nImpression:")),
            "template": (narrative(facts), "\n", narrative(facts).index("\nImpression:")),
        }
        own = frozenset(s.text for text, *_ in texts.values() for s in sentences(text))
        sources.extend(
            Source(f"example {n} ({form})", f"example {n}", text, facts, own, joiner, start)
            for form, (text, joiner, start) in texts.items()
        )
    for seed in range(STUDIES):
        facts = random_study(seed)
        text = narrative(facts)
        own = frozenset(s.text for s in sentences(text))
        start = text.index("\nImpression:")
        sources.append(Source(f"study {seed}", f"study {seed}", text, facts, own, "\n", start))
    return tuple(sources)


# What a faithful text says: sentences and the slots bound to findings ---------------------------


@dataclass(frozen=True)
class Sentence:
    start: int
    end: int  # just past the full stop
    text: str
    fact: FindingFact | None  # the finding the sentence states a size or confidence of


@dataclass(frozen=True)
class Slot:
    kind: str  # "size" ("W x H"), "confidence" ("P" of "P%") or "longest" (a longest side)
    start: int
    end: int
    fact: FindingFact
    sentence: Sentence


_HEADING = re.compile(r"^(?:Findings|Impression):", re.MULTILINE)
_SENTENCE = re.compile(r"\S[^\n]*?\.(?=\s|$)")
_IMAGE = re.compile(r"\b([Ii])mage (\d+)\b(?!-)")
_SIZE = re.compile(r"\b(\d+\.\d) x (\d+\.\d)(?= mm\b)")
_CONFIDENCE = re.compile(r"\bconfidence (\d+\.\d)(?=%)")
_LONGEST = re.compile(r"\blongest box side (\d+\.\d)(?= mm\b)")
_CLASS_WORD = re.compile(r"\b(glioma|meningioma|pituitary|no tumou?r)\b", re.IGNORECASE)
# Where a sentence names the class of the finding it states: a template finding line, the
# template's largest-lesion line, an example's "shows a suspected glioma measuring".
_CLASS_MENTIONS = (
    re.compile(r"^Image \d+: (Glioma|Meningioma|Pituitary)(?=,)"),
    re.compile(r"^(?:Largest lesion|Lesion size): (Glioma|Meningioma|Pituitary)(?= on image)"),
    re.compile(r"\bsuspected (glioma|meningioma|pituitary tumour)(?= measuring)"),
)


def sentences(text: str) -> list[Sentence]:
    """The sentences of a faithful text (headings left out), without their bound findings."""
    masked = _HEADING.sub(lambda m: " " * len(m.group(0)), text)
    return [Sentence(m.start(), m.end(), m.group(0), None) for m in _SENTENCE.finditer(masked)]


def percent_text(fact: FindingFact) -> str:
    return f"{fact.confidence * 100:.1f}"


def size_pair(fact: FindingFact) -> str:
    return f"{fact.width_mm:.1f} x {fact.height_mm:.1f}"


def stated_fact(sentence: str, facts: StudyFacts) -> FindingFact | None:
    """The finding a sentence states, if it states one: on the image it names, of the class it
    names, with exactly the size, confidence and longest side it writes (at least one of them)."""
    image = _IMAGE.search(sentence)
    if image is None:
        return None
    number = int(image.group(2))
    size, confidence = _SIZE.search(sentence), _CONFIDENCE.search(sentence)
    longest = _LONGEST.search(sentence)
    if size is None and confidence is None:
        return None
    kinds = {class_kind(m.group(1)) for m in _CLASS_WORD.finditer(sentence)}
    for found in facts.images:
        for fact in (*found.tumours, *found.negatives):
            if (
                fact.image_number == number
                and (not kinds or class_kind(fact.class_name) in kinds)
                and (size is None or size.group(0) == size_pair(fact))
                and (confidence is None or confidence.group(1) == percent_text(fact))
                and (longest is None or longest.group(1) == f"{fact.max_diameter_mm:.1f}")
            ):
                return fact
    return None


def bound_sentences(source: Source) -> list[Sentence]:
    """The source's sentences, each with the finding it states (if any)."""
    return [
        Sentence(s.start, s.end, s.text, stated_fact(s.text, source.facts))
        for s in sentences(source.text)
    ]


def slots(source: Source, kind: str | None = None) -> list[Slot]:
    """The sizes, confidences and longest sides the source writes, each bound to its finding."""
    found: list[Slot] = []
    for sentence in bound_sentences(source):
        if sentence.fact is None:
            continue
        for name, pattern in (("size", _SIZE), ("confidence", _CONFIDENCE), ("longest", _LONGEST)):
            for match in pattern.finditer(sentence.text):
                group = 0 if name == "size" else 1
                start = sentence.start + match.start(group)
                end = sentence.start + match.end(group)
                found.append(Slot(name, start, end, sentence.fact, sentence))
    return [slot for slot in found if kind is None or slot.kind == kind]


@dataclass(frozen=True)
class Mention:
    """Where a sentence names the class of the tumour finding it states."""

    start: int
    end: int
    word: str
    fact: FindingFact
    sentence: Sentence


def class_mentions(source: Source) -> list[Mention]:
    """The class names of the tumour findings that the source's sentences state."""
    found: list[Mention] = []
    for sentence in bound_sentences(source):
        fact = sentence.fact
        if fact is None or class_kind(fact.class_name) == "negative":
            continue
        for pattern in _CLASS_MENTIONS:
            match = pattern.search(sentence.text)
            if match is not None:
                start, end = sentence.start + match.start(1), sentence.start + match.end(1)
                found.append(Mention(start, end, match.group(1), fact, sentence))
    return found


def splice(text: str, start: int, end: int, new: str) -> str:
    return text[:start] + new + text[end:]


def false_sentence(source: Source, slot: Slot, new: str) -> bool:
    """Whether ``slot``'s sentence, with ``new`` written in the slot, states no finding of the
    facts (the new value is not, by chance, another finding's on that image and of that class)."""
    sentence = slot.sentence
    changed = splice(sentence.text, slot.start - sentence.start, slot.end - sentence.start, new)
    return stated_fact(changed, source.facts) is None


def insert_sentence(source: Source, after: Sentence, new: str) -> str:
    """``new`` as a sentence of its own right after ``after``."""
    return source.text[: after.end] + source.joiner + new + source.text[after.end :]


def same_size(a: tuple[float, float], b: tuple[float, float], tol: float = 0.5) -> bool:
    """Whether two width x height pairs agree within ``tol`` (in either order)."""
    return any(abs(a[0] - x) < tol and abs(a[1] - y) < tol for x, y in ((b[0], b[1]), (b[1], b[0])))


def sides(fact: FindingFact) -> tuple[float, float]:
    return (round(fact.width_mm, 1), round(fact.height_mm, 1))


def confidence(fact: FindingFact) -> float:
    return round(fact.confidence * 100, 1)


# Numbers in words ---------------------------------------------------------------------------

_ONES = (
    *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    *("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen"),
    *("eighteen", "nineteen"),
)
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def whole_words(number: int) -> str:
    """0-199 in words: 31 -> "thirty-one"."""
    if number >= 100:
        rest = number - 100
        return "one hundred" + (f" and {whole_words(rest)}" if rest else "")
    if number < 20:
        return _ONES[number]
    tens, ones = divmod(number, 10)
    return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")


def number_words(value: float, decimal: bool = True) -> str:
    """31.5 -> "thirty-one point five"; with decimal=False, 91.0 -> "ninety-one"."""
    tenths = round(value * 10)
    whole, tenth = divmod(tenths, 10)
    words = whole_words(whole)
    return f"{words} point {_ONES[tenth]}" if decimal and tenth else words


# The mutators -------------------------------------------------------------------------------


def swap_values(source: Source, rng: random.Random) -> Mutation | None:
    """Two findings' sizes, or two findings' confidences, exchanged (a tumour's confidence may
    come from a No Tumor finding): only where the two values differ by more than rounding."""
    kinds = ["size", "confidence"]
    rng.shuffle(kinds)
    for kind in kinds:
        found = slots(source, kind)
        pairs = [
            (a, b)
            for i, a in enumerate(found)
            for b in found[i + 1 :]
            if a.fact != b.fact
            and (
                not same_size(sides(a.fact), sides(b.fact))
                if kind == "size"
                else abs(confidence(a.fact) - confidence(b.fact)) >= 0.5
            )
        ]
        if not pairs:
            continue
        a, b = rng.choice(pairs)
        first, second = source.text[a.start : a.end], source.text[b.start : b.end]
        if not (false_sentence(source, a, second) and false_sentence(source, b, first)):
            return None
        text = splice(source.text, b.start, b.end, first)  # b comes after a: splice b first
        text = splice(text, a.start, a.end, second)
        return text, f"{kind}s {first} and {second} swapped"
    return None


def threshold_as_confidence(source: Source, rng: random.Random) -> Mutation | None:
    """The confidence threshold written as a finding's confidence ("confidence 25.0%" for a 91.2%
    detection), or added as one ("(confidence 25%)") where the text states none."""
    threshold = source.facts.conf_threshold * 100
    found = [s for s in slots(source, "confidence") if abs(confidence(s.fact) - threshold) >= 0.5]
    if found:
        slot = rng.choice(found)
        written = rng.choice([f"{threshold:.1f}", f"{threshold:g}"])
        old = source.text[slot.start : slot.end]
        if not false_sentence(source, slot, written):
            return None
        return splice(source.text, slot.start, slot.end, written), f"confidence {old} -> {written}"
    mentions = [
        m
        for m in class_mentions(source)
        if abs(confidence(m.fact) - threshold) >= 0.5 and "confidence" not in m.sentence.text
    ]
    if not mentions:
        return None
    mention = rng.choice(mentions)
    added = f" (confidence {threshold:g}%)"
    return splice(source.text, mention.end, mention.end, added), f"added{added}"


def confidence_changed(source: Source, rng: random.Random) -> Mutation | None:
    """A confidence changed by 2-15 percentage points (far more than its rounding), or a wrong
    one added where the text states none."""
    delta = rng.choice([-1, 1]) * round(rng.uniform(2.0, 15.0), 1)
    found = [s for s in slots(source, "confidence") if 1.0 <= confidence(s.fact) + delta <= 99.9]
    if found:
        slot = rng.choice(found)
        new = f"{confidence(slot.fact) + delta:.1f}"
        old = source.text[slot.start : slot.end]
        if abs(float(new) - confidence(slot.fact)) < 1.0 or not false_sentence(source, slot, new):
            return None
        return splice(source.text, slot.start, slot.end, new), f"confidence {old} -> {new}"
    mentions = [
        m
        for m in class_mentions(source)
        if 1.0 <= confidence(m.fact) + delta <= 99.9 and "confidence" not in m.sentence.text
    ]
    if not mentions:
        return None
    mention = rng.choice(mentions)
    added = f" (confidence {confidence(mention.fact) + delta:.1f}%)"
    return splice(source.text, mention.end, mention.end, added), f"added{added}"


def size_changed(source: Source, rng: random.Random) -> Mutation | None:
    """One side of a size, or a longest side, changed by 1-8 mm (far more than its rounding)."""
    found = slots(source, "size") + slots(source, "longest")
    if not found:
        return None
    slot = rng.choice(found)
    delta = rng.choice([-1, 1]) * round(rng.uniform(1.0, 8.0), 1)
    old = source.text[slot.start : slot.end]
    if slot.kind == "longest":
        value = round(slot.fact.max_diameter_mm + delta, 1)
        if value < 1.0 or abs(value - slot.fact.max_diameter_mm) < 1.0:
            return None
        new = f"{value:.1f}"
    else:
        width, height = sides(slot.fact)
        if rng.random() < 0.5:
            width = round(width + delta, 1)
        else:
            height = round(height + delta, 1)
        if min(width, height) < 1.0 or same_size((width, height), sides(slot.fact), 1.0):
            return None
        new = f"{width:.1f} x {height:.1f}"
    if not false_sentence(source, slot, new):
        return None
    return splice(source.text, slot.start, slot.end, new), f"size {old} -> {new}"


def hedge_removed(source: Source, rng: random.Random) -> Mutation | None:
    """ "about"/"approximately" (and the template's "estimated" note) deleted from a size the
    facts say is estimated (no pixel spacing in the file), so that it reads as a measurement:
    "approximately 51.0 x 43.8 mm (estimated from ...)" -> "measuring 51.0 x 43.8 mm"."""
    candidates = [
        slot
        for slot in slots(source, "size")
        if slot.fact.size_estimated
        and re.search(r"\b(?:approximately|about) $", source.text[slot.sentence.start : slot.start])
    ]
    if not candidates:
        return None
    slot = rng.choice(candidates)
    sentence = slot.sentence
    head = source.text[sentence.start : slot.start]
    head = re.sub(r"(?:measuring )?(?:approximately|about) $", "measuring ", head)
    tail = source.text[slot.start : sentence.end]
    tail = tail.replace(" (estimated from default pixel spacing)", "")
    new = head + tail
    if re.search(r"\b(?:about|approximately|approx|around|roughly|estimated?)\b", new):
        return None
    text = splice(source.text, sentence.start, sentence.end, new)
    return text, f"hedge removed: {new!r}"


_COUNT_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def count_off_by_one(source: Source, rng: random.Random) -> Mutation | None:
    """A count one more or one less than the facts' (never 0): tumours ("Tumour detections: 3",
    "2 suspected tumours"), tumours of a class ("Glioma (2)", "two suspected gliomas"), images
    with a tumour or in the study ("on 3 of 5 images")."""
    facts = source.facts
    counts = facts.counts_by_class
    kinds = {class_kind(name): n for name, n in counts.items()}
    positive, total = len(facts.positive_images), facts.image_count
    found: list[tuple[int, int, int, str]] = []  # (start, end, true count, pattern name)

    def add(pattern: str, true: Callable[[re.Match[str]], int | None], name: str) -> None:
        for match in re.finditer(pattern, source.text):
            value = true(match)
            if value is not None:
                found.append((match.start(1), match.end(1), value, name))

    add(r"Tumour detections: (\d+)", lambda m: len(facts.tumours), "tumours")
    add(r"detected (\d+) suspected tumours?\b", lambda m: len(facts.tumours), "tumours")
    for name, n in counts.items():
        for match in re.finditer(rf"\b{re.escape(name)} \((\d+)\)", source.text):
            found.append((match.start(1), match.end(1), n, "class"))
    words = "|".join(_COUNT_WORDS[1:])
    add(
        rf"\b({words}) suspected (?:glioma|meningioma|pituitary tumour)s?\b",
        lambda m: kinds.get(class_kind(m.group(0).split("suspected ")[1])),
        "kind",
    )
    add(r"\bon (\d+) of \d+ images\b", lambda m: positive, "images")
    add(r"\bon \d+ of (\d+) images\b", lambda m: total, "images")
    add(r"\bon all (\d+) images\b", lambda m: total, "images")
    add(r"\bany of the (\d+) images\b", lambda m: total, "images")
    if not found:
        return None
    start, end, true, name = rng.choice(found)
    old = source.text[start:end]
    stated = _COUNT_WORDS.index(old) if old in _COUNT_WORDS else int(old)
    if stated != true:
        return None
    new_count = true + rng.choice([-1, 1]) if true > 1 else true + 1
    new = count_words(new_count) if old in _COUNT_WORDS else str(new_count)
    text = splice(source.text, start, end, new)
    # Keep the noun's number in step: "1 suspected tumour" -> "2 suspected tumours".
    tail = text[start + len(new) :]
    noun = re.match(r" suspected (tumour|glioma|meningioma|pituitary tumour)(s?)\b", tail)
    if noun is not None:
        plural = "s" if new_count != 1 else ""
        fixed = f" suspected {noun.group(1)}{plural}"
        text = text[: start + len(new)] + fixed + tail[noun.end() :]
    way = "up" if new_count > true else "down"
    return text, f"{name} count {old} -> {new} ({way}, in the {source.section(start)})"


def count_words(count: int) -> str:
    return _COUNT_WORDS[count] if count < len(_COUNT_WORDS) else str(count)


def negation_flip(source: Source, rng: random.Random) -> Mutation | None:
    """Positive said negative or the other way round: the study's result word flipped
    ("Positive study" <-> "Negative study", "Indeterminate" -> either), "Tumour detections:
    none." for a positive study, an image with a tumour said to have none ("Image 2 was
    negative."), an image without one said to have one."""
    facts = source.facts
    result = study_result(facts)
    options: list[Callable[[], Mutation | None]] = []
    word = re.search(r"\b(Positive|Negative|Indeterminate) study\b", source.text)
    if word is not None:
        new = {"positive": "Negative", "negative": "Positive"}.get(
            result, rng.choice(["Negative", "Positive"])
        )

        def flip_word() -> Mutation | None:
            text = splice(source.text, word.start(1), word.end(1), new)
            return text, f"{word.group(1)} study -> {new} study ({result})"

        options.append(flip_word)
    detections = re.search(r"Tumour detections: \d+[^\n]*\.", source.text)
    if detections is not None and facts.positive:

        def say_none() -> Mutation | None:
            none = "Tumour detections: none."
            text = splice(source.text, detections.start(), detections.end(), none)
            return text, "Tumour detections: none (positive study)"

        options.append(say_none)
    found = bound_sentences(source)
    if found:

        def say_negative() -> Mutation | None:
            if not facts.positive_images:
                return None
            number = rng.choice(facts.positive_images)
            new = rng.choice(
                [
                    f"No tumour was detected on image {number}.",
                    f"Image {number} was negative.",
                    f"Image {number}: no tumour detected.",
                    f"No tumour was seen on image {number}.",
                ]
            )
            return insert_sentence(source, rng.choice(found), new), f"{new!r} (it has a tumour)"

        def say_positive() -> Mutation | None:
            empty = [i.number for i in facts.images if i.status != "positive"]
            if not empty:
                return None
            number = rng.choice(empty)
            new = rng.choice(
                [
                    f"A tumour was detected on image {number}.",
                    f"Image {number} was positive.",
                    f"Image {number} shows a suspected tumour.",
                ]
            )
            return insert_sentence(source, rng.choice(found), new), f"{new!r} (it has none)"

        options.extend([say_negative, say_positive])
    rng.shuffle(options)
    for option in options:
        mutation = option()
        if mutation is not None:
            return mutation
    return None


def image_moved(source: Source, rng: random.Random) -> Mutation | None:
    """An image number moved: to another image of the study that does not hold what the sentence
    says (a finding it lacks; a tumour on a tumour-free image, or none on one with a tumour), or
    past the study's last image."""
    facts = source.facts
    by_number = {image.number: image for image in facts.images}
    candidates: list[tuple[int, int, int, int]] = []  # (start, end, old number, new number)
    for sentence in bound_sentences(source):
        for match in _IMAGE.finditer(sentence.text):
            number = int(match.group(2))
            if number not in by_number or re.match(
                r",\s*\d+(?![.\d])", sentence.text[match.end() :]
            ):
                continue
            start, end = sentence.start + match.start(2), sentence.start + match.end(2)
            beyond = facts.image_count + rng.randint(1, 3)
            candidates.append((start, end, number, beyond))
            for other in by_number.values():
                if other.number == number:
                    continue
                if sentence.fact is not None:
                    fact = sentence.fact
                    held = any(
                        class_kind(f.class_name) == class_kind(fact.class_name)
                        and (percent_text(f) == percent_text(fact) or sides(f) == sides(fact))
                        for f in (*other.tumours, *other.negatives)
                    )
                    if not held:
                        candidates.append((start, end, number, other.number))
                elif (other.status == "positive") != (by_number[number].status == "positive"):
                    candidates.append((start, end, number, other.number))
    if not candidates:
        return None
    within = [c for c in candidates if c[3] <= facts.image_count]
    start, end, old, new = rng.choice(within if within and rng.random() < 0.6 else candidates)
    text = splice(source.text, start, end, str(new))
    where = "another image" if new <= facts.image_count else f"beyond {facts.image_count} images"
    return text, f"image {old} -> image {new} ({where})"


def class_renamed(source: Source, rng: random.Random) -> Mutation | None:
    """A tumour's class renamed (glioma -> meningioma...), where a sentence states the finding or
    in the impression's counts ("Glioma (2)" -> "Pituitary (2)", to a class not detected)."""
    options: list[tuple[int, int, str, str]] = []  # (start, end, old, new)
    for mention in class_mentions(source):
        old_kind = class_kind(mention.fact.class_name)
        image = next(i for i in source.facts.images if i.number == mention.fact.image_number)
        for name in TUMOUR_CLASSES:
            kind = class_kind(name)
            if kind == old_kind or any(class_kind(f.class_name) == kind for f in image.tumours):
                continue
            new = name if mention.word[0].isupper() else KIND_WORD[kind or ""]
            options.append((mention.start, mention.end, mention.word, new))
    detected = {class_kind(name) for name in source.facts.classes_detected}
    undetected = [name for name in TUMOUR_CLASSES if class_kind(name) not in detected]
    for match in re.finditer(r"\b(Glioma|Meningioma|Pituitary)(?= \(\d+\))", source.text):
        options.extend((match.start(), match.end(), match.group(0), n) for n in undetected)
    pattern = r"(?<=\bsuspected )(glioma|meningioma|pituitary tumour)(?=s?[,.])"
    for match in re.finditer(pattern, source.text):
        options.extend(
            (match.start(), match.end(), match.group(0), KIND_WORD[class_kind(n) or ""])
            for n in undetected
        )
    if not options:
        return None
    start, end, old, new = rng.choice(options)
    return splice(source.text, start, end, new), f"{old} -> {new} in the {source.section(start)}"


def _insert_at_class(
    source: Source,
    rng: random.Random,
    before: Sequence[str],
    after: Sequence[str],
    for_suspected: bool = False,
) -> Mutation | None:
    """A word before, or a phrase after, the class a sentence states a tumour finding of (with
    ``for_suspected``, a word before takes the place of "suspected" where it stands there)."""
    mentions = class_mentions(source)
    if not mentions:
        return None
    mention = rng.choice(mentions)
    if rng.random() < 0.5:
        word = rng.choice(before)
        start = mention.start
        if for_suspected and source.text[:start].endswith("suspected "):
            start -= len("suspected ")
        text = splice(source.text, start, mention.start, word + " ")
        if start < mention.start and word[0] in "aeiou" and text[:start].endswith(" a "):
            text = splice(text, start - 2, start - 1, "an")  # "a suspected" -> "an incidental"
        return text, f"{word!r} before {mention.word}"
    phrase = rng.choice(after)
    return splice(source.text, mention.end, mention.end, phrase), f"{phrase!r} after {mention.word}"


def _append_to_sentence(
    source: Source,
    rng: random.Random,
    clauses: Sequence[str],
    sentences_: Sequence[str],
    tumours_only: bool = False,
) -> Mutation | None:
    """A clause appended to a sentence (in place of its full stop; with ``tumours_only``, only to
    a sentence that states a tumour), or a sentence of its own after any sentence."""
    found = bound_sentences(source)
    if not found:
        return None
    takes_clause = [s for s in found if not tumours_only or states_tumour(s)]
    if takes_clause and rng.random() < 0.5:
        sentence = rng.choice(takes_clause)
        clause = rng.choice(clauses)
        return splice(source.text, sentence.end - 1, sentence.end, clause), f"appended {clause!r}"
    new = rng.choice(sentences_)
    return insert_sentence(source, rng.choice(found), new), f"added {new!r}"


def states_tumour(sentence: Sentence) -> bool:
    """Whether a faithful sentence states a tumour (a finding, or the positive result)."""
    if sentence.fact is not None:
        return class_kind(sentence.fact.class_name) != "negative"
    return bool(re.search(r"Positive study|Tumour detections: \d|suspected", sentence.text))


_QUALIFIER_CLAUSES = (
    ", later excluded on review.",
    ", which is unlikely to be a true tumour.",
    ", most likely benign.",
    ", confirmed on review.",
    ", probably an artefact of the scan.",
    ", since dismissed by the reporting radiologist.",
    ", in keeping with a low-grade lesion.",
    ", which was reviewed and found to be clinically insignificant.",
)
_REVIEW_SENTENCES = (
    "A radiologist agreed.",
    "The radiologist confirmed these findings.",
    "This was reviewed by a neuroradiologist, who agreed.",
    "The result was confirmed on review.",
    "A second reader disagreed and excluded the finding.",
    "Histology confirmed the diagnosis.",
)
_QUALIFIER_WORDS = ("confirmed", "benign", "definite", "malignant", "low-grade", "incidental")


def qualifier_appended(source: Source, rng: random.Random) -> Mutation | None:
    """An invented qualifier or review outcome: ", later excluded on review.", ", which is
    unlikely to be a true tumour.", " A radiologist agreed.", or a word such as "confirmed" or
    "benign" before a tumour's class. The facts hold no review and no judgement of a lesion."""
    if class_mentions(source) and rng.random() < 0.3:
        return _insert_at_class(
            source, rng, _QUALIFIER_WORDS, (", confirmed on review",), for_suspected=True
        )
    return _append_to_sentence(
        source, rng, _QUALIFIER_CLAUSES, _REVIEW_SENTENCES, tumours_only=True
    )


def location_inserted(source: Source, rng: random.Random) -> Mutation | None:
    """A location or side the facts do not hold, at a tumour's class: "in the left frontal
    lobe", "right-sided", "suprasellar", "hippocampal"."""
    return _insert_at_class(
        source,
        rng,
        (
            "right-sided",
            "left-sided",
            "suprasellar",
            "hippocampal",
            "parasagittal",
            "intraventricular",
            "thalamic",
            "cerebellar",
            "left frontal",
            "midline",
        ),
        (
            " in the left frontal lobe",
            " in the right temporal lobe",
            " in the posterior fossa",
            " near the sella",
            " in the hippocampus",
            " along the falx",
            " at the skull base",
            " in the right hemisphere",
            " (suprasellar)",
            " (left-sided)",
        ),
    )


def time_word_inserted(source: Source, rng: random.Random) -> Mutation | None:
    """A comparison with an earlier study, which the facts never hold: "an enlarging glioma",
    "new", "stable", "since the prior study"."""
    if rng.random() < 0.25:
        return _append_to_sentence(
            source,
            rng,
            (
                ", unchanged since the prior study.",
                ", as on the previous scan.",
                ", stable compared with last year.",
                ", larger than on the previous examination.",
            ),
            (
                "There has been no change since the prior study.",
                "The findings are new since the previous scan.",
                "Compared with the earlier MRI, the lesion has grown.",
            ),
        )
    return _insert_at_class(
        source,
        rng,
        ("enlarging", "new", "stable", "growing", "recurrent", "shrinking", "newly appeared"),
        (
            " (new since the prior study)",
            " that has grown since the last scan",
            " (stable compared with the previous examination)",
            " unchanged from the earlier MRI",
            " (enlarged since last year)",
            " that was not present before",
        ),
    )


def feature_inserted(source: Source, rng: random.Random) -> Mutation | None:
    """A sequence or imaging feature the facts do not hold: "a FLAIR-bright glioma",
    "ring-enhancing", "with surrounding oedema", "on T2"."""
    return _insert_at_class(
        source,
        rng,
        (
            "FLAIR-bright",
            "ring-enhancing",
            "T2-hyperintense",
            "contrast-enhancing",
            "cystic",
            "necrotic",
            "diffusion-restricting",
            "haemorrhagic",
            "calcified",
            "well-circumscribed",
            "infiltrative",
        ),
        (
            " with surrounding oedema",
            " on T2",
            " on FLAIR",
            " on the post-contrast T1 image",
            " with mass effect",
            " with a dural tail",
            " showing restricted diffusion",
            " with a necrotic centre",
            " on diffusion-weighted imaging",
        ),
    )


def number_in_words(source: Source, rng: random.Random) -> Mutation | None:
    """A size or a confidence written in words, and wrong by more than rounding ("thirty-five
    point five by twenty-four millimetres" for 31.5 x 24.0 mm, "ninety-eight percent" for
    91.2%). A right value in words is merely unreadable to a strict check, not unfaithful."""
    found = slots(source, "size") + slots(source, "confidence")
    if not found:
        return None
    slot = rng.choice(found)
    delta = rng.choice([-1, 1]) * rng.choice([2.0, 3.0, 4.5, 5.0, 10.0, 12.5])
    old = source.text[slot.start : slot.end]
    if slot.kind == "confidence":
        value = confidence(slot.fact) + delta
        if not 1.0 <= value <= 99.9:
            return None
        decimal = rng.random() < 0.5
        new = number_words(value, decimal) + " percent"
        stated = round(value, 1) if decimal else round(value)
        if abs(stated - confidence(slot.fact)) < 1.0:
            return None
        text = splice(
            source.text, slot.start - len("confidence "), slot.end + 1, "confidence " + new
        )
        return text, f"confidence {old}% -> {new}"
    width, height = sides(slot.fact)
    if rng.random() < 0.5:
        width = round(width + delta, 1)
    else:
        height = round(height + delta, 1)
    if min(width, height) < 1.0 or same_size((width, height), sides(slot.fact), 1.0):
        return None
    new = f"{number_words(width)} by {number_words(height)} millimetres"
    text = splice(source.text, slot.start, slot.end + len(" mm"), new)
    return text, f"size {old} mm -> {new}"


def _foreign_false(sentence: str, facts: StudyFacts) -> bool:
    """Whether a sentence from another study says something ``facts`` do not hold, as far as
    can be told: a finding this study lacks, another result, another number of tumours."""
    if stated_fact(sentence, facts) is None and (
        _SIZE.search(sentence) or _CONFIDENCE.search(sentence)
    ):
        return _IMAGE.search(sentence) is not None
    word = re.search(r"\b(Positive|Negative|Indeterminate) study\b", sentence)
    if word is not None:
        return word.group(1).lower() != study_result(facts)
    count = re.match(r"Tumour detections: (\d+|none)\b", sentence)
    if count is not None:
        stated = 0 if count.group(1) == "none" else int(count.group(1))
        return stated != len(facts.tumours)
    return False


def _checkable(sentence: str) -> bool:
    return bool(
        _SIZE.search(sentence)
        or _CONFIDENCE.search(sentence)
        or re.search(r"\b(?:Positive|Negative|Indeterminate) study\b", sentence)
        or sentence.startswith("Tumour detections:")
    )


@cache
def foreign_pool() -> tuple[tuple[str, str], ...]:
    """(study, sentence) for every checkable sentence of every faithful source."""
    pool = {
        (source.study, s.text)
        for source in faithful_sources()
        for s in sentences(source.text)
        if _checkable(s.text)
    }
    return tuple(sorted(pool))


def foreign_sentence(
    source: Source, rng: random.Random, pool: Sequence[tuple[str, str]] = ()
) -> Mutation | None:
    """A sentence of another study's faithful text inserted, where it says something this
    study's facts do not hold (and is not a sentence of this study's own faithful texts)."""
    found = sentences(source.text)
    pool = pool or foreign_pool()
    if not found or not pool:
        return None
    for _ in range(40):
        study, sentence = rng.choice(pool)
        if study == source.study or sentence in source.own:
            continue
        if _foreign_false(sentence, source.facts):
            return insert_sentence(source, rng.choice(found), sentence), f"inserted {sentence!r}"
    return None


MUTATORS: dict[str, Mutator] = {
    "swapped_values": swap_values,
    "threshold_as_confidence": threshold_as_confidence,
    "count_off_by_one": count_off_by_one,
    "negation_flip": negation_flip,
    "image_moved": image_moved,
    "class_renamed": class_renamed,
    "qualifier_appended": qualifier_appended,
    "location_inserted": location_inserted,
    "time_word_inserted": time_word_inserted,
    "feature_inserted": feature_inserted,
    "number_in_words": number_in_words,
    "foreign_sentence": foreign_sentence,
    "size_changed": size_changed,
    "confidence_changed": confidence_changed,
    "hedge_removed": hedge_removed,
}
KINDS = tuple(MUTATORS)


def mutants_of(kind: str, limit: int = PER_KIND) -> Iterator[Mutant]:
    """Up to ``limit`` distinct mutants of one kind, seeded by kind: from every worked example's
    texts first, then from the random studies in an order of the kind's own."""
    mutate = MUTATORS[kind]
    rng = random.Random(f"mutants {kind}")
    examples = [s for s in faithful_sources() if s.study.startswith("example")]
    studies = [s for s in faithful_sources() if not s.study.startswith("example")]
    rng.shuffle(studies)
    seen: set[str] = set()
    for source in examples + studies:
        if len(seen) >= limit:
            return
        mutation = mutate(source, rng)
        if mutation is None:
            continue
        text, change = mutation
        if text == source.text or text in seen:
            continue
        seen.add(text)
        yield Mutant(kind, source.name, change, text, source.facts)


@cache
def all_mutants() -> tuple[Mutant, ...]:
    return tuple(mutant for kind in KINDS for mutant in mutants_of(kind))
