"""Decoding PNG, JPEG and TIFF files into slices, with guards against broken and oversized files."""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageMode, UnidentifiedImageError

from mriscribe.errors import InputError, LimitError, library_reason
from mriscribe.imaging.codestream import JPEG_FRAMES
from mriscribe.imaging.files import read_input_file
from mriscribe.imaging.geometry import SourceRef, decode_token
from mriscribe.imaging.inflate import inflate
from mriscribe.imaging.limits import DecodeBudget, Limits
from mriscribe.imaging.slices import Slice
from mriscribe.imaging.sniff import sniff
from mriscribe.imaging.window import percentile_window, sample_step

RASTER_FORMATS = ("PNG", "JPEG", "TIFF")

DEFAULT_MAX_PIXELS = 64_000_000
DEFAULT_MAX_BYTES = 100 * 1024 * 1024
# 16- and 32-bit images are windowed by percentiles of about this many pixels at most; decoded
# images are copied out of Pillow (and turned into 8-bit RGB) this many pixels at a time.
_SAMPLES = 1 << 20
_BLOCK_PIXELS = 1 << 20
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")

# Pillow warns, then raises, on decompression bombs; the pixel limit is checked here before any
# decode. A module-wide filter (unlike warnings.catch_warnings) is safe with decodes in threads.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Channels of each PNG colour type, and the bit depths it allows.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
# Adam7 passes: first column, first row, column step, row step.
_ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)
# A marker after a JPEG scan: fill bytes, then a code that is neither stuffing (00) nor a restart.
_JPEG_MARKER_AFTER_SCAN = re.compile(rb"\xff+[\x01-\xcf\xd8-\xfe]")
_JPEG_EOI, _JPEG_SOS = 0xD9, 0xDA
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_JPEG_HUFFMAN_SEQUENTIAL = frozenset({0xC0, 0xC1})
# Stands in for the end-of-image marker after the last scan byte: bits that are no Huffman
# code (stuffed 0xFF bytes), enough to fill the decoder's bit buffer but not to fake a block.
_JPEG_PADDING = b"\xff\x00" * 8

# EXIF orientation -> the numpy view that shows the image upright (Pillow's exif_transpose).
_ORIENTATIONS = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a),
}


def sniff_raster(data: bytes) -> str | None:
    """Name the raster format of ``data`` from its magic bytes, or None if it is not one we read."""
    kind = sniff(data)
    return kind if kind in RASTER_FORMATS else None


def decode_raster(
    data: bytes,
    name: str,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    budget: DecodeBudget | None = None,
) -> Slice:
    """Decode PNG, JPEG or TIFF ``data`` into an RGB slice (a multi-page TIFF: its first page).

    The file's structure is checked first (PNG chunk checksums and image data size, JPEG
    markers and scan length, TIFF data within the file), so a corrupt file is refused rather
    than shown padded or cut. The decoded samples and the slice's pixels are spent from
    ``budget`` (default: a fresh one for this image alone) before decoding. ``name`` is used in
    error messages.
    """
    if not data:
        raise InputError(name, "the file is empty")
    kind = sniff_raster(data)
    if kind is None:
        raise InputError(name, "not a PNG, JPEG or TIFF image (unrecognised file content)")
    if budget is None:  # this image alone, whose pixels max_pixels bounds
        budget = Limits(max_pixels=max_pixels, max_total_pixels=max_pixels).budget()
    png = _png_layout(data, name) if kind == "PNG" else None
    jpeg = _jpeg_layout(data, name) if kind == "JPEG" else None
    declared = png.size if png else jpeg.size if jpeg else None
    if declared:
        _check_size(name, *declared, max_pixels)
    reader = _JpegScanReader(data, jpeg.scan_end) if jpeg and jpeg.scan_end else None
    try:
        source = io.BytesIO(data) if reader is None else reader
        with Image.open(source, formats=(kind,)) as image:
            width, height = image.size
            if declared is None:
                _check_size(name, width, height, max_pixels)
            elif (width, height) != declared:
                raise InputError(name, f"the {kind} data is corrupt (its header is inconsistent)")
            mode = ImageMode.getmode(image.mode)
            samples = width * height * len(mode.bands) * np.dtype(mode.typestr).itemsize
            budget.take(name, samples, f"the {kind} image decodes to")
            budget.take_pixels(name, width * height)
            if png is not None:
                png.check_data(data, name)
            elif kind == "TIFF":
                _check_tiff_extents(image, len(data), name)
            image.load()
            pixels = _to_rgb(image)
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise LimitError(
            name,
            f"image is more than the limit of {max_pixels:,} pixels (possible decompression bomb)",
        ) from None
    except (UnidentifiedImageError, ImportError):
        # ImportError: Ultralytics (loaded for a .pt detector) wraps Image.open and, on a file
        # Pillow cannot identify, tries to import an optional HEIF plugin instead of re-raising.
        raise InputError(
            name, f"the {kind} data is truncated or corrupt (unreadable header)"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        if reader is not None and reader.exhausted:
            reason = "its scan data end before the image does"
        else:
            reason = library_reason(exc)
        raise InputError(name, f"the {kind} data is truncated or corrupt ({reason})") from None
    if reader is not None and not reader.read_last_byte:
        raise InputError(
            name,
            f"the JPEG data is corrupt (its scan holds more data than its {width}x{height} "
            "pixels need)",
        )
    # Boxes must match what a viewer shows, so honour the EXIF orientation.
    turn = _ORIENTATIONS.get(orientation)
    if turn is not None:
        pixels = np.ascontiguousarray(turn(pixels))
    return Slice(
        name=name,
        pixels=pixels,
        meta={"format": kind},
        source=SourceRef(format=kind, series_key=("file", name, decode_token())),
    )


def read_raster(
    path: Path, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES
) -> Slice:
    """Read and decode one image file from disk (regular files only, at most ``max_bytes``)."""
    return decode_raster(read_input_file(path, max_bytes), str(path), max_pixels=max_pixels)


def _check_size(name: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise LimitError(
            name,
            f"image is {width}x{height} pixels, more than the limit of "
            f"{max_pixels:,} pixels (possible decompression bomb)",
        )


def _to_rgb(image: Image.Image) -> np.ndarray:
    """The decoded image as RGB uint8 (H, W, 3), copied out a block of rows at a time (one copy
    through tobytes would hold the image twice more); a 16/32-bit grey image shown through the
    percentile window (imaging/window.py) of a strided sample."""
    width, height = image.size
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    if image.mode not in _WIDE_MODES:
        for top, bottom in _row_blocks(width, height, 1):
            rows = image.crop((0, top, width, bottom))
            rgb[top:bottom] = np.asarray(rows if rows.mode == "RGB" else rows.convert("RGB"))
        return rgb
    step = sample_step(width * height, _SAMPLES)
    blocks = _row_blocks(width, height, step)
    window = percentile_window(
        np.concatenate(
            [
                np.asarray(image.crop((0, top, width, bottom)))[::step, ::step].astype(np.float32)
                for top, bottom in blocks
            ]
        )
    )
    for top, bottom in blocks:
        rows = np.asarray(image.crop((0, top, width, bottom))).astype(np.float32)
        rgb[top:bottom, :, 0] = window.grey(rows)
    rgb[:, :, 1] = rgb[:, :, 0]
    rgb[:, :, 2] = rgb[:, :, 0]
    return rgb


def _row_blocks(width: int, height: int, step: int) -> list[tuple[int, int]]:
    """(top, bottom) of blocks of about _BLOCK_PIXELS, each a multiple of ``step`` rows tall."""
    rows = max(step, _BLOCK_PIXELS // width // step * step)
    return [(top, min(height, top + rows)) for top in range(0, height, rows)]


@dataclass(frozen=True)
class _Png:
    """What the chunk walk found: the header's size and where the image data are."""

    size: tuple[int, int]
    data_bytes: int
    idat: tuple[tuple[int, int], ...]

    def check_data(self, data: bytes, name: str) -> None:
        """The image data must inflate to exactly what the header declares: Pillow pads data
        that end early and ignores data that run on. Inflated in chunks, counted, dropped."""
        inflater = zlib.decompressobj()
        view = memoryview(data)
        spans = (view[start:end] for start, end in self.idat)
        size = 0
        try:
            for piece in inflate(inflater, spans, self.data_bytes + 1):
                size += len(piece)
        except zlib.error:
            raise InputError(
                name, "the PNG data is corrupt (its image data do not inflate)"
            ) from None
        if size > self.data_bytes:
            raise InputError(
                name,
                f"the PNG data is corrupt (its image data are more than its "
                f"{self.size[0]}x{self.size[1]} pixels need)",
            )
        if size < self.data_bytes or not inflater.eof:
            raise InputError(
                name, "the PNG data is truncated or corrupt (its image data end early)"
            )


def _png_layout(data: bytes, name: str) -> _Png:
    """Walk the PNG chunks: IHDR first, each within the file and passing its CRC check, up to
    IEND; return the header's size, its inflated image data size and the IDAT chunks."""
    chunks = _png_chunks(data, name)
    kind, start, end = next(chunks, (b"IEND", 0, 0))
    if kind != b"IHDR" or end - start != 13:
        raise InputError(name, "the PNG data is corrupt (it does not start with IHDR)")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", data[start:end]
    )
    idat = tuple((start, end) for kind, start, end in chunks if kind == b"IDAT")
    if (
        not (0 < width <= 0x7FFFFFFF and 0 < height <= 0x7FFFFFFF)
        or depth not in _PNG_DEPTHS.get(colour, ())
        or (compression, filtering) != (0, 0)
        or interlace not in (0, 1)
    ):
        raise InputError(name, "the PNG data is corrupt (its IHDR chunk is invalid)")
    bits = depth * _PNG_CHANNELS[colour]
    data_bytes = 0
    for column, row, column_step, row_step in _ADAM7 if interlace else ((0, 0, 1, 1),):
        columns = -(-(width - column) // column_step) if width > column else 0
        rows = -(-(height - row) // row_step) if height > row else 0
        if columns and rows:
            data_bytes += rows * (1 + -(-columns * bits // 8))  # a filter byte starts each row
    return _Png((width, height), data_bytes, idat)


def _png_chunks(data: bytes, name: str) -> Iterator[tuple[bytes, int, int]]:
    """Each chunk's type and the span of its data, up to (not including) IEND, after checking
    that it lies within the file and passes its CRC check."""
    view = memoryview(data)
    pos = len(_PNG_SIGNATURE)
    while True:
        if pos + 12 > len(data):
            raise InputError(name, "the PNG data is truncated or corrupt (it ends before IEND)")
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        end = pos + 8 + length
        label = f"chunk {kind.decode()}" if kind.isalpha() else "a chunk"
        if length > 0x7FFFFFFF or end + 4 > len(data):
            raise InputError(
                name,
                f"the PNG data is truncated or corrupt ({label} runs past the end of the file)",
            )
        if zlib.crc32(view[pos + 4 : end]) != int.from_bytes(data[end : end + 4], "big"):
            raise InputError(name, f"the PNG data is corrupt ({label} fails its CRC check)")
        if kind == b"IEND":
            return
        yield kind, pos + 8, end
        pos = end + 4


@dataclass(frozen=True)
class _Jpeg:
    """What the marker walk found: the frame header's size and, for a single Huffman-coded
    sequential scan, where its entropy-coded data end (else 0)."""

    size: tuple[int, int]
    scan_end: int


def _jpeg_layout(data: bytes, name: str) -> _Jpeg:
    """Walk the JPEG markers from SOI to EOI: every segment within the file, a frame header
    before the first scan, each scan's data ending at a marker."""
    pos, frame, scans, scan_end = 2, 0, 0, 0
    size = (0, 0)
    while True:
        while pos + 1 < len(data) and data[pos] == 0xFF and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes before a marker
        if pos + 2 > len(data):
            raise InputError(
                name, "the JPEG data is truncated or corrupt (it ends before its end marker)"
            )
        if data[pos] != 0xFF:
            raise InputError(name, "the JPEG data is corrupt (a marker is missing)")
        code = data[pos + 1]
        if code == _JPEG_EOI:
            break
        if code in _JPEG_STANDALONE:
            pos += 2
            continue
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if pos + 4 > len(data) or end > len(data):
            raise InputError(
                name, "the JPEG data is truncated or corrupt (a segment runs past the end)"
            )
        if code in JPEG_FRAMES and end - pos >= 10:
            frame = code
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            size = (width, height)
        if code != _JPEG_SOS:
            pos = end
            continue
        if not frame:
            raise InputError(
                name, "the JPEG data is corrupt (a scan comes before the frame header)"
            )
        scans += 1
        marker = _JPEG_MARKER_AFTER_SCAN.search(data, end)
        if marker is None:
            raise InputError(
                name, "the JPEG data is truncated or corrupt (it ends before its end marker)"
            )
        scan_end, pos = marker.start(), marker.end() - 2
    if not scans or 0 in size:
        raise InputError(name, "the JPEG data is corrupt (no image scan of a known size)")
    checked = scans == 1 and frame in _JPEG_HUFFMAN_SEQUENTIAL and scan_end > 0
    return _Jpeg(size, scan_end if checked else 0)


class _JpegScanReader(io.BytesIO):
    """The JPEG file as Pillow's decoder reads it, to tell whether its one scan holds exactly
    the data its frame header's size needs (libjpeg, in Pillow, pads a short scan with grey and
    skips extra data, silently).

    The scan's last byte comes only on a read of its own, and after it padding bits that are no
    Huffman code stand in for the end marker. A decoder that finishes without reading that last
    byte needed less than the scan holds; one that reads past the padding needed more.
    """

    def __init__(self, data: bytes, scan_end: int) -> None:
        super().__init__(data)
        self._last = scan_end - 1
        self._tail: bytes | None = None
        self.read_last_byte = False
        self.exhausted = False

    def read(self, size: int | None = -1) -> bytes:
        position = self.tell()
        if position < self._last:
            limit = self._last - position
            return super().read(limit if size is None or size < 0 else min(size, limit))
        if size == 0:
            return b""
        if self._tail is None:
            self.read_last_byte = True
            self._tail = super().read(1) + _JPEG_PADDING
        if not self._tail:
            self.exhausted = True
        count = len(self._tail) if size is None or size < 0 else size
        piece, self._tail = self._tail[:count], self._tail[count:]
        return piece


def _check_tiff_extents(image: Image.Image, file_size: int, name: str) -> None:
    """Every strip or tile of the first page must lie within the file."""
    tags = image.tag_v2  # type: ignore[attr-defined]
    for offsets_tag, counts_tag in ((273, 279), (324, 325)):  # strips, tiles
        offsets, counts = tags.get(offsets_tag, ()), tags.get(counts_tag, ())
        if (
            offsets
            and counts
            and (
                len(offsets) != len(counts)
                or any(
                    offset + count > file_size
                    for offset, count in zip(offsets, counts, strict=True)
                )
            )
        ):
            raise InputError(
                name, "the TIFF data is truncated or corrupt (its image data lie past the end)"
            )
