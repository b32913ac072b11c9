"""Small files that claim to be huge, built in chunks so that making them costs little memory.

Used by bench/hostile_uploads.py and the memory tests: each one is what an attacker (or an
unlucky user) uploads, a few hundred kilobytes that decode to hundreds of megabytes.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator

import numpy as np

_CHUNK = 1 << 22
# NIfTI-1 datatype codes.
_NIFTI_TYPES = {np.dtype(np.uint8): 2, np.dtype(np.int16): 4, np.dtype(np.float32): 16}


def _zeros(total: int) -> Iterator[bytes]:
    block = bytes(min(total, _CHUNK))
    while total > 0:
        yield block[: min(total, len(block))]
        total -= len(block)


def _compress(head: bytes, body: Iterator[bytes], wbits: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    out = [packer.compress(head)]
    out.extend(packer.compress(chunk) for chunk in body)
    out.append(packer.flush())
    return b"".join(out)


def nifti_header(shape: tuple[int, ...], dtype: np.dtype | type = np.uint8) -> bytes:
    """A NIfTI-1 single-file header (348 bytes + 4-byte extension flag) for ``shape``: 1 mm
    voxels, an RAS affine (sform), data at offset 352."""
    dtype = np.dtype(dtype)
    header = bytearray(352)
    struct.pack_into("<i", header, 0, 348)
    dims = [len(shape), *shape] + [1] * (7 - len(shape))
    struct.pack_into("<8h", header, 40, *dims)
    struct.pack_into("<hh", header, 70, _NIFTI_TYPES[dtype], dtype.itemsize * 8)
    struct.pack_into("<8f", header, 76, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    struct.pack_into("<f", header, 108, 352.0)  # vox_offset
    struct.pack_into("<f", header, 112, 1.0)  # scl_slope
    header[123] = 2  # xyzt_units: mm
    struct.pack_into("<h", header, 254, 1)  # sform_code: scanner
    for row, values in enumerate(((1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0))):
        struct.pack_into("<4f", header, 280 + 16 * row, *values)
    header[344:348] = b"n+1\x00"
    return bytes(header)


def zero_nifti_gz(shape: tuple[int, int, int], dtype: np.dtype | type = np.uint8) -> bytes:
    """A gzipped NIfTI volume of zeros: about a thousandth of its voxel bytes on disk."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return _compress(nifti_header(shape, dtype), _zeros(size), 16 + zlib.MAX_WBITS)


def noise_nifti(shape: tuple[int, int, int], seed: int = 0) -> bytes:
    """An uncompressed int16 NIfTI volume of noise with a bright 'head' in the middle: a file
    that decodes for real (large, and every byte of it is data)."""
    rng = np.random.default_rng(seed)
    x, y = np.ogrid[: shape[0], : shape[1]]
    head = ((x - shape[0] / 2) ** 2 + (y - shape[1] / 2) ** 2) < (min(shape[:2]) * 0.4) ** 2
    out = io.BytesIO()
    out.write(nifti_header(shape, np.int16))
    for _ in range(shape[2]):
        plane = rng.integers(0, 200, size=shape[:2], dtype=np.int16) + 800 * head
        out.write(plane.astype("<i2").tobytes(order="F"))
    return out.getvalue()


def deflated_dicom(rows: int, columns: int, frames: int) -> bytes:
    """A Deflated Explicit VR Little Endian MR image of zeros (16-bit): a few hundred kilobytes
    that inflate to rows x columns x frames x 2 bytes."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomFileLike
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = io.BytesIO()
    head.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)

    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    body = io.BytesIO()
    target = DicomFileLike(body)
    target.is_little_endian, target.is_implicit_VR = True, False
    write_dataset(target, ds)
    size = rows * columns * frames * 2
    pixel_head = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, size)
    deflated = _compress(body.getvalue() + pixel_head, _zeros(size), -zlib.MAX_WBITS)
    return head.getvalue() + deflated


def png16(width: int, height: int) -> bytes:
    """A 16-bit grey PNG of zeros: tens of kilobytes for tens of megapixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    row = bytes(1 + 2 * width)  # filter byte 0, then zeros
    rows = (row for _ in range(height))
    idat = _compress(b"", rows, zlib.MAX_WBITS)
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
