"""mAP of a detector on the held-out-anatomy test split, through mriscribe's own runtime path.

    python -m mriscribe.training.evaluate [--data DIR] [--model PATH] [--n 800]

Without --data, the test split (anatomy training never saw) is synthesized first into a
temporary folder. Prints mAP50 and mAP50-95 per class (COCO-style: IoU 0.50:0.05:0.95,
101-point interpolated precision), and exits 1 when a target is missed with --check. It also
prints what a reader sees at the default confidence threshold (0.25): on how many normal images
a tumour is reported, and on how many tumour images the tumour's class is not.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from mriscribe.detection import load_detector
from mriscribe.detection.yolo import box_iou
from mriscribe.imaging import read_raster
from mriscribe.report.facts import is_negative_class

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
REPORT_CONF = 0.25  # the runtime's default confidence threshold
TARGETS = {"map50": 0.90, "map50_95": 0.65, "class_map50": 0.80}


def read_labels(label_file: Path, width: int, height: int) -> list[tuple[int, np.ndarray]]:
    """YOLO label lines -> (class id, x1 y1 x2 y2 in pixels)."""
    boxes = []
    for line in label_file.read_text().splitlines():
        if not line.strip():
            continue
        cls, cx, cy, w, h = (float(v) for v in line.split())
        boxes.append(
            (
                int(cls),
                np.array(
                    [
                        (cx - w / 2) * width,
                        (cy - h / 2) * height,
                        (cx + w / 2) * width,
                        (cy + h / 2) * height,
                    ]
                ),
            )
        )
    return boxes


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """COCO's AP: precision envelope sampled at 101 recall points (0, 0.01, ..., 1)."""
    if precision.size == 0:
        return 0.0
    envelope = np.flip(np.maximum.accumulate(np.flip(precision)))
    points = np.linspace(0.0, 1.0, 101)
    index = np.searchsorted(recall, points, side="left")
    sampled = np.where(index < envelope.size, envelope[np.minimum(index, envelope.size - 1)], 0)
    return float(sampled.mean())


def evaluate(
    predictions: list[list[tuple[int, float, np.ndarray]]],
    truths: list[list[tuple[int, np.ndarray]]],
    n_classes: int,
) -> np.ndarray:
    """AP per (class, IoU threshold) over images, shape (n_classes, 10); NaN for a class with
    no ground truth. Predictions are matched best-score first to the unmatched ground truth of
    their class with the highest IoU at or above the threshold, as COCO does."""
    ap = np.full((n_classes, len(IOU_THRESHOLDS)), np.nan)
    for cls in range(n_classes):
        n_true = sum(1 for image in truths for c, _ in image if c == cls)
        if n_true == 0:
            continue
        records = [
            (score, index, box)
            for index, image in enumerate(predictions)
            for c, score, box in image
            if c == cls
        ]
        records.sort(key=lambda r: -r[0])
        for t, threshold in enumerate(IOU_THRESHOLDS):
            used: set[tuple[int, int]] = set()
            hits = np.zeros(len(records))
            for r, (_, index, box) in enumerate(records):
                candidates = [
                    (j, b)
                    for j, (c, b) in enumerate(truths[index])
                    if c == cls and (index, j) not in used
                ]
                if not candidates:
                    continue
                ious = box_iou(box, np.stack([b for _, b in candidates]))
                best = int(ious.argmax())
                if ious[best] >= threshold:
                    used.add((index, candidates[best][0]))
                    hits[r] = 1
            tp = np.cumsum(hits)
            recall = tp / n_true
            precision = tp / np.arange(1, len(records) + 1)
            ap[cls, t] = average_precision(recall, precision)
    return ap


def operating_point(
    predictions: list[list[tuple[int, float, np.ndarray]]],
    truths: list[list[tuple[int, np.ndarray]]],
    names: tuple[str, ...] | list[str],
    conf: float = REPORT_CONF,
) -> dict[str, int]:
    """Image-level errors at confidence ``conf``, as a report would show them.

    A normal image (no tumour in its labels) with any tumour class reported is a false tumour;
    a tumour image where a labelled tumour's class is not reported is a missed tumour. Presence
    of a class on an image does not depend on NMS, so predictions kept for mAP serve as they are.
    """
    tumour = {i for i, name in enumerate(names) if not is_negative_class(name)}
    counts = {"normal_images": 0, "false_tumour": 0, "tumour_images": 0, "missed_tumour": 0}
    for found, truth in zip(predictions, truths, strict=True):
        reported = {c for c, score, _ in found if score >= conf and c in tumour}
        expected = {c for c, _ in truth if c in tumour}
        if expected:
            counts["tumour_images"] += 1
            counts["missed_tumour"] += int(not expected <= reported)
        else:
            counts["normal_images"] += 1
            counts["false_tumour"] += int(bool(reported))
    return counts


def run(data: Path, model: Path | None) -> dict[str, object]:
    detector = load_detector(model, conf_threshold=0.001, iou_threshold=0.6)
    names = detector.info.class_names
    images = sorted(p for p in (data / "images" / "test").iterdir() if p.is_file())
    predictions, truths = [], []
    for start in range(0, len(images), 16):
        chunk = [read_raster(p) for p in images[start : start + 16]]
        found = detector.detect([s.pixels for s in chunk])
        for path, image, findings in zip(images[start : start + 16], chunk, found, strict=True):
            label = data / "labels" / "test" / f"{path.stem}.txt"
            truths.append(read_labels(label, image.width, image.height))
            predictions.append(
                [
                    (f.class_id, f.confidence, np.array([f.box.x1, f.box.y1, f.box.x2, f.box.y2]))
                    for f in findings
                ]
            )
    ap = evaluate(predictions, truths, len(names))
    per_class = {
        name: {"map50": float(ap[i, 0]), "map50_95": float(ap[i].mean())}
        for i, name in enumerate(names)
        if not np.isnan(ap[i, 0])
    }
    return {
        "images": len(images),
        "map50": float(np.nanmean(ap[:, 0])),
        "map50_95": float(np.nanmean(ap)),
        "classes": per_class,
        "at_report_threshold": operating_point(predictions, truths, names),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, help="a data set folder from synth (its test split is used)"
    )
    parser.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    parser.add_argument("--n", type=int, default=800, help="test images to synthesize")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mriscribe-eval-") as tmp:
        data = args.data
        if data is None:
            from mriscribe.training.synth import write_dataset

            data = Path(tmp)
            write_dataset(data, {"test": args.n}, args.seed, 256, args.workers)
        results = run(data, args.model)
    print(f"held-out test split: {results['images']} images")
    print(f"{'class':<12} {'mAP50':>7} {'mAP50-95':>9}")
    for name, scores in results["classes"].items():  # type: ignore[union-attr]
        print(f"{name:<12} {scores['map50']:7.3f} {scores['map50_95']:9.3f}")
    print(f"{'all':<12} {results['map50']:7.3f} {results['map50_95']:9.3f}")
    point: dict[str, int] = results["at_report_threshold"]  # type: ignore[assignment]
    print(
        f"at confidence {REPORT_CONF}: a tumour reported on {point['false_tumour']} of "
        f"{point['normal_images']} normal images; the tumour's class missed on "
        f"{point['missed_tumour']} of {point['tumour_images']} tumour images"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    met = (
        results["map50"] >= TARGETS["map50"]
        and results["map50_95"] >= TARGETS["map50_95"]
        and all(s["map50"] >= TARGETS["class_map50"] for s in results["classes"].values())
    )  # type: ignore[union-attr]
    print("targets met" if met else "targets missed", file=sys.stderr)
    return 0 if met or not args.check else 1


if __name__ == "__main__":
    raise SystemExit(main())
