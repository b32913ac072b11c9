"""The patient side of a lesion, on real anatomy: the Colin27 head through mriscribe's own NIfTI
decoder, with a painted lesion at a known patient position, and real axial tumour slices.

The head's true midline in Colin27 lies at LPS x = 0 (the template is in MNI space); the
estimator finds it within about a millimetre of that (at x = -0.4 to -1.0 mm, leaning by up to
1.5 degrees) on the slices through the cerebrum, and within 2 mm up to the vertex; lower, the
volume's edges cut the head and there is no midline.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from mriscribe.imaging.decode import decode_file
from mriscribe.imaging.geometry import Plane
from mriscribe.imaging.limits import Limits
from mriscribe.imaging.slices import Slice
from mriscribe.study.side import (
    MAX_SCATTER_MM,
    Midline,
    SideReading,
    estimate_midline,
    lesion_side,
    side_on_slice,
)
from mriscribe.training.realdata import figshare_dir

COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")  # apt-get install mricron-data
needs_colin = pytest.mark.skipif(
    not COLIN27.is_file(), reason="Colin27 not found: apt-get install mricron-data"
)

FIGSHARE = figshare_dir()
# Axial slices of the figshare T1-CE set (checked by eye: the other planes are excluded),
# chosen across its patients and levels, among them hard ones: a meningioma bulging through
# the skull (fig0081), skull-base slices and heads turned in-plane by up to about 20 degrees.
FIGSHARE_NUMBERS = (1, 41, 81, 121, 125, 161, 721, 734, 961, 1001, 1309, 1321, 1361, 1376, 1401)
FIGSHARE_NUMBERS += (1441, 1841, 1856, 1881, 1961, 2001, 2041, 2081, 2121, 2161, 2199, 2201)
FIGSHARE_NUMBERS += (2241, 2369)
FIGSHARE_AXIAL = tuple(f"fig{number:04d}" for number in FIGSHARE_NUMBERS)
FIGSHARE_SPACING = (0.49, 0.49)  # the data set's README: 0.49 mm pixels (the JPEGs hold none)

LESION_MM = 8.0  # the painted lesion's radius

Box = tuple[float, float, float, float]


@pytest.fixture(scope="module")
def colin() -> list[Slice]:
    if not COLIN27.is_file():
        pytest.skip("Colin27 not found: apt-get install mricron-data")
    return decode_file(COLIN27.read_bytes(), "ch2.nii.gz", Limits())


@pytest.fixture(scope="module")
def brain(colin: list[Slice]) -> list[Slice]:
    """The slices through the cerebrum (LPS z from 0 to 50 mm): the head whole in the image."""
    chosen = [s for s in colin if 0.0 <= _plane(s).position[2] <= 50.0]
    assert len(chosen) >= 5
    return chosen


@pytest.fixture(scope="module")
def mid(brain: list[Slice]) -> Slice:
    """One slice about 20 mm above the commissures, padded so that the head can be moved."""
    one = min(brain, key=lambda s: abs(_plane(s).position[2] - 20.0))
    return _padded(one, 40)


def _plane(one: Slice) -> Plane:
    assert one.source is not None and one.source.plane is not None
    return one.source.plane


def _padded(one: Slice, pad: int) -> Slice:
    """The slice with ``pad`` black pixels on every side, its plane moved to match."""
    plane = _plane(one)
    pixels = np.pad(one.pixels, ((pad, pad), (pad, pad), (0, 0)))
    moved = Plane.of(
        plane.point(-pad, -pad), plane.row_direction, plane.column_direction, plane.spacing
    )
    return _with(one, pixels, moved)


def _with(one: Slice, pixels: np.ndarray, plane: Plane) -> Slice:
    assert one.source is not None
    return replace(one, pixels=pixels, source=replace(one.source, plane=plane))


def _pixel(plane: Plane, point: np.ndarray) -> tuple[float, float]:
    """The displayed (row, column) of a patient point lying in the plane."""
    axes = np.column_stack(
        [
            np.asarray(plane.column_direction) * plane.spacing[0],
            np.asarray(plane.row_direction) * plane.spacing[1],
        ]
    )
    (row, column), *_ = np.linalg.lstsq(axes, np.asarray(point) - plane.position, rcond=None)
    return float(row), float(column)


def _lesion(one: Slice, x_mm: float, y_mm: float, value: int = 255) -> tuple[Slice, Box]:
    """The slice with a round lesion (radius LESION_MM) painted with ``value`` centred at patient
    LPS (x_mm, y_mm) on the slice, and the lesion's box (x1, y1, x2, y2)."""
    plane = _plane(one)
    point = np.array([x_mm, y_mm, plane.position[2]])
    row, column = _pixel(plane, point)
    rows, columns = np.indices(one.pixels.shape[:2])
    distance = np.hypot((rows - row) * plane.spacing[0], (columns - column) * plane.spacing[1])
    pixels = one.pixels.copy()
    pixels[distance <= LESION_MM] = value
    across, down = LESION_MM / plane.spacing[1], LESION_MM / plane.spacing[0]
    box = (column - across, row - down, column + across, row + down)
    return replace(one, pixels=pixels), box


def _midline_x(one: Slice, midline: Midline) -> list[float]:
    """The patient x (LPS mm) of the midline at five rows across the rows it was measured on."""
    plane = _plane(one)
    rows = np.linspace(midline.rows[0], midline.rows[1], 5)
    return [float(plane.point(r, midline.column_at(r))[0]) for r in rows]


def _turned(one: Slice, degrees: float) -> Slice:
    """The slice turned in-plane by ``degrees`` about its centre, with the plane that keeps every
    pixel where it lies in the patient (pixel o shows what input pixel M o + offset showed)."""
    plane = _plane(one)
    assert plane.spacing[0] == plane.spacing[1]
    theta = math.radians(degrees)
    matrix = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    centre = (np.array(one.pixels.shape[:2], dtype=float) - 1) / 2
    offset = centre - matrix @ centre
    pixels = np.stack(
        [
            ndimage.affine_transform(one.pixels[..., c], matrix, offset=offset, order=1)
            for c in range(one.pixels.shape[2])
        ],
        axis=-1,
    )
    down, across = np.asarray(plane.column_direction), np.asarray(plane.row_direction)
    row_direction = matrix[0, 1] * down + matrix[1, 1] * across
    column_direction = matrix[0, 0] * down + matrix[1, 0] * across
    turned = Plane.of(plane.point(*offset), row_direction, column_direction, plane.spacing)
    return _with(one, pixels, turned)


def _shifted(one: Slice, columns: int) -> Slice:
    """The slice moved ``columns`` pixels to the right in the image, its plane moved to match."""
    plane = _plane(one)
    pixels = ndimage.shift(one.pixels, (0, columns, 0), order=0)
    moved = Plane.of(
        plane.point(0, -columns), plane.row_direction, plane.column_direction, plane.spacing
    )
    return _with(one, pixels, moved)


def _mirrored_plane(one: Slice) -> Plane:
    """The same pixels under a header that says they are shown mirrored left-right."""
    plane = _plane(one)
    far = plane.point(0, one.pixels.shape[1] - 1)
    return Plane.of(far, -np.asarray(plane.row_direction), plane.column_direction, plane.spacing)


# The midline ------------------------------------------------------------------------------------


def test_colin27_midline_is_the_true_one_on_every_slice_through_the_brain(brain):
    for one in brain:
        midline = estimate_midline(one.pixels, one.spacing_mm)
        assert midline is not None, one.name
        assert all(abs(x) < 3.0 for x in _midline_x(one, midline)), one.name
        assert abs(midline.tilt_deg) < 5.0
        assert 0.0 <= midline.scatter_mm <= MAX_SCATTER_MM
        assert midline.rows[1] - midline.rows[0] > 60  # mm, at 1 mm pixels: most of the head


def test_grey_and_rgb_pixels_give_the_same_midline(mid):
    rgb = estimate_midline(mid.pixels, mid.spacing_mm)
    grey = estimate_midline(mid.pixels[..., 0], mid.spacing_mm)
    assert rgb is not None and grey is not None
    assert rgb.column_at(100) == pytest.approx(grey.column_at(100), abs=0.05)


@pytest.mark.parametrize("columns", [-25, 25])
def test_midline_follows_a_head_shifted_in_the_image(mid, columns):
    before = estimate_midline(mid.pixels, mid.spacing_mm)
    moved = _shifted(mid, columns)
    after = estimate_midline(moved.pixels, moved.spacing_mm)
    assert before is not None and after is not None
    row = 0.5 * (after.rows[0] + after.rows[1])
    # 25 pixels are 25 mm here; the true midline (x = 0) stays under the head.
    assert after.column_at(row) - before.column_at(row) == pytest.approx(columns, abs=1.5)
    assert all(abs(x) < 3.0 for x in _midline_x(moved, after))


@pytest.mark.parametrize("degrees", [-15.0, -10.0, 10.0, 15.0])
def test_midline_follows_a_head_turned_in_plane(mid, degrees):
    turned = _turned(mid, degrees)
    midline = estimate_midline(turned.pixels, turned.spacing_mm)
    assert midline is not None
    assert all(abs(x) < 3.0 for x in _midline_x(turned, midline))
    assert abs(midline.tilt_deg + degrees) < 4.0  # Colin27 itself leans by about a degree


@pytest.mark.parametrize("value", [255, 0])
def test_a_large_bright_or_dark_tumour_does_not_move_the_midline(mid, value):
    plane = _plane(mid)
    rows, columns = np.indices(mid.pixels.shape[:2])
    for x, y in ((35.0, 0.0), (-30.0, 30.0)):
        row, column = _pixel(plane, np.array([x, y, plane.position[2]]))
        pixels = mid.pixels.copy()
        pixels[np.hypot(rows - row, columns - column) <= 20] = value  # 40 mm across
        midline = estimate_midline(pixels, mid.spacing_mm)
        assert midline is not None
        assert all(abs(v) < 3.0 for v in _midline_x(mid, midline))


@pytest.mark.parametrize("row_mm", [-40.0, -10.0, 20.0, 50.0, 80.0])
@pytest.mark.parametrize("radius_mm", [20.0, 30.0, 40.0])
def test_a_tumour_pushing_the_outline_out_gives_the_true_midline_or_none(mid, row_mm, radius_mm):
    # A bright mass centred on the head's right edge, half of it outside the skull (a
    # meningioma growing through it): the outline is no longer symmetric. Either the midline is
    # still the true one, or there is none; unguarded, the mirror line moves up to 11 mm.
    plane = _plane(mid)
    row = round(_pixel(plane, np.array([0.0, row_mm, plane.position[2]]))[0])
    edge = int(np.flatnonzero(mid.pixels[row, :, 0] > 30)[-1])
    rows, columns = np.indices(mid.pixels.shape[:2])
    pixels = mid.pixels.copy()
    pixels[np.hypot(rows - row, columns - edge) <= radius_mm] = 200
    midline = estimate_midline(pixels, mid.spacing_mm)
    if midline is not None:
        assert all(abs(x) < 3.0 for x in _midline_x(mid, midline))


def test_anisotropic_pixels_give_the_same_midline(mid):
    # Columns 0.8 mm apart: the head drawn 1.25 times wider, the header saying so.
    plane = _plane(mid)
    pixels = ndimage.zoom(mid.pixels, (1.0, 1.25, 1.0), order=1)
    wide = Plane.of(plane.position, plane.row_direction, plane.column_direction, (1.0, 0.8))
    one = _with(mid, pixels, wide)
    midline = estimate_midline(pixels, (1.0, 0.8))
    assert midline is not None
    assert all(abs(x) < 3.0 for x in _midline_x(one, midline))


def test_no_midline_without_a_whole_head(mid):
    rng = np.random.default_rng(0)
    assert estimate_midline(np.full((256, 256, 3), 40, np.uint8), (1.0, 1.0)) is None
    assert estimate_midline(np.zeros((256, 256), np.uint8), (1.0, 1.0)) is None
    noise = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    assert estimate_midline(noise, (1.0, 1.0)) is None
    # The head cut by the right edge, then by the left: no midline, however much is left.
    assert estimate_midline(_shifted(mid, 70).pixels, mid.spacing_mm) is None
    assert estimate_midline(_shifted(mid, -70).pixels, mid.spacing_mm) is None
    assert estimate_midline(mid.pixels[:, 80:], mid.spacing_mm) is None
    # A head turned beyond 20 degrees is not measured.
    assert estimate_midline(_turned(mid, 30.0).pixels, mid.spacing_mm) is None
    # Nor a spacing that is not a spacing.
    assert estimate_midline(mid.pixels, (0.0, 1.0)) is None
    assert estimate_midline(mid.pixels, (float("nan"), 1.0)) is None


def test_colin27_slices_whose_head_the_volume_cuts_have_no_midline(colin):
    # Colin27 is cropped at x = +-90 mm: at the level of the ears the head touches both edges.
    low = min(colin, key=lambda s: abs(_plane(s).position[2] + 50.0))
    assert estimate_midline(low.pixels, low.spacing_mm) is None


# One slice --------------------------------------------------------------------------------------


def test_a_lesion_30_mm_left_is_left_and_its_mirror_image_right(mid):
    one, box = _lesion(mid, 30.0, 10.0)
    plane = _plane(one)
    reading = side_on_slice(one.pixels, plane, box)
    assert reading.side == "left"
    assert reading.offset_mm == pytest.approx(30.0, abs=3.0)
    # The head mirrored in the image, the header unchanged: the lesion is now on the right.
    width = one.pixels.shape[1]
    x1, y1, x2, y2 = box
    mirrored_box = (width - 1 - x2, y1, width - 1 - x1, y2)
    mirrored = side_on_slice(one.pixels[:, ::-1], plane, mirrored_box)
    assert mirrored.side == "right"
    assert mirrored.offset_mm == pytest.approx(-30.0, abs=3.0)
    # The same pixels under a header saying they are shown mirrored: the other side too.
    flipped = side_on_slice(one.pixels, _mirrored_plane(one), box)
    assert flipped.side == "right"
    assert flipped.offset_mm == pytest.approx(-reading.offset_mm, abs=1e-6)


def test_a_neurological_display_gives_the_same_side(mid):
    # Patient left on the image's left (pixels mirrored and the header saying so): same side.
    one, box = _lesion(mid, -30.0, -20.0, value=10)
    plane = _plane(one)
    width = one.pixels.shape[1]
    x1, y1, x2, y2 = box
    radiological = side_on_slice(one.pixels, plane, box)
    neurological = side_on_slice(
        one.pixels[:, ::-1], _mirrored_plane(one), (width - 1 - x2, y1, width - 1 - x1, y2)
    )
    assert radiological.side == neurological.side == "right"
    assert neurological.offset_mm == pytest.approx(radiological.offset_mm, abs=0.5)


@pytest.mark.parametrize("degrees", [-10.0, 10.0])
def test_a_turned_and_shifted_head_keeps_its_sides(mid, degrees):
    left, box = _lesion(mid, 30.0, 25.0)
    moved = _turned(_shifted(left, 20), degrees)
    plane = _plane(moved)
    row, column = _pixel(plane, np.array([30.0, 25.0, plane.position[2]]))
    box = (column - LESION_MM, row - LESION_MM, column + LESION_MM, row + LESION_MM)
    reading = side_on_slice(moved.pixels, plane, box)
    assert reading.side == "left"
    assert reading.offset_mm == pytest.approx(30.0, abs=3.0)


def test_a_lesion_near_the_midline_gets_no_left_or_right(mid):
    # 5 mm off, its box across the midline: "midline".
    one, box = _lesion(mid, 5.0, 0.0)
    reading = side_on_slice(one.pixels, _plane(one), box)
    assert reading.side == "midline"
    assert reading.offset_mm is not None and 2.0 < reading.offset_mm < 8.0
    # 9 mm off with a box that does not reach the midline: nothing at all.
    one, box = _lesion(mid, 9.0, 0.0)
    small = (box[0] + 4.0, box[1] + 4.0, box[2] - 4.0, box[3] - 4.0)
    reading = side_on_slice(one.pixels, _plane(one), small)
    assert reading.side is None
    assert reading.offset_mm is not None and reading.offset_mm > 0
    # The threshold is configurable: at 5 mm the same lesion is on the left.
    assert side_on_slice(one.pixels, _plane(one), small, threshold_mm=5.0).side == "left"


def test_a_transposed_display_reads_the_left_right_axis_down_the_columns(mid):
    one, box = _lesion(mid, 30.0, 10.0)
    plane = _plane(one)
    swapped = (plane.spacing[1], plane.spacing[0])
    transposed = Plane.of(plane.position, plane.column_direction, plane.row_direction, swapped)
    x1, y1, x2, y2 = box
    reading = side_on_slice(np.swapaxes(one.pixels, 0, 1), transposed, (y1, x1, y2, x2))
    assert reading.side == "left"
    assert reading.offset_mm == pytest.approx(30.0, abs=3.0)


def test_no_side_on_a_sagittal_slice_nor_without_a_head(mid):
    one, box = _lesion(mid, 30.0, 10.0)
    sagittal = Plane.of((0.0, -100.0, 100.0), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0), (1.0, 1.0))
    assert side_on_slice(one.pixels, sagittal, box) == SideReading(None, None)
    # An oblique plane whose rows and columns are both far from left-right: no side either.
    oblique = Plane.of((0.0, 0.0, 0.0), (0.5, 0.866, 0.0), (0.0, 0.0, -1.0), (1.0, 1.0))
    assert side_on_slice(one.pixels, oblique, box) == SideReading(None, None)
    blank = np.zeros_like(one.pixels)
    assert side_on_slice(blank, _plane(one), box) == SideReading(None, None)
    cut = _shifted(one, 70)
    x1, y1, x2, y2 = box
    reading = side_on_slice(cut.pixels, _plane(cut), (x1 + 70, y1, x2 + 70, y2))
    assert reading == SideReading(None, None)


# A lesion over several slices -------------------------------------------------------------------


def test_lesion_side_needs_every_slice_to_agree():
    left, right, near = SideReading(25.0, "left"), SideReading(-25.0, "right"), SideReading
    assert lesion_side([left, SideReading(18.0, "left"), SideReading(12.0, "left")]) == "left"
    assert lesion_side([right, SideReading(-15.0, "right")]) == "right"
    # A slice on the other side beyond 3 mm: nothing.
    assert lesion_side([left, left, SideReading(-4.0, None)]) is None
    assert lesion_side([left, right]) is None
    # Within 3 mm of the midline on the other side is agreement (a lesion's pole).
    assert lesion_side([left, left, SideReading(-2.0, "midline")]) == "left"
    # The median offset decides the distance: slices mostly near the midline give no side.
    assert lesion_side([SideReading(15.0, "left"), SideReading(6.0, None), near(4.0, None)]) is None
    # Across the midline on most slices: "midline".
    across = [near(2.0, "midline"), near(-3.0, "midline"), near(6.0, None)]
    assert lesion_side(across) == "midline"
    assert lesion_side([near(2.0, "midline"), near(6.0, None), near(7.0, None)]) is None
    # Readings without an offset (no midline on their slice) do not count, nor vote.
    assert lesion_side([near(None, None), left]) == "left"
    assert lesion_side([near(None, None)]) is None
    assert lesion_side([]) is None
    # The threshold is the caller's.
    assert lesion_side([SideReading(8.0, None)], threshold_mm=5.0) == "left"
    assert lesion_side([SideReading(8.0, None)]) is None


@needs_colin
def test_ras_and_lps_volumes_give_the_same_sides():
    colin = nib.load(COLIN27)
    data = np.asarray(colin.dataobj).copy()
    affine = colin.affine
    # A sphere of radius 10 mm at patient left 30 mm (RAS x = -30), 10 mm behind, 25 mm up.
    centre_ras = np.array([-30.0, -10.0, 25.0])
    centre = np.round(nib.affines.apply_affine(np.linalg.inv(affine), centre_ras)).astype(int)
    around = tuple(slice(c - 12, c + 13) for c in centre)  # 1 mm voxels: 12 mm either side
    voxels = np.stack(np.meshgrid(*(np.arange(a.start, a.stop) for a in around), indexing="ij"))
    world = nib.affines.apply_affine(affine, np.moveaxis(voxels, 0, -1))
    region = data[around]
    region[np.linalg.norm(world - centre_ras, axis=-1) <= 10.0] = data.max()
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = np.array(data.shape[:2]) - 1
    lps = (data[::-1, ::-1, :], affine @ flip)
    assert "".join(nib.aff2axcodes(lps[1])) == "LPS"
    centre_lps = centre_ras * np.array([-1.0, -1.0, 1.0])
    offsets = {}
    for name, (volume, matrix) in {"ras": (data, affine), "lps": lps}.items():
        packed = nib.Nifti1Image(volume, matrix).to_bytes()
        slices = decode_file(packed, f"{name}.nii", Limits(), nifti_step=2)
        readings = []
        for one in slices:
            plane = _plane(one)
            depth = abs(plane.position[2] - centre_lps[2])
            if depth > 7.0:
                continue
            radius = math.sqrt(100.0 - depth**2)
            row, column = _pixel(plane, np.array([*centre_lps[:2], plane.position[2]]))
            box = (column - radius, row - radius, column + radius, row + radius)
            readings.append(side_on_slice(one.pixels, plane, box))
        assert len(readings) >= 5
        assert all(r.side == "left" for r in readings)
        assert all(r.offset_mm == pytest.approx(30.0, abs=3.0) for r in readings)
        assert lesion_side(readings) == "left"
        offsets[name] = [r.offset_mm for r in readings]
    assert offsets["ras"] == pytest.approx(offsets["lps"], abs=1e-6)


# Real tumour slices ----------------------------------------------------------------------------


needs_figshare = pytest.mark.skipif(
    not (FIGSHARE / "images").is_dir(),
    reason=f"figshare T1-CE not found at {FIGSHARE} (set MRISCRIBE_FIGSHARE_DIR)",
)


def _figshare(name: str) -> np.ndarray:
    path = FIGSHARE / "images" / f"{name}.jpg"
    if not path.is_file():
        pytest.skip(f"{path} is not in this copy of the figshare T1-CE set")
    return np.asarray(Image.open(path).convert("L"))


@needs_figshare
def test_real_axial_tumour_slices_have_a_plausible_midline():
    present = [n for n in FIGSHARE_AXIAL if (FIGSHARE / "images" / f"{n}.jpg").is_file()]
    if len(present) < 10:
        pytest.skip("too few of the chosen slices are in this copy of the figshare T1-CE set")
    found = 0
    for name in present:
        grey = _figshare(name)
        midline = estimate_midline(grey, FIGSHARE_SPACING)
        if midline is None:
            continue
        found += 1
        assert abs(midline.tilt_deg) <= 20.0
        # Where the head is (its outer edges on each row), the midline lies in its middle 40%.
        head = ndimage.binary_fill_holes(grey > 0.1 * np.percentile(grey, 99))
        for row in np.linspace(midline.rows[0], midline.rows[1], 5):
            columns = np.flatnonzero(head[round(row)])
            left, right = columns[0], columns[-1]
            share = (midline.column_at(row) - left) / (right - left)
            assert 0.3 <= share <= 0.7, name
    assert found >= 0.8 * len(present)


@needs_figshare
def test_a_real_meningioma_through_the_skull_gives_no_midline():
    # fig0081: a convexity meningioma bulging out through the skull; the head's mirror line
    # through the rest would be tilted and shifted, and the bands' own line says so.
    assert estimate_midline(_figshare("fig0081"), FIGSHARE_SPACING) is None
