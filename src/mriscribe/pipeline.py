"""The one road: input files -> slices -> findings in mm -> study facts -> report.

The HTTP API, the CLI and the tests all call :func:`analyze`; nothing about analysis lives in
a route or a command. Models load once per process and are shared between threads.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from mriscribe.analysis import Analysis, ImageResult, MeasuredFinding, Measurement
from mriscribe.detection import Detector, Finding, load_detector
from mriscribe.errors import InputError, LimitError, MriscribeError, UnsupportedFormatError
from mriscribe.imaging.decode import decode_file
from mriscribe.imaging.files import read_input_file
from mriscribe.imaging.slices import Slice
from mriscribe.report.writer import Mode, ReportWriter, get_writer
from mriscribe.settings import Settings
from mriscribe.study.assemble import study_facts
from mriscribe.study.series import arrange

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class InputFile:
    """One uploaded or named file: a display name (never a path to write to) and its bytes,
    in memory or in a spooled file that is read only when this file's turn to decode comes.

    The caller owns a spooled file: it stays open for the analysis and the caller closes it.
    """

    name: str
    data: bytes | BinaryIO
    size: int = -1  # bytes; -1: len(data) for bytes, else measured from the file

    @property
    def nbytes(self) -> int:
        if isinstance(self.data, bytes):
            return len(self.data)
        if self.size >= 0:
            return self.size
        position = self.data.seek(0, io.SEEK_END)
        return int(position)

    def read(self, max_bytes: int) -> bytes:
        """The bytes (at most ``max_bytes + 1``, so that an oversized file shows as such)."""
        if isinstance(self.data, bytes):
            return self.data
        self.data.seek(0)
        return self.data.read(max_bytes + 1)


class InputProblemsError(MriscribeError):
    """One or more input files cannot be analysed; each problem names its file.

    The problems are fresh copies with no traceback, so a failed request keeps nothing alive:
    a stored exception's traceback holds the frames that held the decoded data.
    """

    def __init__(self, problems: Sequence[InputError]) -> None:
        self.problems = tuple(_detached(problem) for problem in problems)
        super().__init__("; ".join(str(problem) for problem in self.problems))

    @property
    def kind(self) -> str:
        """'limit', 'unsupported' or 'unreadable': the HTTP layer maps these to 413, 415, 400."""
        if any(isinstance(p, LimitError) for p in self.problems):
            return "limit"
        if all(isinstance(p, UnsupportedFormatError) for p in self.problems):
            return "unsupported"
        return "unreadable"


def _detached(problem: InputError, path: str | None = None) -> InputError:
    """The same problem as a new exception: no traceback, no context, optionally renamed."""
    return type(problem)(problem.path if path is None else path, problem.problem)


# Characters that never belong in a shown name: controls, format characters (bidi overrides
# such as U+202E, zero-width joiners), line and paragraph separators, surrogates, private use.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def safe_name(name: str | None, number: int) -> str:
    """A display name from a client-supplied file name: no folders, no control or bidi
    characters (a name must read the same everywhere it is shown)."""
    base = re.split(r"[\\/]", unicodedata.normalize("NFC", name or ""))[-1]
    base = "".join(ch for ch in base if unicodedata.category(ch) not in _HIDDEN_CATEGORIES)
    base = base.strip().lstrip(".")[:200]
    return base or f"image-{number}"


def numbered_name(number: int) -> str:
    """How a file is named where file names must not be echoed (``name_images_by_number``)."""
    return f"file {number}"


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

    Files are read here one at a time (a path from disk, a spooled upload from its file), and
    each file's decoded bytes and pixels are taken from the request's budget (max_decoded_mb,
    max_total_pixels) from its header, before it is decoded; decoding stops as soon as the
    request passes its image count. One request cannot hold more than that in memory.

    Slices and errors name a file by its base name (never a folder), or by its number where
    ``name_images_by_number`` is set; a path given on the command line is named in full in its
    errors, which only its own user sees.
    """
    limits = settings.limits
    if not files:
        raise InputProblemsError([InputError("request", "no image files were sent")])
    total = sum(f.nbytes for f in files if isinstance(f, InputFile))
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
    budget = limits.budget()
    slices: list[Slice] = []
    problems: list[InputError] = []
    for number, item in enumerate(files, start=1):
        name, label = _names(item, number, settings.name_images_by_number)
        problem = None
        try:
            data = (
                read_input_file(item, limits.max_file_bytes)
                if isinstance(item, Path)
                else item.read(limits.max_file_bytes)
            )
            decoded = decode_file(
                data,
                name,
                limits,
                nifti_step=settings.nifti_step,
                nifti_max_slices=settings.nifti_max_slices,
                budget=budget,
            )
        except InputError as exc:
            problem = _detached(exc, label if exc.path in (name, str(item)) else None)
        except Exception as exc:  # a decoder library failing on a malformed file
            log.warning("decoder failed", extra={"exception": type(exc).__name__})
            problem = InputError(
                label, f"cannot be decoded: the file is malformed ({type(exc).__name__})"
            )
        finally:
            data = None  # the file's bytes go as soon as it is decoded
        if problem is not None:
            problems.append(problem)
            continue
        slices.extend(_placed(decoded, number))
        if len(slices) > limits.max_images:
            problems.append(
                LimitError("request", f"more than the limit of {limits.max_images} images")
            )
            break
    if problems:
        slices.clear()
        raise InputProblemsError(problems)
    return slices


def _placed(decoded: list[Slice], number: int) -> list[Slice]:
    """A file's slices with its place in the upload (``meta['file_number']``, 1-based), and
    named by that number where the decoder withheld a name that identifies the patient or
    the study (a DICOM file named by its UIDs or the patient's name)."""
    placed = []
    for item in decoded:
        meta = {**item.meta, "file_number": str(number)}
        name = item.name
        if meta.pop("name_withheld", None):
            frame = meta.get("frame")
            name = numbered_name(number) + (f" [frame {frame}]" if frame else "")
        placed.append(replace(item, name=name, meta=meta))
    return placed


def _names(item: InputFile | Path, number: int, by_number: bool) -> tuple[str, str]:
    """(the name slices and outputs carry, the name errors give) for one input file."""
    if by_number:
        return numbered_name(number), numbered_name(number)
    if isinstance(item, Path):
        return safe_name(item.name, number), str(item)
    return item.name, item.name


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
    deadline: float | None = None,
) -> Analysis:
    """Analyse one study: every input file, all its slices, one report.

    Raises InputProblemsError for bad inputs (naming each file) and ModelError if the model cannot
    load. ``render_images`` also draws each annotated image once (for the PDF and the page).
    ``progress(done, total)`` is called after each detection batch. ``report_engine``
    ("chain" or "template") overrides the settings' choice for this study. ``deadline`` (on the
    ``time.monotonic()`` clock) is when the report must be written: the service counts it from
    the request's arrival, so time spent queueing is part of it; default (the command line): the
    report deadline from when the report starts, as ever.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    detector = detector or get_detector(settings)

    # Series by series, each in anatomical order: the order images are numbered and read in.
    series = arrange(decode_inputs(inputs, settings))
    slices = [item for one in series for item in one.slices]
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
    places = [
        (number, position)
        for number, one in enumerate(series, start=1)
        for position in (one.positions or (None,) * len(one.slices))
    ]
    for number, (item, found, (series_number, position)) in enumerate(
        zip(slices, findings, places, strict=True), start=1
    ):
        estimated = item.spacing_mm is None
        spacing = default if item.spacing_mm is None else item.spacing_mm
        source = default_source if estimated else item.spacing_source
        # Detectors return findings highest confidence first (the Detector protocol).
        measured = tuple(MeasuredFinding(f, measure(f, spacing, source, estimated)) for f in found)
        images.append(
            ImageResult(
                number, item, measured, spacing, source, estimated, series_number, position
            )
        )
    facts = study_facts(images, settings.conf_threshold, series, settings.side_threshold_mm)
    timings["measure"] = _ms_since(mark)

    mark = time.perf_counter()
    writer = writer or get_writer(settings)
    report = writer.write(
        facts,
        model_name=detector.info.name,
        model_version=detector.info.version,
        mode=report_engine,
        deadline=deadline,
    )
    timings["report"] = _ms_since(mark)

    if render_images:
        from mriscribe.render.annotate import annotated_jpeg

        mark = time.perf_counter()
        images = [
            replace(
                image,
                annotated_jpeg=annotated_jpeg(
                    image.slice.pixels,
                    image.findings,
                    plane=image.slice.source.plane if image.slice.source else None,
                ),
            )
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


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)
