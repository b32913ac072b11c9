"""The presentation state (GSPS): valid for dciodvfy and DCMTK, on exactly the analysed images
(and frames), each tumour's box a closed polyline equal to its finding's box carrying its
lesion's tracking UID, labels inside the image, no-tumour findings as notes, the patient and
study copied and nothing invented."""

from __future__ import annotations

import io
import logging
import shutil
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import GrayscaleSoftcopyPresentationStateStorage

from dicom_files import dataset
from mriscribe.analysis import Analysis
from mriscribe.outputs import OutputRefusedError, Rendering, get_output, registry
from mriscribe.outputs.dicom_pr import (
    SERIES_NUMBER,
    add_modality_lut,
    image_spacing,
    presentation_lut_shape,
    voi_items,
    window,
)
from mriscribe.outputs.dicom_source import DicomSource, patient_and_study_keywords
from mriscribe.report.facts import is_negative_class
from result_studies import (
    COLIN27_STUDIES,
    DICOM_STUDIES,
    PATIENT,
    SECRETS,
    changed_analysis,
    multiframe_analysis,
    needs_colin27,
    nifti_analysis,
    no_birth_date_analysis,
    png_analysis,
    pydicom_analysis,
    series_analysis,
    series_files,
    two_sizes_analysis,
)
from validators import dciodvfy, dcmpschk

STUDIES = DICOM_STUDIES
needs_validators = pytest.mark.skipif(
    shutil.which("dciodvfy") is None or shutil.which("dcmpschk") is None,
    reason="dciodvfy or dcmpschk missing: make install",
)
# DCMTK's presentation state reader (dcmpstat.cc, DcmPresentationState::read) refuses an empty
# Patient's Name, which the standard allows (Type 2): a de-identified source (emri_small.dcm) has
# one, and nothing may be invented. That check, and its summary line (which validators.dcmpschk
# counts as an error), are all it may say; dciodvfy finds no error in the same file.
DCMTK_EMPTY_NAME = (
    "W: patientName absent or empty in presentation state",
    "W: Test failed - one or more errors.",
)


def study_param(name: str) -> object:
    marks = [needs_colin27] if name in COLIN27_STUDIES else []
    return pytest.param(name, marks=marks, id=name)


def read(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


@cache
def made(study: str) -> tuple[Rendering, Dataset, bytes]:
    """The study's presentation state (one rendering per study)."""
    rendering = Rendering(STUDIES[study]())
    artifact = rendering.artifact("dicom-pr")
    assert (artifact.name, artifact.media_type) == ("pr.dcm", "application/dicom")
    return rendering, read(artifact.data), artifact.data


def annotations(state: Dataset) -> Iterator[tuple[Dataset, Dataset]]:
    """(graphic annotation, its one referenced image) pairs."""
    for annotation in state.get("GraphicAnnotationSequence", []):
        (reference,) = annotation.ReferencedImageSequence
        yield annotation, reference


def objects(state: Dataset, kind: str) -> list[Dataset]:
    """Every GraphicObjectSequence or TextObjectSequence item of the state."""
    return [item for annotation, _ in annotations(state) for item in annotation.get(kind, [])]


def sources(analysis: Analysis) -> dict[str, tuple[str, str]]:
    """The analysed instances as the decoder read them: SOP instance -> (class, series)."""
    return {
        str(image.slice.source.sop_instance_uid): (
            str(image.slice.source.sop_class_uid),
            str(image.slice.source.series_uid),
        )
        for image in analysis.images
    }


def box_polyline(box: object) -> np.ndarray:
    x1, y1, x2, y2 = box.x1, box.y1, box.x2, box.y2
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]])


def lesion_of(analysis: Analysis, fact: object) -> object:
    """The lesion holding the fact, found here without mriscribe's own pairing."""
    (lesion,) = [lesion for lesion in analysis.facts.lesions if fact in lesion.detections]
    return lesion


# --- the contract ----------------------------------------------------------------------------


def test_registered_as_a_dicom_output_that_needs_no_drawn_images():
    output = get_output("dicom-pr")
    assert registry()["dicom-pr"] is output
    assert output.media_type == "application/dicom"
    assert output.needs_dicom and not output.needs_images


@needs_colin27
@pytest.mark.parametrize("make", [png_analysis, nifti_analysis], ids=["png", "nifti"])
def test_refuses_images_that_are_not_dicom_and_says_why(make):
    with pytest.raises(OutputRefusedError) as caught:
        Rendering(make()).artifact("dicom-pr")
    message = str(caught.value)
    assert message.startswith("dicom-pr: ")
    assert "image 1 is " in message and "send the study as DICOM files" in message


# --- validity --------------------------------------------------------------------------------


@needs_validators
@pytest.mark.parametrize("study", [study_param(name) for name in STUDIES])
def test_dciodvfy_and_dcmpschk_find_no_error(study, tmp_path: Path):
    _rendering, state, data = made(study)
    path = tmp_path / "pr.dcm"
    path.write_bytes(data)
    verdict = dciodvfy(path)
    assert verdict.errors == (), str(verdict)
    assert "GrayscaleSoftcopyPresentationState" in verdict.output
    checked = dcmpschk(path)
    said = [line for line in checked.output.splitlines() if line.startswith(("W:", "E:", "F:"))]
    complaints = [line for line in said if not line.startswith("W: Testing: ")]
    assert checked.returncode == 0, str(checked)
    if str(state.PatientName) == "":
        assert tuple(complaints) == DCMTK_EMPTY_NAME, str(checked)
        assert checked.errors == (DCMTK_EMPTY_NAME[-1],), str(checked)
    else:
        assert checked.errors == (), str(checked)
        assert complaints == ["W: Test passed."], str(checked)


@pytest.mark.parametrize("study", [study_param(name) for name in STUDIES])
def test_a_new_gsps_instance_in_a_new_series_of_the_source_study(study):
    rendering, state, _data = made(study)
    analysis = rendering.analysis
    assert state.SOPClassUID == GrayscaleSoftcopyPresentationStateStorage
    assert state.file_meta.MediaStorageSOPClassUID == GrayscaleSoftcopyPresentationStateStorage
    assert state.Modality == "PR"
    assert state.SOPInstanceUID == rendering.uid("dicom-pr")
    assert state.SeriesInstanceUID == rendering.uid("dicom-pr series")
    (study_uid,) = {image.slice.source.study_uid for image in analysis.images}
    assert state.StudyInstanceUID == study_uid
    assert state.SeriesInstanceUID not in {series for _, series in sources(analysis).values()}
    assert (state.SeriesNumber, state.InstanceNumber) == (SERIES_NUMBER, 1)
    assert state.ContentLabel == "MRISCRIBE"
    assert state.ContentDescription == "Preliminary machine read, unverified"
    assert "unverified" in state.SeriesDescription
    for layer in state.get("GraphicLayerSequence", []):
        assert layer.GraphicLayerDescription.endswith("preliminary machine read, unverified")


def test_dates_and_times_are_the_renderings():
    created = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    rendering = Rendering(pydicom_analysis(), created=created)
    state = read(rendering.artifact("dicom-pr").data)
    # MR_small.dcm states its offset from UTC (-0400): the state keeps it and its times are in it.
    local = created.astimezone(datetime.strptime("-0400", "%z").tzinfo)
    for date, time in (
        ("PresentationCreationDate", "PresentationCreationTime"),
        ("InstanceCreationDate", "InstanceCreationTime"),
        ("SeriesDate", "SeriesTime"),
    ):
        assert state[date].value == local.strftime("%Y%m%d"), date
        assert state[time].value.startswith(local.strftime("%H%M%S")), time
    assert state.TimezoneOffsetFromUTC == "-0400"


# --- what it points at -----------------------------------------------------------------------


@pytest.mark.parametrize("study", [study_param(name) for name in STUDIES])
def test_references_exactly_the_analysed_instances(study):
    rendering, state, _data = made(study)
    expected = sources(rendering.analysis)
    found: dict[str, tuple[str, str]] = {}
    for series in state.ReferencedSeriesSequence:
        for reference in series.ReferencedImageSequence:
            uid = str(reference.ReferencedSOPInstanceUID)
            assert uid not in found, "each instance once"
            found[uid] = (str(reference.ReferencedSOPClassUID), str(series.SeriesInstanceUID))
            # Every frame of each test instance was analysed: no frame list.
            assert "ReferencedFrameNumber" not in reference
    assert found == expected
    for _annotation, reference in annotations(state):
        assert str(reference.ReferencedSOPInstanceUID) in expected


def test_multi_frame_annotations_point_at_their_frames():
    rendering, state, _data = made("multi-frame")
    frames_with_findings = {
        image.slice.source.frame for image in rendering.analysis.images if image.findings
    }
    assert frames_with_findings, "the multi-frame test file has findings"
    assert all(frame is not None for frame in frames_with_findings)
    pointed = {int(reference.ReferencedFrameNumber) for _, reference in annotations(state)}
    assert pointed == frames_with_findings


@needs_colin27
def test_a_multi_frame_series_annotations_name_each_images_frame():
    rendering, state, _data = made("24 frames")
    frames = {image.slice.source.frame: image for image in rendering.analysis.images}
    assert sorted(frames) == list(range(1, 25))
    drawn = 0
    for annotation, reference in annotations(state):
        image = frames[int(reference.ReferencedFrameNumber)]
        boxes = [box_polyline(m.finding.box) for m in image.findings]
        for item in annotation.get("GraphicObjectSequence", []):
            points = np.reshape(item.GraphicData, (-1, 2))
            assert any(np.allclose(points, box, atol=1e-3) for box in boxes)
            drawn += 1
    assert drawn == len(rendering.analysis.tumours()) > 1
    pointed = {int(reference.ReferencedFrameNumber) for _, reference in annotations(state)}
    assert pointed == {frame for frame, image in frames.items() if image.findings}
    # Every frame was analysed: the instance is referenced whole.
    [series] = state.ReferencedSeriesSequence
    [whole] = series.ReferencedImageSequence
    assert "ReferencedFrameNumber" not in whole


def test_a_subset_of_frames_is_named_frame_by_frame():
    """A multi-frame instance of which only some frames were analysed names those frames."""
    from mriscribe.outputs.dicom_source import image_reference

    header = Dataset()
    header.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"
    header.SOPInstanceUID = "1.2.3.4"
    header.NumberOfFrames = 10
    assert list(image_reference(header, [3, 1, 3]).ReferencedFrameNumber) == [1, 3]
    assert "ReferencedFrameNumber" not in image_reference(header, range(1, 11))
    assert "ReferencedFrameNumber" not in image_reference(header, [None])


# --- the boxes and labels --------------------------------------------------------------------


@pytest.mark.parametrize(
    "study",
    [
        study_param(name)
        for name in ("one lesion", "two lesions", "negative", "estimated", "24 frames")
    ],
)
def test_each_tumour_box_is_its_finding_with_its_lesions_tracking_uid(study):
    rendering, state, _data = made(study)
    analysis = rendering.analysis
    by_image: dict[tuple[str, int | None], list[Dataset]] = defaultdict(list)
    for annotation, reference in annotations(state):
        frame = reference.get("ReferencedFrameNumber")
        by_image[
            (str(reference.ReferencedSOPInstanceUID), None if frame is None else int(frame))
        ].extend(annotation.get("GraphicObjectSequence", []))
    tumours = analysis.tumours()
    assert len(objects(state, "GraphicObjectSequence")) == len(tumours)
    for fact, image, measured in tumours:
        lesion = lesion_of(analysis, fact)
        source = image.slice.source
        drawn = by_image[(str(source.sop_instance_uid), source.frame)]
        expected = box_polyline(measured.finding.box)
        matching = [
            item
            for item in drawn
            if np.allclose(np.reshape(item.GraphicData, (-1, 2)), expected, atol=1e-3)
        ]
        assert len(matching) == 1, f"image {image.number}: the box of {fact.class_name}"
        (item,) = matching
        assert item.GraphicType == "POLYLINE" and item.GraphicAnnotationUnits == "PIXEL"
        assert item.NumberOfGraphicPoints == 5 and item.GraphicFilled == "N"
        points = np.reshape(item.GraphicData, (-1, 2))
        assert np.array_equal(points[0], points[-1]), "closed"
        assert item.TrackingUID == rendering.tracking_uid(lesion.id)
        assert item.TrackingID == f"Lesion {lesion.id}"
        assert item.TrackingID == rendering.tracking_identifier(lesion.id)


@needs_colin27
def test_two_lesions_have_two_tracking_uids_shared_with_the_rendering():
    rendering, state, _data = made("two lesions")
    lesions = rendering.analysis.facts.lesions
    assert len(lesions) == 2
    drawn = {str(item.TrackingUID) for item in objects(state, "GraphicObjectSequence")}
    labelled = {
        str(item.TrackingUID)
        for item in objects(state, "TextObjectSequence")
        if "TrackingUID" in item
    }
    expected = {rendering.tracking_uid(lesion.id) for lesion in lesions}
    assert drawn == labelled == expected
    assert len(expected) == 2
    # Another rendering of the same analysis draws new UIDs (they are the rendering's).
    other = read(Rendering(rendering.analysis).artifact("dicom-pr").data)
    assert not {str(i.TrackingUID) for i in objects(other, "GraphicObjectSequence")} & drawn


@needs_colin27
def test_the_sr_of_the_same_rendering_names_the_same_tracking_uids():
    rendering, state, _data = made("two lesions")
    sr = read(rendering.artifact("dicom-sr").data)

    def uid_refs(items: list[Dataset]) -> Iterator[str]:
        for item in items:
            if item.get("ValueType") == "UIDREF":
                yield str(item.UID)
            yield from uid_refs(item.get("ContentSequence", []))

    in_sr = set(uid_refs(sr.ContentSequence))
    drawn = {str(item.TrackingUID) for item in objects(state, "GraphicObjectSequence")}
    assert drawn and drawn <= in_sr


@pytest.mark.parametrize("study", [study_param(name) for name in STUDIES])
def test_every_finding_is_labelled_inside_its_image(study):
    rendering, state, _data = made(study)
    findings = sum(len(image.findings) for image in rendering.analysis.images)
    headers = {
        image.slice.source.sop_instance_uid: image.slice for image in rendering.analysis.images
    }
    texts = 0
    for annotation, reference in annotations(state):
        height, width = headers[str(reference.ReferencedSOPInstanceUID)].pixels.shape[:2]
        for item in annotation.TextObjectSequence:
            texts += 1
            left, top = item.BoundingBoxTopLeftHandCorner
            right, bottom = item.BoundingBoxBottomRightHandCorner
            assert 0 <= left < right <= width + 1e-3 and 0 <= top < bottom <= height + 1e-3
            assert item.BoundingBoxAnnotationUnits == "PIXEL"
            assert item.UnformattedTextValue.isascii()
    assert texts == findings


@needs_colin27
def test_labels_say_class_confidence_and_size():
    rendering, state, _data = made("one lesion")
    texts = {str(item.UnformattedTextValue) for item in objects(state, "TextObjectSequence")}
    for _fact, _image, measured in rendering.analysis.tumours():
        finding, size = measured.finding, measured.size
        assert (
            f"{finding.class_name} {finding.confidence * 100:.0f}% - "
            f"{size.width_mm:.0f}x{size.height_mm:.0f} mm"
        ) in texts


@needs_colin27
def test_a_tumour_measured_with_the_default_spacing_is_labelled_approximate():
    rendering, state, _data = made("estimated")
    tumours = rendering.analysis.tumours()
    assert tumours and all(measured.size.estimated for _f, _i, measured in tumours)
    labels = [
        str(item.UnformattedTextValue)
        for item in objects(state, "TextObjectSequence")
        if not str(item.UnformattedTextValue).startswith("No Tumor")
    ]
    assert len(labels) == len(tumours)
    assert all(" - ~" in text for text in labels), labels


def test_sizes_from_a_default_spacing_are_marked_approximate():
    from mriscribe.analysis import MeasuredFinding, Measurement
    from mriscribe.detection import Box, Finding
    from mriscribe.outputs.dicom_pr import label

    finding = Finding("Glioma", 0, 0.914, Box(10, 10, 40, 30))
    estimated = Measurement(15.0, 10.0, (0.5, 0.5), "default 0.5 mm/px (estimate)", True)
    measured = Measurement(15.0, 10.0, (0.5, 0.5), "DICOM PixelSpacing", False)
    assert label(MeasuredFinding(finding, estimated)) == "Glioma 91% - ~15x10 mm"
    assert label(MeasuredFinding(finding, measured)) == "Glioma 91% - 15x10 mm"


@needs_colin27
def test_no_tumour_findings_are_notes_without_boxes_or_tracking():
    rendering, state, _data = made("negative")
    assert not rendering.analysis.facts.lesions
    assert objects(state, "GraphicObjectSequence") == []
    texts = objects(state, "TextObjectSequence")
    negatives = [m for image in rendering.analysis.images for m in image.findings]
    assert negatives and all(is_negative_class(m.finding.class_name) for m in negatives)
    assert len(texts) == len(negatives)
    assert all(str(t.UnformattedTextValue).startswith("No Tumor ") for t in texts)
    assert not any("TrackingUID" in t for t in texts)
    (layer,) = state.GraphicLayerSequence
    assert layer.GraphicLayer == "NO TUMOR"


@needs_colin27
def test_one_layer_per_class_the_no_tumour_class_drawn_first():
    _rendering, state, _data = made("one lesion")
    layers = {layer.GraphicLayer: layer for layer in state.GraphicLayerSequence}
    assert set(layers) == {"NO TUMOR", "GLIOMA"}
    assert layers["NO TUMOR"].GraphicLayerOrder < layers["GLIOMA"].GraphicLayerOrder
    assert {a.GraphicLayer for a, _ in annotations(state)} == set(layers)
    colours = {
        name: tuple(layer.GraphicLayerRecommendedDisplayCIELabValue)
        for name, layer in layers.items()
    }
    assert colours["NO TUMOR"] != colours["GLIOMA"]


# --- the grey pipeline -----------------------------------------------------------------------


def windows_by_instance(state: Dataset) -> dict[str, tuple[float, float]]:
    """The window the state gives each referenced instance (an item without references is
    every image's)."""
    everyone = [
        str(reference.ReferencedSOPInstanceUID)
        for series in state.ReferencedSeriesSequence
        for reference in series.ReferencedImageSequence
    ]
    found: dict[str, tuple[float, float]] = {}
    for item in state.get("SoftcopyVOILUTSequence", []):
        references = item.get("ReferencedImageSequence")
        uids = [str(r.ReferencedSOPInstanceUID) for r in references] if references else everyone
        for uid in uids:
            assert uid not in found, "one window per image"
            found[uid] = (float(item.WindowCenter), float(item.WindowWidth))
    return found


def first_window(ds: Dataset) -> tuple[float, float]:
    def first(value: object) -> float:
        return float(value[0]) if isinstance(value, MultiValue) else float(value)

    return first(ds.WindowCenter), first(ds.WindowWidth)


@needs_colin27
def test_each_image_is_windowed_as_its_file_says():
    _rendering, state, _data = made("one lesion")
    files = [pydicom.dcmread(io.BytesIO(f.data), stop_before_pixels=True) for f in series_files()]
    assert windows_by_instance(state) == {str(ds.SOPInstanceUID): first_window(ds) for ds in files}
    assert state.PresentationLUTShape == "IDENTITY"
    assert "RescaleSlope" not in state  # the files state none


def test_a_single_image_is_windowed_as_its_file_says():
    _rendering, state, _data = made("MR_small")
    ds = dataset("MR_small.dcm")
    assert windows_by_instance(state) == {str(ds.SOPInstanceUID): first_window(ds)}


def test_an_image_without_a_window_gets_none():
    _rendering, state, _data = made("multi-frame")  # its windows are in functional groups
    assert "SoftcopyVOILUTSequence" not in state


def test_the_displayed_area_is_the_whole_image_at_its_spacing():
    _r, state, _d = made("MR_small")
    (area,) = state.DisplayedAreaSelectionSequence
    assert list(area.DisplayedAreaTopLeftHandCorner) == [1, 1]
    assert list(area.DisplayedAreaBottomRightHandCorner) == [64, 64]
    assert [float(v) for v in area.PresentationPixelSpacing] == [0.3125, 0.3125]
    _r, state, _d = made("no spacing")
    (area,) = state.DisplayedAreaSelectionSequence
    assert "PresentationPixelSpacing" not in area
    assert list(area.PresentationPixelAspectRatio) == [1, 1]


@needs_colin27
def test_a_multi_frame_image_is_displayed_at_its_functional_groups_spacing():
    """An enhanced or legacy-converted image keeps its spacing in the Pixel Measures functional
    group, not at the top level: the state uses the analysis' own spacing, never 1:1."""
    analysis = multiframe_analysis()
    state = read(Rendering(analysis).artifact("dicom-pr").data)
    (area,) = state.DisplayedAreaSelectionSequence
    assert not analysis.images[0].spacing_estimated
    assert "PresentationPixelAspectRatio" not in area
    assert [float(v) for v in area.PresentationPixelSpacing] == pytest.approx(
        list(analysis.images[0].spacing_mm)
    )


@pytest.mark.parametrize("spacing", ["0.9", ("0", "0"), ("nan", "1")])
def test_a_malformed_pixel_spacing_is_square_pixels(spacing):
    analysis = changed_analysis("MR_small.dcm", (("PixelSpacing", spacing),))  # a tuple: cached
    state = read(Rendering(analysis).artifact("dicom-pr").data)
    (area,) = state.DisplayedAreaSelectionSequence
    assert analysis.images[0].spacing_estimated or image_spacing(analysis.images[0]) is None
    assert "PresentationPixelSpacing" not in area
    assert list(area.PresentationPixelAspectRatio) == [1, 1]


def _functional_groups(shared: Dataset | None, *per_frame: Dataset) -> Dataset:
    header = Dataset()
    if shared is not None:
        group = Dataset()
        group.FrameVOILUTSequence = [shared]
        header.SharedFunctionalGroupsSequence = [group]
    frames = []
    for item in per_frame:
        group = Dataset()
        group.FrameVOILUTSequence = [item]
        frames.append(group)
    if frames:
        header.PerFrameFunctionalGroupsSequence = frames
    return header


def _window(centre: float, width: float) -> Dataset:
    item = Dataset()
    item.WindowCenter, item.WindowWidth = centre, width
    return item


def test_a_multi_frame_images_window_and_rescale_are_its_functional_groups():
    shared = _functional_groups(_window(40, 80))
    assert window(shared, 1) == window(shared, 2) == (40.0, 80.0, "LINEAR")
    per_frame = _functional_groups(None, _window(40, 80), _window(300, 600))
    assert window(per_frame, 1) == (40.0, 80.0, "LINEAR")
    assert window(per_frame, 2) == (300.0, 600.0, "LINEAR")
    rescale = Dataset()
    rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = 2, -10, "US"
    group = Dataset()
    group.PixelValueTransformationSequence = [rescale]
    header = Dataset()
    header.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"
    header.SOPInstanceUID = "1.2.3.1"
    header.SeriesInstanceUID = "1.2.3"
    header.Rows = header.Columns = 64
    header.SharedFunctionalGroupsSequence = [group]
    state = Dataset()
    assert add_modality_lut(state, DicomSource("1.2", (), (header,)))
    assert (state.RescaleSlope, state.RescaleIntercept, state.RescaleType) == (2, -10, "US")


@needs_colin27
def test_a_legacy_converted_images_window_and_rescale_reach_the_state(monkeypatch):
    """The Legacy Converted image keeps its window and rescale in its functional groups: the
    state has them where the sealed header keeps those groups (imaging/patient.py's
    IMAGE_KEPT, made to keep them here until it does)."""
    from mriscribe.imaging import patient
    from mriscribe.pipeline import InputFile, analyze
    from result_studies import SETTINGS, multiframe_bytes

    groups = ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")
    monkeypatch.setattr(patient, "IMAGE_KEPT", (*patient.IMAGE_KEPT, *groups))
    analysis = analyze([InputFile("frames.dcm", multiframe_bytes())], SETTINGS)
    source = pydicom.dcmread(io.BytesIO(multiframe_bytes()))
    (voi,) = source.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence
    state = read(Rendering(analysis).artifact("dicom-pr").data)
    (item,) = state.SoftcopyVOILUTSequence
    assert (float(item.WindowCenter), float(item.WindowWidth)) == (
        float(voi.WindowCenter),
        float(voi.WindowWidth),
    )
    assert state.RescaleType == "US" and float(state.RescaleSlope) == 1.0


def test_a_colour_image_gets_no_grayscale_presentation_state():
    rendering = Rendering(pydicom_analysis("SC_rgb.dcm"))
    with pytest.raises(OutputRefusedError, match="colour presentation state"):
        rendering.artifact("dicom-pr")


# --- the patient -----------------------------------------------------------------------------


@pytest.mark.parametrize("study", [study_param(name) for name in ("one lesion", "MR_small")])
def test_patient_and_study_are_the_sources(study):
    _rendering, state, _data = made(study)
    if study == "one lesion":
        expected = PATIENT
    else:
        ds = dataset("MR_small.dcm")
        expected = {k: str(ds.get(k) or "") for k in ("PatientName", "PatientID", "StudyDate")}
    for keyword, value in expected.items():
        assert str(state[keyword].value or "") == value, keyword


def test_nothing_is_invented_about_the_patient():
    source = dataset("MR_small.dcm")
    del source.PatientBirthDate
    state = read(Rendering(no_birth_date_analysis()).artifact("dicom-pr").data)
    assert "PatientBirthDate" in state and state.PatientBirthDate == ""  # Type 2: empty
    for keyword in patient_and_study_keywords():
        if keyword not in state:
            continue
        ours = state[keyword].value
        if keyword in source and source[keyword].value not in (None, ""):
            assert ours == source[keyword].value, keyword
        else:
            assert ours in (None, ""), f"{keyword} invented"
    assert str(state.PatientName) == "CompressedSamples^MR1" and state.PatientID == "4MR1"


@needs_colin27
def test_no_patient_data_or_uid_reaches_a_log_line(caplog):
    caplog.set_level(logging.DEBUG)
    rendering = Rendering(series_analysis())
    rendering.artifact("dicom-pr")
    study_uid = str(rendering.analysis.images[0].slice.source.study_uid)
    for secret in (*SECRETS, study_uid):
        assert secret not in caplog.text, "a log line names the patient or the study"


# --- a study of two series of different sizes ------------------------------------------------


@needs_validators
def test_two_series_of_two_sizes_each_displayed_and_windowed_as_its_own(tmp_path: Path):
    analysis = two_sizes_analysis()
    rendering = Rendering(analysis)
    data = rendering.artifact("dicom-pr").data
    state = read(data)
    path = tmp_path / "pr.dcm"
    path.write_bytes(data)
    verdict, checked = dciodvfy(path), dcmpschk(path)
    assert verdict.errors == (), str(verdict)
    assert checked.errors == () and "W: Test passed." in checked.output, str(checked)
    sizes = {
        str(i.slice.source.sop_instance_uid): i.slice.pixels.shape[:2] for i in analysis.images
    }
    assert sorted(sizes.values()) == [(32, 32), (64, 64)]
    assert len(state.ReferencedSeriesSequence) == 2
    areas = {}
    for area in state.DisplayedAreaSelectionSequence:
        (reference,) = area.ReferencedImageSequence
        columns, rows = area.DisplayedAreaBottomRightHandCorner
        areas[str(reference.ReferencedSOPInstanceUID)] = (rows, columns)
    assert areas == sizes
    windows = windows_by_instance(state)
    assert sorted(windows.values()) == [(600.0, 1600.0), (700.0, 1400.0)]


def headers_source(*changes: dict[str, object]) -> DicomSource:
    """A source of bare headers, one per ``changes`` (attributes set on a 64x64 MR header)."""
    headers = []
    for number, change in enumerate(changes, start=1):
        header = Dataset()
        header.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        header.SOPInstanceUID = f"1.2.3.{number}"
        header.SeriesInstanceUID = "1.2.3"
        header.Rows = header.Columns = 64
        for keyword, value in change.items():
            setattr(header, keyword, value)
        headers.append(header)
    return DicomSource("1.2", (), tuple(headers))


def test_monochrome1_images_are_shown_inverted_as_their_header_asks():
    mono1 = {"PhotometricInterpretation": "MONOCHROME1"}
    mono2 = {"PhotometricInterpretation": "MONOCHROME2"}
    assert presentation_lut_shape(headers_source(mono1, mono1)) == "INVERSE"
    assert presentation_lut_shape(headers_source(mono2, mono2)) == "IDENTITY"
    assert presentation_lut_shape(headers_source(mono1, mono2)) == "IDENTITY"


def test_one_rescale_for_all_or_none_and_then_no_window():
    ct = {"RescaleSlope": 1, "RescaleIntercept": -1024, "WindowCenter": 40, "WindowWidth": 80}
    state = Dataset()
    assert add_modality_lut(state, headers_source(ct, ct))
    assert (state.RescaleSlope, state.RescaleIntercept, state.RescaleType) == (1, -1024, "US")
    other = {**ct, "RescaleIntercept": 0}
    state = Dataset()
    assert not add_modality_lut(state, headers_source(ct, other))
    assert "RescaleSlope" not in state
    # A window the decoder does not use is none (it used the percentile window there): LINEAR
    # needs a width of at least 1, the others above 0; a function it does not know is LINEAR.
    assert voi_items(headers_source({"WindowCenter": 40, "WindowWidth": 0.5})) == []
    (sigmoid,) = voi_items(
        headers_source({"WindowCenter": 40, "WindowWidth": 0.5, "VOILUTFunction": "SIGMOID"})
    )
    assert sigmoid.VOILUTFunction == "SIGMOID"
    (unknown,) = voi_items(
        headers_source({"WindowCenter": 40, "WindowWidth": 80, "VOILUTFunction": "CUBIC"})
    )
    assert "VOILUTFunction" not in unknown  # LINEAR, the default
    (item,) = voi_items(headers_source(ct, {"WindowCenter": [40, 400], "WindowWidth": [80, 2000]}))
    assert "ReferencedImageSequence" not in item  # both images' first window
    assert (float(item.WindowCenter), float(item.WindowWidth)) == (40.0, 80.0)
