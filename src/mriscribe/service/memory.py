"""Giving freed memory back to the system, so the service's size returns to its idle size.

Python frees a request's arrays when it ends, but glibc's allocator keeps freed heap memory for
reuse: with its default dynamic threshold, blocks of up to 32 MB come from the heap after the
first large free, and the heap only shrinks from its top. Large blocks are therefore always
mapped (and so unmapped when freed) and the heap is trimmed after each analysis request. On other
C libraries both are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3
# Blocks from this size are mapped on their own: decoded slices, voxel data, PDF bytes.
MMAP_THRESHOLD = 1 << 20


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # noqa: B018 (glibc only: probing the symbol)
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def tune_allocator() -> None:
    """A fixed mmap threshold (glibc), so that large blocks go back to the system when freed."""
    if _LIBC is not None and not _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        log.warning("the allocator's mmap threshold could not be set")


def release_memory() -> None:
    """Return the free memory at the top of the heap and in its free pages to the system."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
