"""The patient side of a lesion: left or right of the head's own midline, or nothing.

A wrong side is the worst error a report can make, so a side is given only where the patient
orientation is known (a slice's :class:`Plane`), the head's mid-sagittal line is found on the
slice itself (never assumed at the image centre: heads are shifted and turned in the field of
view) and the lesion's centre lies clearly off it. Whenever the midline cannot be trusted the
answer is nothing, never a guess.

The midline is the head's axis of mirror symmetry. The slice is shrunk to about 2 mm pixels
(square, whatever the pixel spacing), the head is found (a threshold at a fraction of the robust
intensity range, its largest connected part, holes filled), and the tilt is the angle at which
the head's edges (gradient magnitude: the scalp and skull outline dominate, a tumour adds only
its own rim) best match their mirror image. At that tilt each 10 mm band of rows across the
head's central part gives its own mirror centre; a robust (Theil-Sen) line through them is the
midline. It is refused when the head is missing, too small, cut by the left or right image edge
along the rows measured, or measured over less than 40 mm; when the line is tilted more than 20
degrees; and when the band centres do not agree on one straight axis: scattered more than 3 mm
about their line, or their line turned more than 3 degrees from the tilt the whole head mirrors
best at. Those last two catch what symmetry cannot explain, such as a tumour pushing the head's
outline out through the skull, each where the other does not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mriscribe.imaging.geometry import Plane
from mriscribe.report.facts import Side

# The midline is measured on the slice shrunk to pixels of about this size (mm), and at most
# this many pixels a side: enough for sub-millimetre line fits, and a few milliseconds a slice.
WORK_PIXEL_MM = 2.0
MAX_WORK_SIDE = 256
# Head: smoothed intensity above this share of the 1st-99th percentile range.
FOREGROUND_LEVEL = 0.12
# Heads narrower than this (mm) are the vertex cap or a stray structure: no midline.
MIN_HEAD_WIDTH_MM = 50.0
# The rows measured are the central share of the head's height (the frontal and occipital poles,
# where the outline runs nearly along the rows, are left out), and must span at least this (mm).
CENTRAL_SHARE = 0.7
MIN_SPAN_MM = 40.0
# Rows are measured in bands of this height (mm); at least this many bands must give a centre.
BAND_MM = 10.0
MIN_BANDS = 4
# The mirror centre is searched within this share of the head's width either side of its
# centroid, and the tilt over +-ANGLE_RANGE_DEG (beyond the limit, so that a head turned further
# is seen as such and refused rather than fitted at the edge of the search).
SEARCH_SHARE = 0.2
ANGLE_RANGE_DEG = 24.0
ANGLE_STEP_DEG = 4.0
# Refusals: a line tilted more than this from the displayed columns; a line through the band
# centres that turns more than MAX_BEND_DEG from the angle the whole head mirrors best at (the
# halves do not agree on one axis: an outline pushed out by a tumour, a head rolled about its
# front-back axis); or band centres scattered more than this about their line (1.4826 x the
# median absolute residual).
MAX_TILT_DEG = 20.0
MAX_BEND_DEG = 3.0
MAX_SCATTER_MM = 3.0
# A displayed axis is the patient's left-right axis when its direction's LPS x component is at
# least this (cos 37 degrees): axial and coronal slices, even obliqued; never sagittal ones.
LR_AXIS_MIN = 0.8
# A lesion's slices disagree when one of them puts its centre this far on the other side.
OPPOSITE_TOLERANCE_MM = 3.0
# A box whose far edge lies more than this across the midline is in both halves of the head.
CROSSING_MM = 5.0


@dataclass(frozen=True)
class Midline:
    """The head's mid-sagittal line on a displayed slice, in displayed pixel coordinates.

    The midline's column at a row is ``intercept + slope * row`` (rows and columns as
    :meth:`Plane.point` takes them). ``rows`` is the first and last displayed row it was
    measured over; ``scatter_mm`` the robust spread (1.4826 x median absolute residual) of the
    per-band mirror centres about the line, the estimate's quality (at most MAX_SCATTER_MM).
    """

    intercept: float
    slope: float
    rows: tuple[float, float]
    scatter_mm: float

    def column_at(self, row: float) -> float:
        """The midline's column on displayed row ``row``."""
        return self.intercept + self.slope * row

    @property
    def tilt_deg(self) -> float:
        """The line's angle from the displayed columns, in pixel units (degrees)."""
        return math.degrees(math.atan(self.slope))


@dataclass(frozen=True)
class SideReading:
    """A lesion's side as read on one slice: ``offset_mm`` is the patient left-right distance
    (mm) from the midline to the lesion's centre, positive to the patient's left, or None
    without a midline; ``side`` is left/right when that distance reaches the threshold,
    "midline" when it does not and the box straddles the midline, else None. ``crosses``: the
    box reaches more than CROSSING_MM across the midline (its far edge on the other side), so
    the lesion lies in both halves and is never given one side."""

    offset_mm: float | None
    side: Side | None
    crosses: bool = False


@dataclass(frozen=True)
class _Grid:
    """The slice shrunk to square working pixels of ``pixel_mm``; a working pixel (y, x) lies
    at displayed (row, column) = (row_scale * y + row_shift, column_scale * x + column_shift)."""

    image: np.ndarray
    pixel_mm: float
    row_scale: float
    row_shift: float
    column_scale: float
    column_shift: float


def estimate_midline(pixels: np.ndarray, spacing_mm: tuple[float, float]) -> Midline | None:
    """The head's mid-sagittal line on one slice whose patient left-right axis runs along the
    displayed rows, or None when it cannot be trusted (see the module's docstring).

    ``pixels`` is (H, W) or (H, W, channels) as displayed; ``spacing_mm`` is (between rows,
    between columns) in millimetres.
    """
    grid = _shrink(pixels, spacing_mm)
    if grid is None:
        return None
    smooth = ndimage.gaussian_filter(grid.image, 1.0)
    found = _head(smooth)
    if found is None:
        return None
    head, component = found
    pixel = grid.pixel_mm
    ys, xs = np.nonzero(head)
    if (np.ptp(xs) + 1) * pixel < MIN_HEAD_WIDTH_MM:
        return None
    cy, cx = float(ys.mean()), float(xs.mean())
    radius = math.ceil(math.sqrt(float(((ys - cy) ** 2 + (xs - cx) ** 2).max()))) + 2
    window = SEARCH_SHARE * (np.ptp(xs) + 1)
    edges = np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1))
    edges *= ndimage.binary_dilation(head, iterations=2)
    theta = _tilt(edges, cy, cx, radius, window)

    # The rotated frame: the candidate midline is the column `radius` through the centroid.
    head_rows = math.cos(theta) * (ys - cy) + math.sin(theta) * (xs - cx) + radius
    top, bottom = float(head_rows.min()), float(head_rows.max())
    margin = 0.5 * (1.0 - CENTRAL_SHARE) * (bottom - top)
    first, last = math.ceil(top + margin), math.floor(bottom - margin)
    if (last - first) * pixel < MIN_SPAN_MM:
        return None
    # The head must not be cut by the left or right image edge along the rows measured.
    for column in (0, component.shape[1] - 1):
        edge_rows = np.flatnonzero(component[:, column])
        turned_rows = math.cos(theta) * (edge_rows - cy) + math.sin(theta) * (column - cx)
        turned_rows += radius
        if np.any((turned_rows >= first) & (turned_rows <= last)):
            return None
    turned = _rotate(edges, theta, cy, cx, radius)
    band = max(2, round(BAND_MM / pixel))
    centres_y: list[float] = []
    centres_x: list[float] = []
    spectra = _mirror_spectra(turned)
    for start in range(first, last + 1 - band // 2, band):
        stop = min(start + band, last + 1)
        centre = _mirror_centre(spectra[start:stop], radius, window)
        if centre is not None:
            centres_y.append(0.5 * (start + stop - 1))
            centres_x.append(centre)
    if len(centres_y) < MIN_BANDS:
        return None
    band_y, band_x = np.asarray(centres_y), np.asarray(centres_x)
    slope, intercept = _theil_sen(band_y, band_x)
    residuals = band_x - (intercept + slope * band_y)
    scatter = 1.4826 * float(np.median(np.abs(residuals))) * pixel
    tilt = theta + math.atan(slope)
    if (
        scatter > MAX_SCATTER_MM
        or abs(math.degrees(tilt)) > MAX_TILT_DEG
        or abs(math.degrees(math.atan(slope))) > MAX_BEND_DEG
    ):
        return None
    return _to_display(grid, theta, cy, cx, radius, intercept, slope, (first, last), scatter)


def side_on_slice(
    pixels: np.ndarray,
    plane: Plane,
    box: tuple[float, float, float, float],
    threshold_mm: float = 10.0,
    midlines: dict[tuple[int, bool], Midline | None] | None = None,
) -> SideReading:
    """The patient side of a lesion's centre on one slice.

    ``midlines`` (optional) keeps each slice's midline between calls, keyed by the pixels'
    identity: a slice with several detections is measured once. The caller owns it and keeps
    the slices alive while it lives.

    ``box`` is (x1, y1, x2, y2) in displayed pixel coordinates (x along a row, the column), as
    :meth:`Plane.point` takes them. The plane says which displayed axis is the patient's
    left-right one: along the rows (axial, coronal), down the columns (the slice is transposed
    for the estimate) or neither (sagittal: no side). The offset is the patient x (LPS: + is the
    patient's left) of the vector from the midline, on the lesion centre's row, to the centre,
    so a mirrored display (a flipped row direction) flips it with the image. left/right needs
    ``|offset| >= threshold_mm``; "midline" needs less and a box whose two edges across the
    left-right axis lie on opposite sides of the midline; anything else, or no trusted midline,
    is no side.
    """
    if not plane.oriented:  # the file places the slice but does not say which way is left
        return SideReading(None, None)
    across, down = np.asarray(plane.row_direction), np.asarray(plane.column_direction)
    x1, y1, x2, y2 = (float(v) for v in box)
    if abs(across[0]) >= LR_AXIS_MIN:
        transposed = False
        image, spacing = pixels, plane.spacing
        lo, hi, centre_row = min(x1, x2), max(x1, x2), 0.5 * (y1 + y2)
    elif abs(down[0]) >= LR_AXIS_MIN:
        transposed = True
        image, spacing = np.swapaxes(pixels, 0, 1), (plane.spacing[1], plane.spacing[0])
        lo, hi, centre_row = min(y1, y2), max(y1, y2), 0.5 * (x1 + x2)
    else:
        return SideReading(None, None)
    key = (id(pixels), transposed)
    if midlines is not None and key in midlines:
        midline = midlines[key]
    else:
        midline = estimate_midline(image, spacing)
        if midlines is not None:
            midlines[key] = midline
    if midline is None:
        return SideReading(None, None)
    # In the (possibly transposed) frame: the lesion's centre, and the midline on its row.
    centre_across = 0.5 * (lo + hi)
    on_line = midline.column_at(centre_row)
    if transposed:
        centre, foot = plane.point(centre_across, centre_row), plane.point(on_line, centre_row)
    else:
        centre, foot = plane.point(centre_row, centre_across), plane.point(centre_row, on_line)
    offset = float(centre[0] - foot[0])
    if transposed:
        edges = [plane.point(edge, centre_row)[0] - foot[0] for edge in (lo, hi)]
    else:
        edges = [plane.point(centre_row, edge)[0] - foot[0] for edge in (lo, hi)]
    # The box lies in both halves: each of its edges more than CROSSING_MM into its half.
    crosses = bool(min(edges) < -CROSSING_MM and max(edges) > CROSSING_MM)
    if crosses:
        return SideReading(offset, "midline" if abs(offset) < threshold_mm else None, True)
    if abs(offset) >= threshold_mm:
        return SideReading(offset, "left" if offset > 0 else "right")
    if lo < on_line < hi:
        return SideReading(offset, "midline")
    return SideReading(offset, None)


def lesion_side(readings: Sequence[SideReading], threshold_mm: float = 10.0) -> Side | None:
    """One side for a lesion seen on several slices, or None when in doubt.

    Only readings with an offset count. left/right: no slice puts the centre more than
    OPPOSITE_TOLERANCE_MM (3 mm) on the other side, and the median offset is at least
    ``threshold_mm`` from the midline, on that side. "midline": the median |offset| is below
    the threshold and more than half of the readings with an offset say "midline". Otherwise
    (readings that disagree, a box reaching across the midline on any slice read while its
    centre is off it, a lesion near but not across the midline, no offsets): None.
    """
    offsets = np.asarray([r.offset_mm for r in readings if r.offset_mm is not None], dtype=float)
    if offsets.size == 0 or not np.all(np.isfinite(offsets)):
        return None
    median = float(np.median(offsets))
    crossing = any(r.crosses for r in readings)
    if abs(median) >= threshold_mm:
        if crossing:  # in both halves of the head on some slice: no one side
            return None
        sign = 1.0 if median > 0 else -1.0
        if np.any(sign * offsets < -OPPOSITE_TOLERANCE_MM):
            return None
        return "left" if sign > 0 else "right"
    if float(np.median(np.abs(offsets))) < threshold_mm:
        votes = sum(1 for r in readings if r.offset_mm is not None and r.side == "midline")
        if 2 * votes > offsets.size:
            return "midline"
    return None


def _shrink(pixels: np.ndarray, spacing_mm: tuple[float, float]) -> _Grid | None:
    """The slice as grey levels (the mean of its channels) on square pixels of about
    WORK_PIXEL_MM: block means (edges repeated to fill the last blocks), then a linear resample
    where the blocks are not square."""
    image = np.asarray(pixels)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or min(image.shape[:2]) < 8 or image.shape[2] < 1:
        return None
    row_mm, column_mm = (float(v) for v in spacing_mm)
    if not all(math.isfinite(v) and v > 0 for v in (row_mm, column_mm)):
        return None
    height, width, channels = image.shape
    fr = max(1, round(WORK_PIXEL_MM / row_mm), math.ceil(height / MAX_WORK_SIDE))
    fc = max(1, round(WORK_PIXEL_MM / column_mm), math.ceil(width / MAX_WORK_SIDE))
    rows, columns = -(-height // fr), -(-width // fc)
    if (rows * fr, columns * fc) != (height, width):
        image = np.pad(image, ((0, rows * fr - height), (0, columns * fc - width), (0, 0)), "edge")
    # Sums of strided views: far faster than a reduction over small interleaved axes.
    down = image[0::fr].astype(np.float32)
    for offset in range(1, fr):
        down += image[offset::fr]
    across = down[:, 0::fc].copy()
    for offset in range(1, fc):
        across += down[:, offset::fc]
    blocks = across[:, :, 0].copy()
    for channel in range(1, channels):
        blocks += across[:, :, channel]
    blocks /= fr * fc * channels
    block_row, block_column = row_mm * fr, column_mm * fc
    grid = _Grid(blocks, block_row, fr, (fr - 1) / 2, fc, (fc - 1) / 2)
    if abs(block_row / block_column - 1.0) <= 0.02:
        return grid
    size = min(block_row, block_column)
    step_row, step_column = size / block_row, size / block_column
    ny, nx = int(rows / step_row), int(columns / step_column)
    coordinates = np.meshgrid(np.arange(ny) * step_row, np.arange(nx) * step_column, indexing="ij")
    square = ndimage.map_coordinates(blocks, coordinates, order=1, mode="nearest")
    return _Grid(square, size, fr * step_row, grid.row_shift, fc * step_column, grid.column_shift)


def _head(smooth: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The head (largest bright connected part, closed and holes filled) and that part as
    thresholded (which keeps its contact with the image edges), or None without one."""
    low, high = np.percentile(smooth, (1.0, 99.0))
    if not high - low > 1e-6 * max(1.0, abs(float(high))):
        return None
    foreground = ndimage.binary_opening(smooth > low + FOREGROUND_LEVEL * (high - low))
    labels, count = ndimage.label(foreground)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    component = labels == int(sizes.argmax())
    pad = 3
    closed = ndimage.binary_closing(np.pad(component, pad), iterations=2)[pad:-pad, pad:-pad]
    return ndimage.binary_fill_holes(closed | component), component


def _rotate(image: np.ndarray, theta: float, cy: float, cx: float, radius: int) -> np.ndarray:
    """``image`` turned by ``theta`` about (cy, cx) onto a (2 radius + 1)-square canvas whose
    centre is (cy, cx): a line through (cy, cx) at ``theta`` from the columns (its column
    growing with the row when theta > 0) becomes the canvas's middle column."""
    c, s = math.cos(theta), math.sin(theta)
    matrix = np.array([[c, -s], [s, c]])
    centre = np.array([cy, cx])
    offset = centre - matrix @ np.array([radius, radius], dtype=float)
    size = 2 * radius + 1
    return ndimage.affine_transform(
        image, matrix, offset=offset, output_shape=(size, size), order=1, cval=0.0
    )


def _mirror_spectra(features: np.ndarray) -> np.ndarray:
    """Per row, the spectrum of the row convolved with itself (zero-padded to twice its
    length): summed over rows and transformed back, entry s is sum f(x) f(s - x), how well the
    rows match their mirror image about column s / 2."""
    spectrum = np.fft.rfft(features, 2 * features.shape[1], axis=1)
    return spectrum * spectrum


def _mirror_profile(spectra: np.ndarray) -> np.ndarray:
    """The mirror match about every half column of the rows whose ``_mirror_spectra`` these are."""
    return np.fft.irfft(spectra.sum(axis=0), 2 * (spectra.shape[1] - 1))


def _mirror_centre(spectra: np.ndarray, centre: float, window: float) -> float | None:
    """The column about which the rows whose ``_mirror_spectra`` these are best mirror, within
    ``window`` of ``centre`` (to a fraction of a pixel), or None when they hold no features or
    the best match is at the window's edge."""
    if not spectra[:, 0].real.sum() > 0:  # the zero frequency: each row's sum, squared
        return None
    profile = _mirror_profile(spectra)
    lo = max(1, math.floor(2 * (centre - window)))
    hi = min(profile.size - 2, math.ceil(2 * (centre + window)))
    peak = lo + int(np.argmax(profile[lo : hi + 1]))
    if peak in (lo, hi):
        return None
    a, b, c = profile[peak - 1 : peak + 2]
    curvature = a - 2 * b + c
    shift = 0.5 * (a - c) / curvature if curvature < 0 else 0.0
    return 0.5 * (peak + shift)


def _tilt(edges: np.ndarray, cy: float, cx: float, radius: int, window: float) -> float:
    """The angle (radians) whose midline best mirrors the head's edges, searched over
    +-ANGLE_RANGE_DEG on the edges at half resolution and refined by a parabola."""
    rows, columns = (edges.shape[0] // 2) * 2, (edges.shape[1] // 2) * 2
    coarse = edges[:rows, :columns].reshape(rows // 2, 2, columns // 2, 2).sum(axis=(1, 3))
    ccy, ccx, cradius = (cy - 0.5) / 2, (cx - 0.5) / 2, radius // 2 + 1
    angles = np.deg2rad(np.arange(-ANGLE_RANGE_DEG, ANGLE_RANGE_DEG + 1e-9, ANGLE_STEP_DEG))
    scores = np.empty(angles.size)
    for index, angle in enumerate(angles):
        turned = _rotate(coarse, float(angle), ccy, ccx, cradius)
        energy = float((turned * turned).sum())
        profile = _mirror_profile(_mirror_spectra(turned))
        lo = max(0, int(2 * (cradius - window / 2)))
        hi = min(profile.size - 1, int(2 * (cradius + window / 2)) + 1)
        scores[index] = profile[lo : hi + 1].max() / energy if energy > 0 else 0.0
    best = int(np.argmax(scores))
    theta = float(angles[best])
    if 0 < best < angles.size - 1:
        a, b, c = scores[best - 1 : best + 2]
        curvature = a - 2 * b + c
        if curvature < 0:
            theta += 0.5 * float(a - c) / float(curvature) * math.radians(ANGLE_STEP_DEG)
    return theta


def _theil_sen(y: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    """A robust line x = intercept + slope * y: the median of the pairwise slopes, and the
    median intercept under it."""
    dy = y[None, :] - y[:, None]
    dx = x[None, :] - x[:, None]
    pairs = dy > 0
    slope = float(np.median(dx[pairs] / dy[pairs])) if pairs.any() else 0.0
    return slope, float(np.median(x - slope * y))


def _to_display(
    grid: _Grid,
    theta: float,
    cy: float,
    cx: float,
    radius: int,
    intercept: float,
    slope: float,
    span: tuple[int, int],
    scatter: float,
) -> Midline:
    """The line found in the rotated frame (column = intercept + slope * row there) as a
    Midline in displayed pixel coordinates."""
    c, s = math.cos(theta), math.sin(theta)

    def to_work(row: float, column: float) -> tuple[float, float]:
        dy, dx = row - radius, column - radius
        return cy + c * dy - s * dx, cx + s * dy + c * dx

    def to_display(row: float, column: float) -> tuple[float, float]:
        y, x = to_work(row, column)
        return grid.row_scale * y + grid.row_shift, grid.column_scale * x + grid.column_shift

    r0, c0 = to_display(float(span[0]), intercept + slope * span[0])
    r1, c1 = to_display(float(span[1]), intercept + slope * span[1])
    display_slope = (c1 - c0) / (r1 - r0)
    rows = (min(r0, r1), max(r0, r1))
    return Midline(c0 - display_slope * r0, display_slope, rows, scatter)
