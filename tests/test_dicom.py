"""Decoding real encoded DICOM files: transfer syntaxes, grey levels, spacing, limits, privacy."""

import io
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.sequence import Sequence
from pydicom.uid import (
    MPEG2MPML,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
)

from conftest import encode
from dicom_files import to_bytes
from mriscribe.errors import InputError, LimitError
from mriscribe.imaging import dicom
from mriscribe.imaging.dicom import _reason, decode_dicom
from mriscribe.imaging.limits import Limits

LIMITS = Limits()


def path_of(name: str) -> str:
    return get_testdata_file(name, download=False)


def raw(name: str) -> bytes:
    return Path(path_of(name)).read_bytes()


def dataset(name: str) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return pydicom.dcmread(path_of(name))


def decode(data: bytes, name: str = "scan.dcm", limits: Limits = LIMITS):
    return decode_dicom(data, name, limits)


def grey(data: bytes) -> np.ndarray:
    pixels = decode(data)[0].pixels
    assert (pixels[:, :, 0] == pixels[:, :, 2]).all()
    return pixels[:, :, 0]


def stored(name: str) -> np.ndarray:
    return dataset(name).pixel_array.astype(np.float64)


@pytest.mark.parametrize(
    ("native", "compressed"),
    [
        ("MR_small.dcm", "MR_small_RLE.dcm"),
        ("MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm"),
        ("MR_small.dcm", "MR_small_jp2klossless.dcm"),
        ("emri_small.dcm", "emri_small_RLE.dcm"),
        ("emri_small.dcm", "emri_small_jpeg_2k_lossless.dcm"),
        ("emri_small.dcm", "emri_small_jpeg_ls_lossless.dcm"),
        ("emri_small.dcm", "emri_small_big_endian.dcm"),
        ("US1_UNCR.dcm", "US1_J2KR.dcm"),
    ],
)
def test_lossless_syntaxes_agree_with_their_uncompressed_twin(native, compressed):
    expected = decode(raw(native), native)
    decoded = decode(raw(compressed), compressed)
    assert decoded[0].meta["transfer_syntax"] != expected[0].meta["transfer_syntax"]
    assert len(decoded) == len(expected)
    for ours, theirs in zip(decoded, expected, strict=True):
        assert ours.pixels.dtype == np.uint8 and ours.pixels.shape[2] == 3
        np.testing.assert_array_equal(ours.pixels, theirs.pixels)


@pytest.mark.parametrize("name", ["JPEG-LL.dcm", "image_dfl.dcm"])
def test_jpeg_lossless_and_deflate_agree_with_a_native_copy(name):
    ds = dataset(name)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    else:  # deflate compresses the whole dataset, not the pixels
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    decoded = decode(raw(name))[0]
    assert decoded.meta["transfer_syntax"] in (
        "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])",
        "Deflated Explicit VR Little Endian",
    )
    np.testing.assert_array_equal(decoded.pixels, decode(to_bytes(ds))[0].pixels)


@pytest.mark.parametrize("name", ["SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm"])
def test_jpeg_baseline_ybr_becomes_rgb_close_to_the_uncompressed_original(name):
    decoded = decode(raw(name))[0]
    original = decode(raw("SC_rgb.dcm"))[0]
    assert decoded.meta["photometric"].startswith("YBR_FULL")
    assert decoded.meta["transfer_syntax"] == "JPEG Baseline (Process 1)"
    difference = np.abs(decoded.pixels.astype(int) - original.pixels.astype(int))
    assert difference.mean() < 4  # lossy, with 4:2:2 chroma in one of them


@pytest.mark.parametrize("syntax", [JPEGBaseline8Bit, JPEGExtended12Bit])
def test_grey_8_bit_jpeg_baseline_and_extended(syntax):
    reference = grey(raw("MR_small.dcm"))
    ds = dataset("MR_small.dcm")
    ds.file_meta.TransferSyntaxUID = syntax
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    del ds.WindowCenter, ds.WindowWidth
    ds.PixelData = encapsulate([encode(reference, "JPEG", quality=95)])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    decoded = grey(to_bytes(ds))
    # Stretched by percentiles rather than the original window, and lossy: close, not equal.
    assert np.corrcoef(decoded.ravel(), reference.ravel())[0, 1] > 0.99


def test_12_bit_jpeg_extended_decodes_through_our_imagecodecs_plugin():
    # GDCM's wheel and Pillow refuse 12-bit JPEG; our plugin uses imagecodecs (BSD).
    (decoded,) = decode(raw("JPGExtended.dcm"), "JPGExtended.dcm")
    (twin,) = decode(raw("JPEG2000_UNC.dcm"), "JPEG2000_UNC.dcm")  # same image, uncompressed
    assert decoded.meta["transfer_syntax"].startswith("JPEG Extended")
    assert decoded.pixels.shape == twin.pixels.shape == (1024, 256, 3)
    # Heavily lossy (9.8 kB from 512 kB), so close rather than equal.
    correlation = np.corrcoef(decoded.pixels[..., 0].ravel(), twin.pixels[..., 0].ravel())[0, 1]
    assert correlation > 0.9


def test_lossy_jpeg_2000_decodes():
    (decoded,) = decode(raw("MR2_J2KI.dcm"))
    assert decoded.pixels.shape == (1024, 1024, 3)
    assert decoded.meta["transfer_syntax"] == "JPEG 2000 Image Compression"
    assert decoded.pixels.std() > 10


def test_multi_frame_gives_one_named_slice_per_frame():
    slices = decode(raw("emri_small.dcm"), "emri.dcm")
    assert [s.name for s in slices] == [f"emri.dcm [frame {i}]" for i in range(1, 11)]
    assert [s.meta["frame"] for s in slices] == [str(i) for i in range(1, 11)]
    assert {s.meta["frames"] for s in slices} == {"10"}
    frames = dataset("emri_small.dcm").pixel_array
    # Each slice is its own frame, not a copy of the first.
    for index in (0, 9):
        brightest = np.unravel_index(np.argmax(frames[index]), frames[index].shape)
        assert slices[index].pixels[brightest][0] == 255


def test_single_frame_keeps_the_file_name_and_technical_meta():
    (decoded,) = decode(raw("MR_small.dcm"), "MR_small.dcm")
    assert decoded.name == "MR_small.dcm"
    assert decoded.meta == {
        "format": "DICOM",
        "transfer_syntax": "Explicit VR Little Endian",
        "modality": "MR",
        "photometric": "MONOCHROME2",
    }


def test_window_centre_and_width_from_the_file_are_used():
    ds = dataset("MR_small.dcm")
    values = stored("MR_small.dcm")
    for centre, width in ((600, 1600), (300, 200)):
        ds.WindowCenter, ds.WindowWidth = centre, width
        low = centre - 0.5 - (width - 1) / 2
        expected = np.rint(np.clip((values - low) * 255 / (width - 1), 0, 255))
        np.testing.assert_array_equal(grey(to_bytes(ds)), expected)


def test_rescale_slope_and_intercept_are_applied_before_the_window():
    ds = dataset("MR_small.dcm")
    reference = grey(to_bytes(ds))
    # The same window expressed in rescaled units gives the same picture only if the
    # rescale is applied: (2x - 100) windowed at (2c - 100, 2w) equals x windowed at (c, w).
    ds.RescaleSlope, ds.RescaleIntercept = 2, -100
    ds.WindowCenter, ds.WindowWidth = 2 * 600 - 100, 2 * 1600
    rescaled = grey(to_bytes(ds))
    assert np.abs(rescaled.astype(int) - reference.astype(int)).max() <= 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    assert np.abs(grey(to_bytes(ds)).astype(int) - reference.astype(int)).max() > 50


def test_ct_without_a_window_gets_a_brain_window_in_hounsfield_units():
    hounsfield = stored("CT_small.dcm") - 1024  # RescaleSlope 1, RescaleIntercept -1024
    expected = np.rint(np.clip((hounsfield - 0.0) * 255 / 79, 0, 255))
    np.testing.assert_array_equal(grey(raw("CT_small.dcm")), expected)


def test_without_a_window_grey_levels_are_stretched_by_percentiles():
    ds = dataset("MR_small.dcm")
    del ds.WindowCenter, ds.WindowWidth
    values = stored("MR_small.dcm")
    low, high = np.percentile(values, (0.5, 99.5))
    expected = np.rint(np.clip((values - low) * 255 / (high - low), 0, 255))
    assert np.abs(grey(to_bytes(ds)).astype(int) - expected).max() <= 1


@pytest.mark.parametrize("name", ["MR_small.dcm", "RG1_UNCI.dcm"])
def test_monochrome1_is_inverted(name):
    ds = dataset(name)
    as_stored = grey(to_bytes(ds))
    ds.PhotometricInterpretation = "MONOCHROME2" if name == "RG1_UNCI.dcm" else "MONOCHROME1"
    flipped = grey(to_bytes(ds))
    np.testing.assert_array_equal(flipped, 255 - as_stored)


def test_palette_colour_becomes_rgb():
    (decoded,) = decode(raw("OBXXXX1A.dcm"))
    assert decoded.meta["photometric"] == "PALETTE COLOR"
    pixels = decoded.pixels.astype(int)
    assert pixels.shape == (600, 800, 3)
    assert ((pixels[..., 0] != pixels[..., 1]) | (pixels[..., 1] != pixels[..., 2])).any()
    assert pixels.max() > 200  # 16-bit palette entries scaled to 8 bits, not clipped to black


def test_pixel_spacing_keeps_row_and_column_order():
    ds = dataset("MR_small.dcm")
    ds.PixelSpacing = [0.5, 0.8]
    (decoded,) = decode(to_bytes(ds))
    assert decoded.spacing_mm == (0.5, 0.8)
    assert decoded.spacing_source == "DICOM PixelSpacing"


def test_imager_pixel_spacing_is_the_fallback_and_broken_spacing_is_unknown():
    ds = dataset("MR_small.dcm")
    ds.PixelSpacing = [0, 0]
    ds.ImagerPixelSpacing = [0.2, 0.3]
    (decoded,) = decode(to_bytes(ds))
    assert decoded.spacing_mm == (0.2, 0.3)
    assert decoded.spacing_source == "DICOM ImagerPixelSpacing"
    del ds.ImagerPixelSpacing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pydicom warns that NaN is not a valid DS
        ds.PixelSpacing = ["nan", "0.5"]
    (decoded,) = decode(to_bytes(ds))
    assert decoded.spacing_mm is None and decoded.spacing_source == ""


def _group(sequence: str, **values: object) -> Dataset:
    item, group = Dataset(), Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    setattr(group, sequence, Sequence([item]))
    return group


def test_enhanced_multi_frame_reads_shared_and_per_frame_functional_groups():
    ds = dataset("emri_small.dcm")
    ds.SharedFunctionalGroupsSequence = Sequence(
        [_group("PixelMeasuresSequence", PixelSpacing=[0.7, 0.9])]
    )
    per_frame = [Dataset() for _ in range(10)]
    per_frame[1] = _group("PixelMeasuresSequence", PixelSpacing=[0.5, 0.6])
    per_frame[2] = _group("FrameVOILUTSequence", WindowCenter=100, WindowWidth=50)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    slices = decode(to_bytes(ds))
    assert [s.spacing_mm for s in slices[:3]] == [(0.7, 0.9), (0.5, 0.6), (0.7, 0.9)]
    expected = np.rint(np.clip((stored("emri_small.dcm")[2] - 75) * 255 / 49, 0, 255))
    np.testing.assert_array_equal(slices[2].pixels[:, :, 0], expected)


def test_file_without_an_image_says_so():
    with pytest.raises(
        InputError, match=r"^plan\.dcm: DICOM file has no image \(Modality RTPLAN\)$"
    ):
        decode(raw("rtplan.dcm"), "plan.dcm")


@pytest.mark.parametrize("cut", ["MR_truncated.dcm", "half", "header"])
def test_truncated_files_give_a_clear_error(cut):
    data = raw("MR_small.dcm")
    if cut == "MR_truncated.dcm":
        data = raw(cut)
    elif cut == "half":
        data = data[: len(data) // 2]
    else:
        data = data[:400]
    with pytest.raises(InputError, match=r"^cut\.dcm: .*(truncated|less than expected)"):
        decode(data, "cut.dcm")


def test_unknown_transfer_syntax_is_refused_by_name():
    ds = dataset("MR_small.dcm")
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = encapsulate([bytes(ds.PixelData)])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    with pytest.raises(InputError, match=r"transfer syntax MPEG2 Main Profile .* not supported"):
        decode(to_bytes(ds))


def test_oversized_images_and_stacks_are_refused_before_decoding():
    ds = dataset("MR_small_jp2klossless.dcm")
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(200)])  # no JPEG 2000 decoder reads it
    ds["PixelData"].is_undefined_length = True
    garbage = to_bytes(ds)
    with pytest.raises(InputError, match=r"frame 1's image data declare no readable size"):
        decode(garbage)
    # The same file within the limits is refused, so a LimitError proves the check came first.
    with pytest.raises(LimitError, match=r"64x64 pixels, more than the limit of 1,000"):
        decode(garbage, limits=Limits(max_pixels=1000))
    with pytest.raises(LimitError, match=r"has 10 frames, more than the limit of 5 images"):
        decode(raw("emri_small.dcm"), limits=Limits(max_images=5))


def test_deflate_bomb_is_refused_before_inflating():
    data = raw("image_dfl.dcm")  # 4.6 kB that inflate to over 260 kB
    with pytest.raises(
        LimitError,
        match=r"deflated DICOM dataset inflates to at least [\d,]+ bytes, more than the "
        r"request's limit of 100,000 bytes",
    ):
        decode(data, limits=Limits(max_decoded_bytes=100_000))


def test_missing_codec_names_the_syntax_and_the_extra(tmp_path):
    # A fresh interpreter in which the optional codecs cannot be imported, as without the extra.
    script = (
        "import sys\n"
        "for module in ('gdcm', 'jpeg_ls', 'pylibjpeg', 'libjpeg', 'openjpeg', 'rle'):\n"
        "    sys.modules[module] = None\n"
        "from pathlib import Path\n"
        "from mriscribe.errors import InputError\n"
        "from mriscribe.imaging.dicom import decode_dicom\n"
        "from mriscribe.imaging.limits import Limits\n"
        "try:\n"
        f"    decode_dicom(Path({path_of('MR_small_jpeg_ls_lossless.dcm')!r}).read_bytes(),\n"
        "                 'ls.dcm', Limits())\n"
        "except InputError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == (
        "ls.dcm: decoding JPEG-LS Lossless Image Compression DICOM needs codecs that are not "
        "installed: pip install 'mriscribe[dicom]'"
    )


def test_patient_data_never_reaches_meta_or_errors():
    ds = dataset("MR_small.dcm")
    secrets = ("Doe^Jane", "PID-778899", "19700101")
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = secrets
    data = to_bytes(ds)
    assert all(secret.encode() in data for secret in secrets)
    texts = [" ".join(decode(data)[0].meta.values())]
    for bad, limits in (
        (data[: len(data) - 100], LIMITS),
        (data, Limits(max_pixels=10)),
        (data[:400], LIMITS),
    ):
        with pytest.raises(InputError) as caught:
            decode(bad, limits=limits)
        texts.append(str(caught.value))
    del ds.PixelData
    with pytest.raises(InputError) as caught:
        decode(to_bytes(ds))
    texts.append(str(caught.value))
    for text in texts:
        assert not any(secret in text for secret in secrets), text


def test_palette_without_its_lookup_table_is_a_clear_error():
    ds = dataset("OBXXXX1A.dcm")
    del ds.RedPaletteColorLookupTableData
    with pytest.raises(InputError, match=r"^p\.dcm: the DICOM image attributes are unusable"):
        decode(to_bytes(ds), "p.dcm")


def test_decoder_messages_are_scrubbed_of_patient_values():
    # Defence in depth: no decoder message seen so far quotes patient data, but one could.
    ds = dataset("MR_small.dcm")
    ds.PatientName, ds.PatientID = "Doe^Jane", "PID-778899"
    ds = pydicom.dcmread(io.BytesIO(to_bytes(ds)))
    reason = _reason(ValueError("bad value 'Doe^Jane' near Jane, id PID-778899\nsecond line"), ds)
    assert reason == "bad value ... near ..., id ..."
    reason = _reason(ValueError(f"cannot read {io.BytesIO()!r} at /srv/uploads/scan.dcm"), ds)
    assert reason == "cannot read ... at ..."


# ---- compressed frames are checked against the header before they are decoded ----


def never_decoded(*args: object, **kwargs: object):
    raise AssertionError("the pixel data were decoded")


def edited(name: str, **attributes: object) -> bytes:
    ds = dataset(name)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return to_bytes(ds)


@pytest.mark.parametrize(
    ("name", "attributes", "declared"),
    [
        ("SC_rgb_jpeg_dcmtk.dcm", {"Rows": 50}, "100x100, not the header's 100x50"),
        ("SC_rgb_jpeg_dcmtk.dcm", {"Columns": 40, "Rows": 40}, "100x100, not the header's 40x40"),
        ("MR_small_jp2klossless.dcm", {"Columns": 32}, "64x64, not the header's 32x64"),
        ("MR_small_jpeg_ls_lossless.dcm", {"Rows": 16}, "64x64, not the header's 64x16"),
        (
            "SC_rgb_jpeg_dcmtk.dcm",
            {"SamplesPerPixel": 1, "PhotometricInterpretation": "MONOCHROME2"},
            "3 components, not the header's 1 samples per pixel",
        ),
        (
            "MR_small_jp2klossless.dcm",
            {"BitsAllocated": 8, "BitsStored": 8, "HighBit": 7},
            "16-bit samples, more than the header's 8 bits allocated",
        ),
    ],
)
def test_frames_whose_codestream_disagrees_with_the_header_are_refused_before_decoding(
    monkeypatch, name, attributes, declared
):
    # The codecs allocate from the codestream, which the budget (from the header) never saw.
    monkeypatch.setattr(dicom, "iter_pixels", never_decoded)
    with pytest.raises(
        InputError, match=rf"^x\.dcm: the DICOM frame 1's image data declare {declared}$"
    ):
        decode(edited(name, **attributes), "x.dcm")


def test_each_frame_of_a_stack_is_checked():
    ds = dataset("emri_small_jpeg_2k_lossless.dcm")
    frames = [bytearray(frame) for frame in generate_frames(ds.PixelData, number_of_frames=10)]
    frames[2][8:12] = (65).to_bytes(4, "big")  # the third frame's Xsiz
    ds.PixelData = encapsulate([bytes(frame) for frame in frames])
    with pytest.raises(
        InputError, match=r"^x\.dcm: the DICOM frame 3's image data declare 65x64, not the header's"
    ):
        decode(to_bytes(ds), "x.dcm")


@pytest.mark.parametrize(
    "frame",
    [
        b"\xff\xd8\xff\xda\x00\x08" + bytes(64),  # a JPEG scan before any frame header
        b"\xff\xd8\xff\xc0\x00\x11\x08",  # a JPEG frame header cut short
        b"\xff\x4f\xff\x51\x00\x29" + bytes(36),  # a JPEG 2000 SIZ cut short
    ],
    ids=["jpeg scan first", "jpeg cut", "j2k cut"],
)
def test_frames_without_a_readable_size_are_refused(monkeypatch, frame):
    monkeypatch.setattr(dicom, "iter_pixels", never_decoded)
    name = "SC_rgb_jpeg_dcmtk.dcm" if frame.startswith(b"\xff\xd8") else "MR2_J2KI.dcm"
    ds = dataset(name)
    ds.PixelData = encapsulate([frame])
    with pytest.raises(InputError, match=r"frame 1's image data declare no readable size"):
        decode(to_bytes(ds), "x.dcm")


_JP2 = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


@pytest.mark.parametrize(
    "frame",
    [
        _JP2 + b"\x00\x00\x00\x00ftyp" + bytes(64),  # a box of length 0 ("to the end")
        # A box with a 64-bit length before the (right) codestream: pydicom steps 1 byte,
        # reads a length of 0x166 from the box's own bytes, and lands on a zero length.
        _JP2 + b"\x00\x00\x00\x01free" + struct.pack(">Q", 400) + bytes(400 - 16),
    ],
    ids=["zero length", "64-bit length"],
)
def test_jp2_frame_that_would_hang_pydicom_is_refused(tmp_path, frame):
    # pydicom's get_j2k_parameters, run on each frame before decoding, walks the JP2 boxes by
    # their 32-bit lengths and loops forever on a length of 0.
    ds = dataset("MR_small_jp2klossless.dcm")
    (codestream,) = generate_frames(ds.PixelData, number_of_frames=1)
    ds.PixelData = encapsulate([frame + b"\x00\x00\x00\x00jp2c" + codestream])
    path = tmp_path / "endless.dcm"
    path.write_bytes(to_bytes(ds))
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from mriscribe.errors import InputError\n"
        "from mriscribe.imaging.dicom import decode_dicom\n"
        "from mriscribe.imaging.limits import Limits\n"
        "try:\n"
        "    decode_dicom(Path(sys.argv[1]).read_bytes(), 'x.dcm', Limits())\n"
        "except InputError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.strip() == (
        "x.dcm: the DICOM frame 1's image data declare no readable size (truncated or corrupt)"
    )


def test_more_frames_than_declared_are_refused_before_decoding(monkeypatch):
    # pydicom decodes every frame it finds: with no offset table, each fragment that ends in
    # an end-of-image marker is a frame; with one, each offset is.
    picture = encode(grey(raw("MR_small.dcm")), "JPEG")
    monkeypatch.setattr(dicom, "iter_pixels", never_decoded)
    ds = dataset("MR_small.dcm")
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([picture] * 6, has_bot=False)
    ds["PixelData"].VR = "OB"
    ds.NumberOfFrames = 2
    with pytest.raises(InputError, match=r"^x\.dcm: the DICOM file declares 2 frames but holds 6$"):
        decode(to_bytes(ds), "x.dcm")
    rle = edited("emri_small_RLE.dcm", NumberOfFrames=5)
    with pytest.raises(InputError, match=r"declares 5 frames but holds 10$"):
        decode(rle, "x.dcm")


# ---- decoder messages never quote names, identifiers, dates or UIDs ----


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian], ids=["explicit", "implicit"]
)
def test_decoder_messages_are_scrubbed_of_every_identifying_value(monkeypatch, syntax):
    ds = dataset("MR_small.dcm")
    ds.file_meta.TransferSyntaxUID = syntax
    ds.ReferringPhysicianName = "House^Gregory"
    ds.InstitutionName = "Princeton Plainsboro"
    ds.AccessionNumber = "ACC-445566"
    ds.StudyDate = "20240229"
    ds.OperatorsName = "Chase^Robert"
    request = Dataset()
    request.RequestedProcedureID = "RP-7788"
    ds.RequestAttributesSequence = Sequence([request])
    data = to_bytes(ds)
    secrets = (
        "House",
        "Gregory",
        "Princeton Plainsboro",
        "ACC-445566",
        "20240229",
        "Chase",
        "RP-7788",
        ds.SOPInstanceUID,
    )

    def fail(*args: object, **kwargs: object):
        raise ValueError(
            f"bad frame from House^Gregory at Princeton Plainsboro (ACC-445566, 20240229, "
            f"Chase, RP-7788) {ds.SOPInstanceUID}"
        )

    monkeypatch.setattr(dicom, "iter_pixels", fail)
    with pytest.raises(InputError, match=r"cannot be decoded") as caught:
        decode(data, "x.dcm")
    message = str(caught.value)
    assert "bad frame from" in message
    for secret in secrets:
        assert secret not in message, message
