"""Finding tumours in slices: the Detector protocol, its findings and the model backends."""

from mriscribe.detection.base import Box, Detector, Finding, ModelInfo
from mriscribe.detection.loader import DEFAULT_MODEL, load_detector

__all__ = ["DEFAULT_MODEL", "Box", "Detector", "Finding", "ModelInfo", "load_detector"]
