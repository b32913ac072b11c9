"""The faithfulness check accepts every faithful text and rejects every unfaithful one."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from mriscribe.report.facts import FindingFact, StudyFacts, facts_from_results, image_facts
from mriscribe.report.prompt import EXAMPLES, fact_lines, sections
from mriscribe.report.template import template_report
from mriscribe.report.verify import (
    Verdict,
    split_sections,
    verify_report,
    verify_sections,
    verify_text,
)

REPORTS = Path(__file__).parent / "fixtures" / "reports"
ADVERSARIAL: list[dict] = json.loads((REPORTS / "adversarial.json").read_text())
FAITHFUL: list[dict] = json.loads((REPORTS / "faithful.json").read_text())
# Faithful texts in free phrasing: true, but not sentences of the report grammar.
FREE: list[dict] = json.loads((REPORTS / "free_phrasing.json").read_text())
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


@pytest.mark.parametrize("case", FREE, ids=[case["id"] for case in FREE])
def test_free_phrasing_is_outside_the_grammar(case: dict) -> None:
    """A true text in words the grammar has no form for is rejected all the same: nothing is
    accepted because no rule happened to object."""
    verdict = verify_text(case["text"], fixture_facts(case))
    assert not verdict.accepted
    assert any("outside the report grammar" in reason for reason in verdict.reasons), show(verdict)


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
    _, lines = fact_lines(facts)
    for line, answer in zip(lines, answers, strict=True):
        assert answer in line.constraint.answers, (line.text, answer)
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
        f"Image 1 shows a suspected glioma measuring {size} (confidence {confidence}). "
        "Positive study: one suspected glioma."
    )


def reasons_say(verdict: Verdict, words: str) -> bool:
    return any(words in reason for reason in verdict.reasons)


def test_the_plain_glioma_text_is_accepted() -> None:
    verdict = verify_text(glioma_text(), GLIOMA)
    assert verdict.accepted, show(verdict)


@pytest.mark.parametrize("confidence", ["91%", "91.20%", "92.2%", "25.0%", "0.91"])
def test_a_confidence_not_spelt_as_its_finding_is_rejected(confidence: str) -> None:
    verdict = verify_text(glioma_text(confidence=confidence), GLIOMA)
    assert not verdict.accepted
    assert reasons_say(verdict, "confidence") or reasons_say(verdict, "outside"), show(verdict)


@pytest.mark.parametrize("size", ["23 x 18 mm", "2.3 x 1.8 cm", "24.4 x 18.0 mm", "18.0 x 23.4 mm"])
def test_a_size_not_spelt_as_its_finding_is_rejected(size: str) -> None:
    verdict = verify_text(glioma_text(size=size), GLIOMA)
    assert not verdict.accepted
    assert reasons_say(verdict, "size") or reasons_say(verdict, "outside"), show(verdict)


def test_a_measured_size_written_as_an_estimate_is_rejected() -> None:
    verdict = verify_text(glioma_text(size="about 23.4 x 18.0 mm"), GLIOMA)
    assert not verdict.accepted


def test_an_estimated_size_written_as_a_measurement_is_rejected() -> None:
    estimated = study([[("Glioma", 0.9123, 23.4, 18.0)]], estimated=True)
    assert not verify_text(glioma_text(), estimated).accepted
    assert verify_text(glioma_text(size="about 23.4 x 18.0 mm"), estimated).accepted


def test_count_in_words_is_checked() -> None:
    text = glioma_text().replace("one suspected glioma", "two suspected gliomas")
    verdict = verify_text(text, GLIOMA)
    assert not verdict.accepted
    assert reasons_say(verdict, "count"), show(verdict)


@pytest.mark.parametrize(
    "inserted",
    [
        "in the left hemisphere ",  # a side
        "with surrounding oedema ",  # an imaging feature
        "that is enlarging ",  # a time word
        "later excluded on review ",  # a review outcome
    ],
)
def test_an_invented_qualifier_is_rejected(inserted: str) -> None:
    text = glioma_text().replace("glioma measuring", f"glioma {inserted}measuring")
    verdict = verify_text(text, GLIOMA)
    assert not verdict.accepted
    # Read as the finding's form, the words land in its class slot, which they do not match.
    assert reasons_say(verdict, "a tumour class that the findings do not hold"), show(verdict)
    assert reasons_say(verdict, "does not state the detected Glioma on image 1"), show(verdict)


def test_question_is_rejected() -> None:
    verdict = verify_text("Is this a glioma? " + glioma_text(), GLIOMA)
    assert not verdict.accepted
    assert reasons_say(verdict, "outside the report grammar"), show(verdict)


def test_repeated_sentence_is_rejected() -> None:
    sentence = "Image 1 shows a suspected glioma measuring 23.4 x 18.0 mm (confidence 91.2%)."
    text = f"{sentence} {sentence} Positive study: one suspected glioma."
    verdict = verify_text(text, GLIOMA)
    assert not verdict.accepted
    assert reasons_say(verdict, "repetition"), show(verdict)


def test_text_cut_off_mid_sentence_is_rejected() -> None:
    text = glioma_text().removesuffix(" glioma.")
    verdict = verify_text(text, GLIOMA)
    assert not verdict.accepted
    assert reasons_say(verdict, "does not state the study's result"), show(verdict)


def test_negative_study_called_normal_is_rejected() -> None:
    text = "No tumour was detected on images 1-2. Negative study: a normal result."
    verdict = verify_text(text, NEGATIVE)
    assert not verdict.accepted
    assert reasons_say(verdict, "outside the report grammar"), show(verdict)
    plain = verify_text(
        "No tumour was detected on images 1-2. Negative study: no tumour was detected. "
        "An automated negative result does not exclude a tumour.",
        NEGATIVE,
    )
    assert plain.accepted, show(plain)


def test_a_result_the_study_does_not_have_is_rejected() -> None:
    text = glioma_text().replace(
        "Positive study: one suspected glioma.", "Negative study: no tumour was detected."
    )
    verdict = verify_text(text, GLIOMA)
    assert not verdict.accepted
    assert reasons_say(verdict, "negative result sentence, which the findings do not allow")


def test_template_not_a_normal_result_is_accepted() -> None:
    text = narrative(EMPTY)
    assert "not a normal result" in text
    verdict = verify_text(text, EMPTY)
    assert verdict.accepted, show(verdict)


def test_image_number_beyond_the_study_is_rejected() -> None:
    verdict = verify_text(glioma_text().replace("Image 1", "Image 2"), GLIOMA)
    assert not verdict.accepted
    assert reasons_say(verdict, "an image number that the findings do not hold"), show(verdict)


def test_class_not_detected_is_rejected() -> None:
    text = glioma_text().replace("suspected glioma measuring", "suspected meningioma measuring")
    verdict = verify_text(text, GLIOMA)
    assert not verdict.accepted
    assert reasons_say(verdict, "a tumour class that the findings do not hold"), show(verdict)


def test_positive_text_omitting_the_detected_class_is_rejected() -> None:
    text = (
        "Image 1 shows a suspected tumour measuring 23.4 x 18.0 mm (confidence 91.2%). "
        "Positive study: one suspected tumour."
    )
    verdict = verify_text(text, GLIOMA)
    assert not verdict.accepted
    assert reasons_say(verdict, "Glioma"), show(verdict)


def test_facts_of_two_findings_mixed_in_one_sentence_are_rejected() -> None:
    two = study([[("Glioma", 0.9123, 23.4, 18.0)], [("Glioma", 0.55, 12.0, 10.0)]])
    text = (
        "Image 1 shows a suspected glioma measuring 12.0 x 10.0 mm (confidence 91.2%). "
        "Image 2 shows a suspected glioma measuring 23.4 x 18.0 mm (confidence 55.0%). "
        "Positive study: two suspected gliomas."
    )
    verdict = verify_text(text, two)
    assert not verdict.accepted
    assert reasons_say(verdict, "size"), show(verdict)


# Every sentence the generator may write parses ---------------------------------------------


def test_every_answer_each_line_allows_is_accepted() -> None:
    """For 300 random studies, each allowed answer of each fact line (the language a model
    decodes inside), with the other lines' first answers, is accepted."""
    problems = []
    for seed in range(300):
        facts = random_study(seed)
        _, lines = fact_lines(facts)
        firsts = [line.constraint.answers[0] for line in lines]
        for index, line in enumerate(lines):
            for answer in line.constraint.answers:
                text = " ".join([*firsts[:index], answer, *firsts[index + 1 :]])
                verdict = verify_text(text, facts)
                if not verdict.accepted:
                    problems.append(f"seed {seed}: {answer!r}: {show(verdict)}")
    assert not problems, "\n".join(problems[:5])


def test_every_line_offers_a_choice_of_words_but_not_of_facts() -> None:
    facts = study([[("Glioma", 0.9123, 23.4, 18.0)], [("No Tumor", 0.9, 100.0, 100.0)], [[]][0]])
    _, lines = fact_lines(facts)
    for line in lines:
        answers = line.constraint.answers
        assert len(answers) >= 2, line.text
    finding = lines[0].constraint.answers
    assert all("23.4 x 18.0 mm (confidence 91.2%)." in answer for answer in finding)
    assert all("image 1 " in answer.lower() for answer in finding)


def test_the_grammar_is_valid_gbnf_for_llama_cpp() -> None:
    """llama.cpp's own GBNF parser reads every line's grammar."""
    llama_cpp = pytest.importorskip("llama_cpp")
    for seed in range(20):
        _, lines = fact_lines(random_study(seed))
        for line in lines:
            grammar = llama_cpp.LlamaGrammar.from_string(line.constraint.gbnf, verbose=False)
            assert grammar is not None


# Whole reports ------------------------------------------------------------------------------


def whole(facts: StudyFacts) -> dict[str, str]:
    return dict(
        template_report(facts, model_name="mriscribe-yolov8n", model_version="1.0").sections
    )


@pytest.mark.parametrize("seed", range(0, 300, 7))
def test_a_whole_template_report_is_accepted(seed: int) -> None:
    facts = random_study(seed)
    verdict = verify_report(whole(facts), facts)
    assert verdict.accepted, show(verdict)


@pytest.mark.parametrize(
    ("section", "old", "new"),
    [
        (
            "RECOMMENDATIONS",
            "Radiologist review",
            "No radiologist review is needed; radiologist review",
        ),
        ("EXAMINATION", "Brain MRI", "Contrast-enhanced brain MRI"),
        ("TECHNIQUE", "confidence threshold of 25%", "confidence threshold of 5%"),
        ("DISCLAIMER", "It is not a diagnosis", "It is a diagnosis"),
    ],
)
def test_an_altered_structured_section_is_rejected(section: str, old: str, new: str) -> None:
    sections = whole(GLIOMA)
    assert old in sections[section]
    sections[section] = sections[section].replace(old, new, 1)
    verdict = verify_report(sections, GLIOMA)
    assert not verdict.accepted
    assert reasons_say(verdict, f"the {section} section is not what the template makes"), show(
        verdict
    )


def test_a_report_missing_a_section_is_rejected() -> None:
    sections = whole(GLIOMA)
    del sections["RECOMMENDATIONS"]
    verdict = verify_report(sections, GLIOMA)
    assert not verdict.accepted
    assert reasons_say(verdict, "lacks the section"), show(verdict)


def test_a_whole_report_with_the_model_narrative_is_accepted() -> None:
    sections = whole(GLIOMA)
    sections["FINDINGS"] = (
        "On image 1 there is a possible glioma measuring 23.4 x 18.0 mm (confidence 91.2%)."
    )
    assert verify_report(sections, GLIOMA).accepted


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


# What a reviewer found: each once accepted or wrongly rejected -------------------------------

THREE = study(
    [
        [("Glioma", 0.912, 31.5, 24.0)],
        [("Glioma", 0.80, 20.0, 10.0)],
        [("Glioma", 0.70, 15.0, 12.0)],
    ]
)
SENTENCES = [
    "Image 1 shows a suspected glioma measuring 31.5 x 24.0 mm (confidence 91.2%).",
    "Image 2 shows a suspected glioma measuring 20.0 x 10.0 mm (confidence 80.0%).",
    "Image 3 shows a suspected glioma measuring 15.0 x 12.0 mm (confidence 70.0%).",
]
RESULT = "Positive study: three suspected gliomas."


def test_the_three_tumours_stated_once_each_are_accepted() -> None:
    assert verify_text(" ".join([*SENTENCES, RESULT]), THREE).accepted


@pytest.mark.parametrize(
    "extra",
    [
        ["1 more suspected tumour was detected on image 3."],
        ["On image 1 there is a possible glioma measuring 31.5 x 24.0 mm (confidence 91.2%)."],
    ],
    ids=["a-count-of-more-on-top", "one-tumour-in-two-phrasings"],
)
def test_a_tumour_stated_twice_is_rejected(extra: list[str]) -> None:
    verdict = verify_text(" ".join([*SENTENCES, *extra, RESULT]), THREE)
    assert not verdict.accepted
    assert reasons_say(verdict, "more than once"), show(verdict)


def test_overlapping_counts_of_more_tumours_are_rejected() -> None:
    text = (
        "3 more suspected tumours were detected on images 1-3. 2 more suspected tumours were "
        "detected on images 2-3. 1 more suspected tumour was detected on image 3. " + RESULT
    )
    verdict = verify_text(text, THREE)
    assert not verdict.accepted
    assert reasons_say(verdict, "more than once"), show(verdict)


def test_two_identical_detections_are_two_tumours() -> None:
    twins = study([[("Glioma", 0.912, 31.5, 24.0), ("Glioma", 0.912, 31.5, 24.0)]])
    sentence = "Image 1 shows a suspected glioma measuring 31.5 x 24.0 mm (confidence 91.2%)."
    result = "Positive study: two suspected gliomas."
    assert verify_text(f"{sentence} {sentence} {result}", twins).accepted
    once = verify_text(f"{sentence} {result}", twins)
    assert not once.accepted and reasons_say(once, "does not state the detected Glioma"), show(once)
    thrice = verify_text(f"{sentence} {sentence} {sentence} {result}", twins)
    assert not thrice.accepted and reasons_say(thrice, "repetition"), show(thrice)
    assert verify_report(whole(twins), twins).accepted


def test_findings_with_one_image_number_twice_are_refused() -> None:
    detection = {"class": "Glioma", "confidence": 0.9, "bbox": {"width": 10.0, "height": 8.0}}
    results = {"images": [{"image_number": 1, "detections": [detection]}] * 2}
    with pytest.raises(ValueError, match="image number 1 appears more than once"):
        facts_from_results(results, default_spacing_mm=0.5, conf_threshold=0.25)


def test_a_negative_result_without_its_caveat_is_rejected() -> None:
    verdict = verify_text(
        "No tumour was detected on images 1-2. Negative study: no tumour was detected.", NEGATIVE
    )
    assert not verdict.accepted
    assert reasons_say(verdict, "does not state that an automated negative result"), show(verdict)


def test_images_without_a_detection_must_be_stated() -> None:
    facts = study([[("Glioma", 0.912, 31.5, 24.0)], [], []])
    text = (
        "Image 1 shows a suspected glioma measuring 31.5 x 24.0 mm (confidence 91.2%). "
        "Positive study: one suspected glioma."
    )
    verdict = verify_text(text, facts)
    assert not verdict.accepted
    assert reasons_say(verdict, "does not state the images without a detection"), show(verdict)
    stated = verify_text(text + " No detection above the threshold on images 2-3.", facts)
    assert stated.accepted, show(stated)


def test_the_result_belongs_in_the_impression() -> None:
    sections = whole(GLIOMA)
    sections["FINDINGS"] += "\n" + sections["IMPRESSION"]
    sections["IMPRESSION"] = ""
    verdict = verify_report(sections, GLIOMA)
    assert not verdict.accepted
    assert reasons_say(verdict, "result in the IMPRESSION"), show(verdict)


def test_a_repeated_heading_and_text_before_the_first_are_rejected() -> None:
    report = template_report(GLIOMA, model_name="yolo")
    lie = "FINDINGS:\nImage 1: Glioma, confidence 25.0%, measuring 12.0 x 9.0 mm."
    twice = report.text.replace(f"FINDINGS:\n{report.sections['FINDINGS']}", lie)
    twice += f"\n\nFINDINGS:\n{report.sections['FINDINGS']}"
    sections = split_sections(twice)
    assert sections is not None
    verdict = verify_sections(sections, GLIOMA)
    assert not verdict.accepted and reasons_say(verdict, "more than once"), show(verdict)
    before = split_sections("NOTE: the glioma was excluded on review.\n\n" + report.text)
    assert before is not None
    verdict = verify_sections(before, GLIOMA)
    assert not verdict.accepted and reasons_say(verdict, "text before its first section")


def test_prose_in_the_detector_name_is_rejected() -> None:
    named = "yolo. A radiologist excluded the glioma on image 1. Detector"
    sections = split_sections(template_report(GLIOMA, model_name=named).text)
    assert sections is not None
    assert not verify_sections(sections, GLIOMA).accepted
    honest = split_sections(template_report(GLIOMA, model_name="yolo", model_version="2.1").text)
    assert honest is not None
    assert verify_sections(honest, GLIOMA).accepted
    assert not verify_sections(honest, GLIOMA, detector="another-model").accepted


def test_control_characters_in_a_class_name_still_make_valid_gbnf() -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    facts = study([[('Odd\tclass\x01"name\\', 0.9, 10.0, 10.0)]])
    _, lines = fact_lines(facts)
    for line in lines:
        assert llama_cpp.LlamaGrammar.from_string(line.constraint.gbnf, verbose=False)
