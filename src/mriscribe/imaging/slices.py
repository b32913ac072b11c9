"""The unit every input format is decoded into: one 2-D slice with its pixel spacing."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mriscribe.imaging.geometry import SourceRef


@dataclass(frozen=True)
class Slice:
    """One 2-D image ready for detection.

    ``pixels`` is RGB uint8 (H, W, 3) as a viewer would show it. ``spacing_mm`` is the real
    (row, column) pixel spacing in millimetres when the file states it (DICOM PixelSpacing, NIfTI
    zooms), else None and the pipeline applies the configured default and marks sizes as
    estimates. ``spacing_source`` says where a known spacing came from. ``meta`` holds technical
    facts only (format, transfer syntax, frame): never patient data. ``source`` says exactly
    which pixels of which file these are and, where known, where they lie in the patient.
    """

    name: str
    pixels: np.ndarray
    meta: dict[str, str] = field(default_factory=dict)
    spacing_mm: tuple[float, float] | None = None
    spacing_source: str = ""
    source: SourceRef | None = None

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])
