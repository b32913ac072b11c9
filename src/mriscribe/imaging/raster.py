"""Decoding PNG, JPEG and TIFF files into slices, with guards against broken and oversized files."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mriscribe.errors import InputError, LimitError
from mriscribe.imaging.files import read_input_file
from mriscribe.imaging.slices import Slice
from mriscribe.imaging.sniff import sniff

RASTER_FORMATS = ("PNG", "JPEG", "TIFF")

DEFAULT_MAX_PIXELS = 64_000_000
DEFAULT_MAX_BYTES = 100 * 1024 * 1024

# Pillow warns, then raises, on decompression bombs; the pixel limit is checked here before any
# decode. A module-wide filter (unlike warnings.catch_warnings) is safe with decodes in threads.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def sniff_raster(data: bytes) -> str | None:
    """Name the raster format of ``data`` from its magic bytes, or None if it is not one we read."""
    kind = sniff(data)
    return kind if kind in RASTER_FORMATS else None


def decode_raster(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Slice:
    """Decode PNG, JPEG or TIFF ``data`` into an RGB slice (a multi-page TIFF: its first page).

    ``name`` is used in error messages.
    """
    if not data:
        raise InputError(name, "the file is empty")
    kind = sniff_raster(data)
    if kind is None:
        raise InputError(name, "not a PNG, JPEG or TIFF image (unrecognised file content)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise LimitError(
                    name,
                    f"image is {width}x{height} pixels, more than the limit of "
                    f"{max_pixels:,} pixels (possible decompression bomb)",
                )
            image.load()
            # Boxes must match what a viewer shows, so honour the EXIF orientation.
            pixels = _to_rgb(ImageOps.exif_transpose(image))
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise LimitError(
            name,
            f"image is larger than {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels "
            "(possible decompression bomb)",
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(name, f"the {kind} data is truncated or corrupt ({exc})") from None
    return Slice(name=name, pixels=pixels, meta={"format": kind})


def read_raster(
    path: Path, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES
) -> Slice:
    """Read and decode one image file from disk (regular files only, at most ``max_bytes``)."""
    return decode_raster(read_input_file(path, max_bytes), str(path), max_pixels=max_pixels)


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Convert any Pillow mode (grey 8/16 bit, palette, RGBA, ...) to RGB uint8."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float32)
        low, high = np.percentile(array, (0.5, 99.5))
        scale = 255.0 / (high - low) if high > low else 1.0
        grey = np.clip((array - low) * scale, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)
