"""Turning input bytes into slices of pixels the detector can read."""

from mriscribe.imaging.raster import Slice, decode_raster, read_raster

__all__ = ["Slice", "decode_raster", "read_raster"]
