"""The PDF report: its text, tables, images and page numbers; reproducible bytes; speed."""

from __future__ import annotations

import io
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pypdf import PdfReader

from conftest import HELDOUT
from mriscribe.analysis import Analysis, ImageResult, MeasuredFinding, Measurement, Report
from mriscribe.detection import Box, Finding, ModelInfo
from mriscribe.imaging import Slice, decode_raster
from mriscribe.render.annotate import annotated_jpeg
from mriscribe.render.pdf import render_pdf
from mriscribe.report.facts import FindingFact, StudyFacts, image_facts
from mriscribe.report.template import template_report

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


def build(
    slices: list[Slice],
    findings: list[list[Finding]],
    model: ModelInfo,
    *,
    jpeg: bool = True,
    when: datetime = WHEN,
) -> Analysis:
    """An Analysis as the pipeline makes one: default spacing, template report."""
    images = []
    for number, (item, found) in enumerate(zip(slices, findings, strict=True), start=1):
        measured = tuple(
            MeasuredFinding(
                f, Measurement(f.box.width * 0.5, f.box.height * 0.5, SPACING, SOURCE, True)
            )
            for f in sorted(found, key=lambda f: -f.confidence)
        )
        picture = annotated_jpeg(item.pixels, measured) if jpeg else None
        images.append(ImageResult(number, item, measured, SPACING, SOURCE, True, picture))
    facts = StudyFacts(
        tuple(
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
        ),
        0.25,
    )
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
    assert "Tumour detections none" in text
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

