"""A pydicom decoder plugin on imagecodecs (BSD) for 12-bit JPEG Extended DICOM.

GDCM's wheel and Pillow refuse 12-bit JPEG, and the one pydicom plugin that reads it
(pylibjpeg-libjpeg) is GPL-3.0; imagecodecs' libjpeg-turbo decodes it under a permissive licence.
Registered by mriscribe.imaging.dicom; follows pydicom's decoder plugin contract.
"""

from __future__ import annotations

import importlib.util

from pydicom import uid
from pydicom.pixels.decoders.base import DecodeRunner

DECODER_DEPENDENCIES = {uid.JPEGExtended12Bit: ("numpy", "imagecodecs")}


def is_available(uid_: str) -> bool:
    """True when imagecodecs is installed (it is part of the 'dicom' extra)."""
    return uid_ in DECODER_DEPENDENCIES and importlib.util.find_spec("imagecodecs") is not None


def _decode_frame(src: bytes, runner: DecodeRunner) -> bytearray:
    """One frame's pixels as bytes, in the layout pydicom expects (native byte order)."""
    import imagecodecs

    pixels = imagecodecs.jpeg8_decode(src)
    runner.set_option("bits_allocated", 8 if pixels.itemsize == 1 else 16)
    if pixels.ndim == 3:
        runner.set_option("planar_configuration", 0)
    return bytearray(pixels.tobytes())
