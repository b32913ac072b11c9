"""Arranging decoded slices into series: real DICOM files written here in any order under any
names, Colin27 as NIfTI, PNG images; grouped, sorted along the slice normal, spaced from the
positions, with gaps, repeats, coinciding slices and mixed orientations noted."""

from __future__ import annotations

import random
import re
import secrets
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from conftest import encode
from mriscribe.imaging.decode import decode_file
from mriscribe.imaging.geometry import Plane, SourceRef
from mriscribe.imaging.limits import Limits
from mriscribe.imaging.slices import Slice
from mriscribe.study.series import Series, SeriesNote, arrange

COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")  # apt-get install mricron-data
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4.1"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
AXIAL_ROW_REVERSED = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # normal to the feet: still sorted upwards
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
SIZE = 64
PATIENT = "Doe^Jane"


def marked(marker: int) -> np.ndarray:
    """A 64 x 64 image, dark but for a bright band whose place says which slice it is."""
    pixels = np.zeros((SIZE, SIZE), dtype=np.uint16)
    pixels[:, 2 * marker : 2 * marker + 3] = 1000
    return pixels


def marker_of(one: Slice) -> int:
    """The marker drawn by :func:`marked`, read back from the decoded RGB slice."""
    bright = np.flatnonzero(one.pixels[:, :, 0].mean(axis=0) > 128)
    assert bright.size, "no marker in the slice"
    return int(bright[0]) // 2


def _image_attributes(ds: Dataset, frames: np.ndarray) -> None:
    ds.Rows, ds.Columns = SIZE, SIZE
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.WindowCenter, ds.WindowWidth = 500, 1000
    ds.PixelData = frames.astype("<u2").tobytes()


def _file_dataset(sop_class: str, study: str, series: str, series_number: int | None) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = "MR"
    ds.PatientName = PATIENT
    ds.PatientID = "MRN-0042"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    if series_number is not None:
        ds.SeriesNumber = series_number
    return ds


def mr_slice(
    marker: int,
    *,
    study: str,
    series: str,
    position: tuple[float, float, float] | None,
    orientation: tuple[float, ...] = AXIAL,
    instance: int | None = 1,
    series_number: int | None = 1,
) -> Dataset:
    """An MR Image Storage slice. SliceThickness is 1.0 whatever the step between slices,
    so that a spacing read from it, not from the positions, shows."""
    ds = _file_dataset(MR_IMAGE, study, series, series_number)
    if instance is not None:
        ds.InstanceNumber = instance
    if position is not None:
        ds.ImagePositionPatient = list(position)
        ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = [1.0, 1.0]
    ds.SliceThickness = 1.0
    _image_attributes(ds, marked(marker))
    return ds


def axial_series(
    heights: list[float],
    *,
    study: str | None = None,
    series_number: int | None = 1,
    orientation: tuple[float, ...] = AXIAL,
) -> list[Dataset]:
    """Axial slices at these heights (mm, LPS z), each marked with its rank from the feet up
    and given a misleading instance number (counting down from the head)."""
    study = study or generate_uid()
    series = generate_uid()
    ranks = {height: rank for rank, height in enumerate(sorted(set(heights)))}
    return [
        mr_slice(
            ranks[height],
            study=study,
            series=series,
            position=(-32.0, -32.0, height),
            orientation=orientation,
            instance=len(heights) - index,
            series_number=series_number,
        )
        for index, height in enumerate(heights)
    ]


def enhanced(heights: list[float], *, study: str | None = None) -> Dataset:
    """An Enhanced MR Image Storage file with one frame per height, its plane in the per-frame
    functional groups (orientation and pixel spacing shared), each frame marked with its rank."""
    ds = _file_dataset(ENHANCED_MR_IMAGE, study or generate_uid(), generate_uid(), 7)
    ds.InstanceNumber = 1
    ds.NumberOfFrames = len(heights)
    shared = Dataset()
    orientation, measures = Dataset(), Dataset()
    orientation.ImageOrientationPatient = list(AXIAL)
    measures.PixelSpacing = [1.0, 1.0]
    measures.SliceThickness = 1.0
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for height in heights:
        item, place = Dataset(), Dataset()
        place.ImagePositionPatient = [-32.0, -32.0, height]
        item.PlanePositionSequence = Sequence([place])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ranks = {height: rank for rank, height in enumerate(sorted(heights))}
    _image_attributes(ds, np.stack([marked(ranks[height]) for height in heights]))
    return ds


def write(tmp_path: Path, datasets: list[Dataset]) -> list[tuple[str, bytes]]:
    """Each dataset saved under a random name, read back as an upload's (name, bytes)."""
    files = []
    for ds in datasets:
        name = secrets.token_hex(6) + random.choice(["", ".dcm", ".IMA"])
        path = tmp_path / name
        ds.save_as(path, enforce_file_format=True)
        files.append((name, path.read_bytes()))
    return files


def decoded(files: list[tuple[str, bytes]]) -> list[Slice]:
    return [one for name, data in files for one in decode_file(data, name, Limits())]


def shuffled(files: list, seed: int) -> list:
    order = list(files)
    random.Random(seed).shuffle(order)
    return order


def signature(arranged: list[Series]) -> list[tuple]:
    """Everything arrange decides, in a form two runs can be compared by."""
    return [
        (
            one.key,
            tuple((s.source.sop_instance_uid, s.source.frame, s.source.index) for s in one.slices),
            one.positions,
            one.spacing_mm,
            one.notes,
            one.dropped,
        )
        for one in arranged
    ]


def notes_of(one: Series, kind: str) -> list[SeriesNote]:
    return [note for note in one.notes if note.kind == kind]


def test_series_of_a_study_in_a_stable_order_whatever_the_file_order_and_names(tmp_path):
    study, other_study = sorted([generate_uid(), generate_uid()])
    second = axial_series([0.0, 5.0, 10.0, 15.0, 20.0, 25.0], study=study, series_number=2)
    first = axial_series([-20.0, -15.0, -10.0, -5.0, 0.0], study=study, series_number=1)
    unnumbered = axial_series([0.0, 5.0, 10.0], study=study, series_number=None)
    elsewhere = axial_series([0.0, 5.0], study=other_study, series_number=1)
    files = write(tmp_path, elsewhere + unnumbered + second + first)
    slices = decoded(files)
    expected = signature(arrange(slices))
    for seed in range(6):
        upload = shuffled(files, seed)
        # The same bytes under other names: names never order anything.
        renamed = [(secrets.token_hex(4), data) for _, data in upload]
        assert signature(arrange(decoded(renamed))) == expected
        assert signature(arrange(shuffled(slices, seed))) == expected
    arranged = arrange(slices)
    series_of = [one.slices[0].source.series_uid for one in arranged]
    assert series_of == [
        first[0].SeriesInstanceUID,
        second[0].SeriesInstanceUID,
        unnumbered[0].SeriesInstanceUID,
        elsewhere[0].SeriesInstanceUID,
    ]
    assert [len(one.slices) for one in arranged] == [5, 6, 3, 2]
    for one in arranged:
        # Sorted feet to head, not by the (reversed) instance numbers.
        assert [marker_of(s) for s in one.slices] == list(range(len(one.slices)))
        assert one.positions is not None and np.all(np.diff(one.positions) > 0)
        # From the positions (5 mm apart), not from SliceThickness (1.0).
        assert one.spacing_mm == pytest.approx(5.0)
        assert one.geometry and one.notes == () and one.dropped == 0
        assert one.levels() == tuple(range(len(one.slices)))
    assert arranged[0].positions == pytest.approx((-20.0, -15.0, -10.0, -5.0, 0.0))


def test_a_missing_slice_is_a_gap_of_its_size(tmp_path):
    slices = decoded(write(tmp_path, axial_series([0.0, 5.0, 10.0, 20.0, 25.0, 30.0])))
    [series] = arrange(shuffled(slices, 1))
    assert series.spacing_mm == pytest.approx(5.0)
    [gap] = series.notes
    assert gap.kind == "gap" and gap.indices == (2, 3)
    assert gap.mm == pytest.approx(10.0)
    assert gap.text(1) == "a gap of 10.0 mm between images 3 and 4"
    assert gap.text(11) == "a gap of 10.0 mm between images 13 and 14"
    # Levels do not skip: the gap is in the note and in the positions.
    assert series.levels() == (0, 1, 2, 3, 4, 5)


def test_a_short_series_with_a_gap_keeps_its_spacing(tmp_path):
    # Steps of 5 and 15 mm: the spacing is a real step, not their mean.
    [series] = arrange(decoded(write(tmp_path, axial_series([0.0, 5.0, 20.0]))))
    assert series.spacing_mm == pytest.approx(5.0)
    assert [(n.kind, n.indices, n.mm) for n in series.notes] == [("gap", (1, 2), 15.0)]


def test_uneven_steps_are_noted_but_are_no_gap(tmp_path):
    slices = decoded(write(tmp_path, axial_series([0.0, 5.0, 10.0, 16.0, 21.0, 26.0])))
    [series] = arrange(slices)
    assert series.spacing_mm == pytest.approx(5.0)
    [uneven] = series.notes
    assert uneven.kind == "uneven" and uneven.indices == (2, 3)
    assert uneven.mm == pytest.approx(1.0)
    assert "images 3 and 4" in uneven.text(1)
    # Steps within 10% of each other are even enough.
    [even] = arrange(decoded(write(tmp_path, axial_series([0.0, 5.0, 10.2, 15.0, 20.0]))))
    assert even.notes == ()


def test_a_file_sent_twice_is_kept_once_and_noted(tmp_path):
    files = write(tmp_path, axial_series([0.0, 5.0, 10.0, 15.0]))
    again = (secrets.token_hex(6), files[2][1])
    [series] = arrange(decoded(shuffled([*files, again], 3)))
    assert len(series.slices) == 4 and series.dropped == 1
    assert [marker_of(s) for s in series.slices] == [0, 1, 2, 3]
    [note] = series.notes
    assert note.kind == "duplicate" and note.copies == 1
    assert note.indices == (2,)  # the slice 10 mm up, sent twice
    assert (
        note.text(1)
        == f"image {note.indices[0] + 1} was sent more than once; 1 repeated copy was left out"
    )
    assert series.spacing_mm == pytest.approx(5.0)


def test_two_instances_at_one_position_are_both_kept_and_noted(tmp_path):
    datasets = axial_series([0.0, 5.0, 10.0, 15.0])
    twin = mr_slice(
        2,
        study=datasets[0].StudyInstanceUID,
        series=datasets[0].SeriesInstanceUID,
        position=(-32.0, -32.0, 10.0),
        instance=9,
    )
    files = write(tmp_path, [*datasets, twin])
    expected = signature(arrange(decoded(files)))
    for seed in range(4):
        assert signature(arrange(decoded(shuffled(files, seed)))) == expected
    [series] = arrange(decoded(files))
    assert len(series.slices) == 5 and series.dropped == 0
    assert [marker_of(s) for s in series.slices] == [0, 1, 2, 2, 3]
    # Tied slices in SOP instance UID order.
    tied = [s.source.sop_instance_uid for s in series.slices[2:4]]
    assert tied == sorted(tied)
    [note] = series.notes
    assert note.kind == "duplicate" and note.indices == (2, 3) and note.copies == 0
    assert note.text(1) == "images 3 and 4 are different images at the same position"
    assert series.levels() == (0, 1, 2, 2, 3)
    assert series.spacing_mm == pytest.approx(5.0)


def test_mixed_orientations_are_split_and_noted(tmp_path):
    study, series_uid = generate_uid(), generate_uid()
    axial = [
        mr_slice(rank, study=study, series=series_uid, position=(-32.0, -32.0, z), instance=rank)
        for rank, z in enumerate([0.0, 5.0, 10.0, 15.0])
    ]
    # Sagittal slices at x = -8, 0, 8 (LPS: towards the patient's left): sorted upwards in x.
    sagittal = [
        mr_slice(
            rank, study=study, series=series_uid, position=(x, -32.0, 32.0), orientation=SAGITTAL
        )
        for rank, x in enumerate([-8.0, 0.0, 8.0])
    ]
    files = write(tmp_path, [*sagittal, *axial])
    expected = signature(arrange(decoded(files)))
    for seed in range(4):
        assert signature(arrange(decoded(shuffled(files, seed)))) == expected
    first, second = arrange(decoded(files))
    key = (study, series_uid)
    assert (first.key, second.key) == ((*key, "1"), (*key, "2"))
    assert [marker_of(s) for s in first.slices] == [0, 1, 2, 3]
    assert [marker_of(s) for s in second.slices] == [0, 1, 2]
    assert first.positions == pytest.approx((0.0, 5.0, 10.0, 15.0))
    assert second.positions == pytest.approx((-8.0, 0.0, 8.0))
    assert (first.spacing_mm, second.spacing_mm) == (pytest.approx(5.0), pytest.approx(8.0))
    for one in (first, second):
        [note] = one.notes
        assert note.kind == "mixed orientation"
        assert note.indices == tuple(range(len(one.slices)))
    assert first.notes[0].text(1).startswith("images 1 to 4 have one of several orientations")


def test_a_reversed_row_direction_still_runs_feet_to_head(tmp_path):
    heights = [12.0, 0.0, 8.0, 4.0, 16.0]
    plain = axial_series(heights)
    reversed_rows = axial_series(heights, orientation=AXIAL_ROW_REVERSED)
    for datasets in (plain, reversed_rows):
        [series] = arrange(decoded(write(tmp_path, shuffled(datasets, 5))))
        assert [marker_of(s) for s in series.slices] == [0, 1, 2, 3, 4]
        assert series.positions == pytest.approx((0.0, 4.0, 8.0, 12.0, 16.0))
        assert series.spacing_mm == pytest.approx(4.0)


def test_an_enhanced_multi_frame_file_is_sorted_frame_by_frame(tmp_path):
    heights = [9.0, 3.0, 0.0, 12.0, 6.0]
    files = write(tmp_path, [enhanced(heights)])
    slices = decoded(files)
    assert [s.source.frame for s in slices] == [1, 2, 3, 4, 5]
    [series] = arrange(shuffled(slices, 2))
    assert [marker_of(s) for s in series.slices] == [0, 1, 2, 3, 4]
    assert [s.source.frame for s in series.slices] == [3, 2, 5, 1, 4]
    assert series.positions == pytest.approx((0.0, 3.0, 6.0, 9.0, 12.0))
    assert series.spacing_mm == pytest.approx(3.0) and series.notes == ()
    # The whole file sent twice: every frame once, five copies left out.
    [again] = arrange(decoded([*files, (secrets.token_hex(6), files[0][1])]))
    assert len(again.slices) == 5 and again.dropped == 5
    [note] = again.notes
    assert note.kind == "duplicate" and note.indices == (0, 1, 2, 3, 4) and note.copies == 5
    assert note.text(1) == (
        "images 1 to 5 were sent more than once; 5 repeated copies were left out"
    )


def test_slices_without_a_position_are_ordered_by_instance_number(tmp_path):
    study, series_uid = generate_uid(), generate_uid()
    datasets = [
        mr_slice(marker, study=study, series=series_uid, position=None, instance=instance)
        for marker, instance in [(2, 3), (0, 1), (3, None), (1, 2)]
    ]
    datasets.append(
        mr_slice(9, study=study, series=series_uid, position=(0.0, 0.0, 0.0), instance=0)
    )
    [series] = arrange(decoded(write(tmp_path, datasets)))
    # One slice with a plane does not give the others one: instance numbers, missing last.
    assert [marker_of(s) for s in series.slices] == [9, 0, 1, 2, 3]
    assert series.positions is None and series.spacing_mm is None and not series.geometry
    assert series.levels() == (0, 1, 2, 3, 4)
    [note] = series.notes
    assert note.kind == "no geometry" and note.indices == (0, 1, 2, 3, 4)
    assert note.text(6).startswith("images 6 to 10 have no position in the patient")


def test_a_single_slice_with_a_plane_has_a_position_but_no_spacing(tmp_path):
    [series] = arrange(decoded(write(tmp_path, axial_series([7.5]))))
    assert series.geometry and series.positions == pytest.approx((7.5,))
    assert series.spacing_mm is None and series.notes == () and series.levels() == (0,)


def colin(**options: int) -> list[Slice]:
    return decode_file(COLIN27.read_bytes(), "ch2.nii.gz", Limits(), **options)


def test_a_nifti_volume_is_one_series_spaced_by_its_selected_slices():
    slices = colin()
    [series] = arrange(list(reversed(slices)))
    assert series.key[:2] == ("nifti", "ch2.nii.gz")
    assert len(series.slices) == len(slices) > 2
    indices = [s.source.index for s in series.slices]
    steps = set(np.diff(indices).tolist())
    assert len(steps) == 1, "the default selection of Colin27 is evenly spaced"
    assert series.positions is not None and np.all(np.diff(series.positions) > 0)
    # Colin27 has 1 mm voxels: the spacing is the step between selected slices in mm.
    assert series.spacing_mm == pytest.approx(steps.pop() * 1.0)
    assert series.notes == () and series.dropped == 0


def test_an_uneven_nifti_selection_gives_no_gap_or_uneven_note():
    [series] = arrange(colin(nifti_max_slices=40))
    steps = np.diff([s.source.index for s in series.slices])
    assert len(set(steps.tolist())) > 1, "this selection mixes two step sizes"
    assert series.spacing_mm == pytest.approx(float(np.sort(steps)[(len(steps) - 1) // 2]))
    assert series.notes == ()


def test_two_nifti_files_of_one_name_are_two_series():
    first, second = arrange(colin(nifti_max_slices=4) + colin(nifti_max_slices=4))
    assert first.key != second.key
    assert len(first.slices) == len(second.slices) == 4
    assert first.notes == second.notes == ()
    # Interleaved slice indices (every 4th slice from 0 and from 2) do not merge two files.
    image = nib.load(COLIN27)
    shifted = nib.Nifti1Image(np.asarray(image.dataobj)[:, :, 2:], image.affine)
    other = decode_file(shifted.to_bytes(), "ch2.nii.gz", Limits(), nifti_step=4)
    series = arrange(colin(nifti_step=4) + other)
    assert len(series) == 2 and all(one.notes == () for one in series)


@pytest.mark.parametrize("axes", [(1, 2, 0), (0, 2, 1)])
def test_a_volume_stored_sagittal_or_coronal_is_one_series(axes):
    """Stored axes other than axial (a sagittal MPRAGE, a coronal T2 from dcm2niix) still give
    one series of axial slices with positions."""
    image = nib.load(COLIN27)
    data = np.transpose(np.asarray(image.dataobj), axes)
    affine = image.affine[:, [*axes, 3]]
    stored = nib.Nifti1Image(data, affine)
    [series] = arrange(decode_file(stored.to_bytes(), "t1.nii", Limits()))
    assert series.geometry and len(series.slices) > 10
    assert series.positions is not None and np.all(np.diff(series.positions) > 0)


def test_png_images_are_one_image_series_each_in_upload_order_around_the_dicom(tmp_path):
    """The DICOM series stand where the upload's first DICOM file stood."""
    dicom = write(tmp_path, axial_series([0.0, 5.0]))
    image = np.zeros((32, 32), dtype=np.uint8)
    pngs = [
        ("scan.png", encode(image)),
        ("scan.png", encode(image + 1)),
        ("other.png", encode(image + 2)),
    ]
    upload = [pngs[0], dicom[0], pngs[1], dicom[1], pngs[2]]
    slices = decoded(upload)
    arranged = arrange(slices)
    assert [len(one.slices) for one in arranged] == [1, 2, 1, 1]
    firsts = [[s is one.slices[0] for s in slices].index(True) for one in arranged]
    assert firsts[0] == 0 and firsts[2:] == [2, 4]
    assert len({one.key for one in arranged}) == 4
    for one in [arranged[0], *arranged[2:]]:
        assert not one.geometry and one.positions is None and one.spacing_mm is None
        assert one.notes == () and one.levels() == (0,)


def test_slices_without_a_source_are_series_of_their_own():
    pixels = np.zeros((8, 8, 3), dtype=np.uint8)
    arranged = arrange([Slice("a.png", pixels), Slice("a.png", pixels)])
    assert len(arranged) == 2 and arranged[0].key != arranged[1].key


def test_note_texts_name_images_only(tmp_path):
    study, series_uid = generate_uid(), generate_uid()
    gapped = axial_series([0.0, 5.0, 10.0, 20.0, 25.0], study=study)
    twin = mr_slice(
        1,
        study=gapped[0].StudyInstanceUID,
        series=gapped[0].SeriesInstanceUID,
        position=(-32.0, -32.0, 5.0),
    )
    mixed = [
        mr_slice(0, study=study, series=series_uid, position=(0.0, 0.0, 0.0)),
        mr_slice(0, study=study, series=series_uid, position=(0.0, 0.0, 0.0), orientation=SAGITTAL),
    ]
    unplaced = axial_series([0.0, 5.0], study=study)
    del unplaced[0].ImagePositionPatient
    datasets = [*gapped, twin, *mixed, *unplaced, enhanced([0.0, 4.0, 9.0])]
    files = write(tmp_path, datasets)
    files.append((secrets.token_hex(6), files[0][1]))
    arranged = arrange(decoded(files))
    kinds = {note.kind for one in arranged for note in one.notes}
    assert kinds == {"gap", "duplicate", "mixed orientation", "no geometry", "uneven"}
    secrets_ = {
        uid
        for ds in datasets
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    }
    names = {name for name, _ in files}
    first = 1
    for one in arranged:
        for note in one.notes:
            text = note.text(first)
            assert not re.search(r"\d+\.\d+\.\d+", text), text
            assert not any(secret in text for secret in secrets_ | names), text
            assert "Doe" not in text and "MRN" not in text and "Jane" not in text
        first += len(one.slices)


def test_note_texts():
    assert SeriesNote("gap", (6, 7), 12.0).text(1) == "a gap of 12.0 mm between images 7 and 8"
    assert SeriesNote("duplicate", (0, 1, 2, 5), copies=4).text(1) == (
        "images 1 to 3 and 6 were sent more than once; 4 repeated copies were left out"
    )
    assert SeriesNote("duplicate", (0, 2, 4)).text(10) == (
        "images 10, 12 and 14 are different images at the same position"
    )
    assert SeriesNote("no geometry", (0,)).text(3).startswith("image 3 has no position")
    assert SeriesNote("uneven", (1, 2), 0.6).text(1) == (
        "uneven spacing between slices around images 2 and 3 (steps differ by up to 0.6 mm)"
    )


def test_levels_follow_a_tolerance_relative_to_the_spacing():
    def at(z: float, sop: str) -> Slice:
        plane = Plane.of((0.0, 0.0, z), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (1.0, 1.0))
        source = SourceRef(
            format="DICOM", series_key=("1.2", "1.2.3"), plane=plane, sop_instance_uid=sop
        )
        return Slice(sop, np.zeros((4, 4, 3), dtype=np.uint8), source=source)

    # Positions written with a few decimals: 0.004 mm apart is one level; 0.3 mm of a 5 mm
    # spacing is one level too, 1 mm is not.
    slices = [at(0.0, "1.1"), at(0.004, "1.2"), at(5.0, "1.3"), at(5.3, "1.4"), at(10.0, "1.5")]
    [series] = arrange(slices)
    assert series.spacing_mm == pytest.approx(5.0, abs=0.2)
    assert series.levels() == (0, 0, 1, 1, 2)
    assert [n.indices for n in series.notes if n.kind == "duplicate"] == [(0, 1), (2, 3)]
    [apart] = arrange([at(0.0, "1.1"), at(5.0, "1.2"), at(6.0, "1.3"), at(10.0, "1.4")])
    assert apart.levels() == (0, 1, 2, 3)
