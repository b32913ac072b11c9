"""The openai engine against a real OpenAI-compatible server on localhost (llama-cpp-python's
own server, serving the default GGUF), and the transformers engine on the same model."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from conftest import SIMPLE
from mriscribe.report.engines import EngineLoadError
from mriscribe.report.engines.llama_cpp import resolve_model
from mriscribe.report.engines.openai import OpenAIEngine
from mriscribe.report.engines.transformers import TransformersEngine, convert_gguf
from mriscribe.report.prompt import PREFIX
from mriscribe.report.verify import verify_text
from mriscribe.report.writer import ReportWriter
from mriscribe.settings import LanguageModel, Settings

ROOT = Path(__file__).resolve().parents[1]


def test_openai_engine_writes_an_accepted_report_through_a_real_server(llama_server):
    settings = Settings(
        report_engine="chain",
        report_deadline_s=60,  # a shared server may queue; the text itself is the point here
        llm_chain=[LanguageModel(engine="openai", model="gemma-3-270m", base_url=llama_server)],
    )
    writer = ReportWriter(settings)
    writer.load()
    try:
        assert writer.status()["chain"][0]["status"] == "serving"
        report = writer.write(SIMPLE, model_name="detector")
        assert report.fallback_reason is None
        assert report.engine == "openai:gemma-3-270m"
        narrative = report.sections["FINDINGS"] + "\n" + report.sections["IMPRESSION"]
        assert verify_text(narrative, SIMPLE).accepted
        assert "31.5 x 24.0 mm" in narrative
    finally:
        writer.close()


def test_a_server_that_does_not_answer_gives_the_template_in_time():
    """A real TCP server that accepts the request and never answers (a stuck GPU host)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            held.append(connection)

    threading.Thread(target=accept, daemon=True).start()
    engine = OpenAIEngine("m", f"http://127.0.0.1:{port}/v1", check=False)
    writer = ReportWriter(Settings(report_engine="chain", report_deadline_s=0.5), engines=[engine])
    started = time.monotonic()
    report = writer.write(SIMPLE, model_name="detector")
    waited = time.monotonic() - started
    listener.close()
    for connection in held:
        connection.close()
    assert report.engine == "template"
    assert report.fallback_reason == "the language model passed the 0.5 s deadline"
    assert waited < 30  # it did not wait for the server


def test_an_unreachable_server_fails_at_load_without_its_address():
    settings = Settings(
        report_engine="chain",
        llm_chain=[LanguageModel(engine="openai", model="m", base_url="http://127.0.0.1:9/v1")],
    )
    writer = ReportWriter(settings)
    writer.load()
    link = writer.status()["chain"][0]
    assert link["status"] == "failed"
    assert link["reason"] == "the server could not be reached"  # no address


@pytest.fixture(scope="module")
def transformers_folder() -> Path:
    """The default GGUF as a transformers folder, made once per checkout (.cache/)."""
    return convert_gguf(resolve_model("default"), ROOT / ".cache" / "gemma-3-270m-transformers")


def test_transformers_engine_runs_the_same_model_greedily(transformers_folder):
    engine = TransformersEngine(str(transformers_folder), device="cpu", warm_prefix=PREFIX)
    try:
        assert engine.device == "cpu"
        assert engine.model.training is False  # eval mode
        writer = ReportWriter(
            Settings(report_engine="chain", report_deadline_s=120), engines=[engine]
        )
        report = writer.write(SIMPLE, model_name="detector")
        assert report.fallback_reason is None, report.fallback_reason
        assert report.engine == "transformers:gemma-3-270m-transformers"
        assert "glioma" in report.sections["FINDINGS"].lower()
    finally:
        engine.close()


def test_transformers_never_downloads_unless_allowed(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(EngineLoadError, match="not in the local cache; downloads are off"):
        TransformersEngine("microsoft/DialoGPT-small", device="cpu")
