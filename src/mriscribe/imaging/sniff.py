"""Naming a file's format from its first bytes, never from its name."""

from __future__ import annotations

import gzip
import zlib
from typing import Literal

Format = Literal["PNG", "JPEG", "TIFF", "DICOM", "NIFTI"]

_RASTER_MAGIC: dict[bytes, Format] = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}
_NIFTI_MAGICS = (b"n+1\x00", b"ni1\x00", b"n+2\x00", b"ni2\x00")


def sniff(data: bytes) -> Format | None:
    """The format of ``data`` from its magic bytes, or None if it is none we read."""
    # DICOM first: its 128-byte preamble may itself hold a TIFF header (dual-format files).
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "DICOM"
    for magic, name in _RASTER_MAGIC.items():
        if data.startswith(magic):
            return name
    if _is_nifti_header(data):
        return "NIFTI"
    if data.startswith(b"\x1f\x8b") and _is_nifti_header(_gunzip_head(data)):
        return "NIFTI"
    return None


def _is_nifti_header(head: bytes) -> bool:
    """NIfTI-1 (348-byte header, magic at 344) or NIfTI-2 (540 bytes, magic at 4)."""
    if len(head) >= 348 and head[344:348] in _NIFTI_MAGICS:
        return True
    return len(head) >= 12 and head[4:8] in _NIFTI_MAGICS[2:]


def _gunzip_head(data: bytes, size: int = 600) -> bytes:
    """The first ``size`` bytes of gzip ``data`` (without inflating the rest)."""
    try:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        return inflater.decompress(data[:65536], size)
    except (zlib.error, gzip.BadGzipFile):
        return b""
