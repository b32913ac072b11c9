"""The errors mriscribe raises on purpose, each with a message a user can act on."""

from __future__ import annotations

import re


class MriscribeError(Exception):
    """Base of every error that is meant to be shown to a user as it is."""


class FileProblemError(MriscribeError):
    """An error about one file or path: the message starts with it."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class InputError(FileProblemError):
    """An input file is empty, truncated, of an unsupported type or otherwise unreadable."""


class UnsupportedFormatError(InputError):
    """The file's content (or its DICOM encoding) is none mriscribe reads: HTTP 415."""


class LimitError(InputError):
    """An input is larger than a configured limit (bytes, pixels, count)."""


class OutputError(FileProblemError):
    """An output (JSON, PDF) cannot be written where it was asked for."""


class ModelError(FileProblemError):
    """A model file is missing, corrupt, or not the kind of model that was expected."""


class MissingExtraError(MriscribeError):
    """An optional feature needs a package extra that is not installed."""

    def __init__(self, feature: str, extra: str, package: str) -> None:
        super().__init__(
            f"{feature} needs the '{package}' package: pip install 'mriscribe[{extra}]'"
        )


_OBJECT_REPR = re.compile(r"<[^<>]*\bat 0x[0-9a-fA-F]+>|<[^<>]{0,200}>")
_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{6,}\b")
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][\w.~-]+){2,}[\\/]?|~[\\/][\w./~-]*")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def library_reason(exc: BaseException, limit: int = 120) -> str:
    """A library's exception as a short phrase that is safe to show: its first line with object
    reprs, heap addresses, paths, URLs and quoted values taken out, else its type name.

    Library messages quote what they were given (a file object, a path, a header value, a
    server's reply); none of that may reach a user, a report or a log.
    """
    lines = [line for line in str(exc).splitlines() if line.strip()]
    text = scrub(lines[0] if lines else "", limit)
    return text if text and text != "..." else type(exc).__name__


def scrub(text: str, limit: int = 120) -> str:
    """``text`` without object reprs, heap addresses, paths, URLs, quoted values or unprintable
    characters, cut to ``limit`` characters."""
    for pattern in (_URL, _OBJECT_REPR, _ADDRESS, _PATH, _QUOTED):
        text = pattern.sub("...", text)
    text = re.sub(r"(?:\.\.\.[\s,:;]*){2,}", "... ", text)
    text = "".join(ch for ch in text if ch.isprintable()).strip(" :;,")
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."
