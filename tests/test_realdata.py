"""The real-data set builder: its split by series group, a small build, and augmented boxes."""

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scipy", reason="the 'synth' extra is not installed")
pytest.importorskip("nibabel", reason="the 'synth' extra is not installed")

from mriscribe.training.anatomy import SOURCES
from mriscribe.training.realdata import (
    MIN_VAL_SHARE,
    REPO_ROOT,
    _check_out,
    augment,
    augment_geometry,
    build,
    crop_around,
    figshare_dir,
    read_index,
    rendered_counts,
    split_real,
    validation_images,
)
from mriscribe.training.synth import CLASS_NAMES

DATA = figshare_dir()
needs_figshare = pytest.mark.skipif(
    not (DATA / "index.csv").is_file(),
    reason=f"figshare T1-CE not found at {DATA} (set MRISCRIBE_FIGSHARE_DIR)",
)
needs_anatomy = pytest.mark.skipif(
    not any(s.available() for s in SOURCES if s.split == "train"),
    reason="packaged training anatomy missing: apt-get install insighttoolkit5-examples; "
    "pip install nilearn",
)


@pytest.fixture(scope="module")
def slices():
    return read_index(DATA)


@needs_figshare
def test_split_keeps_series_groups_whole_and_validation_out_of_training(slices):
    split = split_real(slices, seed=0)
    parts = {name: split.part(name) for name in ("train", "val", "guard")}
    groups = {name: {s.group for s in part} for name, part in parts.items()}
    assert not groups["train"] & groups["val"]
    assert not groups["guard"] & (groups["train"] | groups["val"])
    images = {name: {s.image for s in part} for name, part in parts.items()}
    assert not images["train"] & images["val"]
    assert sum(len(part) for part in parts.values()) == len(slices)
    # The groups left out are the validation blocks' neighbours only: a few per class.
    assert len(parts["guard"]) < 0.1 * len(slices)


@needs_figshare
def test_every_class_has_a_contiguous_block_of_at_least_15_percent(slices):
    for seed in range(4):
        split = split_real(slices, seed=seed)
        totals = Counter(s.class_name for s in slices)
        val = Counter(s.class_name for s in split.part("val"))
        for name, total in totals.items():
            assert MIN_VAL_SHARE <= val[name] / total <= 0.2 + 0.05 + 1e-9, (seed, name)
            # One run of the class's groups, in release order: no gaps.
            order = sorted({s.group for s in slices if s.class_name == name})
            chosen = [order.index(g) for g in split.val_groups if g in order]
            assert sorted(chosen) == list(range(min(chosen), max(chosen) + 1))


@needs_figshare
def test_split_is_deterministic_for_a_seed(slices):
    first, again = split_real(slices, seed=3), split_real(slices, seed=3)
    assert first.to_json() == again.to_json()
    assert {split_real(slices, seed=s).val_groups for s in range(5)} != {first.val_groups}
    assert validation_images(DATA, None, seed=3) == [s.image for s in first.part("val")]
    with pytest.raises(ValueError):
        split_real(slices, val_share=0.1)  # below the 15 % every class must keep


def test_rendered_images_take_their_shares_of_the_training_split():
    counts = rendered_counts(600, synthetic_share=0.15, normal_share=0.25)
    total = 600 + counts["synthetic"] + counts["normal"]
    assert counts == {"normal": 250, "synthetic": 150} and total == 1000
    with pytest.raises(ValueError):
        rendered_counts(600, 0.6, 0.5)


def _read_labels(folder: Path) -> dict[str, list[list[float]]]:
    return {
        p.stem: [[float(v) for v in line.split()] for line in p.read_text().splitlines()]
        for p in folder.glob("*.txt")
    }


@needs_figshare
@needs_anatomy
def test_small_build_writes_valid_yolo_labels_and_keeps_validation_apart(tmp_path: Path):
    out = tmp_path / "real"
    yaml_path = build(out, DATA, seed=0, limit=20, imgsz=256, synthetic_share=0.15)
    names = [line.split(": ")[1] for line in yaml_path.read_text().splitlines() if "  " in line]
    assert names == list(CLASS_NAMES)
    split = json.loads((out / "split.json").read_text())
    train_labels = _read_labels(out / "labels" / "train")
    val_labels = _read_labels(out / "labels" / "val")
    for labels in (train_labels, val_labels):
        for lines in labels.values():
            for class_id, cx, cy, w, h in lines:
                assert class_id in range(len(CLASS_NAMES))
                assert 0 < w <= 1 and 0 < h <= 1
                assert cx - w / 2 >= 0 and cx + w / 2 <= 1 + 1e-6
                assert cy - h / 2 >= 0 and cy + h / 2 <= 1 + 1e-6
    images = {p.stem for p in (out / "images" / "train").iterdir()}
    assert images == set(train_labels)
    # Validation: real slices of the block only, never in training (nor their copies).
    assert set(val_labels) <= set(split["val"])
    sources = {stem.split("_a")[0] for stem in images if stem.startswith("fig")}
    assert sources <= set(split["train"]) and not sources & set(split["val"])
    kinds = Counter(stem.split("_")[0] if not stem.startswith("fig") else "real" for stem in images)
    assert kinds["normal"] > 0 and kinds["synthetic"] > 0 and kinds["real"] > 0
    records = [json.loads(line) for line in (out / "train_meta.jsonl").open()]
    assert {r["modality"] for r in records if r["source"] == "normal"} == {"T1CE"}
    assert "T1CE" not in {r["modality"] for r in records if r["source"] == "synthetic"}
    assert "colin27" not in {r.get("anatomy") for r in records}  # held-out test anatomy
    assert validation_images(DATA, out / "split.json") == split["val"]
    # The same seed writes the same files, whatever the worker count.
    build(tmp_path / "again", DATA, seed=0, limit=20, imgsz=256, synthetic_share=0.15, workers=2)
    assert _digest(tmp_path / "again") == _digest(out)


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "dataset.yaml"
    }


@needs_figshare
def test_real_images_are_copied_into_the_output_folder_only(tmp_path: Path):
    build(tmp_path / "real", DATA, seed=0, limit=6, synthetic_share=0, normal_share=0)
    copied = list((tmp_path / "real" / "images").rglob("fig*.jpg"))
    assert copied
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in copied}
    skip = {".venv", ".git", "data", ".cache", "runs", "node_modules"}
    for folder, subfolders, files in os.walk(REPO_ROOT):
        subfolders[:] = [name for name in subfolders if name not in skip]
        for name in files:
            if name.lower().endswith((".jpg", ".jpeg")):
                path = Path(folder) / name
                assert hashlib.sha256(path.read_bytes()).hexdigest() not in digests, path
    # A folder the repository would track is refused before anything is written.
    if (REPO_ROOT / ".git").exists():
        tracked = REPO_ROOT / "tests" / "real-data-here"
        with pytest.raises(ValueError, match="git-ignored"):
            _check_out(tracked)
        assert not tracked.exists()


def _ellipse(shape: tuple[int, int], centre: tuple[float, float], axes: tuple[float, float]):
    rows, cols = np.indices(shape)
    mask = ((rows - centre[0]) / axes[0]) ** 2 + ((cols - centre[1]) / axes[1]) ** 2 <= 1
    ys, xs = np.nonzero(mask)
    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    return mask, box


def _box_of(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def _iou(a, b) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_augmented_box_stays_on_a_rotated_zoomed_lesion():
    # A bright elliptical "lesion" near the edge; its box must follow it through rotation,
    # zoom and shift, and the whole lesion must stay in view and inside the box.
    mask, box = _ellipse((256, 256), (60.0, 190.0), (18.0, 30.0))
    for seed in range(25):
        image = np.where(mask, 1.0, 0.1).astype(np.float32)
        warped, moved = augment_geometry(image, box, np.random.default_rng(seed))
        lesion = warped > 0.55
        truth = _box_of(lesion)
        assert lesion.sum() > 0.6 * mask.sum()
        assert _iou(moved, truth) > 0.9, seed
        assert moved[0] <= truth[0] + 1 and moved[1] <= truth[1] + 1
        assert moved[2] >= truth[2] - 1 and moved[3] >= truth[3] - 1
        assert 0 <= moved[0] < moved[2] <= 256 and 0 <= moved[1] < moved[3] <= 256


@pytest.mark.parametrize("centre", [(200.0, 40.0), (250.0, 3.0)])  # the second at the edge
def test_crop_keeps_the_whole_lesion_and_shifts_its_box(centre):
    mask, box = _ellipse((256, 256), centre, (20.0, 15.0))
    for seed in range(25):
        cropped, moved = crop_around(mask.astype(np.float32), box, np.random.default_rng(seed))
        assert cropped.sum() == mask.sum()  # nothing of the lesion cut off
        assert _box_of(cropped > 0.5) == pytest.approx(moved)
        assert cropped.shape[0] >= 0.6 * 256 - 1 and cropped.shape[1] >= 0.6 * 256 - 1


def test_augmented_copy_is_deterministic_and_boxes_the_lesion():
    mask, box = _ellipse((256, 256), (128.0, 100.0), (25.0, 25.0))
    pixels = np.where(mask, 220, 60).astype(np.uint8)
    first = augment(pixels, box, np.random.default_rng(7))
    again = augment(pixels, box, np.random.default_rng(7))
    assert np.array_equal(first[0], again[0]) and first[1] == again[1]
    for seed in range(10):
        image, (x1, y1, x2, y2) = augment(pixels, box, np.random.default_rng(seed))
        assert image.dtype == np.uint8
        assert 0 <= x1 < x2 <= image.shape[1] and 0 <= y1 < y2 <= image.shape[0]
        inside = image[int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))]
        # The lesion is the brightest thing in the image, and it sits inside the box.
        assert np.percentile(inside, 75) > np.percentile(image, 75)
