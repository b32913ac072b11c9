"""`mriscribe detect` end to end, as a user runs it."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import HELDOUT
from conftest import run_cli as run


def test_detect_prints_the_prototype_format(tmp_path: Path, heldout_cases):
    case = next(c for c in heldout_cases if c["class"] == "Meningioma")
    out = tmp_path / "out" / "detections.json"
    result = run("detect", str(HELDOUT / case["file"]), "--json", str(out))
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert json.loads(out.read_text()) == printed
    assert printed[0]["filename"].endswith(case["file"])
    detection = printed[0]["detections"][0]
    assert set(detection) == {"class", "confidence", "bbox"}
    assert set(detection["bbox"]) == {"x1", "y1", "x2", "y2", "width", "height"}
    assert detection["class"] == "Meningioma"
    bbox = detection["bbox"]
    assert abs(bbox["x2"] - bbox["x1"] - bbox["width"]) < 0.02
    assert list(tmp_path.joinpath("out").iterdir()) == [out]  # no temp file left beside it


def test_bad_files_are_named_and_the_rest_still_processed(tmp_path: Path, heldout_cases):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "report.jpg"
    text.write_text("not an image")
    good = HELDOUT / heldout_cases[0]["file"]
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:500])
    result = run("detect", str(empty), str(good), str(text), str(truncated))
    assert result.returncode == 1
    assert "empty.png: the file is empty" in result.stderr
    assert "report.jpg: not a PNG, JPEG or TIFF image" in result.stderr
    assert "truncated.png: the PNG data is truncated or corrupt" in result.stderr
    assert "Traceback" not in result.stderr
    printed = json.loads(result.stdout)
    assert [Path(item["filename"]).name for item in printed] == [
        "empty.png",
        good.name,
        "report.jpg",
        "truncated.png",
    ]
    assert "detections" in printed[1] and printed[1]["detections"]
    assert all("error" in printed[i] for i in (0, 2, 3))


def test_model_errors_are_clear(tmp_path: Path, heldout_cases):
    image = str(HELDOUT / heldout_cases[0]["file"])
    result = run("detect", image, "--model", str(tmp_path / "missing.onnx"))
    assert result.returncode == 2
    assert "missing.onnx: model file not found" in result.stderr
    assert "Traceback" not in result.stderr
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"nonsense")
    result = run("detect", image, "--model", str(bad))
    assert result.returncode == 2 and "bad.onnx: not a readable ONNX model" in result.stderr


def test_threshold_out_of_range(heldout_cases):
    result = run("detect", str(HELDOUT / heldout_cases[0]["file"]), "--conf", "7")
    assert result.returncode == 2 and "--conf must be between 0 and 1" in result.stderr


def test_bomb_and_odd_shapes_through_the_cli(tmp_path: Path):
    from test_raster import _png_claiming_size

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_claiming_size(20_000, 20_000))
    thin = tmp_path / "thin.png"
    Image.fromarray(np.zeros((1, 3000), dtype=np.uint8)).save(thin)
    result = run("detect", str(bomb), str(thin))
    assert result.returncode == 1
    assert "bomb.png: image is" in result.stderr and "decompression bomb" in result.stderr
    assert "Traceback" not in result.stderr
    printed = json.loads(result.stdout)
    assert "error" in printed[0] and printed[1]["detections"] == []


def test_unwritable_json_and_bad_batch(tmp_path: Path, heldout_cases):
    image = str(HELDOUT / heldout_cases[0]["file"])
    result = run("detect", image, "--json", str(tmp_path))  # a folder, not a file
    assert result.returncode == 2
    assert f"{tmp_path}: is a folder" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == []  # no temp file left behind
    result = run("detect", image, "--batch", "0")
    assert result.returncode == 2 and "--batch must be at least 1" in result.stderr
