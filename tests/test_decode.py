"""Choosing the decoder by content, and the per-file limits every format shares."""

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.data import get_testdata_file

from conftest import encode
from mriscribe.errors import InputError, LimitError
from mriscribe.imaging.decode import UnsupportedFormatError, decode_file
from mriscribe.imaging.limits import Limits

LIMITS = Limits()
GRADIENT = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))


def dicom(name: str) -> bytes:
    return Path(get_testdata_file(name, download=False)).read_bytes()


def ball() -> bytes:
    """A 3-D NIfTI volume: a bright ball through 18 of its 20 slices (16 of them kept: its two
    caps hold under a quarter of the widest slice's tissue)."""
    x, y, z = np.indices((32, 32, 20)) - np.array([15.5, 15.5, 9.5])[:, None, None, None]
    volume = (100 * (x**2 + y**2 + (z * 1.5) ** 2 <= 14**2)).astype(np.uint8)
    return gzip.compress(nib.Nifti1Image(volume, np.eye(4)).to_bytes())


@pytest.mark.parametrize(
    ("data", "name", "fmt", "count"),
    [
        (encode(GRADIENT, "PNG"), "x.dcm", "PNG", 1),
        (encode(GRADIENT, "JPEG"), "scan.nii", "JPEG", 1),
        (encode(GRADIENT, "TIFF"), "scan.png", "TIFF", 1),
        (dicom("MR_small.dcm"), "scan.png", "DICOM", 1),
        (dicom("emri_small.dcm"), "emri", "DICOM", 10),
        (ball(), "volume.dcm", "NIfTI", 16),
    ],
)
def test_format_comes_from_the_content_not_the_name(data, name, fmt, count):
    slices = decode_file(data, name, LIMITS)
    assert len(slices) == count
    assert {s.meta["format"] for s in slices} == {fmt}
    assert all(s.pixels.dtype == np.uint8 and s.pixels.ndim == 3 for s in slices)
    if count == 1:
        assert slices[0].name == name


def test_unknown_content_is_unsupported_and_names_the_file():
    with pytest.raises(UnsupportedFormatError) as caught:
        decode_file(b"Patient notes, not pixels\n" * 10, "scan.png", LIMITS)
    assert isinstance(caught.value, InputError)
    assert str(caught.value) == (
        "scan.png: unsupported file type: not a PNG, JPEG, TIFF, DICOM or NIfTI file"
    )


def test_dicom_without_preamble_is_unsupported():
    raw_dataset = dicom("MR_small.dcm")[132:]  # a dataset with its "DICM" preamble stripped
    with pytest.raises(UnsupportedFormatError):
        decode_file(raw_dataset, "scan.dcm", LIMITS)


def test_empty_file():
    with pytest.raises(InputError, match=r"^empty\.png: the file is empty$"):
        decode_file(b"", "empty.png", LIMITS)


def test_file_over_the_byte_limit_is_refused_before_decoding():
    data = encode(GRADIENT, "PNG")
    with pytest.raises(LimitError, match=r"^big\.png: file is [\d,]+ bytes, more than the limit"):
        decode_file(data, "big.png", Limits(max_file_bytes=len(data) - 1))


def test_files_yielding_more_images_than_allowed_are_refused():
    with pytest.raises(LimitError, match=r"has 10 frames, more than the limit of 4 images"):
        decode_file(dicom("emri_small.dcm"), "emri.dcm", Limits(max_images=4))
    with pytest.raises(LimitError, match=r"yields 16 images, more than the limit of 4.*step"):
        decode_file(ball(), "ball.nii.gz", Limits(max_images=4), nifti_step=1)
    assert len(decode_file(ball(), "ball.nii.gz", Limits(max_images=4), nifti_max_slices=4)) == 4
    assert len(decode_file(ball(), "ball.nii.gz", LIMITS, nifti_step=5)) == 4


def test_pixel_limit_applies_to_raster_images_too():
    with pytest.raises(LimitError, match=r"64x48 pixels"):
        decode_file(encode(GRADIENT, "PNG"), "a.png", Limits(max_pixels=1000))
