"""mAP of a detector on the held-out-anatomy test split, through mriscribe's own runtime path.

    python -m mriscribe.training.evaluate [--data DIR] [--model PATH] [--n 800]
    python -m mriscribe.training.evaluate --real [--data FIGSHARE] [--split SPLIT.json]

Without --data, the test split (anatomy training never saw) is synthesized first into a
temporary folder. Prints mAP50 and mAP50-95 per class (COCO-style: IoU 0.50:0.05:0.95,
101-point interpolated precision), and exits 1 when a target is missed with --check. It also
prints what a reader sees at the default confidence threshold (0.25): on how many normal images
a tumour is reported, and on how many tumour images the tumour's class is not.

--real measures against issue 11's targets instead: the real validation block of figshare T1-CE
(``--data``, default as in realdata.py; the block from ``--split``, a builder's split.json, else
recomputed from index.csv for ``--seed``): mAP per class, and at confidence 0.25 the share of
tumours boxed by a tumour class at IoU >= 0.5 and by their own class; then the synthetic held-out
split (``--n``, 0 skips it), false tumours on every slice mriscribe shows of the held-out normal
head (Colin27), and the pyradiomics GBM scans (``--scans``, from ``make real-scans``): labelled
tumour slices (>= 150 voxels) given a tumour box at IoU >= 0.25, and tumour-free slices with a
false tumour. The last line is "targets met" or "targets not met".
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mriscribe.detection import Detector, load_detector
from mriscribe.detection.yolo import box_iou
from mriscribe.imaging import read_raster
from mriscribe.report.facts import is_negative_class

if TYPE_CHECKING:
    from mriscribe.training.real_scans import ScanSlice

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
REPORT_CONF = 0.25  # the runtime's default confidence threshold
TARGETS = {"map50": 0.90, "map50_95": 0.65, "class_map50": 0.80}
# Issue 11's targets for --real: (what, threshold, True if the value must be at least it).
REAL_TARGETS = {
    "real mAP50": (0.90, True),
    "real mAP50-95": (0.60, True),
    "real lowest tumour-class AP50": (0.85, True),
    "real tumours found (IoU>=0.5)": (0.90, True),
    "real tumours found, right class": (0.85, True),
    "normal head slices with a false tumour": (0.05, False),
    "pyradiomics tumour slices found (IoU>=0.25)": (0.80, True),
    "pyradiomics tumour-free slices with a false tumour": (0.15, False),
    "synthetic held-out mAP50": (0.85, True),
}
FOUND_IOU = 0.5
SCAN_IOU = 0.25
SCAN_MIN_VOXELS = 150  # a labelled slice counts as a tumour slice from this lesion size


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


Prediction = list[tuple[int, float, np.ndarray]]
Truth = list[tuple[int, np.ndarray]]


def predict(
    detector: Detector, images: list[Path], labels: list[Path]
) -> tuple[list[Prediction], list[Truth]]:
    """Each image read and detected as mriscribe reads an upload, with its label's boxes."""
    predictions, truths = [], []
    for start in range(0, len(images), 16):
        chunk = [read_raster(p) for p in images[start : start + 16]]
        found = detector.detect([s.pixels for s in chunk])
        for label, image, findings in zip(labels[start : start + 16], chunk, found, strict=True):
            truths.append(read_labels(label, image.width, image.height))
            predictions.append(
                [
                    (f.class_id, f.confidence, np.array([f.box.x1, f.box.y1, f.box.x2, f.box.y2]))
                    for f in findings
                ]
            )
    return predictions, truths


def _scores(ap: np.ndarray, names: tuple[str, ...] | list[str]) -> dict[str, object]:
    per_class = {
        name: {"map50": float(ap[i, 0]), "map50_95": float(ap[i].mean())}
        for i, name in enumerate(names)
        if not np.isnan(ap[i, 0])
    }
    return {
        "map50": float(np.nanmean(ap[:, 0])),
        "map50_95": float(np.nanmean(ap)),
        "classes": per_class,
    }


def run(data: Path, model: Path | None) -> dict[str, object]:
    detector = load_detector(model, conf_threshold=0.001, iou_threshold=0.6)
    names = detector.info.class_names
    images = sorted(p for p in (data / "images" / "test").iterdir() if p.is_file())
    labels = [data / "labels" / "test" / f"{p.stem}.txt" for p in images]
    predictions, truths = predict(detector, images, labels)
    return {
        "images": len(images),
        **_scores(evaluate(predictions, truths, len(names)), names),
        "at_report_threshold": operating_point(predictions, truths, names),
    }


def found_shares(
    predictions: list[Prediction],
    truths: list[Truth],
    names: tuple[str, ...] | list[str],
    conf: float = REPORT_CONF,
    iou: float = FOUND_IOU,
) -> dict[str, float]:
    """Of the labelled tumours, the share boxed at ``iou`` by any tumour class at ``conf`` or
    more ("found"), and the share boxed so by their own class ("right_class")."""
    tumour = {i for i, name in enumerate(names) if not is_negative_class(name)}
    total = found = right = 0
    for found_boxes, truth in zip(predictions, truths, strict=True):
        kept = [(c, b) for c, score, b in found_boxes if score >= conf and c in tumour]
        for cls, box in truth:
            if cls not in tumour:
                continue
            total += 1
            if not kept:
                continue
            ious = box_iou(box, np.stack([b for _, b in kept]))
            found += int((ious >= iou).any())
            right += int(any(i >= iou and c == cls for (c, _), i in zip(kept, ious, strict=True)))
    return {
        "tumours": total,
        "found": found / total if total else float("nan"),
        "right_class": right / total if total else float("nan"),
    }


def _by_model_class(truths: list[Truth], names: tuple[str, ...] | list[str]) -> list[Truth]:
    """Label class ids (the prototype's order, CLASS_NAMES) turned into the model's ids."""
    from mriscribe.training.synth import CLASS_NAMES

    index = {name: i for i, name in enumerate(names)}
    return [[(index[CLASS_NAMES[c]], box) for c, box in truth] for truth in truths]


def run_real(
    data: Path, split_file: Path | None, model: Path | None, seed: int = 0
) -> dict[str, object]:
    """mAP and the share of tumours found on the real validation block."""
    from mriscribe.training.realdata import validation_images

    stems = validation_images(data, split_file, seed)
    images = [data / "images" / f"{stem}.jpg" for stem in stems]
    labels = [data / "labels" / f"{stem}.txt" for stem in stems]
    ranking = load_detector(model, conf_threshold=0.001, iou_threshold=0.6)
    names = ranking.info.class_names
    predictions, truths = predict(ranking, images, labels)
    truths = _by_model_class(truths, names)
    # The share found is what a user sees: the runtime's own thresholds and NMS.
    shown, _ = predict(load_detector(model), images, labels)
    return {
        "images": len(images),
        **_scores(evaluate(predictions, truths, len(names)), names),
        "at_report_threshold": found_shares(shown, truths, names),
    }


def scan_measure(detector: Detector, slices: list[ScanSlice]) -> dict[str, int]:
    """Issue 11's pyradiomics measure on one scan's slices (runtime thresholds)."""
    findings = detector.detect([s.pixels for s in slices])
    counts = {"tumour_slices": 0, "found": 0, "tumour_free_slices": 0, "false_tumour": 0}
    for piece, found in zip(slices, findings, strict=True):
        boxes = [
            [f.box.x1, f.box.y1, f.box.x2, f.box.y2]
            for f in found
            if not is_negative_class(f.class_name)
        ]
        if piece.label_pixels == 0:
            counts["tumour_free_slices"] += 1
            counts["false_tumour"] += bool(boxes)
        elif piece.box is not None and piece.label_pixels >= SCAN_MIN_VOXELS:
            counts["tumour_slices"] += 1
            hit = bool(boxes) and bool(box_iou(piece.box, np.array(boxes)).max() >= SCAN_IOU)
            counts["found"] += int(hit)
    return counts


def run_scans(detector: Detector, folder: Path) -> dict[str, dict[str, int]] | None:
    """``scan_measure`` per pyradiomics scan, or None when ``make real-scans`` has not run."""
    from mriscribe.training.real_scans import SCANS, load_scan

    if not all((folder / f).is_file() for _, image, label in SCANS for f in (image, label)):
        return None
    return {
        name: scan_measure(detector, load_scan(folder / image, folder / label))
        for name, image, label in SCANS
    }


def check_targets(values: dict[str, float | None]) -> tuple[bool, list[str]]:
    """Each of issue 11's figures against its target; met only if every one is measured and met.

    ``values`` maps REAL_TARGETS' names to a measured figure, or None where it was not measured.
    """
    lines, met = [], True
    for name, (target, at_least) in REAL_TARGETS.items():
        value = values.get(name)
        sign = ">=" if at_least else "<="
        if value is None or np.isnan(value):
            lines.append(f"{name}: not measured (target {sign} {target:.2f})")
            met = False
            continue
        ok = value >= target if at_least else value <= target
        met &= ok
        verdict = "met" if ok else "NOT MET"
        lines.append(f"{name}: {value:.3f} (target {sign} {target:.2f}) {verdict}")
    return met, lines


def _print_scores(title: str, results: dict[str, object]) -> None:
    print(f"{title}: {results['images']} images")
    print(f"{'class':<12} {'mAP50':>7} {'mAP50-95':>9}")
    for name, scores in results["classes"].items():  # type: ignore[union-attr]
        print(f"{name:<12} {scores['map50']:7.3f} {scores['map50_95']:9.3f}")
    print(f"{'all':<12} {results['map50']:7.3f} {results['map50_95']:9.3f}")


def _synthetic(args: argparse.Namespace) -> dict[str, object]:
    """The held-out synthetic test split: ``args.data``'s, else synthesized for ``args.n``."""
    with tempfile.TemporaryDirectory(prefix="mriscribe-eval-") as tmp:
        data = args.data
        if data is None:
            from mriscribe.training.synth import write_dataset

            data = Path(tmp)
            write_dataset(data, {"test": args.n}, args.seed, 256, args.workers)
        return run(data, args.model)


def _main_synthetic(args: argparse.Namespace) -> int:
    results = _synthetic(args)
    _print_scores("held-out test split", results)
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
    print("targets met" if met else "targets not met", file=sys.stderr)
    return 0 if met or not args.check else 1


def _real_block(args: argparse.Namespace, values: dict[str, float | None]) -> dict[str, object]:
    from mriscribe.training.realdata import figshare_dir

    real = run_real(figshare_dir(args.data), args.split, args.model, args.seed)
    _print_scores("real validation block (figshare T1-CE)", real)
    point: dict[str, float] = real["at_report_threshold"]  # type: ignore[assignment]
    print(
        f"at confidence {REPORT_CONF}: of {point['tumours']} tumours, {point['found']:.1%} boxed "
        f"by a tumour class at IoU>={FOUND_IOU}, {point['right_class']:.1%} by their own class"
    )
    tumour_ap = [
        scores["map50"]
        for name, scores in real["classes"].items()  # type: ignore[union-attr]
        if not is_negative_class(name)
    ]
    values["real mAP50"] = real["map50"]  # type: ignore[assignment]
    values["real mAP50-95"] = real["map50_95"]  # type: ignore[assignment]
    values["real lowest tumour-class AP50"] = min(tumour_ap) if tumour_ap else None
    values["real tumours found (IoU>=0.5)"] = point["found"]
    values["real tumours found, right class"] = point["right_class"]
    return real


def _normal_and_scans(
    args: argparse.Namespace, values: dict[str, float | None]
) -> dict[str, object]:
    from mriscribe.training import real_scans

    detector = load_detector(args.model)
    results: dict[str, object] = {}
    if real_scans.NORMAL_HEAD.is_file():
        normal = real_scans.false_tumours_on_normal_head(detector)
        results["colin27-normal-head"] = normal
        values["normal head slices with a false tumour"] = normal["with_false_tumour"] / max(
            normal["slices"], 1
        )
        print(
            f"colin27 (normal head, held out): false tumour on {normal['with_false_tumour']} "
            f"of {normal['slices']} slices"
        )
    else:
        print(f"colin27 not installed ({real_scans.NORMAL_HEAD}): apt-get install mricron-data")
    scans = run_scans(detector, args.scans)
    if scans is None:
        print(f"pyradiomics scans missing in {args.scans}: run 'make real-scans'")
        return results
    results["pyradiomics"] = scans
    for name, counts in scans.items():
        print(
            f"{name}: tumour box (IoU>={SCAN_IOU}) on {counts['found']} of "
            f"{counts['tumour_slices']} tumour slices (>= {SCAN_MIN_VOXELS} voxels); false "
            f"tumour on {counts['false_tumour']} of {counts['tumour_free_slices']} tumour-free"
        )
    total = {key: sum(c[key] for c in scans.values()) for key in next(iter(scans.values()))}
    values["pyradiomics tumour slices found (IoU>=0.25)"] = total["found"] / max(
        total["tumour_slices"], 1
    )
    values["pyradiomics tumour-free slices with a false tumour"] = total["false_tumour"] / max(
        total["tumour_free_slices"], 1
    )
    return results


def _main_real(args: argparse.Namespace) -> int:
    values: dict[str, float | None] = {}
    results: dict[str, object] = {"real": _real_block(args, values)}
    if args.n > 0:
        synthetic = _synthetic(argparse.Namespace(**{**vars(args), "data": None}))
        results["synthetic"] = synthetic
        _print_scores("synthetic held-out split (Colin27, all contrasts)", synthetic)
        values["synthetic held-out mAP50"] = synthetic["map50"]  # type: ignore[assignment]
    results.update(_normal_and_scans(args, values))
    met, lines = check_targets(values)
    print("\n".join(["", "issue 11 targets:", *lines]))
    if args.json:
        args.json.write_text(json.dumps({**results, "targets": values}, indent=2))
    print("targets met" if met else "targets not met")
    return 0 if met or not args.check else 1


def main(argv: list[str] | None = None) -> int:
    from mriscribe.training.real_scans import DEFAULT_DIR

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        help="a data set folder from synth (its test split is used); with --real, the "
        "figshare T1-CE folder (default: $MRISCRIBE_FIGSHARE_DIR, else ../shared beside the repo)",
    )
    parser.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    parser.add_argument("--n", type=int, default=800, help="test images to synthesize (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--real", action="store_true", help="issue 11's real-MRI measures")
    parser.add_argument(
        "--split", type=Path, default=None, help="with --real: a realdata split.json"
    )
    parser.add_argument(
        "--scans", type=Path, default=DEFAULT_DIR, help="with --real: the pyradiomics scans"
    )
    args = parser.parse_args(argv)
    return _main_real(args) if args.real else _main_synthetic(args)


if __name__ == "__main__":
    raise SystemExit(main())
