"""The presentation state: a Grayscale Softcopy Presentation State that has any PACS viewer draw
the detections' boxes and labels on the source images, each box carrying its lesion's tracking
UID (the SR's)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from highdicom.color import CIELabColor
from highdicom.pr import (
    AnnotationUnitsValues,
    GraphicLayer,
    GraphicObject,
    GraphicTypeValues,
    TextJustificationValues,
    TextObject,
)
from pydicom.dataset import Dataset
from pydicom.uid import GrayscaleSoftcopyPresentationStateStorage
from pydicom.valuerep import DA, TM

from mriscribe.analysis import Analysis, ImageResult, MeasuredFinding
from mriscribe.outputs.base import Artifact, OutputRefusedError, Rendering
from mriscribe.outputs.dicom_source import (
    DicomSource,
    SourceImage,
    analysed_frames,
    image_reference,
    new_instance,
    part10,
    result_time,
)
from mriscribe.report.facts import LesionFact, is_negative_class

OUTPUT_NAME = "dicom-pr"
SERIES_NUMBER = 9902
CONTENT_LABEL = "MRISCRIBE"
UNVERIFIED = "Preliminary machine read, unverified"
SERIES_DESCRIPTION = "mriscribe detections: preliminary machine read, unverified"
# The no-tumour class's layer: drawn first (under the tumours), a note and no box (its box is
# the whole brain, which a viewer's user would read as a giant lesion).
NEGATIVE_ORDER = 1
# Label text height as a share of the image's long side, as render/annotate.py sizes its labels
# (PIXEL units: a viewer that fits the text to its box scales it with the image), and the width
# of one character as a share of that height.
LABEL_HEIGHT = 1 / 32
CHAR_WIDTH = 0.6
# The label's own characters in ASCII: viewers and the source's character set (often Latin-1)
# show these everywhere; render/annotate.py's approximately, times and middle dot signs are
# not in every repertoire.
_ASCII_LABEL = str.maketrans({"\u2248": "~", "\u00d7": "x", "\u00b7": "-"})

# The VOI LUT functions the decoder applies (imaging/dicom.py); any other is LINEAR there.
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")

# mriscribe reads brain MRI: its presentation states are of the head, an unpaired part, so
# their General Series needs no Laterality (type 2C) where the source does not name the part.
BODY_PART = "HEAD"


@dataclass(frozen=True)
class Layer:
    """One graphic layer: a class's findings, drawn in the class's colour."""

    name: str
    class_name: str
    order: int

    def dataset(self) -> GraphicLayer:
        from mriscribe.render.annotate import class_colour

        description = f"{self.class_name}: {UNVERIFIED.lower()}"
        if len(description) > 64:
            description = f"{self.class_name[: 62 - len(UNVERIFIED)]}: {UNVERIFIED.lower()}"
        return GraphicLayer(
            self.name,
            self.order,
            description,
            CIELabColor.from_rgb(*class_colour(self.class_name)),
        )


def layers(analysis: Analysis) -> dict[str, Layer]:
    """One layer per class found, by class name: the no-tumour class first (drawn under the
    rest), then the tumour classes in the order the study first shows them. A viewer lists the
    layers, so each class can be shown or hidden, and colours them as the PDF does."""
    names = dict.fromkeys(
        item.finding.class_name for image in analysis.images for item in image.findings
    )
    ordered = sorted(names, key=lambda name: not is_negative_class(name))
    made: dict[str, Layer] = {}
    taken: set[str] = set()
    for order, class_name in enumerate(ordered, start=NEGATIVE_ORDER):
        name = _code_string(class_name)
        suffix = 2
        while name in taken:
            name = f"{_code_string(class_name)[:13]} {suffix}"
            suffix += 1
        taken.add(name)
        made[class_name] = Layer(name, class_name, order)
    return made


def _code_string(text: str) -> str:
    """``text`` as a DICOM code string of at most 16 characters (a layer's name)."""
    upper = "".join(ch if ch.isascii() and (ch.isalnum() or ch == " ") else "_" for ch in text)
    return upper.upper().strip()[:16].strip() or "FINDING"


def label(item: MeasuredFinding) -> str:
    """What the annotated images print beside a box (render/annotate.py), in ASCII."""
    from mriscribe.render.annotate import label_text

    return label_text(item).translate(_ASCII_LABEL)


def box_points(item: MeasuredFinding, columns: int, rows: int) -> np.ndarray:
    """The finding's box as a closed polyline (column, row) in PIXEL units, inside the image."""
    box = item.finding.box
    x1, x2 = (min(max(float(v), 0.0), float(columns)) for v in (box.x1, box.x2))
    y1, y2 = (min(max(float(v), 0.0), float(rows)) for v in (box.y1, box.y2))
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]], dtype=np.float64)


def label_box(
    text: str, points: np.ndarray, columns: int, rows: int
) -> tuple[float, float, float, float]:
    """Where a box's label goes, inside the image: its bounding box (left, top, right, bottom)
    just above the box (below it, or inside its top edge, where there is no room), starting
    at the box's left edge (further left where the image ends first)."""
    height = min(max(columns, rows) * LABEL_HEIGHT, float(rows))
    width = min(len(text) * CHAR_WIDTH * height, float(columns))
    x1, y1 = (float(v) for v in points[0])
    y2 = float(points[2][1])
    left = min(x1, columns - width)
    if y1 - height >= 0:
        top = y1 - height
    elif y2 + height <= rows:
        top = y2
    else:
        top = y1
    return left, top, left + width, top + height


def annotations(
    image: SourceImage,
    layer_of: dict[str, Layer],
    rendering: Rendering,
    owners: dict[int, LesionFact],
) -> list[Dataset]:
    """The image's graphic annotations, one per layer: each tumour's box (its lesion's tracking
    identifier and UID, ``owners`` giving each finding's lesion by its id()) and label; each
    no-tumour finding's label only."""
    columns, rows = int(image.header.Columns), int(image.header.Rows)
    graphics: dict[Layer, list[GraphicObject]] = defaultdict(list)
    texts: dict[Layer, list[TextObject]] = defaultdict(list)
    for item in image.image.findings:
        layer = layer_of[item.finding.class_name]
        lesion = owners.get(id(item))
        tracking = (
            {
                "tracking_id": rendering.tracking_identifier(lesion.id),
                "tracking_uid": rendering.tracking_uid(lesion.id),
            }
            if lesion is not None
            else {}
        )
        points = box_points(item, columns, rows)
        if not is_negative_class(item.finding.class_name):
            graphics[layer].append(
                GraphicObject(
                    GraphicTypeValues.POLYLINE, points, AnnotationUnitsValues.PIXEL, **tracking
                )
            )
        text = label(item)
        texts[layer].append(
            TextObject(
                text,
                AnnotationUnitsValues.PIXEL,
                bounding_box=label_box(text, points, columns, rows),
                text_justification=TextJustificationValues.LEFT,
                **tracking,
            )
        )
    made = []
    for layer in sorted(texts, key=lambda layer: layer.order):
        annotation = Dataset()
        annotation.ReferencedImageSequence = [image_reference(image.header, [image.frame])]
        annotation.GraphicLayer = layer.name
        annotation.TextObjectSequence = texts[layer]
        if graphics[layer]:
            annotation.GraphicObjectSequence = graphics[layer]
        made.append(annotation)
    return made


def referenced_series(source: DicomSource) -> list[Dataset]:
    """Presentation State Relationship: every analysed instance, by series."""
    frames = analysed_frames(source)
    by_series: dict[str, list[Dataset]] = defaultdict(list)
    for header in source.instances:
        by_series[str(header.SeriesInstanceUID)].append(
            image_reference(header, frames[str(header.SOPInstanceUID)])
        )
    items = []
    for series_uid, references in by_series.items():
        item = Dataset()
        item.ReferencedImageSequence = references
        item.SeriesInstanceUID = series_uid
        items.append(item)
    return items


def image_spacing(image: ImageResult) -> tuple[float, float] | None:
    """The analysed image's own pixel spacing (row, column; mm), the one its sizes were made
    with, where it was stated (the decoder read PixelSpacing, or a multi-frame file's Pixel
    Measures functional group): two positive finite values; None where the configured default
    was used or it is malformed."""
    if image.spacing_estimated:
        return None
    try:
        values = tuple(float(v) for v in image.spacing_mm)
    except (TypeError, ValueError):
        return None
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
        return None
    return values[0], values[1]


def displayed_areas(source: DicomSource) -> list[Dataset]:
    """Displayed Area: each whole image, scaled to fit; with its pixel spacing where the
    analysis knew one from the image (:func:`image_spacing`; else square pixels). One item per
    size and spacing, referencing its images where there are several."""
    spacing_of: dict[str, tuple[float, float] | None] = {}
    for image in source.images:
        spacing_of.setdefault(image.sop_instance_uid, image_spacing(image.image))
    groups: dict[tuple[int, int, tuple[float, float] | None], list[Dataset]] = defaultdict(list)
    for header in source.instances:
        spacing = spacing_of.get(str(header.SOPInstanceUID))
        groups[(int(header.Columns), int(header.Rows), spacing)].append(header)
    items = []
    for (columns, rows, spacing), headers in groups.items():
        item = Dataset()
        if len(groups) > 1:
            item.ReferencedImageSequence = [image_reference(header) for header in headers]
        item.DisplayedAreaTopLeftHandCorner = [1, 1]
        item.DisplayedAreaBottomRightHandCorner = [columns, rows]
        item.PresentationSizeMode = "SCALE TO FIT"
        if spacing is not None:
            item.PresentationPixelSpacing = list(spacing)
        else:
            item.PresentationPixelAspectRatio = [1, 1]
        items.append(item)
    return items


def _number(value: object) -> float | None:
    """A possibly multi-valued attribute's first value as a finite number (the standard's
    default window is the first), None where there is none or it is malformed."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        value = value[0] if len(value) else None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# Where an enhanced or legacy-converted multi-frame image keeps its window and rescale: the
# functional group macros (PS3.3 C.7.6.16), shared by every frame or per frame.
_GROUPS = {
    "WindowCenter": "FrameVOILUTSequence",
    "WindowWidth": "FrameVOILUTSequence",
    "VOILUTFunction": "FrameVOILUTSequence",
    "RescaleSlope": "PixelValueTransformationSequence",
    "RescaleIntercept": "PixelValueTransformationSequence",
    "RescaleType": "PixelValueTransformationSequence",
}


def frame_value(header: Dataset, frame: int | None, keyword: str) -> object:
    """An image attribute of one frame: the header's own, else (a multi-frame image) the
    Shared, then the frame's Per-Frame Functional Groups' macro holding it; None where none
    states it."""
    if keyword in header:
        return header.get(keyword)
    macro = _GROUPS.get(keyword)
    if macro is None:
        return None
    groups = []
    for group_keyword, index in (
        ("SharedFunctionalGroupsSequence", 0),
        ("PerFrameFunctionalGroupsSequence", (frame or 1) - 1),
    ):
        sequence = header.get(group_keyword)
        if sequence is not None and 0 <= index < len(sequence):
            groups.append(sequence[index])
    for group in groups:
        items = group.get(macro)
        if items and keyword in items[0]:
            return items[0].get(keyword)
    return None


def _frames(source: DicomSource) -> list[tuple[Dataset, int | None]]:
    """Every analysed image as (its instance's header, its frame), instance by instance."""
    frames = analysed_frames(source)
    return [
        (header, frame)
        for header in source.instances
        for frame in frames.get(str(header.SOPInstanceUID)) or [None]
    ]


def _rescale(header: Dataset, frame: int | None) -> tuple[float | None, float | None, str]:
    return (
        _number(frame_value(header, frame, "RescaleSlope")),
        _number(frame_value(header, frame, "RescaleIntercept")),
        str(frame_value(header, frame, "RescaleType") or ""),
    )


def add_modality_lut(instance: Dataset, source: DicomSource) -> bool:
    """The source's rescale (a multi-frame image's from its functional groups), where every
    analysed image states the same one (a presentation state has one Modality LUT for all its
    images). False where they differ: no one window then means the same on every image."""
    rescales = {_rescale(header, frame) for header, frame in _frames(source)}
    if len(rescales) > 1:
        return False
    slope, intercept, rescale_type = rescales.pop()
    if slope is not None and intercept is not None:
        instance.RescaleSlope = slope
        instance.RescaleIntercept = intercept
        instance.RescaleType = rescale_type or "US"
    return True


def window(header: Dataset, frame: int | None = None) -> tuple[float, float, str] | None:
    """The image's first window (centre, width, VOI LUT function; a multi-frame image's from
    its functional groups) where the decoder shows the image through it (imaging/dicom.py:
    finite, a function it knows or else LINEAR, a width the function allows), else None."""
    centre = _number(frame_value(header, frame, "WindowCenter"))
    width = _number(frame_value(header, frame, "WindowWidth"))
    if centre is None or width is None:
        return None
    function = str(frame_value(header, frame, "VOILUTFunction") or "").strip().upper()
    if function not in VOI_FUNCTIONS:
        function = "LINEAR"
    usable = width >= 1 if function == "LINEAR" else width > 0
    return (centre, width, function) if usable else None


def voi_items(source: DicomSource) -> list[Dataset]:
    """Softcopy VOI LUT: each image's own window, the one the decoder showed the detector; an
    item per distinct window, naming its images (and frames) unless it is every image's. An
    image without a usable window gets none (the viewer's default)."""
    images = _frames(source)
    windows: dict[tuple[float, float, str], dict[str, list[int | None]]] = defaultdict(dict)
    headers = {str(header.SOPInstanceUID): header for header in source.instances}
    for header, frame in images:
        found = window(header, frame)
        if found is not None:
            windows[found].setdefault(str(header.SOPInstanceUID), []).append(frame)
    items = []
    for (centre, width, function), members in windows.items():
        item = Dataset()
        if sum(len(frames) for frames in members.values()) < len(images):
            item.ReferencedImageSequence = [
                image_reference(headers[uid], frames) for uid, frames in members.items()
            ]
        item.WindowCenter = centre
        item.WindowWidth = width
        if function != "LINEAR":  # LINEAR is the default
            item.VOILUTFunction = function
        items.append(item)
    return items


def presentation_lut_shape(source: DicomSource) -> str:
    """INVERSE where every image is MONOCHROME1 (shown as its header asks), else IDENTITY (a
    presentation state has one shape for all its images)."""
    inverse = all(h.get("PhotometricInterpretation") == "MONOCHROME1" for h in source.instances)
    return "INVERSE" if inverse else "IDENTITY"


def presentation_state(rendering: Rendering, source: DicomSource) -> Dataset:
    """The GSPS of ``rendering``'s analysis on ``source``'s instances; OutputRefusedError
    where a source image is in colour (a grayscale presentation state is for one sample per
    pixel: PS3.3 A.33.1)."""
    if any(_samples(header) != 1 for header in source.instances):
        raise OutputRefusedError(
            OUTPUT_NAME,
            "the study holds colour images (more than one sample per pixel): colour images "
            "need a colour presentation state, which mriscribe does not make (the DICOM SR "
            "and the encapsulated PDF work for them)",
        )
    analysis = rendering.analysis
    instance = new_instance(
        rendering,
        source,
        sop_class_uid=GrayscaleSoftcopyPresentationStateStorage,
        modality="PR",
        purpose="dicom-pr",
        series_number=SERIES_NUMBER,
        series_description=SERIES_DESCRIPTION,
    )
    instance.BodyPartExamined = str(source.first.get("BodyPartExamined") or BODY_PART)
    created = result_time(rendering.created, source)
    # Presentation State Identification
    instance.ContentLabel = CONTENT_LABEL
    instance.ContentDescription = UNVERIFIED
    instance.PresentationCreationDate = DA(created.date())
    instance.PresentationCreationTime = TM(created.time())
    instance.ContentCreatorName = ""
    instance.ReferencedSeriesSequence = referenced_series(source)
    instance.DisplayedAreaSelectionSequence = displayed_areas(source)
    layer_of = layers(analysis)
    # The lesion of each tumour finding, by the MeasuredFinding's id().
    owners = {id(measured): lesion for lesion, _f, _i, measured in analysis.lesion_findings()}
    drawn = [
        annotation
        for image in source.images
        for annotation in annotations(image, layer_of, rendering, owners)
    ]
    if drawn:
        instance.GraphicAnnotationSequence = drawn
        used = {annotation.GraphicLayer for annotation in drawn}
        instance.GraphicLayerSequence = [
            layer.dataset() for layer in layer_of.values() if layer.name in used
        ]
    if add_modality_lut(instance, source) and (windows := voi_items(source)):
        instance.SoftcopyVOILUTSequence = windows
    instance.PresentationLUTShape = presentation_lut_shape(source)
    return instance


def _samples(header: Dataset) -> int:
    try:
        return int(header.get("SamplesPerPixel") or 1)
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True)
class PresentationState:
    name: str = OUTPUT_NAME
    summary: str = (
        "DICOM presentation state (GSPS): the boxes and labels drawn by any PACS viewer on the "
        "source images"
    )
    media_type: str = "application/dicom"
    needs_images: bool = False
    needs_dicom: bool = True

    def render(self, rendering: Rendering) -> tuple[Artifact, ...]:
        source = DicomSource.of(rendering, self.name)
        state = presentation_state(rendering, source)
        return (Artifact("pr.dcm", self.media_type, part10(state)),)


OUTPUT = PresentationState()
