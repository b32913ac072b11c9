"""Lesions: tumour detections on adjacent slices of a series linked into one lesion each.

Two tumour detections belong to one lesion when their boxes overlap in the plane (as patient
millimetres, so slices whose pixels are not aligned still compare) and they lie on the same
slice level or on levels at most two apart (one missing slice tolerated). The class does not
split a lesion: a detector that calls one tumour a glioma on one slice and a meningioma on the
next has still found one tumour, whose class is the confidence-weighted vote of its detections.
Without slice positions, every detection is its own lesion and has no extent, volume or side.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from mriscribe.imaging.geometry import Plane
from mriscribe.report.facts import FindingFact, LesionFact, Side
from mriscribe.study.side import SideReading, lesion_side

# Boxes overlap when their intersection covers at least this share of the smaller box: a
# lesion's pole, small and inside the box of the slice before, still links.
MIN_OVERLAP = 0.3
# Levels at most this far apart link: adjacent slices, or one missing slice between them; in a
# thin-slice series, any levels at most MAX_GAP_MM apart (a detector that misses three 1 mm
# slices of a tumour has not found two tumours).
MAX_LEVEL_STEP = 2
MAX_GAP_MM = 6.0
# A lesion's side is read on at most this many of its slices: those nearest its largest.
SIDE_SLICES = 5

# Reads the side of one placed detection on its slice (None where it cannot be read).
SideReader = Callable[["Placed"], SideReading | None]


@dataclass(frozen=True)
class Placed:
    """One tumour detection where it lies in its series: its fact (image number, class,
    confidence, size in mm), its box in displayed pixels (x1, y1, x2, y2), the slice's level
    (slices at one position share a level) and plane."""

    fact: FindingFact
    box: tuple[float, float, float, float]
    level: int
    plane: Plane | None


@dataclass(frozen=True)
class SeriesPlacement:
    """A series' tumour detections and its geometry: the position (mm along the slice normal)
    of each level, and the spacing between slices; ``positions`` is empty without geometry."""

    number: int
    detections: tuple[Placed, ...]
    positions: tuple[float, ...] = ()
    spacing_mm: float | None = None

    @property
    def geometry(self) -> bool:
        return bool(self.positions) and self.spacing_mm is not None and self.spacing_mm > 0


def link(
    series: Sequence[SeriesPlacement],
    side_threshold_mm: float = 10.0,
    read_side: SideReader | None = None,
) -> list[LesionFact]:
    """Every tumour detection of every series in exactly one lesion, numbered from 1 in series
    order, then by the first image a lesion is on, then by confidence. ``read_side`` reads a
    detection's side on its slice; a lesion with geometry is read on up to SIDE_SLICES of its
    slices, those nearest its largest (without a reader, no lesion has a side)."""
    found: list[tuple[tuple[float, ...], LesionFact]] = []
    for placement in series:
        if placement.geometry:
            spacing = float(placement.spacing_mm or 0.0)
            steps = max(MAX_LEVEL_STEP, int(MAX_GAP_MM / spacing + 1e-6)) if spacing else 2
            groups = _clusters(placement.detections, steps)
        else:
            groups = [[placed] for placed in placement.detections]
        for group in groups:
            lesion = _lesion(group, placement, side_threshold_mm, read_side)
            order = (placement.number, min(lesion.images), -lesion.confidence)
            found.append((order, lesion))
    found.sort(key=lambda item: item[0])
    return [replace(lesion, id=number) for number, (_, lesion) in enumerate(found, start=1)]


def _clusters(detections: Sequence[Placed], max_step: int = MAX_LEVEL_STEP) -> list[list[Placed]]:
    """Connected groups of detections whose boxes overlap on levels at most ``max_step``
    apart (union-find: a lesion is never split by the order its slices are read in)."""
    parent = list(range(len(detections)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    boxes = [_box_mm(placed) for placed in detections]
    by_level: dict[int, list[int]] = {}
    for index, placed in enumerate(detections):
        by_level.setdefault(placed.level, []).append(index)
    # Only detections on nearby levels are compared: linear in the slices, not quadratic.
    for level, members in by_level.items():
        for step in range(max_step + 1):
            for a in members:
                for b in by_level.get(level + step, ()):
                    same_pair = step == 0 and b <= a  # each pair on one level once
                    if not same_pair and _overlap(boxes[a], boxes[b]) >= MIN_OVERLAP:
                        parent[root(a)] = root(b)
    groups: dict[int, list[Placed]] = {}
    for index, placed in enumerate(detections):
        groups.setdefault(root(index), []).append(placed)
    return list(groups.values())


def _box_mm(placed: Placed) -> tuple[float, float, float, float]:
    """A box as (top, left, bottom, right) millimetres in the series' common plane: its corners
    through the slice's plane into patient space, then onto the plane's own axes from the
    patient origin (slices of a series are parallel, so these axes are shared)."""
    x1, y1, x2, y2 = placed.box
    plane = placed.plane
    if plane is None:
        return y1, x1, y2, x2
    origin = np.zeros(3)
    top, left = plane.in_plane(plane.point(y1, x1), origin)
    bottom, right = plane.in_plane(plane.point(y2, x2), origin)
    return min(top, bottom), min(left, right), max(top, bottom), max(left, right)


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over the smaller box's area."""
    down = min(a[2], b[2]) - max(a[0], b[0])
    across = min(a[3], b[3]) - max(a[1], b[1])
    if down <= 0 or across <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return down * across / smaller if smaller > 0 else 0.0


def _craniocaudal(group: Sequence[Placed], spacing: float) -> float:
    """The head-to-foot extent (mm) the lesion's boxes cover: the range of patient z over their
    corners, plus the slab one slice stands for along z (a slice's spacing times the share of
    its normal along z). For an axial series that is the slices' span plus one spacing; for a
    sagittal or coronal one, the boxes' own height."""
    heights = []
    slab = 0.0
    for placed in group:
        plane = placed.plane
        if plane is None:
            continue
        x1, y1, x2, y2 = placed.box
        corners = [plane.point(row, column) for row in (y1, y2) for column in (x1, x2)]
        heights.extend(float(corner[2]) for corner in corners)
        slab = max(slab, spacing * abs(float(plane.normal[2])))
    return (max(heights) - min(heights) + slab) if heights else slab


def _lesion(
    group: Sequence[Placed],
    placement: SeriesPlacement,
    threshold: float,
    read_side: SideReader | None,
) -> LesionFact:
    facts = [placed.fact for placed in group]
    votes: dict[str, float] = {}
    for fact in facts:
        votes[fact.class_name] = votes.get(fact.class_name, 0.0) + fact.confidence
    best = max(facts, key=lambda f: f.confidence)
    class_name = max(votes, key=lambda name: (votes[name], name == best.class_name, name))
    confidence = max(f.confidence for f in facts if f.class_name == class_name)
    largest = max(facts, key=lambda f: (f.max_diameter_mm, f.width_mm * f.height_mm))
    images = tuple(sorted({f.image_number for f in facts}))
    extent = volume = None
    side: Side | None = None
    if placement.geometry:
        levels = sorted({placed.level for placed in group})
        extent = _craniocaudal(group, float(placement.spacing_mm or 0.0))
        areas = []
        for level in levels:
            on_level = [p.fact for p in group if p.level == level]
            areas.append(max(f.width_mm * f.height_mm for f in on_level))
        positions = [placement.positions[level] for level in levels]
        depth = max(positions) - min(positions) + float(placement.spacing_mm or 0.0)
        volume = float(np.mean(areas)) * depth / 1000.0
        if read_side is not None:
            key = next(placed for placed in group if placed.fact is largest)
            nearest = sorted(group, key=lambda placed: abs(placed.level - key.level))
            readings = [read_side(placed) for placed in nearest[:SIDE_SLICES]]
            known = [reading for reading in readings if reading is not None]
            side = lesion_side(known, threshold) if known else None
    if extent is not None and not (math.isfinite(extent) and math.isfinite(volume or 0.0)):
        extent = volume = None  # a broken geometry measures nothing
    return LesionFact(
        id=0,
        class_name=class_name,
        confidence=confidence,
        images=images,
        largest=largest,
        detections=tuple(sorted(facts, key=lambda f: (f.image_number, -f.confidence))),
        series=placement.number,
        geometry=placement.geometry,
        craniocaudal_mm=extent,
        volume_ml=volume,
        side=side,
    )
