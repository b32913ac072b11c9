"""The deterministic report: every sentence is built from the study facts and nothing else.

It is the fallback whenever a language model is unavailable, so it states only what the facts
hold: no anatomical locations, no diagnosis, and a side only where one was measured. Its
FINDINGS and IMPRESSION are the first path through the report grammar (report/forms.py); the
other sections are fixed text filled from the facts, and a whole report's other sections must
be exactly these.
"""

from __future__ import annotations

from mriscribe.analysis import Report
from mriscribe.report.facts import StudyFacts
from mriscribe.report.forms import template_findings, template_impression
from mriscribe.report.wording import (
    ESTIMATED_NOTE,
    class_kind,
    images_phrase,
    number_ranges,
    percent,
    size_text,
    study_result,
    threshold_text,
)

SECTIONS = (
    "EXAMINATION",
    "TECHNIQUE",
    "FINDINGS",
    "IMPRESSION",
    "RECOMMENDATIONS",
    "DISCLAIMER",
)

# Clinical notes per tumour kind; a class is matched to a kind by its name (see class_kind).
_NOTES = {
    "glioma": (
        "referral to neuro-oncology; contrast-enhanced MRI with perfusion and spectroscopy to "
        "characterise the lesion; histopathology is required for grading"
    ),
    "meningioma": (
        "neurosurgical review; management depends on lesion size, surrounding oedema and "
        "symptoms; follow-up imaging to assess growth"
    ),
    "pituitary": (
        "endocrine work-up (pituitary hormone profile); dedicated pituitary-protocol MRI; "
        "formal visual field testing if the lesion is large or extends above the sella "
        "(suprasellar extension)"
    ),
}
_GENERIC_NOTE = (
    "no class-specific guidance is built in for this class; clinical correlation and further "
    "imaging as the radiologist advises"
)


def detector_label(model_name: str, model_version: str = "") -> str:
    """How the report names its detector: "name (version v)", or the name alone."""
    return f"{model_name} (version {model_version})" if model_version else model_name


def template_report(facts: StudyFacts, *, model_name: str, model_version: str = "") -> Report:
    """The report for ``facts``, sections in SECTIONS order; the same facts give the same text."""
    detector = detector_label(model_name, model_version)
    sections = {
        "EXAMINATION": _examination(facts),
        "TECHNIQUE": _technique(facts, detector),
        "FINDINGS": _findings(facts),
        "IMPRESSION": _impression(facts),
        "RECOMMENDATIONS": _recommendations(facts),
        "DISCLAIMER": _disclaimer(detector),
    }
    return Report(sections=sections, engine="template", fallback_reason=None)


def _examination(facts: StudyFacts) -> str:
    count = facts.image_count
    if count == 0:
        return "Brain MRI: no images were analysed."
    if facts.geometry:
        series = len(facts.series)
        studies = facts.study_count
        source = f" from {studies} studies (reported together)" if studies > 1 else ""
        return (
            f"Brain MRI: {count} image{'s' if count != 1 else ''} (2-D slices) in {series} "
            f"series{source}, each slice analysed by an automated tumour detector; detections "
            "on adjacent slices of a series are linked into lesions."
        )
    if count == 1:
        return "Brain MRI: 1 image (2-D slice) analysed by an automated tumour detector."
    return (
        f"Brain MRI: {count} images (2-D slices), each analysed on its own by an automated "
        "tumour detector."
    )


def _technique(facts: StudyFacts, detector: str) -> str:
    lines = [
        f"Automated detection with {detector} at a confidence threshold of "
        f"{threshold_text(facts.conf_threshold)}; detections below the threshold are not "
        "reported. Sizes are the width x height of each detection box in millimetres."
    ]
    if not facts.images:
        return lines[0]
    groups: dict[tuple[str, bool], list[int]] = {}
    for image in facts.images:
        groups.setdefault((image.spacing_source, image.size_estimated), []).append(image.number)
    if len(groups) == 1:
        ((source, _),) = groups
        scope = "the image" if facts.image_count == 1 else "all images"
        lines.append(f"Pixel spacing: {source or 'unknown source'} for {scope}.")
    else:
        parts = [
            f"{source or 'unknown source'} ({images_phrase(numbers)})"
            for (source, _), numbers in groups.items()
        ]
        lines.append(f"Pixel spacing: {'; '.join(parts)}.")
    if facts.geometry:
        lines.extend(_series_lines(facts))
    estimated = [image.number for image in facts.images if image.size_estimated]
    if len(estimated) == facts.image_count:
        subject = "The image file states" if facts.image_count == 1 else "The image files state"
        lines.append(
            f"{subject} no pixel spacing, so a default spacing was assumed: all sizes are "
            "estimates, not true measurements."
        )
    elif estimated:
        lines.append(
            f"{images_phrase(estimated).capitalize()} state no pixel spacing, so a default "
            "spacing was assumed for them: sizes on them are estimates, not true measurements."
        )
    return "\n".join(lines)


def _series_lines(facts: StudyFacts) -> list[str]:
    """Each series: its images, slice spacing and what is wrong with its slices; then how
    extent, volume and side are measured."""
    lines = []
    for series in facts.series:
        study = f", study {series.study}" if facts.study_count > 1 and series.study else ""
        what = f"Series {series.number} ({series.format or 'unknown format'}{study}): "
        what += images_phrase(series.images)
        if series.spacing_mm is not None:
            what += f", slice spacing {series.spacing_mm:.1f} mm from the slice positions"
        else:
            what += ", no slice positions (each detection is its own lesion)"
        notes = list(series.notes)
        if series.dropped:
            notes.append(
                f"{series.dropped} repeated file{'s' if series.dropped != 1 else ''} read once"
            )
        lines.append(what + (f"; {'; '.join(notes)}" if notes else "") + ".")
    lines.append(
        "Craniocaudal extent: from the positions of a lesion's slices plus one slice spacing. "
        "Volume: a box-based estimate (mean box area x depth), not a segmentation. Side: the "
        "patient's, measured from the head's own midline on up to five slices around the "
        "lesion's largest; stated only when the median distance of its centre from the midline "
        f"is at least {facts.side_threshold_mm:g} mm, no slice puts it more than 3 mm on the "
        "other side, and its box does not reach more than 5 mm across the midline."
    )
    return lines


def _findings(facts: StudyFacts) -> str:
    return "\n".join(bound.render() for bound in template_findings(facts))


def _impression(facts: StudyFacts) -> str:
    return "\n".join(bound.render() for bound in template_impression(facts))


def _recommendations(facts: StudyFacts) -> str:
    lines: list[str] = []
    for name in facts.classes_detected:
        kind = class_kind(name)
        note = _NOTES.get(kind or "", _GENERIC_NOTE)
        lines.append(f"{name}: {note}.")
    if not facts.positive and facts.images:
        lines.append(
            "No tumour was detected by the automated system: routine clinical correlation; "
            "further imaging if symptoms persist or as clinically indicated."
        )
    empty = facts.unremarkable_images
    if empty:
        lines.append(
            f"{images_phrase(empty).capitalize()} had no detection above the threshold: "
            "review directly, as an automated non-detection is not a normal result."
        )
    if facts.sizes_estimated:
        lines.append(
            "Sizes are estimates from a default pixel spacing: measure on images with known "
            "spacing (for example the original DICOM series) before using them for management "
            "or follow-up."
        )
    lines.append("Radiologist review of all images and findings before any clinical decision.")
    return "\n".join(lines)


def _disclaimer(detector: str) -> str:
    return (
        f"Automated first read by {detector}, for research and decision support only. It is not "
        "a diagnosis: the system can miss tumours and can report false positives. This report "
        "must be reviewed by a qualified radiologist before any clinical use."
    )


__all__ = [
    "ESTIMATED_NOTE",
    "SECTIONS",
    "class_kind",
    "detector_label",
    "images_phrase",
    "number_ranges",
    "percent",
    "size_text",
    "study_result",
    "template_report",
    "threshold_text",
]
