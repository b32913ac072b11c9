"""Structured logs: one JSON object a line, each carrying the request id it belongs to.

Log lines hold technical facts only (sizes, counts, formats, timings, status codes): never pixel
data, file contents, file names or anything from a DICOM header, since any of those can identify
a patient.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import traceback
from datetime import UTC, datetime

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


def configure_logging(level: str = "INFO") -> None:
    """Send mriscribe's and uvicorn's logs to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # pydicom logs each warning it raises, quoting header values; fontTools logs the glyphs of
    # each PDF (which reveal file names): keep only their errors and warnings.
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.WARNING)
    # Library warnings (numpy, nibabel) become log records: JSON like the rest, not raw text.
    logging.captureWarnings(True)
    # We write our own access line (with the request id), so uvicorn's is off.
    logging.getLogger("uvicorn.access").disabled = True
