"""Annotated images: boxes where the findings are, in class colours, labels fully visible."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from conftest import HELDOUT
from mriscribe.analysis import MeasuredFinding, Measurement
from mriscribe.detection import Box, Finding
from mriscribe.imaging import decode_raster
from mriscribe.imaging.geometry import Plane
from mriscribe.render.annotate import (
    CLASS_COLOURS,
    MAX_LONG_SIDE,
    MIN_LONG_SIDE,
    NEGATIVE_COLOUR,
    ORIENTATION_COLOUR,
    annotate,
    annotated_jpeg,
    class_colour,
    direction_letters,
    label_text,
    orientation_letters,
)

SOURCE = "default 0.5 mm/px (estimate)"
# DICOM patient coordinates (LPS): x to the patient's left, y to the back, z to the head.
AXIAL = Plane.of((0, 0, 0), (1, 0, 0), (0, 1, 0), (0.5, 0.5))  # the standard axial display


def measured(finding: Finding, spacing: float = 0.5, estimated: bool = True) -> MeasuredFinding:
    size = Measurement(
        finding.box.width * spacing,
        finding.box.height * spacing,
        (spacing, spacing),
        SOURCE if estimated else "DICOM PixelSpacing",
        estimated,
    )
    return MeasuredFinding(finding, size)


def made(name: str, confidence: float, x1: float, y1: float, x2: float, y2: float):
    return measured(Finding(name, 0, confidence, Box(x1, y1, x2, y2)))


def grey(size: int = 256, value: int = 60) -> np.ndarray:
    return np.full((size, size, 3), value, dtype=np.uint8)


def colour_count(image: Image.Image, colour: tuple[int, int, int]) -> int:
    array = np.asarray(image)
    return int(np.all(array == colour, axis=2).sum())


@pytest.fixture(scope="module")
def real(detector) -> list[tuple[np.ndarray, list[MeasuredFinding]]]:
    """Held-out slices with the shipped detector's findings."""
    out = []
    for name in ("glioma_1.png", "meningioma_1.png", "pituitary_1.png", "no_tumor_1.png"):
        pixels = decode_raster((HELDOUT / name).read_bytes(), name).pixels
        out.append((pixels, [measured(f) for f in detector.detect([pixels])[0]]))
    return out


def test_boxes_drawn_where_the_findings_are(real):
    for pixels, findings in real:
        assert findings
        image = annotate(pixels, findings)
        scale = image.width / pixels.shape[1]
        assert image.size == (MIN_LONG_SIDE, MIN_LONG_SIDE)  # 256 px slices are doubled
        for item in findings:
            box = item.finding.box
            colour = class_colour(item.finding.class_name)
            if item.finding.class_name == "No Tumor":
                assert colour == NEGATIVE_COLOUR
                continue  # dashed: checked below
            x = min(round(box.x1 * scale), image.width - 1)
            y_mid = round((box.y1 + box.y2) / 2 * scale)
            assert image.getpixel((x, y_mid)) == colour
            assert image.getpixel((x + 1, y_mid)) == colour  # lines at least 2 px wide
            inside = (round((box.x1 + box.x2) / 2 * scale), y_mid)
            assert image.getpixel(inside) != colour  # an outline, not a filled box


def test_known_class_colours_and_unknown_deterministic():
    assert class_colour("Glioma") == CLASS_COLOURS["glioma"]
    assert class_colour("meningioma") == CLASS_COLOURS["meningioma"]
    assert class_colour("Pituitary") == CLASS_COLOURS["pituitary"]
    assert class_colour("notumor") == NEGATIVE_COLOUR
    unknown = class_colour("Schwannoma")
    assert unknown == class_colour("Schwannoma")
    assert unknown not in (*CLASS_COLOURS.values(), NEGATIVE_COLOUR)
    assert class_colour("Schwannoma") != class_colour("Ependymoma")


def test_no_tumor_box_is_thin_and_dashed():
    pixels = grey()
    image = annotate(pixels, [made("No Tumor", 0.8, 20, 60, 236, 236)])
    left_edge = [image.getpixel((40, y)) for y in range(140, 460)]  # x = 20 px * 2
    greys = sum(pixel == NEGATIVE_COLOUR for pixel in left_edge)
    assert 0.3 * len(left_edge) < greys < 0.7 * len(left_edge)  # dashes and gaps
    assert image.getpixel((42, 300)) != NEGATIVE_COLOUR  # thin: at most 2 px at 512


def test_tumour_drawn_over_no_tumor():
    image = annotate(
        grey(), [made("No Tumor", 0.9, 10, 10, 200, 200), made("Glioma", 0.5, 10, 100, 60, 150)]
    )
    assert image.getpixel((20, 250)) == CLASS_COLOURS["glioma"]


def test_label_text():
    item = made("Glioma", 0.912, 0, 0, 46.8, 36.0)
    assert label_text(item) == "Glioma 91% · ≈23\u00d718 mm"
    exact = measured(Finding("Glioma", 0, 0.912, Box(0, 0, 46.8, 36.0)), estimated=False)
    assert label_text(exact) == "Glioma 91% · 23\u00d718 mm"
    assert label_text(made("No Tumor", 0.7, 0, 0, 9, 9)) == "No Tumor 70%"


@pytest.mark.parametrize(
    "box",
    [
        (0, 0, 40, 30),  # top-left corner: no room above
        (215, 0, 256, 20),  # top-right corner: the label must shift left
        (200, 230, 256, 256),  # bottom-right corner
        (0, 240, 256, 256),  # full-width strip at the bottom
    ],
)
def test_label_fully_inside_the_image(box):
    """A label at an edge is moved, not cut: its text has as many pixels as one placed freely
    (black text on the amber label; text rendering is the same at any whole-pixel position)."""
    width, height = box[2] - box[0], box[3] - box[1]
    free = annotate(grey(), [made("Meningioma", 0.88, 100, 120, 100 + width, 120 + height)])
    edge = annotate(grey(), [made("Meningioma", 0.88, *box)])
    assert edge.size == free.size == (512, 512)
    text_pixels = colour_count(free, (0, 0, 0))
    assert text_pixels > 50
    assert colour_count(edge, (0, 0, 0)) == text_pixels


def test_labels_of_nearby_findings_do_not_overlap():
    one = annotate(grey(), [made("Meningioma", 0.9, 100, 100, 140, 140)])
    two = annotate(
        grey(),
        [
            made("Meningioma", 0.9, 100, 100, 140, 140),
            made("Meningioma", 0.8, 104, 104, 144, 144),
        ],
    )
    assert colour_count(two, (0, 0, 0)) > 1.8 * colour_count(one, (0, 0, 0))


def test_sizes_and_scaling():
    small = annotate(grey(128), [made("Glioma", 0.9, 10, 10, 50, 50)])
    assert small.size == (512, 512)
    wide = annotate(np.zeros((300, 600, 3), np.uint8), [])
    assert wide.size == (600, 300)  # long side already >= 512: unchanged
    big_pixels = np.full((1024, 1024, 3), 60, np.uint8)
    big = annotate(big_pixels, [made("Glioma", 0.9, 100, 300, 400, 600)])
    assert big.size == (1024, 1024)
    row = np.asarray(big)[450, 90:130]
    thick_big = int(np.all(row == CLASS_COLOURS["glioma"], axis=1).sum())
    row = np.asarray(small)[120, 30:60]  # x1 = 10 px * 4
    thick_small = int(np.all(row == CLASS_COLOURS["glioma"], axis=1).sum())
    assert thick_big > thick_small >= 2


def test_large_images_reduced():
    pixels = np.full((3000, 2000, 3), 60, np.uint8)
    image = annotate(pixels, [made("Pituitary", 0.9, 1000, 1500, 1300, 1800)])
    assert image.size == (round(MAX_LONG_SIDE * 2 / 3), MAX_LONG_SIDE)
    scale = MAX_LONG_SIDE / 3000
    assert image.getpixel((round(1000 * scale), round(1650 * scale))) == CLASS_COLOURS["pituitary"]


def test_greyscale_and_no_findings():
    image = annotate(np.full((256, 256), 90, np.uint8), [])
    assert image.mode == "RGB"
    assert image.size == (512, 512)
    assert image.getpixel((100, 100)) == (90, 90, 90)


def test_jpeg_decodes(real):
    pixels, findings = real[0]
    data = annotated_jpeg(pixels, findings)
    assert data[:2] == b"\xff\xd8"
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        assert image.size == (512, 512)
        # The box colour survives compression near the box edge.
        box = findings[0].finding.box
        r, g, b = image.convert("RGB").getpixel((round(box.x1 * 2) + 1, round(box.y1 + box.y2)))
        expected = class_colour(findings[0].finding.class_name)
        assert abs(r - expected[0]) + abs(g - expected[1]) + abs(b - expected[2]) < 60
    assert annotated_jpeg(pixels, findings) == data  # deterministic


def plane(row: tuple[float, float, float], column: tuple[float, float, float]) -> Plane:
    return Plane.of((0, 0, 0), row, column, (0.5, 0.5))


def test_orientation_letters_axial_flipped_coronal_sagittal():
    # Standard axial: the patient's left on the image's right (radiological), front at the top.
    assert orientation_letters(AXIAL) == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    # Stored the other way round (neurological): R and L swap, A and P stay.
    flipped = plane((-1, 0, 0), (0, 1, 0))
    assert orientation_letters(flipped) == {"left": "L", "right": "R", "top": "A", "bottom": "P"}
    coronal = plane((1, 0, 0), (0, 0, -1))
    assert orientation_letters(coronal) == {"left": "R", "right": "L", "top": "H", "bottom": "F"}
    sagittal = plane((0, 1, 0), (0, 0, -1))
    assert orientation_letters(sagittal) == {"left": "A", "right": "P", "top": "H", "bottom": "F"}
    # Slightly tilted (dominant component above 0.8): still one letter.
    tilted = plane((0.95, 0.3122499, 0), (-0.3122499, 0.95, 0))
    assert orientation_letters(tilted) == {"left": "R", "right": "L", "top": "A", "bottom": "P"}


def test_orientation_letters_oblique():
    # Rotated 45 degrees in the axial plane: two letters, the larger axis first (x on a tie).
    oblique = plane((0.7071068, 0.7071068, 0), (-0.7071068, 0.7071068, 0))
    assert orientation_letters(oblique) == {
        "left": "RA",
        "right": "LP",
        "top": "LA",
        "bottom": "RP",
    }
    # The largest axis first: mostly anterior, somewhat left.
    assert direction_letters((0.6, -0.75, 0.1)) == "AL"
    assert direction_letters((0.0, 0.5, -0.85)) == "F"  # 0.86 of its length: not oblique
    assert direction_letters((0.0, 0.65, -0.75)) == "FP"  # 0.76: oblique
    assert direction_letters((0, 0, 0)) == ""
    assert direction_letters((float("nan"), 0, 1)) == ""


def test_orientation_letters_drawn_near_the_edges_only():
    """With a plane, the JPEG differs from one without only in the middle of each edge."""
    for size in (128, 1024):
        # A finding in the middle: its box and label are drawn the same with or without a plane.
        middle = made("Glioma", 0.9, size * 0.4, size * 0.4, size * 0.6, size * 0.6)
        pixels = grey(size)
        plain = decode(annotated_jpeg(pixels, [middle]))
        lettered = decode(annotated_jpeg(pixels, [middle], plane=AXIAL))
        assert plain.shape == lettered.shape
        changed = np.abs(plain.astype(int) - lettered.astype(int)).max(axis=2) > 0
        side = plain.shape[0]
        band = side // 10  # letters lie within a tenth of the side from the edge ...
        centre = slice(side // 2 - band, side // 2 + band)  # ... and about its middle
        edges = {
            "left": changed[centre, :band],
            "right": changed[centre, -band:],
            "top": changed[:band, centre],
            "bottom": changed[-band:, centre],
        }
        for edge, region in edges.items():
            assert region.sum() > 20, (size, edge)  # a letter readable at this size
        assert sum(int(region.sum()) for region in edges.values()) == int(changed.sum()), size


def test_orientation_letters_scale_with_the_image():
    def letter_height(size: int) -> int:
        image = np.asarray(annotate(grey(size), [], plane=AXIAL))
        white = np.all(image == ORIENTATION_COLOUR, axis=2)
        rows = np.flatnonzero(white[:, image.shape[1] - image.shape[1] // 10 :].any(axis=1))
        return int(rows[-1] - rows[0] + 1)  # the right edge's "L"

    small, large = letter_height(128), letter_height(1024)  # drawn at 512 and 1024 px
    assert 8 <= small < large <= 40
    assert large > 1.6 * small


def test_labels_avoid_orientation_letters():
    """A lesion at the left edge: its label goes where it leaves the "R" visible."""
    lesion = made("Meningioma", 0.9, 0, 140, 40, 180)  # label above the box would cover "R"
    alone = annotate(grey(), [], plane=AXIAL)
    with_label = annotate(grey(), [lesion], plane=AXIAL)
    letters = colour_count(alone, ORIENTATION_COLOUR)
    assert letters > 100
    assert colour_count(with_label, ORIENTATION_COLOUR) == letters  # no letter pixel covered


def test_no_plane_no_letters():
    image = annotate(grey(), [made("Meningioma", 0.9, 100, 100, 140, 140)])
    assert colour_count(image, ORIENTATION_COLOUR) == 0
    assert colour_count(annotate(grey(), []), ORIENTATION_COLOUR) == 0


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))
