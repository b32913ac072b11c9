"""The source study of the DICOM results: which instances they describe, and the patient and
study details they copy, opened from the sealed headers with the DICOM reader token.

Every DICOM output starts here: ``DicomSource.of(rendering, output)`` refuses an analysis that
is not one DICOM study (PNG, JPEG, TIFF and NIfTI slices have no instances to point at, and a
result belongs to exactly one study), and gives each analysed image its instance, frame and a
header dataset (patient, study, image attributes; no pixels) that highdicom can read.

It also holds what every DICOM result does alike: a new instance in a new series of the source
study (:func:`new_instance`) with the source's Patient and Study modules copied as the file
stated them (:func:`copy_patient_and_study`, one keyword list for every result), dates and times
in the source's Timezone Offset From UTC where it states one, else the server's local time
without an offset (:func:`result_time`, :func:`copy_offset`), one patient
(:func:`patient_key`, :func:`refuse_several_patients`, which the FHIR bundle shares), image
references naming their frames (:func:`image_reference`, :func:`analysed_frames`), the
device's UID (:func:`device_uid`) and the file (:func:`part10`).
"""

from __future__ import annotations

import copy
import io
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import cache

from highdicom.base import SOPClass
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import DA, TM

from mriscribe import __version__
from mriscribe.analysis import Analysis, ImageResult
from mriscribe.imaging.geometry import SourceRef
from mriscribe.imaging.patient import DICOM_READER
from mriscribe.outputs.base import OutputRefusedError, Rendering

MANUFACTURER = "mriscribe"
MODEL_NAME = "mriscribe"
# Type 2 attributes of the patient and study that DICOM results must carry, empty when the
# source does not state them: nothing is invented about a patient. (highdicom's SR reads these
# from the first instance.)
TYPE_2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
# What names a patient: images whose headers differ in any of these (and state any) are of
# different patients. The DICOM results and the FHIR bundle refuse them alike.
PATIENT_KEYS = ("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex")


def patient_key(details: Mapping[str, object] | Dataset) -> tuple[str, ...]:
    """The patient an image's header names (PATIENT_KEYS, as text; all empty where it names
    none)."""
    return tuple(str(details.get(name, "") or "").strip() for name in PATIENT_KEYS)


def refuse_several_patients(output: str, keys: Iterable[tuple[str, ...]]) -> None:
    """OutputRefusedError when the images' ``keys`` (:func:`patient_key`) name more than one
    patient (images naming none are not counted); the message names no value."""
    named = {key for key in keys if any(key)}
    if len(named) > 1:
        raise OutputRefusedError(
            output,
            f"the images name {len(named)} different patients in their DICOM headers; a "
            "report is about one patient: send one patient's study at a time",
        )


@dataclass(frozen=True)
class SourceImage:
    """One analysed image as its DICOM instance: the header (no pixels) and the frame (1-based,
    None for a single-frame instance)."""

    image: ImageResult
    header: Dataset
    frame: int | None

    @property
    def sop_class_uid(self) -> str:
        return str(self.header.SOPClassUID)

    @property
    def sop_instance_uid(self) -> str:
        return str(self.header.SOPInstanceUID)

    @property
    def frame_of_reference_uid(self) -> str | None:
        return self.image.slice.source.frame_of_reference_uid if self.image.slice.source else None


@dataclass(frozen=True)
class DicomSource:
    """One DICOM study's analysed images: ``images`` in the analysis' order, ``instances``
    one header per distinct SOP instance (in first-use order), ``study_uid``."""

    study_uid: str
    images: tuple[SourceImage, ...]
    instances: tuple[Dataset, ...]

    @classmethod
    def of(cls, rendering: Rendering, output: str) -> DicomSource:
        """The analysis' DICOM study (made once per rendering); OutputRefusedError naming
        ``output`` and why when the images are not all DICOM instances of one study."""
        return rendering.shared("dicom-source", lambda: _source(rendering, output))

    def image(self, number: int) -> SourceImage:
        """The source of analysed image ``number`` (1-based, as in the report)."""
        return self.images[number - 1]

    @property
    def first(self) -> Dataset:
        """The header the patient and study details are copied from."""
        return self.instances[0]

    def series(self, series_uid: str) -> list[Dataset]:
        return [ds for ds in self.instances if ds.SeriesInstanceUID == series_uid]


def _source(rendering: Rendering, output: str) -> DicomSource:
    images = rendering.analysis.images
    if not images:
        raise OutputRefusedError(output, "the study holds no images")
    made: list[SourceImage] = []
    instances: dict[str, Dataset] = {}
    studies: set[str] = set()
    for image in images:
        source = image.slice.source
        kind = source.format if source is not None else image.slice.meta.get("format", "?")
        if source is None or source.format != "DICOM":
            raise OutputRefusedError(
                output,
                f"DICOM results point at DICOM images, and image {image.number} is {kind}: "
                "send the study as DICOM files (the JSON, PDF and FHIR results work for "
                "every format)",
            )
        missing = [
            name
            for name, value in (
                ("Study Instance UID", source.study_uid),
                ("Series Instance UID", source.series_uid),
                ("SOP Instance UID", source.sop_instance_uid),
                ("SOP Class UID", source.sop_class_uid),
            )
            if not value
        ]
        if missing:
            raise OutputRefusedError(
                output,
                f"image {image.number} has no valid {' or '.join(missing)}, so a DICOM result "
                "cannot point at it",
            )
        studies.add(str(source.study_uid))
        sop = str(source.sop_instance_uid)
        if sop not in instances:
            instances[sop] = _header(image, source)
        made.append(SourceImage(image, instances[sop], source.frame))
    if len(studies) > 1:
        raise OutputRefusedError(
            output,
            f"the images come from {len(studies)} DICOM studies; a DICOM result belongs to one "
            "study: send one study at a time",
        )
    refuse_several_patients(output, (patient_key(header) for header in instances.values()))
    return DicomSource(studies.pop(), tuple(made), tuple(instances.values()))


def _header(image: ImageResult, source: SourceRef) -> Dataset:
    """The instance's sealed header with its UIDs, and the type 2 patient and study
    attributes present (empty when the source does not state them)."""
    header = source.patient.header(DICOM_READER) if source.patient is not None else Dataset()
    header.StudyInstanceUID = source.study_uid
    header.SeriesInstanceUID = source.series_uid
    header.SOPInstanceUID = source.sop_instance_uid
    header.SOPClassUID = source.sop_class_uid
    if source.frame_of_reference_uid:
        header.FrameOfReferenceUID = source.frame_of_reference_uid
    for keyword in TYPE_2:
        if keyword not in header:
            setattr(header, keyword, "")
    if "Rows" not in header or "Columns" not in header:
        header.Rows, header.Columns = image.slice.height, image.slice.width
    if "SamplesPerPixel" not in header:
        header.SamplesPerPixel = 1
    return header


def software_versions() -> str:
    return __version__


def algorithm_parameters(rendering: Rendering) -> Sequence[str]:
    """The detector's settings and checksum, as TID 4019 algorithm parameters."""
    analysis = rendering.analysis
    parameters = [
        f"confidence threshold {analysis.conf_threshold:g}",
        f"IoU threshold {analysis.iou_threshold:g}",
    ]
    if analysis.model.sha256:
        parameters.append(f"sha256 {analysis.model.sha256}")
    return parameters


def device_uid(analysis: Analysis) -> str:
    """The device's UID (the SR's device observer): one per version of mriscribe and model (a
    name-based UUID under the 2.25 root), so every result of one device names the same device."""
    model = analysis.model
    name = f"mriscribe:{software_versions()}:{model.name}:{model.version}:{model.sha256}"
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, name).int}"


# -- a new instance in the source study -------------------------------------------------------

# The modules of the Patient and Study information entities in every composite IOD (PS3.3
# A.1.2.1, A.1.2.2): what a result in the source study copies from it.
PATIENT_AND_STUDY_MODULES = (
    "patient",
    "clinical-trial-subject",
    "general-study",
    "patient-study",
    "clinical-trial-study",
)


@cache
def patient_and_study_keywords() -> frozenset[str]:
    """The root attributes of the Patient and Study modules (Patient, Clinical Trial Subject,
    General Study, Patient Study, Clinical Trial Study) as highdicom's copy of the standard
    defines them, less the Study Instance UID every result sets itself. The sealed header keeps
    those of them that imaging/patient.py's KEPT names; the tests check that every result's IOD
    has exactly these modules in these entities."""
    from highdicom._standard_utils import get_module_attribute_map

    attributes = get_module_attribute_map()
    found = {
        str(attribute["keyword"])
        for module in PATIENT_AND_STUDY_MODULES
        for attribute in attributes[module]
        if not attribute["path"]
    }
    return frozenset(found - {"StudyInstanceUID"})


def copy_patient_and_study(header: Dataset, dataset: Dataset) -> None:
    """The source's Patient and Study attributes into ``dataset``, as the file stated them
    (copies: the header is shared by every result of a rendering). Type 2 attributes the
    source lacks are in the header, empty (see ``TYPE_2``); nothing else is added. Copied, never
    passed to highdicom: it would log a name it finds odd, and refuse a character set it does
    not know."""
    keywords = patient_and_study_keywords()
    for element in header:
        if element.keyword in keywords:
            dataset.add(copy.deepcopy(element))


def local_time(moment: datetime) -> datetime:
    """``moment`` in the server's time zone (a naive one is taken to be UTC, as render/pdf.py
    takes it)."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone()


_OFFSET = re.compile(r"([+-])(\d\d)(\d\d)")


def stated_offset(header: Dataset) -> timezone | None:
    """The source's Timezone Offset From UTC (&ZZXX) where it states a valid one, else None."""
    match = _OFFSET.fullmatch(str(header.get("TimezoneOffsetFromUTC") or "").strip())
    if match is None:
        return None
    sign, hours, minutes = match.groups()
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    if delta > timedelta(hours=14) or int(minutes) >= 60:
        return None
    return timezone(-delta if sign == "-" else delta)


def result_time(moment: datetime, source: DicomSource) -> datetime:
    """``moment`` as a DICOM result of ``source`` states its dates and times: in the offset
    the source header states (Timezone Offset From UTC applies to every date and time of an
    instance, the copied study date and time included, so a result keeps the source's), else
    in the server's time zone (and the result states no offset, as the source did not)."""
    offset = stated_offset(source.first)
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(offset) if offset is not None else aware.astimezone()


def copy_offset(source: DicomSource, dataset: Dataset) -> None:
    """The source's Timezone Offset From UTC into ``dataset``, where it states a valid one
    (see :func:`result_time`); else none, so that no offset is applied to the source's study
    date and time, which it did not state one for."""
    if "TimezoneOffsetFromUTC" in dataset:
        del dataset.TimezoneOffsetFromUTC
    offset = stated_offset(source.first)
    if offset is not None:
        dataset.TimezoneOffsetFromUTC = datetime.now(offset).strftime("%z")


def new_instance(
    rendering: Rendering,
    source: DicomSource,
    *,
    sop_class_uid: str,
    modality: str,
    purpose: str,
    series_number: int,
    series_description: str,
) -> SOPClass:
    """A new instance in a new series of the source study: its UIDs the rendering's for
    ``purpose`` and "``purpose`` series", the patient and study copied from the source (type 2
    attributes empty where it states none, nothing else added), our equipment, and every date
    and time the rendering's ``created`` (:func:`result_time`: in the source's offset from UTC
    where it states one, kept; else in the server's local time, without one)."""
    first = source.first
    created = result_time(rendering.created, source)
    instance = SOPClass(
        study_instance_uid=source.study_uid,
        series_instance_uid=rendering.uid(f"{purpose} series"),
        series_number=series_number,
        sop_instance_uid=rendering.uid(purpose),
        sop_class_uid=sop_class_uid,
        instance_number=1,
        modality=modality,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=software_versions(),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=series_description,
    )
    # Set here, not given to highdicom: it checks them against its own content time (now, in
    # the server's zone), which a time in the source's offset may be later than.
    instance.SeriesDate = DA(created.date())
    instance.SeriesTime = TM(created.time())
    if "SpecificCharacterSet" in first:
        instance.add(copy.deepcopy(first["SpecificCharacterSet"]))
    copy_patient_and_study(first, instance)
    instance.InstanceCreationDate = DA(created.date())
    instance.InstanceCreationTime = TM(created.time())
    if "ContentDate" in instance:  # where the IOD has one (highdicom set it to its now)
        instance.ContentDate = DA(created.date())
        instance.ContentTime = TM(created.time())
    copy_offset(source, instance)
    return instance


def part10(dataset: Dataset) -> bytes:
    """``dataset`` as a DICOM file (Part 10: preamble, file meta, the dataset)."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# -- references -------------------------------------------------------------------------------


def image_reference(header: Dataset, frames: Iterable[int | None] = ()) -> Dataset:
    """An image reference (SOP class and instance, and the frames where they are not all of a
    multi-frame instance's)."""
    item = Dataset()
    item.ReferencedSOPClassUID = header.SOPClassUID
    item.ReferencedSOPInstanceUID = header.SOPInstanceUID
    numbers = sorted({frame for frame in frames if frame is not None})
    if numbers and len(numbers) < int(header.get("NumberOfFrames") or 1):
        item.ReferencedFrameNumber = numbers if len(numbers) > 1 else numbers[0]
    return item


def analysed_frames(source: DicomSource) -> dict[str, list[int | None]]:
    """Each source instance's analysed frames (None for a single-frame instance), by SOP
    instance UID."""
    frames: dict[str, list[int | None]] = defaultdict(list)
    for image in source.images:
        frames[image.sop_instance_uid].append(image.frame)
    return frames
