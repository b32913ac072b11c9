"""The test-study builder: volumes to DICOM series with the right geometry, exports in random
order, and synthetic 3-D lesions that the shipped detector finds."""

from __future__ import annotations

import io
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from mriscribe.imaging.decode import decode_file
from mriscribe.imaging.limits import Limits
from mriscribe.imaging.nifti import display_plane
from mriscribe.pipeline import InputFile, analyze
from mriscribe.report.facts import is_negative_class
from mriscribe.settings import Settings
from mriscribe.training.dicom_series import (
    FICTIONAL_PATIENT,
    add_lesion,
    shuffled_files,
    volume_to_dicom,
)

COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")  # apt-get install mricron-data
LPS = np.array([-1.0, -1.0, 1.0])  # RAS <-> LPS: x and y change sign

SHAPE = (40, 48, 30)
# In-plane spacings differ (0.9 mm along x, 1.1 mm along y), so a swapped PixelSpacing shows.
RAS_AFFINE = np.array(
    [[0.9, 0.0, 0.0, -20.0], [0.0, 1.1, 0.0, -30.0], [0.0, 0.0, 2.5, -10.0], [0.0, 0.0, 0.0, 1.0]]
)
MARKER = (7, 31, 12)  # voxel index in the RAS-stored volume
MARKER_VALUE = 1000.0


def _marker_volume() -> np.ndarray:
    """Background noise up to 100 with one bright voxel at MARKER."""
    volume = (np.random.default_rng(0).random(SHAPE) * 100).astype(np.float32)
    volume[MARKER] = MARKER_VALUE
    return volume


def _lps_stored(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same head stored with its first two voxel axes running to the left and back."""
    flip = np.array(
        [
            [-1.0, 0.0, 0.0, volume.shape[0] - 1.0],
            [0.0, -1.0, 0.0, volume.shape[1] - 1.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    return np.ascontiguousarray(volume[::-1, ::-1, :]), affine @ flip


def _oblique(affine: np.ndarray, degrees: float) -> np.ndarray:
    """``affine`` turned about the superior axis (an oblique but orthogonal acquisition)."""
    angle = np.deg2rad(degrees)
    turn = np.eye(4)
    turn[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    return turn @ affine


def _world_lps(affine: np.ndarray, index: tuple[int, int, int]) -> np.ndarray:
    return (affine[:3, :3] @ np.asarray(index, dtype=float) + affine[:3, 3]) * LPS


def _read(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


@pytest.mark.parametrize(
    ("storage", "axis"),
    [("RAS", 2), ("LPS", 2), ("RAS", 1), ("RAS", 0), ("oblique", 2), ("LPS", 0)],
)
def test_a_marker_voxel_shows_where_its_world_position_is(storage, axis):
    volume, affine, marker = _marker_volume(), RAS_AFFINE, MARKER
    if storage == "LPS":
        volume, affine = _lps_stored(volume, affine)
        marker = (SHAPE[0] - 1 - MARKER[0], SHAPE[1] - 1 - MARKER[1], MARKER[2])
    elif storage == "oblique":
        affine = _oblique(affine, 12.0)
    assert volume[marker] == MARKER_VALUE
    expected = _world_lps(affine, marker)

    files = volume_to_dicom(volume, affine, axis=axis, window=(0.0, MARKER_VALUE))
    assert len(files) == volume.shape[axis]
    hits = []
    for number, data in enumerate(files):
        (piece,) = decode_file(data, f"{number}.dcm", Limits())
        grey = piece.pixels[:, :, 0]
        plane = piece.source.plane
        assert plane is not None
        if grey.max() == 255:
            rows, cols = np.nonzero(grey == 255)
            assert rows.size == 1  # the marker alone fills the window's top
            hits.append(plane.point(int(rows[0]), int(cols[0])))
    assert len(hits) == 1  # the marker is on exactly one slice
    np.testing.assert_allclose(hits[0], expected, atol=1e-3)


def test_pixel_spacing_is_between_rows_then_between_columns():
    files = volume_to_dicom(_marker_volume(), RAS_AFFINE, axis=2)
    ds = _read(files[0])
    # Axial: the patient's left along a row (x, 0.9 mm), the back down a column (y, 1.1 mm).
    assert [float(v) for v in ds.PixelSpacing] == [1.1, 0.9]
    assert (ds.Rows, ds.Columns) == (SHAPE[1], SHAPE[0])
    assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert float(ds.SliceThickness) == 2.5
    (piece,) = decode_file(files[0], "a.dcm", Limits())
    plane = piece.source.plane
    assert piece.spacing_mm == (1.1, 0.9)
    np.testing.assert_allclose(plane.point(1, 0) - plane.point(0, 0), [0.0, 1.1, 0.0])
    np.testing.assert_allclose(plane.point(0, 1) - plane.point(0, 0), [0.9, 0.0, 0.0])


def test_the_same_head_stored_ras_or_lps_gives_the_same_files():
    volume = _marker_volume()
    for axis in (0, 1, 2):
        ras = volume_to_dicom(volume, RAS_AFFINE, axis=axis)
        lps = volume_to_dicom(*_lps_stored(volume, RAS_AFFINE), axis=axis)
        # Files come in voxel order, which runs the other way along x and y in the LPS volume.
        assert lps == (ras[::-1] if axis in (0, 1) else ras)


def test_a_series_has_one_study_one_series_and_slices_in_order():
    volume = _marker_volume()
    files = volume_to_dicom(volume, RAS_AFFINE, series_number=3, seed=5)
    datasets = [_read(f) for f in files]
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert len({ds.FrameOfReferenceUID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(files)
    for ds in datasets:
        assert ds.SOPClassUID == pydicom.uid.MRImageStorage
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert (ds.Modality, ds.PhotometricInterpretation, ds.BitsAllocated) == (
            "MR",
            "MONOCHROME2",
            16,
        )
        assert ds.SeriesNumber == 3
    # InstanceNumber counts along the slice normal: here from foot to head.
    heights = [float(ds.ImagePositionPatient[2]) for ds in datasets]
    numbers = [int(ds.InstanceNumber) for ds in datasets]
    assert numbers == list(range(1, len(files) + 1))
    assert heights == sorted(heights)
    np.testing.assert_allclose(np.diff(heights), 2.5)
    # Float voxels are rescaled to 12 bits: the volume's top is 4095, its bottom 0.
    stored = np.stack([ds.pixel_array for ds in datasets])
    assert stored.max() == 4095 and stored.min() == 0

    # Deterministic from the seed; another seed is another study; a subset keeps its numbers.
    assert volume_to_dicom(volume, RAS_AFFINE, series_number=3, seed=5) == files
    other = _read(volume_to_dicom(volume, RAS_AFFINE, seed=6)[0])
    assert other.StudyInstanceUID != datasets[0].StudyInstanceUID
    subset = [
        _read(f)
        for f in volume_to_dicom(volume, RAS_AFFINE, slices=[9, 4], series_number=3, seed=5)
    ]
    assert [int(ds.InstanceNumber) for ds in subset] == [10, 5]
    assert [ds.SOPInstanceUID for ds in subset] == [
        datasets[9].SOPInstanceUID,
        datasets[4].SOPInstanceUID,
    ]
    # A second series of the same study: same study and frame of reference, new series.
    second = _read(
        volume_to_dicom(
            volume, RAS_AFFINE, axis=0, study_uid=datasets[0].StudyInstanceUID, series_number=4
        )[0]
    )
    assert second.StudyInstanceUID == datasets[0].StudyInstanceUID
    assert second.FrameOfReferenceUID == datasets[0].FrameOfReferenceUID
    assert second.SeriesInstanceUID != datasets[0].SeriesInstanceUID


def test_integer_voxels_keep_their_values():
    volume = (np.arange(np.prod(SHAPE)) % 3000).reshape(SHAPE).astype(np.int16)
    files = volume_to_dicom(volume, RAS_AFFINE, axis=2, slices=[0])
    # Laid out as mriscribe shows a NIfTI slice: the patient's right on the left, front on top.
    np.testing.assert_array_equal(_read(files[0]).pixel_array, display_plane(volume, 0))
    assert _read(files[0]).BitsStored == 12


def test_patient_details_are_fictional_by_default_and_can_be_given():
    ds = _read(volume_to_dicom(_marker_volume(), RAS_AFFINE, slices=[0])[0])
    for keyword, value in FICTIONAL_PATIENT.items():
        assert str(ds.get(keyword)) == value
    assert "FICTIONAL" in str(ds.PatientName)

    details = {
        "PatientName": "DOE^JANE",
        "PatientID": "TEST-42",
        "PatientBirthDate": "19800229",
        "AccessionNumber": "A-7",
        "InstitutionName": "Nowhere Clinic",
        "ReferringPhysicianName": "WHO^DR",
        "StudyDate": "20250102",
    }
    ds = _read(volume_to_dicom(_marker_volume(), RAS_AFFINE, slices=[0], patient=details)[0])
    for keyword, value in details.items():
        assert str(ds.get(keyword)) == value
    assert str(ds.StudyDescription) == FICTIONAL_PATIENT["StudyDescription"]  # the rest stays
    with pytest.raises(ValueError, match="keyword"):
        volume_to_dicom(_marker_volume(), RAS_AFFINE, patient={"PatientNom": "x"})


def test_shuffled_files_are_in_random_order_with_meaningless_names():
    files = volume_to_dicom(_marker_volume(), RAS_AFFINE)
    shuffled = shuffled_files(files, seed=1)
    names = [name for name, _ in shuffled]
    assert sorted(data for _, data in shuffled) == sorted(files)  # each file once
    assert shuffled_files(files, seed=1) == shuffled  # deterministic
    assert [d for _, d in shuffled_files(files, seed=2)] != [d for _, d in shuffled]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[0-9a-f]{8,16}(\.dcm)?", name) for name in names)
    numbers = [int(_read(data).InstanceNumber) for _, data in shuffled]
    assert numbers != sorted(numbers)
    # Neither the names' order nor the names themselves tell the slice: the names depend on
    # the seed and the number of files only, never on what the files hold.
    by_name = [number for _, number in sorted(zip(names, numbers, strict=True))]
    assert by_name != sorted(by_name) and by_name != sorted(by_name, reverse=True)
    other_files = volume_to_dicom(_marker_volume() * 2, RAS_AFFINE, axis=2, seed=9)
    assert [name for name, _ in shuffled_files(other_files, seed=1)] == names


@pytest.fixture(scope="module")
def colin27() -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(COLIN27)
    return np.asarray(image.dataobj), image.affine


# A glioma 30 mm left of the midline (RAS x < 0 is the patient's left), at the level of the
# lateral ventricles, 18 mm in radius.
CENTRE = (-30.0, -5.0, 20.0)
RADIUS = 18.0


def test_a_lesion_is_painted_where_it_is_asked_for(colin27):
    volume, affine = colin27
    painted, mask = add_lesion(volume, affine, CENTRE, (RADIUS, RADIUS, RADIUS), seed=3)
    assert painted.dtype == volume.dtype and painted.shape == volume.shape
    assert mask.dtype == bool and mask.shape == volume.shape
    voxels = np.argwhere(mask)
    world = affine[:3, :3] @ voxels.T + affine[:3, 3:4]
    np.testing.assert_allclose(world.mean(axis=1), CENTRE, atol=3.0)
    assert 0.6 < mask.sum() / (4 / 3 * np.pi * RADIUS**3) < 1.5
    assert world[0].max() < 0  # wholly in the left hemisphere
    # Only the region around the lesion changes; the same seed paints the same lesion.
    changed = np.argwhere(painted != volume)
    changed_world = affine[:3, :3] @ changed.T + affine[:3, 3:4]
    assert np.abs(changed_world - np.asarray(CENTRE)[:, None]).max() <= 2.2 * RADIUS + 1
    again, _ = add_lesion(volume, affine, CENTRE, (RADIUS, RADIUS, RADIUS), seed=3)
    np.testing.assert_array_equal(again, painted)
    other, _ = add_lesion(volume, affine, CENTRE, (RADIUS, RADIUS, RADIUS), seed=4)
    assert not np.array_equal(other, painted)
    # Ring enhancement: a rim brighter than the white matter around a dark core.
    centre_voxel = tuple(
        np.rint(np.linalg.solve(affine[:3, :3], np.subtract(CENTRE, affine[:3, 3]))).astype(int)
    )
    assert painted[centre_voxel] < 0.5 * np.median(volume[mask])
    assert np.percentile(painted[mask], 90) > 1.3 * np.percentile(volume[mask], 75)
    with pytest.raises(ValueError, match="kind"):
        add_lesion(volume, affine, CENTRE, (RADIUS, RADIUS, RADIUS), kind="lymphoma")


def _lesion_on(piece, mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The lesion mask as seen on a decoded slice, through the slice's own plane (LPS)."""
    plane = piece.source.plane
    rows, cols = np.indices(piece.pixels.shape[:2])
    lps = (
        np.asarray(plane.position)[:, None]
        + np.outer(plane.row_direction, cols.ravel() * plane.spacing[1])
        + np.outer(plane.column_direction, rows.ravel() * plane.spacing[0])
    )
    ras = lps * LPS[:, None]
    voxels = np.rint(np.linalg.solve(affine[:3, :3], ras - affine[:3, 3:4])).astype(int)
    inside = np.all((voxels >= 0) & (voxels < np.array(mask.shape)[:, None]), axis=0)
    seen = np.zeros(voxels.shape[1], dtype=bool)
    seen[inside] = mask[tuple(voxels[:, inside])]
    return seen.reshape(rows.shape)


def _found(images, mask: np.ndarray, affine: np.ndarray) -> tuple[int, int, int]:
    """(slices with a >= 10 mm lesion cross-section, those with a tumour box on the lesion,
    tumour boxes left of the midline in LPS, i.e. on the patient's left, on those)."""
    big = hit = left = 0
    for image in images:
        seen = _lesion_on(image.slice, mask, affine)
        if not seen.any():
            continue
        rows, cols = np.nonzero(seen)
        row_mm, col_mm = image.slice.spacing_mm
        if max((np.ptp(rows) + 1) * row_mm, (np.ptp(cols) + 1) * col_mm) < 10:
            continue
        big += 1
        boxes = [
            m.finding.box
            for m in image.findings
            if not is_negative_class(m.finding.class_name)
            and m.finding.box.x1 <= cols.max() + 1
            and m.finding.box.x2 >= cols.min()
            and m.finding.box.y1 <= rows.max() + 1
            and m.finding.box.y2 >= rows.min()
        ]
        hit += bool(boxes)
        plane = image.slice.source.plane
        left += sum(plane.point((b.y1 + b.y2) / 2, (b.x1 + b.x2) / 2)[0] > 0 for b in boxes[:1])
    return big, hit, left


def test_the_shipped_detector_finds_the_lesion_through_dicom_and_nifti(colin27):
    volume, affine = colin27
    painted, mask = add_lesion(volume, affine, CENTRE, (RADIUS, RADIUS, RADIUS), seed=0)
    settings = Settings()

    # DICOM: every axial slice through the lesion and a few around, shuffled as an export.
    through = np.nonzero(mask.any(axis=(0, 1)))[0]
    chosen = list(range(through.min() - 4, through.max() + 5))
    files = shuffled_files(volume_to_dicom(painted, affine, slices=chosen), seed=0)
    analysis = analyze([InputFile(name, data) for name, data in files], settings)
    assert len(analysis.images) == len(chosen)
    big, hit, left = _found(analysis.images, mask, affine)
    assert big >= 25
    assert hit >= 0.7 * big
    assert left == hit  # each box lies on the patient's left, where the lesion is

    # NIfTI: the pipeline's evenly spaced axial slices, some of them through the lesion.
    image = nib.Nifti1Image(painted, affine)
    image.header.set_xyzt_units("mm")
    analysis = analyze([InputFile("head.nii.gz", image.to_bytes())], settings)
    big, hit, left = _found(analysis.images, mask, affine)
    assert big >= 3
    assert hit >= 0.7 * big
    assert left == hit
