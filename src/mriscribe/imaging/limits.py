"""Input limits: bytes per file and per request, images, pixels, and the decoded-data budget."""

from __future__ import annotations

from dataclasses import dataclass, field

from mriscribe.errors import LimitError


@dataclass(frozen=True)
class Limits:
    """What one request (or one CLI run) may bring. Every limit has a clear error."""

    max_file_bytes: int = 100 * 1024 * 1024
    max_request_bytes: int = 300 * 1024 * 1024
    max_images: int = 200
    max_pixels: int = 40_000_000
    # Decoded pixels in one request, all images together: bounds memory (3 bytes a pixel).
    # Spent from the request's budget by each decoder before it makes any of its slices.
    max_total_pixels: int = 50_000_000
    # Decoded image data in one request, all files together, in the files' own sample sizes:
    # NIfTI voxels, DICOM pixel data (and the inflated dataset of a deflated file), raster
    # samples. Checked from each file's header before any of it is inflated or decoded.
    max_decoded_bytes: int = 256 * 1024 * 1024

    def check_pixels(self, name: str, width: int, height: int, frames: int = 1) -> None:
        """Refuse an image (or each frame of a stack) larger than ``max_pixels``."""
        if width * height > self.max_pixels:
            raise LimitError(
                name,
                f"image is {width}x{height} pixels, more than the limit of "
                f"{self.max_pixels:,} pixels (possible decompression bomb)",
            )
        if frames > self.max_images:
            raise LimitError(
                name, f"has {frames} frames, more than the limit of {self.max_images} images"
            )
        if width * height * frames > self.max_total_pixels:
            raise LimitError(
                name,
                f"holds {width * height * frames:,} pixels, more than the limit of "
                f"{self.max_total_pixels:,} pixels a request",
            )

    def check_file_bytes(self, name: str, size: int) -> None:
        if size > self.max_file_bytes:
            raise LimitError(
                name, f"file is {size:,} bytes, more than the limit of {self.max_file_bytes:,}"
            )

    def budget(self) -> DecodeBudget:
        """A fresh decoded-data budget for one request: ``max_decoded_bytes`` of image data and
        ``max_total_pixels`` of slices."""
        return DecodeBudget(self.max_decoded_bytes, self.max_total_pixels)


@dataclass
class DecodeBudget:
    """The decoded-data budget of one request, spent file by file before each file is decoded.

    Decoders call :meth:`take` with the size a file's header declares, before inflating or
    decoding anything, so a few kilobytes that claim gigabytes are refused while still small;
    and :meth:`take_pixels` with the pixels of the slices a file yields, before any of them is
    made, so the request's slices (3 bytes a pixel) stay within ``total_pixels``.
    """

    total: int
    total_pixels: int
    spent: int = field(default=0)
    pixels_spent: int = field(default=0)

    @property
    def left(self) -> int:
        return self.total - self.spent

    @property
    def pixels_left(self) -> int:
        return self.total_pixels - self.pixels_spent

    def take(self, name: str, size: int, what: str = "decodes to") -> None:
        """Spend ``size`` bytes for ``name``, or raise LimitError (spending nothing)."""
        if size > self.left:
            left = f" ({self.left:,} left after its other files)" if self.spent else ""
            raise LimitError(
                name,
                f"{what} {size:,} bytes, more than the request's limit of {self.total:,} bytes "
                f"of decoded image data{left} (possible decompression bomb)",
            )
        self.spent += size

    def take_pixels(self, name: str, count: int) -> None:
        """Spend ``count`` slice pixels for ``name``, or raise LimitError (spending nothing)."""
        if count > self.pixels_left:
            left = (
                f" ({self.pixels_left:,} left after its other files)" if self.pixels_spent else ""
            )
            raise LimitError(
                name,
                f"yields {count:,} pixels, more than the request's limit of "
                f"{self.total_pixels:,} decoded pixels{left}",
            )
        self.pixels_spent += count
