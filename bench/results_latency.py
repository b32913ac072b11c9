"""Time to make the standard results of a 24-slice DICOM series: the DICOM SR, the presentation
state, the encapsulated PDF and the FHIR bundle, against the JSON results of the same analysis
in the same run (the baseline every client already gets).

    python bench/results_latency.py [--rounds 20] [--json results.json]

The series is Colin27 (Debian mricron-data) with a synthetic glioma, sent as 24 shuffled DICOM
files and analysed once (template report). Each round starts a new rendering, makes the report
PDF (an output of its own, which the encapsulated PDF and the FHIR bundle carry, so it counts),
then the four standard results. Rounds alternate with the JSON baseline so that noise hits both
alike. Target: the four with the PDF they carry <= 150 ms (median); the four alone are printed
too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from mriscribe.outputs import Rendering
from mriscribe.pipeline import InputFile, analyze, get_detector
from mriscribe.settings import Settings
from mriscribe.training.dicom_series import add_lesion, shuffled_files, volume_to_dicom

COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")
STANDARD = ("dicom-sr", "dicom-pr", "dicom-pdf", "fhir")
TARGET_MS = 150.0
SLICES = list(range(60, 132, 3))  # 24 axial slices, 3 mm apart


def series() -> list[InputFile]:
    image = nib.load(COLIN27)
    volume = np.asarray(image.dataobj, dtype=np.float32)
    painted, _ = add_lesion(volume, image.affine, (-30.0, -10.0, 15.0), (16.0, 18.0, 15.0))
    files = volume_to_dicom(painted, image.affine, slices=SLICES)
    return [InputFile(name, data) for name, data in shuffled_files(files, seed=3)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not COLIN27.exists():
        print(f"needs {COLIN27}: apt-get install mricron-data", file=sys.stderr)
        return 2
    settings = Settings(report_engine="template")
    get_detector(settings)
    analysis = analyze(series(), settings, render_images=True)
    Rendering(analysis).artifacts("fhir")  # imports and first-use caches, outside the timings
    names = (*STANDARD, "standard", "with_pdf", "json", "pdf")
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds):
        rendering = Rendering(analysis)
        start = time.perf_counter()
        rendering.artifacts("pdf")
        times["pdf"].append(time.perf_counter() - start)
        total = 0.0
        for name in STANDARD:
            start = time.perf_counter()
            rendering.artifacts(name)
            spent = time.perf_counter() - start
            times[name].append(spent)
            total += spent
        times["standard"].append(total)
        times["with_pdf"].append(total + times["pdf"][-1])
        start = time.perf_counter()
        Rendering(analysis).artifacts("json")
        times["json"].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    met = medians["with_pdf"] <= TARGET_MS
    results = {
        "images": len(analysis.images),
        "lesions": len(analysis.facts.lesions),
        "median_ms": {name: round(value, 1) for name, value in medians.items()},
        "target_ms": TARGET_MS,
        "met": met,
    }
    print(
        f"{len(analysis.images)} images, {len(analysis.facts.lesions)} lesion(s): DICOM SR, "
        f"presentation state, encapsulated PDF and FHIR with the PDF they carry "
        f"{medians['with_pdf']:.1f} ms (target <= {TARGET_MS:.0f} ms: "
        f"{'met' if met else 'NOT met'}); without the PDF {medians['standard']:.1f} ms: "
        + ", ".join(f"{name} {medians[name]:.1f} ms" for name in STANDARD)
        + f"; the PDF {medians['pdf']:.1f} ms; baseline JSON {medians['json']:.1f} ms"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
