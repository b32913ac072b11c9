"""Drawing findings onto a slice: class-coloured boxes with readable labels, returned as JPEG.

Where the slice's place in the patient is known, the patient's directions are lettered at the
middle of each image edge, as radiology viewers do (L/R, A/P, H/F): DICOM images are shown as
stored, so the patient's left may be on either side of the image.
"""

from __future__ import annotations

import colorsys
import io
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mriscribe.analysis import MeasuredFinding
from mriscribe.imaging.geometry import Plane, Vector
from mriscribe.report.template import class_kind

FONTS = Path(__file__).resolve().parent / "fonts"
LABEL_FONT = FONTS / "DejaVuSans-Bold.ttf"

RGB = tuple[int, int, int]
TIMES = "\u00d7"  # the multiplication sign, spelt out because it looks like an x

CLASS_COLOURS: dict[str, RGB] = {
    "glioma": (230, 40, 40),  # red
    "meningioma": (255, 160, 0),  # amber
    "pituitary": (0, 180, 255),  # sky blue
}
# The no-tumour class's box usually outlines the whole brain: grey, thin and dashed, so nobody
# reads it as a lesion.
NEGATIVE_COLOUR: RGB = (170, 170, 170)

# Slices smaller than this on their long side are enlarged before drawing so that labels stay
# legible (a 256 px slice with a 9 px label is unreadable in a PDF or on a screen).
MIN_LONG_SIDE = 512
# Larger ones are reduced to this: MRI matrices are rarely above 512, and a 4000 px photograph of
# a film would cost tens of ms to encode and megabytes in every PDF and JSON response.
MAX_LONG_SIDE = 1024

# Orientation letters: the letter of each LPS axis's negative and positive direction (x to the
# patient's left, y to the back, z to the head), as DICOM's PatientOrientation spells them.
AXIS_LETTERS = (("R", "L"), ("A", "P"), ("F", "H"))
# A direction whose largest component is below this is oblique and gets two letters ("LA").
OBLIQUE_BELOW = 0.8
# White with a black outline: legible on dark and bright anatomy alike, and unlike any box colour.
ORIENTATION_COLOUR: RGB = (255, 255, 255)
ORIENTATION_OUTLINE: RGB = (0, 0, 0)

_local = threading.local()  # FreeType faces must not be shared between threads


def class_colour(class_name: str) -> RGB:
    """The colour of a class's boxes: fixed for the known classes, derived from the name (so
    stable across runs and processes) for any other."""
    kind = class_kind(class_name)
    if kind == "negative":
        return NEGATIVE_COLOUR
    if kind is not None:
        return CLASS_COLOURS[kind]
    hue = (zlib.crc32(class_name.strip().lower().encode("utf-8")) % 360) / 360
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return round(red * 255), round(green * 255), round(blue * 255)


def text_colour(background: RGB) -> RGB:
    """Black or white, whichever contrasts more with ``background`` (WCAG luminance)."""

    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    red, green, blue = (channel(v) for v in background)
    luminance = 0.2126 * red + 0.7152 * green + 0.0722 * blue
    return (0, 0, 0) if (luminance + 0.05) / 0.05 >= 1.05 / (luminance + 0.05) else (255, 255, 255)


def label_text(item: MeasuredFinding) -> str:
    """ "Glioma 91% · 23x18 mm" (with TIMES); "≈" marks a size from the default spacing; no
    size for the no-tumour class (its box is the brain, not a lesion)."""
    finding = item.finding
    text = f"{finding.class_name} {finding.confidence * 100:.0f}%"
    if class_kind(finding.class_name) == "negative":
        return text
    approx = "≈" if item.size.estimated else ""
    return f"{text} · {approx}{item.size.width_mm:.0f}{TIMES}{item.size.height_mm:.0f} mm"


def direction_letters(direction: Vector | Sequence[float]) -> str:
    """The patient direction of an LPS vector as DICOM's PatientOrientation spells it: the letter
    of its largest axis ("L", "R", "A", "P", "H" or "F"), followed by the second largest's where
    the direction is oblique (largest component below OBLIQUE_BELOW of its length), e.g. "LA".
    Empty for a zero or non-finite vector."""
    vector = np.asarray(direction, dtype=float).ravel()[:3]
    norm = float(np.linalg.norm(vector)) if vector.size == 3 else 0.0
    if not np.isfinite(norm) or norm < 1e-9:
        return ""
    vector = vector / norm
    order = sorted(range(3), key=lambda axis: -abs(vector[axis]))  # stable: x before y before z
    letters = [AXIS_LETTERS[axis][int(vector[axis] > 0)] for axis in order[:2]]
    return letters[0] if abs(vector[order[0]]) >= OBLIQUE_BELOW else letters[0] + letters[1]


def orientation_letters(plane: Plane) -> dict[str, str]:
    """The patient direction at the middle of each edge of a slice displayed as ``plane`` says:
    the right edge is where the row direction points, the bottom where the column direction
    points, the left and top edges the opposite ways. Keys "left", "right", "top", "bottom"."""
    row = np.asarray(plane.row_direction, dtype=float)
    column = np.asarray(plane.column_direction, dtype=float)
    return {
        "left": direction_letters(-row),
        "right": direction_letters(row),
        "top": direction_letters(-column),
        "bottom": direction_letters(column),
    }


def annotate(
    pixels: np.ndarray, findings: Sequence[MeasuredFinding], *, plane: Plane | None = None
) -> Image.Image:
    """An RGB image of ``pixels`` with each finding's box and label drawn on it.

    The slice is first resized (bicubic) so that its long side is between MIN_LONG_SIDE and
    MAX_LONG_SIDE pixels; boxes are scaled with it. Tumours are drawn over the no-tumour class,
    and the most confident finding on top. With ``plane`` (the slice's place in the patient),
    the patient's directions are lettered at the middle of each edge (see orientation_letters);
    labels avoid the letters where they can and are drawn over them where they cannot.
    """
    image = _to_image(pixels)
    scale = 1.0
    long_side = max(image.size)
    if 0 < long_side < MIN_LONG_SIDE:
        scale = MIN_LONG_SIDE / long_side
    elif long_side > MAX_LONG_SIDE:
        scale = MAX_LONG_SIDE / long_side
    if scale != 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    draw = ImageDraw.Draw(image)
    # Letters only where the file says which way the patient lies (never a guessed plane).
    oriented = plane is not None and plane.oriented
    marks = _orientation_marks(draw, image.size, plane) if plane is not None and oriented else []
    if not findings:
        _draw_marks(draw, marks)
        return image
    long_side = max(image.size)
    line = max(2, round(long_side / 200))
    font_size = max(12, round(long_side / 32))

    def priority(item: MeasuredFinding) -> tuple[bool, float]:
        return class_kind(item.finding.class_name) != "negative", item.finding.confidence

    # Labels are placed most important first (it gets the best spot), drawn least first.
    ordered = sorted(findings, key=priority, reverse=True)
    boxes = [_scaled_box(item, scale, image.size) for item in ordered]
    placed: list[tuple[int, int, int, int]] = [mark.rect for mark in marks]
    labels: list[tuple[str, ImageFont.FreeTypeFont, tuple[int, int, int, int]]] = []
    for item, box in zip(ordered, boxes, strict=True):
        text = label_text(item)
        font = _fit_font(text, font_size, image.width)
        rect = _place_label(text, font, box, image.size, placed)
        placed.append(rect)
        labels.append((text, font, rect))

    for item, box in reversed(list(zip(ordered, boxes, strict=True))):
        colour = class_colour(item.finding.class_name)
        if class_kind(item.finding.class_name) == "negative":
            _dashed_rectangle(draw, box, colour, max(1, line // 2), dash=4 * line)
        else:
            draw.rectangle(box, outline=colour, width=line)
    _draw_marks(draw, marks)
    for item, (text, font, rect) in reversed(list(zip(ordered, labels, strict=True))):
        colour = class_colour(item.finding.class_name)
        draw.rectangle(rect, fill=colour)
        pad = _padding(font)
        draw.text((rect[0] + pad, rect[1] + pad), text, font=font, fill=text_colour(colour))
    return image


def annotated_jpeg(
    pixels: np.ndarray,
    findings: Sequence[MeasuredFinding],
    quality: int = 90,
    *,
    plane: Plane | None = None,
) -> bytes:
    """``annotate`` encoded as a baseline JPEG (no chroma subsampling: keeps thin coloured lines
    and small label text crisp); with ``plane``, orientation letters at the image edges."""
    buffer = io.BytesIO()
    image = annotate(pixels, findings, plane=plane)
    image.save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


@dataclass(frozen=True)
class _Mark:
    """One orientation letter (or pair) placed on the image: ``rect`` is its inked extent,
    outline included, as (x1, y1, x2, y2)."""

    text: str
    font: ImageFont.FreeTypeFont
    xy: tuple[int, int]
    anchor: str
    stroke: int
    rect: tuple[int, int, int, int]


def _orientation_marks(
    draw: ImageDraw.ImageDraw, size: tuple[int, int], plane: Plane
) -> list[_Mark]:
    """Where the orientation letters go: centred on each edge, a small margin inside it, in a
    bold font scaled with the image (about a 30th of its long side)."""
    width, height = size
    font_size = max(14, round(max(size) / 30))
    font = _font(font_size)
    stroke = max(1, round(font_size / 9))
    margin = stroke + max(2, round(font_size / 5))
    places = {
        "left": ((margin, height // 2), "lm"),
        "right": ((width - 1 - margin, height // 2), "rm"),
        "top": ((width // 2, margin), "mt"),
        "bottom": ((width // 2, height - 1 - margin), "mb"),
    }
    marks = []
    for edge, text in orientation_letters(plane).items():
        if not text:
            continue
        xy, anchor = places[edge]
        left, top, right, bottom = draw.textbbox(
            xy, text, font=font, anchor=anchor, stroke_width=stroke
        )
        rect = (int(left), int(top), int(right), int(bottom))
        marks.append(_Mark(text, font, xy, anchor, stroke, rect))
    return marks


def _draw_marks(draw: ImageDraw.ImageDraw, marks: Sequence[_Mark]) -> None:
    for mark in marks:
        draw.text(
            mark.xy,
            mark.text,
            font=mark.font,
            anchor=mark.anchor,
            fill=ORIENTATION_COLOUR,
            stroke_width=mark.stroke,
            stroke_fill=ORIENTATION_OUTLINE,
        )


def _to_image(pixels: np.ndarray) -> Image.Image:
    array = np.asarray(pixels)
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    image = Image.fromarray(np.ascontiguousarray(array))
    return image if image.mode == "RGB" else image.convert("RGB")


def _font(size: int) -> ImageFont.FreeTypeFont:
    cache: dict[int, ImageFont.FreeTypeFont] | None = getattr(_local, "fonts", None)
    if cache is None:
        cache = _local.fonts = {}
    font = cache.get(size)
    if font is None:
        font = cache[size] = ImageFont.truetype(str(LABEL_FONT), size)
    return font


def _padding(font: ImageFont.FreeTypeFont) -> int:
    return max(2, round(font.size / 5))


def _label_size(text: str, font: ImageFont.FreeTypeFont) -> tuple[int, int]:
    ascent, descent = font.getmetrics()
    pad = _padding(font)
    return round(font.getlength(text)) + 2 * pad, ascent + descent + 2 * pad


def _fit_font(text: str, size: int, width: int) -> ImageFont.FreeTypeFont:
    """The font at ``size``, smaller if the label would be wider than the image."""
    font = _font(size)
    while size > 8 and _label_size(text, font)[0] > width:
        size -= 1
        font = _font(size)
    return font


def _scaled_box(
    item: MeasuredFinding, scale: float, size: tuple[int, int]
) -> tuple[int, int, int, int]:
    box = item.finding.box
    width, height = size
    x1 = min(max(round(box.x1 * scale), 0), width - 1)
    y1 = min(max(round(box.y1 * scale), 0), height - 1)
    x2 = min(max(round(box.x2 * scale), x1), width - 1)
    y2 = min(max(round(box.y2 * scale), y1), height - 1)
    return x1, y1, x2, y2


def _place_label(
    text: str,
    font: ImageFont.FreeTypeFont,
    box: tuple[int, int, int, int],
    size: tuple[int, int],
    taken: Sequence[tuple[int, int, int, int]],
) -> tuple[int, int, int, int]:
    """The label's rectangle: above the box, else inside its top, below it, inside its bottom;
    always inside the image, and where possible clear of labels already placed."""
    label_w, label_h = _label_size(text, font)
    width, height = size
    x = min(max(box[0], 0), max(width - label_w, 0))
    candidates = (box[1] - label_h, box[1], box[3] + 1, box[3] - label_h)
    rects = []
    for y in candidates:
        top = min(max(y, 0), max(height - label_h, 0))
        rects.append((x, top, min(x + label_w, width) - 1, min(top + label_h, height) - 1))
    for rect in rects:
        if not any(_overlaps(rect, other) for other in taken):
            return rect
    return rects[0]


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _dashed_rectangle(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    colour: RGB,
    width: int,
    dash: int,
) -> None:
    x1, y1, x2, y2 = box
    step = dash * 2
    for x in range(x1, x2 + 1, step):
        end = min(x + dash, x2)
        draw.line([(x, y1), (end, y1)], fill=colour, width=width)
        draw.line([(x, y2), (end, y2)], fill=colour, width=width)
    for y in range(y1, y2 + 1, step):
        end = min(y + dash, y2)
        draw.line([(x1, y), (x1, end)], fill=colour, width=width)
        draw.line([(x2, y), (x2, end)], fill=colour, width=width)
