"""Faults stay inside: no retained memory after failed requests, no upstream text, paths or
hidden characters in what users see, deadlines counted from arrival, JSON-only service logs."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from pypdf import PdfReader

from conftest import HELDOUT, SIMPLE, LiveServer
from conftest import run_cli as run
from mriscribe.errors import InputError, library_reason
from mriscribe.pipeline import InputFile, InputProblemsError, analyze, safe_name
from mriscribe.report.engines.base import GenerationError, Prompt
from mriscribe.report.engines.openai import OpenAIEngine
from mriscribe.report.writer import ReportWriter
from mriscribe.settings import Settings

BENCH = Path(__file__).resolve().parents[1] / "bench"
SECRET = "/srv/models/secret-path"


# Retained memory -------------------------------------------------------------------------------

_RETENTION = """
import gc, sys
sys.path.insert(0, {bench!r})
from hostile_files import zero_nifti_gz
from mriscribe.pipeline import InputFile, InputProblemsError, decode_inputs
from mriscribe.settings import Settings

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

gc.disable()  # nothing may depend on the cycle collector to free a failed request's data
data = zero_nifti_gz((256, 256, 1024))  # 64 MB of zero voxels: decoded, then refused as uniform
settings = Settings()

def fail():
    try:
        decode_inputs([InputFile("zero.nii.gz", data)], settings)
    except InputProblemsError as exc:
        return exc.problems

fail()  # imports and first allocations
before = rss_mb()
for _ in range(6):
    problems = fail()
print(rss_mb() - before, "|".join(str(p) for p in problems))
"""


def test_failed_decodes_keep_no_memory_even_without_the_cycle_collector():
    """Six volumes that decode and are refused as uniform: each failure's data must be freed
    at once. A stored exception's traceback held every decoded volume alive (GBs)."""
    result = subprocess.run(
        [sys.executable, "-c", _RETENTION.format(bench=str(BENCH))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    growth, message = result.stdout.strip().split(" ", 1)
    assert "zero.nii.gz: no brain found" in message
    assert float(growth) < 100, f"RSS grew {float(growth):.0f} MB over six failed decodes"


def test_reported_problems_carry_no_traceback_or_context():
    with pytest.raises(InputProblemsError) as caught:
        analyze([InputFile("bad.png", b"\x89PNG\r\n\x1a\n broken")], Settings())
    (problem,) = caught.value.problems
    assert isinstance(problem, InputError)
    assert problem.__traceback__ is None
    assert problem.__context__ is None and problem.__cause__ is None


# Names are data --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("scan\u202egnp.exe", "scangnp.exe"),  # right-to-left override
        ("\u2066a\u2069b\u200b.png", "ab.png"),  # isolates, zero-width space
        ("line\u2028break.png", "linebreak.png"),
        ("e\u0301.png", "\u00e9.png"),  # one form of the same letters (NFC)
    ],
)
def test_control_and_bidi_characters_are_stripped_from_names(raw, expected):
    assert safe_name(raw, 1) == expected


def test_images_can_be_named_by_number_only_in_outputs_and_errors():
    settings = Settings(name_images_by_number=True)
    image = (HELDOUT / "glioma_1.png").read_bytes()
    analysis = analyze(
        [InputFile("Doe_John.png", image), InputFile("x.png", image)], settings
    )
    assert [i.slice.name for i in analysis.images] == ["file 1", "file 2"]
    with pytest.raises(InputProblemsError) as caught:
        analyze([InputFile("Doe_John.png", image), InputFile("Doe_Jane.png", b"")], settings)
    assert str(caught.value) == "file 2: the file is empty"


def _corrupt(path: Path, source: Path, step: int) -> Path:
    data = bytearray(source.read_bytes())
    for index in range(len(data) // 2, len(data) - 20, step):
        data[index] = (data[index] * 31 + 7) % 256
    path.write_bytes(bytes(data))
    return path


def test_cli_writes_base_names_never_paths(tmp_path):
    folder = tmp_path / "Doe_John_19700101"
    folder.mkdir()
    image = folder / "glioma_1.png"
    image.write_bytes((HELDOUT / "glioma_1.png").read_bytes())
    out_json, out_pdf = tmp_path / "r.json", tmp_path / "r.pdf"
    result = run("analyze", str(folder), "--json", str(out_json), "--pdf", str(out_pdf))
    assert result.returncode == 0, result.stderr
    text = out_json.read_text()
    assert "Doe_John" not in text and str(tmp_path) not in text
    assert json.loads(text)["detection_results"]["images"][0]["filename"] == "glioma_1.png"
    pdf = "".join(page.extract_text() for page in PdfReader(out_pdf).pages)
    assert "glioma_1.png" in pdf and "Doe_John" not in pdf

    detected = run("detect", str(image))
    assert detected.returncode == 0, detected.stderr
    assert json.loads(detected.stdout)[0]["filename"] == "glioma_1.png"


def test_cli_never_prints_a_traceback_for_corrupt_compressed_dicom(tmp_path):
    from pydicom.data import get_testdata_file

    files = [
        _corrupt(tmp_path / "a.dcm", Path(get_testdata_file("MR_small_jp2klossless.dcm")), 7),
        _corrupt(tmp_path / "b.dcm", Path(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")), 5),
    ]
    for path in files:
        result = run("analyze", str(path))
        assert result.returncode == 1
        assert f"{path}: " in result.stderr
        assert "Traceback" not in result.stderr and 'File "' not in result.stderr
        assert "0x" not in result.stderr


# Fault text stays inside -----------------------------------------------------------------------


class _FailingServer(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible server that lists its model and fails every completion, quoting
    its own paths."""

    requests = 0
    answered = 0  # completions answered before the failures start (a chain's warm-up)

    def do_GET(self) -> None:  # /v1/models
        self._answer(200, {"object": "list", "data": [{"id": "m", "object": "model"}]})

    def do_POST(self) -> None:
        type(self).requests += 1
        length = int(self.headers.get("Content-Length", "0"))
        asked = json.loads(self.rfile.read(length) or b"{}")
        if type(self).requests <= type(self).answered:
            choice = {"index": 0, "text": "x", "finish_reason": "stop", "logprobs": None}
            usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
            reply = {"id": "c", "object": "text_completion", "created": 0, "model": "m"}
            if asked.get("stream"):  # as server-sent events, the way the engine asks
                event = json.dumps({**reply, "choices": [choice], "usage": usage})
                body = f"data: {event}\n\ndata: [DONE]\n\n".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self._answer(200, {**reply, "choices": [choice], "usage": usage})
            return
        self._answer(500, {"error": {"message": f"model at {SECRET} failed: 10.0.0.7"}})

    def _answer(self, status: int, document: dict) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def failing_server():
    _FailingServer.requests = _FailingServer.answered = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FailingServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_an_upstream_error_body_never_reaches_the_report_or_the_log(failing_server, caplog):
    engine = OpenAIEngine("m", failing_server, check=False)
    with pytest.raises(GenerationError) as caught:
        engine.generate(Prompt("p", "q"), deadline=time.monotonic() + 10, max_new_tokens=4)
    assert str(caught.value) == "the server answered with an error (HTTP 500)"
    writer = ReportWriter(Settings(report_engine="chain", report_deadline_s=10), engines=[engine])
    with caplog.at_level("INFO"):
        report = writer.write(SIMPLE, model_name="detector")
    assert report.engine == "template"
    assert report.fallback_reason == (
        "the language model failed: the server answered with an error (HTTP 500)"
    )
    logged = " ".join(
        json.dumps(r.__dict__, default=str)
        for r in caplog.records
        if r.name.startswith("mriscribe")  # the service keeps HTTP clients' logs at WARNING
    )
    for leak in (SECRET, "10.0.0.7", "127.0.0.1"):
        assert leak not in report.fallback_reason and leak not in logged


def test_a_report_with_no_time_left_is_the_template_at_once(failing_server):
    """The deadline counts from the request's arrival: one that waited in the queue past the
    point where a report could start gets the template without asking the model."""
    engine = OpenAIEngine("m", failing_server, check=False)
    writer = ReportWriter(Settings(report_engine="chain", report_deadline_s=3), engines=[engine])
    report = writer.write(SIMPLE, model_name="detector", deadline=time.monotonic() + 0.05)
    assert report.engine == "template"
    assert report.fallback_reason == (
        "the report could not start before its 3 s deadline (the time went on the upload and "
        "on waiting for the service)"
    )
    assert _FailingServer.requests == 0


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        ("cannot identify image file <_io.BytesIO object at 0x7f3a2b1c0d90>",
         "cannot identify image file ..."),
        (f"failed to open {SECRET}/model.gguf", "failed to open ..."),
        ("bad value 'Doe^John' in header", "bad value ... in header"),
        ("", "ValueError"),
    ],
)
def test_library_messages_lose_their_values(message, shown):
    assert library_reason(ValueError(message)) == shown


# Every log line is JSON ------------------------------------------------------------------------


def test_every_line_the_service_logs_during_bad_input_is_json(tmp_path):
    """Corrupt and hostile files through a real server: every line of its log (its own, the
    libraries', the codecs' stderr) parses as JSON and holds no file name."""
    from pydicom.data import get_testdata_file

    corrupt = [
        _corrupt(tmp_path / "a.dcm", Path(get_testdata_file("MR_small_jp2klossless.dcm")), 7),
        _corrupt(tmp_path / "b.dcm", Path(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")), 5),
        _corrupt(tmp_path / "c.png", HELDOUT / "glioma_1.png", 3),
    ]
    server = LiveServer(tmp_path / "server", {"MRISCRIBE_LOG_LEVEL": "DEBUG"})
    try:
        for path in corrupt:
            response = httpx.post(
                f"{server.url}/analyze-json",
                files=[("images", (f"Doe_John_{path.name}", path.read_bytes()))],
                timeout=60,
            )
            assert response.status_code == 400
            assert "Doe_John" in response.json()["error"]  # the client's own name comes back
    finally:
        server.stop()
    lines = [line for line in server.log_path.read_text().splitlines() if line.strip()]
    assert lines
    for line in lines:
        record = json.loads(line)  # raises on any line that is not JSON
        assert "Doe_John" not in line, record


def test_the_service_counts_the_report_deadline_from_the_request_s_arrival(tmp_path):
    """A real server whose language model is behind a real (failing) OpenAI-compatible server:
    an upload that takes longer than the report deadline gets the template at once, and the
    model server is never asked."""
    _FailingServer.requests, _FailingServer.answered = 0, 1
    model_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FailingServer)
    threading.Thread(target=model_server.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{model_server.server_address[1]}/v1"
    chain = [{"engine": "openai", "model": "m", "base_url": base_url}]
    server = LiveServer(
        tmp_path,
        {
            "MRISCRIBE_REPORT_ENGINE": "chain",
            "MRISCRIBE_LLM_CHAIN": json.dumps(chain),
            "MRISCRIBE_REPORT_DEADLINE_S": "1",
        },
    )
    try:
        image = (HELDOUT / "glioma_1.png").read_bytes()

        def slow_upload():  # the body takes 1.5 s to arrive: more than the whole deadline
            head = (
                b"--b\r\nContent-Disposition: form-data; name=\"images\"; "
                b'filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
            )
            yield head
            for start in range(0, len(image), len(image) // 3 + 1):
                time.sleep(0.5)
                yield image[start : start + len(image) // 3 + 1]
            yield b"\r\n--b--\r\n"

        for _ in range(100):  # the chain loads (one warm-up request) after the detector
            if httpx.get(f"{server.url}/health").json()["models_loaded"]["llm"]:
                break
            time.sleep(0.1)
        asked_at_load = _FailingServer.requests
        response = httpx.post(
            f"{server.url}/analyze-json",
            content=slow_upload(),
            headers={"Content-Type": "multipart/form-data; boundary=b"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        report = response.json()["report"]
        assert report["engine"] == "template"
        assert report["fallback_reason"].startswith("the report could not start before its 1 s")
        assert _FailingServer.requests == asked_at_load
    finally:
        server.stop()
        model_server.shutdown()
        model_server.server_close()


def test_without_a_deadline_the_report_has_its_whole_time_whatever_detection_took(
    failing_server,
):
    """The command line passes no deadline: the report's clock starts when the report does,
    so a study whose detection alone takes longer than the report deadline still asks the
    model (which here fails at once)."""
    engine = OpenAIEngine("m", failing_server, check=False)
    settings = Settings(report_engine="chain", report_deadline_s=0.3)
    writer = ReportWriter(settings, engines=[engine])
    image = (HELDOUT / "glioma_1.png").read_bytes()
    analysis = analyze(
        [InputFile(f"{i}.png", image) for i in range(64)], settings, writer=writer
    )
    assert analysis.timings_ms["detect"] > 300  # detection alone outlasted the deadline
    assert analysis.report.fallback_reason == (
        "the language model failed: the server answered with an error (HTTP 500)"
    )


def test_detect_names_images_by_number_when_told(tmp_path):
    image = tmp_path / "Doe_John.png"
    image.write_bytes((HELDOUT / "glioma_1.png").read_bytes())
    empty = tmp_path / "Doe_Jane.png"
    empty.write_bytes(b"")
    result = run(
        "detect", str(image), str(empty), env={"MRISCRIBE_NAME_IMAGES_BY_NUMBER": "true"}
    )
    assert result.returncode == 1
    printed = json.loads(result.stdout)
    assert [item["filename"] for item in printed] == ["file 1", "file 2"]
    assert "Doe_" not in result.stdout and "Doe_" not in result.stderr
    assert "file 2: the file is empty" in result.stderr
