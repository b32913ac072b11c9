"""Reading and writing test DICOM datasets without pydicom's warnings about small deviations."""

from __future__ import annotations

import io
import warnings

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset


def dataset(name: str = "MR_small.dcm") -> Dataset:
    """One of pydicom's own test files, read."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return pydicom.dcmread(get_testdata_file(name, download=False))


def to_bytes(ds: Dataset) -> bytes:
    """A dataset as a Part 10 file."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
