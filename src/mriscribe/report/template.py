"""The deterministic report: every sentence is built from the study facts and nothing else.

It is the fallback whenever a language model is unavailable and the reference a model's text is
checked against, so it states only what the facts hold: no locations, no laterality, no
diagnosis. Plain ASCII punctuation ("x" in sizes) keeps plain-text consumers safe.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from mriscribe.analysis import Report
from mriscribe.report.facts import FindingFact, ImageFacts, StudyFacts, is_negative_class

SECTIONS = (
    "EXAMINATION",
    "TECHNIQUE",
    "FINDINGS",
    "IMPRESSION",
    "RECOMMENDATIONS",
    "DISCLAIMER",
)

ESTIMATED_NOTE = "estimated from default pixel spacing"

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


def class_kind(class_name: str) -> str | None:
    """'glioma', 'meningioma', 'pituitary', 'negative' or None (unknown) for a model's class name,
    whatever its spelling ("glioma_tumor", "Pituitary adenoma", "notumor")."""
    if is_negative_class(class_name):
        return "negative"
    key = re.sub(r"[^a-z]", "", class_name.lower())
    if "glio" in key:  # glioma, glioblastoma
        return "glioma"
    if "mening" in key:
        return "meningioma"
    if "pituitar" in key:
        return "pituitary"
    return None


def number_ranges(numbers: Iterable[int]) -> str:
    """Image numbers as compact ranges: 1, 2, 3, 5, 7, 8 -> "1-3, 5, 7-8"."""
    ordered = sorted(set(numbers))
    parts: list[str] = []
    start = 0
    for index in range(1, len(ordered) + 1):
        if index == len(ordered) or ordered[index] != ordered[index - 1] + 1:
            first, last = ordered[start], ordered[index - 1]
            parts.append(str(first) if first == last else f"{first}-{last}")
            start = index
    return ", ".join(parts)


def images_phrase(numbers: Sequence[int]) -> str:
    """ "image 3" or "images 1-12, 14, 20-60"."""
    return f"image {numbers[0]}" if len(numbers) == 1 else f"images {number_ranges(numbers)}"


def percent(confidence: float) -> str:
    """A confidence in [0, 1] as a percentage with one decimal: 0.9123 -> "91.2%"."""
    return f"{confidence * 100:.1f}%"


def threshold_text(threshold: float) -> str:
    """The confidence threshold as a percentage: 0.25 -> "25%", 0.275 -> "27.5%"."""
    value = threshold * 100
    return f"{round(value)}%" if abs(value - round(value)) < 1e-6 else f"{value:.1f}%"


def size_text(fact: FindingFact, times: str = "x") -> str:
    """ "23.4 x 18.0 mm" (width x height of the detection box)."""
    return f"{fact.width_mm:.1f} {times} {fact.height_mm:.1f} mm"


def study_result(facts: StudyFacts) -> str:
    """'positive' (a tumour detected), 'negative' (every image classified as no tumour) or
    'indeterminate' (some or all images without any detection above the threshold, or none)."""
    if facts.positive:
        return "positive"
    if facts.negative_images and not facts.unremarkable_images:
        return "negative"
    return "indeterminate"


def template_report(facts: StudyFacts, *, model_name: str, model_version: str = "") -> Report:
    """The report for ``facts``, sections in SECTIONS order; the same facts give the same text."""
    detector = f"{model_name} (version {model_version})" if model_version else model_name
    sections = {
        "EXAMINATION": _examination(facts),
        "TECHNIQUE": _technique(facts, detector),
        "FINDINGS": _findings(facts),
        "IMPRESSION": _impression(facts),
        "RECOMMENDATIONS": _recommendations(facts),
        "DISCLAIMER": _disclaimer(detector),
    }
    return Report(sections=sections, engine="template", fallback_reason=None)


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def _examination(facts: StudyFacts) -> str:
    count = facts.image_count
    if count == 0:
        return "Brain MRI: no images were analysed."
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


def _finding_line(fact: FindingFact) -> str:
    if fact.size_estimated:
        size = f"approximately {size_text(fact)} ({ESTIMATED_NOTE})"
    else:
        size = f"measuring {size_text(fact)}"
    return (
        f"Image {fact.image_number}: {fact.class_name}, confidence {percent(fact.confidence)}, "
        f"{size}."
    )


def _negative_names(images: Iterable[ImageFacts]) -> str:
    names = dict.fromkeys(fact.class_name for image in images for fact in image.negatives)
    return "/".join(names) or "No Tumor"


def _findings(facts: StudyFacts) -> str:
    if not facts.images:
        return "No images were analysed."
    tumours = facts.tumours
    positive = facts.positive_images
    lines: list[str] = []
    if tumours:
        where = _on_images(len(positive), facts.image_count)
        if facts.image_count > 1:
            where += f" ({images_phrase(positive)})"
        lines.append(f"Tumour detections: {len(tumours)} {where}.")
    else:
        lines.append("Tumour detections: none.")
    for image in facts.images:
        if image.status != "positive":
            continue
        lines.extend(_finding_line(fact) for fact in image.tumours)
        # A tumour and the no-tumour class on one slice disagree: say so rather than hide it.
        lines.extend(
            f"Image {image.number}: also classified {fact.class_name}, confidence "
            f"{percent(fact.confidence)} (conflicting detections on this image)."
            for fact in image.negatives
        )
    negatives = facts.negative_images
    if negatives:
        negative_images = [image for image in facts.images if image.status == "negative"]
        lines.append(
            f"No tumour detected (classified {_negative_names(negative_images)}): "
            f"{images_phrase(negatives)}."
        )
    empty = facts.unremarkable_images
    if empty:
        lines.append(
            f"No detection above the {threshold_text(facts.conf_threshold)} threshold "
            f"(indeterminate, not a normal result): {images_phrase(empty)}."
        )
    return "\n".join(lines)


def _on_images(count: int, total: int) -> str:
    if total == 1:
        return "on the image"
    if count == total:
        return f"on all {total} images"
    return f"on {count} of {total} images"


def _impression(facts: StudyFacts) -> str:
    result = study_result(facts)
    total = facts.image_count
    threshold = threshold_text(facts.conf_threshold)
    if total == 0:
        return "No images were analysed; no result."
    negatives, empty = facts.negative_images, facts.unremarkable_images
    if result == "positive":
        positive = facts.positive_images
        counts = ", ".join(f"{name} ({count})" for name, count in facts.counts_by_class.items())
        tumours = len(facts.tumours)
        where = _on_images(len(positive), total)
        if total > 1:
            where += f" ({images_phrase(positive)})"
        lines = [
            f"Positive study: the automated system detected "
            f"{_plural(tumours, 'suspected tumour')} {where}: {counts}."
        ]
        largest = facts.largest
        if largest is not None:
            estimated = f" ({ESTIMATED_NOTE})" if largest.size_estimated else ""
            label = "Largest lesion" if tumours > 1 else "Lesion size"
            lines.append(
                f"{label}: {largest.class_name} on image {largest.image_number}, "
                f"{size_text(largest)}, longest box side {largest.max_diameter_mm:.1f} mm"
                f"{estimated}."
            )
        if len(facts.classes_detected) > 1:
            lines.append(
                f"More than one tumour class was detected ({', '.join(facts.classes_detected)}): "
                "the classification of each lesion needs radiologist confirmation."
            )
        if negatives:
            lines.append(
                f"No tumour was detected by the automated system on {images_phrase(negatives)}."
            )
        if empty:
            lines.append(
                f"{images_phrase(empty).capitalize()}: no detection above the {threshold} "
                "threshold (indeterminate)."
            )
        return "\n".join(lines)
    if result == "negative":
        detail = f"classified {_negative_names(facts.images)}"
        scope = "on the image" if total == 1 else f"on any of the {total} images"
        return (
            f"Negative study: no tumour was detected by the automated system {scope} "
            f"({detail}).\nAn automated negative result does not exclude a tumour."
        )
    if negatives:
        negative_images = [image for image in facts.images if image.status == "negative"]
        return (
            "Indeterminate study: no tumour was detected by the automated system, but only "
            f"{images_phrase(negatives)} classified {_negative_names(negative_images)}; "
            f"{images_phrase(empty)} had no detection above the {threshold} threshold "
            "(neither a tumour nor a no-tumour classification), so this is not a normal result."
        )
    return (
        "Indeterminate study: no tumour was detected by the automated system, but "
        f"{'the image' if total == 1 else 'no image'} had "
        f"{'no' if total == 1 else 'any'} detection above the {threshold} threshold "
        "(neither a tumour nor a no-tumour classification), so this is not a normal result."
    )


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
