"""Per-image latency of mriscribe's ONNX detector against Ultralytics predict(), same weights,
same images, same run; and the peak memory of `mriscribe detect` on one image.

    python bench/detector_latency.py [--rounds 30] [--json results.json]

Both paths include their own pre- and post-processing (letterbox, NMS) and use every core.
Rounds alternate between the two so that machine noise hits both alike. Needs the 'train'
extra for the Ultralytics baseline.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMAGES = sorted((ROOT / "tests" / "fixtures" / "heldout").glob("*.png"))
WEIGHTS = ROOT / "models" / "mriscribe-yolov8n.pt"
TARGET_MS, TARGET_SPEEDUP, TARGET_RSS_MB = 30.0, 1.5, 300.0


def time_calls(call, images: list[np.ndarray]) -> list[float]:  # noqa: ANN001
    out = []
    for image in images:
        start = time.perf_counter()
        call(image)
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def peak_rss_of_detect(image: Path) -> float:
    """Peak resident memory (MB) of a fresh `mriscribe detect` process on one image."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(
        [sys.executable, "-m", "mriscribe.cli", "detect", str(image)],
        check=True,
        capture_output=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(before, after) / 1024.0  # ru_maxrss is in KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    rss = peak_rss_of_detect(IMAGES[0])  # first, before this process grows a child max
    from PIL import Image
    from ultralytics import YOLO

    from mriscribe.detection import load_detector

    images = [np.asarray(Image.open(p).convert("RGB")) for p in IMAGES]
    onnx_detector = load_detector()
    ultra = YOLO(str(WEIGHTS), task="detect")
    size = onnx_detector.info.input_size[0]

    def run_onnx(image: np.ndarray) -> object:
        return onnx_detector.detect([image])

    def run_ultralytics(image: np.ndarray) -> object:
        return ultra.predict(
            image[:, :, ::-1], imgsz=size, conf=0.25, iou=0.45, device="cpu", verbose=False
        )

    for _ in range(3):  # warm up both
        time_calls(run_onnx, images)
        time_calls(run_ultralytics, images)
    onnx_ms, ultra_ms = [], []
    for _ in range(args.rounds):
        onnx_ms += time_calls(run_onnx, images)
        ultra_ms += time_calls(run_ultralytics, images)

    def summary(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {
            "p50_ms": statistics.median(ordered),
            "p90_ms": ordered[int(0.9 * (len(ordered) - 1))],
            "mean_ms": statistics.fmean(ordered),
        }

    result = {
        "images": len(images),
        "rounds": args.rounds,
        "input_size": size,
        "onnx": summary(onnx_ms),
        "ultralytics": summary(ultra_ms),
        "speedup_p50": statistics.median(ultra_ms) / statistics.median(onnx_ms),
        "detect_peak_rss_mb": rss,
    }
    print(f"{'path':<22} {'p50 ms':>8} {'p90 ms':>8} {'mean ms':>8}")
    for name in ("onnx", "ultralytics"):
        s = result[name]
        print(f"{name:<22} {s['p50_ms']:8.2f} {s['p90_ms']:8.2f} {s['mean_ms']:8.2f}")
    print(f"speed-up (p50): {result['speedup_p50']:.2f}x")
    print(f"peak RSS of `mriscribe detect` on one image: {rss:.0f} MB")
    met = (
        result["onnx"]["p50_ms"] <= TARGET_MS
        and result["speedup_p50"] >= TARGET_SPEEDUP
        and rss <= TARGET_RSS_MB
    )
    print(
        f"targets (<= {TARGET_MS} ms, >= {TARGET_SPEEDUP}x, <= {TARGET_RSS_MB} MB): "
        f"{'met' if met else 'MISSED'}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
