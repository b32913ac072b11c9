"""Every code the DICOM and FHIR results use is real and lives in outputs/codes.py: the DICOM
PS3.16 ones are in pydicom's concept dictionary with the same meaning (letter for letter), every
SNOMED CT id is a concept id (partition 00), every LOINC code passes its mod-10 check digit, every
scheme has its FHIR system, and the FHIR-only codings name their system by URI."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from pydicom.sr._concepts_dict import concepts

import mriscribe.outputs as outputs
from mriscribe.outputs import codes

# An absolute URI (RFC 3986: a scheme, a colon, something after it).
URI = re.compile(r"^[a-z][a-z0-9+.-]*:\S+$")


def loinc_ok(code: str) -> bool:
    number, _, check = code.partition("-")
    total = 0
    for position, digit in enumerate(reversed(number)):
        value = int(digit) * (2 if position % 2 == 0 else 1)
        total += value // 10 + value % 10
    return int(check) == (10 - total % 10) % 10


def dictionary_meanings(scheme: str, value: str) -> list[str]:
    """The meanings pydicom's concept dictionary (DICOM PS3.16) gives ``value`` in ``scheme``."""
    return [entry[value][0] for entry in concepts.get(scheme, {}).values() if value in entry]


def test_the_loinc_check_digit_catches_a_changed_digit():
    assert loinc_ok("18748-4") and not loinc_ok("18748-5") and not loinc_ok("17848-4")


@pytest.mark.parametrize("concept", codes.ALL, ids=lambda c: f"{c.scheme}-{c.value}")
def test_every_code_is_checked(concept: codes.Concept):
    assert concept.value and concept.meaning
    assert URI.match(codes.FHIR_SYSTEMS[concept.scheme]), "every scheme has its FHIR system"
    if concept.scheme == codes.SNOMED:
        assert concept.value.isdigit() and 6 <= len(concept.value) <= 18
        assert concept.value[-3:-1] == "00", "a SNOMED CT concept id (partition 00)"
    if concept.scheme == codes.LOINC:
        assert loinc_ok(concept.value)
    meanings = dictionary_meanings(concept.scheme, concept.value)
    if concept.in_dicom:
        assert meanings, f"{concept.value} is not in DICOM PS3.16"
        # Letter for letter: highdicom writes pydicom's meanings, and the SR's content tree is
        # checked byte for byte against highdicom.
        assert (concept.dictionary_meaning or concept.meaning) in meanings
    else:
        assert concept.dictionary_meaning is None
        if concept.scheme in (codes.DICOM, codes.SNOMED):
            # Not in pydicom's dictionary, or there with another meaning: say why in codes.py.
            assert concept.meaning not in meanings


def test_the_codes_the_sr_writes_that_pydicom_lacks_are_the_standards():
    # TID 1500 row 12 and TID 1204 as PS3.16 and highdicom write them.
    from highdicom.sr.templates import DEFAULT_LANGUAGE

    def fields(code) -> tuple[str, str, str]:
        return code.value, code.scheme_designator, code.meaning

    qualitative = codes.QUALITATIVE_EVALUATIONS.dicom()
    assert fields(qualitative) == ("C0034375", "UMLS", "Qualitative Evaluations")
    assert fields(codes.ENGLISH_US.dicom()) == fields(DEFAULT_LANGUAGE)
    assert codes.UNDETERMINED.in_dicom and codes.SOURCE.in_dicom


@pytest.mark.parametrize("coding", codes.FHIR_ONLY, ids=lambda c: c.code)
def test_every_fhir_only_coding_names_its_system_by_uri(coding: codes.Coding):
    assert URI.match(coding.system) and coding.system.startswith("http://terminology.hl7.org/")
    assert coding.code and coding.code.strip() == coding.code
    assert coding.display
    assert coding.fhir() == {
        "system": coding.system,
        "code": coding.code,
        "display": coding.display,
    }
    assert coding.system not in codes.FHIR_SYSTEMS.values(), "a DICOM scheme is a Concept"


@pytest.mark.parametrize("system", codes.IDENTIFIER_SYSTEMS)
def test_identifier_systems_are_uris(system: str):
    assert URI.match(system)


def test_every_tumour_class_has_a_finding_type_and_site():
    assert set(codes.FINDING_TYPES) == set(codes.FINDING_SITES) == {
        "Glioma", "Meningioma", "Pituitary"
    }
    values = [concept.value for concept in codes.FINDING_TYPES.values()]
    assert len(set(values)) == 3


def test_every_study_result_is_a_value_of_neoplasm():
    # report.wording.study_result's answers: Present, Absent, Undetermined.
    assert codes.STUDY_RESULTS == {
        "positive": codes.PRESENT,
        "negative": codes.ABSENT,
        "indeterminate": codes.UNDETERMINED,
    }


def test_fhir_codings_name_the_scheme_by_its_uri():
    assert codes.GLIOMA.fhir() == {
        "system": "http://snomed.info/sct", "code": "393564001", "display": "Glioma"
    }
    assert codes.MILLIMETRE.fhir()["system"] == "http://unitsofmeasure.org"
    assert codes.QUALITATIVE_EVALUATIONS.fhir()["system"] == "http://www.nlm.nih.gov/research/umls"


def test_the_acquisition_modalities_are_cid_29():
    modalities = codes.acquisition_modalities()
    assert modalities["MR"] == codes.Concept("MR", codes.DICOM, "Magnetic Resonance")
    assert modalities["CT"].meaning == "Computed Tomography"
    for concept in modalities.values():
        assert concept.meaning in dictionary_meanings(concept.scheme, concept.value)


def test_no_output_module_holds_a_code_of_its_own():
    """Codes are made in codes.py only: no other module of outputs/ builds a Concept, a pydicom
    Code or highdicom CodedConcept from literals, or reads pydicom's code dictionary."""
    package = Path(outputs.__file__).parent
    for path in sorted(package.glob("*.py")):
        if path.name == "codes.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                called = node.func.attr if isinstance(node.func, ast.Attribute) else None
                called = called or (node.func.id if isinstance(node.func, ast.Name) else None)
                if called in ("Concept", "Code", "Coding") or (
                    called == "CodedConcept" and all(isinstance(a, ast.Constant) for a in node.args)
                ):
                    pytest.fail(f"{path.name}:{node.lineno} makes a code: put it in codes.py")
            if isinstance(node, ast.ImportFrom) and node.module == "pydicom.sr.codedict":
                pytest.fail(f"{path.name}:{node.lineno} reads pydicom's codes: use codes.py")
