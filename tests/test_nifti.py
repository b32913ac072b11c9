"""Decoding NIfTI volumes: orientation, slice choice, spacing, and broken or hostile files."""

import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path

from mriscribe.errors import InputError, LimitError
from mriscribe.imaging import nifti
from mriscribe.imaging.limits import Limits
from mriscribe.imaging.nifti import decode_nifti

LIMITS = Limits()
ZOOMS = (0.9, 1.1, 3.0)  # x (left-right), y (posterior-anterior), z (inferior-superior)
CANONICAL_SHAPE = (40, 50, 18)
COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")  # apt-get install mricron-data


def affine_for(layout: str) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A voxel-to-world affine (RAS+ world) and data shape storing the same grid three ways."""
    x, y, z = ZOOMS
    columns = {
        "RAS": ([x, 0, 0], [0, y, 0], [0, 0, z]),  # already canonical
        "LPS": ([-x, 0, 0], [0, -y, 0], [0, 0, z]),  # DICOM-style, two axes flipped
        "PLS": ([0, -y, 0], [-x, 0, 0], [0, 0, z]),  # first two axes also swapped
    }[layout]
    shape = CANONICAL_SHAPE if layout != "PLS" else (50, 40, 18)
    affine = np.eye(4)
    affine[:3, :3] = np.array(columns).T
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(shape) - 1) / 2)  # centre the grid on 0
    return affine, shape


def head(layout: str = "LPS", dtype: type = np.int16) -> nib.Nifti1Image:
    """An ellipsoid of tissue with a bright marker in the patient's anterior right."""
    affine, shape = affine_for(layout)
    indices = np.indices(shape).reshape(3, -1)
    x, y, z = (affine[:3, :3] @ indices + affine[:3, 3:]).reshape(3, *shape)
    radius = (x / 16) ** 2 + (y / 22) ** 2 + (z / 24) ** 2
    volume = np.where(radius <= 1, 300 - 150 * radius, 0)
    marker = (np.abs(x - 8) <= 3) & (np.abs(y - 14) <= 3) & (np.abs(z) <= 6)  # +x right, +y front
    volume[marker] = 1000
    return nib.Nifti1Image(volume.astype(dtype), affine)


def nii(image: nib.Nifti1Image) -> bytes:
    return image.to_bytes()


def nii_gz(image: nib.Nifti1Image) -> bytes:
    return gzip.compress(image.to_bytes(), compresslevel=1)


def decode(data: bytes, name: str = "head.nii.gz", **options):
    return decode_nifti(data, name, LIMITS, **options)


@pytest.mark.parametrize("layout", ["RAS", "LPS", "PLS"])
def test_any_stored_orientation_shows_anterior_up_and_patient_right_on_the_left(layout):
    slices = decode(nii(head(layout)), step=1)
    assert {s.meta["orientation"] for s in slices} == {layout}
    marked = max(slices, key=lambda s: (s.pixels[:, :, 0] == 255).sum())
    rows, columns = np.nonzero(marked.pixels[:, :, 0] == 255)
    assert marked.pixels.shape == (50, 40, 3)  # rows: y (anterior first), columns: x
    assert rows.mean() < 25 and columns.mean() < 20  # top-left: anterior, patient's right
    reference = decode(nii(head("RAS")), step=1)
    for ours, canonical in zip(slices, reference, strict=True):
        np.testing.assert_array_equal(ours.pixels, canonical.pixels)


def test_spacing_is_row_then_column_of_the_displayed_slice():
    for layout in ("LPS", "PLS"):
        (first, *_) = decode(nii(head(layout)))
        assert first.spacing_mm == pytest.approx((1.1, 0.9))
        assert first.spacing_source == "NIfTI header (pixdim)"


def test_spacing_in_other_units_and_absurd_spacing():
    image = head("RAS")
    image.header.set_xyzt_units("micron")
    image = nib.Nifti1Image(np.asarray(image.dataobj), np.diag([900, 1100, 3000, 1]), image.header)
    assert decode(nii(image))[0].spacing_mm == pytest.approx((1.1, 0.9))
    absurd = nib.Nifti1Image(np.asarray(image.dataobj), np.diag([900, 1100, 3000, 1]))
    (first, *_) = decode(nii(absurd))  # unknown units read as mm: 1 m voxels are a broken header
    assert first.spacing_mm is None and first.spacing_source == ""


def test_gzipped_and_plain_files_decode_alike():
    image = head()
    plain, packed = decode(nii(image), "a.nii"), decode(nii_gz(image), "a.nii.gz")
    assert [s.name for s in packed] == [s.name.replace(".nii", ".nii.gz") for s in plain]
    for one, other in zip(plain, packed, strict=True):
        np.testing.assert_array_equal(one.pixels, other.pixels)


def test_only_slices_through_the_head_are_kept_with_names_and_meta():
    slices = decode(nii(head()), "head.nii", step=1)
    indices = [int(s.meta["slice_index"]) for s in slices]
    # The ellipsoid spans z = -24..24 mm; the outermost slices (z = +-25.5 mm) are empty, and
    # the caps next to them (under a quarter of the widest slice's tissue) are dropped too.
    assert indices == list(range(2, 16))
    assert [s.name for s in slices] == [f"head.nii [slice {k}]" for k in indices]
    assert slices[0].meta == {
        "format": "NIfTI",
        "orientation": "LPS",
        "slices": "18",
        "slice_index": "2",
    }
    assert all(s.pixels.dtype == np.uint8 and s.pixels.shape == (50, 40, 3) for s in slices)


def test_step_keeps_every_nth_slice_and_auto_spreads_evenly():
    data = nii(head())
    assert [int(s.meta["slice_index"]) for s in decode(data, step=3)] == [2, 5, 8, 11, 14]
    assert [int(s.meta["slice_index"]) for s in decode(data, max_slices=4)] == [2, 6, 11, 15]
    assert len(decode(data)) == 14  # auto keeps all when there are at most max_slices
    with pytest.raises(ValueError, match="step"):
        decode(data, step=-1)


def test_one_intensity_window_for_the_whole_volume():
    slices = decode(nii(head()), step=1)
    # The tissue is brightest at the centre; an edge slice, windowed alone, would be stretched.
    centre, edge = slices[len(slices) // 2], slices[0]
    assert edge.pixels.max() < centre.pixels[:, :, 0][centre.pixels[:, :, 0] < 255].max()


def test_scaled_float_volume_with_nan_decodes_like_the_plain_one():
    image = head(dtype=np.float32)
    volume = np.asarray(image.dataobj)
    volume[0, 0, :] = np.nan
    data = nii(nib.Nifti1Image(volume, image.affine))
    # Set the scaling in the stored header: nibabel would drop it when writing float data.
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(data))
    header["scl_slope"], header["scl_inter"] = 2.0, 10.0
    scaled = header.binaryblock + data[len(header.binaryblock) :]
    reference = decode(nii(head()), step=1)
    for ours, theirs in zip(decode(scaled, step=1), reference, strict=True):
        assert np.abs(ours.pixels.astype(int) - theirs.pixels.astype(int)).max() <= 1


def test_blocks_give_the_same_slices_and_a_sample_nearly_the_same(monkeypatch):
    data = nii(head("PLS", dtype=np.float32))
    reference = decode(data, step=1)
    monkeypatch.setattr(nifti, "BLOCK_VOXELS", 7)  # pieces of rows, not whole slices
    for ours, theirs in zip(decode(data, step=1), reference, strict=True):
        np.testing.assert_array_equal(ours.pixels, theirs.pixels)
    # Percentiles from a strided sample (as for a large volume): the same in every stored
    # orientation, since the sample is taken in RAS+, and close to those of every voxel.
    monkeypatch.setattr(nifti, "SAMPLE_VOXELS", 2000)
    sampled = decode(data, step=1)
    canonical = decode(nii(head("RAS", dtype=np.float32)), step=1)
    assert [s.name for s in sampled] == [s.name for s in reference]
    for ours, theirs, full in zip(sampled, canonical, reference, strict=True):
        np.testing.assert_array_equal(ours.pixels, theirs.pixels)
        assert np.abs(ours.pixels.astype(int) - full.pixels.astype(int)).mean() < 2


def test_first_volume_of_a_4d_series():
    volume = np.asarray(head().dataobj)
    series = np.stack([volume, np.zeros_like(volume), volume // 2], axis=3)
    slices = decode(nii_gz(nib.Nifti1Image(series, head().affine)))
    assert {s.meta["volume"] for s in slices} == {"1 of 3"}
    for ours, theirs in zip(slices, decode(nii(head())), strict=True):
        np.testing.assert_array_equal(ours.pixels, theirs.pixels)


@pytest.mark.parametrize("name", ["anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz"])
def test_real_volumes_shipped_with_nibabel(name):
    data = (Path(data_path) / name).read_bytes()
    image = nib.load(Path(data_path) / name)
    slices = decode(data, name)
    canonical = nib.as_closest_canonical(image.slicer[:, :, :, 0] if image.ndim == 4 else image)
    zooms = canonical.header.get_zooms()
    assert slices and all(s.pixels.shape[:2] == canonical.shape[1::-1] for s in slices)
    assert slices[0].spacing_mm == pytest.approx((zooms[1], zooms[0]))
    assert slices[0].meta["format"] == "NIfTI"


def test_colin27_head_reoriented_to_lps_gives_the_same_slices():
    colin = nib.load(COLIN27)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = np.array(colin.shape[:2]) - 1
    lps = nib.Nifti1Image(np.asarray(colin.dataobj)[::-1, ::-1, :], colin.affine @ flip)
    assert "".join(nib.aff2axcodes(lps.affine)) == "LPS"
    original = decode(COLIN27.read_bytes(), "ch2.nii.gz", max_slices=6)
    reoriented = decode(nii_gz(lps), max_slices=6)
    assert [s.meta["slice_index"] for s in original] == [s.meta["slice_index"] for s in reoriented]
    for ours, theirs in zip(reoriented, original, strict=True):
        np.testing.assert_array_equal(ours.pixels, theirs.pixels)
    assert original[0].spacing_mm == (1.0, 1.0)
    assert original[0].pixels.shape == (217, 181, 3)


def test_truncated_files_give_a_clear_error():
    packed, plain = nii_gz(head()), nii(head())
    with pytest.raises(InputError, match=r"^cut\.nii\.gz: the NIfTI file is truncated"):
        decode(packed[: len(packed) // 2], "cut.nii.gz")
    with pytest.raises(InputError, match=r"^cut\.nii: the NIfTI file is truncated"):
        decode(plain[:-100], "cut.nii")
    with pytest.raises(InputError, match=r"^cut\.nii: the NIfTI header is truncated"):
        decode(plain[:200], "cut.nii")


def test_gzip_bomb_is_refused_before_inflating():
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape((2048, 2048, 2048))  # 16 GiB of voxels, declared
    data = gzip.compress(header.binaryblock + bytes(4) + bytes(1 << 20))
    assert len(data) < 5000
    with pytest.raises(LimitError, match=r"volume holds 17,179,869,184 bytes, more than the req"):
        decode(data, "bomb.nii.gz")


def test_huge_slices_are_refused():
    with pytest.raises(LimitError, match=r"40x50 pixels, more than the limit of 1,000"):
        decode_nifti(nii(head()), "head.nii", Limits(max_pixels=1000))


@pytest.mark.parametrize(
    ("volume", "problem"),
    [
        (np.zeros((20, 20), np.int16), r"is 2-D; only 3-D or 4-D"),
        (np.zeros((4, 4, 4, 2, 2), np.int16), r"is 5-D; only 3-D or 4-D"),
        (np.zeros((20, 20, 10), np.int16), r"no brain found"),
        (np.ones((20, 20, 10), np.complex64), r"unsupported NIfTI datatype complex64"),
    ],
)
def test_unusable_volumes_are_refused_clearly(volume, problem):
    with pytest.raises(InputError, match=rf"^odd\.nii: .*{problem}"):
        decode(nii(nib.Nifti1Image(volume, np.eye(4))), "odd.nii")


def test_pair_header_without_image_data_is_refused():
    header = nib.Nifti1Header()
    header["magic"] = b"ni1"
    with pytest.raises(InputError, match=r"\.hdr header without its \.img data"):
        decode(header.binaryblock, "scan.hdr")
