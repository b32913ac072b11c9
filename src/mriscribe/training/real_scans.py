"""The detector on real tumour MRI: two contrast-enhanced T1 head scans with expert tumour labels.

    python -m mriscribe.training.real_scans [--model PATH] [--data DIR] [--json OUT]

The scans are the brain test cases that ship inside the pyradiomics 3.0.1 source archive on PyPI
(``make real-scans`` fetches it, checks its sha256 and keeps only the four brain files). They are
for measurement only, never for training. Each volume goes through mriscribe's own NIfTI path
(canonical orientation, radiological display, one intensity window), so the detector sees what a
user's upload would give; the label volume is turned the same way and boxed slice by slice.

Per scan it prints the slices that hold tumour, on how many of them a tumour class is reported,
on how many a tumour box is centred inside the labelled tumour's box, how many boxes match it
(IoU >= 0.5 and >= 0.3; the label covers the enhancing tumour only), and on how many tumour-free
slices a tumour is reported. It also counts the slices of a normal real head (Colin27, the
held-out anatomy; every axial slice that mriscribe's NIfTI path shows, neck to near the vertex)
on which a tumour is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mriscribe.detection import Detector, load_detector
from mriscribe.detection.yolo import box_iou
from mriscribe.imaging.decode import decode_file
from mriscribe.imaging.limits import Limits
from mriscribe.imaging.nifti import display_plane
from mriscribe.report.facts import is_negative_class

if TYPE_CHECKING:
    from nibabel import Nifti1Image

# (name, image file, label file) inside the pyradiomics 3.0.1 sdist's data/ folder.
SCANS = (
    ("pyradiomics-brain1", "brain1_image.nrrd", "brain1_label.nrrd"),
    ("pyradiomics-brain2", "brain2_image.nrrd", "brain2_label.nrrd"),
)
# A normal real head (held-out anatomy, never trained on): every axial slice through it that
# mriscribe shows, where any tumour class is a false positive.
NORMAL_HEAD = Path("/usr/share/mricron/templates/ch2.nii.gz")
DEFAULT_DIR = Path(os.environ.get("MRISCRIBE_REAL_SCANS_DIR", ".cache/real-scans"))
# Slices whose label is smaller than this (pixels) are neither counted as tumour nor as free.
MIN_LABEL_PIXELS = 20


@dataclass
class ScanSlice:
    index: int  # axial slice index in the canonical (RAS) volume
    pixels: np.ndarray  # RGB uint8, as mriscribe displays it
    box: np.ndarray | None  # x1, y1, x2, y2 of the labelled tumour, None on a tumour-free slice
    label_pixels: int


# NRRD "space" values we read, as the flip that takes their world axes to RAS.
_SPACES = {
    "left-posterior-superior": (-1.0, -1.0, 1.0),
    "LPS": (-1.0, -1.0, 1.0),
    "right-anterior-superior": (1.0, 1.0, 1.0),
    "RAS": (1.0, 1.0, 1.0),
    "left-anterior-superior": (-1.0, 1.0, 1.0),
    "LAS": (-1.0, 1.0, 1.0),
}


def nrrd_as_nifti(path: Path) -> Nifti1Image:
    """An NRRD volume as a NIfTI-1 image with its RAS affine (pynrrd gives one row per axis)."""
    import nibabel as nib
    import nrrd

    data, header = nrrd.read(str(path))
    space = str(header.get("space", ""))
    if space not in _SPACES or data.ndim != 3:
        raise ValueError(f"{path}: a 3-D volume in {sorted(_SPACES)} space is expected")
    flip = np.diag(_SPACES[space])
    directions = np.asarray(header["space directions"], dtype=np.float64)
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = flip @ directions.T
    affine[:3, 3] = flip @ origin
    image = nib.Nifti1Image(np.asarray(data), affine)
    image.header.set_xyzt_units("mm")
    return image


def load_scan(image_path: Path, label_path: Path) -> list[ScanSlice]:
    """Every axial slice mriscribe shows of the scan, with the labelled tumour's box."""
    import nibabel as nib

    image = nrrd_as_nifti(image_path)
    label = nrrd_as_nifti(label_path)
    if not np.allclose(image.affine, label.affine, atol=1e-3):
        raise ValueError(f"{label_path}: the label is not on the image's voxel grid")
    # The image goes through the decoder as a user's upload would; the label only needs turning.
    slices = decode_file(
        image.to_bytes(), image_path.name, Limits(), nifti_step=1, nifti_max_slices=1
    )
    labels = np.asarray(nib.as_closest_canonical(label).dataobj) > 0
    result = []
    for piece in slices:
        k = int(piece.meta["slice_index"])
        mask = display_plane(labels, k)
        if mask.shape != piece.pixels.shape[:2]:
            raise ValueError(f"{label_path}: label grid {mask.shape} differs from the image's")
        rows, cols = np.nonzero(mask)
        box = None
        if rows.size >= MIN_LABEL_PIXELS:
            box = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], float)
        result.append(ScanSlice(k, piece.pixels, box, int(rows.size)))
    return result


def evaluate_scan(detector: Detector, slices: list[ScanSlice]) -> dict[str, object]:
    findings = detector.detect([s.pixels for s in slices])
    tumour_slices = hit50 = hit30 = located = reported = free = false_slices = 0
    classes: dict[str, int] = {}
    for piece, found in zip(slices, findings, strict=True):
        tumours = [f for f in found if not is_negative_class(f.class_name)]
        if piece.box is None:
            if piece.label_pixels == 0:
                free += 1
                false_slices += bool(tumours)
            continue
        tumour_slices += 1
        reported += bool(tumours)
        if not tumours:
            continue
        boxes = np.stack([[f.box.x1, f.box.y1, f.box.x2, f.box.y2] for f in tumours])
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        x1, y1, x2, y2 = piece.box
        inside = (centres[:, 0] >= x1) & (centres[:, 0] <= x2)
        inside &= (centres[:, 1] >= y1) & (centres[:, 1] <= y2)
        ious = box_iou(piece.box, boxes)
        hit50 += bool(ious.max() >= 0.5)
        hit30 += bool(ious.max() >= 0.3)
        if inside.any():
            located += 1
            name = tumours[int(np.argmax(np.where(inside, ious, -1.0)))].class_name
            classes[name] = classes.get(name, 0) + 1
    return {
        "slices": len(slices),
        "tumour_slices": tumour_slices,
        "tumour_reported": reported,
        "tumour_located": located,
        "found_iou50": hit50,
        "found_iou30": hit30,
        "classes_of_located": classes,
        "tumour_free_slices": free,
        "tumour_free_with_false_tumour": false_slices,
    }


def false_tumours_on_normal_head(detector: Detector, path: Path = NORMAL_HEAD) -> dict[str, int]:
    """Slices of a normal head (those the NIfTI path shows) on which a tumour is reported."""
    slices = decode_file(path.read_bytes(), path.name, Limits(), nifti_step=1, nifti_max_slices=1)
    findings = detector.detect([s.pixels for s in slices])
    false = sum(any(not is_negative_class(f.class_name) for f in found) for found in findings)
    return {"slices": len(slices), "with_false_tumour": false}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    parser.add_argument("--data", type=Path, default=DEFAULT_DIR, help="the scans' folder")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    files = [f for _, image, label in SCANS for f in (image, label)]
    missing = [f for f in files if not (args.data / f).is_file()]
    if missing:
        print(
            f"error: {args.data}: missing {', '.join(missing)}; fetch them with 'make real-scans'",
            file=sys.stderr,
        )
        return 2
    detector = load_detector(args.model)
    results = {}
    for name, image, label in SCANS:
        result = evaluate_scan(detector, load_scan(args.data / image, args.data / label))
        results[name] = result
        print(
            f"{name}: tumour on {result['tumour_slices']} slices; a tumour reported on "
            f"{result['tumour_reported']}, a box centred on it on {result['tumour_located']}, "
            f"boxed at IoU>=0.5 on {result['found_iou50']} "
            f"(IoU>=0.3: {result['found_iou30']}; classes {result['classes_of_located']}); "
            f"false tumour on {result['tumour_free_with_false_tumour']} of "
            f"{result['tumour_free_slices']} tumour-free slices"
        )
    if NORMAL_HEAD.is_file():
        normal = false_tumours_on_normal_head(detector)
        results["colin27-normal-head"] = normal
        print(
            f"colin27 (normal head): false tumour on {normal['with_false_tumour']} of "
            f"{normal['slices']} axial slices"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
