"""The JSON form of an analysis: the prototype's fields, unchanged, plus the new ones."""

from __future__ import annotations

import base64
from typing import Any

from mriscribe.analysis import Analysis, ImageResult
from mriscribe.report.facts import LesionFact, SeriesFacts


def results_json(
    analysis: Analysis, *, annotated: bool = False, pdf: bytes | None = None
) -> dict[str, Any]:
    """``detection_results``, ``medical_report`` and ``summary`` as the prototype returned them,
    plus sizes in mm with their spacing source, the report's sections and engine, the model and
    timings. ``annotated`` adds each annotated image as a data URL; ``pdf`` adds the PDF."""
    facts = analysis.facts
    report = analysis.report
    body: dict[str, Any] = {
        "detection_results": {
            "timestamp": analysis.timestamp.isoformat(),
            "images": [_image_json(image, annotated) for image in analysis.images],
        },
        "medical_report": report.text,
        "report": {
            # A machine read no person has checked, as the DICOM and FHIR results say too.
            "status": "preliminary",
            "verification": "unverified",
            "engine": report.engine,
            "fallback_reason": report.fallback_reason,
            "sections": report.sections,
        },
        "summary": {
            "total_images": facts.image_count,
            "total_detections": sum(len(image.findings) for image in analysis.images),
            "tumour_detections": len(facts.tumours),
            "classes_detected": list(facts.classes_detected),
            "counts_by_class": facts.counts_by_class,
            "study_positive": facts.positive,
            "positive_images": list(facts.positive_images),
            "sizes_estimated": facts.sizes_estimated,
            "spacing_sources": list(facts.spacing_sources),
        },
        "lesions": [_lesion_json(lesion) for lesion in facts.lesions],
        "series": [_series_json(series) for series in facts.series],
        "model": {
            **analysis.model.as_dict(),
            "conf_threshold": analysis.conf_threshold,
            "iou_threshold": analysis.iou_threshold,
        },
        "timings_ms": analysis.timings_ms,
    }
    if pdf is not None:
        body["pdf_base64"] = base64.b64encode(pdf).decode("ascii")
    return body


def _lesion_json(lesion: LesionFact) -> dict[str, Any]:
    """A lesion as the JSON states it: null where the geometry does not hold a value."""
    largest = lesion.largest
    return {
        "id": lesion.id,
        "class": lesion.class_name,
        "confidence": round(lesion.confidence, 4),
        "images": list(lesion.images),
        "largest": {
            "image": largest.image_number,
            "width_mm": round(largest.width_mm, 1),
            "height_mm": round(largest.height_mm, 1),
            "estimated": largest.size_estimated,
        },
        "craniocaudal_mm": _rounded(lesion.craniocaudal_mm, 1),
        "volume_ml": _rounded(lesion.volume_ml, 2),
        "volume_method": "box-based estimate" if lesion.volume_ml is not None else None,
        "side": lesion.side,
        "series": lesion.series,
    }


def _series_json(series: SeriesFacts) -> dict[str, Any]:
    """A series without identifiers: its number, format, images, slice spacing and notes."""
    return {
        "number": series.number,
        "format": series.format,
        "images": list(series.images),
        "slice_spacing_mm": _rounded(series.spacing_mm, 2),
        "notes": list(series.notes),
        "repeated_files_ignored": series.dropped,
    }


def _file_number(image: ImageResult) -> int | None:
    """Which uploaded file (1-based, in upload order) the image came from."""
    number = image.slice.meta.get("file_number", "")
    return int(number) if number.isdigit() else None


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _image_json(image: ImageResult, annotated: bool) -> dict[str, Any]:
    item: dict[str, Any] = {
        "filename": image.slice.name,
        "image_number": image.number,
        "width": image.slice.width,
        "height": image.slice.height,
        "format": image.slice.meta.get("format", ""),
        "pixel_spacing_mm": [round(v, 4) for v in image.spacing_mm],
        "spacing_source": image.spacing_source,
        "spacing_estimated": image.spacing_estimated,
        "file_number": _file_number(image),
        "series": image.series,
        "position_mm": _rounded(image.position_mm, 2),
        "detections": [
            {**m.finding.as_dict(), "size_mm": m.size.as_dict()} for m in image.findings
        ],
    }
    if annotated and image.annotated_jpeg is not None:
        encoded = base64.b64encode(image.annotated_jpeg).decode("ascii")
        item["annotated_image"] = f"data:image/jpeg;base64,{encoded}"
    return item

