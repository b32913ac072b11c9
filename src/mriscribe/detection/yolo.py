"""Decoding raw YOLOv8 / YOLO11 detection outputs: confidence filter and class-aware NMS."""

from __future__ import annotations

import numpy as np


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """Convert (N, 4) centre-x, centre-y, width, height boxes to corner form."""
    out = np.empty_like(boxes)
    half_w, half_h = boxes[:, 2] / 2, boxes[:, 3] / 2
    out[:, 0] = boxes[:, 0] - half_w
    out[:, 1] = boxes[:, 1] - half_h
    out[:, 2] = boxes[:, 0] + half_w
    out[:, 3] = boxes[:, 1] + half_h
    return out


def box_iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one (4,) x1,y1,x2,y2 box against (N, 4) boxes."""
    inter_w = (np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])).clip(0)
    inter_h = (np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])).clip(0)
    inter = inter_w * inter_h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, highest score first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best = order[0]
        keep.append(int(best))
        if order.size == 1:
            break
        rest = order[1:]
        order = rest[box_iou(boxes[best], boxes[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def decode_predictions(
    output: np.ndarray,
    conf_threshold: float,
    iou_threshold: float,
    max_detections: int = 100,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one image's raw output of shape (4 + nc, N).

    Rows 0-3 are centre-x, centre-y, width, height in model input pixels; the remaining
    rows are per-class scores (already sigmoid). Returns (boxes xyxy (K, 4), scores (K,),
    class ids (K,)) after the confidence threshold and class-aware NMS, best first.
    """
    if output.ndim != 2 or output.shape[0] < 5:
        raise ValueError(f"expected a (4 + classes, anchors) array, got shape {output.shape}")
    class_scores = output[4:]
    class_ids = class_scores.argmax(axis=0)
    scores = class_scores[class_ids, np.arange(class_scores.shape[1])]
    candidates = scores > conf_threshold
    if not candidates.any():
        empty = np.zeros((0, 4), dtype=np.float32)
        return empty, np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
    boxes = xywh_to_xyxy(output[:4, candidates].T.astype(np.float32))
    scores, class_ids = scores[candidates], class_ids[candidates]
    # Class-aware NMS in one pass: shift each class to its own region so boxes of
    # different classes never overlap (the trick torchvision's batched_nms uses).
    span = float(boxes.max() - boxes.min()) + 1.0  # boxes may reach below zero
    offsets = class_ids[:, None].astype(np.float32) * span
    keep = nms(boxes + offsets, scores, iou_threshold)[:max_detections]
    return boxes[keep], scores[keep], class_ids[keep].astype(np.int64)
