"""The template report: faithful to the facts, deterministic, readable for 1 to 60 images."""

from __future__ import annotations

import re

import pytest

from conftest import HELDOUT
from mriscribe.imaging import decode_raster
from mriscribe.report.facts import FindingFact, StudyFacts, image_facts, is_negative_class
from mriscribe.report.template import (
    SECTIONS,
    class_kind,
    number_ranges,
    template_report,
    threshold_text,
)

DEFAULT = "default 0.5 mm/px (estimate)"
DICOM = "DICOM PixelSpacing"
KNOWN_TUMOURS = ("Glioma", "Meningioma", "Pituitary")


def fact(
    number: int,
    name: str,
    confidence: float,
    width: float = 20.0,
    height: float = 15.0,
    estimated: bool = True,
) -> FindingFact:
    return FindingFact(number, name, confidence, width, height, estimated)


def study(
    per_image: list[list[tuple[str, float]]], estimated: bool = True, threshold: float = 0.25
) -> StudyFacts:
    """Facts for images numbered from 1, each a list of (class, confidence)."""
    source = DEFAULT if estimated else DICOM
    images = []
    for number, findings in enumerate(per_image, start=1):
        facts = [
            fact(number, name, conf, 10.0 + number, 8.0 + number / 2, estimated)
            for name, conf in findings
        ]
        images.append(image_facts(number, facts, source, estimated))
    return StudyFacts(tuple(images), threshold)


def report_text(facts: StudyFacts, version: str = "1.0") -> str:
    return template_report(facts, model_name="mriscribe-yolov8n", model_version=version).text


@pytest.fixture(scope="module")
def real_facts(heldout_cases, detector) -> StudyFacts:
    """Facts from the shipped detector run on every held-out slice, default spacing."""
    images = []
    for number, case in enumerate(heldout_cases, start=1):
        path = HELDOUT / case["file"]
        pixels = decode_raster(path.read_bytes(), case["file"]).pixels
        found = detector.detect([pixels])[0]
        facts = [
            FindingFact(
                number, f.class_name, f.confidence, f.box.width * 0.5, f.box.height * 0.5, True
            )
            for f in found
        ]
        images.append(image_facts(number, facts, DEFAULT, True))
    return StudyFacts(tuple(images), 0.25)


def test_sections_in_order_engine_template(real_facts):
    report = template_report(real_facts, model_name="mriscribe-yolov8n", model_version="2")
    assert tuple(report.sections) == SECTIONS
    assert report.engine == "template"
    assert report.fallback_reason is None
    assert all(body.strip() for body in report.sections.values())
    assert report.text.startswith("EXAMINATION:\n")


def test_real_study_names_detected_classes_only(real_facts, detector):
    report = template_report(real_facts, model_name="mriscribe-yolov8n")
    text = report.text
    assert real_facts.positive, "the held-out set has tumours the detector finds"
    for name in real_facts.classes_detected:
        assert name in report.sections["FINDINGS"]
        assert name in report.sections["IMPRESSION"]
        assert name in report.sections["RECOMMENDATIONS"]
    for name in detector.info.class_names:
        if not is_negative_class(name) and name not in real_facts.classes_detected:
            assert name not in text
    # Every tumour fact is printed with its own numbers.
    for tumour in real_facts.tumours:
        line = (
            f"Image {tumour.image_number}: {tumour.class_name}, confidence "
            f"{tumour.confidence * 100:.1f}%, approximately {tumour.width_mm:.1f} x "
            f"{tumour.height_mm:.1f} mm (estimated from default pixel spacing)."
        )
        assert line in report.sections["FINDINGS"]
    counts = ", ".join(f"{n} ({c})" for n, c in real_facts.counts_by_class.items())
    assert counts in report.sections["IMPRESSION"]
    assert f"{real_facts.image_count} images" in report.sections["EXAMINATION"]


def test_no_tumor_is_a_negative_finding_never_a_tumour():
    facts = study([[("Glioma", 0.9)], [("No Tumor", 0.8)], [("No Tumor", 0.7)]])
    report = template_report(facts, model_name="m")
    findings, impression = report.sections["FINDINGS"], report.sections["IMPRESSION"]
    assert "Tumour detections: 1 on 1 of 3 images (image 1)." in findings
    assert "No tumour detected (classified No Tumor): images 2-3." in findings
    assert "1 suspected tumour" in impression
    assert "Glioma (1)" in impression
    assert "No Tumor (" not in impression
    assert "No Tumor:" not in report.sections["RECOMMENDATIONS"]


def test_only_no_tumor_is_a_negative_study():
    facts = study([[("No Tumor", 0.8)], [("notumor", 0.6)]])
    report = template_report(facts, model_name="m")
    text = report.text
    assert "Tumour detections: none." in report.sections["FINDINGS"]
    assert report.sections["IMPRESSION"].startswith(
        "Negative study: no tumour was detected by the automated system on any of the 2 images"
    )
    assert "does not exclude a tumour" in report.sections["IMPRESSION"]
    assert "routine clinical correlation" in report.sections["RECOMMENDATIONS"]
    lowered = text.lower()
    assert "no tumour present" not in lowered
    assert "tumour is present" not in lowered
    assert "positive study" not in lowered


def test_no_detection_is_indeterminate_not_normal():
    facts = study([[], []])
    report = template_report(facts, model_name="m")
    impression = report.sections["IMPRESSION"]
    assert impression.startswith("Indeterminate study: no tumour was detected by the automated")
    assert "not a normal result" in impression
    assert "Negative study" not in report.text
    assert (
        "No detection above the 25% threshold (indeterminate, not a normal result): "
        "images 1-2." in report.sections["FINDINGS"]
    )


def test_single_image_single_finding_reads_naturally():
    facts = study([[("Pituitary", 0.912)]])
    report = template_report(facts, model_name="m", model_version="3")
    assert report.sections["EXAMINATION"] == (
        "Brain MRI: 1 image (2-D slice) analysed by an automated tumour detector."
    )
    assert "Tumour detections: 1 on the image." in report.sections["FINDINGS"]
    assert "Image 1: Pituitary, confidence 91.2%, approximately 11.0 x 8.5 mm" in report.text
    assert "1 suspected tumour on the image: Pituitary (1)." in report.sections["IMPRESSION"]
    assert "Lesion size: Pituitary on image 1, 11.0 x 8.5 mm" in report.sections["IMPRESSION"]
    assert "endocrine work-up" in report.sections["RECOMMENDATIONS"]
    assert "visual field testing" in report.sections["RECOMMENDATIONS"]


def test_several_classes_each_with_its_notes_and_counts():
    facts = study(
        [
            [("Glioma", 0.9), ("No Tumor", 0.3)],
            [("Meningioma", 0.8)],
            [("Glioma", 0.7)],
            [("Schwannoma", 0.6)],
            [("No Tumor", 0.9)],
            [],
        ]
    )
    report = template_report(facts, model_name="m")
    sections = report.sections
    assert "Glioma (2), Meningioma (1), Schwannoma (1)" in sections["IMPRESSION"]
    assert "More than one tumour class was detected" in sections["IMPRESSION"]
    largest = facts.largest
    assert largest is not None and largest.image_number == 4
    assert "Largest lesion: Schwannoma on image 4, 14.0 x 10.0 mm" in sections["IMPRESSION"]
    recommendations = sections["RECOMMENDATIONS"]
    assert "Glioma: referral to neuro-oncology" in recommendations
    assert "histopathology" in recommendations and "perfusion" in recommendations
    assert "Meningioma: neurosurgical review" in recommendations
    assert "Schwannoma: no class-specific guidance" in recommendations
    assert "endocrine" not in recommendations  # no pituitary lesion
    assert "Images" not in recommendations.split("\n")[0]
    assert recommendations.endswith(
        "Radiologist review of all images and findings before any clinical decision."
    )
    # A tumour and No Tumor on one slice: both said, the conflict named.
    assert (
        "Image 1: also classified No Tumor, confidence 30.0% (conflicting detections"
        in sections["FINDINGS"]
    )
    assert "No tumour detected (classified No Tumor): image 5." in sections["FINDINGS"]
    assert "(indeterminate, not a normal result): image 6." in sections["FINDINGS"]


def test_numbers_are_the_facts_rounded_to_one_decimal():
    facts = StudyFacts(
        (image_facts(1, [fact(1, "Glioma", 0.91249, 23.449, 18.05)], DEFAULT, True),), 0.3
    )
    text = report_text(facts)
    assert "confidence 91.2%" in text
    assert "approximately 23.4 x 18.1 mm" in text
    assert f"{facts.largest.max_diameter_mm:.1f} mm" in text
    assert "confidence threshold of 30%" in text
    assert threshold_text(0.275) == "27.5%"


@pytest.mark.parametrize("estimated", [True, False])
def test_estimate_wording_iff_sizes_estimated(estimated):
    facts = study([[("Meningioma", 0.8)], [("No Tumor", 0.7)]], estimated=estimated)
    text = report_text(facts)
    assert ("estimat" in text.lower()) is estimated
    assert (DEFAULT in text) is estimated
    assert (DICOM in text) is not estimated
    if estimated:
        assert "all sizes are estimates, not true measurements" in text
        assert "approximately 11.0 x 8.5 mm (estimated from default pixel spacing)" in text
    else:
        assert "measuring 11.0 x 8.5 mm." in text


def test_mixed_spacing_names_the_estimated_images():
    images = (
        image_facts(1, [fact(1, "Glioma", 0.9, estimated=False)], DICOM, False),
        image_facts(2, [fact(2, "Glioma", 0.8, estimated=True)], DEFAULT, True),
        image_facts(3, [], DEFAULT, True),
    )
    report = template_report(StudyFacts(images, 0.25), model_name="m")
    technique = report.sections["TECHNIQUE"]
    assert f"Pixel spacing: {DICOM} (image 1); {DEFAULT} (images 2-3)." in technique
    assert "Images 2-3 state no pixel spacing" in technique
    findings = report.sections["FINDINGS"].split("\n")
    assert findings[1] == "Image 1: Glioma, confidence 90.0%, measuring 20.0 x 15.0 mm."
    assert findings[2].endswith("(estimated from default pixel spacing).")


def test_deterministic(real_facts):
    first = template_report(real_facts, model_name="mriscribe-yolov8n", model_version="1")
    second = template_report(real_facts, model_name="mriscribe-yolov8n", model_version="1")
    assert first == second
    rebuilt = StudyFacts(tuple(real_facts.images), real_facts.conf_threshold)
    assert template_report(rebuilt, model_name="mriscribe-yolov8n", model_version="1") == first


def test_sixty_images_stay_readable():
    per_image: list[list[tuple[str, float]]] = [[("No Tumor", 0.8)] for _ in range(60)]
    per_image[12] = [("Glioma", 0.95)]  # image 13
    for index in range(14, 19):  # images 15-19
        per_image[index] = []
    per_image[40] = [("Pituitary", 0.7), ("Pituitary", 0.4)]  # image 41
    facts = study(per_image)
    report = template_report(facts, model_name="m")
    findings = report.sections["FINDINGS"].split("\n")
    assert findings[0] == "Tumour detections: 3 on 2 of 60 images (images 13, 41)."
    assert findings[1].startswith("Image 13: Glioma, confidence 95.0%")
    assert findings[2].startswith("Image 41: Pituitary, confidence 70.0%")
    assert findings[3].startswith("Image 41: Pituitary, confidence 40.0%")
    assert findings[4] == (
        "No tumour detected (classified No Tumor): images 1-12, 14, 20-40, 42-60."
    )
    assert findings[5].endswith("images 15-19.")
    assert len(findings) == 6
    assert len(report.text) < 4000


def test_no_invented_anatomy_or_laterality(real_facts):
    text = report_text(real_facts).lower()
    for word in (
        "left",
        "right",
        "frontal",
        "temporal",
        "parietal",
        "occipital",
        "lobe",
        "hemisphere",
        "cerebell",
        "ventric",
        "midline",
    ):
        assert not re.search(rf"\b{word}", text), word


def test_plain_ascii_and_disclaimer(real_facts):
    report = template_report(real_facts, model_name="mriscribe-yolov8n", model_version="1.2")
    assert report.text.isascii()
    disclaimer = report.sections["DISCLAIMER"]
    assert "mriscribe-yolov8n (version 1.2)" in disclaimer
    assert "not a diagnosis" in disclaimer
    assert "qualified radiologist" in disclaimer
    assert "decision support" in disclaimer
    assert "(version" not in report_text(real_facts, version="")


def test_no_images():
    report = template_report(StudyFacts((), 0.25), model_name="m")
    assert tuple(report.sections) == SECTIONS
    assert "no images were analysed" in report.text.lower()


def test_helpers():
    assert number_ranges([1, 2, 3, 5, 7, 8]) == "1-3, 5, 7-8"
    assert number_ranges([4]) == "4"
    assert number_ranges([]) == ""
    assert class_kind("glioma_tumor") == "glioma"
    assert class_kind("Meningioma") == "meningioma"
    assert class_kind("pituitary adenoma") == "pituitary"
    assert class_kind("No Tumor") == class_kind("notumor") == "negative"
    assert class_kind("Schwannoma") is None
