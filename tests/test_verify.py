"""The faithfulness check accepts every faithful text and rejects every unfaithful one."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from mriscribe.report.facts import FindingFact, StudyFacts, facts_from_results, image_facts
from mriscribe.report.prompt import EXAMPLES, sections
from mriscribe.report.template import template_report
from mriscribe.report.verify import Verdict, verify_text

REPORTS = Path(__file__).parent / "fixtures" / "reports"
ADVERSARIAL: list[dict] = json.loads((REPORTS / "adversarial.json").read_text())
FAITHFUL: list[dict] = json.loads((REPORTS / "faithful.json").read_text())
CATEGORIES = {
    "wrong_class",
    "invented_tumour",
    "missed_tumour",
    "wrong_size",
    "wrong_count",
    "invented_side",
    "quiz",
    "truncation",
    "repetition",
}
CLASSES = ("Glioma", "Meningioma", "Pituitary", "No Tumor")
DEFAULT = "default 0.5 mm/px (estimate)"
DICOM = "DICOM PixelSpacing"


def fixture_facts(case: dict) -> StudyFacts:
    """The facts of a fixture's findings, read as the verify-report command reads them."""
    return facts_from_results(case["findings"], default_spacing_mm=0.5, conf_threshold=0.25)


def narrative(facts: StudyFacts) -> str:
    """The template's FINDINGS and IMPRESSION, as a language model's narrative would read."""
    report = template_report(facts, model_name="mriscribe-yolov8n", model_version="1.0")
    return f"Findings:\n{report.sections['FINDINGS']}\nImpression:\n{report.sections['IMPRESSION']}"


def study(per_image: list[list[tuple[str, float, float, float]]], estimated: bool = False):
    """Facts for images numbered from 1, each a list of (class, confidence, width, height)."""
    images = []
    for number, findings in enumerate(per_image, start=1):
        found = [FindingFact(number, c, p, w, h, estimated) for c, p, w, h in findings]
        images.append(image_facts(number, found, DEFAULT if estimated else DICOM, estimated))
    return StudyFacts(tuple(images), 0.25)


def random_study(seed: int) -> StudyFacts:
    """1-8 images, 0-2 findings each, random classes, sizes, confidences and spacing."""
    rng = random.Random(seed)
    images = []
    for number in range(1, rng.randint(1, 8) + 1):
        estimated = rng.random() < 0.5
        found = [
            FindingFact(
                number,
                rng.choice(CLASSES),
                rng.uniform(0.25, 0.99),
                rng.uniform(4.0, 60.0),
                rng.uniform(4.0, 60.0),
                estimated,
            )
            for _ in range(rng.randint(0, 2))
        ]
        images.append(image_facts(number, found, DEFAULT if estimated else DICOM, estimated))
    return StudyFacts(tuple(images), 0.25)


def show(verdict: Verdict) -> str:
    return "reasons: " + "; ".join(verdict.reasons)


# The fixtures ------------------------------------------------------------------------------


def test_adversarial_set_is_large_and_covers_every_category() -> None:
    assert len(ADVERSARIAL) >= 40
    assert len({case["id"] for case in ADVERSARIAL}) == len(ADVERSARIAL)
    missing = CATEGORIES - {case["defect"] for case in ADVERSARIAL}
    assert not missing, f"no adversarial text of category {sorted(missing)}"


@pytest.mark.parametrize("case", ADVERSARIAL, ids=[case["id"] for case in ADVERSARIAL])
def test_adversarial_text_is_rejected(case: dict) -> None:
    verdict = verify_text(case["text"], fixture_facts(case))
    assert not verdict.accepted, f"accepted, but: {case['why']}"
    assert verdict.reasons


def test_faithful_set_is_not_empty() -> None:
    assert FAITHFUL
    assert len({case["id"] for case in FAITHFUL}) == len(FAITHFUL)


@pytest.mark.parametrize("case", FAITHFUL, ids=[case["id"] for case in FAITHFUL])
def test_faithful_text_is_accepted(case: dict) -> None:
    verdict = verify_text(case["text"], fixture_facts(case))
    assert verdict.accepted, show(verdict)
    assert verdict.reasons == ()


# The template and the worked examples -------------------------------------------------------


def test_template_is_accepted_for_random_studies() -> None:
    disagreements = []
    for seed in range(300):
        facts = random_study(seed)
        verdict = verify_text(narrative(facts), facts)
        if not verdict.accepted:
            disagreements.append(f"seed {seed}: {show(verdict)}")
    assert not disagreements, "\n".join(disagreements[:5])


def test_random_studies_cover_every_result() -> None:
    """The 300 seeded studies include positive, negative and indeterminate ones."""
    studies = [random_study(seed) for seed in range(300)]
    assert any(facts.positive for facts in studies)
    assert any(facts.negative_images and not facts.positive for facts in studies)
    assert any(facts.unremarkable_images and not facts.positive for facts in studies)
    assert any(len(facts.classes_detected) > 1 for facts in studies)


@pytest.mark.parametrize(
    "per_image",
    [
        [[]],
        [[("No Tumor", 0.95, 200.0, 220.0)]],
        [
            [("No Tumor", 0.95, 200.0, 220.0)],
            [("No Tumor", 0.81, 210.0, 200.0)],
            [("No Tumor", 0.66, 190.0, 205.0)],
        ],
    ],
    ids=["single-image-no-detection", "single-image-no-tumor", "all-images-no-tumor"],
)
def test_template_edge_cases_are_accepted(per_image: list) -> None:
    facts = study(per_image)
    assert not facts.positive
    verdict = verify_text(narrative(facts), facts)
    assert verdict.accepted, show(verdict)


@pytest.mark.parametrize("number", range(len(EXAMPLES)))
def test_worked_example_passes(number: int) -> None:
    facts, answers = EXAMPLES[number]
    parts = sections(list(answers))
    text = f"Findings:\n{parts['FINDINGS']}\nImpression:\n{parts['IMPRESSION']}"
    verdict = verify_text(text, facts)
    assert verdict.accepted, show(verdict)


# Focused cases ------------------------------------------------------------------------------

GLIOMA = study([[("Glioma", 0.9123, 23.4, 18.0)]])
NEGATIVE = study([[("No Tumor", 0.95, 200.0, 220.0)], [("No Tumor", 0.90, 210.0, 230.0)]])
EMPTY = study([[]])


def glioma_text(confidence: str = "91.2%", size: str = "23.4 x 18.0 mm") -> str:
    return (
        f"Image 1 shows a suspected glioma (confidence {confidence}) measuring {size}. "
        "Positive study: one suspected glioma."
    )


def test_the_plain_glioma_text_is_accepted() -> None:
    verdict = verify_text(glioma_text(), GLIOMA)
    assert verdict.accepted, show(verdict)


@pytest.mark.parametrize("confidence", ["91%", "91.2%"])
def test_confidence_rounded_as_written_is_accepted(confidence: str) -> None:
    verdict = verify_text(glioma_text(confidence=confidence), GLIOMA)
    assert verdict.accepted, show(verdict)


def test_confidence_off_by_one_point_is_rejected() -> None:
    verdict = verify_text(glioma_text(confidence="92%"), GLIOMA)
    assert not verdict.accepted
    assert any("92%" in reason for reason in verdict.reasons), show(verdict)


@pytest.mark.parametrize("size", ["23 x 18 mm", "23.4 x 18.0 mm", "2.3 x 1.8 cm"])
def test_size_rounded_as_written_is_accepted(size: str) -> None:
    verdict = verify_text(glioma_text(size=size), GLIOMA)
    assert verdict.accepted, show(verdict)


def test_size_off_by_one_millimetre_is_rejected() -> None:
    verdict = verify_text(glioma_text(size="24 x 18 mm"), GLIOMA)
    assert not verdict.accepted
    assert any("size" in reason for reason in verdict.reasons), show(verdict)


def test_count_in_words_is_checked() -> None:
    text = (
        "Image 1 shows a suspected glioma measuring 23.4 x 18.0 mm. "
        "Positive study: two suspected gliomas."
    )
    verdict = verify_text(text, GLIOMA)
    assert not verdict.accepted
    assert any("count" in reason for reason in verdict.reasons), show(verdict)


def test_invented_laterality_is_rejected() -> None:
    text = (
        "Image 1 shows a suspected glioma in the left hemisphere measuring 23.4 x 18.0 mm. "
        "Positive study: one suspected glioma."
    )
    verdict = verify_text(text, GLIOMA)
    assert not verdict.accepted
    assert any("left" in reason for reason in verdict.reasons), show(verdict)


def test_question_is_rejected() -> None:
    verdict = verify_text("Is this a glioma? " + glioma_text(), GLIOMA)
    assert not verdict.accepted
    assert any("question" in reason for reason in verdict.reasons), show(verdict)


def test_repeated_sentence_is_rejected() -> None:
    sentence = "Image 1 shows a suspected glioma measuring 23.4 x 18.0 mm."
    text = f"{sentence} {sentence} Positive study: one suspected glioma."
    verdict = verify_text(text, GLIOMA)
    assert not verdict.accepted
    assert any("repetition" in reason for reason in verdict.reasons), show(verdict)


def test_text_cut_off_mid_sentence_is_rejected() -> None:
    text = (
        "Image 1 shows a suspected glioma measuring 23.4 x 18.0 mm. Positive study: one suspected"
    )
    verdict = verify_text(text, GLIOMA)
    assert not verdict.accepted
    assert any("cut off" in reason for reason in verdict.reasons), show(verdict)


def test_negative_study_called_normal_is_rejected() -> None:
    text = "No tumour was detected on images 1-2. Negative study: a normal result."
    verdict = verify_text(text, NEGATIVE)
    assert not verdict.accepted
    assert any("normal" in reason for reason in verdict.reasons), show(verdict)
    # The same text without the claim is accepted: "normal" alone is what is rejected.
    plain = verify_text("No tumour was detected on images 1-2. Negative study.", NEGATIVE)
    assert plain.accepted, show(plain)


def test_template_not_a_normal_result_is_accepted() -> None:
    text = narrative(EMPTY)
    assert "not a normal result" in text
    verdict = verify_text(text, EMPTY)
    assert verdict.accepted, show(verdict)


def test_image_number_beyond_the_study_is_rejected() -> None:
    text = (
        "Image 2 shows a suspected glioma measuring 23.4 x 18.0 mm. "
        "Positive study: one suspected glioma."
    )
    verdict = verify_text(text, GLIOMA)
    assert not verdict.accepted
    assert any("image 2" in reason for reason in verdict.reasons), show(verdict)


def test_class_not_detected_is_rejected() -> None:
    text = (
        "Image 1 shows a suspected glioma measuring 23.4 x 18.0 mm and a suspected meningioma. "
        "Positive study: one suspected glioma."
    )
    verdict = verify_text(text, GLIOMA)
    assert not verdict.accepted
    assert any("meningioma" in reason for reason in verdict.reasons), show(verdict)


def test_positive_text_omitting_the_detected_class_is_rejected() -> None:
    text = (
        "Image 1 shows a suspected tumour (confidence 91.2%) measuring 23.4 x 18.0 mm. "
        "Positive study: one suspected tumour."
    )
    verdict = verify_text(text, GLIOMA)
    assert not verdict.accepted
    assert any("Glioma" in reason for reason in verdict.reasons), show(verdict)


# facts_from_results -------------------------------------------------------------------------


def detection(**fields: object) -> dict:
    found: dict = {
        "class": "Glioma",
        "confidence": 0.9,
        "bbox": {"x1": 0.0, "y1": 0.0, "x2": 100.0, "y2": 80.0, "width": 100.0, "height": 80.0},
    }
    found.update(fields)
    return found


def one_image(**fields: object) -> dict:
    return {"images": [{"image_number": 1, **fields}]}


def test_sizes_come_from_size_mm_when_present() -> None:
    found = detection(size_mm={"width_mm": 23.4, "height_mm": 18.0, "estimated": False})
    facts = facts_from_results(
        one_image(pixel_spacing_mm=[0.5, 0.5], detections=[found]),
        default_spacing_mm=0.5,
        conf_threshold=0.25,
    )
    (fact,) = facts.tumours
    assert (fact.width_mm, fact.height_mm) == (23.4, 18.0)  # not the box's 50 x 40
    assert fact.size_estimated is False


def test_sizes_from_the_box_use_column_spacing_for_width_and_row_for_height() -> None:
    facts = facts_from_results(
        one_image(pixel_spacing_mm=[0.4, 0.35], detections=[detection()]),
        default_spacing_mm=0.5,
        conf_threshold=0.25,
    )
    (fact,) = facts.tumours
    assert fact.width_mm == pytest.approx(100.0 * 0.35)
    assert fact.height_mm == pytest.approx(80.0 * 0.4)
    assert fact.size_estimated is False
    assert facts.images[0].size_estimated is False


def test_sizes_use_the_default_spacing_when_the_image_states_none() -> None:
    facts = facts_from_results(
        one_image(detections=[detection()]), default_spacing_mm=0.7, conf_threshold=0.25
    )
    (fact,) = facts.tumours
    assert fact.width_mm == pytest.approx(70.0)
    assert fact.height_mm == pytest.approx(56.0)
    assert fact.size_estimated is True
    assert facts.images[0].size_estimated is True
    assert facts.sizes_estimated


def test_detection_without_class_names_its_image() -> None:
    found = detection()
    del found["class"]
    results = {"images": [{"image_number": 1}, {"image_number": 3, "detections": [found]}]}
    with pytest.raises(ValueError, match=r"image 3\b"):
        facts_from_results(results, default_spacing_mm=0.5, conf_threshold=0.25)


@pytest.mark.parametrize(
    "results",
    [{}, {"images": None}, {"images": {"image_number": 1}}, {"detection_results": {"images": []}}],
    ids=["empty-object", "images-null", "images-not-a-list", "wrapped-not-unwrapped"],
)
def test_results_without_an_images_list_raise(results: dict) -> None:
    with pytest.raises(ValueError, match="images"):
        facts_from_results(results, default_spacing_mm=0.5, conf_threshold=0.25)


def test_an_image_that_is_not_an_object_raises() -> None:
    with pytest.raises(ValueError, match="not an object"):
        facts_from_results({"images": [[1, 2]]}, default_spacing_mm=0.5, conf_threshold=0.25)
