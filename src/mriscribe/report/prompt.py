"""The language model's prompt: a fixed few-shot prefix, then only the study's essential facts.

The prefix (an instruction line and worked examples) is the same for every request, so an
engine evaluates it once and keeps it. The request states the facts in the order the answer
should follow them: tumours image by image (class, size in mm, "about" when estimated), then
the images without a tumour, then the result with the counts spelt out as the answer should
say them. A small base model
then only has to rephrase, which it does well; what it gets wrong the verifier catches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from mriscribe.report.engines.base import Constraint, Prompt
from mriscribe.report.facts import LesionFact, SeriesFacts, StudyFacts, study_of
from mriscribe.report.forms import (
    Bound,
    answer_gbnf,
    answer_language,
    empty_images,
    finding,
    more,
    negative_images,
    result,
)
from mriscribe.report.wording import (
    count_word,
    extent_text,
    images_phrase,
    kind_phrase,
    percent,
    side_text,
    size_text,
    study_result,
    volume_text,
)

STOP = ("\n",)
_INSTRUCTION = (
    "Automated brain MRI first-read reports. Each report restates the detector's facts in "
    "plain words with exactly the same numbers, and adds nothing else.\n\n"
)
_SEPARATOR = "###\n"


@dataclass(frozen=True)
class FactLine:
    """One line of facts as the prompt shows it, and the forms its answer must take, bound to
    those facts (the report grammar's sentences for this line and no others)."""

    text: str
    answer: tuple[Bound, ...]
    cue: str = ""  # the line without the facts its answer's grammar forces (sizes, numbers)

    @cached_property
    def constraint(self) -> Constraint:
        """Every answer the line's forms allow, and the same as GBNF (built once a line)."""
        return Constraint(tuple(answer_language(self.answer)), answer_gbnf(self.answer, lead=" "))


def fact_lines(facts: StudyFacts, max_tumours: int | None = None) -> tuple[str, list[FactLine]]:
    """The request's header and its fact lines in answer order: tumours image by image (at most
    ``max_tumours`` listed one by one), then images without a tumour, then the impression's."""
    counts = facts.lesion_counts
    lesions = list(facts.lesions)
    summary = ", ".join(f"{count_word(n)} {kind_phrase(name, n)}" for name, n in counts.items())
    images = facts.image_count
    header = (
        f"Facts: {images} image{'s' if images != 1 else ''}, "
        f"{len(lesions)} tumour{'s' if len(lesions) != 1 else ''}"
        + (f" ({summary})" if summary else "")
        + f". Result: {study_result(facts)}.\n"
    )
    listed = lesions if max_tumours is None else lesions[:max_tumours]
    lines = [FactLine(_lesion_line(lesion), (finding(lesion),), _cue(lesion)) for lesion in listed]
    if len(listed) < len(lesions):
        rest = lesions[len(listed) :]
        numbers = sorted({number for lesion in rest for number in lesion.images})
        text = f"Not listed: {len(rest)} more on {images_phrase(numbers)}."
        lines.append(FactLine(text, (more(rest),), "Not listed: more tumours."))
    negative = [*facts.negative_images]
    if negative:
        text = f"{images_phrase(negative).capitalize()}: no tumour."
        lines.append(FactLine(text, (negative_images(facts),)))
    empty = [*facts.unremarkable_images]
    if empty:
        text = f"{images_phrase(empty).capitalize()}: no detection above the threshold."
        lines.append(FactLine(text, (empty_images(facts),)))
    impression = f"Impression: {study_result(facts)} study"
    if summary:
        impression += ", " + ", ".join(
            f"{count_word(n)} suspected {kind_phrase(name, n)}" for name, n in counts.items()
        )
    lines.append(FactLine(impression + ".", result(facts), f"Impression: {study_result(facts)}."))
    return header, lines


def cue_header(facts: StudyFacts) -> str:
    """The header for an engine that decodes inside the grammar: the study's shape only."""
    images = facts.image_count
    tumours = len(facts.lesions)
    return (
        f"Facts: {images} image{'s' if images != 1 else ''}, {tumours} "
        f"tumour{'s' if tumours != 1 else ''}. Result: {study_result(facts)}.\n"
    )


def _lesion_line(lesion: LesionFact) -> str:
    """A lesion's fact line: where its series has geometry, the lesion with its images, side,
    extent and volume; else its one detection on its image, as a slice's finding."""
    fact = lesion.largest
    about = "about " if fact.size_estimated else ""
    if lesion.geometry:
        return (
            f"Lesion {lesion.id}: {kind_phrase(lesion.class_name)}{side_text(lesion.side)}, "
            f"{images_phrase(lesion.images)}, largest {about}{size_text(fact)} on image "
            f"{fact.image_number}, craniocaudal extent "
            f"{extent_text(lesion.craniocaudal_mm or 0.0)}, box volume estimate "
            f"{volume_text(lesion.volume_ml or 0.0)}, confidence {percent(lesion.confidence)}."
        )
    return (
        f"Image {fact.image_number}: {kind_phrase(fact.class_name)}, "
        f"{about}{size_text(fact)}, "
        f"confidence {percent(fact.confidence)}."
    )


def _cue(lesion: LesionFact) -> str:
    """A lesion's line without the facts its answer's grammar forces."""
    if lesion.geometry:
        return f"Lesion {lesion.id}: {kind_phrase(lesion.class_name)}."
    return f"Image {lesion.largest.image_number}: {kind_phrase(lesion.class_name)}."


ANSWER = ">"  # the answer's first token carries its own leading space


def _series_example() -> StudyFacts:
    """A four-slice series whose glioma, seen on two adjacent slices, is one lesion."""
    study = study_of(
        [
            [("No Tumor", 0.88, 180.0, 200.0)],
            [("Glioma", 0.71, 22.5, 18.0)],
            [("Glioma", 0.86, 31.5, 24.0)],
            [("No Tumor", 0.84, 180.0, 200.0)],
        ]
    )
    detections = tuple(fact for image in study.images for fact in image.tumours)
    lesion = LesionFact(
        id=1,
        class_name="Glioma",
        confidence=0.86,
        images=(2, 3),
        largest=detections[1],
        detections=detections,
        geometry=True,
        craniocaudal_mm=10.0,
        volume_ml=3.2,
        side="left",
    )
    series = SeriesFacts(1, "DICOM", (1, 2, 3, 4), 5.0)
    return StudyFacts(study.images, study.conf_threshold, (lesion,), (series,))

# Worked examples: facts made by the same fact_lines as a request, each line's answer written by
# hand (a test checks that every answer is one its line's grammar allows).
EXAMPLES: tuple[tuple[StudyFacts, tuple[str, ...]], ...] = (
    (
        study_of([[("Glioma", 0.912, 23.4, 18.0)]], estimated=True),
        (
            "Image 1 shows a suspected glioma measuring about 23.4 x 18.0 mm (confidence 91.2%).",
            "Positive study: one suspected glioma.",
        ),
    ),
    (
        study_of([[("No Tumor", 0.95, 200.0, 220.0)], [("No Tumor", 0.90, 210.0, 230.0)]]),
        (
            "No tumour was detected on images 1-2.",
            "Negative study: no tumour was detected. An automated negative result does not "
            "exclude a tumour.",
        ),
    ),
    (
        study_of([[("No Tumor", 0.81, 200.0, 210.0)], [("Meningioma", 0.875, 30.2, 25.0)], []]),
        (
            "Image 2 shows a suspected meningioma measuring 30.2 x 25.0 mm (confidence 87.5%).",
            "No tumour was detected on image 1.",
            "No detection above the threshold on image 3.",
            "Positive study: one suspected meningioma.",
        ),
    ),
    (
        study_of([[], [("No Tumor", 0.77, 190.0, 200.0)]]),
        (
            "No tumour was detected on image 2.",
            "No detection above the threshold on image 1.",
            "Indeterminate study: no tumour was detected, but image 1 had no detection, so "
            "this is not a normal result.",
        ),
    ),
    (
        study_of([[("No Tumor", 0.93, 200.0, 210.0)]]),
        (
            "No tumour was detected on image 1.",
            "Negative study: no tumour was detected. An automated negative result does not "
            "exclude a tumour.",
        ),
    ),
    (
        study_of([[]]),
        (
            "No detection above the threshold on image 1.",
            "Indeterminate study: no tumour was detected, but image 1 had no detection, so "
            "this is not a normal result.",
        ),
    ),
    (
        study_of([[], [("Pituitary", 0.62, 11.0, 9.0)], []], estimated=True),
        (
            "Image 2 shows a suspected pituitary tumour measuring about 11.0 x 9.0 mm "
            "(confidence 62.0%).",
            "No detection above the threshold on images 1, 3.",
            "Positive study: one suspected pituitary tumour.",
        ),
    ),
    (
        study_of(
            [[("Pituitary", 0.784, 14.0, 11.5)], [("Glioma", 0.551, 40.3, 33.8)]], estimated=True
        ),
        (
            "Image 1 shows a suspected pituitary tumour measuring about 14.0 x 11.5 mm "
            "(confidence 78.4%).",
            "Image 2 shows a suspected glioma measuring about 40.3 x 33.8 mm (confidence 55.1%).",
            "Positive study: one suspected pituitary tumour, one suspected glioma.",
        ),
    ),
    (
        _series_example(),
        (
            "Lesion 1: suspected glioma, left, images 2-3, largest 31.5 x 24.0 mm on image 3, "
            "craniocaudal extent 10 mm, box volume estimate 3.2 ml (confidence 86.0%).",
            "No tumour was detected on images 1, 4.",
            "Positive study: one suspected glioma.",
        ),
    ),
    (
        study_of(
            [
                [("Glioma", 0.933, 35.5, 28.1)],
                [("Glioma", 0.667, 20.0, 16.4)],
                [("No Tumor", 0.70, 200.0, 200.0)],
                [("No Tumor", 0.64, 200.0, 200.0)],
            ]
        ),
        (
            "Image 1 shows a suspected glioma measuring 35.5 x 28.1 mm (confidence 93.3%).",
            "Image 2 shows a suspected glioma measuring 20.0 x 16.4 mm (confidence 66.7%).",
            "No tumour was detected on images 3-4.",
            "Positive study: two suspected gliomas.",
        ),
    ),
)


def transcript(header: str, lines: list[str], answers: list[str]) -> str:
    """Fact lines each followed by its answer line (the worked examples' form)."""
    parts = [header]
    for number, line in enumerate(lines):
        parts.append(line + "\n")
        if number < len(answers):
            parts.append(f"{ANSWER} {answers[number]}\n")
    return "".join(parts)


def prompt_prefix() -> str:
    """The fixed part of every prompt: the instruction and the worked examples."""
    parts = [_INSTRUCTION]
    for facts, answers in EXAMPLES:
        header, lines = fact_lines(facts)
        assert len(lines) == len(answers), header
        parts.append(transcript(header, [line.text for line in lines], list(answers)))
        parts.append(_SEPARATOR)
    return "".join(parts)


PREFIX = prompt_prefix()


def sections(answers: list[str]) -> dict[str, str]:
    """FINDINGS (every answer but the last, one sentence each) and IMPRESSION (the last)."""
    return {"FINDINGS": " ".join(answers[:-1]), "IMPRESSION": answers[-1]}


def plan(
    facts: StudyFacts, count_tokens: Callable[[str], int], max_prompt_tokens: int
) -> tuple[str, list[FactLine]]:
    """The header and fact lines for ``facts``; past the token budget, tumours are summarised
    ("Not listed: 4 more on images 7-12") rather than listed."""
    budget = max_prompt_tokens - count_tokens(PREFIX)
    header, lines = fact_lines(facts)
    tumours = len(facts.lesions)
    counts = [count_tokens(line.text) for line in lines]  # each line counted once
    fixed = count_tokens(header) + sum(counts[tumours:])
    listed = tumours
    # Each line is asked on its own after the header; the answers roughly double the facts.
    # Past the budget, the last tumours give way to one "Not listed" line (at most 40 tokens).
    while listed > 0 and (fixed + sum(counts[:listed]) + (40 if listed < tumours else 0)) * 3 > (
        budget
    ):
        listed -= 1
    if listed < tumours:
        header, lines = fact_lines(facts, max_tumours=listed)
    return header, lines


def line_prompt(header: str, line: FactLine, cue: str | None = None) -> Prompt:
    """The prompt that asks for the answer to one line: the prefix, the study's header and the
    line, its answer confined to the line's sentences of the report grammar. Every line of a
    study shares the prefix and the header, so an engine can write them side by side. ``cue``
    (cue_header's) with the line's cue is the request for an engine that decodes inside the
    grammar, which supplies the facts itself."""
    return Prompt(
        prefix=PREFIX,
        request=f"{header}{line.text}\n{ANSWER}",
        stop=STOP,
        constraint=line.constraint,
        constrained_request=f"{cue}{line.cue or line.text}\n{ANSWER}" if cue else None,
    )


def max_new_tokens(line: FactLine, limit: int) -> int:
    """Room for one answer: its longest allowed text, else about twice the fact line."""
    longest = max((len(text) for text in line.constraint.answers), default=0)
    return min(limit, 24 + max(longest // 2, 2 * len(line.text) // 3))
