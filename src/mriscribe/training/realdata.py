"""A YOLO data set built from real contrast-enhanced T1 MRI, real-looking normal heads and lesions.

    python -m mriscribe.training.realdata --out data/real --seed 0 [--data DIR] [--val-share 0.2]
        [--synthetic-share 0.15] [--normal-share 0.25] [--augment 1] [--imgsz 512] [--limit N]

writes OUT/images/{train,val}, OUT/labels/{train,val}, OUT/dataset.yaml (classes Glioma,
Meningioma, No Tumor, Pituitary), OUT/split.json and OUT/{train,val}_meta.jsonl from:

- the real slices of figshare T1-CE (``--data``, else $MRISCRIBE_FIGSHARE_DIR, else
  ``../shared/data/figshare-t1ce`` beside the repository). Validation is one contiguous block of
  ``series_group``s per class (``split_real``), and the group on each side of a block is left out
  of both splits; training gets ``--augment`` extra copies of each of its real images (rotation,
  zoom, shift, crop, then the generator's bias field, blur, resolution loss, noise and gamma, then
  JPEG again). The real images are copied into OUT only: never elsewhere, never the repository.
- ``No Tumor`` images of the packaged normal training heads (``--normal-share`` of the training
  images; Colin27 stays held out), rendered like the real data: contrast-enhanced T1, never
  skull-stripped, 0.49 mm pixels at 512 px, all three planes, JPEG at the real files' quality,
  with the generator's hard negatives (skull base, orbits, vertex) and tumour mimics.
- the generator's synthetic lesions and normal slices in T1, T2 and FLAIR (``--synthetic-share``).

Each file depends only on the seed and its own name, so any worker count writes the same set.
``--limit N`` keeps N real slices (both splits) for a quick trial.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from mriscribe.training.anatomy import Anatomy, load_split
from mriscribe.training.contrast import MODALITIES, MODALITY_WEIGHTS, acquire
from mriscribe.training.synth import (
    CLASS_NAMES,
    OUTER_NEGATIVE_P,
    Look,
    Sample,
    class_of,
    render,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
FIGSHARE_ENV = "MRISCRIBE_FIGSHARE_DIR"
DEFAULT_FIGSHARE = REPO_ROOT.parent / "shared" / "data" / "figshare-t1ce"

MIN_VAL_SHARE = 0.15  # every class keeps at least this share of its images in validation
BLOCK_SLACK = 0.05  # a validation block may overshoot its share by this much
MAX_GROUP_SHARE = 0.5  # no one series group may be more than half a class's validation block

# The released figshare JPEGs: 512 px at 0.49 mm, libjpeg quality 75 (their quantisation tables).
REAL_SIZE = 512
REAL_PIXEL_MM = 0.49
REAL_JPEG_QUALITY = 75

# The released JPEGs are windowed: black background, mid-grey brain (about 0.4 of the bright
# fat and enhancement), brightest grey 150-230. Half the normal images get that window, the
# other half keep the generator's acquisition look, as the real training images' augmented
# copies do (one copy each by default).
DISPLAY_P = 0.5
DISPLAY_GAMMA = (1.3, 2.0)
DISPLAY_TOP = (150.0, 230.0)

NORMAL_MIMIC_SHARE = 0.5  # real-looking normal images given tumour mimics (mimics.py)
SYNTHETIC_MIMIC_SHARE = 0.3
OTHER_CONTRASTS = tuple(m for m in MODALITIES if m != "T1CE")

# Augmented copies of real training images: what Ultralytics' train-time augmentation lacks
# (it flips, scales, shifts, rotates 5 degrees and jitters brightness; see train.py).
ROTATION_DEG = 15.0
ZOOM = (0.8, 1.25)  # > 1 zooms in: a crop of the field of view
MAX_SHIFT = 0.12  # of the image side
CROP_P = 0.3  # odds of a rectangular crop around the lesion (a non-square image)
CROP_SIDE = (0.6, 1.0)
JPEG_QUALITY = (30, 95)

# Keys that keep each kind of file's random numbers apart (synth uses 0-2 for its splits).
_KEYS = {"augment": 101, "normal": 102, "synthetic": 103, "split": 104}

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels


@dataclass(frozen=True)
class RealSlice:
    """One released figshare slice: its file stem, class and series group."""

    image: str
    figshare_index: int
    class_name: str
    group: int


@dataclass(frozen=True)
class Split:
    """Which real slices validate, which train, and which (beside a block) are left out."""

    seed: int
    val_share: float
    val_groups: frozenset[int]
    guard_groups: frozenset[int]
    slices: tuple[RealSlice, ...]

    def part(self, name: str) -> list[RealSlice]:
        """The slices of ``name``: "train", "val" or "guard" (in neither split)."""
        if name == "val":
            return [s for s in self.slices if s.group in self.val_groups]
        if name == "guard":
            return [s for s in self.slices if s.group in self.guard_groups]
        left_out = self.val_groups | self.guard_groups
        return [s for s in self.slices if s.group not in left_out]

    def to_json(self) -> dict[str, object]:
        classes = {}
        for name in sorted({s.class_name for s in self.slices}):
            total = sum(s.class_name == name for s in self.slices)
            val = [s for s in self.part("val") if s.class_name == name]
            classes[name] = {
                "images": total,
                "val_images": len(val),
                "val_share": round(len(val) / total, 4),
                "val_groups": sorted({s.group for s in val}),
                "guard_groups": sorted(
                    {s.group for s in self.part("guard") if s.class_name == name}
                ),
            }
        return {
            "seed": self.seed,
            "val_share": self.val_share,
            "classes": classes,
            **{part: [s.image for s in self.part(part)] for part in ("val", "train", "guard")},
        }


def figshare_dir(path: Path | None = None) -> Path:
    """The figshare T1-CE folder: ``path``, else $MRISCRIBE_FIGSHARE_DIR, else beside the repo."""
    if path is not None:
        return path
    override = os.environ.get(FIGSHARE_ENV)
    return Path(override) if override else DEFAULT_FIGSHARE


def read_index(data: Path) -> list[RealSlice]:
    """The slices listed in ``data``/index.csv, in release order."""
    index = data / "index.csv"
    if not index.is_file():
        raise FileNotFoundError(
            f"{index} not found: point --data or ${FIGSHARE_ENV} at the figshare T1-CE folder"
        )
    with index.open(newline="") as handle:
        return [
            RealSlice(
                row["image"], int(row["figshare_index"]), row["class"], int(row["series_group"])
            )
            for row in csv.DictReader(handle)
        ]


def _groups_of(slices: list[RealSlice], class_name: str) -> tuple[list[int], list[int]]:
    """The class's series groups in release order, with their sizes."""
    sizes = Counter(s.group for s in slices if s.class_name == class_name)
    groups = sorted(sizes)
    return groups, [sizes[g] for g in groups]


def _block_candidates(sizes: list[int], target: float, minimum: float) -> list[tuple[int, int]]:
    """Every run of groups [start, stop) holding at least ``target`` images, from each start."""
    total = sum(sizes)
    blocks = []
    for start in range(len(sizes)):
        count, stop = 0, start
        while stop < len(sizes) and count < target:
            count += sizes[stop]
            stop += 1
        if count >= max(target, minimum) and max(sizes[start:stop]) <= MAX_GROUP_SHARE * count:
            blocks.append((start, stop))
    if not blocks:
        raise ValueError(f"no block of groups holds {target / total:.0%} of a class")
    return blocks


def _val_block(sizes: list[int], val_share: float, rng: np.random.Generator) -> tuple[int, int]:
    """One contiguous block of groups holding about ``val_share`` of the images."""
    total = sum(sizes)
    blocks = _block_candidates(sizes, val_share * total, MIN_VAL_SHARE * total)
    share = [sum(sizes[a:b]) / total for a, b in blocks]
    close = [block for block, s in zip(blocks, share, strict=True) if s <= val_share + BLOCK_SLACK]
    pool = close or [blocks[int(np.argmin(share))]]
    return pool[int(rng.integers(len(pool)))]


def split_real(
    slices: list[RealSlice], seed: int = 0, val_share: float = 0.2, guard: int = 1
) -> Split:
    """Validation: per class, one contiguous block of whole series groups (release order).

    Neighbouring slices are near duplicates and one patient's series often lie side by side,
    so images are never drawn one by one: the seed picks where each class's block starts among
    the blocks holding ``val_share`` (at least 15 %) of its images, none of them more than half
    one group. The ``guard`` groups on each side of a block (same class) go to neither split.
    """
    if not MIN_VAL_SHARE <= val_share < 0.5:
        raise ValueError(f"the validation share must be in [{MIN_VAL_SHARE}, 0.5)")
    val, guarded = set(), set()
    for number, class_name in enumerate(sorted({s.class_name for s in slices})):
        groups, sizes = _groups_of(slices, class_name)
        rng = np.random.default_rng([seed, _KEYS["split"], number])
        start, stop = _val_block(sizes, val_share, rng)
        val.update(groups[start:stop])
        guarded.update(groups[max(0, start - guard) : start] + groups[stop : stop + guard])
    return Split(seed, val_share, frozenset(val), frozenset(guarded), tuple(slices))


def validation_images(
    data: Path, split_file: Path | None = None, seed: int = 0, val_share: float = 0.2
) -> list[str]:
    """The validation block's image stems: from a builder's split.json, else recomputed."""
    if split_file is not None and split_file.is_file():
        return list(json.loads(split_file.read_text())["val"])
    return [s.image for s in split_real(read_index(data), seed, val_share).part("val")]


# ---- augmentation ---------------------------------------------------------------------------


def transform_box(box: Box, forward: np.ndarray, shift: np.ndarray, centre: np.ndarray) -> Box:
    """The box of the ellipse inscribed in ``box`` after ``o = forward (i - centre) + centre +
    shift`` ((row, col) pixel coordinates).

    Rotating a box's corners overstates a round lesion's box by up to 41 %; the inscribed
    ellipse is exact for an elliptical lesion and close for a real tumour outline.
    """
    x1, y1, x2, y2 = box
    middle = np.array([(y1 + y2) / 2 - 0.5, (x1 + x2) / 2 - 0.5])  # pixel-centre coordinates
    half = np.array([(y2 - y1) / 2, (x2 - x1) / 2])
    moved = forward @ (middle - centre) + centre + shift
    reach = np.hypot(forward[:, 0] * half[0], forward[:, 1] * half[1])
    return (
        float(moved[1] + 0.5 - reach[1]),
        float(moved[0] + 0.5 - reach[0]),
        float(moved[1] + 0.5 + reach[1]),
        float(moved[0] + 0.5 + reach[0]),
    )


def _rotation(angle: float) -> np.ndarray:
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def _shift_keeping(box: Box, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random (row, col) shift of up to MAX_SHIFT that keeps ``box`` inside the frame."""
    x1, y1, x2, y2 = box
    shift = []
    for low_edge, high_edge, side in ((y1, y2, shape[0]), (x1, x2, shape[1])):
        low = max(-MAX_SHIFT * side, -low_edge)
        high = min(MAX_SHIFT * side, side - high_edge)
        shift.append(rng.uniform(low, high) if low < high else (low + high) / 2)
    return np.array(shift)


def augment_geometry(
    pixels: np.ndarray, box: Box, rng: np.random.Generator
) -> tuple[np.ndarray, Box]:
    """Rotate (+-15 degrees), zoom (0.8-1.25) and shift a grey image, keeping the box in view."""
    shape = pixels.shape
    centre = (np.array(shape, dtype=np.float64) - 1) / 2
    angle = np.deg2rad(rng.uniform(-ROTATION_DEG, ROTATION_DEG))
    zoom = float(np.exp(rng.uniform(*np.log(ZOOM))))
    for _ in range(20):  # zoom out until the lesion's box fits the frame
        forward = zoom * _rotation(angle)
        moved = transform_box(box, forward, np.zeros(2), centre)
        if moved[2] - moved[0] <= 0.95 * shape[1] and moved[3] - moved[1] <= 0.95 * shape[0]:
            break
        zoom *= 0.9
    shift = _shift_keeping(moved, shape, rng)
    inverse = np.linalg.inv(forward)
    offset = centre - inverse @ (centre + shift)
    warped = ndimage.affine_transform(pixels, inverse, offset, order=1, mode="constant")
    return warped, clip_box(transform_box(box, forward, shift, centre), shape)


def clip_box(box: Box, shape: tuple[int, int]) -> Box:
    """``box`` clipped to an image of ``shape`` (rows, cols)."""
    x1, y1, x2, y2 = box
    return (max(0.0, x1), max(0.0, y1), min(float(shape[1]), x2), min(float(shape[0]), y2))


def crop_around(pixels: np.ndarray, box: Box, rng: np.random.Generator) -> tuple[np.ndarray, Box]:
    """A random rectangle of 60-100 % of each side that holds the whole box."""
    x1, y1, x2, y2 = box
    origin, sides = [], []
    for low_edge, high_edge, side in ((y1, y2, pixels.shape[0]), (x1, x2, pixels.shape[1])):
        length = int(min(side, max(rng.uniform(*CROP_SIDE) * side, high_edge - low_edge + 8)))
        first = max(0, int(np.ceil(high_edge + 4)) - length)
        last = min(side - length, int(np.floor(low_edge - 4)))
        if first <= last:
            start = int(rng.integers(first, last + 1))
        else:  # no room for the margin: centre on the box, inside the image
            start = int(np.clip(round((low_edge + high_edge - length) / 2), 0, side - length))
        origin.append(start)
        sides.append(length)
    (top, left), (height, width) = origin, sides
    cropped = pixels[top : top + height, left : left + width]
    return cropped, clip_box((x1 - left, y1 - top, x2 - left, y2 - top), cropped.shape)


def augment(pixels: np.ndarray, box: Box, rng: np.random.Generator) -> tuple[np.ndarray, Box]:
    """An augmented copy of a real grey uint8 image and its lesion box (before JPEG)."""
    image = pixels.astype(np.float32) / 255.0
    image, box = augment_geometry(image, box, rng)
    if rng.random() < CROP_P:
        image, box = crop_around(image, box, rng)
    return acquire(image, rng), box  # bias field, blur, resolution loss, noise, gamma


# ---- writing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One file to write: a real slice (``name``) or a rendered image (``index``)."""

    kind: str  # "real", "augment", "normal" or "synthetic"
    split: str
    out: Path
    data: Path
    seed: int
    imgsz: int
    name: str = ""
    index: int = 0


_ANATOMY: list[Anatomy] = []


def _anatomies() -> list[Anatomy]:
    if not _ANATOMY:
        _ANATOMY.extend(load_split("train"))  # Colin27 is test anatomy: never loaded here
    return _ANATOMY


def yolo_line(class_id: int, box: Box | None, width: int, height: int) -> str:
    """One YOLO label line (empty for a background image with no box)."""
    if box is None:
        return ""
    x1, y1, x2, y2 = box
    return (
        f"{class_id} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
        f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}\n"
    )


def read_real_label(data: Path, name: str, width: int, height: int) -> tuple[int, Box]:
    """The one YOLO box of a figshare slice, in pixels."""
    class_id, cx, cy, w, h = (
        float(v) for v in (data / "labels" / f"{name}.txt").read_text().split()
    )
    box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
    return int(class_id), clip_box(box, (height, width))


def _jpeg(image: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _save(job: Job, stem: str, payload: bytes, suffix: str, label: str) -> None:
    (job.out / "images" / job.split / f"{stem}{suffix}").write_bytes(payload)
    (job.out / "labels" / job.split / f"{stem}.txt").write_text(label)


def _write_real(job: Job) -> dict[str, object]:
    source = job.data / "images" / f"{job.name}.jpg"
    label = (job.data / "labels" / f"{job.name}.txt").read_text()
    if job.imgsz == REAL_SIZE:
        shutil.copyfile(source, job.out / "images" / job.split / source.name)
        (job.out / "labels" / job.split / f"{job.name}.txt").write_text(label)
    else:
        with Image.open(source) as image:
            small = image.convert("L").resize((job.imgsz, job.imgsz), Image.Resampling.LANCZOS)
        _save(job, job.name, _jpeg(np.asarray(small), REAL_JPEG_QUALITY), ".jpg", label)
    return {"file": job.name, "class": CLASS_NAMES[int(label.split()[0])], "source": "real"}


def _write_augmented(job: Job) -> dict[str, object]:
    with Image.open(job.data / "images" / f"{job.name}.jpg") as image:
        pixels = np.asarray(image.convert("L").resize((job.imgsz, job.imgsz)))
    class_id, box = read_real_label(job.data, job.name, job.imgsz, job.imgsz)
    number = int(job.name.removeprefix("fig"))
    rng = np.random.default_rng([job.seed, _KEYS["augment"], number, job.index])
    image, box = augment(pixels, box, rng)
    quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
    stem = f"{job.name}_a{job.index}"
    label = yolo_line(class_id, box, image.shape[1], image.shape[0])
    _save(job, stem, _jpeg(image, quality), ".jpg", label)
    return {"file": stem, "class": CLASS_NAMES[class_id], "source": "real-augmented"}


def real_look(imgsz: int) -> Look:
    """Contrast-enhanced T1 with skull, at the real data's pixel size."""
    return Look(("T1CE",), (1.0,), strip_p=0.0, pixel_mm=REAL_PIXEL_MM * REAL_SIZE / imgsz)


def other_contrasts() -> Look:
    """T1, T2 and FLAIR in the generator's proportions."""
    weights = [MODALITY_WEIGHTS[MODALITIES.index(m)] for m in OTHER_CONTRASTS]
    return Look(OTHER_CONTRASTS, tuple(w / sum(weights) for w in weights))


def _render(job: Job, label: str, look: Look, mimic_share: float) -> Sample:
    rng = np.random.default_rng([job.seed, _KEYS[job.kind], job.index])
    mimic_rng = np.random.default_rng([job.seed, _KEYS[job.kind], job.index, 3])
    for _ in range(50):
        sample = render(
            _anatomies(), label, rng, job.imgsz, OUTER_NEGATIVE_P, mimic_rng, mimic_share, look
        )
        if sample is not None:
            return sample
    raise RuntimeError(f"could not render a {label} image for {job.kind} {job.index}")


def real_display(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Window a rendered uint8 image like the released JPEGs (see DISPLAY_P)."""
    image = pixels.astype(np.float32)
    rim = max(1, min(image.shape) // 16)
    border = np.concatenate(
        [image[:rim].ravel(), image[-rim:].ravel(), image[:, :rim].ravel(), image[:, -rim:].ravel()]
    )
    floor = float(np.percentile(border, 75)) * rng.uniform(0.3, 1.2)
    top = max(float(np.percentile(image, 99.5)) - floor, 1.0)
    image = np.clip((image - floor) / top, 0.0, None) ** rng.uniform(*DISPLAY_GAMMA)
    return np.clip(image * rng.uniform(*DISPLAY_TOP) + 0.5, 0, 255).astype(np.uint8)


def _write_rendered(job: Job) -> dict[str, object]:
    if job.kind == "normal":
        sample = _render(job, "No Tumor", real_look(job.imgsz), NORMAL_MIMIC_SHARE)
        rng = np.random.default_rng([job.seed, _KEYS[job.kind], job.index, 1])
        image = real_display(sample.image, rng) if rng.random() < DISPLAY_P else sample.image
        payload, suffix = _jpeg(image, REAL_JPEG_QUALITY), ".jpg"
    else:
        label = class_of(job.seed, "train", job.index)
        sample = _render(job, label, other_contrasts(), SYNTHETIC_MIMIC_SHARE)
        payload, suffix = _synthetic_file(sample.image, job)
    stem = f"{job.kind}_{job.index:06d}"
    _save(job, stem, payload, suffix, yolo_line(sample.class_id, sample.box, job.imgsz, job.imgsz))
    return {"file": stem, "class": CLASS_NAMES[sample.class_id], "source": job.kind, **sample.meta}


def _synthetic_file(image: np.ndarray, job: Job) -> tuple[bytes, str]:
    """As synth writes them: 40 % JPEG at quality 45-95, else PNG."""
    rng = np.random.default_rng([job.seed, _KEYS[job.kind], job.index, 1])
    if rng.random() < 0.4:
        return _jpeg(image, int(rng.integers(45, 96))), ".jpg"
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue(), ".png"


def _run(job: Job) -> dict[str, object]:
    writer = {"real": _write_real, "augment": _write_augmented}.get(job.kind, _write_rendered)
    return {"split": job.split, **writer(job)}


# ---- the data set ---------------------------------------------------------------------------


def rendered_counts(real_train: int, synthetic_share: float, normal_share: float) -> dict[str, int]:
    """How many normal and synthetic images join ``real_train`` real training images so that
    they make up those shares of the training split."""
    if synthetic_share < 0 or normal_share < 0 or synthetic_share + normal_share >= 1:
        raise ValueError("the synthetic and normal shares must be >= 0 and sum to less than 1")
    total = real_train / (1.0 - synthetic_share - normal_share)
    return {"normal": round(normal_share * total), "synthetic": round(synthetic_share * total)}


def _evenly(items: list[RealSlice], count: int) -> list[RealSlice]:
    """``count`` items spread evenly over ``items`` (for small trial builds)."""
    if count >= len(items):
        return items
    return [items[int(i * len(items) / count)] for i in range(count)]


def _check_out(out: Path) -> None:
    """Refuse a non-empty folder, and a folder inside the repository that git would track."""
    if out.is_dir() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose an empty --out")
    target = out.resolve()
    if not (REPO_ROOT / ".git").exists() or not target.is_relative_to(REPO_ROOT):
        return
    probe = target / "images" / "fig0001.jpg"
    try:
        ignored = (
            subprocess.run(
                ["git", "-C", str(REPO_ROOT), "check-ignore", "-q", str(probe)], check=False
            ).returncode
            == 0
        )
    except OSError:
        return  # no git: nothing to ask
    if not ignored:
        raise ValueError(
            f"{out} is inside the repository and not git-ignored: the real images must never "
            "enter the repository (use data/..., which is ignored)"
        )


def _jobs(
    out: Path, data: Path, split: Split, config: dict[str, float | int], limit: int | None
) -> list[Job]:
    seed, imgsz, augment_copies = int(config["seed"]), int(config["imgsz"]), int(config["augment"])
    train, val = split.part("train"), split.part("val")
    if limit is not None:
        n_val = max(1, round(limit * len(val) / (len(val) + len(train))))
        train, val = _evenly(train, limit - n_val), _evenly(val, n_val)
    base = {"out": out, "data": data, "seed": seed, "imgsz": imgsz}
    jobs = [Job("real", "val", name=s.image, **base) for s in val]
    jobs += [Job("real", "train", name=s.image, **base) for s in train]
    jobs += [
        Job("augment", "train", name=s.image, index=k, **base)
        for s in train
        for k in range(1, augment_copies + 1)
    ]
    counts = rendered_counts(
        len(train) * (1 + augment_copies),
        float(config["synthetic_share"]),
        float(config["normal_share"]),
    )
    for kind in ("normal", "synthetic"):
        jobs += [Job(kind, "train", index=i, **base) for i in range(counts[kind])]
    return jobs


def build(
    out: Path,
    data: Path,
    seed: int = 0,
    val_share: float = 0.2,
    synthetic_share: float = 0.15,
    normal_share: float = 0.25,
    augment_copies: int = 1,
    imgsz: int = REAL_SIZE,
    workers: int = 1,
    limit: int | None = None,
) -> Path:
    """Write the data set under ``out``; returns the path of dataset.yaml.

    ``limit`` keeps that many real slices (spread over both splits) for a small trial build;
    the rendered images keep their shares of the smaller training split.
    """
    _check_out(out)
    split = split_real(read_index(data), seed, val_share)
    config = {
        "seed": seed,
        "imgsz": imgsz,
        "augment": augment_copies,
        "synthetic_share": synthetic_share,
        "normal_share": normal_share,
    }
    jobs = _jobs(out, data, split, config, limit)
    for kind in ("images", "labels"):
        for part in ("train", "val"):
            (out / kind / part).mkdir(parents=True, exist_ok=True)
    if any(job.kind in ("normal", "synthetic") for job in jobs):
        _anatomies()  # loaded once, before the workers fork
    records = _run_all(jobs, workers)
    for part in ("train", "val"):
        with (out / f"{part}_meta.jsonl").open("w") as handle:
            for record in records:
                if record["split"] == part:
                    handle.write(json.dumps(record) + "\n")
    (out / "split.json").write_text(json.dumps({**split.to_json(), **config}, indent=1) + "\n")
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(CLASS_NAMES))
    yaml_path = out / "dataset.yaml"
    yaml_path.write_text(
        f"# mriscribe real-data set, seed {seed}: figshare T1-CE (CC BY 4.0, Cheng 2017), "
        f"normal training heads, synthetic lesions\npath: {out.resolve()}\n"
        f"train: images/train\nval: images/val\nnames:\n{names}\n"
    )
    print(summary(records), file=sys.stderr)
    return yaml_path


def _run_all(jobs: list[Job], workers: int) -> list[dict[str, object]]:
    if workers <= 1:
        return [_run(job) for job in jobs]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(_run, jobs, chunksize=4)


def summary(records: list[dict[str, object]]) -> str:
    """Images per split, source and class, as a small table."""
    counts = Counter((r["split"], r["source"], r["class"]) for r in records)
    lines = [f"{'split':<6} {'source':<15} " + " ".join(f"{c:>10}" for c in CLASS_NAMES)]
    for part, source in sorted({(p, s) for p, s, _ in counts}, reverse=True):
        row = " ".join(f"{counts[(part, source, c)]:>10}" for c in CLASS_NAMES)
        lines.append(f"{part:<6} {source:<15} {row}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (empty)")
    parser.add_argument("--data", type=Path, default=None, help="figshare T1-CE folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-share", type=float, default=0.2, help="per class (>= 0.15)")
    parser.add_argument(
        "--synthetic-share", type=float, default=0.15, help="synthetic T1/T2/FLAIR images"
    )
    parser.add_argument(
        "--normal-share", type=float, default=0.25, help="real-looking normal images"
    )
    parser.add_argument("--augment", type=int, default=1, help="copies per real training image")
    parser.add_argument("--imgsz", type=int, default=REAL_SIZE, help="image side in pixels")
    parser.add_argument("--workers", type=int, default=max(1, multiprocessing.cpu_count()))
    parser.add_argument("--limit", type=int, default=None, help="real slices, for a trial")
    args = parser.parse_args(argv)
    if args.augment < 0 or args.imgsz < 64 or (args.limit is not None and args.limit < 2):
        parser.error("--augment must be >= 0, --imgsz >= 64 and --limit >= 2")
    try:
        path = build(
            args.out,
            figshare_dir(args.data),
            args.seed,
            args.val_share,
            args.synthetic_share,
            args.normal_share,
            args.augment,
            args.imgsz,
            args.workers,
            args.limit,
        )
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
