"""Uploads streamed to a private spool: a capped share of a request's file bytes in memory, the
rest in unlinked temporary files, each file and the request checked against the limits as the
bytes arrive."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import anyio.to_thread
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from mriscribe.errors import MriscribeError
from mriscribe.pipeline import InputFile, numbered_name, safe_name
from mriscribe.settings import MiB, Settings, SettingsError

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

log = logging.getLogger("mriscribe.service")

FIELD = "images"  # the prototype's multipart field name
MAX_BOUNDARY = 70  # RFC 2046
MAX_PART_HEADER = 8192  # bytes of one part header's name or value


class UploadError(MriscribeError):
    """The upload cannot be taken; ``status`` says why: 413 over a limit, 503 when the spool
    cannot take it, 400 otherwise."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class UploadLimits:
    """What one request may upload, and where its bytes wait while it is analysed."""

    max_images: int
    max_file_bytes: int
    max_request_bytes: int
    memory_bytes: int  # file bytes one request keeps in memory; the rest goes to spool files
    folder: Path | None  # None: the system's temp folder
    name_by_number: bool = False  # errors say "file 3", never the client's file name

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadLimits:
        """The settings' limits; a named spool folder is created (0700) and tried now, so that a
        bad one stops the service at start-up rather than failing each upload."""
        folder = settings.spool_dir
        if folder is not None:
            try:
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                tempfile.TemporaryFile(dir=folder).close()
            except OSError as exc:
                raise SettingsError(
                    f"spool_dir: cannot write temporary files in {folder} ({exc.strerror})"
                ) from None
        limits = settings.limits
        return cls(
            max_images=limits.max_images,
            max_file_bytes=limits.max_file_bytes,
            max_request_bytes=limits.max_request_bytes,
            memory_bytes=int(settings.spool_memory_mb * MiB),
            folder=folder,
            name_by_number=settings.name_images_by_number,
        )


@asynccontextmanager
async def spooled_files(request: Request, limits: UploadLimits) -> AsyncIterator[list[InputFile]]:
    """The request's files in the field 'images', spooled as they arrive; closed on leaving.

    Raises UploadError (413 as soon as a file, the files together or their number pass a limit;
    400 for a body that is not multipart, is malformed or has no files) and ClientDisconnect.
    The files are unlinked from the start (nothing is left behind, even if the process is
    killed) and their bytes are read by the pipeline only when each file's turn to decode comes.
    """
    spool = _Spool(limits)
    try:
        await spool.receive(request)
        yield [InputFile(part.name, part.file, part.size) for part in spool.parts]
    finally:
        spool.close()


@dataclass
class _Part:
    """One file of the upload, in its spool file."""

    name: str  # display name, from the client's file name
    label: str  # how errors name it
    file: IO[bytes]
    memory_limit: int  # bytes it may hold in memory before the spool file moves to disk
    size: int = 0


class _Spool:
    """The multipart parser's callbacks: each file of the field 'images' into a spool file,
    every other part read and dropped."""

    def __init__(self, limits: UploadLimits) -> None:
        self.limits = limits
        self.parts: list[_Part] = []
        self.memory_left = limits.memory_bytes
        self.total = 0
        self.complete = False
        self._current: _Part | None = None
        self._header = (bytearray(), bytearray())
        self._disposition = b""

    async def receive(self, request: Request) -> None:
        boundary = _boundary(request.headers.get("content-type", ""))
        parser = MultipartParser(boundary, self._callbacks())
        async for chunk in request.stream():
            if chunk:  # parsed and written off the event loop: the spool may be on a slow disk
                await anyio.to_thread.run_sync(self._parse, parser, chunk)
        if not self.complete:
            raise UploadError("the upload could not be read: the multipart body is incomplete")
        if not self.parts:
            raise UploadError(f"no image files were sent in the multipart field '{FIELD}'")

    def close(self) -> None:
        for part in self.parts:
            part.file.close()

    def _parse(self, parser: MultipartParser, chunk: bytes) -> None:
        try:
            parser.write(chunk)
        except FormParserError:
            raise UploadError(
                "the upload could not be read: the multipart body is malformed"
            ) from None
        except OSError:  # the spool's disk is full, or no file can be opened: not the client's
            log.warning("upload could not be spooled", extra={"files": len(self.parts)})
            raise UploadError(
                "the service cannot take the upload now (its spool is full); try again later",
                503,
            ) from None

    def _callbacks(self) -> MultipartCallbacks:
        return {
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        _extend(self._header[0], data[start:end])

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        _extend(self._header[1], data[start:end])

    def _header_end(self) -> None:
        name, value = self._header
        if name.lower() == b"content-disposition":
            self._disposition = bytes(value)
        name.clear()
        value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._disposition = b""
        filename = options.get(b"filename")
        if options.get(b"name") != FIELD.encode() or filename is None:
            self._current = None  # a form field, or a file in another field: dropped
            return
        number = len(self.parts) + 1
        limit = self.limits.max_images
        if number > limit:
            raise UploadError(f"request: more than the limit of {limit} files", 413)
        name = safe_name(filename.decode("utf-8", "replace"), number)
        label = numbered_name(number) if self.limits.name_by_number else name
        self._current = _Part(name, label, *self._new_file())
        self.parts.append(self._current)

    def _new_file(self) -> tuple[IO[bytes], int]:
        """A spool file, and how many of its bytes may stay in memory (what the request has left
        of its share); unlinked at once and readable only by this user (0600)."""
        folder = self.limits.folder
        if self.memory_left > 0:
            return tempfile.SpooledTemporaryFile(self.memory_left, dir=folder), self.memory_left
        return tempfile.TemporaryFile(dir=folder), 0

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._current
        if part is None:
            return
        part.size += end - start
        self.total += end - start
        if part.size > self.limits.max_file_bytes:
            raise UploadError(
                f"{part.label}: file is larger than the limit of {self.limits.max_file_bytes:,} "
                "bytes",
                413,
            )
        if self.total > self.limits.max_request_bytes:
            raise UploadError(
                "request: the files total more than the limit of "
                f"{self.limits.max_request_bytes:,} bytes",
                413,
            )
        part.file.write(memoryview(data)[start:end])

    def _part_end(self) -> None:
        part = self._current
        if part is not None and part.size <= part.memory_limit:  # it stayed in memory
            self.memory_left -= part.size
        self._current = None

    def _end(self) -> None:
        self.complete = True


def _extend(buffer: bytearray, data: bytes) -> None:
    """Collect a part header's name or value, refusing one that never ends."""
    if len(buffer) + len(data) > MAX_PART_HEADER:
        raise UploadError("the upload could not be read: a part's header is too long")
    buffer.extend(data)


def _boundary(content_type: str) -> bytes:
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise UploadError(f"send the images as multipart/form-data in the field '{FIELD}'")
    boundary = options.get(b"boundary", b"")
    if not 0 < len(boundary) <= MAX_BOUNDARY:
        raise UploadError("the upload could not be read: the multipart boundary is missing or bad")
    return boundary
