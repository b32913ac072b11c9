"""The service's long-lived state: settings, the detector once loaded, and why not if not."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from mriscribe.detection import Detector
from mriscribe.errors import FileProblemError, MriscribeError
from mriscribe.pipeline import get_detector
from mriscribe.report.writer import ReportWriter
from mriscribe.settings import Settings

if TYPE_CHECKING:
    from mriscribe.node.node import DicomNode

log = logging.getLogger("mriscribe.service")


@dataclass
class ServiceState:
    settings: Settings
    started: float = field(default_factory=time.monotonic)
    detector: Detector | None = None
    detector_sha256: str = ""
    load_error: str | None = None
    # Bounds the memory of analyses in flight (each up to max_total_pixels decoded); inference
    # itself is serialised in the pipeline, so more at once would not be faster.
    slots: anyio.Semaphore = field(init=False)
    writer: ReportWriter = field(init=False)
    _thread: threading.Thread | None = None
    node: DicomNode | None = None

    def __post_init__(self) -> None:
        self.slots = anyio.Semaphore(self.settings.max_concurrent_analyses)
        self.writer = ReportWriter(self.settings)

    @property
    def ready(self) -> bool:
        return self.detector is not None

    @property
    def not_ready_reason(self) -> str:
        if self.load_error:
            return f"the detector could not be loaded: {self.load_error}"
        return "the detector model is still loading"

    def start_loading(self) -> None:
        """Load the models in the background, so /health can answer 503 meanwhile."""
        self._thread = threading.Thread(target=self._load, name="model-loader", daemon=True)
        self._thread.start()

    def wait_loaded(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            detector = get_detector(self.settings)
            # /health shows the first 16 hex digits (the model card's and the logs' form).
            self.detector_sha256 = (detector.info.sha256 or _sha256(Path(detector.info.path)))[:16]
            # The first DICOM and FHIR results would pay for the standard's tables: paid here,
            # before the service says it is ready.
            from mriscribe.outputs.warm import warm_up

            warm_up(self.settings, detector)
            self.detector = detector
            log.info(
                "detector loaded",
                extra={
                    "model": Path(detector.info.path).name,
                    "backend": detector.info.backend,
                    "load_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
        except MriscribeError as exc:
            # Clients see the file name and the problem; the full server path stays in the log.
            self.load_error = _public_reason(exc)
            log.error("detector failed to load", extra={"reason": str(exc)})
        except Exception as exc:  # reported through /health, never raised into the server
            self.load_error = f"unexpected failure ({type(exc).__name__})"
            log.exception("detector failed to load")
        # The service answers once the detector is in; until the language model is, reports
        # are the template's, with that reason.
        self.writer.load()

    def health(self) -> dict[str, object]:
        detector = self.detector
        writer = self.writer
        models: dict[str, object] = {"detector": None, "llm": None}
        if detector is not None:
            models["detector"] = {
                **detector.info.as_dict(),
                "file": Path(detector.info.path).name,
                "sha256": self.detector_sha256,
                "conf_threshold": self.settings.conf_threshold,
            }
        return {
            "status": "healthy" if self.ready else "unavailable" if self.load_error else "loading",
            "models_loaded": {"yolo": detector is not None, "llm": writer.engine is not None},
            "models": models,
            "report_engine": writer.engine.name if writer.engine is not None else "template",
            "report_writer": writer.status(),
            "uptime_s": round(time.monotonic() - self.started, 1),
            **({"dicom_node": self.node.snapshot()} if self.node is not None else {}),
        }


def _public_reason(exc: MriscribeError) -> str:
    """The error without the server's directories (a loader's own message may repeat them)."""
    if not isinstance(exc, FileProblemError):
        return str(exc)
    path = Path(exc.path)
    problem = exc.problem
    for form in sorted({str(path), str(path.absolute()), str(path.resolve())}, key=len)[::-1]:
        problem = problem.replace(form, path.name)
    for folder in {path.parent, path.absolute().parent, path.resolve().parent}:
        if str(folder) not in ("", ".", "/"):
            problem = problem.replace(str(folder), "...")
    return f"{path.name}: {problem}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
