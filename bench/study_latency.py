"""End-to-end time of whole studies (template report): a 24-slice NIfTI volume and a 200-file
DICOM series sent shuffled, each against the same slices sent as PNG files (the slice-by-slice
path: no series, no lesions, no side) in the same run.

    python bench/study_latency.py [--rounds 5] [--json results.json]

The head is Colin27 (Debian mricron-data) with a synthetic glioma 30 mm left of the midline,
so the series path links a lesion and measures its side. Everything runs in this process on
every core, the detector loaded once before timing; rounds alternate between a study and its
baseline so that noise hits both alike. Targets: the NIfTI study <= 0.8 s, the DICOM series
<= 6 s (medians).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import statistics
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from scipy import ndimage

from mriscribe.imaging.decode import decode_file
from mriscribe.pipeline import InputFile, analyze, get_detector
from mriscribe.settings import Settings
from mriscribe.training.dicom_series import add_lesion, shuffled_files, volume_to_dicom

COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")
TARGETS_S = {"nifti-24": 0.8, "dicom-200": 6.0}
DICOM_SLICES = 200


def head_with_lesion() -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(COLIN27)
    volume = np.asarray(image.dataobj, dtype=np.float32)
    painted, _ = add_lesion(volume, image.affine, (-30.0, -10.0, 15.0), (16.0, 18.0, 15.0))
    return painted, image.affine


def nifti_bytes(volume: np.ndarray, affine: np.ndarray) -> bytes:
    """A .nii.gz as scanners' converters write one: 16-bit integers."""
    stored = nib.Nifti1Image(np.rint(volume).astype(np.int16), affine)
    return gzip.compress(stored.to_bytes(), compresslevel=6)


def dicom_series(volume: np.ndarray, affine: np.ndarray) -> list[tuple[str, bytes]]:
    """DICOM_SLICES axial files: the head resampled along z to that many slices, shuffled."""
    factor = DICOM_SLICES / volume.shape[2]
    resampled = ndimage.zoom(volume, (1.0, 1.0, factor), order=1)
    scaled = affine.copy()
    scaled[:3, 2] /= factor
    return shuffled_files(volume_to_dicom(resampled, scaled), seed=1)


def as_pngs(files: list[InputFile], settings: Settings) -> list[InputFile]:
    """The same slices, as the PNG files a slice-by-slice client would send."""
    pngs = []
    for item in files:
        assert isinstance(item.data, bytes)
        for one in decode_file(item.data, item.name, settings.limits):
            buffer = io.BytesIO()
            Image.fromarray(one.pixels[:, :, 0]).save(buffer, format="PNG")
            pngs.append(InputFile(f"{len(pngs) + 1}.png", buffer.getvalue()))
    return pngs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not COLIN27.exists():
        print(f"needs {COLIN27}: apt-get install mricron-data", file=sys.stderr)
        return 2
    settings = Settings(report_engine="template")
    get_detector(settings)  # loaded once, outside the timings
    volume, affine = head_with_lesion()
    studies = {
        "nifti-24": [InputFile("head.nii.gz", nifti_bytes(volume, affine))],
        "dicom-200": [InputFile(name, data) for name, data in dicom_series(volume, affine)],
    }
    results: dict[str, dict[str, object]] = {}
    ok = True
    for label, files in studies.items():
        baseline = as_pngs(files, settings)
        times: dict[str, list[float]] = {"study": [], "pngs": []}
        analysis = None
        for _ in range(args.rounds):
            for kind, inputs in (("study", files), ("pngs", baseline)):
                start = time.perf_counter()
                result = analyze(inputs, settings)
                times[kind].append(time.perf_counter() - start)
                if kind == "study":
                    analysis = result
        assert analysis is not None
        study, pngs = statistics.median(times["study"]), statistics.median(times["pngs"])
        lesions = [
            {"images": list(lesion.images), "side": lesion.side, "class": lesion.class_name}
            for lesion in analysis.facts.lesions
        ]
        met = study <= TARGETS_S[label]
        ok &= met
        results[label] = {
            "images": len(analysis.images),
            "median_s": round(study, 3),
            "png_baseline_median_s": round(pngs, 3),
            "overhead_percent": round((study / pngs - 1) * 100, 1),
            "target_s": TARGETS_S[label],
            "met": met,
            "timings_ms": analysis.timings_ms,
            "lesions": lesions,
        }
        print(
            f"{label}: {len(analysis.images)} images, median {study:.3f} s "
            f"(target <= {TARGETS_S[label]} s: {'met' if met else 'NOT met'}); the same slices "
            f"as PNGs {pngs:.3f} s ({results[label]['overhead_percent']:+.1f}%); "
            f"lesions {lesions}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
