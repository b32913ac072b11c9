"""Synthetic glioma, meningioma and pituitary lesions painted into one 2-D brain slice.

A slice arrives as tissue maps at 1 mm per pixel. A lesion is sized in millimetres, placed
where that tumour type grows, pushes the surrounding tissue away (mass effect), and adds its
own tissue components (enhancing rim, necrosis, oedema, dural tail ...) as soft maps that the
contrast step turns into intensities for T1, contrast-enhanced T1, T2 or FLAIR.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

# Component names that the contrast step knows how to colour, painted in this order.
COMPONENTS = ("oedema", "solid", "enhancing", "necrosis", "cyst", "tail")


@dataclass
class SliceMaps:
    """A 2-D slice: T1 in [0, 1], tissue maps, masks and the sella position if it is in view."""

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray
    head: np.ndarray
    sella: tuple[float, float] | None = None  # (row, col), when within 20 mm of this plane
    sella_offset: float = 0.0  # mm between this plane and the sella
    components: dict[str, np.ndarray] = field(default_factory=dict)
    lesion: np.ndarray | None = None  # float mask of the tumour itself (what the box covers)

    def resample(self, coords: np.ndarray, mode: str) -> None:
        """Move the anatomy: each output pixel takes the tissue at ``coords`` (2, H, W)."""

        def warp(array: np.ndarray) -> np.ndarray:
            return ndimage.map_coordinates(array.astype(np.float32), coords, order=1, mode=mode)

        self.t1, self.gm, self.wm, self.csf = (
            warp(a) for a in (self.t1, self.gm, self.wm, self.csf)
        )
        self.brain = warp(self.brain) > 0.5
        self.head = warp(self.head) > 0.5


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Smooth random texture with zero mean and unit spread."""
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return field_ / (field_.std() + 1e-6)


def _shape_radius(
    rng: np.random.Generator, angles: np.ndarray, irregularity: float, harmonics: int
) -> np.ndarray:
    """A closed outline as radius(angle): 1 plus a few random harmonics."""
    radius = np.ones_like(angles)
    for k in range(2, 2 + harmonics):
        amp = irregularity * rng.uniform(0.2, 1.0) / k**0.8
        radius += amp * np.cos(k * angles + rng.uniform(0, 2 * np.pi))
    return np.clip(radius, 0.45, 1.8)


def _normalised_distance(
    shape: tuple[int, int],
    centre: tuple[float, float],
    radius_px: float,
    aspect: float,
    angle: float,
    outline: np.ndarray | None,
    rng_angles: int = 256,
) -> np.ndarray:
    """Distance from ``centre`` in units of the lesion outline (1.0 on the border)."""
    rows, cols = np.indices(shape, dtype=np.float32)
    dy, dx = rows - centre[0], cols - centre[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u = (dx * cos + dy * sin) / aspect
    v = -dx * sin + dy * cos
    rho = np.hypot(u, v) / radius_px
    if outline is None:
        return rho
    theta = np.mod(np.arctan2(v, u), 2 * np.pi)
    index = (theta / (2 * np.pi) * rng_angles).astype(np.int64) % rng_angles
    return rho / outline[index]


def _soft(distance: np.ndarray, edge: float = 1.0, width: float = 0.08) -> np.ndarray:
    """1 inside ``edge``, 0 outside, with a smooth border of relative ``width``."""
    return np.clip((edge - distance) / width + 0.5, 0.0, 1.0).astype(np.float32)


def mass_effect(
    maps: SliceMaps, centre: tuple[float, float], radius_px: float, strength: float
) -> SliceMaps:
    """Push every map away from ``centre`` as a growing mass would."""
    shape = maps.t1.shape
    rows, cols = np.indices(shape, dtype=np.float32)
    dy, dx = rows - centre[0], cols - centre[1]
    rho = np.hypot(dy, dx) + 1e-6
    factor = 1.0 - strength * np.exp(-((rho / (1.6 * radius_px)) ** 2))
    coords = np.stack([centre[0] + dy * factor, centre[1] + dx * factor])
    maps.resample(coords, mode="nearest")
    return maps


def add_glioma(maps: SliceMaps, rng: np.random.Generator, diameter_mm: float) -> bool:
    """Intra-axial, irregular, often ring-enhancing with necrosis, with surrounding oedema."""
    inside = ndimage.distance_transform_edt(maps.brain)
    radius = diameter_mm / 2.0
    allowed = (inside > radius * 0.7 + 2) & ((maps.wm + maps.gm) > 0.5)
    if not allowed.any():
        return False
    candidates = np.argwhere(allowed)
    centre = tuple(float(v) for v in candidates[rng.integers(len(candidates))])
    maps = mass_effect(maps, centre, radius, rng.uniform(0.1, 0.4))
    angles = np.linspace(0, 2 * np.pi, 256, endpoint=False)
    outline = _shape_radius(rng, angles, rng.uniform(0.15, 0.45), 5)
    aspect = rng.uniform(0.75, 1.3)
    angle = rng.uniform(0, np.pi)
    dist = _normalised_distance(maps.t1.shape, centre, radius, aspect, angle, outline)
    dist = dist + 0.05 * _noise(rng, maps.t1.shape, 2.0)
    tumour = _soft(dist) * maps.brain
    texture = _noise(rng, maps.t1.shape, rng.uniform(1.0, 3.0))
    grade = rng.choice(["ring", "patchy", "low"], p=[0.5, 0.3, 0.2])
    if grade == "ring":
        core_edge = rng.uniform(0.45, 0.75)
        necrosis = _soft(dist, core_edge, 0.1)
        enhancing = np.clip(tumour - necrosis, 0, 1)
        solid = np.zeros_like(tumour)
    elif grade == "patchy":
        necrosis = _soft(dist, rng.uniform(0.15, 0.35), 0.1) * (rng.random() < 0.5)
        enhancing = tumour * np.clip(0.5 + 0.5 * texture, 0, 1)
        solid = np.clip(tumour - enhancing - necrosis, 0, 1)
    else:
        necrosis = np.zeros_like(tumour)
        enhancing = np.zeros_like(tumour)
        solid = tumour
    oedema_extent = rng.uniform(1.3, 2.4)
    oedema_dist = dist + 0.25 * _noise(rng, maps.t1.shape, 4.0)
    oedema = _soft(oedema_dist, oedema_extent, 0.25) * np.clip(maps.wm * 1.3 + 0.2 * maps.gm, 0, 1)
    oedema = np.clip(oedema - tumour, 0, 1) * maps.brain
    maps.components = {
        "enhancing": enhancing,
        "necrosis": necrosis,
        "solid": solid,
        "oedema": oedema,
        "texture": texture,
    }
    maps.lesion = tumour
    return True


def add_meningioma(maps: SliceMaps, rng: np.random.Generator, diameter_mm: float) -> bool:
    """Extra-axial, dural-based, well circumscribed, homogeneous, sometimes with a dural tail."""
    brain = maps.brain
    edge = brain & ~ndimage.binary_erosion(brain, iterations=1)
    outside = ndimage.distance_transform_edt(~brain)
    # Dural surface with room above it for the tumour: head (skull) or image border beyond.
    if maps.sella is not None:
        # Keep clear of the sella: a mass there reads as pituitary, whatever its origin.
        rows_, cols_ = np.indices(edge.shape)
        near_sella = np.hypot(rows_ - maps.sella[0], cols_ - maps.sella[1]) < 25 + diameter_mm / 2
        edge = edge & ~near_sella
    rows, cols = np.nonzero(edge)
    if rows.size == 0:
        return False
    centre_brain = np.array(ndimage.center_of_mass(brain))
    pick = rng.integers(rows.size)
    point = np.array([rows[pick], cols[pick]], dtype=np.float64)
    normal = point - centre_brain
    normal /= np.linalg.norm(normal) + 1e-9
    radius = diameter_mm / 2.0
    centre = point + normal * radius * rng.uniform(-0.1, 0.35)
    centre_t = (float(centre[0]), float(centre[1]))
    maps = mass_effect(
        maps,
        (float(point[0] - normal[0] * radius * 0.3), float(point[1] - normal[1] * radius * 0.3)),
        radius,
        rng.uniform(0.25, 0.5),
    )
    angles = np.linspace(0, 2 * np.pi, 256, endpoint=False)
    outline = _shape_radius(rng, angles, rng.uniform(0.03, 0.12), 3)
    # Broad dural base: flatten along the dura (tangent direction).
    angle = float(np.arctan2(normal[0], normal[1])) + np.pi / 2
    dist = _normalised_distance(
        brain.shape, centre_t, radius, rng.uniform(1.0, 1.4), angle, outline
    )
    tumour = _soft(dist, 1.0, 0.06)
    # The mass lies inside the skull, not in the scalp: clip at the inner table where a skull is.
    tumour *= np.clip(1.0 - np.clip(outside - radius * 1.1, 0, None), 0, 1)
    tail = np.zeros_like(tumour)
    if rng.random() < 0.5:
        shell = (outside > 0) & (outside < 2.5)
        along = _normalised_distance(
            brain.shape, centre_t, radius * rng.uniform(1.5, 2.2), 1.0, 0.0, None
        )
        tail = (shell & (along < 1.0)).astype(np.float32) * np.clip(1.2 - along, 0, 1)
        tail = np.clip(tail - tumour, 0, 1)
    cleft = np.clip(_soft(dist, 1.15, 0.08) - tumour, 0, 1) * (rng.random() < 0.6)
    texture = _noise(rng, brain.shape, 1.5) * 0.3
    oedema = np.zeros_like(tumour)
    if rng.random() < 0.3:
        oedema = np.clip(_soft(dist, rng.uniform(1.3, 1.7), 0.3) - tumour, 0, 1) * maps.wm
    maps.components = {
        "solid": tumour,
        "tail": tail,
        "cyst": cleft * 0.7,
        "oedema": oedema,
        "texture": texture,
    }
    maps.lesion = tumour
    maps.brain = maps.brain & (tumour < 0.5)
    return True


def add_pituitary(maps: SliceMaps, rng: np.random.Generator, diameter_mm: float) -> bool:
    """A sellar / suprasellar midline mass growing up from the pituitary fossa."""
    if maps.sella is None or abs(maps.sella_offset) > 6:
        return False
    radius = diameter_mm / 2.0
    # Macroadenomas grow upward (towards row 0) out of the sella.
    rise = radius * rng.uniform(0.2, 0.7) if diameter_mm > 12 else radius * 0.1
    centre = (maps.sella[0] - rise + rng.uniform(-2, 2), maps.sella[1] + rng.uniform(-2, 2))
    if diameter_mm > 15:
        maps = mass_effect(
            maps, (centre[0] - radius * 0.4, centre[1]), radius, rng.uniform(0.1, 0.3)
        )
    angles = np.linspace(0, 2 * np.pi, 256, endpoint=False)
    outline = _shape_radius(rng, angles, rng.uniform(0.03, 0.15), 3)
    dist = _normalised_distance(
        maps.t1.shape, centre, radius, rng.uniform(0.8, 1.1), rng.uniform(-0.2, 0.2), outline
    )
    tumour = _soft(dist, 1.0, 0.07)
    if diameter_mm > 18 and rng.random() < 0.5:
        # "Snowman" waist where the mass passes the diaphragma sellae.
        lower = _normalised_distance(
            maps.t1.shape, (centre[0] + radius * 0.6, centre[1]), radius * 0.55, 1.0, 0.0, None
        )
        tumour = np.maximum(tumour * _soft(dist, 0.9, 0.07), _soft(lower, 1.0, 0.1))
    texture = _noise(rng, maps.t1.shape, 1.2) * 0.5
    cyst = _soft(dist, rng.uniform(0.2, 0.5), 0.1) * (rng.random() < 0.25)
    maps.components = {"solid": np.clip(tumour - cyst, 0, 1), "cyst": cyst, "texture": texture}
    maps.lesion = tumour
    maps.head = maps.head | (tumour > 0.5)
    return True


LESIONS = {"Glioma": add_glioma, "Meningioma": add_meningioma, "Pituitary": add_pituitary}
DIAMETER_MM = {"Glioma": (8.0, 60.0), "Meningioma": (6.0, 55.0), "Pituitary": (7.0, 35.0)}
