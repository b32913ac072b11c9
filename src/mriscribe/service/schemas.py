"""The API's contract as pydantic models, for the OpenAPI document: every JSON answer, the
prototype's fields first, then mriscribe's, and one error model for every error."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class ErrorBody(_Body):
    """Every error: what failed, in our words, naming the file where one did."""

    error: str = Field(examples=["scan2.dcm: the file is truncated"])


class ModelsLoaded(_Body):
    yolo: bool = Field(description="the detector is loaded")
    llm: bool = Field(description="a language model of the report chain is loaded")


class DetectorInfo(_Body):
    name: str
    version: str
    backend: str
    classes: list[str]
    input_size: list[int]
    file: str = Field(description="the model's file name (no folders)")
    sha256: str = Field(description="the first 16 hex digits of the model file's SHA-256")
    conf_threshold: float


class HealthModels(_Body):
    detector: DetectorInfo | None
    llm: Any | None = None


class ChainLink(_Body):
    model: str
    status: Literal["serving", "failed", "not tried"]
    reason: str | None


class ReportWriterStatus(_Body):
    mode: Literal["chain", "template"]
    engine: str
    deadline_s: float
    loading: bool
    chain: list[ChainLink]
    reports: dict[str, int] = Field(description="reports written, by engine, and fallbacks")
    last_fallback_reason: str | None


class DicomNodeStatus(_Body):
    """The DICOM node: counts, times and reasons only (no UIDs, names or study hashes)."""

    listening: bool
    ae_title: str
    port: int
    destinations: list[str] = Field(description="AE@HOST:PORT, or STOW-RS and its URL")
    studies_receiving: int = Field(description="instances arriving, not yet stable")
    studies_analysing: int
    studies_awaiting_delivery: int
    instances_stored: int
    instances_repeated: int = Field(description="instances already analysed, sent again")
    instances_ignored: int = Field(description="SR, presentation states, PDFs (ours or not)")
    instances_refused: dict[str, int] = Field(description="by reason")
    associations: int
    associations_refused: int = Field(description="calling AE titles not allowed, and such")
    presentation_contexts_refused: int = Field(description="SOP classes the node does not take")
    studies_analysed: int
    studies_without_results: int = Field(description="no usable image, or refused")
    studies_skipped_by_loop_guard: int
    studies_delivered: int
    last_delivery: str | None
    delivery_errors: int
    analysis_errors: int
    last_error: str | None
    last_error_at: str | None
    updated: str


class HealthBody(_Body):
    """GET /health: the prototype's status, models_loaded and timestamp, then mriscribe's."""

    status: Literal["healthy", "loading", "unavailable"]
    models_loaded: ModelsLoaded
    timestamp: datetime
    version: str
    models: HealthModels
    report_engine: str = Field(description="the engine writing reports now ('template' if none)")
    report_writer: ReportWriterStatus
    uptime_s: float
    dicom_node: DicomNodeStatus | None = Field(
        default=None, description="only when the DICOM node runs beside the service"
    )
    reason: str | None = Field(
        default=None, description="only while not ready (503): why, e.g. the model is loading"
    )


class BoundingBox(_Body):
    """Pixels of the original image."""

    x1: float
    y1: float
    x2: float
    y2: float
    width: float
    height: float


class SizeMm(_Body):
    width_mm: float
    height_mm: float
    max_diameter_mm: float
    pixel_spacing_mm: list[float] = Field(description="(row, column) mm per pixel")
    spacing_source: str = Field(examples=["DICOM PixelSpacing", "default 0.5 mm/px (estimate)"])
    estimated: bool = Field(description="true when no spacing was known and the default was used")


class Detection(_Body):
    class_name: str = Field(alias="class", examples=["Glioma"])
    confidence: float = Field(ge=0, le=1)
    bbox: BoundingBox
    size_mm: SizeMm


class ImageResult(_Body):
    filename: str = Field(
        description="the file's base name, or 'file N' with name_images_by_number"
    )
    detections: list[Detection]
    image_number: int = Field(description="1-based, as the report names images")
    width: int
    height: int
    format: str
    pixel_spacing_mm: list[float]
    spacing_source: str
    spacing_estimated: bool
    file_number: int | None = Field(
        description="the uploaded file it came from (1-based, upload order): images are "
        "numbered series by series in anatomical order, which for DICOM need not be the "
        "order the files were sent in"
    )
    series: int = Field(description="the series the image belongs to (1-based, see 'series')")
    position_mm: float | None = Field(
        description="the slice's position along its series' slice normal; null without geometry"
    )
    annotated_image: str | None = Field(
        default=None, description="with ?annotated=true: the annotated image as a JPEG data URL"
    )


class LesionLargest(_Body):
    image: int = Field(description="the image on which the lesion is largest")
    width_mm: float
    height_mm: float
    estimated: bool = Field(description="true when the size rests on a default pixel spacing")


class Lesion(_Body):
    id: int = Field(description="1-based, as the report names lesions")
    class_name: str = Field(alias="class", description="confidence-weighted over its slices")
    confidence: float = Field(ge=0, le=1)
    images: list[int] = Field(description="the images it is detected on")
    largest: LesionLargest
    craniocaudal_mm: float | None = Field(
        description="head-to-foot extent from the slice positions; null without geometry"
    )
    volume_ml: float | None = Field(
        description="box-based volume estimate (mean box area x depth); null without geometry"
    )
    volume_method: str | None = Field(description="'box-based estimate', or null")
    side: Literal["left", "right", "midline"] | None = Field(
        description="the patient's side of its centre from the head's own midline; null when "
        "unknown or in doubt (always null for PNG, JPEG and TIFF)"
    )
    series: int


class SeriesBody(_Body):
    number: int
    format: str
    images: list[int] = Field(description="its images, numbered in anatomical order")
    slice_spacing_mm: float | None = Field(description="from the slice positions; null without")
    notes: list[str] = Field(description="gaps, duplicate slices, mixed orientations")
    repeated_files_ignored: int = Field(description="files sent twice, read once")


class DetectionResults(_Body):
    timestamp: datetime
    images: list[ImageResult]


class Summary(_Body):
    total_images: int
    total_detections: int
    tumour_detections: int = Field(description="detections of a tumour class (not 'No Tumor')")
    classes_detected: list[str]
    counts_by_class: dict[str, int]
    study_positive: bool
    positive_images: list[int]
    sizes_estimated: bool
    spacing_sources: list[str]


class ReportBody(_Body):
    status: Literal["preliminary"] = Field(
        description="always 'preliminary': a machine read, as the DICOM SR and FHIR say too"
    )
    verification: Literal["unverified"] = Field(
        description="always 'unverified': no person has checked it"
    )
    engine: str = Field(description="the engine whose text this is: 'template' or engine:model")
    fallback_reason: str | None = Field(description="why the template stood in for the model")
    sections: dict[str, str] = Field(description="EXAMINATION ... DISCLAIMER, in order")


class ModelBody(_Body):
    name: str
    version: str
    backend: str
    classes: list[str]
    input_size: list[int]
    conf_threshold: float
    iou_threshold: float


class AnalyzeResult(_Body):
    """POST /analyze-json: the prototype's success, detection_results, medical_report and
    summary, then mriscribe's report, model and timings."""

    success: bool = Field(default=True, description="always true in a 200 answer")
    detection_results: DetectionResults
    medical_report: str = Field(description="the whole report as text, sections in order")
    summary: Summary
    report: ReportBody
    lesions: list[Lesion] = Field(
        description="tumour detections linked across adjacent slices of a series; without "
        "geometry, one lesion per detection"
    )
    series: list[SeriesBody]
    model: ModelBody
    timings_ms: dict[str, float] = Field(description="decode, detect, measure, report, ...")
    pdf_base64: str | None = Field(default=None, description="with ?pdf=true: the PDF report")


# The multipart body of /analyze and /analyze-json. The routes read it themselves, streaming
# to a spool after the key and the limits are checked, so it is declared here, not parsed.
UPLOAD_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["images"],
                "properties": {
                    "images": {
                        "type": "array",
                        # OpenAPI 3.1's file: what FastAPI writes for UploadFile.
                        "items": {"type": "string", "contentMediaType": "application/octet-stream"},
                        "description": "one or more files (PNG, JPEG, TIFF, DICOM, NIfTI), "
                        "analysed together as one study; the format is read from the content",
                    }
                },
            }
        }
    },
}

_ERRORS: dict[int, str] = {
    400: "no files, an unreadable file (all bad files named), or a malformed request",
    401: "no API key, or one that is wrong or revoked (when the service has keys)",
    403: "the API key lacks the scope this route needs",
    408: "the request body paused too long or took too long to arrive",
    413: "over a limit: bytes per file or request, images, pixels, decoded data",
    415: "content in no supported format",
    422: "the result asked for cannot be made from these images: DICOM results need DICOM "
    "images of one study and one patient, FHIR images of one patient (the message says why)",
    429: "over a rate limit (per key or per client address); Retry-After says when to retry",
    500: "an unexpected failure, logged under the request id the answer names",
    503: "not ready (the model is loading), too busy, or the rate-limit store is unavailable; "
    "Retry-After says when to retry",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entry of a route for these error codes, all with ErrorBody."""
    return {code: {"model": ErrorBody, "description": _ERRORS[code]} for code in codes}
