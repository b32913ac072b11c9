"""Decoding one input file into slices, choosing the decoder by the file's content."""

from __future__ import annotations

from mriscribe.errors import InputError, UnsupportedFormatError
from mriscribe.imaging.dicom import decode_dicom
from mriscribe.imaging.limits import DecodeBudget, Limits
from mriscribe.imaging.nifti import decode_nifti
from mriscribe.imaging.raster import RASTER_FORMATS, decode_raster
from mriscribe.imaging.slices import Slice
from mriscribe.imaging.sniff import sniff

UNSUPPORTED = "unsupported file type: not a PNG, JPEG, TIFF, DICOM or NIfTI file"


def decode_file(
    data: bytes,
    name: str,
    limits: Limits,
    *,
    nifti_step: int = 0,
    nifti_max_slices: int = 24,
    budget: DecodeBudget | None = None,
) -> list[Slice]:
    """Decode any supported file into its slices; the format comes from the bytes, not the name.

    PNG, JPEG and TIFF give one slice; DICOM one per frame; NIfTI the axial slices through the
    brain that ``nifti_step`` and ``nifti_max_slices`` select. What the file decodes to is spent
    from ``budget``, the request's decoded-data budget (default: a fresh one from ``limits``),
    before it is decoded; each decoder refuses more images than ``limits.max_images``.
    """
    limits.check_file_bytes(name, len(data))
    if not data:
        raise InputError(name, "the file is empty")
    budget = limits.budget() if budget is None else budget
    kind = sniff(data)
    if kind in RASTER_FORMATS:
        return [decode_raster(data, name, max_pixels=limits.max_pixels, budget=budget)]
    if kind == "DICOM":
        return decode_dicom(data, name, limits, budget=budget)
    if kind == "NIFTI":
        return decode_nifti(
            data, name, limits, step=nifti_step, max_slices=nifti_max_slices, budget=budget
        )
    # A raw DICOM dataset without the 128-byte preamble and "DICM" has no reliable magic;
    # guessing it from the name or from the first tags would accept random bytes, so
    # such files stay unsupported.
    raise UnsupportedFormatError(name, UNSUPPORTED)
