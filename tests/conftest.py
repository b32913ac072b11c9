"""Shared fixtures: the held-out-anatomy images shipped with the tests, and small image makers."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mriscribe.report.facts import study_of

# Most tests check detection, input handling and rendering: they use the deterministic template
# report (fast, and the same text every run). The language-model tests (test_llm_*.py) ask for
# the chain explicitly.
os.environ["MRISCRIBE_REPORT_ENGINE"] = "template"

FIXTURES = Path(__file__).parent / "fixtures"
HELDOUT = FIXTURES / "heldout"


@pytest.fixture(scope="session")
def heldout_cases() -> list[dict]:
    """Colin27 slices (anatomy the model never trained on) with their true class and box.

    Made by ``make_sample(7, "test", index)``, taking for each class the first three typical,
    clearly visible cases: contrast-enhanced T1 (the public data set's main sequence) with a
    lesion of at least 15 mm, and any normal slice. Chosen by those criteria alone.
    """
    return json.loads((HELDOUT / "labels.json").read_text())


@pytest.fixture(scope="session")
def detector():
    from mriscribe.detection import load_detector

    return load_detector()


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``mriscribe ARGS`` in a fresh process, as a user runs it (no config file from outside)."""
    environment = {**os.environ, **(env or {})}
    environment.pop("MRISCRIBE_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "mriscribe", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
        env=environment,
    )


def encode(array: np.ndarray, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """`python -m llama_cpp.server` with the default model: a real OpenAI-compatible API that
    takes a GBNF grammar in the request's "grammar" field. One for the whole run."""
    import time

    import httpx

    from mriscribe.report.engines.llama_cpp import resolve_model

    port = _free_port()
    log = (tmp_path_factory.mktemp("llama-server") / "server.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(resolve_model("default")),
            "--model_alias", "gemma-3-270m",
            "--host", "127.0.0.1", "--port", str(port),
            "--n_ctx", "4096",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 300  # two cores: loading may queue behind other work
    try:
        while True:
            assert process.poll() is None, "llama-cpp-python's server exited"
            assert time.monotonic() < deadline, "llama-cpp-python's server did not start"
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


class LiveServer:
    """A real ``mriscribe serve`` process on localhost, its temp folder and its log file."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        import os
        import subprocess
        import sys
        import time

        import httpx

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True)
        self.log_path = root / "server.log"
        environment = {**os.environ, "TMPDIR": str(self.tmp), **env}
        environment.pop("MRISCRIBE_CONFIG", None)
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mriscribe", "serve", "--port", str(self.port)],
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()}")
            try:
                status = httpx.get(f"{self.url}/health", timeout=2).status_code
                if status == 200 or (status == 503 and env.get("_EXPECT_UNAVAILABLE")):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not become healthy in 60 s")

    def leftovers(self) -> list[Path]:
        """Files the server left in its temp folder (there must be none)."""
        return [p for p in self.tmp.rglob("*")]

    def log_records(self) -> list[dict]:
        records = []
        for line in self.log_path.read_text().splitlines():
            if line.strip():
                records.append(json.loads(line))
        return records

    def records_of(self, server_id: str) -> list[dict]:
        """Every log record of one request, by the server's id for it (its response's
        X-Server-Request-ID): logs never carry the client's X-Request-ID."""
        return [r for r in self.log_records() if r["request_id"] == server_id]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except Exception:
            self.process.kill()
        self._log.close()


@pytest.fixture(scope="session")
def live_server_process(tmp_path_factory):
    server = LiveServer(tmp_path_factory.mktemp("server"), {})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def live_server(live_server_process) -> str:
    """Base URL of a real service on localhost with the default model."""
    return live_server_process.url


# A simple positive study: one glioma on one image.
SIMPLE = study_of([[("Glioma", 0.912, 31.5, 24.0)]], spacing_source="DICOM PixelSpacing")
