"""The FHIR bundle: parsed back with fhir.resources (R4B and R5), it files the report against
the source's patient and study, carries the PDF, states each lesion as the JSON does, names the
algorithm, and holds patient data only where the source stated it."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fhir.resources.bundle import Bundle as BundleR5
from fhir.resources.R4B.bundle import Bundle as BundleR4B
from pydantic import BaseModel
from pydicom.uid import generate_uid

from dicom_files import dataset, to_bytes
from mriscribe.analysis import Analysis
from mriscribe.outputs import OutputRefusedError, Rendering, codes, render
from mriscribe.outputs import fhir_bundle as fb
from mriscribe.pipeline import InputFile, analyze
from result_studies import (
    LEFT,
    PATIENT,
    RIGHT_LOW,
    SETTINGS,
    estimated_analysis,
    mixed_analysis,
    needs_colin27,
    nifti_analysis,
    png_analysis,
    pydicom_analysis,
    series_analysis,
    sparse_analysis,
)

BUNDLES = {"R4B": BundleR4B, "R5": BundleR5}
STUDIES: dict[str, Callable[[], Analysis]] = {
    "one lesion": lambda: series_analysis(),
    "two lesions": lambda: series_analysis((LEFT, RIGHT_LOW)),
    "negative": lambda: series_analysis(()),
    "estimated": estimated_analysis,
    "MR_small": lambda: pydicom_analysis("MR_small.dcm"),
    "multi-frame": lambda: pydicom_analysis("emri_small.dcm"),
    "no spacing": lambda: pydicom_analysis(drop_spacing=True),
    "no finding": sparse_analysis,
    "png": png_analysis,
    "nifti": nifti_analysis,
}
COLIN27_STUDIES = {"one lesion", "two lesions", "negative", "estimated", "png", "nifti"}
# What the test series' headers say about the patient: none of it may reach a log line, and
# none of it may be in a bundle made from images without a DICOM header.
SECRETS = (
    "Testperson",
    "Fictional",
    "FICT-0042",
    "19700101",
    "1970-01-01",
    "ACC-TEST-7",
    "Doctor",
)
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"


@dataclass(frozen=True)
class Made:
    """One rendering's bundle: the rendering, the bytes, the JSON and the parsed model."""

    rendering: Rendering
    data: bytes
    json: dict[str, Any]
    model: Any

    def resources(self, resource_type: str) -> list[dict[str, Any]]:
        return [
            entry["resource"]
            for entry in self.json["entry"]
            if entry["resource"]["resourceType"] == resource_type
        ]

    def one(self, resource_type: str) -> dict[str, Any]:
        found = self.resources(resource_type)
        assert len(found) == 1, f"{len(found)} {resource_type} resources"
        return found[0]

    def resolve(self, reference: dict[str, Any]) -> dict[str, Any]:
        urls = {entry["fullUrl"]: entry["resource"] for entry in self.json["entry"]}
        return urls[reference["reference"]]


@cache
def made(study: str, version: str = "R4B") -> Made:
    """The study's bundle in ``version`` (one rendering per study and version)."""
    rendering = Rendering(STUDIES[study](), options={"fhir_version": version})
    artifact = rendering.artifact("fhir")
    assert artifact.name == "fhir-bundle.json"
    assert artifact.media_type == "application/fhir+json"
    model = BUNDLES[version].model_validate_json(artifact.data)
    return Made(rendering, artifact.data, json.loads(artifact.data), model)


def study_param(name: str) -> Any:
    marks = [needs_colin27] if name in COLIN27_STUDIES else []
    return pytest.param(name, marks=marks, id=name)


def coding(concept: dict[str, Any]) -> tuple[str, str]:
    (first,) = concept["coding"]
    return first["system"], first["code"]


def component(observation: dict[str, Any], concept: codes.Concept) -> dict[str, Any]:
    wanted = (codes.FHIR_SYSTEMS[concept.scheme], concept.value)
    found = [c for c in observation["component"] if coding(c["code"]) == wanted]
    assert len(found) == 1, f"{len(found)} components {concept.meaning}"
    return found[0]


def references(model: BaseModel, path: str = "") -> Iterator[tuple[str, list[str], Any]]:
    """Every Reference in a fhir.resources model with the resource types its element allows
    (as the FHIR specification's element definition lists them)."""
    for name, field in type(model).model_fields.items():
        value = getattr(model, name, None)
        if value is None:
            continue
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        allowed = extra.get("enum_reference_types")
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, BaseModel):
                continue
            if allowed:
                yield f"{path}.{name}", list(allowed), item
            yield from references(item, f"{path}.{name}")


# --- the report ------------------------------------------------------------------------------


@needs_colin27
@pytest.mark.parametrize("version", ["R4B", "R5"])
def test_the_report_is_filed_against_the_sources_patient_and_study(version):
    bundle = made("one lesion", version)
    analysis = bundle.rendering.analysis
    assert bundle.json["type"] == "collection"
    report = bundle.one("DiagnosticReport")
    assert report["status"] == "preliminary"
    assert [coding(c) for c in report["category"]] == [
        ("http://terminology.hl7.org/CodeSystem/v2-0074", "RAD")
    ]
    assert coding(report["code"]) == ("http://loinc.org", "18748-4")
    # The subject is the Patient the DICOM header names, with nothing added.
    patient = bundle.resolve(report["subject"])
    assert patient["resourceType"] == "Patient"
    assert [i["value"] for i in patient["identifier"]] == [PATIENT["PatientID"]]
    assert patient["name"] == [{"family": "Testperson", "given": ["Fictional"]}]
    assert patient["birthDate"] == "1970-01-01" and patient["gender"] == "other"
    assert set(patient) == {"resourceType", "id", "identifier", "name", "birthDate", "gender"}
    # The study by its Study Instance UID, the order by its accession number.
    study_uid = analysis.images[0].slice.source.study_uid
    studies = report["study" if version == "R5" else "imagingStudy"]
    assert [s["identifier"]["value"] for s in studies] == [f"urn:oid:{study_uid}"]
    assert {s["identifier"]["system"] for s in studies} == {"urn:dicom:uid"}
    assert [o["identifier"]["value"] for o in report["basedOn"]] == [PATIENT["AccessionNumber"]]
    assert report["effectiveDateTime"] == "2026-01-01"
    issued = bundle.model.entry[0].resource.issued
    assert abs(issued - bundle.rendering.created) < timedelta(milliseconds=1)
    # What the report says, coded and as the PDF.
    assert report["conclusion"] == analysis.report.sections["IMPRESSION"].strip()
    assert [coding(c) for c in report["conclusionCode"]] == [(SNOMED, codes.GLIOMA.value)]
    (form,) = report["presentedForm"]
    pdf = bundle.rendering.artifact("pdf").data
    assert form["contentType"] == "application/pdf"
    assert base64.b64decode(form["data"], validate=True) == pdf
    assert base64.b64decode(form["hash"]) == hashlib.sha1(pdf).digest()
    assert [bundle.resolve(r)["resourceType"] for r in report["result"]] == ["Observation"]


@needs_colin27
def test_the_release_is_the_one_asked_for():
    r4b, r5 = made("one lesion", "R4B"), made("one lesion", "R5")
    assert "imagingStudy" in r4b.one("DiagnosticReport")
    assert "study" in r5.one("DiagnosticReport") and "note" in r5.one("DiagnosticReport")
    assert "deviceName" in r4b.one("Device") and "displayName" in r5.one("Device")
    # Each parses only as its own release: R4B and R5 differ in these resources.
    with pytest.raises(ValueError):
        BundleR5.model_validate_json(r4b.data)
    with pytest.raises(ValueError):
        BundleR4B.model_validate_json(r5.data)
    assert fb.fhir_media_type({}) == "application/fhir+json; fhirVersion=4.3"
    assert fb.fhir_media_type({"fhir_version": "R5"}) == "application/fhir+json; fhirVersion=5.0"


@pytest.mark.parametrize("version", ["R4", "r6", "", 5, ["R5"]])
def test_an_unknown_release_is_refused(version):
    with pytest.raises(OutputRefusedError) as caught:
        render(pydicom_analysis(), ["fhir"], {"fhir_version": version})
    assert caught.value.output == "fhir"
    assert str(caught.value) == "fhir: the option fhir_version must be R4B (the default) or R5"


def test_lower_case_release_names_are_read():
    made_r5 = render(pydicom_analysis(), ["fhir"], {"fhir_version": "r5"})["fhir"][0]
    BundleR5.model_validate_json(made_r5.data)


# --- the lesions -----------------------------------------------------------------------------


@needs_colin27
@pytest.mark.parametrize("study", ["one lesion", "two lesions"])
@pytest.mark.parametrize("version", ["R4B", "R5"])
def test_each_lesion_is_an_observation_measured_as_the_json_states_it(study, version):
    bundle = made(study, version)
    results = json.loads(bundle.rendering.artifact("json").data)
    lesions = results["lesions"]
    assert lesions, "the study has lesions"
    observations = bundle.resources("Observation")
    assert len(observations) == len(lesions)
    report = bundle.one("DiagnosticReport")
    assert {r["reference"] for r in report["result"]} == {
        e["fullUrl"] for e in bundle.json["entry"] if e["resource"]["resourceType"] == "Observation"
    }
    for lesion in lesions:
        uid = f"urn:oid:{bundle.rendering.tracking_uid(lesion['id'])}"
        (observation,) = [
            o for o in observations if any(i["value"] == uid for i in o["identifier"])
        ]
        tracking = {coding(i["type"]): i["value"] for i in observation["identifier"]}
        assert tracking == {
            (codes.FHIR_SYSTEMS[codes.DICOM], "112040"): uid,
            (codes.FHIR_SYSTEMS[codes.DICOM], "112039"): f"Lesion {lesion['id']}",
        }
        assert observation["status"] == "preliminary"
        assert coding(observation["code"]) == (SNOMED, codes.FINDING_TYPES[lesion["class"]].value)
        assert coding(observation["bodySite"]) == (
            SNOMED,
            codes.FINDING_SITES[lesion["class"]].value,
        )
        width, height = lesion["largest"]["width_mm"], lesion["largest"]["height_mm"]
        for concept, expected in (
            (codes.LONG_AXIS, max(width, height)),
            (codes.SHORT_AXIS, min(width, height)),
        ):
            quantity = component(observation, concept)["valueQuantity"]
            assert quantity["value"] == pytest.approx(expected, abs=0.05)
            assert (quantity["system"], quantity["code"], quantity["unit"]) == (UCUM, "mm", "mm")
        certainty = component(observation, codes.CERTAINTY_OF_FINDING)["valueQuantity"]
        assert certainty["value"] == pytest.approx(lesion["confidence"] * 100, abs=0.06)
        assert (certainty["system"], certainty["code"]) == (UCUM, "%")
        side = component(observation, codes.LATERALITY)["valueCodeableConcept"]
        expected_side = {"left": codes.LEFT, "right": codes.RIGHT}[lesion["side"]]
        assert coding(side) == (SNOMED, expected_side.value)
        assert "method" not in observation, "measured from the stated pixel spacing"
        assert bundle.resolve(observation["subject"])["resourceType"] == "Patient"
        assert bundle.resolve(observation["device"])["resourceType"] == "Device"
        study_uid = bundle.rendering.analysis.images[0].slice.source.study_uid
        for element in ("partOf", "derivedFrom"):
            assert [r["identifier"]["value"] for r in observation[element]] == [
                f"urn:oid:{study_uid}"
            ]
    if study == "two lesions":
        sides = {
            coding(component(o, codes.LATERALITY)["valueCodeableConcept"])[1] for o in observations
        }
        assert sides == {codes.LEFT.value, codes.RIGHT.value}


@needs_colin27
def test_the_algorithm_is_the_device_and_the_author():
    bundle = made("one lesion")
    model = bundle.rendering.analysis.model
    device = bundle.one("Device")
    assert device["manufacturer"] == "mriscribe"
    assert {"name": model.name, "type": "model-name"} in device["deviceName"]
    assert [i["value"] for i in device["identifier"]] == [model.sha256]
    assert model.version in [v["value"] for v in device["version"]]
    provenance = bundle.one("Provenance")
    (agent,) = provenance["agent"]
    assert bundle.resolve(agent["who"]) is device
    targets = {r["reference"] for r in provenance["target"]}
    assert targets == {
        e["fullUrl"]
        for e in bundle.json["entry"]
        if e["resource"]["resourceType"] in {"DiagnosticReport", "Observation"}
    }
    # A device is never a report's performer (FHIR allows people and organisations there).
    assert "performer" not in bundle.one("DiagnosticReport")
    for resource in (bundle.one("DiagnosticReport"), *bundle.resources("Observation")):
        assert resource["meta"]["security"][0]["code"] == "AIAST"


@needs_colin27
@pytest.mark.parametrize("study", ["png", "estimated"])
def test_an_estimated_size_says_so(study):
    bundle = made(study)
    observations = bundle.resources("Observation")
    lesions = bundle.rendering.analysis.facts.lesions
    assert len(observations) == len(lesions) >= 1
    assert all(fact.size_estimated for lesion in lesions for fact in lesion.detections)
    for observation in observations:
        assert coding(observation["method"]) == (SNOMED, codes.ESTIMATED.value)
        assert any("estimates" in note["text"] for note in observation["note"])
    if study == "estimated":  # a DICOM study: filed against its patient and study all the same
        assert bundle.one("Patient")["identifier"] == [{"value": PATIENT["PatientID"]}]
        for observation in observations:
            assert bundle.resolve(observation["subject"])["resourceType"] == "Patient"
            assert observation["partOf"][0]["type"] == "ImagingStudy"


# --- negative studies ------------------------------------------------------------------------


@pytest.mark.parametrize("study", [study_param("negative"), study_param("MR_small")])
def test_a_negative_study_states_neoplasm_absent_and_no_finding_code(study):
    bundle = made(study)
    report = bundle.one("DiagnosticReport")
    assert "conclusionCode" not in report
    assert report["conclusion"].startswith("Negative study")
    (observation,) = bundle.resources("Observation")
    assert coding(observation["code"]) == (SNOMED, codes.NEOPLASM.value)
    assert coding(observation["valueCodeableConcept"]) == (SNOMED, codes.ABSENT.value)
    assert "component" not in observation and "identifier" not in observation
    assert [bundle.resolve(r) for r in report["result"]] == [observation]


@pytest.mark.parametrize("study", ["no finding", "multi-frame"])
@pytest.mark.parametrize("version", ["R4B", "R5"])
def test_an_indeterminate_study_states_neoplasm_undetermined(study, version):
    bundle = made(study, version)
    facts = bundle.rendering.analysis.facts
    assert not facts.lesions and facts.unremarkable_images
    report = bundle.one("DiagnosticReport")
    assert report["conclusion"].startswith("Indeterminate study")
    assert "conclusionCode" not in report
    (observation,) = bundle.resources("Observation")
    assert coding(observation["code"]) == (SNOMED, codes.NEOPLASM.value)
    assert coding(observation["valueCodeableConcept"]) == (SNOMED, codes.UNDETERMINED.value)
    assert observation["valueCodeableConcept"]["coding"][0]["display"] == "Undetermined"
    assert coding(observation["bodySite"]) == (SNOMED, codes.BRAIN.value)
    assert "component" not in observation and "identifier" not in observation
    assert observation["status"] == "preliminary"
    assert observation["meta"]["security"][0]["code"] == "AIAST"
    assert any("not a normal result" in note["text"] for note in observation["note"])
    assert [bundle.resolve(r) for r in report["result"]] == [observation]
    (provenance,) = bundle.resources("Provenance")
    assert {r["reference"] for r in provenance["target"]} == {
        e["fullUrl"]
        for e in bundle.json["entry"]
        if e["resource"]["resourceType"] in ("DiagnosticReport", "Observation")
    }


def sr_result(rendering: Rendering) -> str:
    """The study's result the DICOM SR of the same rendering states (TID 1500 row 12)."""
    sr = pydicom.dcmread(io.BytesIO(rendering.artifact("dicom-sr").data))
    [evaluations] = [
        item
        for item in sr.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == codes.QUALITATIVE_EVALUATIONS.value
    ]
    [result] = evaluations.ContentSequence
    return str(result.ConceptCodeSequence[0].CodeValue)


@pytest.mark.parametrize(
    "study",
    [study_param(name) for name in ("one lesion", "negative", "MR_small", "multi-frame")]
    + [study_param("no finding")],
)
def test_the_bundle_states_the_srs_result(study):
    bundle = made(study)
    stated = sr_result(bundle.rendering)
    results = [
        o for o in bundle.resources("Observation") if coding(o["code"])[1] == codes.NEOPLASM.value
    ]
    if stated == codes.PRESENT.value:
        # A tumour: each lesion is an observation of its finding type; no Neoplasm result.
        assert not results and bundle.resources("Observation")
        assert len(bundle.resources("Observation")) == len(bundle.rendering.analysis.facts.lesions)
    else:
        (observation,) = results
        assert coding(observation["valueCodeableConcept"])[1] == stated


def test_a_header_with_fewer_details_gives_a_patient_with_fewer():
    bundle = made("MR_small")
    patient = bundle.one("Patient")
    assert patient["identifier"] == [{"value": "4MR1"}]
    assert patient["name"] == [{"family": "CompressedSamples", "given": ["MR1"]}]
    assert patient["gender"] == "female"
    assert "birthDate" not in patient, "the header states none: none is invented"
    report = bundle.one("DiagnosticReport")
    assert report["effectiveDateTime"] == "2004-08-26"
    assert "basedOn" not in report, "no accession number, no order"


# --- every input format ----------------------------------------------------------------------


@pytest.mark.parametrize("study", [study_param(name) for name in STUDIES])
@pytest.mark.parametrize("version", ["R4B", "R5"])
def test_every_reference_resolves_to_a_type_its_element_allows(study, version):
    bundle = made(study, version)
    urls = [entry["fullUrl"] for entry in bundle.json["entry"]]
    assert len(set(urls)) == len(urls) and all(u.startswith("urn:uuid:") for u in urls)
    types = {e["fullUrl"]: e["resource"]["resourceType"] for e in bundle.json["entry"]}
    checked = 0
    for path, allowed, reference in references(bundle.model):
        if reference.reference is None and reference.type is None:
            assert reference.display, path  # a name only (an identifier's assigner)
            continue
        target = types[reference.reference] if reference.reference else reference.type
        assert target in allowed or "Resource" in allowed, f"{path} -> {target}"
        checked += 1
    assert checked >= 4  # report -> observations, observations -> device, provenance


@pytest.mark.parametrize("study", [study_param("png"), study_param("nifti")])
@pytest.mark.parametrize("version", ["R4B", "R5"])
def test_without_a_dicom_header_there_is_no_patient_study_or_order(study, version):
    bundle = made(study, version)
    assert not bundle.resources("Patient")
    text = bundle.data.decode()
    for absent in ('"subject"', "ImagingStudy", "ServiceRequest", "urn:oid:1.", '"effective'):
        assert absent not in text
    for secret in SECRETS:
        assert secret not in text
    assert bundle.resources("Observation"), "the lesions are stated all the same"
    assert bundle.one("DiagnosticReport")["presentedForm"][0]["data"]


@needs_colin27
@pytest.mark.parametrize("version", ["R4B", "R5"])
def test_images_without_a_patient_beside_a_dicom_patients_file_no_finding_under_him(version):
    """A DICOM image of a patient and a PNG (no patient) in one upload: the PNG's tumour must
    not be filed under the DICOM patient or study, so the bundle names neither, and says why."""
    analysis = mixed_analysis()
    rendering = Rendering(analysis, options={"fhir_version": version})
    data = rendering.artifact("fhir").data
    bundle = json.loads(data)
    resources = [entry["resource"] for entry in bundle["entry"]]
    assert not [r for r in resources if r["resourceType"] == "Patient"]
    text = data.decode()
    for absent in ('"subject"', '"basedOn"', "urn:oid:1.", '"effective', '"partOf"'):
        assert absent not in text, absent
    assert [r for r in resources if r["resourceType"] == "Observation"]
    (report,) = [r for r in resources if r["resourceType"] == "DiagnosticReport"]
    assert "imagingStudy" not in report and "study" not in report
    assert "names no patient, study or order" in report["text"]["div"]
    if version == "R5":
        assert any("names no patient" in note["text"] for note in report["note"])


# --- privacy and refusals --------------------------------------------------------------------


@needs_colin27
def test_no_patient_data_reaches_a_log_line(caplog):
    rendering = Rendering(series_analysis(), options={"fhir_version": "R5"})
    with caplog.at_level(logging.DEBUG):
        rendering.artifact("fhir")
    ours = [r for r in caplog.records if r.name == fb.__name__]
    assert ours, "the FHIR output logs what it made"
    for record in caplog.records:
        line = record.getMessage() + (record.exc_text or "")
        for secret in SECRETS:
            assert secret not in line, f"{secret!r} in a log line of {record.name}"
    assert "FICT-0042" in rendering.artifact("fhir").data.decode(), "the bundle has them"


def _other_patient() -> bytes:
    ds = dataset("MR_small.dcm")
    ds.PatientID = "OTHER-SECRET-9"
    ds.PatientName = "Otherperson^Secret"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    return to_bytes(ds)


def test_images_of_two_patients_are_refused_without_naming_them():
    files = [
        InputFile("a.dcm", to_bytes(dataset("MR_small.dcm"))),
        InputFile("b.dcm", _other_patient()),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        analysis = analyze(files, SETTINGS)
    with pytest.raises(OutputRefusedError) as caught:
        render(analysis, ["fhir"])
    message = str(caught.value)
    assert message.startswith("fhir: the images name 2 different patients")
    for secret in ("OTHER-SECRET-9", "Otherperson", "4MR1", "CompressedSamples"):
        assert secret not in message
    assert caught.value.__context__ is None and caught.value.__cause__ is None


def test_a_resource_that_does_not_validate_is_refused_without_its_value():
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {"resourceType": "Patient", "birthDate": "Testperson^Fictional"}}],
    }
    with pytest.raises(OutputRefusedError) as caught:
        fb._validated_json(fb.VERSIONS["R4B"], bundle, "c3RhbmQtaW4", "")
    message = str(caught.value)
    assert message.startswith("fhir: the FHIR bundle does not validate: ")
    assert "entry.0.resource" in message and "birthDate" in message
    assert "Testperson" not in message and "Fictional" not in message
    assert caught.value.__context__ is None


def test_a_dicom_person_name_becomes_a_human_name():
    assert fb._human_name("Doe^Jane^Q R^Dr^III") == {
        "family": "Doe",
        "given": ["Jane", "Q", "R"],
        "prefix": ["Dr"],
        "suffix": ["III"],
    }
    assert fb._human_name("Yamada^Tarou=山田^太郎") == {"family": "Yamada", "given": ["Tarou"]}
    assert fb._human_name("^^^^") == {}
    assert fb._dicom_date("19700230") is None and fb._dicom_date("1970.01.02").day == 2


def test_a_patient_is_what_the_header_states_and_nothing_more():
    assert fb._patient(
        {
            "PatientID": " MRN-77 ",
            "IssuerOfPatientID": "HOSP_A",
            "PatientName": "Roe^Richard",
            "PatientBirthDate": "19851231",
            "PatientSex": "M",
            "StudyDescription": "MRI BRAIN",
        }
    ) == {
        "resourceType": "Patient",
        "identifier": [{"value": "MRN-77", "assigner": {"display": "HOSP_A"}}],
        "name": [{"family": "Roe", "given": ["Richard"]}],
        "gender": "male",
        "birthDate": "1985-12-31",
    }
    # An unknown sex and a date that is none are left out; no details, no Patient.
    assert fb._patient({"PatientID": "X", "PatientSex": "U", "PatientBirthDate": "1985"}) == {
        "resourceType": "Patient",
        "identifier": [{"value": "X"}],
    }
    assert fb._patient({"PatientSex": "F"}) == {"resourceType": "Patient", "gender": "female"}
    assert fb._patient({"StudyDate": "20260101"}) is None


PRELOAD_CHECK = """
import sys
from result_studies import pydicom_analysis
from mriscribe.outputs import Rendering, fhir_bundle
analysis = pydicom_analysis()
fhir_bundle.preload()
for version in ("R4B", "R5"):
    rendering = Rendering(analysis, options={"fhir_version": version})
    rendering.artifact("pdf")
    before = set(sys.modules)
    rendering.artifact("fhir")
    late = sorted(name for name in set(sys.modules) - before if name.startswith("fhir"))
    assert not late, late
"""


def test_preload_imports_every_class_a_bundle_needs():
    tests = str(Path(__file__).parent)
    done = subprocess.run(
        [sys.executable, "-c", PRELOAD_CHECK],
        capture_output=True,
        text=True,
        timeout=180,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]),
        },
    )
    assert done.returncode == 0, done.stderr[-2000:]
