"""Letterbox resizing (keep aspect ratio, pad to the model's square input) and its inverse."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

# Ultralytics pads with grey 114; matching it keeps our inputs identical to what training saw.
PAD_VALUE = 114


@dataclass(frozen=True)
class Letterbox:
    """How an image was mapped into the model input: scale first, then padding offsets."""

    scale: float
    pad_x: float
    pad_y: float
    width: int
    height: int

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Map (N, 4) x1,y1,x2,y2 boxes from model input space back to the original image."""
        out = boxes.astype(np.float64, copy=True)
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_x) / self.scale
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_y) / self.scale
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, self.width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, self.height)
        return out

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Map (N, 4) boxes from the original image into model input space."""
        out = boxes.astype(np.float64, copy=True)
        out[:, [0, 2]] = out[:, [0, 2]] * self.scale + self.pad_x
        out[:, [1, 3]] = out[:, [1, 3]] * self.scale + self.pad_y
        return out


def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Resize RGB uint8 ``image`` into ``size`` (height, width) keeping its aspect ratio.

    Returns the padded uint8 image and the mapping needed to undo it, computed the way
    Ultralytics does so that boxes agree with its own ``predict``.
    """
    height, width = image.shape[:2]
    target_h, target_w = size
    scale = min(target_h / height, target_w / width)
    # At least one pixel each way, however elongated the image.
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    pad_x, pad_y = (target_w - new_w) / 2, (target_h - new_h) / 2
    if (new_w, new_h) != (width, height):
        resized = np.asarray(
            Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR)
        )
    else:
        resized = image
    top, left = round(pad_y - 0.1), round(pad_x - 0.1)
    canvas = np.full((target_h, target_w, 3), PAD_VALUE, dtype=np.uint8)
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas, Letterbox(scale, float(left), float(top), width, height)
