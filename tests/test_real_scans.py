"""Real tumour MRI (pyradiomics' brain cases, from `make real-scans`) through our NIfTI path."""

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nrrd", reason="the 'synth' extra is not installed")

from mriscribe.training.real_scans import (
    DEFAULT_DIR,
    SCANS,
    evaluate_scan,
    load_scan,
    main,
    nrrd_as_nifti,
)

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


def test_nrrd_orientation_reaches_the_display_the_radiological_way(tmp_path):
    import nrrd

    # Axes stored out of order (posterior, left, superior) in LPS space, as some scanners write.
    directions = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    header = {
        "space": "left-posterior-superior",
        "space directions": directions,
        "space origin": np.array([10.0, 20.0, 30.0]),
    }
    shape = (40, 36, 8)
    p, left = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    head = ((p - 19.5) / 18) ** 2 + ((left - 17.5) / 16) ** 2 <= 1
    volume = np.repeat(np.where(head, 100, 0)[:, :, None], shape[2], axis=2).astype(np.int16)
    blob = np.zeros(shape, np.uint8)
    blob[6:12, 25:31, 2:6] = 1  # anterior (small posterior index), patient's left (large L index)
    volume[blob > 0] = 300
    nrrd.write(str(tmp_path / "image.nrrd"), volume, header)
    nrrd.write(str(tmp_path / "label.nrrd"), blob, header)

    affine = nrrd_as_nifti(tmp_path / "image.nrrd").affine
    expected = np.array([[0, -1, 0, -10], [-1, 0, 0, -20], [0, 0, 2, 30], [0, 0, 0, 1]], float)
    np.testing.assert_allclose(affine, expected)

    slices = load_scan(tmp_path / "image.nrrd", tmp_path / "label.nrrd")
    boxed = [s for s in slices if s.box is not None]
    assert [s.index for s in boxed] == [2, 3, 4, 5]
    for piece in boxed:
        x1, y1, x2, y2 = piece.box
        height, width = piece.pixels.shape[:2]
        # Radiological display: the patient's left on the viewer's right, anterior at the top.
        assert (x1 + x2) / 2 > width / 2 and (y1 + y2) / 2 < height / 2
        assert piece.pixels[int(y1) : int(y2), int(x1) : int(x2), 0].min() == 255


def test_a_label_off_the_image_grid_is_refused(tmp_path):
    import nrrd

    volume = np.full((20, 20, 6), 100, np.int16)
    base = {"space": "LPS", "space directions": np.eye(3), "space origin": np.zeros(3)}
    nrrd.write(str(tmp_path / "image.nrrd"), volume, base)
    moved = {**base, "space origin": np.array([5.0, 0.0, 0.0])}
    nrrd.write(str(tmp_path / "label.nrrd"), np.ones((20, 20, 6), np.uint8), moved)
    with pytest.raises(ValueError, match="not on the image's voxel grid"):
        load_scan(tmp_path / "image.nrrd", tmp_path / "label.nrrd")
