"""Decoding NIfTI-1/2 volumes (.nii, .nii.gz) into axial slices through the brain."""

from __future__ import annotations

import io
import math
import zlib

import nibabel as nib
import numpy as np
from nibabel.nifti1 import Nifti1Header
from nibabel.nifti2 import Nifti2Header

from mriscribe.errors import InputError, LimitError
from mriscribe.imaging.limits import Limits
from mriscribe.imaging.slices import Slice

# The first volume may hold at most this many times the file size limit in voxel bytes, so a
# few kilobytes of gzip cannot claim gigabytes (checked from the header before inflating).
MAX_INFLATION = 4
PERCENTILES = (0.5, 99.5)
# Foreground: above 10% of the robust range (1st to 99th percentile) of the volume.
FOREGROUND_LEVEL = 0.10
# A slice is "through the brain" when foreground covers at least this share of it, and at least
# this share of the widest slice's coverage: the thin caps at the vertex and below the skull base
# hold scalp, neck or face, where a detector only finds false positives.
MIN_COVERAGE = 0.05
MIN_RELATIVE_COVERAGE = 0.25
# No brain volume has voxels this large; a larger value is a broken header, not a measurement.
MAX_SPACING_MM = 50.0
_UNIT_TO_MM = {"mm": 1.0, "meter": 1000.0, "micron": 0.001, "unknown": 1.0}
_HEADER_BYTES = 540  # NIfTI-2; NIfTI-1 needs 348
_SINGLE_FILE = (b"n+1\x00", b"n+2\x00")
_PAIR = (b"ni1\x00", b"ni2\x00")


def decode_nifti(
    data: bytes, name: str, limits: Limits, *, step: int = 0, max_slices: int = 24
) -> list[Slice]:
    """Decode a NIfTI volume into axial slices through the brain, in radiological display.

    The volume is turned to RAS+ first; each slice shows anterior at the top and the patient's
    right on the left. ``step >= 1`` keeps every ``step``-th slice through the brain; ``step == 0``
    keeps at most ``max_slices`` evenly spaced ones. One intensity window serves the whole volume.
    """
    if step < 0 or max_slices < 1:
        raise ValueError("step must be >= 0 and max_slices >= 1")
    gzipped = data[:2] == b"\x1f\x8b"
    header = _header(_gunzip(data, _HEADER_BYTES, name) if gzipped else data, name)
    shape = header.get_data_shape()
    if len(shape) < 3 or any(size > 1 for size in shape[4:]):
        raise InputError(
            name, f"the NIfTI image is {len(shape)}-D; only 3-D or 4-D volumes can be read"
        )
    if min(shape) < 1:
        raise InputError(name, f"the NIfTI image has an empty dimension {shape}")
    dtype = header.get_data_dtype()
    if dtype.kind not in "iuf":
        raise InputError(name, f"unsupported NIfTI datatype {dtype} (only real numbers)")
    voxels = math.prod(shape[:3])
    # Some writers leave vox_offset at 0 ("unset"); the voxels never overlap the header.
    offset = max(int(header.get_data_offset()), header.sizeof_hdr + 4)
    volume_bytes = voxels * dtype.itemsize
    cap = MAX_INFLATION * limits.max_file_bytes
    if gzipped and volume_bytes > cap:
        raise LimitError(
            name,
            f"the NIfTI volume holds {volume_bytes:,} bytes of voxels, more than the limit of "
            f"{cap:,} (possible decompression bomb)",
        )
    # Only the first volume is inflated, which also keeps long 4-D series cheap.
    raw = _gunzip(data, offset + volume_bytes, name) if gzipped else data
    if len(raw) < offset + volume_bytes:
        raise InputError(
            name,
            f"the NIfTI file is truncated: the header declares {volume_bytes:,} bytes of voxels "
            f"but it holds {max(0, len(raw) - offset):,}",
        )
    stored = np.frombuffer(raw, dtype=dtype, count=voxels, offset=offset)
    volume = stored.reshape(shape[:3], order="F").astype(np.float32)
    slope, intercept = header.get_slope_inter()
    if slope is not None:
        volume *= slope
    if intercept is not None:
        volume += intercept

    affine = header.get_best_affine()
    canonical = nib.as_closest_canonical(nib.Nifti1Image(volume, affine))
    volume = np.asarray(canonical.dataobj, dtype=np.float32)
    limits.check_pixels(name, volume.shape[0], volume.shape[1])
    chosen, window = _through_brain(volume, name, step, max_slices)

    spacing = _spacing(canonical.header.get_zooms()[:3], header.get_xyzt_units()[0])
    meta = {
        "format": "NIfTI",
        "orientation": "".join(nib.aff2axcodes(affine)),
        "slices": str(volume.shape[2]),
    }
    if len(shape) >= 4 and shape[3] > 1:
        meta["volume"] = f"1 of {shape[3]}"
    low, high = window
    scale = 255.0 / (high - low) if high > low else 0.0
    slices = []
    for k in chosen:
        plane = display_plane(volume, k)
        grey = np.rint(np.clip((plane - low) * scale, 0, 255)).astype(np.uint8)
        slices.append(
            Slice(
                name=f"{name} [slice {k}]",
                pixels=np.repeat(grey[:, :, None], 3, axis=2),
                meta={**meta, "slice_index": str(k)},
                spacing_mm=spacing,
                spacing_source="NIfTI header (pixdim)" if spacing else "",
            )
        )
    return slices


def display_plane(volume: np.ndarray, k: int) -> np.ndarray:
    """Axial slice ``k`` of a RAS+ volume as shown: anterior at the top, the patient's right on
    the left (radiological convention)."""
    return volume[:, :, k].T[::-1, ::-1]


def _header(head: bytes, name: str) -> Nifti1Header | Nifti2Header:
    if head[344:348] in _PAIR or head[4:8] in _PAIR:
        raise InputError(
            name, "is a NIfTI .hdr header without its .img data; save it as a single .nii file"
        )
    if head[344:348] == _SINGLE_FILE[0]:
        header_class: type[Nifti1Header] = Nifti1Header
    elif head[4:8] == _SINGLE_FILE[1]:
        header_class = Nifti2Header
    else:
        raise InputError(name, "the NIfTI header is truncated or corrupt")
    try:
        return header_class.from_fileobj(io.BytesIO(head[: header_class.sizeof_hdr]))
    except Exception as exc:  # nibabel raises several types for inconsistent headers
        raise InputError(name, f"the NIfTI header is invalid ({exc})") from None


def _gunzip(data: bytes, size: int, name: str) -> bytes:
    """At most the first ``size`` inflated bytes: never more, whatever the stream holds."""
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, size)
    except zlib.error as exc:
        raise InputError(name, f"the gzip data is corrupt ({exc})") from None


def _through_brain(
    volume: np.ndarray, name: str, step: int, max_slices: int
) -> tuple[list[int], tuple[float, float]]:
    """The axial slice indices to show and one (low, high) intensity window for all of them."""
    finite = np.isfinite(volume)
    if not finite.any():
        raise InputError(name, "the NIfTI volume is empty (no finite voxel values)")
    if not finite.all():
        volume[~finite] = volume[finite].min()
    low, high = np.percentile(volume, (1, 99))
    if high <= low:
        raise InputError(name, "no brain found: the NIfTI volume is (nearly) uniform")
    foreground = volume > low + FOREGROUND_LEVEL * (high - low)
    coverage = foreground.mean(axis=(0, 1))
    inside = np.flatnonzero(
        (coverage >= MIN_COVERAGE) & (coverage >= MIN_RELATIVE_COVERAGE * coverage.max())
    )
    if inside.size == 0:
        raise InputError(
            name, f"no brain found: no axial slice has tissue over {MIN_COVERAGE:.0%} of its area"
        )
    if step >= 1:
        chosen = inside[::step]
    elif inside.size <= max_slices:
        chosen = inside
    else:
        chosen = inside[np.unique(np.linspace(0, inside.size - 1, max_slices).round().astype(int))]
    window_low, window_high = np.percentile(volume[foreground], PERCENTILES)
    return [int(k) for k in chosen], (float(window_low), float(window_high))


def _spacing(zooms: tuple[float, ...], unit: str) -> tuple[float, float] | None:
    """(row, column) spacing in mm of the displayed slice, or None if the header's is unusable."""
    factor = _UNIT_TO_MM.get(unit)
    if factor is None:
        return None
    row, column = float(zooms[1]) * factor, float(zooms[0]) * factor
    if all(math.isfinite(v) and 0 < v <= MAX_SPACING_MM for v in (row, column)):
        return row, column
    return None
