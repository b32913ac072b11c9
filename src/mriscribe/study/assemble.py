"""From measured images, arranged in series, to the study's facts: images, series and lesions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mriscribe.analysis import ImageResult
from mriscribe.report.facts import (
    FindingFact,
    SeriesFacts,
    StudyFacts,
    image_facts,
    is_negative_class,
)
from mriscribe.study.lesions import Placed, SeriesPlacement, link
from mriscribe.study.series import Series
from mriscribe.study.side import Midline, SideReading, side_on_slice


def study_facts(
    images: Sequence[ImageResult],
    conf_threshold: float,
    series: Sequence[Series] = (),
    side_threshold_mm: float = 10.0,
) -> StudyFacts:
    """The facts every report writer reads, computed once from the measured findings.

    ``images`` are in study order (series by series, each in anatomical order), and ``series``
    (as arranged) say which images form each series; without them each image is a series of
    its own and every tumour detection a lesion of its own.
    """
    findings: list[list[FindingFact]] = []
    for image in images:
        findings.append(
            [
                FindingFact(
                    image_number=image.number,
                    class_name=m.finding.class_name,
                    confidence=m.finding.confidence,
                    width_mm=m.size.width_mm,
                    height_mm=m.size.height_mm,
                    size_estimated=m.size.estimated,
                )
                for m in image.findings
            ]
        )
    facts = tuple(
        image_facts(image.number, found, image.spacing_source, image.spacing_estimated)
        for image, found in zip(images, findings, strict=True)
    )
    if not series:
        return StudyFacts(facts, conf_threshold)
    placements: list[SeriesPlacement] = []
    midlines: dict[tuple[int, bool], Midline | None] = {}  # each slice's, measured once
    pixels: dict[int, np.ndarray] = {}  # a placed detection's slice, by the fact's id

    def read_side(placed: Placed) -> SideReading | None:
        if placed.plane is None:
            return None
        return side_on_slice(
            pixels[id(placed.fact)], placed.plane, placed.box, side_threshold_mm, midlines
        )

    described: list[SeriesFacts] = []
    studies: dict[str, int] = {}  # DICOM study UID -> its number in the upload
    start = 0
    for number, one in enumerate(series, start=1):
        count = len(one.slices)
        members = range(start, start + count)
        levels = one.levels() if one.geometry else tuple(range(count))
        placed: list[Placed] = []
        for offset, index in enumerate(members):
            image, found = images[index], findings[index]
            plane = image.slice.source.plane if image.slice.source is not None else None
            for measured, fact in zip(image.findings, found, strict=True):
                if is_negative_class(fact.class_name):
                    continue
                box = measured.finding.box
                corners = (box.x1, box.y1, box.x2, box.y2)
                pixels[id(fact)] = image.slice.pixels
                placed.append(Placed(fact, corners, levels[offset], plane))
        positions: tuple[float, ...] = ()
        if one.geometry and one.positions is not None:
            by_level: dict[int, float] = {}
            for level, position in zip(levels, one.positions, strict=True):
                by_level.setdefault(level, position)
            positions = tuple(by_level[level] for level in range(max(by_level) + 1))
        placements.append(SeriesPlacement(number, tuple(placed), positions, one.spacing_mm))
        first = images[start].number if count else 0
        uids = (item.source.study_uid for item in one.slices if item.source is not None)
        uid = next((value for value in uids if value), None)
        study = studies.setdefault(uid, len(studies) + 1) if uid is not None else None
        described.append(
            SeriesFacts(
                number=number,
                format=images[start].slice.meta.get("format", "") if count else "",
                images=tuple(images[index].number for index in members),
                spacing_mm=one.spacing_mm if one.geometry else None,
                notes=tuple(note.text(first) for note in one.notes),
                dropped=one.dropped,
                study=study,
            )
        )
        start += count
    lesions = tuple(link(placements, side_threshold_mm, read_side))
    return StudyFacts(facts, conf_threshold, lesions, tuple(described), side_threshold_mm)
