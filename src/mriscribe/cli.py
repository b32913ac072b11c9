"""The ``mriscribe`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mriscribe import __version__
from mriscribe.commands import add_commands, write_atomically
from mriscribe.errors import FileProblemError, MriscribeError

if TYPE_CHECKING:
    from mriscribe.detection import Detector, Finding
    from mriscribe.imaging import Slice


def _detect(args: argparse.Namespace) -> int:
    from mriscribe.detection import load_detector
    from mriscribe.pipeline import numbered_name, safe_name
    from mriscribe.settings import load_settings

    by_number = load_settings().name_images_by_number
    detector = load_detector(
        args.model, conf_threshold=args.conf, iou_threshold=args.iou, threads=args.threads
    )
    # The JSON names each file by its base name, never its folders (a path can carry a
    # patient's name), or by its number only (name_images_by_number, errors too).
    named = [
        (path, numbered_name(number), numbered_name(number))
        if by_number
        else (path, safe_name(path.name, number), str(path))
        for number, path in enumerate(args.images, start=1)
    ]
    results: list[dict[str, object]] = []
    # Decode and detect in small batches: bounded memory, and one bad file costs only itself.
    for start in range(0, len(named), args.batch):
        results.extend(_detect_batch(detector, named[start : start + args.batch]))
    failed = sum(1 for item in results if "error" in item)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        write_atomically(args.json, (text + "\n").encode())
    return 1 if failed else 0


def _detect_batch(
    detector: Detector, named: list[tuple[Path, str, str]]
) -> list[dict[str, object]]:
    """Results for the (path, name in the JSON, name on stderr) triples in order: detections,
    or an error naming the file."""
    from mriscribe.imaging import read_raster

    results: list[dict[str, object]] = []
    slices: dict[int, Slice] = {}
    for index, (path, name, label) in enumerate(named):
        try:
            slices[index] = read_raster(path)
            results.append({"filename": name, "detections": []})
        except FileProblemError as exc:
            print(f"error: {label}: {exc.problem}", file=sys.stderr)
            results.append({"filename": name, "error": f"{name}: {exc.problem}"})
    if not slices:
        return results
    found: list[list[Finding] | None]
    try:
        found = list(detector.detect([s.pixels for s in slices.values()]))
    except Exception:  # retried image by image below, to name the culprit
        found = []
        for index, image in slices.items():
            try:
                found.extend(detector.detect([image.pixels]))
            except Exception as exc:  # reported per file, never as a traceback
                name = str(results[index]["filename"])
                message = f"{name}: detection failed ({type(exc).__name__})"
                print(f"error: {message}", file=sys.stderr)
                results[index] = {"filename": name, "error": message}
                found.append(None)
    for index, findings in zip(slices, found, strict=True):
        if findings is not None:
            results[index]["detections"] = [finding.as_dict() for finding in findings]
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mriscribe", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mriscribe {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    detect = commands.add_parser(
        "detect",
        help="find tumours in images and print them as JSON",
        description="Find tumours in PNG/JPEG images; prints, per image, its detections in "
        "pixel coordinates of the original image.",
    )
    detect.add_argument("images", nargs="+", type=Path, help="image files")
    detect.add_argument(
        "--model",
        type=Path,
        default=None,
        help="a YOLO detection model (.onnx, or .pt with the 'train' extra); "
        "default: the shipped model",
    )
    detect.add_argument("--conf", type=float, default=0.25, help="confidence threshold")
    detect.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold")
    detect.add_argument("--threads", type=int, default=0, help="inference threads (0: all cores)")
    detect.add_argument("--batch", type=int, default=8, help="images per inference batch")
    detect.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    detect.set_defaults(handler=_detect)
    add_commands(commands)
    return parser


class _NoTracebackFormatter(logging.Formatter):
    """Plain log lines for a terminal: a library's log record never prints a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        record.exc_info = record.exc_text = record.stack_info = None
        return super().format(record)


def _configure_cli_logging() -> None:
    from mriscribe.service.logs import capture_native_stderr

    # What codecs print straight to stderr ("Corrupt JPEG data: ...") becomes log records, left
    # below the level shown: the user gets our own error naming the file instead.
    capture_native_stderr(python_too=False)
    logging.getLogger("mriscribe.native").setLevel(logging.ERROR)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_NoTracebackFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    # pydicom logs each decoder plugin that fails on a corrupt file, quoting header values;
    # the user gets our own error naming the file instead. highdicom logs a patient name it
    # finds odd while making a DICOM result: never shown.
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    logging.getLogger("highdicom").setLevel(logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    _configure_cli_logging()
    args = build_parser().parse_args(argv)
    if getattr(args, "batch", 1) < 1:
        print(f"error: --batch must be at least 1, got {args.batch}", file=sys.stderr)
        return 2
    for name in ("conf", "iou"):
        value = getattr(args, name, None)
        if value is not None and not 0.0 <= value <= 1.0:
            print(f"error: --{name} must be between 0 and 1, got {value}", file=sys.stderr)
            return 2
    try:
        return int(args.handler(args))
    except MriscribeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last guard: a message, never a traceback
        logging.getLogger("mriscribe").debug("unexpected failure", exc_info=True)
        print(f"error: unexpected failure ({type(exc).__name__})", file=sys.stderr)
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
