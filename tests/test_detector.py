"""The shipped model on held-out anatomy, the ONNX backend's contract, and model load errors."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import HELDOUT
from mriscribe.detection import DEFAULT_MODEL, Detector, load_detector
from mriscribe.detection.onnx import OnnxDetector
from mriscribe.detection.yolo import box_iou
from mriscribe.errors import ModelError
from mriscribe.imaging import read_raster

TUMOURS = {"Glioma", "Meningioma", "Pituitary"}


def test_shipped_model_metadata(detector):
    assert isinstance(detector, Detector)
    assert detector.info.class_names == ("Glioma", "Meningioma", "No Tumor", "Pituitary")
    assert detector.info.input_size == (288, 288)  # trained at 256, run at 288 (model card)
    assert DEFAULT_MODEL.stat().st_size <= 15 * 1024 * 1024


def test_finds_each_tumour_class_on_heldout_anatomy(detector, heldout_cases):
    tumour_cases = [c for c in heldout_cases if c["class"] in TUMOURS]
    assert {c["class"] for c in tumour_cases} == TUMOURS
    assert all(c["anatomy"] == "colin27" for c in heldout_cases)  # never seen in training
    images = [read_raster(HELDOUT / c["file"]).pixels for c in tumour_cases]
    for case, findings in zip(tumour_cases, detector.detect(images), strict=True):
        same_class = [f for f in findings if f.class_name == case["class"]]
        assert same_class, f"{case['file']}: no {case['class']} found, got {findings}"
        best = max(
            float(
                box_iou(
                    np.array(case["box"]), np.array([[f.box.x1, f.box.y1, f.box.x2, f.box.y2]])
                )[0]
            )
            for f in same_class
        )
        assert best >= 0.5, f"{case['file']}: best IoU {best:.2f}"


def test_reports_no_tumour_class_on_normal_slices(detector, heldout_cases):
    normal = [c for c in heldout_cases if c["class"] == "No Tumor"]
    assert normal
    images = [read_raster(HELDOUT / c["file"]).pixels for c in normal]
    for case, findings in zip(normal, detector.detect(images), strict=True):
        found = {f.class_name for f in findings}
        assert not found & TUMOURS, f"{case['file']}: tumour reported on a normal slice: {found}"
        assert "No Tumor" in found


def test_batch_gives_the_same_findings_as_one_by_one(heldout_cases):
    detector = OnnxDetector(DEFAULT_MODEL, batch_size=4, threads=1)
    images = [read_raster(HELDOUT / c["file"]).pixels for c in heldout_cases[:6]]
    together = detector.detect(images)
    alone = [detector.detect([image])[0] for image in images]
    for a, b in zip(together, alone, strict=True):
        assert [f.class_name for f in a] == [f.class_name for f in b]
        for fa, fb in zip(a, b, strict=True):
            assert fa.confidence == pytest.approx(fb.confidence, abs=1e-4)
            for side in ("x1", "y1", "x2", "y2"):
                assert getattr(fa.box, side) == pytest.approx(getattr(fb.box, side), abs=0.05)


def test_boxes_are_in_original_image_coordinates(detector, heldout_cases):
    case = next(c for c in heldout_cases if c["class"] == "Meningioma")
    image = read_raster(HELDOUT / case["file"]).pixels
    big = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)  # same scan at 512 x 512
    small_box = next(f for f in detector.detect([image])[0] if f.class_name == "Meningioma").box
    big_box = next(f for f in detector.detect([big])[0] if f.class_name == "Meningioma").box
    assert big_box.x1 == pytest.approx(2 * small_box.x1, abs=4)
    assert big_box.y2 == pytest.approx(2 * small_box.y2, abs=4)


def test_confidence_threshold_filters(heldout_cases):
    images = [read_raster(HELDOUT / c["file"]).pixels for c in heldout_cases]
    loose = [f for found in OnnxDetector(DEFAULT_MODEL, 0.001).detect(images) for f in found]
    assert len(loose) > len(images)  # low-confidence candidates exist
    cut = sorted(f.confidence for f in loose)[len(loose) // 2]
    kept = [f for found in OnnxDetector(DEFAULT_MODEL, cut).detect(images) for f in found]
    assert 0 < len(kept) < len(loose)
    assert all(f.confidence > cut for f in kept)


def test_other_class_names_come_from_metadata(tmp_path: Path, heldout_cases):
    model = onnx.load(str(DEFAULT_MODEL))
    for prop in model.metadata_props:
        if prop.key == "names":
            prop.value = "{0: 'a', 1: 'b', 2: 'c', 3: 'd'}"
    path = tmp_path / "renamed.onnx"
    onnx.save(model, str(path))
    detector = load_detector(path)
    assert detector.info.class_names == ("a", "b", "c", "d")
    image = read_raster(HELDOUT / heldout_cases[0]["file"]).pixels
    assert {f.class_name for f in detector.detect([image])[0]} <= {"a", "b", "c", "d"}


def _tiny_model(path: Path, output_shape: list[int], task: str | None = None) -> Path:
    """A real ONNX model that is not a YOLO detector (a classifier-like head)."""
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, output_shape)
    shape = helper.make_tensor("shape", TensorProto.INT64, [len(output_shape)], output_shape)
    node = helper.make_node("Reshape", ["images", "shape"], ["output0"])
    graph = helper.make_graph([node], "tiny", [inp], [out], initializer=[shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if task:
        helper.set_model_props(model, {"task": task, "names": "{0: 'x'}"})
    onnx.save(model, str(path))
    return path


def test_missing_model_names_the_path(tmp_path: Path):
    with pytest.raises(ModelError, match=r"absent\.onnx: model file not found"):
        load_detector(tmp_path / "absent.onnx")


def test_corrupt_model_names_the_path(tmp_path: Path):
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(b"\x08\x07garbage" * 100)
    with pytest.raises(ModelError, match=r"corrupt\.onnx: not a readable ONNX model"):
        load_detector(path)


def test_classifier_is_not_a_detection_model(tmp_path: Path):
    path = _tiny_model(tmp_path / "classifier.onnx", [1, 3072])
    with pytest.raises(ModelError, match=r"classifier\.onnx: output shape .* not a YOLO detection"):
        load_detector(path)


def test_segmentation_task_is_refused(tmp_path: Path):
    path = _tiny_model(tmp_path / "seg.onnx", [1, 6, 512], task="segment")
    with pytest.raises(ModelError, match=r"seg\.onnx: a YOLO 'segment' model"):
        load_detector(path)


def test_class_count_mismatch_is_refused(tmp_path: Path):
    path = _tiny_model(tmp_path / "e2e.onnx", [1, 3, 1024], task="detect")  # 3 rows < 4 + 1
    with pytest.raises(ModelError, match=r"e2e\.onnx: output has 3 rows but 1 class names"):
        load_detector(path)


@pytest.mark.parametrize("shape", [(1, 1), (1, 3000), (3000, 1), (7, 1900)])
def test_degenerate_images_do_not_break_detection(detector, shape):
    findings = detector.detect([np.zeros((*shape, 3), dtype=np.uint8)])
    assert len(findings) == 1
    for finding in findings[0]:
        assert 0 <= finding.box.x1 <= finding.box.x2 <= shape[1]
        assert 0 <= finding.box.y1 <= finding.box.y2 <= shape[0]


def test_unknown_suffix_and_folder(tmp_path: Path):
    other = tmp_path / "weights.h5"
    other.write_bytes(b"\x89HDF")
    with pytest.raises(ModelError, match=r"unsupported model type '\.h5'"):
        load_detector(other)
    with pytest.raises(ModelError, match="is a folder"):
        load_detector(tmp_path)


def test_onnx_runtime_telemetry_is_off(tmp_path):
    """Loading the detector writes no telemetry id anywhere (ONNX Runtime 1.29+ would)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "ORT_TELEMETRY_DISABLED"}
    env.update(TMPDIR=str(tmp_path / "tmp"), HOME=str(tmp_path / "home"))
    (tmp_path / "tmp").mkdir()
    (tmp_path / "home").mkdir()
    code = "from mriscribe.detection import load_detector; load_detector()"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    assert list((tmp_path / "tmp").iterdir()) == []
    assert list((tmp_path / "home").rglob("*")) == []
