"""The PDF report: its text, tables, images and page numbers; reproducible bytes; speed."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pypdf import PdfReader

from conftest import HELDOUT
from mriscribe.analysis import Analysis, ImageResult, MeasuredFinding, Measurement, Report
from mriscribe.detection import Box, Finding, ModelInfo
from mriscribe.imaging import Slice, decode_raster
from mriscribe.imaging.geometry import Plane, SourceRef
from mriscribe.render.annotate import TIMES, annotated_jpeg
from mriscribe.render.pdf import ORIENTATION_NOTE, render_pdf
from mriscribe.report.facts import (
    FindingFact,
    ImageFacts,
    LesionFact,
    SeriesFacts,
    Side,
    StudyFacts,
    image_facts,
)
from mriscribe.report.template import template_report
from mriscribe.report.wording import (
    extent_text,
    number_ranges,
    percent,
    side_text,
    size_text,
    volume_text,
)

SPACING = (0.5, 0.5)
SOURCE = "default 0.5 mm/px (estimate)"
WHEN = datetime(2025, 6, 1, 12, 30, 5, tzinfo=UTC)
EIGHT = (
    "glioma_1.png",
    "glioma_2.png",
    "meningioma_1.png",
    "meningioma_2.png",
    "pituitary_1.png",
    "pituitary_2.png",
    "no_tumor_1.png",
    "no_tumor_2.png",
)
MEASURED = "DICOM PixelSpacing"
SLICE_GAP = 5.0  # mm between the slices of a series with geometry
UID = "1.2.826.0.1.3680043.8.498.10123"
UID_LIKE = re.compile(r"\d+(?:\.\d+){3,}")


@dataclass(frozen=True)
class Linked:
    """A lesion as a test states it: the class and images of its detections (one per image),
    and what the geometry measured (the study linking is not under test here)."""

    class_name: str
    images: tuple[int, ...]
    side: Side | None = None
    craniocaudal_mm: float = 10.0
    volume_ml: float = 1.0


def link(images: Sequence[ImageFacts], linked: Sequence[Linked]) -> tuple[LesionFact, ...]:
    """The lesions of ``linked`` over these image facts (their own FindingFacts, as the study
    linker makes them), numbered from 1, largest on the image with the longest box side."""
    lesions = []
    for number, spec in enumerate(linked, start=1):
        detections = tuple(
            next(f for f in images[n - 1].tumours if f.class_name == spec.class_name)
            for n in spec.images
        )
        lesions.append(
            LesionFact(
                id=number,
                class_name=spec.class_name,
                confidence=max(f.confidence for f in detections),
                images=spec.images,
                largest=max(detections, key=lambda f: f.max_diameter_mm),
                detections=detections,
                geometry=True,
                craniocaudal_mm=spec.craniocaudal_mm,
                volume_ml=spec.volume_ml,
                side=spec.side,
            )
        )
    return tuple(lesions)


def build(
    slices: list[Slice],
    findings: list[list[Finding]],
    model: ModelInfo,
    *,
    jpeg: bool = True,
    when: datetime = WHEN,
    linked: Sequence[Linked] | None = None,
) -> Analysis:
    """An Analysis as the pipeline makes one: default spacing, template report. With
    ``linked``, the slices are one series with geometry (measured spacing, slice positions)
    and its detections the lesions ``linked`` states."""
    source, estimated = (SOURCE, True) if linked is None else (MEASURED, False)
    images = []
    for number, (item, found) in enumerate(zip(slices, findings, strict=True), start=1):
        measured = tuple(
            MeasuredFinding(
                f,
                Measurement(f.box.width * 0.5, f.box.height * 0.5, SPACING, source, estimated),
            )
            for f in sorted(found, key=lambda f: -f.confidence)
        )
        picture = annotated_jpeg(item.pixels, measured) if jpeg else None
        position = None if linked is None else number * SLICE_GAP
        images.append(
            ImageResult(
                number,
                item,
                measured,
                SPACING,
                source,
                estimated,
                position_mm=position,
                annotated_jpeg=picture,
            )
        )
    image_list = tuple(
        image_facts(
            image.number,
            [
                FindingFact(
                    image.number,
                    m.finding.class_name,
                    m.finding.confidence,
                    m.size.width_mm,
                    m.size.height_mm,
                    m.size.estimated,
                )
                for m in image.findings
            ],
            image.spacing_source,
            image.spacing_estimated,
        )
        for image in images
    )
    lesions: tuple[LesionFact, ...] = ()
    series: tuple[SeriesFacts, ...] = ()
    if linked is not None:
        lesions = link(image_list, linked)
        numbers = tuple(image.number for image in images)
        series = (SeriesFacts(1, "DICOM", numbers, spacing_mm=SLICE_GAP),)
    facts = StudyFacts(image_list, 0.25, lesions=lesions, series=series)
    report = template_report(facts, model_name="mriscribe-yolov8n", model_version=model.version)
    return Analysis(when, tuple(images), facts, report, model, 0.25, 0.45)


def detected(detector, files: tuple[str, ...], names: dict[str, str] | None = None) -> Analysis:
    slices = [
        decode_raster((HELDOUT / file).read_bytes(), (names or {}).get(file, file))
        for file in files
    ]
    return build(slices, detector.detect([s.pixels for s in slices]), detector.info)


@pytest.fixture(scope="module")
def one(detector) -> Analysis:
    return detected(detector, ("glioma_1.png",))


@pytest.fixture(scope="module")
def eight(detector) -> Analysis:
    return detected(detector, EIGHT, {"glioma_2.png": "Ñandú_é.png"})


def read(pdf: bytes) -> tuple[PdfReader, list[str]]:
    reader = PdfReader(io.BytesIO(pdf))
    return reader, [page.extract_text() for page in reader.pages]


def image_streams(reader: PdfReader) -> dict[int, bytes]:
    """Every image XObject in the document (by object number), with its stream data."""
    found: dict[int, bytes] = {}
    for page in reader.pages:
        xobjects = page["/Resources"].get("/XObject", {})
        for ref in xobjects.values():
            obj = ref.get_object()
            if obj["/Subtype"] == "/Image":
                found[ref.idnum] = obj.get_data()
    return found


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_one_image_report(one):
    pdf = render_pdf(one)
    assert pdf.startswith(b"%PDF-")
    reader, pages = read(pdf)
    text = squash(" ".join(pages))
    assert "Brain MRI: automated first-read report" in text
    assert "Generated 2025-06-01T12:30:05Z (UTC)" in text
    for heading in (
        "Summary",
        "Examination",
        "Technique",
        "Findings",
        "Impression",
        "Recommendations",
        "Detections",
        "Annotated images",
        "Disclaimer",
    ):
        assert heading in text, heading
    item = one.images[0].findings[0]
    assert item.finding.class_name == "Glioma"
    confidence = f"{item.finding.confidence * 100:.1f}%"
    size = f"{item.size.width_mm:.1f} \u00d7 {item.size.height_mm:.1f}"
    assert f"Glioma {confidence}" in text  # the findings table row
    assert size in text
    assert "glioma_1.png" in text
    assert SOURCE in text
    assert "Positive: tumour detected by the automated system" in text
    assert "estimates: no pixel spacing in the files, default spacing used" in text
    assert "mriscribe-yolov8n" in text
    assert "not a diagnosis" in text
    count = len(reader.pages)
    for number, page in enumerate(pages, start=1):
        assert f"Page {number} of {count}" in page
        assert "Report: template" in page
    assert len(image_streams(reader)) == 1
    assert reader.metadata.producer == "mriscribe"
    assert reader.metadata.creation_date == WHEN


def test_eight_images_table_and_embedded_jpegs(eight):
    pdf = render_pdf(eight)
    reader, pages = read(pdf)
    text = squash(" ".join(pages))
    assert "Ñandú_é.png" in text
    for image in eight.images:
        assert f"Image {image.number} · {image.slice.name}" in text
        for item in image.findings:
            assert f"{item.finding.confidence * 100:.1f}%" in text
    # Every slice embedded once, as the annotated JPEG itself (no re-encoding).
    streams = image_streams(reader)
    assert len(streams) == len(eight.images)
    assert sorted(streams.values()) == sorted(image.annotated_jpeg for image in eight.images)
    classes = ", ".join(f"{n} ({c})" for n, c in eight.facts.counts_by_class.items())
    assert classes in text
    assert "Images analysed 8" in text
    assert f"Page {len(pages)} of {len(pages)}" in pages[-1]


def test_byte_identical_renders(eight):
    assert render_pdf(eight) == render_pdf(eight)


def test_annotated_jpeg_made_when_missing(detector, eight):
    without = detected(detector, ("meningioma_1.png",))
    bare = replace(without, images=tuple(replace(i, annotated_jpeg=None) for i in without.images))
    reader, _ = read(render_pdf(bare))
    (stream,) = image_streams(reader).values()
    assert stream == without.images[0].annotated_jpeg


def test_other_timestamp_changes_only_the_dates(eight):
    later = replace(eight, timestamp=WHEN + timedelta(days=40, hours=3, minutes=7))
    first, second = render_pdf(eight), render_pdf(later)
    assert first != second
    reader_a, pages_a = read(first)
    reader_b, pages_b = read(second)
    assert pages_b[0].count("2025-07-11T15:37:05Z") == 1
    assert [p.replace("2025-06-01T12:30:05Z", "2025-07-11T15:37:05Z") for p in pages_a] == pages_b
    assert image_streams(reader_a) == image_streams(reader_b)
    info_a, info_b = dict(reader_a.metadata), dict(reader_b.metadata)
    assert info_a.pop("/CreationDate") != info_b.pop("/CreationDate")
    assert info_a == info_b


def test_unicode_and_awkward_file_names(detector):
    names = {
        "glioma_1.png": "Ñandú_é-Øresund-Łódź-αβγ.png",
        "no_tumor_1.png": "{nb} 脑 scan.png",  # CJK is outside the bundled fonts
        "pituitary_1.png": "a-very-long-folder-name/" * 8 + "pituitary_final.png",
    }
    analysis = detected(detector, tuple(names), names)
    _, pages = read(render_pdf(analysis))
    text = squash(" ".join(pages))
    assert "Ñandú_é-Øresund-Łódź-αβγ.png" in text
    assert "{nb} ? scan.png" in text  # unknown characters become "?", "{nb}" stays as it is
    assert "pituitary_final.png" in text
    assert "\u00d7" in text


def test_no_findings_and_only_no_tumor(detector):
    slices = [
        decode_raster((HELDOUT / name).read_bytes(), name)
        for name in ("no_tumor_1.png", "no_tumor_2.png")
    ]
    found = detector.detect([s.pixels for s in slices])
    found[1] = []  # as if nothing passed the threshold on the second slice
    analysis = build(slices, found, detector.info)
    _, pages = read(render_pdf(analysis))
    text = squash(" ".join(pages))
    # One slice negative, one without any detection: not a negative study.
    assert "Indeterminate: not every image has a detection above the threshold" in text
    assert "Negative:" not in text
    assert "Lesions none" in text  # the summary counts lesions
    assert "Key images" not in text
    assert "no detection" in text
    assert "No detection above the threshold (indeterminate)" in text
    assert "negative finding (no tumour)" in text
    assert "n/a (no tumour)" in text


def test_sixty_images(detector):
    rng = np.random.default_rng(0)
    slices, findings = [], []
    for number in range(1, 61):
        pixels = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)  # distinct images
        slices.append(Slice(name=f"slice_{number:03d}.png", pixels=pixels))
        if number == 13:
            findings.append([Finding("Glioma", 0, 0.91, Box(30, 40, 70, 76))])
        elif 15 <= number <= 19:
            findings.append([])
        else:
            findings.append([Finding("No Tumor", 2, 0.8, Box(5, 5, 120, 120))])
    analysis = build(slices, findings, detector.info)
    reader, pages = read(render_pdf(analysis))
    text = squash(" ".join(pages))
    assert "images 1-12, 14, 20-60" in text
    assert "slice_060.png" in text
    assert len(image_streams(reader)) == 60
    assert f"Page 1 of {len(pages)}" in pages[0]
    assert all(f"Page {n} of {len(pages)}" in page for n, page in enumerate(pages, start=1))


def test_report_engine_and_other_sections_shown(one):
    report = Report(
        sections={"FINDINGS": "A line.\nAnother line.", "IMPRESSION": "Something."},
        engine="llm-qwen",
        fallback_reason=None,
    )
    _, pages = read(render_pdf(replace(one, report=report)))
    text = squash(" ".join(pages))
    assert "Report: llm-qwen" in text
    assert "Another line." in text
    assert "must be reviewed by a qualified radiologist" in text  # disclaimer always printed
    fallback = replace(report, engine="template", fallback_reason="model timed out")
    _, pages = read(render_pdf(replace(one, report=fallback)))
    text = squash(" ".join(pages))
    assert "template (fallback: model timed out)" in text
    assert "Report: template (fallback)" in text


def series_slices(count: int, seed: int = 1) -> list[Slice]:
    """``count`` distinct synthetic DICOM slices of one series, their source holding UIDs (which
    the PDF must never print)."""
    rng = np.random.default_rng(seed)
    return [
        Slice(
            name=f"IM{number:04d}.dcm",
            pixels=rng.integers(0, 255, (96, 96, 3), dtype=np.uint8),
            spacing_mm=SPACING,
            spacing_source=MEASURED,
            source=SourceRef(
                format="DICOM",
                series_key=(UID, f"{UID}.1"),
                study_uid=UID,
                series_uid=f"{UID}.1",
                sop_instance_uid=f"{UID}.1.{number}",
            ),
        )
        for number in range(1, count + 1)
    ]


def glioma(size: float, confidence: float = 0.9) -> Finding:
    return Finding("Glioma", 0, confidence, Box(10, 10, 10 + size, 10 + size * 0.8))


def between(text: str, start: str, end: str) -> str:
    """The text from heading ``start`` up to heading ``end``."""
    return text[text.index(start) : text.index(end, text.index(start))]


MODEL = ModelInfo(
    "/models/mriscribe-yolov8n.onnx",
    "onnxruntime",
    ("Glioma", "Meningioma", "No Tumor", "Pituitary"),
    (640, 640),
    version="1.0",
)


def fragments(page) -> list[tuple[float, float, str]]:
    """Each piece of text on ``page`` with where it starts (x, y in points from bottom left)."""
    found: list[tuple[float, float, str]] = []

    def visit(text, cm, tm, font, size) -> None:
        if text.strip():
            x = tm[4] * cm[0] + tm[5] * cm[2] + cm[4]
            y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
            found.append((x, y, text.strip()))

    page.extract_text(visitor_text=visit)
    return found


def lesion_row(lesion: LesionFact) -> str:
    """A lesion's row in the lesion table as the text extractor reads it, spelt by wording.py."""
    largest = lesion.largest
    hedge = "about " if largest.size_estimated else ""
    side = lesion.side or ("not stated" if lesion.geometry else "-")
    extent = "-" if lesion.craniocaudal_mm is None else extent_text(lesion.craniocaudal_mm)
    volume = "-" if lesion.volume_ml is None else volume_text(lesion.volume_ml)
    return (
        f"{lesion.id} {lesion.class_name} {side} {number_ranges(lesion.images)} "
        f"{hedge}{size_text(largest, TIMES)} on image {largest.image_number} "
        f"{extent} {volume} {percent(lesion.confidence)}"
    )


def assert_no_identifiers(text: str) -> None:
    """No UID, no folder path: the model shows by its name, slices by their file name only."""
    assert UID not in text
    assert UID_LIKE.search(text) is None
    assert "/models/" not in text and ".onnx" not in text
    assert re.search(r"\w/\w+/|\\\w", text) is None


@pytest.fixture(scope="module")
def series() -> Analysis:
    """One series with geometry: a glioma over images 2-4 (left), a meningioma on 6-7 (side not
    stated) and a pituitary tumour on image 4 (midline), whose key image is the glioma's too."""
    found = [
        [],
        [glioma(20, 0.8)],
        [glioma(30, 0.85)],
        [glioma(40, 0.9), Finding("Pituitary", 3, 0.6, Box(40, 60, 52, 70))],
        [],
        [Finding("Meningioma", 1, 0.7, Box(5, 5, 19, 21))],
        [Finding("Meningioma", 1, 0.75, Box(5, 5, 25, 21))],
        [Finding("No Tumor", 2, 0.8, Box(0, 0, 96, 96))],
    ]
    linked = [
        Linked("Glioma", (2, 3, 4), "left", 15.2, 3.456),
        Linked("Meningioma", (6, 7), None, 7.5, 0.04),
        Linked("Pituitary", (4,), "midline", 5.0, 0.123),
    ]
    return build(series_slices(8), found, MODEL, linked=linked)


def test_lesion_table_with_geometry(series):
    reader, pages = read(render_pdf(series))
    text = squash(" ".join(pages))
    facts = series.facts
    glioma_, meningioma, _ = facts.lesions
    assert glioma_.geometry and glioma_.side == "left" and meningioma.side is None
    table = between(text, "Lesions Lesion Class Side", "Examination")
    assert "Images Largest (W \u00d7 H) Extent Volume (est.) Confidence" in table
    for lesion in facts.lesions:
        assert lesion_row(lesion) in table, lesion_row(lesion)
    # As wording.py spells them: the row of lesion 1, written out.
    assert "1 Glioma left 2-4 20.0 \u00d7 16.0 mm on image 4 15 mm 3.5 ml 90.0%" in table
    assert "2 Meningioma not stated 6-7 10.0 \u00d7 8.0 mm on image 7 7.5 mm 0.04 ml 75.0%" in table
    assert "3 Pituitary midline 4 6.0 \u00d7 5.0 mm on image 4 5.0 mm 0.1 ml 60.0%" in table
    assert "Volume: a box-based estimate (mean box area \u00d7 depth), not a segmentation" in table
    assert "about" not in table  # measured spacing: no estimated size
    # The side rule exactly as the study code applies it.
    assert (
        "Side: the patient's, measured from the head's own midline on up to five slices around "
        "the lesion's largest; stated only when the median distance of its centre from the "
        "midline is at least 10 mm, no slice puts it more than 3 mm on the other side, and its "
        "box does not reach more than 5 mm across the midline."
    ) in table
    # The summary counts lesions, not detections.
    assert "Lesions 3 on images 2-4, 6-7 (6 detections linked across adjacent slices)" in text
    assert "Classes Glioma (1), Meningioma (1), Pituitary (1)" in text
    assert "Largest lesion 20.0 \u00d7 16.0 mm (lesion 1, Glioma, image 4)" in text
    # Key images: the shared image once, with both captions; no side where none is stated.
    keys = between(text, "Key images", "Detections")
    assert "Lesion 1: Glioma, left, image 4 Lesion 3: Pituitary, midline, image 4" in keys
    assert "Lesion 2: Meningioma, image 7" in keys
    assert keys.count("Lesion ") == 3
    # No plane in these slices' sources: no orientation letters, so no word about them.
    assert "orientation" not in text
    # Every image embedded once: the key images reuse the annotated images' objects.
    streams = image_streams(reader)
    assert sorted(streams.values()) == sorted(image.annotated_jpeg for image in series.images)
    # Nothing identifying; no file name in the new sections.
    assert_no_identifiers(text)
    assert ".dcm" not in table and ".dcm" not in keys


def test_key_images_drawn_when_not_rendered(series):
    bare = replace(series, images=tuple(replace(i, annotated_jpeg=None) for i in series.images))
    reader, pages = read(render_pdf(bare))
    text = squash(" ".join(pages))
    assert "Lesion 2: Meningioma, image 7" in text
    # Drawn once per image, shown by both sections.
    streams = image_streams(reader)
    assert sorted(streams.values()) == sorted(image.annotated_jpeg for image in series.images)


def test_key_images_lettered_with_the_patient_orientation(series):
    """Slices whose files state their plane: the images drawn here carry the orientation
    letters, and the key images say what the letters mean."""
    planes = [
        Plane.of((0, 0, n * SLICE_GAP), (-1, 0, 0), (0, 1, 0), SPACING)  # left on the left
        for n in range(1, len(series.images) + 1)
    ]
    images = tuple(
        replace(
            image,
            slice=replace(image.slice, source=replace(image.slice.source, plane=plane)),
            annotated_jpeg=None,
        )
        for image, plane in zip(series.images, planes, strict=True)
    )
    reader, pages = read(render_pdf(replace(series, images=images)))
    text = squash(" ".join(pages))
    keys = between(text, "Key images", "Detections")
    assert squash(ORIENTATION_NOTE) in keys
    assert "L/R" in ORIENTATION_NOTE and "A/P" in ORIENTATION_NOTE and "H/F" in ORIENTATION_NOTE
    assert text.count("orientation") == 1  # once, with the key images
    streams = image_streams(reader)
    expected = [
        annotated_jpeg(image.slice.pixels, image.findings, plane=plane)
        for image, plane in zip(series.images, planes, strict=True)
    ]
    assert sorted(streams.values()) == sorted(expected)
    unlettered = {image.annotated_jpeg for image in series.images}
    assert not unlettered & set(streams.values())


def test_lesion_table_without_geometry():
    """A study of PNG images: every detection a lesion, no extent, volume or side."""
    rng = np.random.default_rng(2)
    slices = [
        Slice(name=f"scan_{n}.png", pixels=rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
        for n in (1, 2, 3)
    ]
    found = [
        [glioma(40, 0.9), Finding("Meningioma", 1, 0.5, Box(60, 60, 80, 90))],
        [glioma(24, 0.7)],
        [],
    ]
    analysis = build(slices, found, MODEL)
    facts = analysis.facts
    assert not facts.geometry and len(facts.lesions) == 3
    _, pages = read(render_pdf(analysis))
    text = squash(" ".join(pages))
    table = between(text, "Lesions Lesion Class Side", "Examination")
    assert "1 Glioma - 1 about 20.0 \u00d7 16.0 mm on image 1 - - 90.0%" in table
    assert "2 Meningioma - 1 about 10.0 \u00d7 15.0 mm on image 1 - - 50.0%" in table
    assert "3 Glioma - 2 about 12.0 \u00d7 9.6 mm on image 2 - - 70.0%" in table
    for lesion in facts.lesions:
        assert lesion_row(lesion) in table
    assert "-: no slice positions in the series" in table
    assert "about: estimated from the default pixel spacing" in table
    assert "Extent: craniocaudal" not in table  # nothing measured from slice positions
    # The same numbers as counted by detection.
    assert "Lesions 3 on images 1-2 Classes Glioma (2), Meningioma (1)" in text
    assert "linked across" not in text
    assert "Largest lesion ≈ 20.0 \u00d7 16.0 mm (lesion 1, Glioma, image 1)" in text
    keys = between(text, "Key images", "Detections")
    assert "Lesion 1: Glioma, image 1 Lesion 2: Meningioma, image 1" in keys
    assert "Lesion 3: Glioma, image 2" in keys
    assert "scan_" not in table and "scan_" not in keys


def test_forty_lesions_flow_across_pages():
    count = 40
    sides: tuple[Side | None, ...] = ("left", "right", None, "midline")
    found = [[glioma(10 + number, 0.5 + number / 100)] for number in range(1, count + 1)]
    linked = [
        Linked("Glioma", (number,), sides[number % 4], 5.0, 0.01 * number)
        for number in range(1, count + 1)
    ]
    analysis = build(series_slices(count, seed=3), found, MODEL, linked=linked)
    pdf = render_pdf(analysis)
    reader, pages = read(pdf)
    assert len(pages) > 4
    assert all(f"Page {n} of {len(pages)}" in page for n, page in enumerate(pages, start=1))
    text = squash(" ".join(pages))
    table = between(text, "Lesions Lesion Class Side", "Examination")
    for lesion in analysis.facts.lesions:
        assert lesion_row(lesion) in table, lesion.id
        caption = f"Lesion {lesion.id}: Glioma{side_text(lesion.side)}, image {lesion.id}"
        assert caption in text
    # The table runs over a page break, its header repeated on the next page.
    assert sum("Largest (W \u00d7 H)" in page for page in pages) >= 2
    # No text over other text or over the footer.
    for page in reader.pages:
        pieces = fragments(page)
        assert len({(round(x), round(y)) for x, y, _ in pieces}) == len(pieces)
        for _, y, piece in pieces:
            assert y > 50 or piece.startswith(("Page ", "Preliminary machine read", "Report:"))
    assert_no_identifiers(text)
