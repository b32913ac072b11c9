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


Side = Literal["left", "right", "midline"]


@dataclass(frozen=True)
class LesionFact:
    """One lesion: tumour detections linked across adjacent slices of a series (or one detection
    where the series has no geometry).

    ``class_name`` is the confidence-weighted class over its detections, ``confidence`` the
    highest confidence of a detection of that class. ``largest`` is its largest detection
    (largest longest side), whose image and in-plane size the lesion reports.
    ``craniocaudal_mm`` is its head-to-foot extent from the slice positions (for an axial series:
    the span of its slices plus one slice spacing); ``volume_ml`` the box-based volume estimate
    (mean box area times the depth its slices cover); ``side`` the patient's side of its centre,
    measured from the head's own midline. Each is None where the geometry does not hold it.
    ``geometry`` says the lesion comes from a series with slice positions (a lesion sentence
    states it); without, the lesion is its one detection and reads as one.
    """

    id: int
    class_name: str
    confidence: float
    images: tuple[int, ...]
    largest: FindingFact
    detections: tuple[FindingFact, ...]
    series: int = 1
    geometry: bool = False
    craniocaudal_mm: float | None = None
    volume_ml: float | None = None
    side: Side | None = None


@dataclass(frozen=True)
class ImageFacts:
    number: int
    status: ImageStatus
    tumours: tuple[FindingFact, ...]  # highest confidence first
    negatives: tuple[FindingFact, ...]
    spacing_source: str
    size_estimated: bool


@dataclass(frozen=True)
class SeriesFacts:
    """One series as the report describes it: its images (numbered in anatomical order), the
    spacing between its slices from their positions (None without geometry), what is wrong
    with its slices (gaps, duplicates, mixed orientations: plain text, no identifiers) and how
    many repeated files were left out."""

    number: int
    format: str
    images: tuple[int, ...]
    spacing_mm: float | None = None
    notes: tuple[str, ...] = ()
    dropped: int = 0
    study: int | None = None  # which DICOM study of the upload (1-based), None for others


@dataclass(frozen=True)
class StudyFacts:
    """What the report may state. ``lesions`` link each tumour detection to exactly one lesion;
    where none are given (facts written by hand, saved results), every detection is a lesion of
    its own, as for images without geometry."""

    images: tuple[ImageFacts, ...]
    conf_threshold: float
    lesions: tuple[LesionFact, ...] = ()
    series: tuple[SeriesFacts, ...] = ()
    side_threshold_mm: float = 10.0

    @property
    def study_count(self) -> int:
        """How many DICOM studies the upload held (0 without DICOM)."""
        return len({series.study for series in self.series if series.study is not None})

    @property
    def geometry(self) -> bool:
        """Whether any series has slice positions (its detections are linked into lesions)."""
        return any(series.spacing_mm is not None for series in self.series)

    def __post_init__(self) -> None:
        if not self.lesions and self.tumours:
            object.__setattr__(self, "lesions", single_lesions(self.images))

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

    @property
    def lesion_counts(self) -> dict[str, int]:
        """Lesions per class (their weighted class), classes in order of their best lesion's
        confidence. Without geometry every detection is a lesion, so this is counts_by_class."""
        counts: dict[str, int] = {}
        for lesion in sorted(self.lesions, key=lambda lesion: -lesion.confidence):
            counts[lesion.class_name] = counts.get(lesion.class_name, 0) + 1
        return counts

    @property
    def largest_lesion(self) -> LesionFact | None:
        """The lesion with the largest in-plane size (longest box side), the first on a tie."""
        best: LesionFact | None = None
        for lesion in self.lesions:
            if best is None or lesion.largest.max_diameter_mm > best.largest.max_diameter_mm:
                best = lesion
        return best


def single_lesions(images: Sequence[ImageFacts]) -> tuple[LesionFact, ...]:
    """Every tumour detection a lesion of its own: image by image, highest confidence first."""
    tumours = [fact for image in images for fact in image.tumours]
    return tuple(
        LesionFact(
            id=number,
            class_name=fact.class_name,
            confidence=fact.confidence,
            images=(fact.image_number,),
            largest=fact,
            detections=(fact,),
        )
        for number, fact in enumerate(tumours, start=1)
    )


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
