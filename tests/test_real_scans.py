"""Real tumour MRI (pyradiomics' brain cases, from `make real-scans`) through our NIfTI path."""

import json
from pathlib import Path

import pytest

pytest.importorskip("nrrd", reason="the 'synth' extra is not installed")

from mriscribe.training.real_scans import DEFAULT_DIR, SCANS, evaluate_scan, load_scan, main

DATA = Path(__file__).resolve().parents[1] / DEFAULT_DIR


@pytest.fixture(scope="module")
def scans() -> dict[str, list]:
    # A missing download is a failed install (make install runs make real-scans), not a skip.
    assert (DATA / "brain1_image.nrrd").is_file(), "run 'make real-scans'"
    return {name: load_scan(DATA / image, DATA / label) for name, image, label in SCANS}


def test_labels_land_on_the_enhancing_tumour(scans):
    brain1 = scans["pyradiomics-brain1"]
    assert [s.index for s in brain1 if s.box is not None] == list(range(11, 18))
    assert [s.index for s in scans["pyradiomics-brain2"] if s.box is not None] == [8, 9, 10]
    largest = max(brain1, key=lambda s: s.label_pixels)
    grey = largest.pixels[:, :, 0].astype(float)
    x1, y1, x2, y2 = largest.box.astype(int)
    width = grey.shape[1]
    # Enhancing tumour is brighter than the same place in the other hemisphere: the label and
    # the image are turned the same way (a left-right or front-back slip would fail here).
    assert grey[y1:y2, x1:x2].mean() > 1.3 * grey[y1:y2, width - x2 : width - x1].mean()
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= grey.shape[0]


def test_shipped_model_points_at_a_real_tumour(scans, detector):
    result = evaluate_scan(detector, scans["pyradiomics-brain1"])
    assert result["tumour_slices"] == 7
    assert result["tumour_free_slices"] + result["tumour_slices"] <= result["slices"]
    assert 1 <= result["tumour_located"] <= result["tumour_reported"] <= 7


def test_cli_reports_and_refuses_a_missing_folder(tmp_path, capsys):
    assert main(["--data", str(tmp_path)]) == 2
    assert "make real-scans" in capsys.readouterr().err
    out = tmp_path / "real.json"
    assert main(["--data", str(DATA), "--json", str(out)]) == 0
    assert "pyradiomics-brain2" in capsys.readouterr().out
    written = json.loads(out.read_text())
    assert [written[name]["tumour_slices"] for name, _, _ in SCANS] == [7, 3]
