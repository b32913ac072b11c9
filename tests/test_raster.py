"""Decoding PNG/JPEG bytes into slices, and every kind of bad image file."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import encode
from mriscribe.errors import InputError, LimitError
from mriscribe.imaging import decode_raster, raster, read_raster

GRADIENT = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("L", "PNG"),
        ("RGB", "PNG"),
        ("RGBA", "PNG"),
        ("P", "PNG"),
        ("I;16", "PNG"),
        ("L", "JPEG"),
        ("RGB", "JPEG"),
        ("L", "TIFF"),
        ("RGB", "TIFF"),
        ("RGBA", "TIFF"),
        ("P", "TIFF"),
        ("I;16", "TIFF"),
    ],
)
def test_decodes_common_modes_to_rgb(mode, fmt):
    grey = Image.fromarray(GRADIENT)
    if mode == "I;16":
        image = Image.fromarray(GRADIENT.astype(np.uint16) * 257)
    else:
        image = grey.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    decoded = decode_raster(buffer.getvalue(), f"scan.{fmt.lower()}")
    assert decoded.pixels.shape == (48, 64, 3)
    assert decoded.pixels.dtype == np.uint8
    # The gradient survives: left dark, right bright, in every mode.
    assert decoded.pixels[:, :4].mean() < 40 and decoded.pixels[:, -4:].mean() > 200
    assert decoded.meta["format"] == fmt


@pytest.mark.parametrize("mode", ["RGB", "P", "I;16"])
def test_blocks_of_rows_give_the_same_image(monkeypatch, mode):
    rng = np.random.default_rng(0)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 4000, (48, 64), dtype=np.uint16))
    else:
        image = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).convert(mode)
    data = encode(np.asarray(image)) if mode != "P" else _saved(image, "PNG")
    whole = decode_raster(data, "a.png").pixels
    monkeypatch.setattr(raster, "_BLOCK_PIXELS", 100)  # blocks of one row
    np.testing.assert_array_equal(decode_raster(data, "a.png").pixels, whole)


def _saved(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_format_is_sniffed_from_content_not_name():
    data = encode(GRADIENT, "JPEG")
    assert decode_raster(data, "misnamed.png").meta["format"] == "JPEG"


def test_empty_file_names_the_file():
    with pytest.raises(InputError, match=r"empty\.png: the file is empty"):
        decode_raster(b"", "empty.png")


def test_non_image_names_the_file():
    with pytest.raises(InputError, match=r"notes\.png: not a PNG, JPEG or TIFF"):
        decode_raster(b"patient notes, not pixels", "notes.png")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_names_the_file(fmt):
    data = encode(np.random.default_rng(0).integers(0, 255, (128, 128), dtype=np.uint8), fmt)
    with pytest.raises(InputError, match=r"cut\.img: the .* data is truncated or corrupt"):
        decode_raster(data[: len(data) // 2], "cut.img")


def _png_claiming_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header claims width x height pixels (a decompression bomb)."""
    data = bytearray(encode(np.zeros((1, 1), dtype=np.uint8)))
    ihdr = bytearray(data[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


@pytest.mark.parametrize("side", [10_000, 100_000])
def test_decompression_bomb_is_refused_before_decoding(side):
    # 10,000^2 passes Pillow's own guard and meets ours; 100,000^2 meets Pillow's.
    with pytest.raises(LimitError, match=r"bomb\.png: image is .*\(possible decompression bomb\)"):
        decode_raster(_png_claiming_size(side, side), "bomb.png")


def test_pixel_limit_is_configurable():
    data = encode(GRADIENT)
    with pytest.raises(LimitError):
        decode_raster(data, "small.png", max_pixels=1000)
    assert decode_raster(data, "small.png", max_pixels=48 * 64).width == 64


def test_read_raster_missing_and_folder(tmp_path: Path):
    with pytest.raises(InputError, match="no such file"):
        read_raster(tmp_path / "absent.png")
    with pytest.raises(InputError, match="is a folder"):
        read_raster(tmp_path)
