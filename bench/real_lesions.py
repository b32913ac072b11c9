"""Lesions on real tumour volumes sent as shuffled DICOM series: found, never split, never the
wrong side.

    python bench/real_lesions.py [--scans DIR] [--json results.json]

The volumes are the two contrast-enhanced T1 head scans with expert tumour labels that ship in
the pyradiomics 3.0.1 source archive (``make real-scans`` keeps them in .cache/real-scans; for
measuring only, never for training). Each is written as one axial DICOM series (every slice,
``training/dicom_series.py``), its files shuffled and renamed, and analysed by the service's
own pipeline. Per scan it reports the labelled tumour's slices, the lesions with a detection
inside the label's box (found: at least one; split: more than one), and each such lesion's
side against the label's: the side of the label's centre from the middle of the head on the
same slices (left or right only where it lies at least the side threshold from it, else
"near the midline", where a stated left or right counts as doubtful, not wrong). Exit status 1
when a lesion is split or given the wrong side.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from mriscribe.pipeline import InputFile, analyze
from mriscribe.settings import Settings
from mriscribe.training.dicom_series import shuffled_files, volume_to_dicom
from mriscribe.training.real_scans import nrrd_as_nifti

ROOT = Path(__file__).resolve().parents[1]
SCANS = ("brain1", "brain2")


def truth(volume: np.ndarray, label: np.ndarray, affine: np.ndarray) -> dict[str, object]:
    """The label's centre (LPS mm) and its left-right offset from the middle of the head on the
    label's slices (the midpoint of the head's extent along patient x)."""
    voxels = np.argwhere(label)
    lps = ((affine[:3, :3] @ voxels.T).T + affine[:3, 3]) * np.array([-1.0, -1.0, 1.0])
    centre = lps.mean(axis=0)
    slab = np.zeros_like(label)
    ks = np.unique(voxels[:, 2])
    head = volume > np.percentile(volume, 60)
    slab[:, :, ks] = head[:, :, ks]
    head_voxels = np.argwhere(slab)
    head_x = -((affine[:3, :3] @ head_voxels.T).T + affine[:3, 3])[:, 0]
    middle = (np.percentile(head_x, 1) + np.percentile(head_x, 99)) / 2
    low, high = lps.min(axis=0), lps.max(axis=0)
    return {
        "centre_lps": centre,
        "box_lps": (low, high),
        "offset_mm": float(centre[0] - middle),
    }


def evaluate(name: str, scans: Path, settings: Settings) -> dict[str, object]:
    image = nrrd_as_nifti(scans / f"{name}_image.nrrd")
    label = np.asarray(nrrd_as_nifti(scans / f"{name}_label.nrrd").dataobj) > 0
    volume = np.asarray(image.dataobj, dtype=np.float32)
    files = shuffled_files(volume_to_dicom(volume, image.affine, seed=11), seed=12)
    analysis = analyze([InputFile(n, d) for n, d in files], settings)
    fact_truth = truth(volume, label, image.affine)
    low, high = fact_truth["box_lps"]  # type: ignore[misc]
    margin = 5.0
    centres: dict[int, np.ndarray] = {}
    for fact, image, measured in analysis.tumours():
        box = measured.finding.box
        plane = image.slice.source.plane if image.slice.source else None
        if plane is not None:
            centres[id(fact)] = plane.point((box.y1 + box.y2) / 2, (box.x1 + box.x2) / 2)

    def inside(point: np.ndarray) -> bool:
        return bool(np.all(point >= low - margin) and np.all(point <= high + margin))

    hits = [
        lesion
        for lesion in analysis.facts.lesions
        if any(id(f) in centres and inside(centres[id(f)]) for f in lesion.detections)
    ]
    threshold = settings.side_threshold_mm
    offset = float(fact_truth["offset_mm"])  # type: ignore[arg-type]
    expected = "left" if offset >= threshold else "right" if offset <= -threshold else None
    wrong = doubtful = 0
    for lesion in hits:
        if lesion.side in ("left", "right"):
            if expected is None:
                doubtful += 1
            elif lesion.side != expected:
                wrong += 1
    label_slices = int(np.unique(np.argwhere(label)[:, 2]).size)
    return {
        "scan": name,
        "images": len(analysis.images),
        "label_slices": label_slices,
        "label_offset_from_head_middle_mm": round(offset, 1),
        "expected_side": expected or "near the midline",
        "found": bool(hits),
        "split": len(hits) > 1,
        "lesions_on_label": [
            {
                "images": list(lesion.images),
                "class": lesion.class_name,
                "side": lesion.side,
                "craniocaudal_mm": lesion.craniocaudal_mm and round(lesion.craniocaudal_mm, 1),
            }
            for lesion in hits
        ],
        "wrong_side": wrong,
        "doubtful_side": doubtful,
        "other_lesions": len(analysis.facts.lesions) - len(hits),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scans", type=Path, default=ROOT / ".cache" / "real-scans")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not (args.scans / "brain1_image.nrrd").exists():
        print(f"no scans in {args.scans}: make real-scans", file=sys.stderr)
        return 2
    settings = Settings(report_engine="template")
    results = [evaluate(name, args.scans, settings) for name in SCANS]
    for result in results:
        print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    bad = any(result["split"] or result["wrong_side"] for result in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
