"""Synthetic brain-tumour MRI data set in YOLO format, built from real packaged brain MRI.

    python -m mriscribe.training.synth --out DIR --n N --seed S

writes DIR/images/{train,val,test}, DIR/labels/{train,val,test} and DIR/dataset.yaml with the
classes Glioma, Meningioma, No Tumor, Pituitary (the public brain-tumour data set's order).
Train and val use training anatomy only; test uses anatomy training never saw (see anatomy.py).
Each image depends only on (seed, split, index), so any worker count gives the same files.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from mriscribe.training.anatomy import Anatomy, load_split
from mriscribe.training.contrast import MODALITIES, MODALITY_WEIGHTS, acquire, add_skull, compose
from mriscribe.training.lesions import DIAMETER_MM, LESIONS, SliceMaps
from mriscribe.training.mimics import add_mimics

CLASS_NAMES = ("Glioma", "Meningioma", "No Tumor", "Pituitary")
SPLITS = ("train", "val", "test")
ORIENTATIONS = ("axial", "coronal", "sagittal")

# Share of "No Tumor" training images cut outside the brain's thick part: skull base, orbits,
# neck and vertex, where a detector that never saw them finds "tumours" on real whole-head scans.
# The held-out test split keeps the brain-level slices only, so its score stays comparable.
OUTER_NEGATIVE_P = 0.3

_ANATOMY: dict[str, list[Anatomy]] = {}


@dataclass(frozen=True)
class Look:
    """How ``render`` draws an image's appearance; the defaults are the generator's own mix."""

    modalities: tuple[str, ...] = MODALITIES
    weights: tuple[float, ...] = MODALITY_WEIGHTS  # odds of each modality, summing to 1
    strip_p: float | None = None  # skull-stripped look's odds; None: 0.25 with skull, 0.35 without
    pixel_mm: float | None = None  # output pixel size (+-15 %); None: the head fills the frame

    def __post_init__(self) -> None:
        if len(self.weights) != len(self.modalities) or not np.isclose(sum(self.weights), 1.0):
            raise ValueError("a Look needs one weight per modality, summing to 1")


DEFAULT_LOOK = Look()


@dataclass(frozen=True)
class Sample:
    """One rendered image with its label."""

    image: np.ndarray  # uint8 (size, size)
    class_id: int
    box: tuple[float, float, float, float] | None  # x1, y1, x2, y2 in pixels
    meta: dict[str, object]


def extract(anatomy: Anatomy, orientation: str, index: int) -> SliceMaps:
    """One slice of ``anatomy`` at ``index`` along ``orientation``, superior/anterior up."""

    def cut(volume: np.ndarray) -> np.ndarray:
        if orientation == "axial":
            plane = volume[:, :, index]
        elif orientation == "coronal":
            plane = volume[:, index, :]
        else:
            plane = volume[index, :, :]
        return np.ascontiguousarray(plane.T[::-1])

    sella, offset = None, 0.0
    if anatomy.sella_vox is not None:
        sx, sy, sz = anatomy.sella_vox
        _nx, ny, nz = anatomy.t1.shape
        if orientation == "axial":
            sella, offset = (ny - 1 - sy, sx), index - sz
        elif orientation == "coronal":
            sella, offset = (nz - 1 - sz, sx), index - sy
        else:
            sella, offset = (nz - 1 - sz, sy), index - sx
        if abs(offset) > 20:
            sella = None
    return SliceMaps(
        t1=cut(anatomy.t1),
        gm=cut(anatomy.gm),
        wm=cut(anatomy.wm),
        csf=cut(anatomy.csf),
        brain=cut(anatomy.brain),
        head=cut(anatomy.head),
        sella=sella,
        sella_offset=offset,
    )


def deform(maps: SliceMaps, rng: np.random.Generator) -> SliceMaps:
    """Make the slice look like another head: anisotropic scaling and a smooth elastic warp."""
    shape = maps.t1.shape
    centre = np.array(shape, dtype=np.float64) / 2
    scale = rng.uniform(0.88, 1.12, 2)
    smooth = rng.uniform(12.0, 24.0)
    amplitude = rng.uniform(1.5, 6.0)
    displacement = []
    for _ in range(2):
        field_ = ndimage.gaussian_filter(rng.standard_normal(shape), smooth)
        displacement.append(field_ / (np.abs(field_).max() + 1e-9) * amplitude)
    grid = np.indices(shape, dtype=np.float64)
    coords = np.stack(
        [centre[i] + (grid[i] - centre[i]) / scale[i] + displacement[i] for i in range(2)]
    )
    maps.resample(coords, mode="constant")
    if maps.sella is not None:
        point = np.array(maps.sella)
        index = tuple(int(np.clip(round(v), 0, n - 1)) for v, n in zip(point, shape, strict=True))
        shift = np.array([displacement[0][index], displacement[1][index]])
        moved = centre + (point - shift - centre) * scale
        maps.sella = (float(moved[0]), float(moved[1]))
    return maps


_AXES = {"sagittal": (1, 2), "coronal": (0, 2), "axial": (0, 1)}


def _slice_range(anatomy: Anatomy, orientation: str) -> tuple[int, int]:
    area = anatomy.brain.sum(axis=_AXES[orientation])
    keep = np.nonzero(area > 0.35 * area.max())[0]
    return int(keep[0]), int(keep[-1])


def _outer_slices(anatomy: Anatomy, orientation: str) -> np.ndarray:
    """Slices through the head but outside the brain's thick part (little or no brain)."""
    head = anatomy.head.sum(axis=_AXES[orientation])
    low, high = _slice_range(anatomy, orientation)
    index = np.arange(head.size)
    return index[(head > 0.15 * head.max()) & ((index < low) | (index > high))]


def _choose_slice(
    anatomies: list[Anatomy], label: str, rng: np.random.Generator, outer_p: float = 0.0
) -> tuple[Anatomy, str, int]:
    if label == "Pituitary":
        pool = [a for a in anatomies if a.sella_vox is not None]
        anatomy = pool[rng.integers(len(pool))]
        orientation = str(rng.choice(ORIENTATIONS, p=[0.3, 0.35, 0.35]))
        sx, sy, sz = anatomy.sella_vox  # type: ignore[misc]
        centre = {"axial": sz, "coronal": sy, "sagittal": sx}[orientation]
        spread = 5 if orientation == "coronal" else 4
        return anatomy, orientation, round(centre + rng.uniform(-spread, spread))
    anatomy = anatomies[rng.integers(len(anatomies))]
    orientation = str(rng.choice(ORIENTATIONS, p=[0.45, 0.3, 0.25]))
    if label == "No Tumor" and outer_p > 0 and rng.random() < outer_p:
        outer = _outer_slices(anatomy, orientation)
        if outer.size:
            return anatomy, orientation, int(outer[rng.integers(outer.size)])
    low, high = _slice_range(anatomy, orientation)
    return anatomy, orientation, int(rng.integers(low, high + 1))


def _geometry(
    shape: tuple[int, int],
    head: np.ndarray,
    size: int,
    rng: np.random.Generator,
    pixel_mm: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Affine (matrix, offset) mapping output pixels to slice pixels: zoom, rotate, shift, flip.

    By default the head fills 74-100 % of the frame; with ``pixel_mm`` an output pixel is that
    many millimetres (+-15 %), as on a scanner's fixed field of view.
    """
    rows, cols = np.nonzero(head)
    centre = np.array([(rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2])
    extent = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
    zoom = rng.uniform(1.0, 1.35)
    scale = extent * zoom / size  # slice pixels per output pixel
    if pixel_mm is not None:
        scale = pixel_mm * zoom / 1.175  # slice pixels are 1 mm
    angle = np.deg2rad(rng.uniform(-15, 15))
    flip = -1.0 if rng.random() < 0.5 else 1.0
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = rot @ np.diag([scale, scale * flip])
    shift = rng.uniform(-0.06, 0.06, 2) * extent
    offset = centre + shift - matrix @ np.array([size / 2, size / 2])
    return matrix, offset


def render(
    anatomies: list[Anatomy],
    label: str,
    rng: np.random.Generator,
    size: int,
    outer_p: float = 0.0,
    mimic_rng: np.random.Generator | None = None,
    mimic_share: float = 0.0,
    look: Look = DEFAULT_LOOK,
) -> Sample | None:
    """Render one image of ``label``; None when the drawn slice cannot hold that lesion.

    A "No Tumor" image cut outside the brain's thick part (``outer_p`` of them) keeps its brain
    box when the slice still shows some brain, else it has no box at all (a background image).
    ``mimic_share`` of the images get tumour mimics (see mimics.py), drawn from their own
    ``mimic_rng`` so that the rest of the image stays what it would be without them.
    ``look`` narrows the modalities, the skull-stripped odds or the pixel size (realdata.py
    renders normal heads like real contrast-enhanced scans with it); the default draws exactly
    what the generator always drew.
    """
    anatomy, orientation, index = _choose_slice(anatomies, label, rng, outer_p)
    first, last = _slice_range(anatomy, orientation)
    outer = label == "No Tumor" and not first <= index <= last
    maps = extract(anatomy, orientation, index)
    if rng.random() < 0.8:
        maps = deform(maps, rng)
    if outer:
        if maps.head.sum() < 2000:
            return None
    elif maps.brain.sum() < 500:
        return None
    skull_layer = None
    if anatomy.has_skull:
        if rng.random() < (0.25 if look.strip_p is None else look.strip_p):
            maps.head = maps.brain.copy()  # skull-stripped look
    elif rng.random() < (0.65 if look.strip_p is None else 1.0 - look.strip_p):
        skull_layer = add_skull(maps, rng)
    else:
        maps.head = maps.brain.copy()
    if outer and maps.head.sum() < 300:
        return None  # a skull-stripped look of a slice with (almost) no brain: nothing to see
    diameter = None
    if label in LESIONS:
        low, high = DIAMETER_MM[label]
        diameter = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        if not LESIONS[label](maps, rng, diameter):
            return None
        if skull_layer is not None:
            skull_layer = skull_layer * (1 - maps.lesion)
    mimics = 0
    if mimic_rng is not None and mimic_rng.random() < mimic_share and not outer:
        mimics = add_mimics(maps, mimic_rng)
    modality = str(rng.choice(look.modalities, p=look.weights))
    image = compose(maps, modality, label, rng, skull_layer)
    target = maps.lesion if maps.lesion is not None else maps.brain.astype(np.float32)

    head = maps.head | (target > 0.5)
    matrix, offset = _geometry(image.shape, head, size, rng, look.pixel_mm)
    warped = ndimage.affine_transform(image, matrix, offset, output_shape=(size, size), order=1)
    mask = ndimage.affine_transform(target, matrix, offset, output_shape=(size, size), order=1)
    rows, cols = np.nonzero(mask > 0.5)
    box: tuple[float, float, float, float] | None = None
    if outer and rows.size < 300 * (size / 256) ** 2:
        pass  # too little brain for a "No Tumor" box: an image with no object at all
    elif rows.size < 4:
        return None
    else:
        box = (float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1))
    pixels = acquire(warped, rng)
    meta = {
        "anatomy": anatomy.name,
        "orientation": orientation,
        "slice": index,
        "level": "outer" if outer else "brain",
        "modality": modality,
        "diameter_mm": diameter,
    }
    if mimics:
        meta["mimics"] = mimics
    return Sample(pixels, CLASS_NAMES.index(label), box, meta)


def _init_worker(split: str) -> None:
    anatomy_split = "test" if split == "test" else "train"
    _ANATOMY[split] = load_split(anatomy_split)


def class_of(seed: int, split: str, index: int, negative_share: float | None = None) -> str:
    """The class of sample ``index``: in turn, or "No Tumor" with ``negative_share`` odds.

    By default the classes take turns, so every split is balanced. A training set for
    specificity can ask for more normal slices: then each image is "No Tumor" with probability
    ``negative_share`` and else a tumour class, still in turn.
    """
    if negative_share is None:
        return CLASS_NAMES[index % len(CLASS_NAMES)]
    if np.random.default_rng([seed, SPLITS.index(split), index, 2]).random() < negative_share:
        return "No Tumor"
    tumours = [name for name in CLASS_NAMES if name != "No Tumor"]
    return tumours[index % len(tumours)]


def make_sample(
    seed: int,
    split: str,
    index: int,
    size: int,
    negative_share: float | None = None,
    mimic_share: float = 0.0,
) -> Sample:
    """The sample at ``index`` of ``split``: a pure function of its arguments."""
    anatomies = _ANATOMY.get(split)
    if anatomies is None:
        _init_worker(split)
        anatomies = _ANATOMY[split]
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    label = class_of(seed, split, index, negative_share)
    outer_p = 0.0 if split == "test" else OUTER_NEGATIVE_P
    mimic_rng = np.random.default_rng([seed, SPLITS.index(split), index, 3])
    for _ in range(50):
        sample = render(anatomies, label, rng, size, outer_p, mimic_rng, mimic_share)
        if sample is not None:
            return sample
    raise RuntimeError(f"could not place a {label} lesion for sample {index}")


def _write(job: tuple[Path, int, str, int, int, float | None, float]) -> dict[str, object]:
    out, seed, split, index, size, negative_share, mimic_share = job
    sample = make_sample(seed, split, index, size, negative_share, mimic_share)
    rng = np.random.default_rng([seed, SPLITS.index(split), index, 1])
    stem = f"{split}_{index:06d}"
    image = Image.fromarray(sample.image)
    if rng.random() < 0.4:
        # JPEG artefacts, as in the public data set's images.
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(45, 96)))
        (out / "images" / split / f"{stem}.jpg").write_bytes(buffer.getvalue())
    else:
        image.save(out / "images" / split / f"{stem}.png", optimize=False)
    line = ""  # a background image (no brain to box) has an empty label file
    if sample.box is not None:
        x1, y1, x2, y2 = sample.box
        line = (
            f"{sample.class_id} {(x1 + x2) / 2 / size:.6f} {(y1 + y2) / 2 / size:.6f} "
            f"{(x2 - x1) / size:.6f} {(y2 - y1) / size:.6f}\n"
        )
    (out / "labels" / split / f"{stem}.txt").write_text(line)
    return {"file": stem, "class": CLASS_NAMES[sample.class_id], **sample.meta}


def write_dataset(
    out: Path,
    counts: dict[str, int],
    seed: int,
    size: int,
    workers: int,
    negative_share: float | None = None,
    mimic_share: float = 0.0,
) -> Path:
    """Write the data set under ``out``; returns the path of dataset.yaml.

    ``negative_share`` (see ``class_of``) and ``mimic_share`` (the share of images given tumour
    mimics, see mimics.py) apply to the training split only: validation and test stay as they
    are, so their scores compare across data sets.
    """
    out.mkdir(parents=True, exist_ok=True)
    for split, count in counts.items():
        for kind in ("images", "labels"):
            folder = out / kind / split
            if count > 0 and folder.is_dir() and any(folder.iterdir()):
                raise FileExistsError(
                    f"{folder} already holds files; choose an empty --out so the data set "
                    "matches its seed"
                )
    anatomy_used: set[str] = set()
    for split, count in counts.items():
        if count <= 0:
            continue
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        share = negative_share if split == "train" else None
        mimic = mimic_share if split == "train" else 0.0
        jobs = [(out, seed, split, i, size, share, mimic) for i in range(count)]
        if workers > 1:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(workers, initializer=_init_worker, initargs=(split,)) as pool:
                records = pool.map(_write, jobs, chunksize=8)
        else:
            records = [_write(job) for job in jobs]
        with (out / f"{split}_meta.jsonl").open("w") as handle:
            for record in records:
                handle.write(json.dumps(record) + "\n")
        anatomy_used.update(str(record["anatomy"]) for record in records)
        print(f"{split}: {count} images", file=sys.stderr)
    yaml_path = out / "dataset.yaml"
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(CLASS_NAMES))
    yaml_path.write_text(
        f"# mriscribe synthetic data, seed {seed}, anatomy: {', '.join(sorted(anatomy_used))}\n"
        f"path: {out.resolve()}\ntrain: images/train\nval: images/val\ntest: images/test\n"
        f"names:\n{names}\n"
    )
    return yaml_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--n", type=int, required=True, help="number of training images")
    parser.add_argument("--n-val", type=int, default=None, help="validation images (n/8)")
    parser.add_argument("--n-test", type=int, default=None, help="held-out test images (n/5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--workers", type=int, default=max(1, multiprocessing.cpu_count()))
    parser.add_argument(
        "--negative-share",
        type=float,
        default=None,
        help="share of normal ('No Tumor') training images (default: classes in turn, 0.25)",
    )
    parser.add_argument(
        "--mimics",
        type=float,
        default=0.0,
        help="share of training images given tumour mimics: cut-off cortex, CSF spaces (0)",
    )
    args = parser.parse_args(argv)
    if args.negative_share is not None and not 0.0 <= args.negative_share <= 1.0:
        parser.error("--negative-share must be between 0 and 1")
    if not 0.0 <= args.mimics <= 1.0:
        parser.error("--mimics must be between 0 and 1")
    counts = {
        "train": args.n,
        "val": args.n // 8 if args.n_val is None else args.n_val,
        "test": args.n // 5 if args.n_test is None else args.n_test,
    }
    try:
        path = write_dataset(
            args.out, counts, args.seed, args.size, args.workers, args.negative_share, args.mimics
        )
    except (FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
