"""The report grammar reads lesions: the template's lesion sentences, the verifier's refusals of
a wrong side, extent, volume or image range, classes that disagree across a lesion's slices,
and lesions counted per series."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mriscribe.report.facts import LesionFact, SeriesFacts, StudyFacts, study_of
from mriscribe.report.forms import bound_forms, required
from mriscribe.report.prompt import fact_lines
from mriscribe.report.template import template_report
from mriscribe.report.verify import split_sections, verify_report, verify_text


def _study(classes: list[str], *, second_series: bool = False) -> StudyFacts:
    """Six slices of one series (plus three of a second one): a lesion on slices 2-5 whose
    detections are given ``classes``; with ``second_series``, the same tumour seen again."""
    images = [[("No Tumor", 0.9, 180.0, 200.0)]]
    images += [[(name, 0.6 + 0.05 * n, 20.0 + n, 18.0)] for n, name in enumerate(classes)]
    images += [[("No Tumor", 0.9, 180.0, 200.0)]]
    if second_series:
        images += [[("No Tumor", 0.8, 180.0, 200.0)], [("Glioma", 0.77, 25.0, 21.0)], []]
    base = study_of(images)
    tumours = [fact for image in base.images for fact in image.tumours]
    first = tumours[: len(classes)]
    lesions = [
        LesionFact(
            id=1,
            class_name="Glioma",
            confidence=max(f.confidence for f in first if f.class_name == "Glioma"),
            images=tuple(f.image_number for f in first),
            largest=max(first, key=lambda f: f.max_diameter_mm),
            detections=tuple(first),
            geometry=True,
            craniocaudal_mm=20.0,
            volume_ml=4.2,
            side="left",
        )
    ]
    series = [SeriesFacts(1, "DICOM", tuple(range(1, len(classes) + 3)), 5.0, study=1)]
    if second_series:
        (extra,) = tumours[len(classes) :]
        lesions.append(
            LesionFact(2, "Glioma", 0.77, (extra.image_number,), extra, (extra,), series=2,
                       geometry=True, craniocaudal_mm=6.0, volume_ml=1.1, side="left")
        )  # fmt: skip
        numbers = tuple(range(len(classes) + 3, len(classes) + 6))
        series.append(SeriesFacts(2, "DICOM", numbers, 6.0, study=1))
    return StudyFacts(base.images, base.conf_threshold, tuple(lesions), tuple(series))


def test_the_template_states_each_lesion_once_and_passes_its_own_verifier() -> None:
    facts = _study(["Glioma"] * 4)
    report = template_report(facts, model_name="m")
    lesion = (
        "Lesion 1: suspected glioma, left, images 2-5, largest 23.0 x 18.0 mm on image 5, "
        "craniocaudal extent 20 mm, box volume estimate 4.2 ml (confidence 75.0%)."
    )
    assert lesion in report.sections["FINDINGS"]
    assert "detected 1 suspected tumour on 4 of 6 images" in report.sections["IMPRESSION"]
    assert "Series 1 (DICOM): images 1-6, slice spacing 5.0 mm" in report.sections["TECHNIQUE"]
    assert verify_report(split_sections(report.text), facts, detector="m").accepted


@pytest.mark.parametrize(
    ("wrong", "right"),
    [
        (", right, images", ", left, images"),
        (", images", ", left, images"),  # the side left out
        ("images 2-4,", "images 2-5,"),
        ("extent 25 mm", "extent 20 mm"),
        ("estimate 2.1 ml", "estimate 4.2 ml"),
        ("on image 4,", "on image 5,"),
        ("Lesion 2:", "Lesion 1:"),
    ],
)
def test_a_lesion_sentence_with_a_wrong_fact_is_refused(wrong: str, right: str) -> None:
    facts = _study(["Glioma"] * 4)
    report = template_report(facts, model_name="m")
    findings = report.sections["FINDINGS"]
    assert right in findings
    bad = findings.replace(", left, images" if wrong == ", images" else right, wrong, 1)
    sections = {**report.sections, "FINDINGS": bad}
    verdict = verify_report(sections, facts, detector="m")
    assert not verdict.accepted, bad


def test_a_lesion_stated_twice_or_not_at_all_is_refused() -> None:
    facts = _study(["Glioma"] * 4)
    report = template_report(facts, model_name="m")
    lines = report.sections["FINDINGS"].splitlines()
    lesion = next(line for line in lines if line.startswith("Lesion 1"))
    twice = "\n".join([*lines, lesion])
    assert not verify_report({**report.sections, "FINDINGS": twice}, facts, detector="m").accepted
    none = "\n".join(line for line in lines if line != lesion)
    verdict = verify_report({**report.sections, "FINDINGS": none}, facts, detector="m")
    assert not verdict.accepted
    assert any("lesion 1" in reason for reason in verdict.reasons)


def test_classes_that_disagree_across_a_lesion_are_not_hidden() -> None:
    facts = _study(["Glioma", "Meningioma", "Glioma", "Meningioma"])
    assert facts.lesions[0].class_name == "Glioma"
    report = template_report(facts, model_name="m")
    impression = report.sections["IMPRESSION"]
    assert "More than one tumour class was detected (Glioma, Meningioma)" in impression or (
        "More than one tumour class was detected (Meningioma, Glioma)" in impression
    )
    recommendations = report.sections["RECOMMENDATIONS"]
    assert "Glioma:" in recommendations and "Meningioma:" in recommendations
    # The largest box is the one on image 5, which its own image calls a meningioma.
    assert "Largest lesion: Meningioma on image 5" in impression or (
        "Lesion size: Meningioma on image 5" in impression
    )
    assert verify_report(split_sections(report.text), facts, detector="m").accepted
    # Without the sentence, the report hides the disagreement: refused.
    impression = "\n".join(
        line for line in impression.splitlines() if not line.startswith("More than one")
    )
    verdict = verify_report({**report.sections, "IMPRESSION": impression}, facts, detector="m")
    assert not verdict.accepted
    # The model's impression line must carry it as well.
    _, lines = fact_lines(facts)
    assert all("More than one tumour class" in answer for answer in lines[-1].constraint.answers)


def test_lesions_of_two_series_say_how_they_are_counted() -> None:
    facts = _study(["Glioma"] * 4, second_series=True)
    report = template_report(facts, model_name="m")
    counted = (
        "Lesions are counted in each series on its own (2 series with lesions): a tumour seen "
        "in more than one series is counted once in each."
    )
    assert counted in report.sections["IMPRESSION"]
    assert verify_report(split_sections(report.text), facts, detector="m").accepted
    without = report.sections["IMPRESSION"].replace(counted, "").replace("\n\n", "\n")
    verdict = verify_report({**report.sections, "IMPRESSION": without}, facts, detector="m")
    assert not verdict.accepted
    assert "per series" in required(facts)
    # The model's impression line carries it too.
    _, lines = fact_lines(facts)
    assert any(counted in answer for answer in lines[-1].constraint.answers)
    one = replace(facts, lesions=facts.lesions[:1], series=facts.series[:1])
    assert "per series" not in required(one)


def test_every_answer_a_lesion_line_allows_is_true() -> None:
    facts = _study(["Glioma"] * 4)
    _, lines = fact_lines(facts)
    (line,) = [line for line in lines if line.text.startswith("Lesion 1")]
    answers = line.constraint.answers
    assert len(answers) == 2  # "suspected" or "possible": every fact is forced
    for answer in answers:
        assert ", left, images 2-5, largest 23.0 x 18.0 mm on image 5" in answer
        impression = next(b for b in bound_forms(facts) if b.form.name == "positive result")
        text = f"Findings:\n{answer} No tumour was detected on images 1, 6.\nImpression:\n"
        text += impression.sentences()[0]
        assert verify_text(text, facts).accepted, verify_text(text, facts).reasons
