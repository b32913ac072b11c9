"""Reading the image size a JPEG, JPEG-LS or JPEG 2000 codestream declares, without decoding it.

The codecs behind pydicom's decoders (libjpeg, CharLS, OpenJPEG, GDCM, Pillow, imagecodecs)
allocate from these headers, not from the DICOM Rows and Columns; reading them first lets a
caller refuse a frame whose codestream claims more than the file's header (and so its budget).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# JPEG frame headers: SOF0 to SOF15 less DHT (C4), JPG (C8) and DAC (CC); and JPEG-LS's SOF55.
JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_LS_FRAME = 0xF7
_JPEG_SOI, _JPEG_EOI, _JPEG_SOS = 0xD8, 0xD9, 0xDA
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_J2K_START = b"\xff\x4f\xff\x51"  # SOC, then SIZ (always the first marker segment)
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


@dataclass(frozen=True)
class FrameHeader:
    """What a codestream's frame header declares: size, components and bits per sample."""

    width: int
    height: int
    components: int
    precision: int


def jpeg_header(data: bytes) -> FrameHeader | None:
    """The frame header of a JPEG or JPEG-LS codestream: the first SOFn (or SOF55) segment,
    which must come after SOI and before any scan; None where the markers up to it are not
    well formed (a decoder would guess past them) or there is none."""
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        code = data[pos + 1]
        if code == 0xFF:  # a fill byte before a marker
            pos += 1
            continue
        if code in _JPEG_STANDALONE:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if code in (0x00, _JPEG_SOI, _JPEG_EOI, _JPEG_SOS) or length < 2:
            return None
        if code in JPEG_FRAMES or code == _JPEG_LS_FRAME:
            if length < 8 or pos + 10 > len(data):
                return None
            precision, height, width, components = struct.unpack_from(">BHHB", data, pos + 4)
            return FrameHeader(width, height, components, precision)
        pos += 2 + length
    return None


def j2k_header(data: bytes) -> FrameHeader | None:
    """The image size of a JPEG 2000 (or HTJ2K) codestream from its SIZ segment: the reference
    grid less its offset (Xsiz - XOsiz, Ysiz - YOsiz), Csiz components and the largest
    component precision. A JP2 file is read through to its codestream box; None where there
    is no well-formed SIZ segment."""
    start = _jp2_codestream(data) if data.startswith(_JP2_SIGNATURE) else 0
    if start is None or data[start : start + 4] != _J2K_START or len(data) < start + 42:
        return None
    xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", data, start + 8)
    (components,) = struct.unpack_from(">H", data, start + 40)
    sizes = data[start + 42 : start + 42 + 3 * components : 3]
    if xosiz >= xsiz or yosiz >= ysiz or not components or len(sizes) < components:
        return None
    precision = max((size & 0x7F) + 1 for size in sizes)
    return FrameHeader(xsiz - xosiz, ysiz - yosiz, components, precision)


def _jp2_codestream(data: bytes) -> int | None:
    """Where the codestream of a JP2 file starts: the contents of its 'jp2c' box, found by
    walking the boxes; None if there is none, or if a box before it has a length under 8 (0:
    "to the end", 1: a 64-bit length follows), which pydicom's own walk, run on every frame
    before decoding, would misread or loop on forever."""
    pos = 0
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        if data[pos + 4 : pos + 8] == b"jp2c":
            return pos + (16 if length == 1 else 8)
        if length < 8:
            return None
        pos += length
    return None
