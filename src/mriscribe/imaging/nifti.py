"""Decoding NIfTI-1/2 volumes (.nii, .nii.gz) into axial slices through the brain."""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Iterator

import nibabel as nib
import numpy as np
from nibabel.nifti1 import Nifti1Header
from nibabel.nifti2 import Nifti2Header
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

from mriscribe.errors import InputError, LimitError, library_reason
from mriscribe.imaging.geometry import SourceRef, as_matrix, decode_token, nifti_plane
from mriscribe.imaging.inflate import CHUNK, inflate
from mriscribe.imaging.limits import DecodeBudget, Limits
from mriscribe.imaging.slices import Slice
from mriscribe.imaging.window import Window, percentile_window

# Foreground: above 10% of the robust range (1st to 99th percentile) of the volume.
FOREGROUND_LEVEL = 0.10
# A slice is "through the brain" when foreground covers at least this share of it, and at least
# this share of the widest slice's coverage: the thin caps at the vertex and below the skull base
# hold scalp, neck or face, where a detector only finds false positives.
MIN_COVERAGE = 0.05
MIN_RELATIVE_COVERAGE = 0.25
# No brain volume has voxels this large; a larger value is a broken header, not a measurement.
MAX_SPACING_MM = 50.0
# The percentiles are taken over every voxel of a volume up to this size, else over a strided
# sample of at most this size (2 million voxels give the same window as all of a head's).
SAMPLE_VOXELS = 1 << 21
# Voxels converted to float at a time: whole slices where they fit.
BLOCK_VOXELS = 1 << 22
_UNIT_TO_MM = {"mm": 1.0, "meter": 1000.0, "micron": 0.001, "unknown": 1.0}
_HEADER_BYTES = 540  # NIfTI-2; NIfTI-1 needs 348
_SINGLE_FILE = (b"n+1\x00", b"n+2\x00")
_PAIR = (b"ni1\x00", b"ni2\x00")


def decode_nifti(
    data: bytes,
    name: str,
    limits: Limits,
    *,
    step: int = 0,
    max_slices: int = 24,
    budget: DecodeBudget | None = None,
) -> list[Slice]:
    """Decode a NIfTI volume into axial slices through the brain, in radiological display.

    The volume is turned to RAS+ first; each slice shows anterior at the top and the patient's
    right on the left. ``step >= 1`` keeps every ``step``-th slice through the brain; ``step == 0``
    keeps at most ``max_slices`` evenly spaced ones. One intensity window serves the whole volume.
    The first volume's voxels are spent from ``budget`` (default: a fresh one from ``limits``)
    before anything is inflated, and the chosen slices' pixels before any of them is made; the
    voxels stay in their stored type, and only a block of them at a time is turned into floats.
    """
    if step < 0 or max_slices < 1:
        raise ValueError("step must be >= 0 and max_slices >= 1")
    budget = limits.budget() if budget is None else budget
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
    affine = header.get_best_affine()
    # The turn to RAS+ as flips and a transpose of the stored axes: views, never copies.
    orientation = io_orientation(affine)
    axes = orientation[:, 0].astype(int)
    canonical_shape = [0, 0, 0]
    for axis, size in zip(axes, shape[:3], strict=True):
        canonical_shape[axis] = int(size)
    limits.check_pixels(name, canonical_shape[0], canonical_shape[1])
    voxels = math.prod(canonical_shape)
    volume_bytes = voxels * dtype.itemsize
    # Only the first volume is spent and inflated, which also keeps long 4-D series cheap.
    budget.take(name, volume_bytes, "the NIfTI volume holds")
    # Some writers leave vox_offset at 0 ("unset"); the voxels never overlap the header.
    offset = max(int(header.get_data_offset()), header.sizeof_hdr + 4)
    if gzipped:  # what comes before the voxels is inflated too: a hostile header puts it far
        budget.take(name, offset, "the NIfTI header and its extensions inflate to")
    raw: bytes | np.ndarray = _gunzip_into(data, offset + volume_bytes, name) if gzipped else data
    if len(raw) < offset + volume_bytes:
        raise InputError(
            name,
            f"the NIfTI file is truncated: the header declares {volume_bytes:,} bytes of voxels "
            f"but it holds {max(0, len(raw) - offset):,}",
        )
    stored = np.frombuffer(raw, dtype=dtype, count=voxels, offset=offset)
    stored.flags.writeable = False
    volume = apply_orientation(stored.reshape(shape[:3], order="F"), orientation)
    slope, intercept = header.get_slope_inter()
    values = _Values(volume, slope, intercept)
    chosen, window = _through_brain(values, name, step, max_slices)
    if len(chosen) > limits.max_images:
        raise LimitError(
            name,
            f"yields {len(chosen)} images, more than the limit of {limits.max_images}; "
            "choose a larger NIfTI slice step",
        )
    budget.take_pixels(name, len(chosen) * canonical_shape[0] * canonical_shape[1])

    zooms = np.sqrt(np.sum(affine[:3, :3] ** 2, axis=0)).astype(np.float32)
    canonical_zooms = [0.0, 0.0, 0.0]
    for axis, zoom in zip(axes, zooms, strict=True):
        canonical_zooms[axis] = float(zoom)
    spacing = _spacing(canonical_zooms, header.get_xyzt_units()[0])
    meta = {
        "format": "NIfTI",
        "orientation": "".join(nib.aff2axcodes(affine)),
        "slices": str(volume.shape[2]),
    }
    if len(shape) >= 4 and shape[3] > 1:
        meta["volume"] = f"1 of {shape[3]}"
    # Canonical (RAS+) voxel index -> stored voxel index, and the canonical volume's affine in
    # millimetres (the header may state metres or microns).
    to_stored = inv_ornt_aff(orientation, shape[:3])
    factor = _UNIT_TO_MM.get(header.get_xyzt_units()[0])
    canonical_affine = np.diag([factor or 1.0] * 3 + [1.0]) @ affine @ to_stored
    oriented = _oriented(header, affine)
    key = ("nifti", name, decode_token())
    slices = []
    for k in chosen:
        source = SourceRef(format="NIfTI", series_key=key, index=k)
        if spacing and factor is not None:
            try:
                plane, to_canonical = nifti_plane(canonical_affine, volume.shape[:3], k, oriented)
            except ValueError:  # a degenerate affine: slices without geometry
                pass
            else:
                source = SourceRef(
                    format="NIfTI",
                    series_key=key,
                    plane=plane,
                    index=k,
                    affine=as_matrix(affine),
                    display_to_voxel=as_matrix(to_stored @ to_canonical),
                )
        slices.append(
            Slice(
                name=f"{name} [slice {k}]",
                pixels=values.display(k, window),
                meta={**meta, "slice_index": str(k)},
                spacing_mm=spacing,
                spacing_source="NIfTI header (pixdim)" if spacing else "",
                source=source,
            )
        )
    return slices


def _oriented(header: Nifti1Header | Nifti2Header, affine: np.ndarray) -> bool:
    """Whether the header says which way the patient lies: a qform or sform is set, and it is
    not the bare identity that tools write when they know nothing of the orientation."""
    codes = (int(header["qform_code"]), int(header["sform_code"]))
    return any(code > 0 for code in codes) and not np.allclose(affine, np.eye(4))


def display_plane(volume: np.ndarray, k: int) -> np.ndarray:
    """Axial slice ``k`` of a RAS+ volume as shown: anterior at the top, the patient's right on
    the left (radiological convention)."""
    return volume[:, :, k].T[::-1, ::-1]


class _Values:
    """A RAS+ volume of stored values, read as real values (float32) one block at a time:
    scaled by the header's slope and intercept, non-finite values replaced by the lowest finite
    one (:meth:`scan` finds it)."""

    def __init__(self, volume: np.ndarray, slope: float | None, intercept: float | None) -> None:
        self.volume = volume
        self.slope = slope
        self.intercept = intercept
        self.fill: np.float32 | None = None

    def real(self, stored: np.ndarray) -> np.ndarray:
        """A block of stored values (a view into the volume) as real values, a new float32 array."""
        block = stored.astype(np.float32)
        if self.slope is not None:
            block *= self.slope
        if self.intercept is not None:
            block += self.intercept
        if self.fill is not None:
            block[~np.isfinite(block)] = self.fill
        return block

    def scan(self, name: str) -> None:
        """Find the lowest finite value, to stand in for the non-finite ones (if there are any)."""
        lowest, complete = None, True
        for index in _blocks(self.volume.shape):
            block = self.real(self.volume[index])
            finite = np.isfinite(block)
            if finite.all():
                low = block.min()
            elif finite.any():
                complete, low = False, block[finite].min()
            else:
                complete = False
                continue
            lowest = low if lowest is None else min(lowest, low)
        if lowest is None:
            raise InputError(name, "the NIfTI volume is empty (no finite voxel values)")
        if not complete:
            self.fill = lowest

    def sample(self) -> np.ndarray:
        """Every voxel of a small volume, else a strided sample of at most SAMPLE_VOXELS."""
        shape = self.volume.shape
        stride = max(1, int((math.prod(shape) / SAMPLE_VOXELS) ** (1 / 3)))
        while math.prod(math.ceil(size / stride) for size in shape) > SAMPLE_VOXELS:
            stride += 1
        strided = self.volume[::stride, ::stride, ::stride]
        sample = np.empty(strided.shape, dtype=np.float32)
        for index in _blocks(strided.shape):
            sample[index] = self.real(strided[index])
        return sample.ravel()

    def coverage(self, threshold: float) -> np.ndarray:
        """The share of each axial slice above ``threshold``."""
        nx, ny, nz = self.volume.shape
        counts = np.zeros(nz, dtype=np.int64)
        for index in _blocks(self.volume.shape):
            above = self.real(self.volume[index]) > threshold
            counts[index[2]] += np.count_nonzero(above, axis=(0, 1))
        return counts / (nx * ny)

    def display(self, k: int, window: Window) -> np.ndarray:
        """Axial slice ``k`` as shown (see display_plane), windowed to RGB uint8."""
        plane = self.volume[:, :, k : k + 1]
        grey = np.empty(plane.shape, dtype=np.uint8)
        for index in _blocks(plane.shape):
            grey[index] = window.grey(self.real(plane[index]))
        return np.repeat(display_plane(grey, 0)[:, :, None], 3, axis=2)


def _blocks(shape: tuple[int, ...]) -> Iterator[tuple[slice, slice, slice]]:
    """Indices covering a 3-D array in blocks of at most BLOCK_VOXELS: runs of whole slices
    where a slice fits, else runs of rows, else pieces of a row."""
    nx, ny, nz = shape
    bx = min(nx, BLOCK_VOXELS)
    by = min(ny, max(1, BLOCK_VOXELS // bx))
    bz = min(nz, max(1, BLOCK_VOXELS // (bx * by)))
    for k in range(0, nz, bz):
        for j in range(0, ny, by):
            for i in range(0, nx, bx):
                yield slice(i, i + bx), slice(j, j + by), slice(k, k + bz)


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
        raise InputError(name, f"the NIfTI header is invalid ({library_reason(exc)})") from None


def _gunzip(data: bytes, size: int, name: str) -> bytes:
    """At most the first ``size`` inflated bytes: never more, whatever the stream holds."""
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(memoryview(data)[:CHUNK], size)
    except zlib.error as exc:
        raise InputError(name, f"the gzip data is corrupt ({library_reason(exc)})") from None


def _gunzip_into(data: bytes, size: int, name: str) -> np.ndarray:
    """At most the first ``size`` inflated bytes, inflated piece by piece into one buffer (so the
    inflated data are held once, never as pieces and a joined copy)."""
    buffer = np.empty(size, dtype=np.uint8)
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    filled = 0
    try:
        for piece in inflate(inflater, [memoryview(data)], size):
            buffer[filled : filled + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
            filled += len(piece)
    except zlib.error as exc:
        raise InputError(name, f"the gzip data is corrupt ({library_reason(exc)})") from None
    return buffer[:filled]


def _through_brain(
    values: _Values, name: str, step: int, max_slices: int
) -> tuple[list[int], Window]:
    """The axial slice indices to show and one intensity window for all of them: the percentile
    window of the sampled foreground."""
    values.scan(name)
    sample = values.sample()
    # In place: the sample is reordered, not changed, and the percentiles need no copy of it.
    low, high = np.percentile(sample, (1, 99), overwrite_input=True)
    if high <= low:
        raise InputError(name, "no brain found: the NIfTI volume is (nearly) uniform")
    threshold = low + FOREGROUND_LEVEL * (high - low)
    coverage = values.coverage(threshold)
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
    # The sample holds foreground: at least 1% of it lies at or above the 99th percentile.
    return [int(k) for k in chosen], percentile_window(sample[sample > threshold])


def _spacing(zooms: list[float], unit: str) -> tuple[float, float] | None:
    """(row, column) spacing in mm of the displayed slice, or None if the header's is unusable."""
    factor = _UNIT_TO_MM.get(unit)
    if factor is None:
        return None
    row, column = zooms[1] * factor, zooms[0] * factor
    if all(math.isfinite(v) and 0 < v <= MAX_SPACING_MM for v in (row, column)):
        return row, column
    return None
