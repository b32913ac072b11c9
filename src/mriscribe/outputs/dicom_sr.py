"""The DICOM SR: every lesion's boxes, sizes and classes as a TID 1500 Measurement Report
(Comprehensive 3D SR), a new series in the source study, for a PACS or a viewer to show.

What the document holds, and why:

- One TID 1410 planar ROI measurement group per (lesion, slice). TID 1410 holds exactly one
  image region per group, so a lesion seen on seven slices is seven groups, all with the
  lesion's tracking identifier ("Lesion 1", as the report names it) and tracking UID
  (``Rendering.tracking_identifier`` and ``tracking_uid``, shared with the presentation state
  and FHIR; ``Analysis.lesion_findings`` pairs each detection with its box). Each group has:
  the detection's box as a closed POLYLINE on the image (and frame) it was found on, geometric
  purpose "Bounded by"; the finding type, the SNOMED CT disorder of the class the detector gave
  that box (the certainty belongs to that class, so a lesion whose slices disagree says so
  slice by slice, as the report does; Neoplasm for a tumour class the codes do not know); the
  finding site (brain, or pituitary) with the lesion's laterality where its side was measured;
  long and short axis, the box's longer and shorter side in mm from the image's own pixel
  spacing (the JSON's sizes, unrounded; a box's side, not a diameter drawn on the lesion); and
  the detector's confidence as Certainty of Finding, in percent.
- A size made with the configured default spacing (the image stated none) carries the
  measurement method "Estimated" (SCT 414135002) on both axes: nobody takes it for measured.
- An image the detector classified "No Tumor" and nothing else is a TID 1501 group referencing
  that image: Neoplasm: Absent, with that classification's confidence as Certainty of Finding.
  An image with no detection at all has no group: the detector said nothing about it.
- The study's result, as the report's impression gives it, is the report's own qualitative
  evaluation (TID 1500 row 12): Neoplasm Present (a tumour detected), Absent (every image
  classified "No Tumor") or Undetermined (no tumour, but some image without any detection: the
  report's indeterminate study). The FHIR bundle states the same result.
- A study without any finding is still a valid document: the procedure reported and the image
  library (every analysed image, frame by frame) say what was examined, and its result is
  Neoplasm: Undetermined; it has no Imaging Measurements container (highdicom's
  MeasurementReport insists on a measurement group, so the root is written here).
- Every group names the algorithm (TID 4019: the model's name and version, its sha256 and the
  thresholds); the observer is the device (TID 1004); Contributing Equipment names mriscribe as
  Processing Equipment (IHE AI Results provenance). Completion PARTIAL, PRELIMINARY,
  UNVERIFIED: no radiologist has read it.
- The Patient and Study modules are copied from the source header as they are: nothing is
  invented, and a Type 2 attribute the source lacks stays empty. highdicom never sees the
  patient's values (its checks would put them in a log line or a warning) nor the character
  set (it refuses one it does not know): it gets the first instance without them, and they
  are copied in afterwards.
- A new series, number 9901 (SERIES_NUMBER: after any scanner's series, so it sorts last),
  instance 1; content date and time are the rendering's ``created`` in the source's Timezone
  Offset From UTC where it states one (kept), else in the server's local time without an
  offset (dicom_source.result_time), as the presentation state and encapsulated PDF do.

Speed: highdicom builds the document (its header modules, evidence, flags, equipment) and
pydicom writes the file, but the content tree is encoded by :mod:`mriscribe.outputs.sr_content`
straight to bytes and attached as a raw Content Sequence (see that module for why, and for the
tests that keep it byte for byte what highdicom writes). The tests also read every document back
with highdicom and run dciodvfy, dsrdump and PixelMed on it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import highdicom as hd
from highdicom.sr import CodeContentItem, ContainerContentItem, ContentSequence
from pydicom import Dataset
from pydicom.valuerep import DA, TM

from mriscribe.analysis import Analysis, MeasuredFinding
from mriscribe.outputs import codes
from mriscribe.outputs.base import Artifact, Rendering
from mriscribe.outputs.dicom_source import (
    MANUFACTURER,
    MODEL_NAME,
    TYPE_2,
    DicomSource,
    SourceImage,
    algorithm_parameters,
    copy_offset,
    copy_patient_and_study,
    device_uid,
    part10,
    result_time,
    software_versions,
)
from mriscribe.outputs.sr_content import (
    ACQ_CONTEXT,
    CONCEPT_MOD,
    CONTAINS,
    OBS_CONTEXT,
    SELECTED_FROM,
    attach,
    code_item,
    container,
    image_item,
    num_item,
    scoord_item,
    text_item,
    uid_item,
)
from mriscribe.report.facts import FindingFact, ImageFacts, LesionFact
from mriscribe.report.wording import study_result

SERIES_NUMBER = 9901
INSTANCE_NUMBER = 1
SERIES_DESCRIPTION = "mriscribe tumour measurements (preliminary, unverified)"
COMPLETION = "Automated detection results, not reviewed by a radiologist"
CONTRIBUTION = "Automated brain tumour detection and measurement"


@dataclass(frozen=True)
class DicomSr:
    name: str = "dicom-sr"
    summary: str = "the lesions' boxes and sizes as a DICOM SR (TID 1500) in the source study"
    media_type: str = "application/dicom"
    needs_images: bool = False
    needs_dicom: bool = True

    def render(self, rendering: Rendering) -> tuple[Artifact, ...]:
        source = DicomSource.of(rendering, self.name)
        return (Artifact("sr.dcm", self.media_type, part10(build_sr(rendering, source))),)


OUTPUT = DicomSr()


def build_sr(rendering: Rendering, source: DicomSource) -> Dataset:
    """The SR document of one rendering's DICOM study, ready to write."""
    document = _document(rendering, source)
    attach(document, _report_content(rendering, source))
    return document


# -- the document: highdicom ------------------------------------------------------------------


class _Document(hd.sr.Comprehensive3DSR):
    """highdicom's Comprehensive 3D SR without its copying of the patient and study (which
    logs the source's UIDs): dicom_source.copy_patient_and_study copies them silently."""

    def copy_patient_and_study_information(self, dataset: Dataset) -> None:
        return None


def _document(rendering: Rendering, source: DicomSource) -> Dataset:
    """The SR's header modules, evidence (every source instance), flags and equipment; its
    content is attached by :func:`build_sr`."""
    created = result_time(rendering.created, source)
    local = created.replace(tzinfo=None)
    root = ContainerContentItem(name=codes.IMAGING_MEASUREMENT_REPORT.dicom(), template_id="1500")
    root.ContentSequence = ContentSequence(
        [
            CodeContentItem(
                name=codes.LANGUAGE_OF_CONTENT.dicom(),
                value=codes.ENGLISH_US.dicom(),
                relationship_type=CONCEPT_MOD,
            )
        ]
    )
    document = _Document(
        evidence=[_identity_free(source.first), *source.instances[1:]],
        content=root,
        series_instance_uid=rendering.uid("dicom-sr series"),
        series_number=SERIES_NUMBER,
        sop_instance_uid=rendering.uid("dicom-sr"),
        instance_number=INSTANCE_NUMBER,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=software_versions(),
        series_description=SERIES_DESCRIPTION,
        is_complete=False,
        is_final=False,
        is_verified=False,
        contributing_equipment=[_processing_equipment(local)],
        content_date=local.date(),
        content_time=local.time(),
        series_date=local.date(),
        series_time=local.time(),
    )
    document.CompletionFlagDescription = COMPLETION
    document.InstanceCreationDate = DA(local.date())
    document.InstanceCreationTime = TM(local.time())
    if "SpecificCharacterSet" in source.first:
        document.add(copy.deepcopy(source.first["SpecificCharacterSet"]))
    copy_patient_and_study(source.first, document)
    copy_offset(source, document)
    return document


def _processing_equipment(created: datetime) -> hd.ContributingEquipment:
    """SOP Common Contributing Equipment: mriscribe as Processing Equipment (IHE AIR)."""
    return hd.ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=codes.PROCESSING_EQUIPMENT.dicom(),
        manufacturer_model_name=MODEL_NAME,
        software_versions=software_versions(),
        contribution_datetime=created,
        contribution_description=CONTRIBUTION,
    )


def _identity_free(header: Dataset) -> Dataset:
    """The first instance as highdicom is shown it: UIDs, and the patient and study attributes
    it reads (TYPE_2), empty (the real ones are copied in afterwards). No character set: the
    source's is copied in afterwards too, as it stated it (highdicom refuses the ones it does
    not know, a misspelt or multi-valued one a PACS still reads)."""
    bare = Dataset()
    for keyword in (
        "SOPClassUID",
        "SOPInstanceUID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
    ):
        if keyword in header:
            bare.add(header.data_element(keyword))
    for keyword in TYPE_2:
        setattr(bare, keyword, "")
    return bare


# -- the content: TID 1500 --------------------------------------------------------------------


def _report_content(rendering: Rendering, source: DicomSource) -> list[bytes]:
    """The root container's content items (TID 1500): language, observer, procedure, image
    library, the measurement groups where there are any, and the study's result."""
    groups = [*_lesion_groups(rendering, source), *_negative_groups(rendering, source)]
    items = [
        code_item(codes.LANGUAGE_OF_CONTENT, codes.ENGLISH_US, CONCEPT_MOD),
        *_observer(rendering.analysis),
        code_item(codes.PROCEDURE_REPORTED, codes.IMAGING_PROCEDURE, CONCEPT_MOD),
        _image_library(source),
    ]
    if groups:
        items.append(container(codes.IMAGING_MEASUREMENTS, CONTAINS, groups))
    items.append(
        container(codes.QUALITATIVE_EVALUATIONS, CONTAINS, [_study_result(rendering.analysis)])
    )
    return items


def _study_result(analysis: Analysis) -> bytes:
    """The study's result, as the report's impression states it (CID 240; the FHIR bundle
    states the same): Neoplasm Present where a tumour was detected; Absent where every image
    was classified "No Tumor"; else Undetermined (some image had no detection at all: the
    report's indeterminate study)."""
    result = codes.STUDY_RESULTS[study_result(analysis.facts)]
    return code_item(codes.NEOPLASM, result, CONTAINS)


def _observer(analysis: Analysis) -> list[bytes]:
    """TID 1002 with a device observer (TID 1004): mriscribe."""
    return [
        code_item(codes.OBSERVER_TYPE, codes.DEVICE, OBS_CONTEXT),
        uid_item(codes.DEVICE_OBSERVER_UID, device_uid(analysis), OBS_CONTEXT),
        text_item(codes.DEVICE_OBSERVER_NAME, MODEL_NAME, OBS_CONTEXT),
        text_item(codes.DEVICE_OBSERVER_MANUFACTURER, MANUFACTURER, OBS_CONTEXT),
        text_item(codes.DEVICE_OBSERVER_MODEL_NAME, MODEL_NAME, OBS_CONTEXT),
    ]


def _algorithm(rendering: Rendering) -> list[bytes]:
    """TID 4019: the detector's name and version; its checksum and thresholds as parameters."""
    model = rendering.analysis.model
    return [
        text_item(codes.ALGORITHM_NAME, model.name or MODEL_NAME, CONCEPT_MOD),
        text_item(codes.ALGORITHM_VERSION, model.version or "unversioned", CONCEPT_MOD),
        *(
            text_item(codes.ALGORITHM_PARAMETERS, parameter, CONCEPT_MOD)
            for parameter in algorithm_parameters(rendering)
        ),
    ]


def _image_library(source: DicomSource) -> bytes:
    """TID 1600: every analysed image, frame by frame, in groups of one modality and frame of
    reference (stated once per group)."""
    grouped: dict[tuple[str, str | None], list[SourceImage]] = {}
    for image in source.images:
        modality = str(image.header.get("Modality", "") or "")
        grouped.setdefault((modality, image.frame_of_reference_uid), []).append(image)
    return container(
        codes.IMAGE_LIBRARY,
        CONTAINS,
        [_library_group(modality, frame, images) for (modality, frame), images in grouped.items()],
    )


def _library_group(modality: str, frame: str | None, images: Sequence[SourceImage]) -> bytes:
    items = []
    coded = codes.acquisition_modalities().get(modality)
    if coded is not None:
        items.append(code_item(codes.MODALITY, coded, ACQ_CONTEXT))
    if frame:
        items.append(uid_item(codes.FRAME_OF_REFERENCE_UID, frame, ACQ_CONTEXT))
    items.extend(_image(codes.SOURCE, image, CONTAINS) for image in images)
    return container(codes.IMAGE_LIBRARY_GROUP, CONTAINS, items)


def _image(name: codes.Concept, image: SourceImage, relationship: str) -> bytes:
    """An IMAGE item of the analysed image: its instance, and its frame where it is one."""
    return image_item(name, image.sop_class_uid, image.sop_instance_uid, image.frame, relationship)


# -- the lesions: TID 1410 --------------------------------------------------------------------


def _lesion_groups(rendering: Rendering, source: DicomSource) -> list[bytes]:
    """One planar ROI group per slice of each lesion, in lesion then image order."""
    algorithm = _algorithm(rendering)
    tracking: dict[int, list[bytes]] = {}
    groups = []
    for lesion, _fact, image, measured in rendering.analysis.lesion_findings():
        if lesion.id not in tracking:
            tracking[lesion.id] = _tracking(
                rendering.tracking_identifier(lesion.id), rendering.tracking_uid(lesion.id)
            )
        groups.append(
            _lesion_group(
                lesion, source.image(image.number), measured, tracking[lesion.id], algorithm
            )
        )
    return groups


def _lesion_group(
    lesion: LesionFact,
    image: SourceImage,
    measured: MeasuredFinding,
    tracking: list[bytes],
    algorithm: list[bytes],
) -> bytes:
    class_name = measured.finding.class_name
    return container(
        codes.MEASUREMENT_GROUP,
        CONTAINS,
        [
            *tracking,
            code_item(codes.FINDING, _finding_type(class_name), CONTAINS),
            *_finding_site(class_name, lesion),
            *algorithm,
            *_axes(measured),
            _certainty(measured.finding.confidence),
            code_item(codes.GEOMETRIC_PURPOSE, codes.BOUNDED_BY, CONTAINS),
            _region(image, measured),
        ],
        template="1410",
    )


def _tracking(identifier: str, uid: str) -> list[bytes]:
    """TID 4108: the human-readable identifier and the UID."""
    return [
        text_item(codes.TRACKING_IDENTIFIER, identifier, OBS_CONTEXT),
        uid_item(codes.TRACKING_UID, uid, OBS_CONTEXT),
    ]


def _finding_type(class_name: str) -> codes.Concept:
    """The class's SNOMED CT disorder; Neoplasm for a tumour class of another model that the
    codes do not know (a class that is not negative is a tumour)."""
    return codes.FINDING_TYPES.get(class_name, codes.NEOPLASM)


def _finding_site(class_name: str, lesion: LesionFact) -> list[bytes]:
    """Where the class is found (none for a class the codes do not know), with the lesion's
    laterality where its side was measured."""
    site = codes.FINDING_SITES.get(class_name)
    if site is None:
        return []
    side = codes.SIDES.get(lesion.side or "")
    laterality = [code_item(codes.LATERALITY, side, CONCEPT_MOD)] if side else []
    return [code_item(codes.FINDING_SITE, site, CONCEPT_MOD, children=laterality)]


def _axes(measured: MeasuredFinding) -> list[bytes]:
    """Long and short axis: the box's longer and shorter side in mm, with the measurement
    method "Estimated" where the spacing was the configured default."""
    size = measured.size
    method = (
        [code_item(codes.MEASUREMENT_METHOD, codes.ESTIMATED, CONCEPT_MOD)]
        if size.estimated
        else []
    )
    long_mm, short_mm = sorted((float(size.width_mm), float(size.height_mm)), reverse=True)
    unit = codes.MILLIMETRE
    return [
        num_item(codes.LONG_AXIS, long_mm, unit, CONTAINS, children=method),
        num_item(codes.SHORT_AXIS, short_mm, unit, CONTAINS, children=method),
    ]


def _certainty(confidence: float) -> bytes:
    """The detector's confidence in its class, in percent."""
    return num_item(codes.CERTAINTY_OF_FINDING, float(confidence) * 100.0, codes.PERCENT, CONTAINS)


def _region(image: SourceImage, measured: MeasuredFinding) -> bytes:
    """The box as a closed polyline in the image's pixel matrix (column, row; the top left
    corner of the top left pixel is 0, 0), clipped to the image, on its image and frame."""
    box = measured.finding.box
    columns, rows = float(image.header.Columns), float(image.header.Rows)
    x1, x2 = (min(max(float(x), 0.0), columns) for x in (box.x1, box.x2))
    y1, y2 = (min(max(float(y), 0.0), rows) for y in (box.y1, box.y2))
    return scoord_item(
        codes.IMAGE_REGION,
        "POLYLINE",
        (x1, y1, x2, y1, x2, y2, x1, y2, x1, y1),
        CONTAINS,
        children=[_image(codes.SOURCE, image, SELECTED_FROM)],
    )


# -- images classified "No Tumor": TID 1501 ---------------------------------------------------


def _negative_groups(rendering: Rendering, source: DicomSource) -> list[bytes]:
    """One group per image classified "No Tumor" and nothing else: Neoplasm: Absent on that
    image, with the classification's confidence."""
    algorithm = _algorithm(rendering)
    return [
        _negative_group(rendering, facts, source.image(facts.number), algorithm)
        for facts in rendering.analysis.facts.images
        if facts.status == "negative"
    ]


def _negative_group(
    rendering: Rendering, facts: ImageFacts, image: SourceImage, algorithm: list[bytes]
) -> bytes:
    number = facts.number
    tracking = _tracking(
        f"No tumour, image {number}", rendering.uid(f"dicom-sr no tumour image {number}")
    )
    return container(
        codes.MEASUREMENT_GROUP,
        CONTAINS,
        [
            *tracking,
            *algorithm,
            _certainty(_best(facts.negatives)),
            code_item(codes.NEOPLASM, codes.ABSENT, CONTAINS),
            _image(codes.SOURCE_OF_MEASUREMENT, image, CONTAINS),
        ],
        template="1501",
    )


def _best(findings: Iterable[FindingFact]) -> float:
    return max(finding.confidence for finding in findings)
