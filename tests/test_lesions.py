"""Linking detections into lesions: overlap across adjacent slices, one missing slice tolerated,
the class a confidence-weighted vote, extent and volume from the slice positions."""

from __future__ import annotations

import pytest

from mriscribe.imaging.geometry import Plane
from mriscribe.report.facts import FindingFact
from mriscribe.study.lesions import Placed, SeriesPlacement, link

SPACING = 5.0


def _plane(level: int, shift: tuple[float, float] = (0.0, 0.0)) -> Plane:
    """An axial slice at z = level * SPACING, 1 mm pixels, optionally shifted in-plane."""
    return Plane.of((shift[0], shift[1], level * SPACING), (1, 0, 0), (0, 1, 0), (1.0, 1.0))


def _placed(
    image: int,
    level: int,
    box: tuple[float, float, float, float],
    name: str = "Glioma",
    confidence: float = 0.8,
    plane: Plane | None = None,
) -> Placed:
    width, height = box[2] - box[0], box[3] - box[1]
    fact = FindingFact(image, name, confidence, width, height, False)
    return Placed(fact, box, level, plane or _plane(level))


def _series(*placed: Placed, levels: int = 10, geometry: bool = True) -> SeriesPlacement:
    positions = tuple(level * SPACING for level in range(levels)) if geometry else ()
    return SeriesPlacement(1, placed, positions, SPACING if geometry else None)


def test_one_tumour_on_adjacent_slices_is_one_lesion_with_extent_and_volume() -> None:
    boxes = [(40, 40, 60, 60), (35, 35, 65, 65), (38, 38, 62, 62)]
    placed = [_placed(level + 3, level + 2, box) for level, box in enumerate(boxes)]
    (lesion,) = link([_series(*placed)])
    assert lesion.images == (3, 4, 5)
    assert lesion.largest.image_number == 4 and lesion.largest.width_mm == 30
    assert lesion.craniocaudal_mm == pytest.approx(3 * SPACING)  # two steps plus one slice
    mean_area = (20 * 20 + 30 * 30 + 24 * 24) / 3
    assert lesion.volume_ml == pytest.approx(mean_area * 3 * SPACING / 1000)
    assert lesion.geometry


def test_one_missing_slice_is_tolerated_two_are_not() -> None:
    box = (40, 40, 60, 60)
    one_gap = [_placed(1, 1, box), _placed(3, 3, box)]
    assert len(link([_series(*one_gap)])) == 1
    two_gaps = [_placed(1, 1, box), _placed(4, 4, box)]
    assert len(link([_series(*two_gaps)])) == 2


def test_boxes_that_do_not_overlap_are_two_lesions() -> None:
    placed = [_placed(1, 1, (10, 10, 30, 30)), _placed(2, 2, (60, 60, 80, 80))]
    lesions = link([_series(*placed)])
    assert len(lesions) == 2
    assert [lesion.id for lesion in lesions] == [1, 2]


def test_a_class_that_flips_between_slices_does_not_split_the_lesion() -> None:
    box = (40, 40, 60, 60)
    placed = [
        _placed(1, 1, box, "Glioma", 0.9),
        _placed(2, 2, box, "Meningioma", 0.6),
        _placed(3, 3, box, "Glioma", 0.7),
        _placed(4, 4, box, "Meningioma", 0.5),
    ]
    (lesion,) = link([_series(*placed)])
    assert lesion.class_name == "Glioma"  # 1.6 against 1.1
    assert lesion.confidence == pytest.approx(0.9)
    assert len(lesion.detections) == 4


def test_weighted_class_can_differ_from_the_single_best_detection() -> None:
    box = (40, 40, 60, 60)
    placed = [
        _placed(1, 1, box, "Glioma", 0.95),
        _placed(2, 2, box, "Meningioma", 0.7),
        _placed(3, 3, box, "Meningioma", 0.7),
    ]
    (lesion,) = link([_series(*placed)])
    assert lesion.class_name == "Meningioma"
    assert lesion.confidence == pytest.approx(0.7)  # the best of its own class


def test_overlap_is_measured_in_patient_space_not_pixels() -> None:
    """Two slices whose pixel grids are shifted by 30 mm: the same pixel box is elsewhere in
    the patient, and a box moved back by 30 pixels is the same place."""
    shifted = _plane(2, shift=(30.0, 0.0))
    same_pixels = [_placed(1, 1, (40, 40, 60, 60)), _placed(2, 2, (40, 40, 60, 60), plane=shifted)]
    assert len(link([_series(*same_pixels)])) == 2
    same_place = [_placed(1, 1, (40, 40, 60, 60)), _placed(2, 2, (10, 40, 30, 60), plane=shifted)]
    assert len(link([_series(*same_place)])) == 1


def test_without_geometry_every_detection_is_its_own_lesion() -> None:
    box = (40, 40, 60, 60)
    placed = [_placed(1, 0, box), _placed(2, 1, box)]
    lesions = link([_series(*placed, geometry=False)])
    assert len(lesions) == 2
    assert all(
        lesion.craniocaudal_mm is None and lesion.volume_ml is None and lesion.side is None
        for lesion in lesions
    )
    assert not any(lesion.geometry for lesion in lesions)


def test_two_tumour_boxes_on_one_slice_that_overlap_are_one_lesion() -> None:
    placed = [
        _placed(5, 5, (40, 40, 60, 60), "Glioma", 0.8),
        _placed(5, 5, (42, 42, 62, 62), "Meningioma", 0.4),
    ]
    (lesion,) = link([_series(*placed)])
    assert lesion.images == (5,)
    assert lesion.craniocaudal_mm == pytest.approx(SPACING)


def test_lesions_are_numbered_by_series_then_first_image() -> None:
    first = SeriesPlacement(
        1,
        (_placed(9, 4, (10, 10, 20, 20)), _placed(3, 1, (50, 50, 70, 70))),
        tuple(level * SPACING for level in range(10)),
        SPACING,
    )
    second = SeriesPlacement(2, (_placed(12, 0, (10, 10, 20, 20)),), (0.0,), SPACING)
    lesions = link([second, first])
    order = [(lesion.series, lesion.images) for lesion in lesions]
    assert order == [(1, (3,)), (1, (9,)), (2, (12,))]
    assert [lesion.id for lesion in lesions] == [1, 2, 3]


def test_a_thin_slice_series_tolerates_missing_slices_up_to_six_mm() -> None:
    """At 1 mm slices, a detector that misses five slices has not found two tumours; seven
    missing slices (8 mm) are two lesions."""
    box = (40, 40, 60, 60)

    def series(*placed: Placed) -> SeriesPlacement:
        return SeriesPlacement(1, placed, tuple(float(level) for level in range(40)), 1.0)

    def at(level: int, image: int) -> Placed:
        plane = Plane.of((0.0, 0.0, float(level)), (1, 0, 0), (0, 1, 0), (1.0, 1.0))
        return _placed(image, level, box, plane=plane)

    assert len(link([series(at(10, 1), at(16, 2))])) == 1
    assert len(link([series(at(10, 1), at(18, 2))])) == 2
