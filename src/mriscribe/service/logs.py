"""Structured logs: one JSON object a line, each carrying the request id it belongs to.

Log lines hold technical facts only (sizes, counts, formats, timings, status codes): never pixel
data, file contents, file names or anything from a DICOM header, since any of those can identify
a patient.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import threading
import traceback
from datetime import UTC, datetime
from typing import TextIO

from mriscribe.errors import scrub

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line; ``extra={...}`` fields become keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": request_id.get(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            entry["exception"] = type(record.exc_info[1]).__name__
            entry["traceback"] = code_frames(record.exc_info[1])
        return json.dumps(entry, default=str)


def code_frames(exc: BaseException) -> str:
    """Where an exception (and each one it came from) happened: type names and code frames only.

    Exception messages are left out everywhere in the chain: they may quote input (file names,
    header values) and so identify a patient.
    """
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = traceback.extract_tb(current.__traceback__)
        parts.append("".join(traceback.format_list(frames)) + type(current).__name__)
        current = current.__cause__ or current.__context__
    return "\n-- raised while handling --\n".join(reversed(parts))


def configure_logging(level: str = "INFO", *, capture_native: bool = False) -> None:
    """Send mriscribe's and uvicorn's logs to stderr as JSON lines.

    ``capture_native`` also turns whatever C libraries (codecs, llama.cpp) and stray Python
    code write straight to the stderr file descriptor into JSON lines, so that every line of
    the service's log is JSON.
    """
    stream = capture_native_stderr() if capture_native else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # pydicom logs each warning it raises, and each failing decoder plugin's message at ERROR,
    # quoting header values: none of it is kept (our own error names the file and the problem).
    # fontTools logs the glyphs of each PDF (which reveal file names): only its warnings.
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    # highdicom logs the source instance's UID at INFO and a patient name it finds odd at
    # WARNING while copying the patient and study: none of it is kept.
    logging.getLogger("highdicom").setLevel(logging.CRITICAL)
    logging.getLogger("fontTools").setLevel(logging.WARNING)
    # HTTP clients (the openai engine's) log each request with the server's URL.
    for name in ("httpx", "httpx2", "httpcore", "openai"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # pynetdicom logs every association at INFO and, at DEBUG, whole datasets (patient data):
    # the node logs what it does itself; only pynetdicom's errors are kept.
    logging.getLogger("pynetdicom").setLevel(logging.ERROR)
    # dicomweb-client logs each request's URL and headers at DEBUG (a STOW-RS URL may hold a
    # password): never kept.
    logging.getLogger("dicomweb_client").setLevel(logging.CRITICAL)
    # The multipart parser's warnings on a malformed body quote bytes of the body.
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    # Library warnings (numpy, nibabel) become log records: JSON like the rest, not raw text.
    logging.captureWarnings(True)
    # We write our own access line (with the request id), so uvicorn's is off.
    logging.getLogger("uvicorn.access").disabled = True


_native_stream: TextIO | None = None


def capture_native_stderr(*, python_too: bool = True) -> TextIO:
    """Put a pipe on file descriptor 2 and log each line that arrives there (logger
    ``mriscribe.native``, WARNING); return a stream on the original stderr. Idempotent.

    ``python_too``: Python's own ``sys.stderr`` (tracebacks of dying threads, stray prints) goes
    through the pipe as well; else it stays on the original stderr (a command line's messages).
    """
    global _native_stream
    if _native_stream is None:
        sys.stderr.flush()
        original = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        _native_stream = os.fdopen(original, "w", buffering=1, encoding="utf-8", errors="replace")
        threading.Thread(
            target=_forward_native, args=(read_end,), name="native-stderr", daemon=True
        ).start()
    sys.stderr = (
        os.fdopen(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
        if python_too
        else _native_stream
    )
    return _native_stream


def _forward_native(read_end: int) -> None:
    native = logging.getLogger("mriscribe.native")
    with os.fdopen(read_end, "rb") as pipe:
        for raw in pipe:
            text = scrub(raw.decode("utf-8", "replace").strip(), 300)
            if text:
                # What a library printed, with paths, addresses and quoted values taken out.
                native.warning("native library output", extra={"text": text})
