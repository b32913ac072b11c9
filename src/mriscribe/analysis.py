"""What one analysis produces: measured findings per image, the study facts and the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from mriscribe.detection.base import Finding, ModelInfo
from mriscribe.imaging.slices import Slice
from mriscribe.report.facts import FindingFact, LesionFact, StudyFacts, is_negative_class


@dataclass(frozen=True)
class Measurement:
    """A finding's size in millimetres and where the pixel spacing behind it came from."""

    width_mm: float
    height_mm: float
    spacing_mm: tuple[float, float]  # (row, column) mm per pixel
    spacing_source: str
    estimated: bool  # True when no spacing was known and the configured default was used

    @property
    def max_diameter_mm(self) -> float:
        return max(self.width_mm, self.height_mm)

    def as_dict(self) -> dict[str, object]:
        return {
            "width_mm": round(self.width_mm, 1),
            "height_mm": round(self.height_mm, 1),
            "max_diameter_mm": round(self.max_diameter_mm, 1),
            "pixel_spacing_mm": [round(v, 4) for v in self.spacing_mm],
            "spacing_source": self.spacing_source,
            "estimated": self.estimated,
        }


@dataclass(frozen=True)
class MeasuredFinding:
    finding: Finding
    size: Measurement


@dataclass(frozen=True)
class ImageResult:
    """One analysed slice: its 1-based number in the study (series by series, each in
    anatomical order), its pixels and its findings, the series it belongs to and its position
    along that series' slice normal (mm; None without geometry)."""

    number: int
    slice: Slice
    findings: tuple[MeasuredFinding, ...]
    spacing_mm: tuple[float, float]
    spacing_source: str
    spacing_estimated: bool
    series: int = 1
    position_mm: float | None = None
    annotated_jpeg: bytes | None = None


@dataclass(frozen=True)
class Report:
    """The report's text, its sections in order, which engine wrote it and, if any, why not the
    preferred one."""

    sections: dict[str, str]
    engine: str
    fallback_reason: str | None = None

    @property
    def text(self) -> str:
        return "\n\n".join(f"{title}:\n{body}" for title, body in self.sections.items())


@dataclass(frozen=True)
class Analysis:
    timestamp: datetime
    images: tuple[ImageResult, ...]
    facts: StudyFacts
    report: Report
    model: ModelInfo
    conf_threshold: float
    iou_threshold: float
    timings_ms: dict[str, float] = field(default_factory=dict)

    def tumours(self) -> list[tuple[FindingFact, ImageResult, MeasuredFinding]]:
        """Each tumour fact with the image and the measured finding (box, size) it states: an
        image's facts list its tumours in its findings' order (highest confidence first)."""
        paired = []
        for image, facts in zip(self.images, self.facts.images, strict=True):
            found = [m for m in image.findings if not is_negative_class(m.finding.class_name)]
            paired.extend(
                (fact, image, measured) for fact, measured in zip(facts.tumours, found, strict=True)
            )
        return paired

    def lesion_findings(
        self,
    ) -> list[tuple[LesionFact, FindingFact, ImageResult, MeasuredFinding]]:
        """Each lesion's detections, lesion by lesion in the order the lesion lists them, with
        the image and the measured finding (box, size) each one states. A lesion holds the very
        facts its images do (paired by identity), or equal ones where the analysis was rebuilt
        with new objects (paired by value); linking is never recomputed here. A tumour finding
        of no lesion is not listed; a detection that no image states is a KeyError."""
        tumours = self.tumours()
        by_identity = {id(fact): (image, measured) for fact, image, measured in tumours}
        by_value = {fact: (image, measured) for fact, image, measured in tumours}
        found = []
        for lesion in self.facts.lesions:
            for fact in lesion.detections:
                image, measured = by_identity.get(id(fact)) or by_value[fact]
                found.append((lesion, fact, image, measured))
        return found
