"""A user's Ultralytics .pt model runs unchanged through the same Detector interface."""

from pathlib import Path

import numpy as np
import pytest

from conftest import HELDOUT
from mriscribe.detection import load_detector
from mriscribe.detection.yolo import box_iou
from mriscribe.imaging import read_raster

pytest.importorskip("ultralytics", reason="the 'train' extra (ultralytics) is not installed")

WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "mriscribe-yolov8n.pt"


def test_pt_model_agrees_with_its_onnx_export(detector, heldout_cases):
    pt = load_detector(WEIGHTS, imgsz=detector.info.input_size[0])
    assert pt.info.backend == "ultralytics"
    assert pt.info.class_names == detector.info.class_names
    images = [read_raster(HELDOUT / c["file"]).pixels for c in heldout_cases[:6]]
    for a, b in zip(pt.detect(images), detector.detect(images), strict=True):
        assert [f.class_name for f in a] == [f.class_name for f in b]
        for fa, fb in zip(a, b, strict=True):
            assert fa.confidence == pytest.approx(fb.confidence, abs=0.02)
            iou = box_iou(
                np.array([fa.box.x1, fa.box.y1, fa.box.x2, fa.box.y2]),
                np.array([[fb.box.x1, fb.box.y1, fb.box.x2, fb.box.y2]]),
            )[0]
            assert iou > 0.95


def test_corrupt_pt_names_the_path(tmp_path: Path):
    from mriscribe.errors import ModelError

    path = tmp_path / "yolov8_model.pt"
    path.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(ModelError, match=r"yolov8_model\.pt: not a loadable Ultralytics model"):
        load_detector(path)


def test_average_of_checkpoints_is_their_mean(tmp_path: Path):
    import torch

    from mriscribe.training.train import average

    original = torch.load(WEIGHTS, map_location="cpu", weights_only=False)
    shifted = torch.load(WEIGHTS, map_location="cpu", weights_only=False)
    name = next(k for k, v in shifted["model"].state_dict().items() if v.dtype.is_floating_point)
    with torch.no_grad():
        shifted["model"].state_dict()[name].add_(1.0)
    shifted_path = tmp_path / "shifted.pt"
    torch.save(shifted, shifted_path)

    merged_path = average([WEIGHTS, shifted_path], tmp_path / "mean.pt")
    merged = torch.load(merged_path, map_location="cpu", weights_only=False)["model"].state_dict()
    before = original["model"].state_dict()
    assert torch.allclose(merged[name].float(), before[name].float() + 0.5, atol=2e-3)
    others = [k for k in before if k != name and before[k].dtype.is_floating_point]
    assert all(torch.equal(merged[k], before[k]) for k in others)
    # The mean is a working checkpoint: it loads and detects like any other.
    assert load_detector(merged_path).info.class_names == load_detector(WEIGHTS).info.class_names


def test_average_refuses_a_single_checkpoint(tmp_path: Path):
    from mriscribe.training.train import average

    with pytest.raises(ValueError, match="at least two"):
        average([WEIGHTS], tmp_path / "mean.pt")
