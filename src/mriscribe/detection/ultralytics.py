"""Ultralytics ``.pt`` models (such as the prototype's ``yolov8_model.pt``), when the optional
``train`` extra is installed. Ultralytics is AGPL-3.0, so it is imported only here, only when a
user points mriscribe at a ``.pt`` file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mriscribe.detection.base import Box, Finding, ModelInfo, file_sha256
from mriscribe.errors import MissingExtraError, ModelError


class UltralyticsDetector:
    """Runs a ``.pt`` detection model through Ultralytics ``predict``."""

    def __init__(
        self,
        path: str | Path,
        conf_threshold: float = 0.25,
        iou_threshold: float = 0.45,
        imgsz: int | None = None,
    ) -> None:
        try:
            from ultralytics import YOLO
        except ImportError:
            raise MissingExtraError(".pt models", "train", "ultralytics") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(str(self.path), "model file not found")
        try:
            self.model = YOLO(str(self.path), task="detect")
        except Exception as exc:  # Ultralytics and torch raise many exception types
            raise ModelError(
                str(self.path), f"not a loadable Ultralytics model ({type(exc).__name__}: {exc})"
            ) from None
        task = getattr(self.model, "task", "detect")
        if task != "detect":
            raise ModelError(str(self.path), f"a YOLO '{task}' model, expected a 'detect' model")
        names = self.model.names
        class_names = tuple(str(names[k]) for k in sorted(names))
        train_args = getattr(self.model.model, "args", {}) or {}
        trained = train_args.get("imgsz", 640) or 640
        if isinstance(trained, list | tuple):
            trained = max(int(v) for v in trained)
        size = int(imgsz or trained)
        self.conf_threshold = conf_threshold
        self.iou_threshold = iou_threshold
        self.info = ModelInfo(
            path=str(self.path),
            backend="ultralytics",
            class_names=class_names,
            input_size=(size, size),
            sha256=file_sha256(self.path),
        )

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Finding]]:
        """Findings per image; Ultralytics expects BGR arrays, so channels are swapped."""
        results = self.model.predict(
            [np.ascontiguousarray(image[:, :, ::-1]) for image in images],
            conf=self.conf_threshold,
            iou=self.iou_threshold,
            imgsz=self.info.input_size[0],
            verbose=False,
            device="cpu",
        )
        out: list[list[Finding]] = []
        for result in results:
            boxes = result.boxes
            xyxy = boxes.xyxy.cpu().numpy()
            confs = boxes.conf.cpu().numpy()
            classes = boxes.cls.cpu().numpy().astype(int)
            order = np.argsort(-confs, kind="stable")
            out.append(
                [
                    Finding(
                        self.info.class_names[classes[i]],
                        int(classes[i]),
                        float(confs[i]),
                        Box(*(float(v) for v in xyxy[i])),
                    )
                    for i in order
                ]
            )
        return out
