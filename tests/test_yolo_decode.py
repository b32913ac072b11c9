"""Decoding raw YOLO outputs and NMS, on hand-built tensors."""

import numpy as np
import pytest

from mriscribe.detection.yolo import box_iou, decode_predictions, nms, xywh_to_xyxy


def raw_output(anchors: list[tuple[float, float, float, float, list[float]]]) -> np.ndarray:
    """(4 + nc, N) as a YOLOv8 head emits it: cx, cy, w, h rows, then class-score rows."""
    columns = [
        np.array([cx, cy, w, h, *scores], dtype=np.float32) for cx, cy, w, h, scores in anchors
    ]
    return np.stack(columns, axis=1)


def test_xywh_to_xyxy():
    boxes = xywh_to_xyxy(np.array([[50, 40, 20, 10]], dtype=np.float32))
    np.testing.assert_allclose(boxes, [[40, 35, 60, 45]])


def test_box_iou_known_values():
    box = np.array([0, 0, 10, 10], dtype=np.float32)
    others = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=np.float32)
    np.testing.assert_allclose(box_iou(box, others), [1.0, 50 / 150, 0.0], rtol=1e-6)


def test_nms_keeps_best_of_overlapping_and_separate_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=np.float32)
    scores = np.array([0.8, 0.9, 0.7], dtype=np.float32)
    keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [1, 2]


def test_nms_threshold_is_respected():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], dtype=np.float32)  # IoU 1/3
    scores = np.array([0.9, 0.8], dtype=np.float32)
    assert nms(boxes, scores, iou_threshold=0.3).tolist() == [0]
    assert nms(boxes, scores, iou_threshold=0.4).tolist() == [0, 1]


def test_decode_is_class_aware_and_filters_confidence():
    output = raw_output(
        [
            (50, 50, 20, 20, [0.9, 0.0, 0.0]),  # class 0
            (51, 51, 20, 20, [0.0, 0.8, 0.0]),  # same place, class 1: kept (class-aware)
            (52, 52, 20, 20, [0.85, 0.0, 0.0]),  # class 0 duplicate: suppressed
            (150, 150, 10, 10, [0.0, 0.0, 0.2]),  # below threshold
        ]
    )
    boxes, scores, classes = decode_predictions(output, conf_threshold=0.25, iou_threshold=0.45)
    assert classes.tolist() == [0, 1]
    np.testing.assert_allclose(scores, [0.9, 0.8], rtol=1e-6)
    np.testing.assert_allclose(boxes[0], [40, 40, 60, 60])


def test_decode_empty_when_nothing_passes():
    output = raw_output([(10, 10, 5, 5, [0.1, 0.2])])
    boxes, scores, classes = decode_predictions(output, 0.25, 0.45)
    assert boxes.shape == (0, 4) and scores.size == 0 and classes.size == 0


def test_decode_rejects_wrong_shape():
    with pytest.raises(ValueError):
        decode_predictions(np.zeros((3, 10), dtype=np.float32), 0.25, 0.45)
