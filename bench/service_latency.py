"""Latency, throughput and memory of the mriscribe service, against a prototype-style baseline
in the same run.

    python bench/service_latency.py [--requests 60] [--load 1000] [--json results.json]
    python bench/service_latency.py --auth-only [--auth-requests 400]

1. A real `mriscribe serve` on localhost (default detector, template report): p50/p95 of
   POST /analyze-json and POST /analyze with one 256x256 PNG, sequential, over HTTP.
2. The same study rendered two ways in this process, alternating rounds: ours (Pillow
   annotation + fpdf2 PDF) and the prototype's (a matplotlib figure per image saved to a temp PNG,
   then FPDF), each after the same detection; the end-to-end and rendering-only ratios.
3. Load: 8 concurrent clients send --load requests to /analyze-json; requests/s, errors, and the
   service's RSS after warm-up, after 20% of the requests and at the end (flat = no growth).
4. What API keys and rate limits cost: two servers in the same run, one open on loopback (no
   key, no limits: the prototype's use) and one with a key file and in-memory limits per key
   and per address; requests alternate between them. p50 of a request that passes every check
   and then stops at once (POST /analyze-json with no images: 400), and of one 256x256 PNG
   analysed; the overhead is the difference of the p50s.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "tests" / "fixtures" / "heldout" / "glioma_1.png"
TARGETS = {"json_p50_ms": 60.0, "pdf_p50_ms": 150.0, "speedup": 5.0, "rps": 20.0, "rss_mb": 400.0}
AUTH_OVERHEAD_MS = 1.0  # auth and rate-limit checks add at most this to a request's p50


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of process ``pid`` in MB: VmRSS (now) or VmHWM (peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def start_server(
    report_engine: str = "template", *, env: dict[str, str] | None = None, log: Path | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """A real `mriscribe serve` on a free localhost port, once /health answers; its log goes
    to ``log`` (at INFO) if given, else nowhere (at WARNING)."""
    port = free_port()
    output = log.open("wb") if log is not None else subprocess.DEVNULL
    process = subprocess.Popen(
        [sys.executable, "-m", "mriscribe", "serve", "--port", str(port)],
        stdout=output,
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "MRISCRIBE_LOG_LEVEL": "INFO" if log is not None else "WARNING",
            "MRISCRIBE_REPORT_ENGINE": report_engine,
            **(env or {}),
        },
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("server did not start")


def wait_for_language_model(url: str, attempts: int = 600) -> None:
    """Until the server's /health says its language model is loaded (or the attempts run out)."""
    for _ in range(attempts):
        try:
            if httpx.get(f"{url}/health", timeout=2).json()["models_loaded"]["llm"]:
                return
        except (httpx.TransportError, ValueError, KeyError):
            pass
        time.sleep(0.2)


def report(results: dict[str, Any], checks: dict[str, bool], out: Path | None, width: int) -> int:
    """Print the figures and the checks (and write them to ``out`` as JSON); 0 if all pass."""
    for key, value in results.items():
        name = key.ljust(width)
        print(f"{name} {value:10.2f}" if isinstance(value, float) else f"{name} {value}")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    if out:
        out.write_text(json.dumps({"results": results, "checks": checks}, indent=2))
    return 0 if all(checks.values()) else 1


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def time_requests(client: httpx.Client, path: str, data: bytes, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        response = client.post(path, files=[("images", (IMAGE.name, data, "image/png"))])
        times.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
    return times


def prototype_render(analysis: Any) -> bytes:
    """The prototype's rendering: a matplotlib figure per image saved to a temp PNG, then FPDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from fpdf import FPDF
    from matplotlib import patches

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, "Brain MRI Analysis Report", new_x="LMARGIN", new_y="NEXT")
    temps = []
    try:
        for image in analysis.images:
            fig, ax = plt.subplots(1, figsize=(8, 8))
            ax.imshow(image.slice.pixels)
            for measured in image.findings:
                box = measured.finding.box
                ax.add_patch(
                    patches.Rectangle(
                        (box.x1, box.y1), box.width, box.height,
                        linewidth=2, edgecolor="r", facecolor="none",
                    )
                )
                ax.text(
                    box.x1, box.y1 - 5,
                    f"{measured.finding.class_name}: {measured.finding.confidence:.2f}",
                    color="white", fontsize=10, bbox={"facecolor": "red", "alpha": 0.5},
                )
            ax.axis("off")
            handle = tempfile.NamedTemporaryFile(suffix=".png", delete=False)  # noqa: SIM115
            handle.close()
            temps.append(handle.name)
            fig.savefig(handle.name, bbox_inches="tight", dpi=100)
            plt.close(fig)
            pdf.add_page()
            pdf.image(handle.name, x=10, y=20, w=180)
        pdf.add_page()
        pdf.set_font("Helvetica", size=11)
        pdf.multi_cell(0, 6, analysis.report.text.encode("latin-1", "replace").decode("latin-1"))
        return bytes(pdf.output())
    finally:
        for name in temps:
            os.unlink(name)


def compare_rendering(rounds: int) -> dict[str, float]:
    from mriscribe.pipeline import InputFile, analyze
    from mriscribe.render.pdf import render_pdf
    from mriscribe.settings import Settings

    settings = Settings()
    files = [InputFile(IMAGE.name, IMAGE.read_bytes())]
    analyze(files, settings)  # load the model once
    ours, base, ours_render, base_render = [], [], [], []
    for _ in range(rounds):
        start = time.perf_counter()
        analysis = analyze(files, settings, render_images=True)
        mid = time.perf_counter()
        render_pdf(analysis)
        end = time.perf_counter()
        ours.append((end - start) * 1000)
        ours_render.append((end - mid) * 1000 + analysis.timings_ms.get("annotate", 0.0))

        start = time.perf_counter()
        analysis = analyze(files, settings)
        mid = time.perf_counter()
        prototype_render(analysis)
        end = time.perf_counter()
        base.append((end - start) * 1000)
        base_render.append((end - mid) * 1000)
    med = statistics.median
    return {
        "ours_end_to_end_p50_ms": med(ours),
        "prototype_end_to_end_p50_ms": med(base),
        "end_to_end_speedup": med(base) / med(ours),
        "ours_render_p50_ms": med(ours_render),
        "prototype_render_p50_ms": med(base_render),
        "render_speedup": med(base_render) / med(ours_render),
    }


def load_test(url: str, pid: int, data: bytes, total: int, clients: int = 8) -> dict[str, float]:
    lock = threading.Lock()
    counter = {"sent": 0, "errors": 0}
    samples: dict[str, float] = {"rss_start_mb": rss_mb(pid)}
    checkpoint = total // 5

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while True:
                with lock:
                    if counter["sent"] >= total:
                        return
                    counter["sent"] += 1
                    if counter["sent"] == checkpoint:
                        samples["rss_20pct_mb"] = rss_mb(pid)
                try:
                    response = client.post(
                        "/analyze-json", files=[("images", (IMAGE.name, data, "image/png"))]
                    )
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if not ok:
                    with lock:
                        counter["errors"] += 1

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    samples["rss_end_mb"] = rss_mb(pid)
    return {
        "requests": total,
        "clients": clients,
        "errors": counter["errors"],
        "requests_per_s": total / elapsed,
        **samples,
    }


def make_key(folder: Path) -> tuple[dict[str, str], str]:
    """A server secret and a key file in ``folder`` made with `mriscribe keys`: the settings
    that turn keys on, and the key."""
    env = {
        "MRISCRIBE_API_KEY_SECRET_FILE": str(folder / "secret"),
        "MRISCRIBE_API_KEYS_FILE": str(folder / "keys.json"),
    }
    command = [sys.executable, "-m", "mriscribe", "keys"]
    subprocess.run([*command, "secret"], env={**os.environ, **env}, check=True)
    created = subprocess.run(
        [*command, "create", "--name", "bench"],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        text=True,
    )
    return env, created.stdout.strip()


def auth_overhead(requests: int, data: bytes) -> dict[str, float]:
    """p50s of the same requests to an open server and to one with keys and rate limits,
    alternating between them so that both see the same machine."""
    with tempfile.TemporaryDirectory() as folder:
        env, key = make_key(Path(folder))
        # The limits are checked on every request, as in service, but set high enough that
        # the bench itself never meets them.
        env["MRISCRIBE_RATE_LIMIT_PER_KEY"] = "1000000/minute"
        env["MRISCRIBE_RATE_LIMIT_PER_ADDRESS"] = "1000000/minute"
        open_process, open_url = start_server()
        keyed_process, keyed_url = start_server(env=env)
        try:
            with (
                httpx.Client(base_url=open_url, timeout=60) as plain,
                httpx.Client(base_url=keyed_url, timeout=60, headers={"X-API-Key": key}) as keyed,
            ):
                no_images = [("other", ("note.txt", b"x", "text/plain"))]
                image = [("images", (IMAGE.name, data, "image/png"))]
                times: dict[str, list[float]] = {}
                for kind, files, count, status in (
                    ("checks", no_images, requests, 400),
                    ("png", image, max(20, requests // 4), 200),
                ):
                    for name, client in (("open", plain), ("keyed", keyed)):
                        times[f"{kind}_{name}"] = []
                        for _ in range(10):  # warm-up
                            client.post("/analyze-json", files=files)
                    for _ in range(count):
                        for name, client in (("open", plain), ("keyed", keyed)):
                            start = time.perf_counter()
                            response = client.post("/analyze-json", files=files)
                            times[f"{kind}_{name}"].append((time.perf_counter() - start) * 1000)
                            if response.status_code != status:
                                raise SystemExit(f"{name}: HTTP {response.status_code}")
        finally:
            for process in (open_process, keyed_process):
                process.terminate()
                process.wait(timeout=30)
    med = statistics.median
    results = {f"auth_{name}_p50_ms": med(values) for name, values in times.items()}
    for kind in ("checks", "png"):
        results[f"auth_{kind}_overhead_p50_ms"] = med(times[f"{kind}_keyed"]) - med(
            times[f"{kind}_open"]
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=60, help="sequential requests per route")
    parser.add_argument("--rounds", type=int, default=15, help="rendering comparison rounds")
    parser.add_argument("--load", type=int, default=1000, help="requests in the load test")
    parser.add_argument(
        "--auth-requests", type=int, default=400, help="requests per server, keys vs none"
    )
    parser.add_argument("--auth-only", action="store_true", help="only the keys comparison")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    data = IMAGE.read_bytes()
    auth = auth_overhead(args.auth_requests, data)
    auth_check = {
        f"API keys + rate limits add <= {AUTH_OVERHEAD_MS:g} ms p50": auth[
            "auth_checks_overhead_p50_ms"
        ]
        <= AUTH_OVERHEAD_MS
    }
    if args.auth_only:
        return report(auth, auth_check, args.json, 34)

    process, url = start_server()
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            time_requests(client, "/analyze-json", data, 5)
            time_requests(client, "/analyze", data, 5)
            json_ms = time_requests(client, "/analyze-json", data, args.requests)
            pdf_ms = time_requests(client, "/analyze", data, args.requests)
        load = load_test(url, process.pid, data, args.load)
    finally:
        process.terminate()
        process.wait(timeout=30)
    render = compare_rendering(args.rounds)

    results = {
        "analyze_json_p50_ms": statistics.median(json_ms),
        "analyze_json_p95_ms": percentile(json_ms, 95),
        "analyze_pdf_p50_ms": statistics.median(pdf_ms),
        "analyze_pdf_p95_ms": percentile(pdf_ms, 95),
        **render,
        **{f"load_{k}": v for k, v in load.items()},
        **auth,
    }
    rss_growth = load["rss_end_mb"] - load.get("rss_20pct_mb", load["rss_start_mb"])
    checks = {
        f"/analyze-json p50 <= {TARGETS['json_p50_ms']:g} ms": results["analyze_json_p50_ms"]
        <= TARGETS["json_p50_ms"],
        f"/analyze p50 <= {TARGETS['pdf_p50_ms']:g} ms": results["analyze_pdf_p50_ms"]
        <= TARGETS["pdf_p50_ms"],
        f"end-to-end >= {TARGETS['speedup']:g}x prototype-style": render["end_to_end_speedup"]
        >= TARGETS["speedup"],
        f">= {TARGETS['rps']:g} req/s, 8 clients, no errors": load["requests_per_s"]
        >= TARGETS["rps"] and load["errors"] == 0,
        f"RSS <= {TARGETS['rss_mb']:g} MB": load["rss_end_mb"] <= TARGETS["rss_mb"],
        "RSS flat (< 5% growth from 20% to 100% of the load)": rss_growth
        < 0.05 * load["rss_end_mb"],
        **auth_check,
    }
    return report(results, checks, args.json, 34)


if __name__ == "__main__":
    raise SystemExit(main())
