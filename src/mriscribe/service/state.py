"""The service's long-lived state: settings, the detector once loaded, and why not if not."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mriscribe.detection import Detector
from mriscribe.errors import MriscribeError
from mriscribe.pipeline import get_detector
from mriscribe.settings import Settings

log = logging.getLogger("mriscribe.service")


@dataclass
class ServiceState:
    settings: Settings
    started: float = field(default_factory=time.monotonic)
    detector: Detector | None = None
    detector_sha256: str = ""
    load_error: str | None = None
    slots: Any = None  # an anyio.Semaphore bounding analyses in flight, set by create_app
    _thread: threading.Thread | None = None

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
            self.detector_sha256 = _sha256(Path(detector.info.path))
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
            self.load_error = str(exc)
            log.error("detector failed to load", extra={"reason": str(exc)})
        except Exception as exc:  # reported through /health, never raised into the server
            self.load_error = f"unexpected failure ({type(exc).__name__})"
            log.exception("detector failed to load")

    def health(self) -> dict[str, object]:
        detector = self.detector
        models: dict[str, object] = {"detector": None, "llm": None}
        if detector is not None:
            models["detector"] = {
                "name": Path(detector.info.path).stem,
                "file": Path(detector.info.path).name,
                "version": detector.info.version,
                "sha256": self.detector_sha256,
                "backend": detector.info.backend,
                "classes": list(detector.info.class_names),
                "input_size": list(detector.info.input_size),
                "conf_threshold": self.settings.conf_threshold,
            }
        return {
            "status": "healthy" if self.ready else "unavailable" if self.load_error else "loading",
            "models_loaded": {"yolo": detector is not None, "llm": False},
            "models": models,
            "report_engine": "template",
            "uptime_s": round(time.monotonic() - self.started, 1),
        }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
