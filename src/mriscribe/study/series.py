"""Decoded slices arranged into series, each in anatomical order.

An upload is a heap of files in any order under any names; a study is series of slices, each
series in order along its slice normal. DICOM slices are grouped by study and series UID and
sorted by their position along the normal (ImagePositionPatient, per frame for enhanced
multi-frame files); the spacing between slices comes from those positions, never from
SliceThickness, which is the slab's thickness and often differs from the step (gaps or overlap
between slices). What would make distances unreliable is noted: gaps, repeated or coinciding
slices, mixed orientations, uneven steps, and slices without a position. NIfTI slices have
planes from the affine; a NIfTI file is one series. PNG, JPEG and TIFF have no geometry: each
image is a series of its own.

Notes speak of image numbers only, never of a UID, a file name or anything about the patient.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from mriscribe.imaging.geometry import Plane
from mriscribe.imaging.slices import Slice

NoteKind = Literal["gap", "duplicate", "mixed orientation", "no geometry", "uneven"]

# The formats whose slices carry a series identity and (usually) a plane.
GEOMETRY_FORMATS = frozenset({"DICOM", "NIfTI"})
# Slices closer than this along the normal lie at one level whatever the spacing: positions
# written with a few decimals, or computed through oblique cosines, differ by far less.
MIN_LEVEL_TOLERANCE_MM = 0.01
# Slices within this share of the spacing of each other lie at one level.
LEVEL_TOLERANCE = 0.1
# A step longer than this many spacings is a gap (at least one slice missing).
GAP_FACTOR = 1.5
# Steps that differ from the spacing by more than this share of it make the spacing uneven.
UNEVEN_TOLERANCE = 0.1


@dataclass(frozen=True)
class SeriesNote:
    """Something about a series' slices that a reader of distances across slices must know.

    ``indices`` are 0-based positions in the series' ordered slices. ``mm``: a gap's size (the
    distance between the two images around it), or for uneven spacing the largest difference
    of a step from the spacing. ``copies``: for a "duplicate" of slices sent more than once, how
    many repeated copies were left out; 0 for different slices at one position.
    """

    kind: NoteKind
    indices: tuple[int, ...]
    mm: float | None = None
    copies: int = 0

    def text(self, first_image: int) -> str:
        """The note for a report, numbering images from ``first_image`` (the global number of
        the series' first image): e.g. "a gap of 12.0 mm between images 7 and 8"."""
        numbers = [first_image + index for index in self.indices]
        images, plural = _images(numbers)
        if self.kind == "gap":
            size = f"{self.mm:.1f} mm" if self.mm is not None else "unknown size"
            if len(numbers) == 2:
                return f"a gap of {size} between images {numbers[0]} and {numbers[1]}"
            return f"a gap of {size} at {images}"
        if self.kind == "duplicate":
            if self.copies:
                copies = "1 repeated copy was"
                if self.copies > 1:
                    copies = f"{self.copies} repeated copies were"
                sent = "were" if plural else "was"
                return f"{images} {sent} sent more than once; {copies} left out"
            return f"{images} are different images at the same position"
        if self.kind == "mixed orientation":
            have = "have" if plural else "has"
            return (
                f"{images} {have} one of several orientations in one series, "
                "and are shown as a series of their own"
            )
        if self.kind == "no geometry":
            have = "have" if plural else "has"
            return (
                f"{images} {have} no position in the patient: ordered as the files number "
                "them, distances between slices unknown"
            )
        # uneven
        by = f" (steps differ by up to {self.mm:.1f} mm)" if self.mm is not None else ""
        return f"uneven spacing between slices around {images}{by}"


@dataclass(frozen=True)
class Series:
    """One series' slices in anatomical order, with where each lies along the slice normal.

    ``positions`` (mm along the sort axis, increasing) is None without geometry; ``spacing_mm``
    is the median step between distinct positions (None with fewer than two). ``dropped``
    counts repeated files left out (the same SOP instance and frame sent again).
    """

    key: tuple[str, ...]
    slices: tuple[Slice, ...]
    positions: tuple[float, ...] | None
    spacing_mm: float | None
    notes: tuple[SeriesNote, ...]
    dropped: int = 0

    def __repr__(self) -> str:  # the key holds UIDs: never in a log line or a traceback
        return f"Series({len(self.slices)} slices, spacing_mm={self.spacing_mm})"

    @property
    def geometry(self) -> bool:
        """Whether every slice has a position along the normal (a single slice with a plane
        has one too, though no spacing)."""
        return self.positions is not None

    def levels(self) -> tuple[int, ...]:
        """Each slice's level: slices at one position (within a tolerance relative to the
        spacing) share a level, and levels count up from 0 along the axis. Without geometry
        every slice is a level of its own."""
        if self.positions is None:
            return tuple(range(len(self.slices)))
        return _levels(self.positions, _tolerance(self.spacing_mm))


def arrange(slices: Sequence[Slice]) -> list[Series]:
    """The decoded slices of an upload (in upload order) as series in study order.

    Files keep their upload order (a client that sends a PNG, then a DICOM file, gets its
    images back in that order), except that all DICOM series stand together, where the upload's
    first DICOM file stands, ordered among themselves by study UID, series number (missing
    last) and series UID, whatever order their files came in; NIfTI files and PNG/JPEG/TIFF
    images keep their upload order. Within a series, slices are in order
    along the slice normal (see :func:`_with_geometry`) or, without positions, by instance
    number. Neither the order of the files nor their names change the result, except where
    they are all there is: the order of NIfTI and raster files, and the key of a DICOM file
    without a series or instance UID.
    """
    dicom: dict[tuple[str, ...], list[Slice]] = {}
    # NIfTI and raster series in upload order: (key, slices, whether NIfTI).
    others: list[tuple[tuple[str, ...], list[Slice], bool]] = []
    # Each NIfTI file's slices, by its key (which names the decode, so two files of one name
    # are two series).
    nifti: dict[tuple[str, ...], list[Slice]] = {}
    dicom_place: int | None = None  # where the DICOM series stand among the others
    for place, one in enumerate(slices):
        source = one.source
        if source is not None and source.format == "DICOM" and dicom_place is None:
            dicom_place = len(others)
        if source is None:
            others.append((("image", str(place)), [one], False))
        elif source.format not in GEOMETRY_FORMATS:
            others.append(((*source.series_key, str(place)), [one], False))
        elif source.format == "DICOM":
            dicom.setdefault(source.series_key, []).append(one)
        else:
            members = nifti.get(source.series_key)
            if members is None:
                members = nifti[source.series_key] = []
                others.append((source.series_key, members, True))
            members.append(one)
    arranged: list[Series] = []
    for index, (key, members, is_nifti) in enumerate([*others, ((), [], False)]):
        if index == dicom_place:
            for series_key in sorted(dicom, key=lambda k: _series_order(k, dicom[k])):
                arranged.extend(_arrange_series(series_key, dicom[series_key]))
        if not members:
            continue
        if is_nifti:
            arranged.extend(_arrange_series(key, members))
        else:
            arranged.append(Series(key, tuple(members), None, None, ()))
    return arranged


def _series_order(key: tuple[str, ...], members: list[Slice]) -> tuple[str, bool, int, str]:
    """(study UID, series number missing, series number, series UID) of a DICOM series."""
    sources = [one.source for one in members if one.source is not None]
    study = next((s.study_uid for s in sources if s.study_uid), key[0])
    series = next((s.series_uid for s in sources if s.series_uid), key[-1])
    numbers = [s.series_number for s in sources if s.series_number is not None]
    return study, not numbers, min(numbers, default=0), series


def _tie(one: Slice) -> tuple[str, int, int]:
    """What orders slices that nothing else orders: SOP instance UID, frame, NIfTI index."""
    source = one.source
    if source is None:
        return "", 0, -1
    return (
        source.sop_instance_uid or "",
        source.frame or 0,
        source.index if source.index is not None else -1,
    )


def _arrange_series(key: tuple[str, ...], members: list[Slice]) -> list[Series]:
    """One DICOM or NIfTI series in order: repeated files left out, split by orientation."""
    kept, copies = _without_repeats(members)
    planes = [one.source.plane if one.source is not None else None for one in kept]
    if any(plane is None for plane in planes):
        return [_without_geometry(key, kept, copies)]
    groups = _by_orientation(kept)
    if len(groups) == 1:
        return [_with_geometry(key, kept, copies)]
    split = []
    for number, group in enumerate(groups, start=1):
        series = _with_geometry((*key, str(number)), group, copies)
        note = SeriesNote("mixed orientation", tuple(range(len(series.slices))))
        split.append(replace(series, notes=(note, *series.notes)))
    return split


def _without_repeats(members: list[Slice]) -> tuple[list[Slice], dict[tuple[str, int], int]]:
    """The slices with each (SOP instance, frame) once, and how many copies of each were
    left out. Slices without a SOP instance UID cannot be told apart and are all kept."""
    kept: list[Slice] = []
    copies: dict[tuple[str, int], int] = {}
    for one in sorted(members, key=_tie):
        identity = _identity(one)
        if identity is None:
            kept.append(one)
        elif identity in copies:
            copies[identity] += 1
        else:
            copies[identity] = 0
            kept.append(one)
    return kept, {identity: count for identity, count in copies.items() if count}


def _identity(one: Slice) -> tuple[str, int] | None:
    source = one.source
    if source is None or not source.sop_instance_uid:
        return None
    return source.sop_instance_uid, source.frame or 0


def _repeat_notes(
    ordered: Sequence[Slice], copies: dict[tuple[str, int], int]
) -> tuple[int, tuple[SeriesNote, ...]]:
    """How many repeated copies of these slices were left out, and a note naming them."""
    repeated = [
        (index, copies[identity])
        for index, one in enumerate(ordered)
        if (identity := _identity(one)) is not None and identity in copies
    ]
    if not repeated:
        return 0, ()
    dropped = sum(count for _, count in repeated)
    indices = tuple(index for index, _ in repeated)
    return dropped, (SeriesNote("duplicate", indices, copies=dropped),)


def _without_geometry(
    key: tuple[str, ...], members: list[Slice], copies: dict[tuple[str, int], int]
) -> Series:
    """A series where some slice has no plane: ordered by instance number (missing last),
    then as :func:`_tie` orders them."""

    def order(one: Slice) -> tuple[bool, int, tuple[str, int, int]]:
        number = one.source.instance_number if one.source is not None else None
        return number is None, number or 0, _tie(one)

    ordered = sorted(members, key=order)
    dropped, repeats = _repeat_notes(ordered, copies)
    note = SeriesNote("no geometry", tuple(range(len(ordered))))
    return Series(key, tuple(ordered), None, None, (note, *repeats), dropped)


def _plane(one: Slice) -> Plane:
    """The plane of a slice that has one (callers have checked)."""
    plane = one.source.plane if one.source is not None else None
    if plane is None:
        raise ValueError("a slice without a plane among slices with geometry")
    return plane


def _orientation(one: Slice) -> tuple[float, ...]:
    """Direction cosines, rounded: a stable order for orientations."""
    plane = _plane(one)
    return tuple(round(v, 3) for v in (*plane.row_direction, *plane.column_direction))


def _by_orientation(members: list[Slice]) -> list[list[Slice]]:
    """The slices in groups of parallel planes (:meth:`Plane.parallel_to`): most slices
    first, then by direction cosines, so that the order of the files does not matter."""
    groups: list[list[Slice]] = []
    for one in sorted(members, key=lambda one: (_orientation(one), _tie(one))):
        plane = _plane(one)
        for group in groups:
            if _plane(group[0]).parallel_to(plane):
                group.append(one)
                break
        else:
            groups.append([one])
    return sorted(groups, key=lambda group: (-len(group), _orientation(group[0])))


def sort_axis(normal: np.ndarray) -> np.ndarray:
    """The slice normal with its sign chosen so that its largest component is positive: an
    axial series runs foot to head, a coronal one front to back, a sagittal one right to left
    (LPS), whatever the row and column directions."""
    axis = np.asarray(normal, dtype=float)
    return -axis if axis[int(np.argmax(np.abs(axis)))] < 0 else axis


def _with_geometry(
    key: tuple[str, ...], members: list[Slice], copies: dict[tuple[str, int], int]
) -> Series:
    """Parallel slices in order along the sort axis, with their positions, the spacing and
    notes on coinciding slices, gaps and uneven steps.

    The axis is the normal of one slice chosen by :func:`_tie` (all are parallel), so every
    position is the same whatever the order of the files; slices at exactly one position are
    ordered by :func:`_tie`. The spacing is the lower median of the steps between levels, so
    that in a short series one gap does not pass for half the spacing. A NIfTI series' steps
    are whole voxels that the decoder chose from a complete volume: they give no gap or uneven
    note.
    """
    axis = sort_axis(_plane(min(members, key=_tie)).normal)
    placed = sorted(
        ((float(np.dot(_plane(one).position, axis)), one) for one in members),
        key=lambda item: (item[0], _tie(item[1])),
    )
    slices = tuple(one for _, one in placed)
    positions = tuple(position for position, _ in placed)
    rough = _spacing(positions, MIN_LEVEL_TOLERANCE_MM)
    spacing = _spacing(positions, _tolerance(rough))
    levels = _levels(positions, _tolerance(spacing))  # as Series.levels() finds them
    dropped, notes = _repeat_notes(slices, copies)
    notes += _coinciding(levels)
    nifti = all(one.source is not None and one.source.format == "NIfTI" for one in slices)
    if spacing is not None and not nifti:
        notes += _steps(positions, levels, spacing)
    return Series(key, slices, positions, spacing, notes, dropped)


def _tolerance(spacing: float | None) -> float:
    """How close two positions must be to lie at one level."""
    if spacing is None:
        return MIN_LEVEL_TOLERANCE_MM
    return max(MIN_LEVEL_TOLERANCE_MM, LEVEL_TOLERANCE * spacing)


def _levels(positions: Sequence[float], tolerance: float) -> tuple[int, ...]:
    """Levels of increasing positions: a position more than ``tolerance`` past the first
    position of the current level starts the next one (anchored, so levels never drift)."""
    levels: list[int] = []
    anchor: float | None = None
    for position in positions:
        if anchor is None or position - anchor > tolerance:
            anchor = position
            levels.append(levels[-1] + 1 if levels else 0)
        else:
            levels.append(levels[-1])
    return tuple(levels)


def _level_positions(positions: Sequence[float], levels: Sequence[int]) -> list[float]:
    """The mean position of each level."""
    sums: dict[int, list[float]] = {}
    for level, position in zip(levels, positions, strict=True):
        sums.setdefault(level, []).append(position)
    return [float(np.mean(sums[level])) for level in sorted(sums)]


def _spacing(positions: Sequence[float], tolerance: float) -> float | None:
    """The lower median step between the levels of sorted positions; None with one level."""
    means = _level_positions(positions, _levels(positions, tolerance))
    steps = np.diff(means)
    return float(statistics.median_low(steps.tolist())) if steps.size else None


def _coinciding(levels: Sequence[int]) -> tuple[SeriesNote, ...]:
    """A "duplicate" note for each level that holds more than one slice."""
    members: dict[int, list[int]] = {}
    for index, level in enumerate(levels):
        members.setdefault(level, []).append(index)
    return tuple(
        SeriesNote("duplicate", tuple(indices))
        for _, indices in sorted(members.items())
        if len(indices) > 1
    )


def _steps(
    positions: Sequence[float], levels: Sequence[int], spacing: float
) -> tuple[SeriesNote, ...]:
    """A "gap" note for each step longer than GAP_FACTOR spacings, and one "uneven" note for
    the other steps that differ from the spacing by more than UNEVEN_TOLERANCE of it."""
    means = _level_positions(positions, levels)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for index, level in enumerate(levels):
        first.setdefault(level, index)
        last[level] = index
    notes: list[SeriesNote] = []
    uneven: list[int] = []
    worst = 0.0
    for level, step in enumerate(np.diff(means)):
        around = (last[level], first[level + 1])
        if step > GAP_FACTOR * spacing:
            notes.append(SeriesNote("gap", around, round(float(step), 2)))
        elif abs(step - spacing) > UNEVEN_TOLERANCE * spacing:
            uneven.extend(index for index in around if index not in uneven)
            worst = max(worst, abs(float(step) - spacing))
    if uneven:
        notes.append(SeriesNote("uneven", tuple(uneven), round(worst, 2)))
    return tuple(notes)


def _images(numbers: Sequence[int]) -> tuple[str, bool]:
    """Image numbers as words ("image 5", "images 5 and 6", "images 1 to 4, 7 and 9") and
    whether they are more than one."""
    unique = sorted(set(numbers))
    if not unique:
        return "no images", True
    runs: list[list[int]] = []
    for number in unique:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    parts: list[str] = []
    for run in runs:
        if len(run) >= 3:
            parts.append(f"{run[0]} to {run[-1]}")
        else:
            parts.extend(str(number) for number in run)
    if len(unique) == 1:
        return f"image {unique[0]}", False
    words = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"images {words}", True
