"""Turning input bytes into slices of pixels the detector can read."""

from mriscribe.imaging.decode import decode_file
from mriscribe.imaging.limits import Limits
from mriscribe.imaging.raster import decode_raster, read_raster
from mriscribe.imaging.slices import Slice
from mriscribe.imaging.sniff import sniff

__all__ = ["Limits", "Slice", "decode_file", "decode_raster", "read_raster", "sniff"]
