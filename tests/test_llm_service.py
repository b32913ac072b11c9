"""The service with the language model chain: /health, the JSON, the PDF and the per-request
choice, on a real server on localhost with the real default model."""

from __future__ import annotations

import io
import json
import re
import time

import httpx
import pytest
from pypdf import PdfReader

from conftest import HELDOUT, LiveServer
from mriscribe.report.facts import facts_from_results
from mriscribe.report.verify import verify_text

ENGINE = "llama-cpp:gemma-3-270m-q4_k_m"


@pytest.fixture(scope="module")
def chain_server(tmp_path_factory):
    """A service whose chain starts with a model that cannot load, then the default model."""
    server = LiveServer(
        tmp_path_factory.mktemp("chain"),
        {
            "MRISCRIBE_REPORT_ENGINE": "chain",
            "MRISCRIBE_LLM_CHAIN": json.dumps(
                [
                    {"engine": "llama-cpp", "model": "/nonexistent/models/missing.gguf"},
                    {"engine": "llama-cpp", "model": "default"},
                ]
            ),
        },
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the detector answers first; the model follows
        if httpx.get(f"{server.url}/health").json()["models_loaded"]["llm"]:
            break
        time.sleep(0.3)
    yield server
    server.stop()


def _post(url: str, path: str, name: str, **params: object) -> httpx.Response:
    data = (HELDOUT / name).read_bytes()
    return httpx.post(
        url + path, files=[("images", (name, data, "image/png"))], params=params, timeout=120
    )


def test_health_shows_the_chain_each_model_and_why_one_failed(chain_server):
    body = httpx.get(f"{chain_server.url}/health").json()
    assert body["models_loaded"] == {"yolo": True, "llm": True}
    assert body["report_engine"] == ENGINE
    writer = body["report_writer"]
    assert writer["mode"] == "chain"
    assert writer["deadline_s"] == 3.0
    first, second = writer["chain"]
    assert first["status"] == "failed"
    assert first["reason"] == "missing.gguf: GGUF model file not found"  # no server folders
    assert second == {"model": "llama-cpp:default", "status": "serving", "reason": None}


def test_analyze_json_has_the_models_text_and_it_is_faithful(chain_server):
    response = _post(chain_server.url, "/analyze-json", "glioma_1.png")
    assert response.status_code == 200, response.text
    body = response.json()
    report = body["report"]
    assert report["engine"] == ENGINE
    assert report["fallback_reason"] is None
    facts = facts_from_results(
        body["detection_results"], default_spacing_mm=0.5, conf_threshold=0.25
    )
    narrative = report["sections"]["FINDINGS"] + "\n" + report["sections"]["IMPRESSION"]
    assert verify_text(narrative, facts).accepted
    assert "glioma" in narrative.lower()
    assert body["medical_report"].startswith("EXAMINATION:")
    assert report["sections"]["FINDINGS"] in body["medical_report"]


def test_a_caller_can_ask_for_the_template_per_request(chain_server):
    response = _post(chain_server.url, "/analyze-json", "glioma_1.png", report_engine="template")
    assert response.status_code == 200
    report = response.json()["report"]
    assert report["engine"] == "template"
    assert report["fallback_reason"] is None
    assert report["sections"]["FINDINGS"].startswith("Tumour detections: 1 on the image.")


def test_an_unknown_report_choice_is_a_clear_400(chain_server):
    response = _post(chain_server.url, "/analyze-json", "glioma_1.png", report_engine="gpt")
    assert response.status_code == 400
    assert "report_engine" in response.json()["error"]


def test_the_pdf_footer_and_summary_name_the_engine(chain_server):
    response = _post(chain_server.url, "/analyze", "glioma_1.png")
    assert response.status_code == 200
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages)
    assert f"Report: {ENGINE}" in text
    assert "Report engine" in text
    template = _post(chain_server.url, "/analyze", "glioma_1.png", report_engine="template")
    pages = PdfReader(io.BytesIO(template.content)).pages
    assert "Report: template" in pages[0].extract_text()


def test_cli_analyze_writes_the_models_narrative_and_verify_report_accepts_it(tmp_path):
    from conftest import run_cli

    results = tmp_path / "results.json"
    # What is tested is the narrative, not the speed: a moment of contention for the cores must
    # not turn it into the template (the deadline's own behaviour is tested elsewhere).
    done = run_cli(
        "analyze", str(HELDOUT / "glioma_1.png"), "--json", str(results),
        "--report-engine", "chain", env={"MRISCRIBE_REPORT_DEADLINE_S": "60"},
    )
    assert done.returncode == 0, done.stderr
    assert "FINDINGS:\nImage 1 shows a suspected glioma measuring" in done.stdout
    body = json.loads(results.read_text())
    assert body["report"]["engine"] == ENGINE
    report = tmp_path / "report.txt"
    report.write_text(body["medical_report"])
    checked = run_cli("verify-report", "--findings", str(results), "--text", str(report))
    assert checked.returncode == 0, checked.stdout
    assert checked.stdout.startswith("accepted (every section of the report)")
    # The same narrative with its size changed is caught.
    size = re.search(r"(\d+\.\d) x", body["report"]["sections"]["FINDINGS"])
    assert size is not None
    wrong = body["medical_report"].replace(size.group(0), f"{float(size.group(1)) + 9:.1f} x", 1)
    report.write_text(wrong)
    checked = run_cli("verify-report", "--findings", str(results), "--text", str(report))
    assert checked.returncode == 1
    assert "states a size" in checked.stdout
