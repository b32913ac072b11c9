"""Tumour mimics (hard negatives) in training slices: where they go and what they leave alone."""

import numpy as np
import pytest

pytest.importorskip("scipy", reason="the 'synth' extra is not installed")

from scipy import ndimage

from mriscribe.training.lesions import SliceMaps
from mriscribe.training.mimics import ASPECT, RADIUS_PX, add_mimics


def _slice() -> SliceMaps:
    rows, cols = np.indices((160, 160))
    radius = np.hypot(rows - 80, cols - 80)
    brain = radius < 60
    gm = np.where(brain & (radius > 45), 0.8, 0.1).astype(np.float32) * brain
    wm = np.where(brain & (radius <= 45), 0.8, 0.1).astype(np.float32) * brain
    csf = np.clip(brain - gm - wm, 0, 1).astype(np.float32)
    t1 = (0.45 * gm + 0.7 * wm).astype(np.float32)
    maps = SliceMaps(t1=t1, gm=gm, wm=wm, csf=csf, brain=brain, head=radius < 70)
    maps.lesion = (np.hypot(rows - 80, cols - 132) < 10).astype(np.float32)  # at the edge
    return maps


def test_mimics_cut_the_brain_edge_and_keep_clear_of_the_tumour():
    maps = _slice()
    before = maps.brain.copy()
    depth = ndimage.distance_transform_edt(before)
    placed = add_mimics(maps, np.random.default_rng(4), count=8)
    assert placed > 0
    changed = maps.brain != before
    assert changed.any()
    # Only near the brain's edge (this brain is 60 px deep): a mimic's centre lies at most
    # a radius and 6 px inside the outline, and it reaches at most its long radius further.
    assert depth[changed].max() <= RADIUS_PX[1] * (1 + 1.3 * ASPECT[1]) + 6
    # Never on or next to the tumour, so its box and look stay as labelled.
    near_tumour = ndimage.binary_dilation(maps.lesion > 0.01, iterations=12)
    assert not (changed & near_tumour).any()
    for name in ("gm", "wm", "csf", "t1"):
        values = getattr(maps, name)
        assert values.min() >= 0 and values.max() <= 1


def test_mimics_are_deterministic_for_a_seed():
    first, second, other = _slice(), _slice(), _slice()
    add_mimics(first, np.random.default_rng(11))
    add_mimics(second, np.random.default_rng(11))
    add_mimics(other, np.random.default_rng(12))
    assert np.array_equal(first.brain, second.brain)
    assert np.array_equal(first.t1, second.t1)
    assert not np.array_equal(first.brain, other.brain)


def test_a_slice_without_room_gets_no_mimic():
    maps = _slice()
    maps.brain = np.zeros_like(maps.brain)
    assert add_mimics(maps, np.random.default_rng(0), count=3) == 0
