"""Normal findings that look like small tumours, painted into training slices as hard negatives.

A detector trained only on smooth brain outlines calls every knob of cortex at the brain's
edge a small meningioma, and every round CSF space with a bright rim a ring-enhancing glioma.
Real heads (and other subjects' brain masks) have both: gyri cut off by the slice plane or by
skull stripping, cisterns and vessels at the surface. This module adds them, away from any
tumour, so that the model learns they are not tumours. They carry no label of their own.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from mriscribe.training.lesions import SliceMaps

ISLAND_SHARE = 0.6  # the rest are CSF spaces
RADIUS_PX = (3.0, 9.0)  # at 1 mm per pixel: 6-18 mm across, the size of our false tumours
ASPECT = (1.0, 2.2)  # long axis over short axis


def add_mimics(maps: SliceMaps, rng: np.random.Generator, count: int | None = None) -> int:
    """Add ``count`` (default 1-3) mimics to ``maps`` in place; returns how many were placed.

    An island is a lumpy patch of the slice's own cortex at the brain's edge, cut off from the
    rest (or half cut off) by a thin cleft. A CSF space is a lumpy hole in the brain mask near
    the edge: the contrast step fills it like the space outside the brain and, on
    contrast-enhanced T1, gives it the bright rim of the brain surface.
    """
    wanted = int(rng.integers(1, 4)) if count is None else count
    keep_out = np.zeros_like(maps.brain)
    if maps.lesion is not None:
        keep_out = ndimage.binary_dilation(maps.lesion > 0.01, iterations=12)
    if maps.sella is not None:  # the sella is where pituitary tumours are looked for
        rows, cols = np.indices(maps.brain.shape)
        keep_out |= np.hypot(rows - maps.sella[0], cols - maps.sella[1]) < 15
    placed = 0
    for _ in range(wanted):
        radius = float(rng.uniform(*RADIUS_PX))
        if rng.random() < ISLAND_SHARE:
            placed += _island(maps, rng, radius, keep_out)
        else:
            placed += _csf_space(maps, rng, radius, keep_out)
    return placed


def _centre_at_depth(
    maps: SliceMaps, rng: np.random.Generator, depth: float, keep_out: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """A random pixel ``depth`` px inside the brain's edge, clear of ``keep_out``; with every
    pixel's distance to it in units of a random irregular outline of ``radius`` px (1.0 on the
    outline), or None when the slice has no such pixel."""
    inside = ndimage.distance_transform_edt(maps.brain)
    # The clearance is one radius, not the long radius, so an elongated mimic can reach into
    # the 12-px margin kept round a tumour. Widening it would change the data set behind the
    # shipped model, so it stays.
    clear = ~ndimage.binary_dilation(keep_out, iterations=int(radius) + 3) if keep_out.any() else 1
    candidates = np.argwhere((np.abs(inside - depth) < 1.0) & clear)
    if candidates.size == 0:
        return None
    centre = candidates[rng.integers(len(candidates))]
    rows, cols = np.indices(maps.brain.shape, dtype=np.float32)
    dy, dx = rows - centre[0], cols - centre[1]
    angle = np.arctan2(dy, dx)
    turn, aspect = rng.uniform(0, np.pi), rng.uniform(*ASPECT)
    along = dx * np.cos(turn) + dy * np.sin(turn)
    across = -dx * np.sin(turn) + dy * np.cos(turn)
    outline = np.ones_like(angle)
    for k in range(2, 5):  # a lumpy, not a round, outline
        outline += rng.uniform(0.05, 0.25) / k * np.cos(k * angle + rng.uniform(0, 2 * np.pi))
    return centre, np.hypot(along / aspect, across) / (radius * outline)


def _island(maps: SliceMaps, rng: np.random.Generator, radius: float, keep_out: np.ndarray) -> int:
    found = _centre_at_depth(maps, rng, radius * rng.uniform(0.4, 0.9), keep_out, radius)
    if found is None:
        return 0
    centre, distance = found
    width = rng.uniform(1.0, 2.2) / radius
    cleft = (distance >= 1.0) & (distance < 1.0 + width) & maps.brain
    if rng.random() < 0.5:  # leave a bridge of tissue: a gyrus half cut off
        rows, cols = np.indices(cleft.shape)
        heading = np.arctan2(rows - centre[0], cols - centre[1])
        cleft &= np.cos(heading - rng.uniform(0, 2 * np.pi)) < rng.uniform(0.3, 0.8)
    # The island keeps the slice's own tissue (gyral texture, not a homogeneous mass).
    maps.brain = maps.brain & ~cleft
    maps.t1 = np.where(cleft, maps.t1 * 0.2, maps.t1)  # CSF-dark where the source shows through
    for name in ("gm", "wm"):
        setattr(maps, name, getattr(maps, name) * ~cleft)
    return 1


def _csf_space(
    maps: SliceMaps, rng: np.random.Generator, radius: float, keep_out: np.ndarray
) -> int:
    found = _centre_at_depth(maps, rng, radius + rng.uniform(1.0, 6.0), keep_out, radius)
    if found is None:
        return 0
    _, distance = found
    hole = distance < rng.uniform(0.5, 1.0)
    maps.brain = maps.brain & ~hole
    maps.t1 = np.where(hole, maps.t1 * 0.2, maps.t1)
    for name in ("gm", "wm", "csf"):
        setattr(maps, name, getattr(maps, name) * ~hole)
    return 1
