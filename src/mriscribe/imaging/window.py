"""The percentile window: how grey values that come with no display window of their own become
8-bit grey.

A DICOM image without a usable VOI window, a 16- or 32-bit PNG or TIFF and a NIfTI volume hold
values in arbitrary units. Each is shown through one linear window from robust percentiles of a
sample of its values (the 0.5th and 99.5th: a few hot or dead pixels do not set the contrast),
taken once for a whole stack or volume so that its images look alike. The decoders differ only in
how they sample (strided rows, frames or voxels) and where the values come from; the window and
the mapping to grey are this one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class Window:
    """A linear display window: ``low`` and below show black, ``high`` and above white.

    A window with ``high <= low`` (uniform values) shows everything black, and so does a value
    that is not a number; infinities show as black or white.
    """

    low: float
    high: float

    def grey(self, values: np.ndarray) -> np.ndarray:
        """``values`` (a float array, overwritten: it is the caller's scratch block) as 8-bit grey,
        rounded to the nearest level."""
        if not self.high > self.low:
            return np.zeros(values.shape, dtype=np.uint8)
        # Values beyond the float type's range saturate to black or white, as infinities do.
        with np.errstate(over="ignore"):
            values -= self.low
            values *= 255.0 / (self.high - self.low)
        # Clipped as np.clip clips, but a value that is not a number becomes 0, not NaN.
        np.fmax(values, 0, out=values)
        np.fmin(values, 255, out=values)
        return np.rint(values, out=values).astype(np.uint8)


def percentile_window(sample: np.ndarray) -> Window:
    """The window from the PERCENTILES of ``sample``'s finite values (a float array, reordered in
    place: the percentiles need no copy of it). Where they meet (at least 99% of the sample holds
    one value, as in a small bright object on a flat background) the sample's whole range is the
    window instead, so that the object still shows."""
    finite = np.isfinite(sample)
    if not finite.all():
        sample = sample[finite]
    if sample.size == 0:
        return Window(0.0, 0.0)
    low, high = (float(v) for v in np.percentile(sample, PERCENTILES, overwrite_input=True))
    if high <= low:
        low, high = float(sample.min()), float(sample.max())
    return Window(low, high)


def sample_step(pixels: int, samples: int) -> int:
    """The stride along both axes of an image (or frame) of ``pixels`` that leaves about
    ``samples`` of them (never fewer, at most four times as many)."""
    return max(1, math.isqrt(pixels // max(1, samples)))
