"""The mAP arithmetic of the evaluation command, on hand-built predictions."""

import numpy as np
import pytest

from mriscribe.training.evaluate import (
    REAL_TARGETS,
    average_precision,
    check_targets,
    evaluate,
    found_shares,
    operating_point,
    scan_measure,
)

BOX = np.array([10.0, 10.0, 50.0, 50.0])


def test_perfect_predictions_score_one():
    truths = [[(0, BOX)], [(1, BOX + 5)]]
    predictions = [[(0, 0.9, BOX)], [(1, 0.8, BOX + 5)]]
    ap = evaluate(predictions, truths, 2)
    np.testing.assert_allclose(ap, 1.0)


def test_missed_object_halves_recall():
    truths = [[(0, BOX)], [(0, BOX)]]
    predictions = [[(0, 0.9, BOX)], []]
    ap = evaluate(predictions, truths, 1)
    np.testing.assert_allclose(ap[0], 51 / 101)  # COCO samples recall 0, 0.01, ..., 0.5 at P=1


def test_wrong_class_scores_zero_and_loose_box_fails_strict_thresholds():
    truths = [[(0, BOX)]]
    assert evaluate([[(1, 0.9, BOX)]], truths, 2)[0].max() == 0.0
    loose = BOX + np.array([0, 0, 10, 0])  # IoU 40/50 = 0.8
    ap = evaluate([[(0, 0.9, loose)]], truths, 1)[0]
    assert ap[:7].min() == 1.0  # thresholds 0.50 .. 0.80
    assert ap[7:].max() == 0.0  # 0.85 .. 0.95


def test_duplicate_detection_is_a_false_positive():
    truths = [[(0, BOX)]]
    ap = evaluate([[(0, 0.9, BOX), (0, 0.8, BOX)]], truths, 1)[0]
    np.testing.assert_allclose(ap, 1.0)  # the duplicate ranks after the hit: recall already 1
    ap = evaluate([[(0, 0.7, BOX), (0, 0.8, BOX + 100)]], truths, 1)[0]
    np.testing.assert_allclose(ap, 0.5)  # a confident miss first halves precision at the hit


def test_average_precision_envelope_at_101_recall_points():
    recall, precision = np.array([0.5, 1.0]), np.array([1.0, 0.5])
    assert average_precision(recall, precision) == pytest.approx((51 + 50 * 0.5) / 101)
    # The envelope lifts a dip: precision 0.4 then 0.6 reads as 0.6 all the way.
    assert average_precision(np.array([0.5, 1.0]), np.array([0.4, 0.6])) == pytest.approx(0.6)


def test_class_without_ground_truth_is_left_out():
    ap = evaluate([[(0, 0.9, BOX)]], [[(0, BOX)]], 3)
    assert np.isnan(ap[1]).all() and np.isnan(ap[2]).all()
    np.testing.assert_allclose(ap[0], 1.0)


def test_second_object_matches_when_the_first_is_taken():
    other = BOX + np.array([5, 0, 5, 0])  # overlaps BOX with IoU 0.78
    truths = [[(0, BOX), (0, other)]]
    predictions = [[(0, 0.9, BOX), (0, 0.8, BOX + np.array([4, 0, 4, 0]))]]
    np.testing.assert_allclose(evaluate(predictions, truths, 1)[0, :5], 1.0)


def test_operating_point_counts_false_and_missed_tumours_at_the_report_threshold():
    names = ("Glioma", "Meningioma", "No Tumor", "Pituitary")
    truths = [
        [(2, BOX)],  # normal, boxed "No Tumor"
        [],  # normal, no box at all (a slice below the brain)
        [(2, BOX)],  # normal
        [(0, BOX)],  # glioma
        [(3, BOX)],  # pituitary
    ]
    predictions = [
        [(2, 0.9, BOX), (1, 0.3, BOX)],  # a meningioma on a normal slice: false tumour
        [(0, 0.2, BOX)],  # below the threshold: not reported
        [(2, 0.8, BOX)],
        [(0, 0.7, BOX + 40)],  # right class, wrong place: presence counts, not the box
        [(1, 0.9, BOX)],  # wrong class: the pituitary tumour is missed
    ]
    assert operating_point(predictions, truths, names) == {
        "normal_images": 3,
        "false_tumour": 1,
        "tumour_images": 2,
        "missed_tumour": 1,
    }
    assert operating_point(predictions, truths, names, conf=0.1)["false_tumour"] == 2


def test_found_shares_count_tumours_boxed_at_iou_half_and_by_their_own_class():
    names = ("Glioma", "Meningioma", "No Tumor", "Pituitary")
    truths = [[(0, BOX)], [(1, BOX)], [(3, BOX)], [(0, BOX)], [(2, BOX)]]
    predictions = [
        [(0, 0.9, BOX)],  # found, right class
        [(0, 0.8, BOX + np.array([0, 0, 2, 0]))],  # found (IoU 0.95), wrong class
        [(3, 0.2, BOX)],  # below the report threshold: not found
        [(0, 0.9, BOX + 30), (2, 0.9, BOX)],  # a "No Tumor" box is no tumour found; IoU too low
        [(1, 0.9, BOX)],  # a normal image: no tumour to find
    ]
    shares = found_shares(predictions, truths, names)
    assert shares == {"tumours": 4, "found": 0.5, "right_class": 0.25}
    assert found_shares(predictions, truths, names, conf=0.1)["right_class"] == 0.5


def test_targets_are_met_only_when_every_figure_is_measured_and_met():
    passing = {
        name: (target if at_least else 0.0) for name, (target, at_least) in REAL_TARGETS.items()
    }
    met, lines = check_targets(passing)
    assert met and len(lines) == len(REAL_TARGETS)
    assert not check_targets({**passing, "real mAP50": 0.89})[0]
    assert not check_targets({**passing, "normal head slices with a false tumour": 0.06})[0]
    missing = {**passing, "synthetic held-out mAP50": None}
    met, lines = check_targets(missing)
    assert not met and any("not measured" in line for line in lines)


class _FixedDetector:
    """Returns the given findings, one list per image, whatever the pixels."""

    def __init__(self, findings):
        self.findings = findings

    def detect(self, images):
        assert len(images) == len(self.findings)
        return self.findings


def test_scan_measure_counts_large_tumour_slices_and_false_tumours():
    from mriscribe.detection.base import Box, Finding
    from mriscribe.training.real_scans import ScanSlice

    def finding(name, box):
        return Finding(name, 0, 0.9, Box(*box))

    pixels = np.zeros((8, 8, 3), np.uint8)
    slices = [
        ScanSlice(0, pixels, BOX, 400),  # found: IoU 0.56 >= 0.25
        ScanSlice(1, pixels, BOX, 400),  # only a "No Tumor" box: missed
        ScanSlice(2, pixels, BOX, 100),  # a small lesion: not counted either way
        ScanSlice(3, pixels, None, 0),  # tumour-free, with a false tumour
        ScanSlice(4, pixels, None, 0),  # tumour-free, clean
    ]
    findings = [
        [finding("Glioma", BOX + np.array([0, 0, 30, 0]))],
        [finding("No Tumor", BOX)],
        [],
        [finding("Meningioma", BOX)],
        [finding("No Tumor", BOX)],
    ]
    assert scan_measure(_FixedDetector(findings), slices) == {
        "tumour_slices": 2,
        "found": 1,
        "tumour_free_slices": 2,
        "false_tumour": 1,
    }
