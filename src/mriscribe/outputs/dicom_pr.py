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

from mriscribe.analysis import Analysis, MeasuredFinding
from mriscribe.outputs.base import Artifact, Rendering
from mriscribe.outputs.dicom_source import (
    DicomSource,
    SourceImage,
    analysed_frames,
    image_reference,
    local_time,
    new_instance,
    part10,
)
from mriscribe.report.facts import LesionFact, is_negative_class

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


def displayed_areas(source: DicomSource) -> list[Dataset]:
    """Displayed Area: each whole image, scaled to fit; with its pixel spacing where the
    source states one (else square pixels). One item per size and spacing, referencing its
    images where there are several."""
    groups: dict[tuple[int, int, tuple[float, ...]], list[Dataset]] = defaultdict(list)
    for header in source.instances:
        spacing = tuple(float(v) for v in header.get("PixelSpacing") or ())
        groups[(int(header.Columns), int(header.Rows), spacing)].append(header)
    items = []
    for (columns, rows, spacing), headers in groups.items():
        item = Dataset()
        if len(groups) > 1:
            item.ReferencedImageSequence = [image_reference(header) for header in headers]
        item.DisplayedAreaTopLeftHandCorner = [1, 1]
        item.DisplayedAreaBottomRightHandCorner = [columns, rows]
        item.PresentationSizeMode = "SCALE TO FIT"
        if len(spacing) == 2 and min(spacing) > 0:
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


def add_modality_lut(instance: Dataset, source: DicomSource) -> bool:
    """The source's rescale, where every instance states the same one (a presentation state
    has one Modality LUT for all its images). False where they differ: no one window then
    means the same on every image."""
    rescales = {
        (_number(h.get("RescaleSlope")), _number(h.get("RescaleIntercept")), h.get("RescaleType"))
        for h in source.instances
    }
    if len(rescales) > 1:
        return False
    slope, intercept, rescale_type = rescales.pop()
    if slope is not None and intercept is not None:
        instance.RescaleSlope = slope
        instance.RescaleIntercept = intercept
        instance.RescaleType = rescale_type or "US"
    return True


def window(header: Dataset) -> tuple[float, float, str] | None:
    """The header's first window (centre, width, VOI LUT function) where the decoder shows the
    image through it (imaging/dicom.py: finite, a function it knows or else LINEAR, a width the
    function allows), else None."""
    centre, width = _number(header.get("WindowCenter")), _number(header.get("WindowWidth"))
    if centre is None or width is None:
        return None
    function = str(header.get("VOILUTFunction") or "").strip().upper()
    if function not in VOI_FUNCTIONS:
        function = "LINEAR"
    usable = width >= 1 if function == "LINEAR" else width > 0
    return (centre, width, function) if usable else None


def voi_items(source: DicomSource) -> list[Dataset]:
    """Softcopy VOI LUT: each instance's own window, the one the decoder showed the detector;
    an item per distinct window, naming its images unless it is every image's. An instance
    without a usable window gets none (the viewer's default)."""
    windows: dict[tuple[float, float, str], list[Dataset]] = defaultdict(list)
    for header in source.instances:
        found = window(header)
        if found is not None:
            windows[found].append(header)
    frames = analysed_frames(source)
    items = []
    for (centre, width, function), members in windows.items():
        item = Dataset()
        if len(members) < len(source.instances):
            item.ReferencedImageSequence = [
                image_reference(h, frames[str(h.SOPInstanceUID)]) for h in members
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
    """The GSPS of ``rendering``'s analysis on ``source``'s instances."""
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
    created = local_time(rendering.created)
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


@dataclass(frozen=True)
class PresentationState:
    name: str = "dicom-pr"
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
