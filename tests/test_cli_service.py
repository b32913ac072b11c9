"""`mriscribe analyze` and `mriscribe models` end to end, as a user runs them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pypdf import PdfReader

from conftest import HELDOUT
from conftest import run_cli as run


def test_analyze_a_folder_writes_pdf_and_json(tmp_path: Path, heldout_cases):
    study = tmp_path / "study"
    study.mkdir()
    chosen = [c for c in heldout_cases if c["class"] in ("Glioma", "No Tumor")][:2]
    for case in chosen:
        shutil.copy(HELDOUT / case["file"], study / case["file"])
    (study / "notes.txt").write_text("referral letter")
    (study / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    out = tmp_path / "out"
    result = run("analyze", str(study), "--pdf", str(out / "r.pdf"), "--json", str(out / "r.json"))
    assert result.returncode == 0, result.stderr
    assert "notes.txt: skipped" in result.stderr
    assert "EXAMINATION" in result.stdout and "DISCLAIMER" in result.stdout
    body = json.loads((out / "r.json").read_text())
    names = [Path(i["filename"]).name for i in body["detection_results"]["images"]]
    assert names == sorted(c["file"] for c in chosen)
    reader = PdfReader(out / "r.pdf")
    assert "Impression" in "".join(page.extract_text() for page in reader.pages)
    assert sorted(p.name for p in out.iterdir()) == ["r.json", "r.pdf"]


def test_analyze_with_a_bad_file_writes_nothing(tmp_path: Path, heldout_cases):
    bad = tmp_path / "scan.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    good = HELDOUT / heldout_cases[0]["file"]
    out = tmp_path / "out"
    result = run("analyze", str(good), str(bad), "--pdf", str(out / "r.pdf"))
    assert result.returncode == 1
    assert f"error: {bad}: " in result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "r.pdf").exists()


def test_analyze_uses_the_config_file_and_flags(tmp_path: Path, heldout_cases):
    config = tmp_path / "mriscribe.toml"
    config.write_text("conf_threshold = 0.6\ndefault_spacing_mm = 0.8\n")
    image = HELDOUT / next(c for c in heldout_cases if c["class"] == "Glioma")["file"]
    out = tmp_path / "r.json"
    result = run("analyze", str(image), "--config", str(config), "--json", str(out))
    assert result.returncode == 0, result.stderr
    body = json.loads(out.read_text())
    assert body["model"]["conf_threshold"] == 0.6
    image_result = body["detection_results"]["images"][0]
    assert image_result["pixel_spacing_mm"] == [0.8, 0.8]
    assert all(d["confidence"] >= 0.6 for d in image_result["detections"])
    # A flag beats the file; the environment beats the file too.
    result = run("analyze", str(image), "--config", str(config), "--spacing", "0.4", "--json",
                 str(out), env={"MRISCRIBE_CONF_THRESHOLD": "0.3"})
    body = json.loads(out.read_text())
    assert body["detection_results"]["images"][0]["pixel_spacing_mm"] == [0.4, 0.4]
    assert body["model"]["conf_threshold"] == 0.3


def test_bad_settings_are_reported_not_raised(tmp_path: Path):
    config = tmp_path / "bad.toml"
    config.write_text("conf_threshold = 3\n")
    result = run("models", "--config", str(config))
    assert result.returncode == 2
    assert "invalid settings" in result.stderr and "conf_threshold" in result.stderr
    config.write_text("unknown_key = 1\n")
    assert "unknown_key" in run("models", "--config", str(config)).stderr
    config.write_text("this is = not [toml\n")
    result = run("models", "--config", str(config))
    assert result.returncode == 2 and str(config) in result.stderr
    assert "Traceback" not in result.stderr


def test_models_lists_the_detector_and_engines(tmp_path: Path):
    result = run("models", "--json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert listing["detector"]["loaded"] is True
    assert listing["detector"]["classes"] == ["Glioma", "Meningioma", "No Tumor", "Pituitary"]
    engines = listing["report_engines"]
    assert engines["mode"] == "template"  # the tests' environment asks for it
    assert engines["template"]["available"] is True
    assert set(engines["engines"]) == {"llama-cpp", "transformers", "openai"}
    assert all(engine["installed"] for engine in engines["engines"].values())
    result = run("models", "--model", str(tmp_path / "none.onnx"))
    assert result.returncode == 2
    assert "none.onnx: model file not found" in result.stdout
