"""The one road: inputs to measured findings, facts and report, with every bad input named."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from conftest import HELDOUT, encode
from mriscribe.pipeline import InputFile, InputProblemsError, analyze, safe_name
from mriscribe.settings import Settings


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()


def _dicom_from_png(png_path, spacing: tuple[float, float]) -> bytes:
    """A real MR DICOM file (pydicom's MR_small header) carrying a held-out slice's pixels."""
    from PIL import Image

    pixels = np.asarray(Image.open(png_path).convert("L"), dtype=np.uint16) * 4
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm", download=False))
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelData = pixels.tobytes()
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for keyword in ("WindowCenter", "WindowWidth", "SmallestImagePixelValue",
                    "LargestImagePixelValue"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.PixelSpacing = [f"{spacing[0]}", f"{spacing[1]}"]
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_sizes_use_the_real_pixel_spacing(settings, heldout_cases):
    case = next(c for c in heldout_cases if c["class"] == "Meningioma")
    png = (HELDOUT / case["file"]).read_bytes()
    dicom = _dicom_from_png(HELDOUT / case["file"], (0.9, 0.7))
    analysis = analyze([InputFile("a.png", png), InputFile("a.dcm", dicom)], settings)
    png_result, dicom_result = analysis.images
    assert dicom_result.slice.name == "a.dcm" and png_result.slice.name == "a.png"
    assert png_result.spacing_estimated and not dicom_result.spacing_estimated
    assert dicom_result.spacing_source == "DICOM PixelSpacing"
    top = dicom_result.findings[0]
    assert top.finding.class_name == "Meningioma"
    # (row, column) spacing: height uses rows (0.9), width uses columns (0.7).
    assert top.size.width_mm == pytest.approx(top.finding.box.width * 0.7)
    assert top.size.height_mm == pytest.approx(top.finding.box.height * 0.9)
    assert not top.size.estimated
    estimate = png_result.findings[0].size
    assert estimate.estimated and estimate.width_mm == pytest.approx(
        png_result.findings[0].finding.box.width * 0.5
    )
    assert analysis.facts.sizes_estimated  # one of the sizes is an estimate


def test_no_tumor_is_a_negative_finding(settings, heldout_cases):
    case = next(c for c in heldout_cases if c["class"] == "No Tumor")
    analysis = analyze([HELDOUT / case["file"]], settings)
    assert analysis.images[0].findings[0].finding.class_name == "No Tumor"
    assert analysis.facts.tumours == ()
    assert not analysis.facts.positive
    assert analysis.facts.negative_images == (1,)


def test_every_bad_file_is_named_together(settings, heldout_cases):
    good = (HELDOUT / heldout_cases[0]["file"]).read_bytes()
    files = [
        InputFile("good.png", good),
        InputFile("empty.png", b""),
        InputFile("letter.png", b"Dear colleague"),
    ]
    with pytest.raises(InputProblemsError) as caught:
        analyze(files, settings)
    assert [p.path for p in caught.value.problems] == ["empty.png", "letter.png"]
    assert caught.value.kind == "unreadable"
    with pytest.raises(InputProblemsError) as caught:
        analyze([InputFile("letter.png", b"Dear colleague")], settings)
    assert caught.value.kind == "unsupported"
    with pytest.raises(InputProblemsError) as caught:
        analyze([InputFile(f"{i}.png", good) for i in range(3)], Settings(max_images=2))
    assert caught.value.kind == "limit" and "limit of 2" in str(caught.value)
    with pytest.raises(InputProblemsError, match="no image files"):
        analyze([], settings)


def test_many_images_are_batched_in_order(settings):
    rng = np.random.default_rng(0)
    files = [
        InputFile(f"{i}.png", encode(rng.integers(0, 255, (64 + i, 80, 3), dtype=np.uint8)))
        for i in range(11)
    ]
    seen: list[tuple[int, int]] = []
    analysis = analyze(files, Settings(batch_size=4), progress=lambda d, t: seen.append((d, t)))
    assert [i.slice.name for i in analysis.images] == [f"{i}.png" for i in range(11)]
    assert [i.number for i in analysis.images] == list(range(1, 12))
    assert seen == [(4, 11), (8, 11), (11, 11)]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\x\\scan.png", "scan.png"),
        ("..", "image-3"),
        ("", "image-3"),
        (None, "image-3"),
        ("a\x00b\nc.png", "abc.png"),
        ("Ñandú é.png", "Ñandú é.png"),
    ],
)
def test_safe_name(raw, expected):
    assert safe_name(raw, 3) == expected


@pytest.mark.parametrize("path", sorted((HELDOUT.parent / "malformed").glob("*.nii.gz")))
def test_fuzzed_files_that_break_decoders_get_a_clear_error(settings, path):
    """NIfTI files from a fuzzing run that once made nibabel raise (OrientationError, KeyError,
    HeaderDataError) and so a 500: now a clear error naming the file."""
    with pytest.raises(InputProblemsError) as caught:
        analyze([InputFile("scan.nii.gz", path.read_bytes())], settings)
    assert caught.value.kind == "unreadable"
    assert str(caught.value).startswith("scan.nii.gz: ")


def test_a_request_has_a_decoded_pixel_budget(heldout_cases):
    png = (HELDOUT / heldout_cases[0]["file"]).read_bytes()  # 256 x 256
    budget = Settings(max_total_pixels=3 * 256 * 256)
    assert len(analyze([InputFile(f"{i}.png", png) for i in range(3)], budget).images) == 3
    with pytest.raises(InputProblemsError) as caught:
        analyze([InputFile(f"{i}.png", png) for i in range(5)], budget)
    assert caught.value.kind == "limit"
    assert "decoded pixels" in str(caught.value)


def test_missing_files_are_all_named(settings, tmp_path):
    with pytest.raises(InputProblemsError) as caught:
        analyze([tmp_path / "a.png", tmp_path / "b.dcm"], settings)
    assert [p.path for p in caught.value.problems] == [
        str(tmp_path / "a.png"),
        str(tmp_path / "b.dcm"),
    ]


@pytest.mark.parametrize(
    "name", ["No Tumor", "no_tumour", "No-Tumor", "notumor", "NO TUMOUR", "No\xa0Tumor", "Healthy"]
)
def test_negative_class_spellings(name):
    from mriscribe.report.facts import is_negative_class

    assert is_negative_class(name)
    assert not is_negative_class("Glioma") and not is_negative_class("tumor")
