"""The language model's prompt: a fixed few-shot prefix, then only the study's essential facts.

The prefix (an instruction line and worked examples) is the same for every request, so an
engine evaluates it once and keeps it. The request states the facts in the order the answer
should follow them: tumours image by image (class, size in mm, "about" when estimated), then
the images without a tumour, then the result with the counts spelt out as the answer should
say them. A small base model
then only has to rephrase, which it does well; what it gets wrong the verifier catches.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from mriscribe.report.engines.base import Prompt
from mriscribe.report.facts import FindingFact, StudyFacts, study_of
from mriscribe.report.template import class_kind, number_ranges, study_result

STOP = ("\n",)
_COUNT_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_INSTRUCTION = (
    "Automated brain MRI first-read reports. Each report restates the detector's facts in "
    "plain words with exactly the same numbers, and adds nothing else.\n\n"
)
_SEPARATOR = "###\n"


def kind_phrase(class_name: str, count: int = 1) -> str:
    """How the answer names a class: 'glioma', 'pituitary tumour', else the class's own name."""
    kind = class_kind(class_name)
    word = "pituitary tumour" if kind == "pituitary" else kind or class_name
    return word + ("s" if count != 1 and kind else "")


def count_word(count: int) -> str:
    return _COUNT_WORDS[count] if count < len(_COUNT_WORDS) else str(count)


def fact_lines(facts: StudyFacts, max_tumours: int | None = None) -> tuple[str, list[str]]:
    """The request's header and its fact lines in answer order: tumours image by image (at most
    ``max_tumours`` listed one by one), then images without a tumour, then the impression's."""
    counts = facts.counts_by_class
    tumours = sorted(facts.tumours, key=lambda f: (f.image_number, -f.confidence))
    summary = ", ".join(f"{count_word(n)} {kind_phrase(name, n)}" for name, n in counts.items())
    images = facts.image_count
    header = (
        f"Facts: {images} image{'s' if images != 1 else ''}, "
        f"{len(tumours)} tumour{'s' if len(tumours) != 1 else ''}"
        + (f" ({summary})" if summary else "")
        + f". Result: {study_result(facts)}.\n"
    )
    listed = tumours if max_tumours is None else tumours[:max_tumours]
    lines = [_tumour_line(fact) for fact in listed]
    if len(listed) < len(tumours):
        rest = tumours[len(listed) :]
        lines.append(
            f"Not listed: {len(rest)} more on {_images(sorted({f.image_number for f in rest}))}."
        )
    negative = [*facts.negative_images]
    if negative:
        lines.append(f"{_images(negative).capitalize()}: no tumour.")
    empty = [*facts.unremarkable_images]
    if empty:
        lines.append(f"{_images(empty).capitalize()}: no detection above the threshold.")
    impression = f"Impression: {study_result(facts)} study"
    if summary:
        impression += ", " + ", ".join(
            f"{count_word(n)} suspected {kind_phrase(name, n)}" for name, n in counts.items()
        )
    lines.append(impression + ".")
    return header, lines


def _tumour_line(fact: FindingFact) -> str:
    return (
        f"Image {fact.image_number}: {kind_phrase(fact.class_name)}, "
        f"{'about ' if fact.size_estimated else ''}{fact.width_mm:.1f} x {fact.height_mm:.1f} mm."
    )


# A tumour's fact line as _tumour_line writes it: its image number and its size.
_TUMOUR_LINE = re.compile(r"^Image (\d+): .*?(\d+\.\d) x (\d+\.\d) mm\.$")


def answers_line(line: str, answer: str) -> bool:
    """Whether ``answer`` states what its fact line does, where that can be checked line by line:
    a tumour's image number and size. (The verifier reads the whole text, but cannot see a
    tumour left out of the FINDINGS while the IMPRESSION names its class.)"""
    found = _TUMOUR_LINE.match(line)
    if found is None:
        return True
    number, width, height = found.groups()
    image = re.search(rf"\bimage {number}\b", answer, re.IGNORECASE)
    return image is not None and width in answer and height in answer


def _images(numbers: list[int]) -> str:
    if len(numbers) == 1:
        return f"image {numbers[0]}"
    return f"images {number_ranges(numbers)}"


ANSWER = ">"  # the answer's first token carries its own leading space

# Worked examples: facts made by the same fact_lines as a request, each line's answer written by
# hand (a test checks that every answer passes the verifier).
EXAMPLES: tuple[tuple[StudyFacts, tuple[str, ...]], ...] = (
    (
        study_of([[("Glioma", 0.912, 23.4, 18.0)]], estimated=True),
        (
            "Image 1 shows a suspected glioma measuring about 23.4 x 18.0 mm.",
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
            "Image 2 shows a suspected meningioma measuring 30.2 x 25.0 mm.",
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
            "Image 2 shows a suspected pituitary tumour measuring about 11.0 x 9.0 mm.",
            "No detection above the threshold on images 1, 3.",
            "Positive study: one suspected pituitary tumour.",
        ),
    ),
    (
        study_of(
            [[("Pituitary", 0.784, 14.0, 11.5)], [("Glioma", 0.551, 40.3, 33.8)]], estimated=True
        ),
        (
            "Image 1 shows a suspected pituitary tumour measuring about 14.0 x 11.5 mm.",
            "Image 2 shows a suspected glioma measuring about 40.3 x 33.8 mm.",
            "Positive study: one suspected pituitary tumour, one suspected glioma.",
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
            "Image 1 shows a suspected glioma measuring 35.5 x 28.1 mm.",
            "Image 2 shows a suspected glioma measuring 20.0 x 16.4 mm.",
            "No tumour was detected on images 3-4.",
            "Positive study: two suspected gliomas.",
        ),
    ),
)


def transcript(header: str, lines: list[str], answers: list[str]) -> str:
    """Fact lines each followed by its answer line; the last answer may still be open."""
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
        parts.append(transcript(header, lines, list(answers)) + _SEPARATOR)
    return "".join(parts)


PREFIX = prompt_prefix()


def sections(answers: list[str]) -> dict[str, str]:
    """FINDINGS (every answer but the last, one sentence each) and IMPRESSION (the last)."""
    return {"FINDINGS": " ".join(answers[:-1]), "IMPRESSION": answers[-1]}


def plan(
    facts: StudyFacts, count_tokens: Callable[[str], int], max_prompt_tokens: int
) -> tuple[str, list[str]]:
    """The header and fact lines for ``facts``; past the token budget, tumours are summarised
    ("Not listed: 4 more on images 7-12") rather than listed."""
    budget = max_prompt_tokens - count_tokens(PREFIX)
    header, lines = fact_lines(facts)
    listed = len(facts.tumours)
    # The answers roughly double the facts: budget for both.
    while listed > 0 and count_tokens(transcript(header, lines, [])) * 3 > budget:
        listed -= 1
        header, lines = fact_lines(facts, max_tumours=listed)
    return header, lines


def next_prompt(header: str, lines: list[str], answers: list[str]) -> Prompt:
    """The prompt that asks for the answer to ``lines[len(answers)]``."""
    done = transcript(header, lines[: len(answers) + 1], answers)
    return Prompt(prefix=PREFIX, request=done + ANSWER, stop=STOP)


def max_new_tokens(line: str, limit: int) -> int:
    """Room for one answer line: about twice the fact line, at most ``limit``."""
    return min(limit, 24 + 2 * len(line) // 3)
