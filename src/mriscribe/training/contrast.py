"""Turning tissue maps into an MR image: T1, contrast-enhanced T1, T2-like or FLAIR-like looks,
a skull where the source has none, then acquisition effects (bias field, blur, resolution
change, Rician noise, gamma)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from mriscribe.training.lesions import COMPONENTS, SliceMaps

MODALITIES = ("T1", "T1CE", "T2", "FLAIR")
MODALITY_WEIGHTS = (0.2, 0.45, 0.2, 0.15)  # the public data set is mostly contrast-enhanced T1

# Mean tissue intensities per look, before random jitter.
TISSUE = {
    "T1": {"csf": 0.12, "gm": 0.45, "wm": 0.68},
    "T1CE": {"csf": 0.12, "gm": 0.45, "wm": 0.66},
    "T2": {"csf": 0.95, "gm": 0.55, "wm": 0.38},
    "FLAIR": {"csf": 0.08, "gm": 0.55, "wm": 0.42},
}
LESION = {
    "T1": {"enhancing": 0.42, "necrosis": 0.13, "oedema": 0.36, "cyst": 0.12, "tail": 0.45},
    "T1CE": {"enhancing": 0.95, "necrosis": 0.13, "oedema": 0.36, "cyst": 0.12, "tail": 0.88},
    "T2": {"enhancing": 0.7, "necrosis": 0.92, "oedema": 0.82, "cyst": 0.95, "tail": 0.4},
    "FLAIR": {"enhancing": 0.72, "necrosis": 0.45, "oedema": 0.88, "cyst": 0.2, "tail": 0.4},
}
# The solid part of each tumour type differs most between looks.
SOLID = {
    "Glioma": {"T1": 0.28, "T1CE": 0.32, "T2": 0.68, "FLAIR": 0.7},
    "Meningioma": {"T1": 0.47, "T1CE": 0.9, "T2": 0.62, "FLAIR": 0.62},
    "Pituitary": {"T1": 0.47, "T1CE": 0.78, "T2": 0.6, "FLAIR": 0.6},
}


def add_skull(maps: SliceMaps, rng: np.random.Generator) -> np.ndarray:
    """Paint a scalp and skull around a skull-stripped slice; returns the non-brain T1 layer.

    The skull follows a smoothed envelope of the brain (a morphological closing), and the space
    between brain and skull (skull base, sulcal gaps) is filled with soft tissue, so that lesions
    at the skull base sit in tissue rather than on an empty background.
    """
    reach = rng.uniform(5.0, 12.0)
    dilated = ndimage.distance_transform_edt(~maps.brain) <= reach
    envelope = ndimage.binary_fill_holes(ndimage.distance_transform_edt(dilated) > reach)
    envelope |= maps.brain
    outside = ndimage.distance_transform_edt(~envelope)
    csf_gap = rng.uniform(0.5, 2.0)
    bone = rng.uniform(4.0, 8.0)
    scalp = rng.uniform(3.0, 7.0)
    texture = ndimage.gaussian_filter(rng.standard_normal(outside.shape).astype(np.float32), 1.5)
    texture /= texture.std() + 1e-6
    profile = np.zeros_like(outside, dtype=np.float32)
    profile[envelope & ~maps.brain] = rng.uniform(0.12, 0.35)
    ring = ~envelope
    profile[ring & (outside <= csf_gap)] = 0.1
    profile[ring & (outside > csf_gap) & (outside <= csf_gap + bone)] = 0.05
    diploe = ring & (outside > csf_gap + bone * 0.35) & (outside <= csf_gap + bone * 0.65)
    # Marrow and fat are patchy in real heads: bright and dark stretches along the ring, and
    # now and then a bright focus that is not a tumour.
    patches = ndimage.gaussian_filter(rng.standard_normal(outside.shape), rng.uniform(3.0, 6.0))
    patches = patches / (np.abs(patches).max() + 1e-6)
    profile[diploe] = np.clip(rng.uniform(0.3, 0.6) + 0.35 * patches[diploe], 0.05, 1.0)
    in_scalp = ring & (outside > csf_gap + bone) & (outside <= csf_gap + bone + scalp)
    profile[in_scalp] = np.clip(rng.uniform(0.6, 0.9) + 0.25 * patches[in_scalp], 0.2, 1.0)
    band = np.argwhere(diploe | in_scalp)
    for _ in range(int(rng.integers(0, 4)) if band.size else 0):
        centre = band[rng.integers(len(band))]
        rows, cols = np.ogrid[: outside.shape[0], : outside.shape[1]]
        blob = np.hypot(rows - centre[0], cols - centre[1]) < rng.uniform(2.0, 5.0)
        profile[blob & ring] = rng.uniform(0.7, 1.0)
    layer = ndimage.gaussian_filter(profile, 0.7) * (1 + 0.15 * texture)
    maps.head = envelope | (outside <= csf_gap + bone + scalp)
    return np.clip(layer, 0, 1) * ~maps.brain


def compose(
    maps: SliceMaps,
    modality: str,
    label: str,
    rng: np.random.Generator,
    skull_layer: np.ndarray | None,
) -> np.ndarray:
    """The image for ``modality``: brain from tissue maps, non-brain from the source or skull."""
    jitter = {k: v * rng.uniform(0.9, 1.1) for k, v in TISSUE[modality].items()}
    # A soft brain edge, so the tissue model meets the source's non-brain without a seam.
    brain = ndimage.gaussian_filter(maps.brain.astype(np.float32), 0.8)
    image = (maps.csf * jitter["csf"] + maps.gm * jitter["gm"] + maps.wm * jitter["wm"]) * brain
    # Keep the source's fine anatomy (sulci, vessels) as a signed detail layer.
    detail = maps.t1 - ndimage.gaussian_filter(maps.t1, 2.0)
    sign = -1.0 if modality in ("T2", "FLAIR") else 1.0
    image += sign * rng.uniform(0.3, 0.8) * detail * brain
    non_brain = skull_layer if skull_layer is not None else maps.t1 * maps.head
    non_brain = non_brain * (1.0 - brain)
    scale = 0.8 if modality in ("T2", "FLAIR") else 1.0
    image += non_brain * scale * rng.uniform(0.8, 1.1)
    if modality == "T1CE":
        # Enhancing dura and vessels at the brain surface.
        rim = maps.brain & ~ndimage.binary_erosion(maps.brain, iterations=1)
        image = np.where(rim, np.maximum(image, rng.uniform(0.4, 0.7)), image)
    if maps.components:
        texture = maps.components.get("texture")
        values = dict(LESION[modality])
        if label in SOLID:
            values["solid"] = SOLID[label][modality]
        if maps.lesion is not None:
            _keep_conspicuous(image, maps, values, rng)
        for name in COMPONENTS:
            weight = maps.components.get(name)
            if weight is None or not weight.any():
                continue
            value = values[name] * rng.uniform(0.9, 1.1)
            if texture is not None:
                value = value * (1 + 0.12 * texture)
            image = image * (1 - weight) + value * weight
    return np.clip(image, 0, None).astype(np.float32)


def _keep_conspicuous(
    image: np.ndarray, maps: SliceMaps, values: dict[str, float], rng: np.random.Generator
) -> None:
    """Keep the tumour's main tissue at least a little brighter or darker than its surroundings.

    An iso-intense lesion with no other sign is invisible on that one image, and a detector
    cannot learn from it; real cases show it through enhancement, oedema or mass effect.
    """
    inside = maps.lesion > 0.5
    ring = ndimage.binary_dilation(inside, iterations=4) & ~inside & maps.head
    if not ring.any():
        return
    background = float(np.median(image[ring]))
    delta = rng.uniform(0.1, 0.22)
    for name in ("solid", "enhancing"):
        weight = maps.components.get(name)
        if weight is None or not weight.any():
            continue
        gap = values[name] - background
        if abs(gap) < delta:
            values[name] = background + (delta if gap >= 0 else -delta)


def acquire(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scanner effects on a float image in about [0, 1]; returns uint8."""
    height, width = image.shape
    if rng.random() < 0.7:
        rows, cols = np.meshgrid(
            np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij"
        )
        coeffs = rng.normal(0, 0.15, 5)
        bias = coeffs[0] * rows + coeffs[1] * cols + coeffs[2] * rows * cols
        bias += coeffs[3] * rows**2 + coeffs[4] * cols**2
        image = image * np.exp(bias)
    if rng.random() < 0.5:
        image = ndimage.gaussian_filter(image, rng.uniform(0.3, 1.2))
    if rng.random() < 0.3:
        factor = rng.uniform(0.45, 0.8)
        small = ndimage.zoom(image, factor, order=1)
        image = ndimage.zoom(small, (height / small.shape[0], width / small.shape[1]), order=1)
    sigma = rng.uniform(0.005, 0.05)
    real = image + rng.normal(0, sigma, image.shape)
    imag = rng.normal(0, sigma, image.shape)
    image = np.hypot(real, imag)  # Rician magnitude noise
    top = np.percentile(image, 99.7) * rng.uniform(0.9, 1.15)
    image = np.clip(image / max(top, 1e-6), 0, 1)
    image = image ** rng.uniform(0.7, 1.4)
    return (image * 255.0 + 0.5).astype(np.uint8)
