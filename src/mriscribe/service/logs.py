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
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type and where it happened, for the operator; its message may
            # quote input, so it is left out.
            entry["exception"] = record.exc_info[0].__name__
            entry["traceback"] = self.formatStack(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 (logging's name)
        lines = stack_info.splitlines()
        # Keep the frames ("File ..., line ..., in ..." and code); drop the final message line.
        return "\n".join(lines[:-1]) if len(lines) > 1 else ""


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
    # pydicom logs each warning it raises, quoting header values; keep only its errors.
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    # We write our own access line (with the request id), so uvicorn's is off.
    logging.getLogger("uvicorn.access").disabled = True
