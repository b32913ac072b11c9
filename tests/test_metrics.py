"""/metrics against a real server: requests by route template and status, stage timings,
reports, images, work in flight; no file names, raw paths, request ids or keys in labels."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from access import make_keys, upload_head
from conftest import HELDOUT, LiveServer
from mriscribe import __version__
from mriscribe.service.app import create_app
from mriscribe.settings import Settings

IMAGE = HELDOUT / "glioma_1.png"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("metrics"), {})
    yield live
    live.stop()


def _samples(server: LiveServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{server.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_analyses_and_reports_are_counted_without_identifying_labels(server):
    before = _samples(server)
    analysed = httpx.post(
        f"{server.url}/analyze-json",
        files=[("images", ("Doe_Jane_glioma.png", IMAGE.read_bytes(), "image/png"))],
        timeout=60,
    )
    assert analysed.status_code == 200
    bad = httpx.post(
        f"{server.url}/analyze-json",
        files=[("images", ("Roe_John.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "image/png"))],
        timeout=60,
    )
    assert bad.status_code == 400
    assert httpx.get(f"{server.url}/analyze/Doe_Jane").status_code == 404
    assert httpx.get(f"{server.url}/docs-assets/swagger-ui.css").status_code == 200

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    # A request is counted as its answer goes out: wait until the last one shows.
    mount = {"route": "/docs-assets", "method": "GET", "status": "200"}
    deadline = time.monotonic() + 10
    after = _samples(server)
    while grew("mriscribe_http_requests_total", **mount) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
        after = _samples(server)

    ok = {"route": "/analyze-json", "method": "POST", "status": "200"}
    assert grew("mriscribe_http_requests_total", **ok) == 1
    assert grew("mriscribe_http_requests_total", **{**ok, "status": "400"}) == 1
    assert grew("mriscribe_http_request_duration_seconds_count", **ok) == 1
    assert grew("mriscribe_http_request_duration_seconds_sum", **ok) > 0
    other = {"route": "(other)", "method": "GET", "status": "404"}
    assert grew("mriscribe_http_requests_total", **other) == 1
    assert grew("mriscribe_http_requests_total", **mount) == 1
    for stage in ("decode", "detect", "measure", "report", "total"):
        assert grew("mriscribe_analysis_stage_seconds_count", stage=stage) == 1, stage
    assert grew("mriscribe_analysis_stage_seconds_sum", stage="total") > 0
    assert grew("mriscribe_images_analysed_total") == 1
    assert grew("mriscribe_analyses_total", outcome="ok") == 1
    assert grew("mriscribe_analyses_total", outcome="unreadable") == 1
    assert grew("mriscribe_reports_total", engine="template", fallback="false") == 1
    assert _value(after, "mriscribe_detector_loaded") == 1
    assert _value(after, "mriscribe_info", version=__version__) == 1

    text = httpx.get(f"{server.url}/metrics").text
    for private in ("Doe", "Roe", "glioma.png", analysed.headers["x-server-request-id"]):
        assert private not in text
    routes = {value for _, labels in after for key, value in labels if key == "route"}
    assert routes <= {
        "/", "/health", "/analyze", "/analyze-json", "/metrics", "/docs", "/openapi.json",
        "/docs-assets", "(other)",
    }


def test_work_in_flight_is_a_gauge(server):
    assert _value(_samples(server), "mriscribe_requests_in_flight") == 0
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        # An upload admitted, its body still arriving.
        sock.sendall(upload_head("/analyze-json", 1_000_000) + b"\0" * 1000)
        deadline = time.monotonic() + 10
        while _value(_samples(server), "mriscribe_requests_in_flight") != 1:
            assert time.monotonic() < deadline, "the upload never showed as in flight"
            time.sleep(0.1)
    deadline = time.monotonic() + 10
    while _value(_samples(server), "mriscribe_requests_in_flight") != 0:
        assert time.monotonic() < deadline, "the closed upload still shows as in flight"
        time.sleep(0.1)
    assert _value(_samples(server), "mriscribe_analyses_in_flight") == 0


def test_each_app_has_its_own_registry(tmp_path: Path):
    first = create_app(Settings(), load_models=False)
    second = create_app(Settings(), load_models=False)  # no "duplicated timeseries" error
    assert first.state.service is not second.state.service
    assert not [m for m in REGISTRY.collect() if m.name.startswith("mriscribe")]
    off = create_app(Settings(metrics_enabled=False), load_models=False)
    assert "/metrics" not in off.openapi()["paths"]
    keys = make_keys(tmp_path / "keys")
    keyed = {"api_keys_file": keys.key_file, "api_key_secret_file": keys.secret_file}
    keys.create("someone")
    guarded = create_app(Settings(**keyed), load_models=False).openapi()["paths"]["/metrics"]
    assert guarded["get"]["security"] == [{"APIKey": []}, {"Bearer": []}]
    public = create_app(Settings(**keyed, metrics_public=True), load_models=False)
    assert "security" not in public.openapi()["paths"]["/metrics"]["get"]
