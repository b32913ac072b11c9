"""The FHIR result: one Bundle that files the machine read of a study in an EHR, in FHIR R4B or,
on request (option ``fhir_version="R5"``), R5.

What the bundle holds:

- a DiagnosticReport: status ``preliminary``, category radiology (HL7 v2-0074 RAD), code LOINC
  18748-4 Diagnostic imaging study, the IMPRESSION as ``conclusion``, the finding types found as
  ``conclusionCode``, the report PDF (the ``pdf`` output, made once per rendering) as
  ``presentedForm``; ``subject``, ``effective`` (the study date), the imaging studies
  (``imagingStudy`` in R4B, ``study`` in R5) and the order (``basedOn``, by accession number)
  only where the DICOM source states them;
- one Observation per lesion, after the HL7 "DICOM SR to FHIR" mapping (hl7.fhir.uv.dicom-sr) of
  a TID 1501 measurement group: category imaging and DCM 125007 Measurement Group, the tracking
  UID (``urn:oid:``, the same UID the DICOM SR gives the lesion) and tracking identifier as
  identifiers typed DCM 112040 / 112039, the finding type (SNOMED CT) as ``code``, the finding
  site as ``bodySite``, long and short axis (mm, UCUM) and the certainty of finding (%) as
  components, laterality as a component when the side was measured, ``method`` Estimated (and a
  note) when no pixel spacing was known, ``device`` the algorithm, ``partOf``/``derivedFrom``
  the imaging study;
- a study without lesions has one qualitative evaluation instead, the study's result as the
  DICOM SR states it (TID 1500 row 12): Observation Neoplasm, value Absent for a negative study
  (every image classified no tumour), Undetermined for an indeterminate one (some image without
  any detection), as the SR mapping does with a coded qualitative evaluation; and no
  ``conclusionCode`` (no single code says "no tumour found by a machine" without
  post-coordination, and none is invented);
- the algorithm as a Device (model name, version, the model file's SHA-256 as an identifier,
  the thresholds as properties, manufacturer "mriscribe": TID 4019 Algorithm Identification);
- a Provenance naming that Device as author of the report and its observations;
- a Patient, only when the DICOM source states patient details: the identifier (PatientID; the
  issuer, when stated, as ``assigner.display``, since a DICOM issuer is a local name, not the URI
  ``system`` needs), the name (DICOM PN family^given^middle^prefix^suffix), birth date and
  gender (M/F/O); nothing else, nothing invented. PNG, JPEG, TIFF and NIfTI sources give a
  bundle without Patient, study or order references; so does an upload that mixes them (or
  DICOM images naming no patient) with DICOM images of a patient, and its report says why
  (MIXED_NOTE): an anonymous image's findings are never filed under another image's patient.

Choices:

- Bundle type ``collection``. A ``transaction`` is an instruction to a server: it would have to
  create or match the Patient (conditional create on an identifier whose system a DICOM header
  does not state) and the ImagingStudy, which belong to the EHR's master patient index and the
  PACS; a radiology IT team maps results to those in its integration engine, which a collection
  leaves to it. A ``document`` is an attested, immutable clinical document (Composition first),
  which an unverified preliminary machine read is not.
- Studies and the order are logical references (identifier only: ``urn:dicom:uid`` with
  ``urn:oid:<Study Instance UID>``, as the FHIR ImagingStudy and the SR mapping write it; the
  accession number typed v2-0203 ACSN), resolved by the receiver against its own ImagingStudy
  and ServiceRequest; the bundle never makes a second copy of either.
- No ``performer``: a DiagnosticReport's performer is a practitioner, role, organisation or care
  team in R4B and R5, never a device. The algorithm is the Observations' ``device`` and the
  Provenance's author instead; every AI-made resource carries the security label AIAST
  (Artificial Intelligence asserted, HL7 v3 ObservationValue) and the report a narrative
  (and, in R5, a note) saying it is a preliminary, unverified machine read.
- One Observation per lesion with components, not the mapping's group Observation with member
  Observations and BodyStructure/ImagingSelection foci: those need R5-only elements
  (``bodyStructure``, ImagingSelection), and one resource per lesion reads the same in R4B and
  R5. Axes are the sides of the lesion's largest detection box (not a segmented long axis),
  rounded to 0.1 mm as the JSON results state them.
- The study date is given as a date: a FHIR dateTime with a time needs a time zone, which DICOM
  StudyTime does not state.
- Media type ``application/fhir+json``, as the output contract has every artifact carry its
  output's media type. The JSON alone does not say which release it is; FHIR's own way is the
  parameter ``fhirVersion=4.3`` (or ``5.0``), which the route can add from the option
  (``fhir_media_type``).
- Images whose headers name two patients are refused: a report is about one patient.
- Validation happens at construction (fhir.resources); a resource that does not validate is a
  refusal whose message names the element and the kind of problem, never the value. The PDF's
  base64 is the one part left out of validation (made here from bytes, valid by construction):
  see ``_validated_json``.
- fhir.resources builds its classes on first import (about 0.3 s per release); a long-running
  process can pay that at start with ``preload()``.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import logging
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from pydantic import ValidationError

from mriscribe import __version__
from mriscribe.analysis import Analysis
from mriscribe.imaging.patient import FHIR_READER
from mriscribe.outputs import codes
from mriscribe.outputs.base import Artifact, OutputRefusedError, Rendering
from mriscribe.outputs.dicom_source import MANUFACTURER, patient_key, refuse_several_patients
from mriscribe.report.facts import LesionFact
from mriscribe.report.wording import study_result

log = logging.getLogger(__name__)

OUTPUT_NAME = "fhir"
JSON_MEDIA_TYPE = "application/fhir+json"
Json = dict[str, Any]

PRELIMINARY_NOTE = (
    "Preliminary, unverified machine read by mriscribe (an automated brain-tumour detector): "
    "not a diagnosis; a radiologist must review the images."
)
NEGATIVE_NOTE = "An automated negative result does not exclude a tumour."
INDETERMINATE_NOTE = (
    "No tumour was detected, but at least one image had no detection at all, so this is not a "
    "normal result."
)
BOX_NOTE = (
    "Long and short axis are the sides of the detection box on image {image}, the image where "
    "the lesion is largest, not a segmented diameter."
)
ESTIMATED_NOTE = (
    "Sizes are estimates: the source stated no pixel spacing, so the configured default was used."
)
_GENDERS = {"M": "male", "F": "female", "O": "other"}
MIXED_NOTE = (
    "The images do not all come from DICOM files naming the same patient (some are of another "
    "format or name no patient), so this report names no patient, study or order: the "
    "findings of images without a patient must not be filed under one."
)


@dataclass(frozen=True)
class FhirVersion:
    """A FHIR release as fhir.resources packages it and as the media type names it."""

    name: str
    package: str
    mime_version: str

    def model(self, resource_type: str) -> Any:
        """The fhir.resources class of ``resource_type`` in this release."""
        module = importlib.import_module(f"{self.package}.{resource_type.lower()}")
        return getattr(module, resource_type)

    @property
    def r5(self) -> bool:
        return self.name == "R5"


VERSIONS = {
    "R4B": FhirVersion("R4B", "fhir.resources.R4B", "4.3"),
    "R5": FhirVersion("R5", "fhir.resources", "5.0"),
}
DEFAULT_VERSION = "R4B"
# The classes a bundle is made of (fhir.resources imports each on first use).
MODEL_TYPES = (
    "Bundle",
    "DiagnosticReport",
    "Observation",
    "Device",
    "Patient",
    "Provenance",
    "Annotation",
    "Attachment",
    "CodeableConcept",
    "Coding",
    "HumanName",
    "Identifier",
    "Meta",
    "Narrative",
    "Period",
    "Quantity",
    "Reference",
)


@dataclass(frozen=True)
class Context:
    """What the bundle says about where the images came from, opened from the sealed DICOM
    headers: the one patient's details (None without any), the studies (UIDs in first-use
    order), their dates and accession numbers, and each image's study."""

    patient: Mapping[str, str] | None
    studies: tuple[str, ...]
    study_dates: tuple[date, ...]
    accessions: tuple[str, ...]
    image_studies: Mapping[int, str]
    mixed: bool = False


@dataclass(frozen=True)
class FhirBundle:
    name: str = OUTPUT_NAME
    summary: str = (
        "a FHIR Bundle (R4B, or R5 with fhir_version=R5): preliminary DiagnosticReport with the "
        "PDF, an Observation per lesion, the algorithm as Device"
    )
    media_type: str = JSON_MEDIA_TYPE
    needs_images: bool = True  # the presented form is the PDF, which draws the images
    needs_dicom: bool = False

    def render(self, rendering: Rendering) -> tuple[Artifact, ...]:
        version = _version(rendering.options)
        pdf = rendering.artifact("pdf").data
        started = time.perf_counter()
        body = build_bundle(rendering, version, pdf)
        log.debug(
            "fhir bundle %s: %d bytes in %.1f ms",
            version.name,
            len(body),
            (time.perf_counter() - started) * 1e3,
        )
        return (Artifact("fhir-bundle.json", self.media_type, body),)


def _version(options: Mapping[str, Any]) -> FhirVersion:
    """The FHIR release the caller chose (R4B unless ``fhir_version`` says R5)."""
    chosen = options.get("fhir_version")
    if chosen is None:
        return VERSIONS[DEFAULT_VERSION]
    if isinstance(chosen, str):
        for name, version in VERSIONS.items():
            if chosen.strip().upper() == name:
                return version
    raise OutputRefusedError(OUTPUT_NAME, "the option fhir_version must be R4B (the default) or R5")


def preload(releases: Iterable[str] = tuple(VERSIONS)) -> None:
    """Import the fhir.resources classes the bundle uses, so that the first bundle does not pay
    for it (a server can call this at start, in the background)."""
    for name in releases:
        for model_type in MODEL_TYPES:
            VERSIONS[name].model(model_type)


def fhir_media_type(options: Mapping[str, Any]) -> str:
    """The media type with FHIR's version parameter for the release ``options`` choose
    (``application/fhir+json; fhirVersion=4.3``), for a route's Content-Type."""
    return f"{JSON_MEDIA_TYPE}; fhirVersion={_version(options).mime_version}"


def build_bundle(rendering: Rendering, version: FhirVersion, pdf: bytes) -> bytes:
    """The bundle as JSON bytes; OutputRefusedError when the images name several patients or a
    resource does not validate (the message names no value)."""
    analysis = rendering.analysis
    context = _context(analysis)
    created = _aware(rendering.created)
    ids = _Ids()
    entries: list[tuple[str, Json]] = []

    device = _device(analysis, version)
    entries.append((ids.new("device"), device))
    patient = _patient(context.patient) if context.patient is not None else None
    if patient is not None:
        entries.append((ids.new("patient"), patient))
    shared = _Shared(
        subject=_ref(ids["patient"]) if patient is not None else None,
        device=_ref(ids["device"]),
        issued=_instant(created),
        effective=_effective(context.study_dates),
        orders=[_order_ref(number) for number in context.accessions],
    )
    observations = _observations(rendering, context, shared)
    for key, observation in observations:
        entries.append((ids.new(key), observation))
    result_urls = [ids[key] for key, _observation in observations]
    stand_in = _stand_in()
    pdf_data, pdf_hash = _pdf_base64(pdf)
    form = _pdf_attachment(stand_in, pdf_hash, created)
    report = _report(analysis, version, context, shared, form, result_urls)
    entries.insert(0, (ids.new("report"), report))
    provenance = _provenance(context, created, [ids["report"], *result_urls], ids["device"])
    entries.append((ids.new("provenance"), provenance))

    bundle = {
        "resourceType": "Bundle",
        "identifier": {"system": codes.URI_SYSTEM, "value": f"urn:uuid:{uuid.uuid4()}"},
        "type": "collection",
        "timestamp": _instant(created),
        "entry": [
            {"fullUrl": url, "resource": _with_id(url, resource)} for url, resource in entries
        ],
    }
    return _validated_json(version, bundle, stand_in, pdf_data)


@dataclass(frozen=True)
class _Shared:
    """What the report and every observation say alike."""

    subject: Json | None
    device: Json
    issued: str
    effective: Json
    orders: list[Json]


class _Ids:
    """The bundle's ``urn:uuid:`` full URLs, by what they name."""

    def __init__(self) -> None:
        self._urls: dict[str, str] = {}

    def new(self, key: str) -> str:
        self._urls[key] = f"urn:uuid:{uuid.uuid4()}"
        return self._urls[key]

    def __getitem__(self, key: str) -> str:
        return self._urls[key]


# --- where the images came from -------------------------------------------------------------


def _context(analysis: Analysis) -> Context:
    """The sealed DICOM details of the analysed images: one patient at most (several refuse),
    their studies, study dates and accession numbers. An upload that mixes images of a
    DICOM patient with images without one (another format, or a header naming no patient), or
    DICOM images with images of another format, is ``mixed``: its context is empty (no
    patient, study, date or order), since the findings of an image without a patient must not
    be filed under another image's patient or study."""
    patients: dict[tuple[str, ...], Mapping[str, str]] = {}
    keys: list[tuple[str, ...]] = []
    kinds: set[str] = set()  # "other" format, "anonymous" DICOM, "named" DICOM
    studies: dict[str, None] = {}
    dates: dict[date, None] = {}
    accessions: dict[str, None] = {}
    image_studies: dict[int, str] = {}
    for image in analysis.images:
        source = image.slice.source
        if source is None or source.format != "DICOM":
            kinds.add("other")
            continue
        if source.study_uid:
            studies[source.study_uid] = None
            image_studies[image.number] = source.study_uid
        if not source.patient:
            kinds.add("anonymous")
            continue
        details = source.patient.open(FHIR_READER)
        key = patient_key(details)
        keys.append(key)
        kinds.add("named" if any(key) else "anonymous")
        if any(key):
            patients.setdefault(key, details)
        study_date = _dicom_date(details.get("StudyDate", ""))
        if study_date is not None:
            dates[study_date] = None
        if details.get("AccessionNumber"):
            accessions[details["AccessionNumber"]] = None
    refuse_several_patients(OUTPUT_NAME, keys)
    if len(kinds) > 1:
        return Context(None, (), (), (), {}, mixed=True)
    return Context(
        patient=next(iter(patients.values()), None),
        studies=tuple(studies),
        study_dates=tuple(sorted(dates)),
        accessions=tuple(accessions),
        image_studies=image_studies,
    )


def _dicom_date(text: str) -> date | None:
    """A DICOM DA value (YYYYMMDD; the old YYYY.MM.DD too) as a date, None if it is not one."""
    digits = text.strip().replace(".", "")
    if not re.fullmatch(r"\d{8}", digits):
        return None
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None


def _patient(details: Mapping[str, str]) -> Json | None:
    """The Patient the DICOM header states (identifier, name, birth date, gender), or None
    when it states none of them."""
    patient: Json = {}
    patient_id = details.get("PatientID", "").strip()
    if patient_id:
        identifier: Json = {"value": patient_id}
        issuer = details.get("IssuerOfPatientID", "").strip()
        if issuer:
            identifier["assigner"] = {"display": issuer}
        patient["identifier"] = [identifier]
    name = _human_name(details.get("PatientName", ""))
    if name:
        patient["name"] = [name]
    gender = _GENDERS.get(details.get("PatientSex", "").strip().upper())
    if gender:
        patient["gender"] = gender
    birth = _dicom_date(details.get("PatientBirthDate", ""))
    if birth is not None:
        patient["birthDate"] = birth.isoformat()
    return {"resourceType": "Patient", **patient} if patient else None


def _human_name(person_name: str) -> Json:
    """A DICOM PN (its alphabetic group: family^given^middle^prefix^suffix) as a HumanName."""
    alphabetic = person_name.split("=", 1)[0]
    parts = [part.strip() for part in alphabetic.split("^")] + [""] * 5
    family, given, middle, prefix, suffix = parts[:5]
    name: Json = {}
    if family:
        name["family"] = family
    givens = [part for part in (given, *middle.split()) if part]
    if givens:
        name["given"] = givens
    if prefix:
        name["prefix"] = [prefix]
    if suffix:
        name["suffix"] = [suffix]
    return name


# --- the algorithm ---------------------------------------------------------------------------


def _device(analysis: Analysis, version: FhirVersion) -> Json:
    """The detector as a Device (TID 4019 Algorithm Identification): name, versions, the
    model file's SHA-256, thresholds; R4B ``deviceName`` and one ``type``, R5 ``name`` and
    ``displayName`` and a list of types."""
    model = analysis.model
    device: Json = {"resourceType": "Device", "manufacturer": MANUFACTURER}
    if model.sha256:
        device["identifier"] = [
            {"type": {"text": "SHA-256 of the model file"}, "value": model.sha256}
        ]
    kind = {"text": "brain tumour detection algorithm (object detector)"}
    if version.r5:
        device["displayName"] = model.name
        device["name"] = [{"value": model.name, "type": "user-friendly-name"}]
        device["type"] = [kind]
    else:
        device["deviceName"] = [
            {"name": model.name, "type": "model-name"},
            {"name": MANUFACTURER, "type": "manufacturer-name"},
        ]
        device["type"] = kind
    versions = [{"type": {"text": "mriscribe software"}, "value": __version__}]
    if model.version:
        versions.insert(0, {"type": _concept(codes.ALGORITHM_VERSION), "value": model.version})
    device["version"] = versions
    device["property"] = [
        _device_property("confidence threshold", analysis.conf_threshold, version),
        _device_property("IoU threshold", analysis.iou_threshold, version),
    ]
    if model.description:
        device["note"] = [{"text": model.description}]
    return device


def _device_property(name: str, value: float, version: FhirVersion) -> Json:
    quantity = {"value": _decimal(value, 4)}
    return {
        "type": {"coding": [codes.ALGORITHM_PARAMETERS.fhir()], "text": name},
        "valueQuantity": quantity if version.r5 else [quantity],
    }


# --- observations ----------------------------------------------------------------------------


def _observations(
    rendering: Rendering, context: Context, shared: _Shared
) -> list[tuple[str, Json]]:
    """One Observation per lesion; without any, the study's result as the DICOM SR states it:
    Neoplasm: Absent for a negative study, Neoplasm: Undetermined for an indeterminate one."""
    analysis = rendering.analysis
    if analysis.facts.lesions:
        return [
            (f"lesion {lesion.id}", _lesion_observation(rendering, lesion, context, shared))
            for lesion in analysis.facts.lesions
        ]
    result = study_result(analysis.facts)
    if result == "negative":
        return [("negative", _result_observation(context, shared, codes.ABSENT, NEGATIVE_NOTE))]
    if result == "indeterminate":
        return [
            (
                "indeterminate",
                _result_observation(context, shared, codes.UNDETERMINED, INDETERMINATE_NOTE),
            )
        ]
    return []


def _observation_base(shared: _Shared, studies: Sequence[str], category: Iterable[Json]) -> Json:
    observation: Json = {
        "resourceType": "Observation",
        "meta": {"security": [codes.AI_ASSERTED.fhir()]},
        "status": "preliminary",
        "category": [{"coding": [coding]} for coding in category],
    }
    if shared.orders:
        observation["basedOn"] = shared.orders
    if studies:
        observation["partOf"] = [_study_ref(uid) for uid in studies]
    if shared.subject is not None:
        observation["subject"] = shared.subject
    observation.update(shared.effective)
    observation["issued"] = shared.issued
    observation["device"] = shared.device
    return observation


def _lesion_observation(
    rendering: Rendering, lesion: LesionFact, context: Context, shared: _Shared
) -> Json:
    """A lesion as the SR mapping's measurement group: tracking identifiers, finding type and
    site, the largest box's sides, certainty, laterality."""
    studies = list(
        dict.fromkeys(
            context.image_studies[number]
            for number in lesion.images
            if number in context.image_studies
        )
    )
    observation = _observation_base(
        shared, studies, (codes.IMAGING.fhir(), codes.MEASUREMENT_GROUP.fhir())
    )
    tracking_uid = rendering.tracking_uid(lesion.id)
    observation["identifier"] = [
        {
            "type": _concept(codes.TRACKING_UID),
            "system": codes.DICOM_UID_SYSTEM,
            "value": f"urn:oid:{tracking_uid}",
        },
        {
            "type": _concept(codes.TRACKING_IDENTIFIER),
            "value": rendering.tracking_identifier(lesion.id),
        },
    ]
    finding = codes.FINDING_TYPES.get(lesion.class_name)
    observation["code"] = _concept(finding, lesion.class_name)
    site = codes.FINDING_SITES.get(lesion.class_name)
    if site is not None:
        observation["bodySite"] = _concept(site)
    largest = lesion.largest
    if largest.size_estimated:
        observation["method"] = _concept(codes.ESTIMATED)
    if studies:
        observation["derivedFrom"] = [_study_ref(uid) for uid in studies]
    long_axis = max(largest.width_mm, largest.height_mm)
    short_axis = min(largest.width_mm, largest.height_mm)
    components = [
        _quantity_component(codes.LONG_AXIS, long_axis, codes.MILLIMETRE),
        _quantity_component(codes.SHORT_AXIS, short_axis, codes.MILLIMETRE),
        _quantity_component(codes.CERTAINTY_OF_FINDING, lesion.confidence * 100, codes.PERCENT),
    ]
    laterality = _laterality(lesion)
    if laterality is not None:
        components.append({"code": _concept(codes.LATERALITY), "valueCodeableConcept": laterality})
    observation["component"] = components
    notes = [BOX_NOTE.format(image=largest.image_number)]
    if largest.size_estimated:
        notes.append(ESTIMATED_NOTE)
    observation["note"] = [{"text": text} for text in notes]
    return observation


def _laterality(lesion: LesionFact) -> Json | None:
    side = codes.SIDES.get(lesion.side or "")
    if side is not None:
        return _concept(side)
    if lesion.side == "midline":
        return {"text": "midline"}
    return None


def _result_observation(
    context: Context, shared: _Shared, result: codes.Concept, note: str
) -> Json:
    """The study's result as a qualitative evaluation (the SR's, TID 1500 row 12): Neoplasm,
    value Absent or Undetermined."""
    observation = _observation_base(shared, context.studies, (codes.IMAGING.fhir(),))
    observation["code"] = _concept(codes.NEOPLASM)
    observation["valueCodeableConcept"] = _concept(result)
    observation["bodySite"] = _concept(codes.BRAIN)
    if context.studies:
        observation["derivedFrom"] = [_study_ref(uid) for uid in context.studies]
    observation["note"] = [{"text": note}]
    return observation


def _quantity_component(code: codes.Concept, value: float, unit: codes.Concept) -> Json:
    return {
        "code": _concept(code),
        "valueQuantity": {
            "value": _decimal(value, 1),
            "unit": unit.value,
            "system": codes.FHIR_SYSTEMS[unit.scheme],
            "code": unit.value,
        },
    }


# --- the report and its provenance -----------------------------------------------------------


def _report(
    analysis: Analysis,
    version: FhirVersion,
    context: Context,
    shared: _Shared,
    presented_form: Json,
    results: Sequence[str],
) -> Json:
    """The preliminary DiagnosticReport: conclusion, codes and the PDF; its notes say it is a
    preliminary machine read, and why it names no patient or study where the upload mixed
    images with and without one (``Context.mixed``)."""
    notes = (PRELIMINARY_NOTE, MIXED_NOTE) if context.mixed else (PRELIMINARY_NOTE,)
    report: Json = {
        "resourceType": "DiagnosticReport",
        "meta": {"security": [codes.AI_ASSERTED.fhir()]},
        "text": {"status": "additional", "div": _narrative(*notes)},
    }
    if shared.orders:
        report["basedOn"] = shared.orders
    report["status"] = "preliminary"
    report["category"] = [{"coding": [codes.RADIOLOGY.fhir()]}]
    report["code"] = {
        "coding": [codes.DIAGNOSTIC_IMAGING_STUDY.fhir()],
        "text": "Brain MRI: automated tumour detection",
    }
    if shared.subject is not None:
        report["subject"] = shared.subject
    report.update(shared.effective)
    report["issued"] = shared.issued
    if context.studies:
        report["study" if version.r5 else "imagingStudy"] = [
            _study_ref(uid) for uid in context.studies
        ]
    if results:
        report["result"] = [_ref(url) for url in results]
    if version.r5:
        report["note"] = [{"text": note} for note in notes]
    impression = analysis.report.sections.get("IMPRESSION", "").strip()
    if impression:
        report["conclusion"] = impression
    conclusion_codes = _conclusion_codes(analysis)
    if conclusion_codes:
        report["conclusionCode"] = conclusion_codes
    report["presentedForm"] = [presented_form]
    return report


def _conclusion_codes(analysis: Analysis) -> list[Json]:
    """The finding types of the lesions found (first lesion first), each once."""
    classes = dict.fromkeys(lesion.class_name for lesion in analysis.facts.lesions)
    return [_concept(codes.FINDING_TYPES.get(name), name) for name in classes]


def _pdf_attachment(data: str, sha1: str, created: datetime) -> Json:
    return {
        "contentType": "application/pdf",
        "language": "en",
        "data": data,
        "hash": sha1,
        "title": "mriscribe report (preliminary, unverified)",
        "creation": _instant(created),
    }


def _stand_in() -> str:
    """A short, unique, canonical base64 text (18 bytes, so no padding) that stands in for the
    PDF's data while the bundle is validated (see _validated_json)."""
    return base64.b64encode(b"mriscribe:" + uuid.uuid4().bytes[:8]).decode("ascii")


def _pdf_base64(pdf: bytes) -> tuple[str, str]:
    """The PDF's base64 and the base64 of its SHA-1 (what FHIR's Attachment.hash holds)."""
    digest = hashlib.sha1(pdf).digest()  # the hash FHIR defines, not for security
    return base64.b64encode(pdf).decode("ascii"), base64.b64encode(digest).decode("ascii")


def _provenance(context: Context, created: datetime, targets: Sequence[str], device: str) -> Json:
    """The algorithm as author of the report and observations, from the imaging studies."""
    provenance: Json = {
        "resourceType": "Provenance",
        "target": [_ref(url) for url in targets],
        "recorded": _instant(created),
        "agent": [{"type": {"coding": [codes.AUTHOR.fhir()]}, "who": _ref(device)}],
    }
    if context.studies:
        provenance["entity"] = [
            {"role": codes.PROVENANCE_SOURCE, "what": _study_ref(uid)} for uid in context.studies
        ]
    return provenance


# --- small pieces ----------------------------------------------------------------------------


def _concept(concept: codes.Concept | None, text: str | None = None) -> Json:
    """A CodeableConcept: the concept's coding (and ``text``), or ``text`` alone when there is
    no code for it (a class no code is known for: nothing is invented)."""
    value: Json = {}
    if concept is not None:
        value["coding"] = [concept.fhir()]
    if text or concept is None:
        value["text"] = text or ""
    return value


def _ref(url: str) -> Json:
    return {"reference": url}


def _study_ref(study_uid: str) -> Json:
    """A logical reference to the ImagingStudy with this Study Instance UID."""
    return {
        "type": "ImagingStudy",
        "identifier": {
            "type": _concept(codes.STUDY_INSTANCE_UID),
            "system": codes.DICOM_UID_SYSTEM,
            "value": f"urn:oid:{study_uid}",
        },
    }


def _order_ref(accession: str) -> Json:
    """A logical reference to the order (ServiceRequest) by its accession number."""
    return {
        "type": "ServiceRequest",
        "identifier": {"type": {"coding": [codes.ACCESSION.fhir()]}, "value": accession},
    }


def _effective(dates: Sequence[date]) -> Json:
    """The study date (a period over several studies' dates), or nothing when unknown."""
    if not dates:
        return {}
    if len(dates) == 1:
        return {"effectiveDateTime": dates[0].isoformat()}
    return {"effectivePeriod": {"start": dates[0].isoformat(), "end": dates[-1].isoformat()}}


def _narrative(*texts: str) -> str:
    paragraphs = "".join(
        "<p>" + text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") + "</p>"
        for text in texts
    )
    return f'<div xmlns="http://www.w3.org/1999/xhtml">{paragraphs}</div>'


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _instant(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def _decimal(value: float, places: int) -> float:
    return round(float(value), places)


def _with_id(url: str, resource: Json) -> Json:
    """The resource with its id: the UUID of its ``urn:uuid:`` full URL."""
    return {
        "resourceType": resource["resourceType"],
        "id": url.removeprefix("urn:uuid:"),
        **resource,
    }


def _validated_json(version: FhirVersion, bundle: Json, stand_in: str, pdf_data: str) -> bytes:
    """The bundle built with the release's fhir.resources classes (which validate it) and
    serialised, the PDF's base64 put in place of its stand-in afterwards; a validation problem
    becomes a refusal naming where, never what.

    The PDF's base64 is made here from bytes, so it is valid by construction: validating it
    would decode and re-encode a megabyte or more (about 8 ms for a 24-image study, most of the
    bundle's time) to learn nothing.
    """
    problem: str | None = None
    try:
        model = version.model("Bundle").model_validate(bundle)
    except ValidationError as exc:
        problem = _problem(exc)
    if problem is not None:
        raise OutputRefusedError(OUTPUT_NAME, f"the FHIR bundle does not validate: {problem}")
    text = model.model_dump_json(by_alias=True, exclude_none=True)
    quoted = f'"{stand_in}"'
    if text.count(quoted) != 1:
        raise RuntimeError("the PDF's stand-in is not in the FHIR bundle exactly once")
    return text.replace(quoted, f'"{pdf_data}"').encode()


def _problem(exc: ValidationError) -> str:
    """Where and what kind of problem (pydantic's location and error type), no values."""
    found = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False)[:3]:
        location = ".".join(str(part) for part in error.get("loc", ()))
        found.append(f"{location} ({error.get('type', 'invalid')})")
    return "; ".join(found) or "invalid"


OUTPUT = FhirBundle()
