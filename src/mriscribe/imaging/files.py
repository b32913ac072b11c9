"""Reading input files from disk: regular files only, size-limited, folders expanded."""

from __future__ import annotations

import stat
from collections.abc import Iterable
from pathlib import Path

from mriscribe.errors import InputError, LimitError
from mriscribe.imaging.sniff import sniff


def read_input_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of ``path``, refusing folders, devices and files over ``max_bytes``."""
    name = str(path)
    try:
        status = path.stat()
        if stat.S_ISDIR(status.st_mode):
            raise InputError(name, "is a folder, not an image file")
        if not stat.S_ISREG(status.st_mode):
            raise InputError(name, "is not a regular file")
        if status.st_size > max_bytes:
            raise LimitError(
                name, f"file is {status.st_size:,} bytes, more than the limit of {max_bytes:,}"
            )
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise InputError(name, "no such file") from None
    except OSError as exc:
        raise InputError(name, f"cannot be read ({exc.strerror})") from None
    if len(data) > max_bytes:  # grew while we read it
        raise LimitError(name, f"file is larger than the limit of {max_bytes:,} bytes")
    return data


def expand_paths(paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """Files named directly, plus the image files inside named folders (recursively, sorted).

    Returns (files, skipped): inside folders, hidden files and files whose content is no format
    we read (notes, DICOMDIR-like indexes without the DICM preamble) are skipped, not errors;
    a file named directly is always kept, so its problem gets reported.
    """
    files: list[Path] = []
    skipped: list[Path] = []
    for path in paths:
        if not path.is_dir():
            files.append(path)
            continue
        for child in sorted(path.rglob("*")):
            if any(part.startswith(".") for part in child.relative_to(path).parts):
                continue
            if not child.is_file():
                continue
            try:
                with child.open("rb") as handle:
                    head = handle.read(65536)
            except OSError:
                files.append(child)  # reported when read
                continue
            (files if sniff(head) else skipped).append(child)
    return files, skipped
