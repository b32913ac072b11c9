"""The facts of a study, computed once from the findings and read by every report writer.

The template, a language model's prompt and the verifier all read these, so they can never
disagree about what was found. Facts hold no pixels and no file names: images are numbered.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

# The public brain-tumour data set's negative class, and the other names users' models give it,
# compared on letters only ("No Tumor", "no_tumour", "No-Tumor" and "notumor" are one name).
_NEGATIVE_NAMES = {"notumor", "notumour", "normal", "negative", "healthy", "nolesion"}

ImageStatus = Literal["positive", "negative", "no finding"]


def is_negative_class(class_name: str) -> bool:
    """True for a class that means 'no tumour here' (a negative finding, never a tumour)."""
    return re.sub(r"[^a-z]", "", class_name.lower()) in _NEGATIVE_NAMES


@dataclass(frozen=True)
class FindingFact:
    image_number: int
    class_name: str
    confidence: float  # 0..1
    width_mm: float
    height_mm: float
    size_estimated: bool

    @property
    def max_diameter_mm(self) -> float:
        return max(self.width_mm, self.height_mm)

    @property
    def confidence_percent(self) -> float:
        return round(self.confidence * 100, 1)


@dataclass(frozen=True)
class ImageFacts:
    number: int
    status: ImageStatus
    tumours: tuple[FindingFact, ...]  # highest confidence first
    negatives: tuple[FindingFact, ...]
    spacing_source: str
    size_estimated: bool


@dataclass(frozen=True)
class StudyFacts:
    images: tuple[ImageFacts, ...]
    conf_threshold: float

    @property
    def image_count(self) -> int:
        return len(self.images)

    @property
    def tumours(self) -> tuple[FindingFact, ...]:
        return tuple(fact for image in self.images for fact in image.tumours)

    @property
    def positive(self) -> bool:
        return bool(self.tumours)

    @property
    def counts_by_class(self) -> dict[str, int]:
        """Tumour detections per class, classes in order of first appearance by confidence."""
        counts: dict[str, int] = {}
        for fact in sorted(self.tumours, key=lambda f: -f.confidence):
            counts[fact.class_name] = counts.get(fact.class_name, 0) + 1
        return counts

    @property
    def classes_detected(self) -> tuple[str, ...]:
        return tuple(self.counts_by_class)

    @property
    def positive_images(self) -> tuple[int, ...]:
        return tuple(image.number for image in self.images if image.status == "positive")

    @property
    def negative_images(self) -> tuple[int, ...]:
        return tuple(image.number for image in self.images if image.status == "negative")

    @property
    def unremarkable_images(self) -> tuple[int, ...]:
        """Images where the detector found nothing at all above the threshold."""
        return tuple(image.number for image in self.images if image.status == "no finding")

    @property
    def sizes_estimated(self) -> bool:
        return any(fact.size_estimated for fact in self.tumours)

    @property
    def spacing_sources(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(image.spacing_source for image in self.images))

    @property
    def largest(self) -> FindingFact | None:
        return max(self.tumours, key=lambda f: f.max_diameter_mm, default=None)


def image_facts(
    number: int, findings: Sequence[FindingFact], spacing_source: str, size_estimated: bool
) -> ImageFacts:
    """Sort one image's findings into tumours and negatives and give the image its status."""
    ordered = sorted(findings, key=lambda f: -f.confidence)
    tumours = tuple(f for f in ordered if not is_negative_class(f.class_name))
    negatives = tuple(f for f in ordered if is_negative_class(f.class_name))
    status: ImageStatus = "positive" if tumours else "negative" if negatives else "no finding"
    return ImageFacts(number, status, tumours, negatives, spacing_source, size_estimated)


def facts_from_results(
    results: dict[str, object], *, default_spacing_mm: float, conf_threshold: float
) -> StudyFacts:
    """The facts of a saved ``detection_results`` object (as /analyze-json returns it).

    Sizes come from each detection's ``size_mm`` where present, else from its box and the
    image's ``pixel_spacing_mm`` (row, column), else from ``default_spacing_mm`` (an estimate),
    as the service measures a PNG or JPEG. Raises ValueError naming what is missing or wrong.
    """
    images = results.get("images")
    if not isinstance(images, list):
        raise ValueError("no 'images' list (expected the 'detection_results' object)")
    facts: list[ImageFacts] = []
    for index, image in enumerate(images, start=1):
        if not isinstance(image, dict):
            raise ValueError(f"images[{index - 1}] is not an object")
        number = int(image.get("image_number", index))
        if any(known.number == number for known in facts):
            raise ValueError(f"image number {number} appears more than once")
        spacing = image.get("pixel_spacing_mm")
        estimated = bool(image.get("spacing_estimated", spacing is None))
        row_mm, col_mm = (
            (float(spacing[0]), float(spacing[1]))
            if isinstance(spacing, list) and len(spacing) == 2
            else (default_spacing_mm, default_spacing_mm)
        )
        found: list[FindingFact] = []
        for detection in image.get("detections") or []:
            try:
                size = detection.get("size_mm") or {}
                box = detection.get("bbox") or {}
                width = size.get("width_mm", float(box.get("width", 0.0)) * col_mm)
                height = size.get("height_mm", float(box.get("height", 0.0)) * row_mm)
                found.append(
                    FindingFact(
                        image_number=number,
                        class_name=str(detection["class"]),
                        confidence=float(detection["confidence"]),
                        width_mm=float(width),
                        height_mm=float(height),
                        size_estimated=bool(size.get("estimated", estimated)),
                    )
                )
            except (KeyError, TypeError, ValueError, AttributeError):
                raise ValueError(
                    f"image {number}: a detection lacks 'class', 'confidence' or a box"
                ) from None
        source = str(image.get("spacing_source") or ("default" if estimated else "file"))
        facts.append(image_facts(number, found, source, estimated))
    return StudyFacts(tuple(facts), conf_threshold)


def study_of(
    images: Sequence[Sequence[tuple[str, float, float, float]]],
    spacing_source: str = "file",
    conf_threshold: float = 0.25,
    estimated: bool = False,
) -> StudyFacts:
    """Facts from (class, confidence, width mm, height mm) per image, sizes measured (or all
    estimated from a default spacing): the prompt's worked examples, studies written by hand."""
    return StudyFacts(
        tuple(
            image_facts(
                number,
                [FindingFact(number, c, p, w, h, estimated) for c, p, w, h in findings],
                spacing_source,
                estimated,
            )
            for number, findings in enumerate(images, start=1)
        ),
        conf_threshold,
    )
