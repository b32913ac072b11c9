"""Choosing and loading a detector backend for a model path."""

from __future__ import annotations

from pathlib import Path

from mriscribe.detection.base import Detector
from mriscribe.errors import ModelError

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "mriscribe-yolov8n.onnx"


def load_detector(
    path: str | Path | None = None,
    conf_threshold: float = 0.25,
    iou_threshold: float = 0.45,
    threads: int = 0,
    imgsz: int | None = None,
) -> Detector:
    """Load ``path`` (default: the shipped model): ``.onnx`` on ONNX Runtime, ``.pt`` through
    Ultralytics (needs the ``train`` extra; ``imgsz`` overrides the size it was trained at).
    Raises ModelError naming the path on failure."""
    model_path = Path(path) if path else DEFAULT_MODEL
    if not model_path.exists():
        raise ModelError(str(model_path), "model file not found")
    if model_path.is_dir():
        raise ModelError(str(model_path), "is a folder; expected a .onnx or .pt model file")
    try:
        with model_path.open("rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise ModelError(str(model_path), f"cannot be read ({exc.strerror})") from None
    suffix = model_path.suffix.lower()
    # A .pt checkpoint is a zip archive (torch.save); anything else is tried as ONNX protobuf.
    if suffix == ".pt" or head == b"PK\x03\x04":
        from mriscribe.detection.ultralytics import UltralyticsDetector

        return UltralyticsDetector(model_path, conf_threshold, iou_threshold, imgsz=imgsz)
    if suffix not in (".onnx", ""):
        raise ModelError(
            str(model_path), f"unsupported model type '{suffix}': expected .onnx or .pt"
        )
    from mriscribe.detection.onnx import OnnxDetector

    return OnnxDetector(model_path, conf_threshold, iou_threshold, threads=threads)
