"""Shared fixtures: the held-out-anatomy images shipped with the tests, and small image makers."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FIXTURES = Path(__file__).parent / "fixtures"
HELDOUT = FIXTURES / "heldout"


@pytest.fixture(scope="session")
def heldout_cases() -> list[dict]:
    """Colin27 slices (anatomy the model never trained on) with their true class and box.

    Made by ``make_sample(7, "test", index)``, taking for each class the first three typical,
    clearly visible cases: contrast-enhanced T1 (the public data set's main sequence) with a
    lesion of at least 15 mm, and any normal slice. Chosen by those criteria alone.
    """
    return json.loads((HELDOUT / "labels.json").read_text())


@pytest.fixture(scope="session")
def detector():
    from mriscribe.detection import load_detector

    return load_detector()


def encode(array: np.ndarray, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()
