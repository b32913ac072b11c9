"""Hostile files stay small: the decoded-data budget, memory, corrupt files and safe messages."""

import gzip
import io
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image, ImageOps
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, MRImageStorage, generate_uid

from conftest import encode
from mriscribe.errors import InputError, LimitError
from mriscribe.imaging.decode import decode_file
from mriscribe.imaging.limits import Limits

MIB = 1 << 20
GRADIENT = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))
BUDGET = "more than the request's limit of"


def raw_deflate(prefix: bytes, block: bytes, count: int) -> bytes:
    """Raw deflate data of ``prefix`` then ``block`` ``count`` times, fast: the block is
    compressed once after a full flush (which makes it independent of what came before)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    body = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    return head + body * count + compressor.flush()


def gzipped(prefix: bytes, block: bytes, count: int) -> bytes:
    crc = zlib.crc32(prefix)
    for _ in range(count):
        crc = zlib.crc32(block, crc)
    size = len(prefix) + len(block) * count
    trailer = struct.pack("<II", crc, size & 0xFFFFFFFF)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + raw_deflate(prefix, block, count) + trailer


def nifti_header(shape: tuple[int, ...], dtype: type = np.int16) -> bytes:
    """A NIfTI-1 header and its empty extension flag: the voxels start right after."""
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    header["vox_offset"] = 352
    return header.binaryblock + bytes(4)


def small_head() -> bytes:
    """A 40x30x20 NIfTI volume with a box of "brain" through 16 of its axial slices."""
    volume = np.zeros((40, 30, 20), np.int16)
    volume[5:35, 5:25, 2:18] = 500
    return nifti_header((40, 30, 20)) + volume.tobytes(order="F")


def dicom_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def mr_small(**attributes: object) -> bytes:
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm", download=False))
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return dicom_bytes(ds)


def deflated_dicom(rows: int, columns: int, pixel_bytes: int) -> bytes:
    """A deflated MR file whose pixel data are ``pixel_bytes`` zero bytes (a whole number of
    MiB, or fewer than one)."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.SOPClassUID, ds.Modality = MRImageStorage, "MR"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    pixel_header = b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<I", pixel_bytes)
    block = bytes(min(pixel_bytes, MIB))
    deflated = raw_deflate(body.getvalue() + pixel_header, block, pixel_bytes // len(block))
    file_meta = DicomBytesIO()
    write_file_meta_info(file_meta, meta, enforce_standard=True)
    return bytes(128) + b"DICM" + file_meta.getvalue() + deflated


# File meta edits pydicom reads past: where the deflated data begin is where its reader stops.
META_EDITS = ("zero group length", "short group length", "no group length", "command set")


def with_file_meta(data: bytes, edit: str) -> bytes:
    """A deflated file ``data`` (with a right file meta group length) as written, or edited:
    its group length (0002,0000) 0 or 20 bytes short; missing, with the transfer syntax UID
    pushed past byte 1024; or a command set (group 0000) between the file meta and the deflated
    data."""
    if edit == "as written":
        return data
    start = 144 + int.from_bytes(data[140:144], "little")
    head, rest = data[:start], data[start:]
    if edit in ("zero group length", "short group length"):
        length = 0 if edit == "zero group length" else start - 144 - 20
        return head[:140] + struct.pack("<I", length) + head[144:] + rest
    if edit == "command set":  # (0000,0000) CommandGroupLength, implicit VR: tag, length, value
        return head + struct.pack("<HHII", 0, 0, 4, 0) + rest
    meta = pydicom.dcmread(io.BytesIO(head)).file_meta
    del meta.FileMetaInformationGroupLength
    meta.FileMetaInformationVersion = bytes(1000)
    buffer = DicomBytesIO()
    write_file_meta_info(buffer, meta, enforce_standard=False)
    edited = head[:132] + buffer.getvalue()
    assert DeflatedExplicitVRLittleEndian.encode() not in edited[:1024]
    return edited + rest


def png_with_header(data: bytes, width: int, height: int) -> bytes:
    """``data`` with its IHDR size replaced (and its CRC made right again)."""
    edited = bytearray(data)
    edited[16:24] = struct.pack(">II", width, height)
    edited[29:33] = struct.pack(">I", zlib.crc32(bytes(edited[12:29])))
    return bytes(edited)


def jpeg_with_height(data: bytes, height: int) -> bytes:
    """``data`` with the height in its frame header (SOF) replaced."""
    pos = 2
    while data[pos + 1] not in (0xC0, 0xC1, 0xC2):
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return data[: pos + 5] + struct.pack(">H", height) + data[pos + 7 :]


# ---- the budget, checked from each file's header before anything is inflated or decoded ----


def test_nifti_volume_is_spent_from_the_header_before_inflating():
    # 32 MiB of voxels declared, 1 KiB held: a budget error rather than a truncated file shows
    # that the voxels were counted before any of them was inflated.
    data = gzipped(nifti_header((256, 256, 256)), bytes(1024), 1)
    with pytest.raises(
        LimitError,
        match=rf"^big\.nii\.gz: the NIfTI volume holds 33,554,432 bytes, {BUDGET} 16,777,216 ",
    ):
        decode_file(data, "big.nii.gz", Limits(max_decoded_bytes=16 * MIB))
    with pytest.raises(InputError, match=r"^big\.nii\.gz: the NIfTI file is truncated"):
        decode_file(data, "big.nii.gz", Limits())


def test_nifti_gzip_bomb_declaring_gigabytes_is_refused():
    data = gzipped(nifti_header((2048, 2048, 1024)), bytes(MIB), 1)  # 8 GiB declared in 1 kB
    assert len(data) < 5000
    with pytest.raises(LimitError, match=rf"holds 8,589,934,592 bytes, {BUDGET} 268,435,456 "):
        decode_file(data, "bomb.nii.gz", Limits())


def test_nifti_header_putting_its_voxels_far_into_a_gzip_file_is_refused():
    header = bytearray(nifti_header((8, 8, 8)))
    header[108:112] = struct.pack("<f", 2.0**40)  # vox_offset: a TiB of "extensions" to inflate
    data = gzipped(bytes(header), bytes(MIB), 1)
    with pytest.raises(
        LimitError, match=r"header and its extensions inflate to 1,099,511,627,776 bytes"
    ):
        decode_file(data, "far.nii.gz", Limits())


def test_dicom_pixel_data_are_spent_from_the_header_before_decoding():
    exact = 64 * 64 * 2  # MR_small: 64x64, 16 bits
    assert len(decode_file(mr_small(), "mr.dcm", Limits(max_decoded_bytes=exact))) == 1
    with pytest.raises(LimitError, match=r"^mr\.dcm: the DICOM image decodes to 8,192 bytes"):
        decode_file(mr_small(), "mr.dcm", Limits(max_decoded_bytes=exact - 1))


@pytest.mark.parametrize(
    ("attributes", "limits", "size"),
    [
        # Each header claims far more than its pixel data hold: decoding would fail, so a
        # LimitError shows the claim was spent first. Every pixel limit is met.
        (
            {"BitsAllocated": 32, "BitsStored": 32, "HighBit": 31},
            Limits(max_decoded_bytes=10_000),
            "16,384",
        ),
        ({"NumberOfFrames": 200}, Limits(max_decoded_bytes=MIB), "1,638,400"),
        (
            {"Rows": 6000, "Columns": 6000, "SamplesPerPixel": 3, "BitsAllocated": 32},
            Limits(),
            "432,000,000",
        ),
    ],
)
def test_dicom_header_claims_over_the_budget_are_refused(attributes, limits, size):
    with pytest.raises(LimitError, match=rf"^claim\.dcm: the DICOM image decodes to {size} bytes"):
        decode_file(mr_small(**attributes), "claim.dcm", limits)


@pytest.mark.parametrize("edit", ["as written", *META_EDITS])
def test_deflated_dicom_is_counted_from_where_pydicom_inflates_whatever_its_meta_says(edit):
    """Counted while inflating, stopping at the budget, from where pydicom starts inflating
    whatever the file meta says; a deflated file spends its inflated dataset, then its pixels."""
    bomb = with_file_meta(deflated_dicom(64, 64, 2 * MIB), edit)
    with pytest.raises(
        LimitError,
        match=rf"^bomb\.dcm: the deflated DICOM dataset inflates to at least [\d,]+ bytes, "
        rf"{BUDGET} 1,048,576 ",
    ):
        decode_file(bomb, "bomb.dcm", Limits(max_decoded_bytes=MIB))
    # A real deflated file so edited still decodes, and spends exactly its inflated dataset.
    data = Path(get_testdata_file("image_dfl.dcm", download=False)).read_bytes()
    inflated = len(zlib.decompress(data[144 + int.from_bytes(data[140:144], "little") :], -15))
    budget = Limits().budget()
    (decoded,) = decode_file(with_file_meta(data, edit), "dfl.dcm", Limits(), budget=budget)
    assert budget.spent == inflated + decoded.width * decoded.height


def test_sixteen_bit_png_is_spent_from_its_header_before_decoding():
    data = encode(GRADIENT.astype(np.uint16) * 257)
    assert decode_file(data, "g.png", Limits(max_decoded_bytes=64 * 48 * 2))[0].width == 64
    with pytest.raises(LimitError, match=r"^g\.png: the PNG image decodes to 6,144 bytes"):
        decode_file(data, "g.png", Limits(max_decoded_bytes=64 * 48 * 2 - 1))
    # A header claiming 6000x6000 16-bit pixels (within the pixel limit) over one pixel's data.
    claim = png_with_header(encode(np.zeros((1, 1), np.uint16)), 6000, 6000)
    with pytest.raises(LimitError, match=rf"decodes to 72,000,000 bytes, {BUDGET} 67,108,864 "):
        decode_file(claim, "claim.png", Limits(max_decoded_bytes=64 * MIB))


def test_the_budget_belongs_to_the_request_not_to_each_file():
    limits = Limits(max_decoded_bytes=10_000)
    budget = limits.budget()
    decode_file(mr_small(), "one.dcm", limits, budget=budget)  # 8,192 bytes
    assert budget.spent == 8192
    with pytest.raises(
        LimitError,
        match=rf"^two\.png: the PNG image decodes to 9,216 bytes, {BUDGET} 10,000 bytes of "
        r"decoded image data \(1,808 left after",
    ):
        decode_file(encode(np.stack([GRADIENT] * 3, axis=2)), "two.png", limits, budget=budget)
    # Without a budget, each call gets a fresh one.
    for _ in range(2):
        decode_file(mr_small(), "one.dcm", limits)


def test_each_decoder_spends_the_pixels_of_the_slices_it_yields():
    files = {
        "mr.dcm": mr_small(),
        "emri.dcm": Path(get_testdata_file("emri_small_RLE.dcm", download=False)).read_bytes(),
        "g.png": encode(GRADIENT),
        "head.nii": small_head(),
    }
    for name, data in files.items():
        budget = Limits().budget()
        slices = decode_file(data, name, Limits(), budget=budget)
        assert budget.pixels_spent == sum(s.width * s.height for s in slices) > 0, name


def test_the_pixel_allowance_belongs_to_the_request_not_to_each_file():
    # 64x64 and 64x48 pixels: each fits 7,000, both do not.
    limits = Limits(max_total_pixels=7000)
    budget = limits.budget()
    decode_file(mr_small(), "one.dcm", limits, budget=budget)
    assert budget.pixels_spent == 4096
    with pytest.raises(
        LimitError,
        match=r"^two\.png: yields 3,072 pixels, more than the request's limit of 7,000 decoded "
        r"pixels \(2,904 left after its other files\)$",
    ):
        decode_file(encode(GRADIENT), "two.png", limits, budget=budget)
    assert budget.pixels_spent == 4096
    decode_file(encode(GRADIENT[:40]), "three.png", limits, budget=budget)  # 2,560 still fit
    assert budget.pixels_spent == 6656


def test_the_pixel_allowance_is_spent_before_the_slices_are_made(monkeypatch):
    # Each header claims more pixels than its data hold: a LimitError rather than a corrupt
    # file shows the pixels were spent before decoding.
    limits = Limits(max_total_pixels=1_000_000)
    budget = limits.budget()
    budget.take_pixels("earlier.png", 999_000)
    with pytest.raises(LimitError, match=r"^claim\.png: yields 1,000,000 pixels, more than"):
        decode_file(
            png_with_header(encode(GRADIENT), 1000, 1000), "claim.png", limits, budget=budget
        )
    with pytest.raises(LimitError, match=r"^mr\.dcm: yields 4,096 pixels, more than"):
        decode_file(mr_small(), "mr.dcm", limits, budget=budget)
    # NIfTI: the slices through the brain are known only from the voxels, but none is made.
    made = []
    monkeypatch.setattr("mriscribe.imaging.nifti._Values.display", lambda *args: made.append(1))
    with pytest.raises(LimitError, match=r"^head\.nii: yields 19,200 pixels, more than"):
        decode_file(small_head(), "head.nii", limits, budget=budget)  # 16 slices of 40x30
    assert not made


# ---- memory, measured in a fresh process around one decode ----

# The peak RSS of this process's own memory (VmHWM). Not ru_maxrss: Linux carries the parent's
# peak into a child across exec, so a child of a large test process would seem to grow by 0.
_MEASURE = """
import sys
from pathlib import Path
from mriscribe.errors import InputError
from mriscribe.imaging.decode import decode_file
from mriscribe.imaging.limits import Limits
def peak():
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
data = Path(sys.argv[1]).read_bytes()
before = peak()
try:
    outcome = f"{len(decode_file(data, 'hostile', Limits()))} slices"
except InputError as exc:
    outcome = type(exc).__name__
print(peak() - before, outcome)
"""


def peak_growth(path: Path) -> tuple[float, str]:
    """MiB the peak memory of a fresh process grows by while decoding ``path``, and how the
    decode ended."""
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    kib, outcome = result.stdout.split(maxsplit=1)
    return int(kib) / 1024, outcome.strip()


def _disc_slice() -> bytes:
    y, x = np.mgrid[0:256, 0:256] - 127.5
    return ((x**2 + y**2 < 100**2) * 300).astype(np.int16).tobytes()


def _tall_nifti() -> bytes:
    """28 uint8 planes of 3000x3000 (252 MB, within the byte budget) with a disc in each: 24 of
    them shown would be 648 MB of RGB, far over the request's 50 Mpx."""
    y, x = np.mgrid[0:3000, 0:3000] - 1499.5
    disc = ((x**2 + y**2 < 1200**2) * 200).astype(np.uint8).tobytes()
    return gzipped(nifti_header((3000, 3000, 28), np.uint8), disc, 28)


def _wide_png() -> bytes:
    samples = np.zeros((5000, 5000), np.uint16)  # 25 Mpixels, 50 MB of samples
    samples[::7, ::5] = 1000
    return encode(samples)


HOSTILE = {
    # Was: 2.2 GB and 11 s, to say the volume is uniform.
    "zeros.nii.gz": lambda: gzipped(nifti_header((512, 512, 800)), bytes(MIB), 400),
    # Was: 2.2 GB and 15 s: 1.8 MB of gzip holding 375 MiB of stacked discs.
    "bomb.nii.gz": lambda: gzipped(nifti_header((256, 256, 3000)), _disc_slice(), 3000),
    # Was: 1.1 GB, then an error: 0.4 MB that inflate to 380 MiB.
    "bomb.dcm": lambda: deflated_dicom(64, 64, 380 * MIB),
    # Was: 0.6 GB to turn 16 bits into 8.
    "wide.png": _wide_png,
    # Was: 0.9 GB of slices, refused by the pipeline only after all of them were made.
    "tall.nii.gz": _tall_nifti,
    # Were: 1.1 GB each, counting from where the file meta group length says the data begin.
    **{
        f"bomb {edit}.dcm": lambda edit=edit: with_file_meta(
            deflated_dicom(64, 64, 380 * MIB), edit
        )
        for edit in META_EDITS
    },
}


@pytest.mark.skipif(sys.platform != "linux", reason="peak memory is read from /proc")
@pytest.mark.parametrize(
    ("name", "outcome"),
    [
        ("zeros.nii.gz", "LimitError"),
        ("bomb.nii.gz", "LimitError"),
        ("bomb.dcm", "LimitError"),
        ("wide.png", "1 slices"),
        *((f"bomb {edit}.dcm", "LimitError") for edit in META_EDITS),
    ],
)
def test_hostile_files_stay_small_in_memory(tmp_path, name, outcome):
    data = HOSTILE[name]()
    assert len(data) < 2 * MIB
    path = tmp_path / name
    path.write_bytes(data)
    growth, ended = peak_growth(path)
    assert ended == outcome
    assert growth < 200, f"{name}: peak memory grew by {growth:.0f} MiB"


@pytest.mark.skipif(sys.platform != "linux", reason="peak memory is read from /proc")
def test_slices_over_the_pixel_allowance_are_never_made(tmp_path):
    data = HOSTILE["tall.nii.gz"]()
    assert len(data) < 2 * MIB
    path = tmp_path / "tall.nii.gz"
    path.write_bytes(data)
    growth, ended = peak_growth(path)
    assert ended == "LimitError"
    # The voxels (240 MiB, within the byte budget) and blocks of floats; no slice.
    volume_mib = 3000 * 3000 * 28 / MIB
    assert growth < volume_mib + 150, f"peak memory grew by {growth:.0f} MiB"


@pytest.mark.skipif(sys.platform != "linux", reason="peak memory is read from /proc")
def test_a_large_volume_decodes_within_a_small_multiple_of_its_size(tmp_path):
    rng = np.random.default_rng(0)
    x, y = np.mgrid[0:256, 0:256] - 127.5
    path = tmp_path / "head.nii.gz"
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(nifti_header((256, 256, 256)))
        for k in range(256):
            radius = (x / 90) ** 2 + (y / 110) ** 2 + ((k - 127.5) / 100) ** 2
            plane = np.where(radius <= 1, 600 - 300 * radius, 0) + rng.normal(0, 10, x.shape)
            out.write(plane.astype(np.int16).T.tobytes())  # x varies fastest, as NIfTI stores
    growth, ended = peak_growth(path)
    assert ended == "24 slices"
    voxel_mib = 256**3 * 2 / MIB  # 32 MiB
    assert growth < 4 * voxel_mib, f"peak memory grew by {growth:.0f} MiB for {voxel_mib} MiB"


# ---- corrupt means corrupt ----


def test_png_with_a_bad_idat_checksum_is_corrupt():
    data = bytearray(encode(GRADIENT))
    data[data.find(b"IDAT") + 10] ^= 0x01
    with pytest.raises(
        InputError, match=r"^x\.png: the PNG data is corrupt \(chunk IDAT fails its CRC check\)$"
    ):
        decode_file(bytes(data), "x.png", Limits())


@pytest.mark.parametrize("height", [47, 40, 49, 96])
def test_png_whose_header_size_disagrees_with_its_data_is_corrupt(height):
    # Pillow pads missing rows and drops extra ones without a word; the CRC is right again.
    data = png_with_header(encode(GRADIENT), 64, height)
    with pytest.raises(InputError, match=r"^x\.png: the PNG data is (truncated or )?corrupt"):
        decode_file(data, "x.png", Limits())


def test_png_cut_before_iend_is_truncated():
    data = encode(GRADIENT)
    with pytest.raises(InputError, match=r"truncated or corrupt \(it ends before IEND\)"):
        decode_file(data[:-12], "x.png", Limits())


def _photo(height: int = 256, width: int = 200) -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    picture = (x + 2 * y) % 256 + rng.integers(0, 20, (height, width))
    return np.clip(picture, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("change", [-32, -16, 16, 64])
def test_jpeg_with_an_edited_frame_height_is_corrupt(mode, change):
    # Pillow shows a taller image padded with grey, and a shorter one cut, without a word.
    data = encode(np.stack([_photo()] * 3, axis=2) if mode == "RGB" else _photo(), "JPEG")
    assert decode_file(data, "x.jpg", Limits())[0].height == 256
    with pytest.raises(InputError, match=r"^x\.jpg: the JPEG data is (truncated or )?corrupt"):
        decode_file(jpeg_with_height(data, 256 + change), "x.jpg", Limits())


@pytest.mark.parametrize(
    "options",
    [
        {"quality": 90},
        {"quality": 40, "optimize": True},
        {"quality": 95, "subsampling": 0},
        {"quality": 75, "subsampling": 2},
        {"quality": 80, "restart_marker_blocks": 3},
        {"quality": 80, "restart_marker_rows": 1},
        {"quality": 80, "progressive": True},
    ],
)
@pytest.mark.parametrize("size", [(1, 1), (9, 17), (256, 200), (333, 517)])
def test_valid_jpegs_of_every_kind_still_decode(options, size):
    picture = np.stack([_photo(*size)] * 3, axis=2)
    for mode in ("L", "RGB"):
        buffer = io.BytesIO()
        Image.fromarray(picture).convert(mode).save(buffer, "JPEG", **options)
        assert decode_file(buffer.getvalue(), "x.jpg", Limits())[0].pixels.shape[:2] == size


def test_jpeg_without_its_end_marker_is_truncated():
    data = encode(_photo(), "JPEG")
    with pytest.raises(InputError, match=r"truncated or corrupt \(it ends before its end marker\)"):
        decode_file(data[:-2], "x.jpg", Limits())


def test_tiff_whose_strips_reach_past_the_end_is_corrupt():
    data = encode(GRADIENT, "TIFF")
    with Image.open(io.BytesIO(data)) as image:
        (offset,), (count,) = image.tag_v2[273], image.tag_v2[279]
    # Uncompressed: the strip lies before the directory, so cutting inside it leaves the
    # directory unreadable; moving the strip's offset is the same fault with a readable header.
    moved = data.replace(struct.pack("<I", offset), struct.pack("<I", len(data) - count // 2), 1)
    with pytest.raises(InputError, match=r"TIFF data is truncated or corrupt \(its image data lie"):
        decode_file(moved, "x.tif", Limits())


def test_exif_orientation_matches_pillows_transpose():
    picture = np.stack([_photo(30, 50), _photo(30, 50)[::-1], 255 - _photo(30, 50)], axis=2)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, "PNG", exif=exif.tobytes())
        with Image.open(io.BytesIO(buffer.getvalue())) as image:
            expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        (decoded,) = decode_file(buffer.getvalue(), "x.png", Limits())
        np.testing.assert_array_equal(decoded.pixels, expected, err_msg=str(orientation))


# ---- fault text stays inside ----

_LEAK = re.compile(r"0x[0-9a-fA-F]{4,}|<[^<>]*object|/tmp/|site-packages")


def _corrupt_files() -> dict[str, bytes]:
    tiff = encode(
        np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8),
        "TIFF",
        compression="tiff_lzw",
    )
    j2k = pydicom.dcmread(get_testdata_file("MR_small_jp2klossless.dcm", download=False))
    j2k.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(200)])
    j2k["PixelData"].is_undefined_length = True
    header = bytearray(nifti_header((8, 8, 8)))
    header[40:42] = struct.pack("<h", 9)  # nine dimensions
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    volume = nifti_header((64, 64, 64)) + bytes(4096)
    broken_gzip = compressor.compress(volume) + compressor.flush(zlib.Z_SYNC_FLUSH) + b"\xff" * 64
    return {
        "cut.tif": tiff[: len(tiff) // 2],
        "cut.jpg": encode(_photo(), "JPEG")[:-300],
        "crc.png": png_with_header(encode(GRADIENT), 64, 48)[:-5] + b"XXXXX",
        "j2k.dcm": dicom_bytes(j2k),
        "gzip.nii.gz": broken_gzip,
        "dims.nii": bytes(header) + bytes(1024),
    }


@pytest.mark.parametrize("name", list(_corrupt_files()))
def test_errors_name_no_addresses_objects_or_paths(name):
    with pytest.raises(InputError) as caught:
        decode_file(_corrupt_files()[name], name, Limits())
    message = str(caught.value)
    assert message.startswith(f"{name}: ")
    assert not _LEAK.search(message), message
    assert caught.value.__cause__ is None


def test_bomb_errors_quote_our_limit_not_pillows():
    data = bytearray(encode(GRADIENT, "TIFF"))
    # ImageWidth and ImageLength (LONG) set to 60000: Pillow's own bomb check fires on open.
    for tag in (256, 257):
        entry = data.find(struct.pack("<HHI", tag, 4, 1))
        data[entry + 8 : entry + 12] = struct.pack("<I", 60000)
    with pytest.raises(LimitError) as caught:
        decode_file(bytes(data), "big.tif", Limits())
    message = str(caught.value)
    assert "40,000,000 pixels" in message
    assert str(Image.MAX_IMAGE_PIXELS) not in message.replace(",", "")
    assert str(2 * (Image.MAX_IMAGE_PIXELS or 0)) not in message.replace(",", "")
