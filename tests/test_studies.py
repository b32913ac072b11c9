"""Whole studies through the pipeline: a real head (Colin27) with a synthetic glioma, sent as a
shuffled, renamed DICOM series, as NIfTI stored RAS or LPS, mirrored, near the midline, as PNG
slices; two series in one upload; a gap and a repeated file. The lesion must be found, never
split, and never given the wrong side."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mriscribe.analysis import Analysis
from mriscribe.pipeline import InputFile, analyze
from mriscribe.render.results import results_json
from mriscribe.report.facts import LesionFact
from mriscribe.report.verify import split_sections, verify_report
from mriscribe.settings import Settings
from mriscribe.training.dicom_series import add_lesion, shuffled_files, volume_to_dicom

COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")
pytestmark = pytest.mark.skipif(
    not COLIN27.exists(), reason="Colin27 missing: apt-get install mricron-data"
)
LEFT = (-30.0, -10.0, 15.0)  # RAS mm: x < 0 is the patient's left
RADII = (16.0, 18.0, 15.0)
# Axial slices (voxel k; z = k - 71 mm) through the lesion and 15 mm beyond, every 3 mm.
SLICES = list(range(71, 123, 3))


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(report_engine="template")


@pytest.fixture(scope="module")
def head() -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(COLIN27)
    return np.asarray(image.dataobj, dtype=np.float32), image.affine


def _painted(head, centre=LEFT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    volume, affine = head
    painted, mask = add_lesion(volume, affine, centre, RADII)
    return painted, affine, mask


def _series_files(volume, affine, *, slices=SLICES, seed=0, **kwargs) -> list[InputFile]:
    files = volume_to_dicom(volume, affine, slices=slices, seed=seed, **kwargs)
    return [InputFile(name, data) for name, data in shuffled_files(files, seed=seed + 7)]


def _nifti(volume, affine) -> InputFile:
    data = nib.Nifti1Image(volume.astype(np.int16), affine).to_bytes()
    return InputFile("head.nii.gz", gzip.compress(data, compresslevel=1))


def _centres(analysis: Analysis) -> dict[int, np.ndarray]:
    """Each tumour fact's box centre in patient space (LPS), by the fact's id."""
    centres = {}
    for fact, image, measured in analysis.tumours():
        box, plane = measured.finding.box, image.slice.source.plane
        centre = ((box.y1 + box.y2) / 2, (box.x1 + box.x2) / 2)
        centres[id(fact)] = plane.point(*centre) if plane is not None else np.full(3, np.nan)
    return centres


def _on_lesion(analysis: Analysis, mask, affine, margin_mm=6.0) -> list[LesionFact]:
    """The lesions with a detection inside the painted lesion's bounding box (plus a margin)."""
    voxels = np.argwhere(mask)
    lps = ((affine[:3, :3] @ voxels.T).T + affine[:3, 3]) * np.array([-1.0, -1.0, 1.0])
    low, high = lps.min(axis=0) - margin_mm, lps.max(axis=0) + margin_mm
    centres = _centres(analysis)

    def inside(fact) -> bool:
        point = centres[id(fact)]
        return bool(np.all(point >= low) and np.all(point <= high))

    return [
        lesion
        for lesion in analysis.facts.lesions
        if any(inside(fact) for fact in lesion.detections)
    ]


def _assert_one_lesion(analysis: Analysis, mask, affine, side: str | None) -> LesionFact:
    hits = _on_lesion(analysis, mask, affine)
    assert len(hits) == 1, f"the lesion is split or missed: {[h.images for h in hits]}"
    (lesion,) = hits
    assert lesion.geometry and len(lesion.images) >= 3
    assert lesion.side == side
    assert lesion.craniocaudal_mm is not None and 10 <= lesion.craniocaudal_mm <= 50
    assert lesion.volume_ml is not None and lesion.volume_ml > 1
    assert verify_report(split_sections(analysis.report.text), analysis.facts).accepted
    return lesion


def test_a_shuffled_renamed_dicom_series_gives_one_lesion_on_the_left(head, settings):
    volume, affine, mask = _painted(head)
    files = _series_files(volume, affine)
    analysis = analyze(files, settings)
    lesion = _assert_one_lesion(analysis, mask, affine, "left")
    # Images numbered in anatomical order (foot to head), whatever the file order.
    positions = [image.position_mm for image in analysis.images]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert np.allclose(np.diff(positions), 3.0)
    body = results_json(analysis)
    (entry,) = [item for item in body["lesions"] if item["id"] == lesion.id]
    assert set(entry) >= {
        "id", "class", "confidence", "images", "largest", "craniocaudal_mm", "volume_ml", "side"
    }  # fmt: skip
    assert entry["side"] == "left" and entry["largest"]["image"] in entry["images"]
    assert body["series"][0]["slice_spacing_mm"] == pytest.approx(3.0)
    text = analysis.report.text
    assert f"Lesion {lesion.id}: suspected" in text and ", left, images" in text
    # The same study, sent in another order under other names, reads the same.
    again = analyze(list(reversed(files)), settings)
    assert again.report.text == text


def test_two_series_in_one_upload(head, settings):
    volume, affine, mask = _painted(head)
    first = _series_files(volume, affine, series_number=1, seed=0)
    study_uid = volume_to_dicom(volume, affine, slices=[90], seed=0)
    import pydicom

    study = pydicom.dcmread(io.BytesIO(study_uid[0])).StudyInstanceUID
    second = _series_files(
        head[0], affine, slices=list(range(60, 131, 10)), seed=3, series_number=2,
        study_uid=study,
    )  # fmt: skip
    mixed = [item for pair in zip(second, first, strict=False) for item in pair]
    mixed += first[len(second) :]
    analysis = analyze(mixed, settings)
    body = results_json(analysis)
    assert [series["number"] for series in body["series"]] == [1, 2]
    assert [len(series["images"]) for series in body["series"]] == [len(SLICES), 8]
    assert body["series"][1]["images"][0] == len(SLICES) + 1
    assert {image["series"] for image in body["detection_results"]["images"]} == {1, 2}
    hits = [lesion for lesion in _on_lesion(analysis, mask, affine) if lesion.series == 1]
    assert len(hits) == 1 and hits[0].side == "left"


def test_a_gap_and_a_repeated_file_are_reported_and_the_lesion_stays_whole(head, settings):
    volume, affine, mask = _painted(head)
    files = _series_files(volume, affine)
    by_position = sorted(files, key=lambda item: _position(item.data))
    missing = by_position[len(by_position) // 2]  # a slice through the lesion's middle
    upload = [item for item in files if item is not missing] + [files[0]]
    analysis = analyze(upload, settings)
    (series,) = results_json(analysis)["series"]
    assert series["repeated_files_ignored"] == 1
    assert any("gap of 6.0 mm" in note for note in series["notes"]), series["notes"]
    assert len(analysis.images) == len(SLICES) - 1
    _assert_one_lesion(analysis, mask, affine, "left")
    assert "gap of 6.0 mm" in analysis.report.sections["TECHNIQUE"]


def _position(data: bytes) -> float:
    import pydicom

    return float(pydicom.dcmread(io.BytesIO(data)).ImagePositionPatient[2])


def test_ras_and_lps_nifti_give_the_same_lesions_and_sides(head, settings):
    volume, affine, mask = _painted(head)
    nx, ny, _ = volume.shape
    flip = np.array([[-1, 0, 0, nx - 1], [0, -1, 0, ny - 1], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    lps_volume, lps_affine = volume[::-1, ::-1, :], affine @ flip
    assert "".join(nib.aff2axcodes(lps_affine)) == "LPS"
    ras = analyze([_nifti(volume, affine)], settings)
    lps = analyze([_nifti(lps_volume, lps_affine)], settings)
    assert ras.facts.lesions == lps.facts.lesions
    assert ras.report.text == lps.report.text
    _assert_one_lesion(ras, mask, affine, "left")


def test_the_mirrored_head_gives_the_opposite_side(head, settings):
    volume, affine, mask = _painted(head)
    mirrored = analyze(_series_files(volume[::-1].copy(), affine), settings)
    _assert_one_lesion(mirrored, mask[::-1], affine, "right")


def test_a_lesion_near_the_midline_gets_no_side(head, settings):
    volume, affine, mask = _painted(head, centre=(-4.0, -10.0, 15.0))
    analysis = analyze(_series_files(volume, affine), settings)
    hits = _on_lesion(analysis, mask, affine)
    assert hits, "the lesion near the midline was not found"
    assert all(lesion.side in (None, "midline") for lesion in hits)


def test_png_slices_give_no_side_no_extent_and_read_as_before(head, settings):
    volume, affine, _ = _painted(head)
    files = _series_files(volume, affine)
    series = analyze(files, settings)
    pngs = []
    for image in series.images:
        buffer = io.BytesIO()
        Image.fromarray(image.slice.pixels[:, :, 0]).save(buffer, format="PNG")
        pngs.append(InputFile(f"slice-{image.number}.png", buffer.getvalue()))
    analysis = analyze(pngs, settings)
    assert analysis.facts.lesions and len(analysis.facts.lesions) == len(analysis.facts.tumours)
    for lesion in analysis.facts.lesions:
        assert lesion.side is None and lesion.craniocaudal_mm is None and lesion.volume_ml is None
        assert not lesion.geometry and len(lesion.images) == 1
    body = json.loads(json.dumps(results_json(analysis)))
    assert all(entry["side"] is None for entry in body["lesions"])
    assert all(image["position_mm"] is None for image in body["detection_results"]["images"])
    text = analysis.report.text
    assert "Lesion " not in text and "craniocaudal" not in text and "Series 1" not in text
    assert "Image " in analysis.report.sections["FINDINGS"]


def test_the_prototype_json_fields_stay_as_they_were(head, settings):
    volume, affine, _ = _painted(head)
    analysis = analyze(_series_files(volume, affine)[:5], settings)
    body = results_json(analysis)
    assert list(body)[:3] == ["detection_results", "medical_report", "report"]
    image = body["detection_results"]["images"][0]
    assert set(image) >= {
        "filename", "image_number", "width", "height", "format", "pixel_spacing_mm",
        "spacing_source", "spacing_estimated", "detections",
    }  # fmt: skip
    assert set(body["summary"]) == {
        "total_images", "total_detections", "tumour_detections", "classes_detected",
        "counts_by_class", "study_positive", "positive_images", "sizes_estimated",
        "spacing_sources",
    }  # fmt: skip
    assert body["summary"]["total_detections"] == sum(
        len(item["detections"]) for item in body["detection_results"]["images"]
    )


def test_a_lesion_reaching_across_the_midline_gets_no_side(head, settings):
    """Centred 16 mm left, but 27 mm wide each way: its box reaches 11 mm into the right."""
    volume, affine = head
    painted, mask = add_lesion(volume, affine, (-16.0, -10.0, 15.0), (27.0, 20.0, 15.0))
    analysis = analyze(_series_files(painted, affine), settings)
    hits = _on_lesion(analysis, mask, affine)
    assert hits, "the lesion across the midline was not found"
    assert all(lesion.side in (None, "midline") for lesion in hits)


def test_a_nifti_without_orientation_gets_no_side(head, settings):
    """Neither qform nor sform: the slices are placed (extent, volume) but which way is left
    is a guess, so no side; an identity affine is no statement either."""
    volume, affine, _ = _painted(head)
    image = nib.Nifti1Image(volume.astype(np.int16), affine)
    image.set_qform(None, code=0)
    image.set_sform(None, code=0)
    image.header.set_zooms((1.0, 1.0, 1.0))
    data = InputFile("head.nii", image.to_bytes())
    analysis = analyze([data], settings)
    assert analysis.facts.lesions and all(lesion.side is None for lesion in analysis.facts.lesions)
    assert any(lesion.geometry and lesion.craniocaudal_mm for lesion in analysis.facts.lesions)
    identity = nib.Nifti1Image(volume.astype(np.int16), np.eye(4))
    plain = analyze([InputFile("eye.nii", identity.to_bytes())], settings)
    assert all(lesion.side is None for lesion in plain.facts.lesions)


def test_nifti_units_in_metres_measure_the_same_millimetres(head, settings):
    volume, affine, _ = _painted(head)
    millimetres = analyze([_nifti(volume, affine)], settings)
    metres = nib.Nifti1Image(volume.astype(np.int16), np.diag([1e-3, 1e-3, 1e-3, 1]) @ affine)
    metres.header.set_xyzt_units("meter")
    in_metres = analyze([InputFile("m.nii", metres.to_bytes())], settings)
    assert [lesion.craniocaudal_mm for lesion in in_metres.facts.lesions] == pytest.approx(
        [lesion.craniocaudal_mm for lesion in millimetres.facts.lesions]
    )
    assert [lesion.side for lesion in in_metres.facts.lesions] == [
        lesion.side for lesion in millimetres.facts.lesions
    ]
