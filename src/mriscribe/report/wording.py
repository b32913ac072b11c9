"""How facts are spelt in a report: image ranges, percentages, sizes, counts and class names.

The report grammar binds its slots to these spellings, so the template, the prompt and the
verifier write and read every fact the same way. Plain ASCII ("x" in sizes) keeps plain-text
consumers safe.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from mriscribe.report.facts import FindingFact, StudyFacts, is_negative_class

ESTIMATED_NOTE = "estimated from default pixel spacing"
_COUNT_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def class_kind(class_name: str) -> str | None:
    """'glioma', 'meningioma', 'pituitary', 'negative' or None (unknown) for a model's class name,
    whatever its spelling ("glioma_tumor", "Pituitary adenoma", "notumor")."""
    if is_negative_class(class_name):
        return "negative"
    key = re.sub(r"[^a-z]", "", class_name.lower())
    if "glio" in key:  # glioma, glioblastoma
        return "glioma"
    if "mening" in key:
        return "meningioma"
    if "pituitar" in key:
        return "pituitary"
    return None


def kind_phrase(class_name: str, count: int = 1) -> str:
    """How prose names a class: 'glioma', 'pituitary tumour', else the class's own name."""
    kind = class_kind(class_name)
    word = "pituitary tumour" if kind == "pituitary" else kind or class_name
    return word + ("s" if count != 1 and kind else "")


def count_word(count: int) -> str:
    """A count as prose writes it: 'one' to 'nine', then digits."""
    return _COUNT_WORDS[count] if count < len(_COUNT_WORDS) else str(count)


def number_ranges(numbers: Iterable[int]) -> str:
    """Image numbers as compact ranges: 1, 2, 3, 5, 7, 8 -> "1-3, 5, 7-8"."""
    ordered = sorted(set(numbers))
    parts: list[str] = []
    start = 0
    for index in range(1, len(ordered) + 1):
        if index == len(ordered) or ordered[index] != ordered[index - 1] + 1:
            first, last = ordered[start], ordered[index - 1]
            parts.append(str(first) if first == last else f"{first}-{last}")
            start = index
    return ", ".join(parts)


def images_phrase(numbers: Sequence[int]) -> str:
    """ "image 3" or "images 1-12, 14, 20-60"."""
    return f"image {numbers[0]}" if len(numbers) == 1 else f"images {number_ranges(numbers)}"


def percent(confidence: float) -> str:
    """A confidence in [0, 1] as a percentage with one decimal: 0.9123 -> "91.2%"."""
    return f"{confidence * 100:.1f}%"


def threshold_text(threshold: float) -> str:
    """The confidence threshold as a percentage: 0.25 -> "25%", 0.275 -> "27.5%"."""
    value = threshold * 100
    return f"{round(value)}%" if abs(value - round(value)) < 1e-6 else f"{value:.1f}%"


def size_text(fact: FindingFact, times: str = "x") -> str:
    """ "23.4 x 18.0 mm" (width x height of the detection box)."""
    return f"{fact.width_mm:.1f} {times} {fact.height_mm:.1f} mm"


def extent_text(mm: float) -> str:
    """A craniocaudal extent: whole millimetres from 10 mm up, else one decimal ("7.5 mm")."""
    return f"{mm:.0f} mm" if mm >= 10 else f"{mm:.1f} mm"


def volume_text(ml: float) -> str:
    """A volume estimate in millilitres: one decimal, two below 0.1 ml ("0.04 ml")."""
    return f"{ml:.1f} ml" if ml >= 0.1 else f"{ml:.2f} ml"


def side_text(side: str | None) -> str:
    """A lesion's side as its sentence states it after the class: ", left" or nothing."""
    return f", {side}" if side else ""


def study_result(facts: StudyFacts) -> str:
    """'positive' (a tumour detected), 'negative' (every image classified as no tumour) or
    'indeterminate' (some or all images without any detection above the threshold, or none)."""
    if facts.positive:
        return "positive"
    if facts.negative_images and not facts.unremarkable_images:
        return "negative"
    return "indeterminate"
