"""Inflating zlib and gzip streams piece by piece, never more than a caller's limit."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

# Compressed bytes fed, and inflated bytes taken, at a time.
CHUNK = 1 << 20


def inflate(
    inflater: zlib._Decompress, spans: Iterable[memoryview], limit: int
) -> Iterator[bytes]:
    """The inflated bytes of ``spans`` (the compressed stream, in parts), at most CHUNK bytes a
    piece, stopping once ``limit`` bytes have come out or the stream ends; zlib.error passes."""
    produced = 0
    for span in spans:
        for offset in range(0, len(span), CHUNK):
            pending: bytes | memoryview = span[offset : offset + CHUNK]
            while produced < limit:
                piece = inflater.decompress(pending, min(CHUNK, limit - produced))
                if piece:
                    produced += len(piece)
                    yield piece
                pending = inflater.unconsumed_tail
                if not piece and not pending:
                    break
            if produced >= limit or inflater.eof:
                return
