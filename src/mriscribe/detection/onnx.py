"""YOLOv8 / YOLO11 detection models on ONNX Runtime: the default, light runtime backend."""

from __future__ import annotations

import ast
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mriscribe.detection.base import Box, Finding, ModelInfo, file_sha256
from mriscribe.detection.letterbox import Letterbox, letterbox
from mriscribe.detection.yolo import decode_predictions
from mriscribe.errors import ModelError

log = logging.getLogger(__name__)


class OnnxDetector:
    """Runs a YOLOv8/YOLO11 detection ONNX export (output ``[batch, 4 + classes, anchors]``).

    Class names and input size come from the export's metadata (Ultralytics writes ``names``
    and ``imgsz``); ``class_names`` overrides them for exports without metadata.
    """

    def __init__(
        self,
        path: str | Path,
        conf_threshold: float = 0.25,
        iou_threshold: float = 0.45,
        threads: int = 0,
        batch_size: int = 8,
        class_names: Sequence[str] | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.conf_threshold = conf_threshold
        self.iou_threshold = iou_threshold
        self.batch_size = max(1, batch_size)
        if not self.path.is_file():
            raise ModelError(str(self.path), "model file not found")
        options = ort.SessionOptions()
        # ONNX Runtime's own default counts physical cores, which on a 2-vCPU machine can be 1.
        options.intra_op_num_threads = threads if threads > 0 else _available_cores()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ONNX Runtime raises its own exception types
            raise ModelError(
                str(self.path), f"not a readable ONNX model ({type(exc).__name__}: {exc})"
            ) from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = inputs[0].shape if len(inputs) == 1 else []
        if len(shape) != 4 or shape[1] not in (3, "3") or len(outputs) < 1:
            raise ModelError(
                str(self.path),
                "not a YOLO detection model: expected one image input [batch, 3, height, width]",
            )
        input_types = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
        if inputs[0].type not in input_types:
            raise ModelError(
                str(self.path), f"input type {inputs[0].type}: expected float32 or float16"
            )
        self._input_name = inputs[0].name
        self._input_dtype = input_types[inputs[0].type]
        # A fixed-batch export runs in chunks of exactly that size (padded at the end).
        self._fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        meta = self.session.get_modelmeta().custom_metadata_map
        task = meta.get("task")
        if task is not None and task != "detect":
            raise ModelError(str(self.path), f"a YOLO '{task}' model, expected a 'detect' model")
        names = tuple(class_names) if class_names else _names_from_meta(meta.get("names"))
        size = _input_size(meta.get("imgsz"), inputs[0].shape)
        output_shape = outputs[0].shape
        rows = output_shape[1] if len(output_shape) == 3 else None
        if len(output_shape) != 3:
            raise ModelError(
                str(self.path),
                f"output shape {output_shape} is not a YOLO detection head [batch, 4+classes, N]",
            )
        if not names:
            if not isinstance(rows, int):
                raise ModelError(str(self.path), "no class names in metadata and none given")
            names = tuple(f"class_{i}" for i in range(rows - 4))
            log.warning(
                "model has no class names in its metadata; using class_0..class_%d", rows - 5
            )
        if isinstance(rows, int) and rows != 4 + len(names):
            raise ModelError(
                str(self.path),
                f"output has {rows} rows but {len(names)} class names: expected 4 + classes "
                "(is this an end-to-end or non-YOLO export?)",
            )
        self.info = ModelInfo(
            path=str(self.path),
            backend="onnxruntime",
            class_names=names,
            input_size=size,
            description=meta.get("description", ""),
            # Ultralytics stores its own package version under "version", so a model is
            # versioned by our key if present, else by its export date.
            version=meta.get("model_version") or meta.get("date", "")[:10],
            sha256=file_sha256(self.path),
        )

    def preprocess(
        self, images: Sequence[np.ndarray], batch_size: int | None = None
    ) -> tuple[np.ndarray, list[Letterbox]]:
        """Letterbox RGB uint8 images into one NCHW batch in [0, 1] (zero rows pad it up to
        ``batch_size`` for fixed-batch models)."""
        rows = max(len(images), batch_size or 0)
        batch = np.zeros((rows, 3, *self.info.input_size), dtype=np.float32)
        mappings = []
        for i, image in enumerate(images):
            padded, mapping = letterbox(image, self.info.input_size)
            np.multiply(padded.transpose(2, 0, 1), 1.0 / 255.0, out=batch[i], casting="unsafe")
            mappings.append(mapping)
        return batch.astype(self._input_dtype, copy=False), mappings

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Finding]]:
        """Findings per image, in each image's own pixel coordinates, best first."""
        results: list[list[Finding]] = []
        step = self._fixed_batch or self.batch_size
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            batch, mappings = self.preprocess(chunk, self._fixed_batch)
            output = self.session.run(None, {self._input_name: batch})[0]
            for raw, mapping in zip(output[: len(chunk)], mappings, strict=True):
                boxes, scores, class_ids = decode_predictions(
                    raw.astype(np.float32, copy=False), self.conf_threshold, self.iou_threshold
                )
                boxes = mapping.to_original(boxes)
                results.append(
                    [
                        Finding(
                            class_name=self.info.class_names[int(c)],
                            class_id=int(c),
                            confidence=float(s),
                            box=Box(*(float(v) for v in b)),
                        )
                        for b, s, c in zip(boxes, scores, class_ids, strict=True)
                    ]
                )
        return results


def _available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _names_from_meta(value: str | None) -> tuple[str, ...]:
    """Parse Ultralytics' ``names`` metadata: a dict literal {0: 'a', ...} (or a list)."""
    if not value:
        return ()
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return ()
    if isinstance(parsed, dict):
        return tuple(str(parsed[k]) for k in sorted(parsed))
    if isinstance(parsed, list | tuple):
        return tuple(str(v) for v in parsed)
    return ()


def _input_size(value: str | None, shape: Sequence[object]) -> tuple[int, int]:
    """Model input (height, width): from metadata, else the static input shape, else 640."""
    if value:
        try:
            parsed = ast.literal_eval(value)
            if isinstance(parsed, int):
                return parsed, parsed
            if isinstance(parsed, list | tuple) and len(parsed) == 2:
                return int(parsed[0]), int(parsed[1])
        except (ValueError, SyntaxError):
            pass
    height, width = shape[2], shape[3]
    if isinstance(height, int) and isinstance(width, int):
        return height, width
    return 640, 640
