"""The hostile-upload campaign against a real `mriscribe serve` on localhost: memory stays
bounded, faults stay contained, deadlines hold.

    python bench/hostile_uploads.py [--json results.json] [--skip-model]

Each step measures the server process's RSS (VmRSS) and peak (VmHWM, reset before the step
through /proc/PID/clear_refs), against the server's own idle RSS after warm-up: the baseline
of the same run.

1. Six sequential zero-filled .nii.gz of 394 KB (400 MB of voxels declared), then six that fit
   the decoded-data budget and are decoded and refused as uniform: RSS ends within +100 MB.
2. Four rounds of four deflated-DICOM bombs sent at once (389 KB inflating to 400 MB), then two
   rounds of four that fit the budget and are analysed: RSS ends within +100 MB.
3. The 1.2 MB .nii.gz bomb (1.2 GB of voxels declared): 413 in under 1 s, peak +200 MB at most.
4. Eight concurrent 250 MB uploads (three 84 MB NIfTI volumes each, decoded for real): peak RSS
   within the stated formula (Settings.memory_bound_mb), back within +150 MB 10 s after; then
   eight concurrent worst-case analyses (48 M decoded pixels each, annotated, with the PDF):
   peak within the formula.
5. 200 sockets trickling a request head: closed by the header timeout; a normal request is
   served meanwhile; a bad Content-Length gets a JSON 400.
6. With the default language model: 8 concurrent clients, p95 <= report deadline + 0.3 s.
Every line the server logged during the campaign must parse as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

# bench/ is on the path when run as a script
from hostile_files import deflated_dicom, noise_nifti, zero_nifti_gz
from mriscribe.settings import Settings
from service_latency import (
    IMAGE,
    percentile,
    report,
    rss_mb,
    start_server,
    wait_for_language_model,
)

BASE_ENV = {"MRISCRIBE_HEADER_TIMEOUT_S": "5"}


def reset_peak(pid: int) -> None:
    """Start VmHWM again from the current RSS (Linux: clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def settle(pid: int, seconds: float = 2.0) -> float:
    time.sleep(seconds)
    return rss_mb(pid)


def post(
    url: str, files: list[tuple[str, bytes]], timeout: float = 300, query: str = ""
) -> tuple[int, float]:
    start = time.perf_counter()
    response = httpx.post(
        f"{url}/analyze-json{query}",
        files=[("images", (name, data, "application/octet-stream")) for name, data in files],
        timeout=timeout,
    )
    return response.status_code, time.perf_counter() - start


def at_once(count: int, send: Callable[[], tuple[int, float]]) -> list[tuple[int, float]]:
    results: list[tuple[int, float]] = [(0, 0.0)] * count

    def run(index: int) -> None:
        try:
            results[index] = send()
        except httpx.HTTPError:
            results[index] = (-1, 0.0)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def statuses(results: list[tuple[int, float]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status, _ in results:
        counts[str(status)] = counts.get(str(status), 0) + 1
    return counts


def memory_campaign(url: str, pid: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    png = IMAGE.read_bytes()
    for _ in range(5):  # warm-up: a full detector batch, so the runtime's arena has its size
        post(url, [(f"{i}.png", png) for i in range(8)])
    base = out["baseline_rss_mb"] = settle(pid)

    zero = zero_nifti_gz((1024, 1024, 384))
    fitting = zero_nifti_gz((512, 512, 768))
    out["zero_nifti_kb"] = round(len(zero) / 1024)
    seq = [post(url, [("zero.nii.gz", zero)]) for _ in range(6)]
    seq += [post(url, [("zero-fits.nii.gz", fitting)]) for _ in range(6)]
    out["zero_nifti_statuses"] = statuses(seq)
    out["zero_nifti_rss_growth_mb"] = settle(pid) - base

    bomb = deflated_dicom(1024, 1024, 190)
    fits = deflated_dicom(512, 512, 100)
    out["deflate_bomb_kb"] = round(len(bomb) / 1024)
    rounds = []
    for _ in range(4):
        rounds += at_once(4, lambda: post(url, [("bomb.dcm", bomb)]))
    for _ in range(2):
        rounds += at_once(4, lambda: post(url, [("fits.dcm", fits)]))
    out["deflate_statuses"] = statuses(rounds)
    out["deflate_rss_growth_mb"] = settle(pid) - base

    big = zero_nifti_gz((1200, 1024, 1024))
    out["nifti_bomb_kb"] = round(len(big) / 1024)
    before = rss_mb(pid)
    reset_peak(pid)
    status, seconds = post(url, [("bomb.nii.gz", big)])
    out.update(
        nifti_bomb_status=status,
        nifti_bomb_s=seconds,
        nifti_bomb_peak_growth_mb=rss_mb(pid, "VmHWM") - before,
    )

    volumes = [(f"volume-{i}.nii", noise_nifti((256, 256, 640), seed=i)) for i in range(3)]
    out["upload_mb"] = round(sum(len(d) for _, d in volumes) / 2**20, 1)
    reset_peak(pid)
    started = time.perf_counter()
    uploads = at_once(8, lambda: post(url, volumes))
    out["uploads_s"] = time.perf_counter() - started
    out["uploads_statuses"] = statuses(uploads)
    out["uploads_peak_rss_mb"] = rss_mb(pid, "VmHWM")
    out["uploads_rss_10s_after_growth_mb"] = settle(pid, 10.0) - base

    # The worst the limits allow an analysis: 48 M decoded pixels of large planes (the pixel
    # limit is 50 M), every image annotated and the PDF rendered, eight requests at once.
    large = [(f"large-{i}.nii", noise_nifti((1100, 1100, 20), seed=10 + i)) for i in range(2)]
    reset_peak(pid)
    worst = at_once(8, lambda: post(url, large, query="?annotated=true&pdf=true"))
    out["worst_statuses"] = statuses(worst)
    out["worst_peak_rss_mb"] = rss_mb(pid, "VmHWM")
    out["worst_rss_10s_after_growth_mb"] = settle(pid, 10.0) - base
    return out


def slow_clients(url: str, header_timeout_s: float) -> dict[str, Any]:
    host, port = url.removeprefix("http://").split(":")
    sockets = []
    for _ in range(200):
        sock = socket.create_connection((host, int(port)), timeout=5)
        sock.sendall(b"POST /analyze-json HTTP/1.1\r\nHost: x\r\n")
        sockets.append(sock)
    status, _ = post(url, [(IMAGE.name, IMAGE.read_bytes())], timeout=30)
    end = time.monotonic() + header_timeout_s + 3
    while time.monotonic() < end:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.sendall(b"X")
        time.sleep(1)
    closed = 0
    for sock in sockets:
        sock.settimeout(0.5)
        try:
            sock.sendall(b"X")
            closed += sock.recv(1) == b""
        except OSError:
            closed += 1
        sock.close()
    bad_status, bad_body = raw_request(
        host, int(port), b"POST /analyze-json HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nx"
    )
    try:
        bad_json = "error" in json.loads(bad_body)
    except ValueError:
        bad_json = False
    return {
        "trickling_sockets": len(sockets),
        "trickling_closed_by_server": closed,
        "normal_request_meanwhile": status,
        "bad_content_length_status": bad_status,
        "bad_content_length_json": bad_json,
    }


def raw_request(host: str, port: int, request: bytes) -> tuple[int, bytes]:
    """Send bytes no HTTP client would send; the answer's status and body."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def deadline_under_load(clients: int = 8, rounds: int = 6) -> dict[str, Any]:
    process, url, log = start_logged("chain")
    try:
        wait_for_language_model(url)
        images = sorted((IMAGE.parent).glob("*.png"))
        times: list[float] = []
        engines: dict[str, int] = {}
        lock = threading.Lock()

        def client(index: int) -> None:
            with httpx.Client(base_url=url, timeout=120) as session:
                for number in range(rounds):
                    image = images[(index + number) % len(images)]
                    start = time.perf_counter()
                    response = session.post(
                        "/analyze-json",
                        files=[("images", (image.name, image.read_bytes(), "image/png"))],
                    )
                    elapsed = time.perf_counter() - start
                    engine = response.json()["report"]["engine"]
                    with lock:
                        times.append(elapsed)
                        engines[engine] = engines.get(engine, 0) + 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return {
            "requests": len(times),
            "p50_s": statistics.median(times),
            "p95_s": percentile(times, 95),
            "engines": engines,
            "log_lines_not_json": lines_not_json(log),
        }
    finally:
        process.terminate()
        process.wait(timeout=30)


def start_logged(engine: str) -> tuple[Any, str, Path]:
    log = Path(tempfile.mkdtemp(prefix="mriscribe-bench-")) / "server.log"
    process, url = start_server(engine, env=BASE_ENV, log=log)
    return process, url, log


def lines_not_json(log: Path) -> int:
    bad = 0
    for line in log.read_text(errors="replace").splitlines():
        try:
            json.loads(line)
        except ValueError:
            bad += 1
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip-model", action="store_true", help="skip step 6 (the LLM)")
    args = parser.parse_args(argv)
    settings = Settings()
    bound = settings.memory_bound_mb()

    process, url, log = start_logged("template")
    try:
        results = memory_campaign(url, process.pid)
        print(json.dumps(results), flush=True)
        results.update(slow_clients(url, float(BASE_ENV["MRISCRIBE_HEADER_TIMEOUT_S"])))
    finally:
        process.terminate()
        process.wait(timeout=30)
    results["log_lines_not_json"] = lines_not_json(log)
    results["stated_bound_mb"] = results["baseline_rss_mb"] + bound
    deadline = settings.report_deadline_s
    checks = {
        "zero .nii.gz x 12: RSS within +100 MB": results["zero_nifti_rss_growth_mb"] <= 100,
        "deflate bombs: RSS within +100 MB": results["deflate_rss_growth_mb"] <= 100,
        "1.2 MB .nii.gz bomb: 413 in < 1 s": results["nifti_bomb_status"] == 413
        and results["nifti_bomb_s"] < 1.0,
        "1.2 MB .nii.gz bomb: peak +200 MB at most": results["nifti_bomb_peak_growth_mb"] <= 200,
        "8 x 250 MB uploads: all analysed": results["uploads_statuses"] == {"200": 8},
        "8 x 250 MB uploads: peak <= stated formula": results["uploads_peak_rss_mb"]
        <= results["stated_bound_mb"],
        "8 x 250 MB uploads: within +150 MB 10 s after": results[
            "uploads_rss_10s_after_growth_mb"
        ]
        <= 150,
        "8 x worst-case analyses: all answered": results["worst_statuses"] == {"200": 8},
        "8 x worst-case analyses: peak <= stated formula": results["worst_peak_rss_mb"]
        <= results["stated_bound_mb"],
        "trickling sockets closed by the header timeout": results["trickling_closed_by_server"]
        == results["trickling_sockets"],
        "a normal request is served meanwhile": results["normal_request_meanwhile"] == 200,
        "bad Content-Length: JSON 400": results["bad_content_length_status"] == 400
        and results["bad_content_length_json"],
        "every log line is JSON": results["log_lines_not_json"] == 0,
    }
    if not args.skip_model:
        load = deadline_under_load()
        results.update({f"llm_{k}": v for k, v in load.items()})
        checks[f"8 clients with the model: p95 <= {deadline + 0.3:g} s"] = (
            load["p95_s"] <= deadline + 0.3
        )
        checks["every log line is JSON (model run)"] = load["log_lines_not_json"] == 0
    return report(results, checks, args.json, 36)


if __name__ == "__main__":
    raise SystemExit(main())
