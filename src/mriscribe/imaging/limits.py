"""Input limits: bytes per file and per request, images per request, pixels per image."""

from __future__ import annotations

from dataclasses import dataclass

from mriscribe.errors import LimitError


@dataclass(frozen=True)
class Limits:
    """What one request (or one CLI run) may bring. Every limit has a clear error."""

    max_file_bytes: int = 100 * 1024 * 1024
    max_request_bytes: int = 300 * 1024 * 1024
    max_images: int = 200
    max_pixels: int = 40_000_000
    # Decoded pixels in one request, all images together: bounds memory (3 bytes a pixel).
    max_total_pixels: int = 50_000_000

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
