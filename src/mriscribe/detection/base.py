"""What a detector returns and the small protocol every detector backend follows."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import PurePath
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixel coordinates of the original image (x right, y down)."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    def as_dict(self) -> dict[str, float]:
        """The prototype's bbox format."""
        return {
            "x1": round(self.x1, 2),
            "y1": round(self.y1, 2),
            "x2": round(self.x2, 2),
            "y2": round(self.y2, 2),
            "width": round(self.width, 2),
            "height": round(self.height, 2),
        }


@dataclass(frozen=True)
class Finding:
    """One detection: a class name, its confidence in [0, 1] and its box."""

    class_name: str
    class_id: int
    confidence: float
    box: Box

    def as_dict(self) -> dict[str, object]:
        """The prototype's detection format."""
        return {
            "class": self.class_name,
            "confidence": round(self.confidence, 4),
            "bbox": self.box.as_dict(),
        }


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded detector is: shown by the CLI and, later, by /health."""

    path: str
    backend: str
    class_names: tuple[str, ...]
    input_size: tuple[int, int]
    description: str = ""
    version: str = ""
    sha256: str = ""  # of the model file: which weights made a result (DICOM, FHIR provenance)

    @property
    def name(self) -> str:
        """The model's name: its file name without the suffix."""
        return PurePath(self.path.replace("\\", "/")).stem

    def as_dict(self) -> dict[str, object]:
        """What /health, the JSON results and `mriscribe models` say about the model."""
        return {
            "name": self.name,
            "version": self.version,
            "backend": self.backend,
            "classes": list(self.class_names),
            "input_size": list(self.input_size),
        }


@runtime_checkable
class Detector(Protocol):
    """Finds objects in RGB uint8 images (H, W, 3).

    ``detect`` takes a batch of images of any sizes and returns, for each image in order, its
    findings sorted by confidence (highest first), boxes in that image's own pixel coordinates.
    It must be safe to call from several threads once constructed.
    """

    info: ModelInfo

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Finding]]: ...


def file_sha256(path: str | PathLike[str]) -> str:
    """The SHA-256 of a file, read in blocks ("" if it cannot be read)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    except OSError:
        return ""
    return digest.hexdigest()
