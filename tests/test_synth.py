"""The synthetic data generator: deterministic, YOLO-format, split by anatomy."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nibabel", reason="the 'synth' extra is not installed")
pytest.importorskip("scipy", reason="the 'synth' extra is not installed")

from mriscribe.training.anatomy import SOURCES
from mriscribe.training.synth import CLASS_NAMES, class_of, make_sample, write_dataset


def _installed(split: str) -> bool:
    return any(s.available() for s in SOURCES if s.split == split)


needs_anatomy = pytest.mark.skipif(
    not (_installed("train") and _installed("test")),
    reason="packaged anatomy missing: apt-get install mricron-data insighttoolkit5-examples; "
    "pip install nilearn",
)


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "dataset.yaml"
    }


def test_classes_take_turns_unless_more_normal_slices_are_asked_for():
    assert [class_of(0, "train", i) for i in range(8)] == list(CLASS_NAMES) * 2
    drawn = [class_of(9, "train", i, negative_share=0.45) for i in range(2000)]
    share = drawn.count("No Tumor") / len(drawn)
    assert 0.41 < share < 0.49
    tumours = [c for c in drawn if c != "No Tumor"]
    assert {c: tumours.count(c) for c in set(tumours)}.keys() == {
        "Glioma",
        "Meningioma",
        "Pituitary",
    }
    assert max(tumours.count(c) for c in set(tumours)) < 1.2 * min(
        tumours.count(c) for c in set(tumours)
    )
    # The same seed and index always give the same class.
    assert drawn == [class_of(9, "train", i, negative_share=0.45) for i in range(2000)]
    assert all(class_of(1, "train", i, negative_share=1.0) == "No Tumor" for i in range(50))
    assert "No Tumor" not in {class_of(1, "train", i, negative_share=0.0) for i in range(50)}


@needs_anatomy
def test_negative_share_changes_the_training_split_only(tmp_path: Path):
    write_dataset(tmp_path, {"train": 6, "val": 4}, seed=2, size=64, workers=1, negative_share=1.0)

    def classes(split: str) -> list[str]:
        lines = (tmp_path / f"{split}_meta.jsonl").read_text().splitlines()
        return [json.loads(line)["class"] for line in lines]

    assert classes("train") == ["No Tumor"] * 6
    assert classes("val") == list(CLASS_NAMES)


@needs_anatomy
def test_mimics_change_the_training_split_only(tmp_path: Path):
    counts = {"train": 8, "val": 4}
    write_dataset(tmp_path / "plain", counts, seed=5, size=64, workers=1)
    write_dataset(tmp_path / "mimics", counts, seed=5, size=64, workers=1, mimic_share=1.0)

    def validation(folder: Path) -> dict[str, str]:
        return {k: v for k, v in _digest(folder).items() if "/val/" in k or k.startswith("val")}

    assert validation(tmp_path / "plain") == validation(tmp_path / "mimics")
    records = [json.loads(line) for line in (tmp_path / "mimics" / "train_meta.jsonl").open()]
    assert any(r.get("mimics") for r in records)
    assert all(r["level"] == "outer" for r in records if not r.get("mimics"))


@needs_anatomy
def test_mimics_leave_the_rest_of_the_image_as_it_was():
    # Mimics draw from their own random stream: the slice, look, class and box stay the same.
    for index in range(2, 10):
        plain = make_sample(6, "train", index, 128)
        mimic = make_sample(6, "train", index, 128, mimic_share=1.0)
        if mimic.meta.get("mimics"):
            break
    else:
        pytest.fail("no mimic placed in 8 images")
    assert {k: v for k, v in mimic.meta.items() if k != "mimics"} == plain.meta
    assert mimic.class_id == plain.class_id
    assert not np.array_equal(mimic.image, plain.image)
    if CLASS_NAMES[plain.class_id] != "No Tumor":  # a tumour's box is the tumour's own
        assert mimic.box == plain.box


@needs_anatomy
def test_same_seed_same_files_whatever_the_worker_count(tmp_path: Path):
    counts = {"train": 8, "val": 0, "test": 4}
    write_dataset(tmp_path / "a", counts, seed=3, size=128, workers=1)
    write_dataset(tmp_path / "b", counts, seed=3, size=128, workers=2)
    write_dataset(tmp_path / "c", counts, seed=4, size=128, workers=1)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


@needs_anatomy
def test_refuses_to_mix_with_an_earlier_data_set(tmp_path: Path):
    write_dataset(tmp_path, {"train": 2}, seed=1, size=64, workers=1)
    before = _digest(tmp_path)
    with pytest.raises(FileExistsError, match="already holds files"):
        write_dataset(tmp_path, {"train": 2}, seed=2, size=64, workers=1)
    assert _digest(tmp_path) == before
    assert "anatomy: " in (tmp_path / "dataset.yaml").read_text()


@needs_anatomy
def test_labels_are_yolo_format_and_classes_balanced(tmp_path: Path):
    yaml_path = write_dataset(tmp_path, {"train": 8}, seed=1, size=128, workers=1)
    text = yaml_path.read_text()
    assert "train: images/train" in text and "3: Pituitary" in text
    meta = {
        record["file"]: record
        for record in map(json.loads, (tmp_path / "train_meta.jsonl").read_text().splitlines())
    }
    classes = []
    for label in sorted((tmp_path / "labels" / "train").glob("*.txt")):
        lines = label.read_text().splitlines()
        if not lines:  # a background image: only an outer-level "No Tumor" slice may have none
            assert meta[label.stem]["class"] == "No Tumor"
            assert meta[label.stem]["level"] == "outer"
            classes.append(2)
            continue
        assert len(lines) == 1
        cls, cx, cy, w, h = lines[0].split()
        classes.append(int(cls))
        assert all(0.0 < float(v) <= 1.0 for v in (cx, cy, w, h))
        image = next((tmp_path / "images" / "train").glob(label.stem + ".*"))
        assert image.suffix in (".png", ".jpg")
    assert sorted(classes) == [0, 0, 1, 1, 2, 2, 3, 3]


@needs_anatomy
def test_test_split_uses_only_anatomy_training_never_sees():
    train = {make_sample(0, "train", i, 96).meta["anatomy"] for i in range(12)}
    test = {make_sample(0, "test", i, 96).meta["anatomy"] for i in range(8)}
    assert test == {"colin27"}
    assert "colin27" not in train


@needs_anatomy
def test_lesions_are_sized_in_millimetres_and_boxed():
    for index, label in enumerate(CLASS_NAMES):
        sample = make_sample(5, "train", index, 256)
        assert CLASS_NAMES[sample.class_id] == label
        x1, y1, x2, y2 = sample.box
        assert 0 <= x1 < x2 <= 256 and 0 <= y1 < y2 <= 256
        if label == "No Tumor":
            assert sample.meta["diameter_mm"] is None
            assert (x2 - x1) > 100  # the whole brain
        else:
            assert 5.0 <= sample.meta["diameter_mm"] <= 60.0
            # The box is the lesion, not the slice.
            assert (x2 - x1) < 200 and (y2 - y1) < 200
        assert sample.image.dtype == np.uint8 and sample.image.std() > 10


@needs_anatomy
def test_negatives_include_slices_outside_the_brain_in_training_only():
    # "No Tumor" is every fourth sample; some training ones are cut through the skull base,
    # orbits or vertex, so the detector learns that those are not tumours.
    train = [make_sample(2, "train", i, 96) for i in range(2, 120, 4)]
    test = [make_sample(2, "test", i, 96) for i in range(2, 60, 4)]
    assert all(CLASS_NAMES[s.class_id] == "No Tumor" for s in train + test)
    outer = [s for s in train if s.meta["level"] == "outer"]
    assert 0 < len(outer) < len(train)
    assert {s.meta["level"] for s in test} == {"brain"}
    for sample in outer:
        assert sample.image.std() > 5
        if sample.box is not None:
            x1, y1, x2, y2 = sample.box
            assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 96
