"""The HTTP API against a real server on localhost: the prototype's contract and its errors."""

from __future__ import annotations

import io
import json
import socket
import time
import zlib
from datetime import datetime

import httpx
import numpy as np
import pytest
from pypdf import PdfReader

from conftest import HELDOUT, LiveServer, encode


def _post(url: str, path: str, files: list[tuple[str, bytes]], field: str = "images", **kw):
    return httpx.post(
        url + path,
        files=[(field, (name, data, "application/octet-stream")) for name, data in files],
        timeout=120,
        **kw,
    )


def _case(cases: list[dict], cls: str) -> tuple[dict, bytes]:
    case = next(c for c in cases if c["class"] == cls)
    return case, (HELDOUT / case["file"]).read_bytes()


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory):
    server = LiveServer(
        tmp_path_factory.mktemp("limited"),
        {
            "MRISCRIBE_MAX_FILE_MB": "0.5",
            "MRISCRIBE_MAX_REQUEST_MB": "1",
            "MRISCRIBE_MAX_IMAGES": "3",
            "MRISCRIBE_MAX_PIXELS": "1000000",
        },
    )
    yield server
    server.stop()


def test_health_reports_models_and_engine(live_server):
    response = httpx.get(f"{live_server}/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["models_loaded"] == {"yolo": True, "llm": False}
    datetime.fromisoformat(body["timestamp"])
    assert body["models"]["detector"]["name"] == "mriscribe-yolov8n"
    classes = ["Glioma", "Meningioma", "No Tumor", "Pituitary"]
    assert body["models"]["detector"]["classes"] == classes
    assert len(body["models"]["detector"]["sha256"]) == 16
    assert body["report_engine"] == "template"
    assert body["report_writer"]["mode"] == "template"  # as the tests' environment asks
    assert body["uptime_s"] >= 0


def test_analyze_json_keeps_the_prototype_contract(live_server, heldout_cases):
    case, data = _case(heldout_cases, "Glioma")
    response = _post(live_server, "/analyze-json", [(case["file"], data)])
    assert response.status_code == 200, response.text
    body = response.json()
    results = body["detection_results"]
    datetime.fromisoformat(results["timestamp"])
    (image,) = results["images"]
    assert image["filename"] == case["file"]
    top = image["detections"][0]
    assert top["class"] == "Glioma"
    assert 0.25 <= top["confidence"] <= 1
    assert set(top["bbox"]) == {"x1", "y1", "x2", "y2", "width", "height"}
    assert top["bbox"]["width"] == pytest.approx(top["bbox"]["x2"] - top["bbox"]["x1"], abs=0.02)
    # Sizes in mm from the default spacing, marked as an estimate with its source.
    size = top["size_mm"]
    assert size["width_mm"] == pytest.approx(top["bbox"]["width"] * 0.5, abs=0.1)
    assert size["estimated"] is True
    assert "default 0.5 mm/px" in size["spacing_source"]
    assert image["spacing_estimated"] is True
    assert isinstance(body["medical_report"], str) and "FINDINGS" in body["medical_report"]
    assert "Glioma" in body["medical_report"]
    assert body["summary"]["total_images"] == 1
    assert body["summary"]["total_detections"] == len(image["detections"])
    assert body["summary"]["classes_detected"][0] == "Glioma"
    assert body["report"]["engine"] == "template"
    assert body["timings_ms"]["total"] > 0
    assert "annotated_image" not in image and "pdf_base64" not in body


def test_analyze_json_can_include_annotated_images_and_pdf(live_server, heldout_cases):
    import base64

    case, data = _case(heldout_cases, "Pituitary")
    response = _post(live_server, "/analyze-json?annotated=true&pdf=true", [(case["file"], data)])
    assert response.status_code == 200, response.text
    body = response.json()
    url = body["detection_results"]["images"][0]["annotated_image"]
    assert url.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(url.split(",", 1)[1])[:3] == b"\xff\xd8\xff"
    pdf = base64.b64decode(body["pdf_base64"])
    assert pdf.startswith(b"%PDF")


def test_analyze_returns_the_pdf_as_a_download(live_server, heldout_cases):
    files = [(c["file"], (HELDOUT / c["file"]).read_bytes()) for c in heldout_cases[:3]]
    response = _post(live_server, "/analyze", files)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    reader = PdfReader(io.BytesIO(response.content))
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert "Impression" in text
    for name, _ in files:
        assert name in text


def test_several_files_and_formats_in_one_request(live_server, heldout_cases):
    from pydicom.data import get_testdata_file

    path = get_testdata_file("MR_small_jpeg_ls_lossless.dcm", download=False)
    with open(path, "rb") as handle:
        dicom = handle.read()
    case, png = _case(heldout_cases, "Meningioma")
    response = _post(live_server, "/analyze-json", [(case["file"], png), ("mr.dcm", dicom)])
    assert response.status_code == 200, response.text
    images = response.json()["detection_results"]["images"]
    assert [i["filename"] for i in images] == [case["file"], "mr.dcm"]
    assert [i["image_number"] for i in images] == [1, 2]
    assert images[1]["spacing_estimated"] is False
    assert images[1]["spacing_source"].startswith("DICOM")
    assert images[1]["pixel_spacing_mm"] == [0.3125, 0.3125]


@pytest.mark.parametrize(
    ("files", "field", "status", "message"),
    [
        ([], "images", 400, "multipart/form-data in the field 'images'"),
        ([("a.png", b"")], "images", 400, "a.png: the file is empty"),
        ([("a.png", b"x")], "image", 400, "field 'images'"),
        ([("scan.png", b"Dear colleague, see attached.")], "images", 415, "scan.png: unsupported"),
    ],
)
def test_bad_requests_get_a_clear_json_error(live_server, files, field, status, message):
    if files:
        response = _post(live_server, "/analyze-json", files, field=field)
    else:
        response = httpx.post(f"{live_server}/analyze-json", data={"x": "1"}, timeout=30)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["error"]


def test_truncated_image_names_the_file(live_server, heldout_cases):
    _, data = _case(heldout_cases, "Glioma")
    response = _post(live_server, "/analyze", [("cut.png", data[: len(data) // 2])])
    assert response.status_code == 400
    assert response.json()["error"].startswith("cut.png: ")
    assert "Traceback" not in response.text


def test_path_in_a_file_name_is_never_used_as_a_path(
    live_server, live_server_process, heldout_cases
):
    _, data = _case(heldout_cases, "Glioma")
    response = _post(live_server, "/analyze-json", [("../../etc/evil.png", data)])
    assert response.status_code == 200
    assert response.json()["detection_results"]["images"][0]["filename"] == "evil.png"
    assert live_server_process.leftovers() == []


def test_unknown_route_and_method_are_json(live_server):
    assert httpx.get(f"{live_server}/nope").json() == {"error": "Not Found"}
    response = httpx.get(f"{live_server}/analyze")
    assert response.status_code == 405 and "error" in response.json()


def test_cors_and_request_id(live_server):
    response = httpx.get(
        f"{live_server}/health", headers={"Origin": "http://ris.example", "X-Request-ID": "abc-1"}
    )
    assert response.headers["access-control-allow-origin"] in ("*", "http://ris.example")
    assert response.headers["x-request-id"] == "abc-1"
    assert len(httpx.get(f"{live_server}/health").headers["x-request-id"]) == 32


def test_page_and_docs_are_served(live_server):
    page = httpx.get(live_server)
    assert page.status_code == 200 and "<html" in page.text.lower()
    docs = httpx.get(f"{live_server}/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert httpx.get(f"{live_server}/docs-assets/{asset}").status_code == 200
    schema = httpx.get(f"{live_server}/openapi.json").json()
    assert {"/health", "/analyze", "/analyze-json"} <= set(schema["paths"])


def _bomb_png() -> bytes:
    """A valid PNG header claiming 20000x20000 pixels, with a few bytes of data."""
    import struct

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload))
        )

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\0" * 1000)
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def test_limits_give_413_naming_the_problem_and_leave_nothing(limited_server):
    url = limited_server.url
    small = encode(np.full((64, 64, 3), 90, np.uint8))
    cases = [
        ([("bomb.png", _bomb_png())], "bomb.png: image is"),
        ([("big.png", small + b"\0" * 600_000)], "big.png: file is"),
        ([(f"{i}.png", small) for i in range(4)], "limit of 3"),
        ([(f"{i}.png", small + b"\0" * 400_000) for i in range(3)], "limit of"),
    ]
    for files, message in cases:
        response = _post(url, "/analyze-json", files)
        assert response.status_code == 413, (message, response.text)
        assert message in response.json()["error"]
    # Declared too large up front: refused before the body is read.
    response = httpx.post(
        f"{url}/analyze-json",
        content=b"x" * 3_000_000,
        headers={"content-type": "multipart/form-data; boundary=x"},
        timeout=30,
    )
    assert response.status_code == 413
    assert limited_server.leftovers() == []
    # The server is still fine afterwards.
    assert _post(url, "/analyze-json", [("ok.png", small)]).status_code == 200


def test_logs_are_json_with_request_ids_and_no_file_names(live_server_process, heldout_cases):
    _, data = _case(heldout_cases, "Glioma")
    response = _post(
        live_server_process.url,
        "/analyze-json",
        [("DOE_JOHN_1961.png", data)],
        headers={"X-Request-ID": "trace-42"},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "trace-42"
    server_id = response.headers["x-server-request-id"]
    assert len(server_id) == 32
    text = live_server_process.log_path.read_text()
    assert "DOE_JOHN" not in text and "trace-42" not in text
    # The access line is written once the answer has gone out: give it a moment.
    for _ in range(50):
        mine = live_server_process.records_of(server_id)
        if {r["msg"] for r in mine} >= {"analysed", "request"}:
            break
        time.sleep(0.1)
    assert {r["msg"] for r in mine} >= {"analysed", "request"}
    access = next(r for r in mine if r["msg"] == "request")
    assert access["status"] == 200 and access["path"] == "/analyze-json"


def test_unloadable_model_gives_503_with_the_reason(tmp_path):
    server = LiveServer(
        tmp_path,
        {"MRISCRIBE_MODEL_PATH": str(tmp_path / "missing.onnx"), "_EXPECT_UNAVAILABLE": "1"},
    )
    try:
        health = httpx.get(f"{server.url}/health")
        assert health.status_code == 503
        assert health.json()["status"] == "unavailable"
        assert "missing.onnx: model file not found" in health.json()["reason"]
        # The server's directories are not shown to clients (the log has the full path).
        assert str(tmp_path) not in health.text
        assert health.json()["models_loaded"]["yolo"] is False
        response = _post(server.url, "/analyze", [("a.png", encode(np.zeros((8, 8, 3), np.uint8)))])
        assert response.status_code == 503 and "missing.onnx" in response.json()["error"]
        assert str(tmp_path) not in response.text
    finally:
        server.stop()


def test_health_is_503_while_loading():
    from fastapi.testclient import TestClient

    from mriscribe.service.app import create_app
    from mriscribe.settings import Settings

    with TestClient(create_app(Settings(), load_models=False)) as client:
        response = client.get("/health")
        assert response.status_code == 503
        assert response.json()["status"] == "loading"
        assert "loading" in response.json()["reason"]
        assert json.loads(client.post("/analyze-json").text)["error"]


def test_too_many_files_is_413_however_many(limited_server):
    small = encode(np.full((32, 32, 3), 90, np.uint8))
    for count in (4, 6):
        files = [(f"{i}.png", small) for i in range(count)]
        response = _post(limited_server.url, "/analyze-json", files)
        assert response.status_code == 413, response.text
        assert "limit of 3" in response.json()["error"]


def test_log_tracebacks_carry_no_exception_messages():
    from mriscribe.service.logs import code_frames

    patient = "Doe" + "^Jane"  # so that no source line shown in the frames holds the value
    try:
        try:
            raise ValueError(f"could not convert: {patient}")
        except ValueError:
            raise RuntimeError(f"second\nline {patient}") from None
    except RuntimeError as exc:
        frames = code_frames(exc)
    assert "Doe^Jane" not in frames
    assert "RuntimeError" in frames and "test_api.py" in frames


def test_a_client_hanging_up_mid_upload_is_logged_once_without_a_traceback(live_server_process):
    server = live_server_process
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST /analyze-json HTTP/1.1\r\nHost: x\r\nX-Request-ID: hangup-1\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 5000000\r\n\r\n"
            b"--b\r\nContent-Disposition: form-data; name=\"images\"; filename=\"a.png\"\r\n\r\n"
            + b"\0" * 100_000
        )
    mine: list[dict] = []
    for _ in range(50):  # the server notices the hang-up asynchronously
        ids = [
            r["request_id"]
            for r in server.log_records()
            if r["msg"] == "client disconnected during upload"
        ]
        mine = server.records_of(ids[-1]) if ids else []
        if any(r["msg"] == "request" for r in mine):
            break
        time.sleep(0.1)
    assert [r["msg"] for r in mine] == ["client disconnected during upload", "request"]
    assert not any("traceback" in r for r in mine)
    assert httpx.get(f"{server.url}/health").status_code == 200


@pytest.mark.parametrize("content", [b"", b"\x08\x01garbage that is no protobuf" * 40])
def test_health_reason_for_a_corrupt_model_names_no_server_folder(tmp_path, content):
    from mriscribe.service.state import ServiceState
    from mriscribe.settings import Settings

    folder = tmp_path / "private-models"
    folder.mkdir()
    (folder / "bad.onnx").write_bytes(content)
    state = ServiceState(Settings(model_path=folder / "bad.onnx"))
    state.start_loading()
    state.wait_loaded(60)
    assert not state.ready
    reason = state.not_ready_reason
    assert "bad.onnx" in reason and "ONNX" in reason
    assert str(tmp_path) not in reason and "private-models" not in reason
