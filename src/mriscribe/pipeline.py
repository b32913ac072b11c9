"""The one road: input files -> slices -> findings in mm -> study facts -> report.

The HTTP API, the CLI and the tests all call :func:`analyze`; nothing about analysis lives in
a route or a command. Models load once per process and are shared between threads.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from mriscribe.analysis import Analysis, ImageResult, MeasuredFinding, Measurement
from mriscribe.detection import Detector, Finding, load_detector
from mriscribe.errors import InputError, LimitError, MriscribeError, UnsupportedFormatError
from mriscribe.imaging.decode import decode_file
from mriscribe.imaging.files import read_input_file
from mriscribe.imaging.slices import Slice
from mriscribe.report.facts import FindingFact, StudyFacts, image_facts
from mriscribe.report.writer import Mode, ReportWriter, get_writer
from mriscribe.settings import Settings

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class InputFile:
    """One uploaded or named file: a display name (never a path to write to) and its bytes."""

    name: str
    data: bytes


class InputProblemsError(MriscribeError):
    """One or more input files cannot be analysed; each problem names its file."""

    def __init__(self, problems: Sequence[InputError]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(problem) for problem in self.problems))

    @property
    def kind(self) -> str:
        """'limit', 'unsupported' or 'unreadable': the HTTP layer maps these to 413, 415, 400."""
        if any(isinstance(p, LimitError) for p in self.problems):
            return "limit"
        if all(isinstance(p, UnsupportedFormatError) for p in self.problems):
            return "unsupported"
        return "unreadable"


def safe_name(name: str | None, number: int) -> str:
    """A display name from a client-supplied file name: no folders, no control characters."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = _UNSAFE.sub("", base).strip().lstrip(".")[:200]
    return base or f"image-{number}"


_detectors: dict[tuple[object, ...], Detector] = {}
_detectors_lock = threading.Lock()
# One inference at a time: each already uses every core, so running two at once only thrashes.
_inference_lock = threading.Lock()


def get_detector(settings: Settings) -> Detector:
    """The detector for ``settings``, loaded once per process (ModelError if it cannot load)."""
    key = (settings.model_path, settings.conf_threshold, settings.iou_threshold, settings.threads)
    with _detectors_lock:
        if key not in _detectors:
            _detectors[key] = load_detector(
                settings.model_path,
                conf_threshold=settings.conf_threshold,
                iou_threshold=settings.iou_threshold,
                threads=settings.threads,
            )
        return _detectors[key]


def decode_inputs(files: Sequence[InputFile | Path], settings: Settings) -> list[Slice]:
    """Every slice of every file, in order; all bad files reported together (InputProblemsError).

    Paths are read here, one at a time. Decoding stops as soon as the request passes its image
    count or decoded-pixel budget, so one request cannot hold more than about that in memory.
    """
    limits = settings.limits
    if not files:
        raise InputProblemsError([InputError("request", "no image files were sent")])
    total = sum(len(f.data) for f in files if isinstance(f, InputFile))
    if total > limits.max_request_bytes:
        raise InputProblemsError(
            [
                LimitError(
                    "request",
                    f"files total {total:,} bytes, more than the limit of "
                    f"{limits.max_request_bytes:,}",
                )
            ]
        )
    slices: list[Slice] = []
    problems: list[InputError] = []
    pixels = 0
    for item in files:
        name = item.name if isinstance(item, InputFile) else str(item)
        try:
            data = item.data if isinstance(item, InputFile) else read_input_file(
                item, limits.max_file_bytes
            )
            decoded = decode_file(
                data,
                name,
                limits,
                nifti_step=settings.nifti_step,
                nifti_max_slices=settings.nifti_max_slices,
            )
        except InputError as exc:
            problems.append(exc)
            continue
        except Exception as exc:  # a decoder library failing on a malformed file
            log.warning("decoder failed", extra={"exception": type(exc).__name__})
            problems.append(
                InputError(name, f"cannot be decoded: the file is malformed ({type(exc).__name__})")
            )
            continue
        slices.extend(decoded)
        pixels += sum(s.width * s.height for s in decoded)
        if len(slices) > limits.max_images:
            problems.append(
                LimitError("request", f"more than the limit of {limits.max_images} images")
            )
            break
        if pixels > limits.max_total_pixels:
            problems.append(
                LimitError(
                    "request",
                    f"more than the limit of {limits.max_total_pixels:,} decoded pixels",
                )
            )
            break
    if problems:
        raise InputProblemsError(problems)
    return slices


def measure(finding: Finding, spacing: tuple[float, float], source: str, estimated: bool) -> (
    Measurement
):
    row_mm, col_mm = spacing
    return Measurement(
        width_mm=finding.box.width * col_mm,
        height_mm=finding.box.height * row_mm,
        spacing_mm=spacing,
        spacing_source=source,
        estimated=estimated,
    )


def analyze(
    inputs: Sequence[InputFile | Path],
    settings: Settings,
    *,
    detector: Detector | None = None,
    render_images: bool = False,
    progress: Callable[[int, int], None] | None = None,
    writer: ReportWriter | None = None,
    report_engine: Mode | None = None,
) -> Analysis:
    """Analyse one study: every input file, all its slices, one report.

    Raises InputProblemsError for bad inputs (naming each file) and ModelError if the model cannot
    load. ``render_images`` also draws each annotated image once (for the PDF and the page).
    ``progress(done, total)`` is called after each detection batch. ``report_engine``
    ("chain" or "template") overrides the settings' choice for this study.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    detector = detector or get_detector(settings)

    slices = decode_inputs(inputs, settings)
    timings["decode"] = _ms_since(started)

    mark = time.perf_counter()
    findings: list[list[Finding]] = []
    with _inference_lock:
        for start in range(0, len(slices), settings.batch_size):
            batch = slices[start : start + settings.batch_size]
            findings.extend(detector.detect([s.pixels for s in batch]))
            if progress is not None:
                progress(len(findings), len(slices))
    timings["detect"] = _ms_since(mark)

    mark = time.perf_counter()
    default = (settings.default_spacing_mm, settings.default_spacing_mm)
    default_source = f"default {settings.default_spacing_mm:g} mm/px (estimate)"
    images: list[ImageResult] = []
    for number, (item, found) in enumerate(zip(slices, findings, strict=True), start=1):
        estimated = item.spacing_mm is None
        spacing = default if item.spacing_mm is None else item.spacing_mm
        source = default_source if estimated else item.spacing_source
        # Detectors return findings highest confidence first (the Detector protocol).
        measured = tuple(MeasuredFinding(f, measure(f, spacing, source, estimated)) for f in found)
        images.append(ImageResult(number, item, measured, spacing, source, estimated))
    facts = study_facts(images, settings.conf_threshold)
    timings["measure"] = _ms_since(mark)

    mark = time.perf_counter()
    writer = writer or get_writer(settings)
    report = writer.write(
        facts,
        model_name=detector.info.name,
        model_version=detector.info.version,
        mode=report_engine,
    )
    timings["report"] = _ms_since(mark)

    if render_images:
        from mriscribe.render.annotate import annotated_jpeg

        mark = time.perf_counter()
        images = [
            replace(image, annotated_jpeg=annotated_jpeg(image.slice.pixels, image.findings))
            for image in images
        ]
        timings["annotate"] = _ms_since(mark)

    timings["total"] = _ms_since(started)
    return Analysis(
        timestamp=datetime.now(UTC),
        images=tuple(images),
        facts=facts,
        report=report,
        model=detector.info,
        conf_threshold=settings.conf_threshold,
        iou_threshold=settings.iou_threshold,
        timings_ms=timings,
    )


def study_facts(images: Sequence[ImageResult], conf_threshold: float) -> StudyFacts:
    """The facts every report writer reads, computed once from the measured findings."""
    return StudyFacts(
        images=tuple(
            image_facts(
                image.number,
                [
                    FindingFact(
                        image_number=image.number,
                        class_name=m.finding.class_name,
                        confidence=m.finding.confidence,
                        width_mm=m.size.width_mm,
                        height_mm=m.size.height_mm,
                        size_estimated=m.size.estimated,
                    )
                    for m in image.findings
                ],
                image.spacing_source,
                image.spacing_estimated,
            )
            for image in images
        ),
        conf_threshold=conf_threshold,
    )


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)
