"""The output contract: every output is a module found by name, makes named bytes of its media
type, and is made once per rendering; DICOM outputs refuse what is not one DICOM study."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

import mriscribe.outputs as outputs
from mriscribe.outputs import OutputRefusedError, Rendering, get_output, registry, render
from mriscribe.render.results import results_json
from result_studies import (
    changed_analysis,
    needs_colin27,
    png_analysis,
    pydicom_analysis,
    series_analysis,
    two_patients_analysis,
)

EXPECTED = {"json", "pdf", "images", "dicom-sr", "dicom-pr", "dicom-pdf", "fhir"}
MAGIC = {
    "application/json": b"{",
    "application/pdf": b"%PDF",
    "image/jpeg": b"\xff\xd8\xff",
    "application/dicom": None,  # checked by the DICM prefix at byte 128
    "application/fhir+json": b"{",
}


def test_every_output_is_registered_with_its_contract():
    found = registry()
    assert set(found) >= EXPECTED
    for name, output in found.items():
        assert output.name == name
        assert output.summary and output.media_type.split(";")[0] in MAGIC
        assert isinstance(output.needs_images, bool) and isinstance(output.needs_dicom, bool)
    assert {n for n, o in found.items() if o.needs_dicom} == {"dicom-sr", "dicom-pr", "dicom-pdf"}
    with pytest.raises(KeyError, match="no output is called 'xml'"):
        get_output("xml")


def test_adding_an_output_is_adding_a_file(tmp_path, monkeypatch):
    (tmp_path / "plain_text.py").write_text(
        textwrap.dedent(
            '''
            """A test output: the report's text."""
            from dataclasses import dataclass
            from mriscribe.outputs.base import Artifact

            @dataclass(frozen=True)
            class PlainText:
                name: str = "text"
                summary: str = "the report as plain text"
                media_type: str = "text/plain"
                needs_images: bool = False
                needs_dicom: bool = False

                def render(self, rendering):
                    text = rendering.analysis.report.text.encode()
                    return (Artifact("report.txt", self.media_type, text),)

            OUTPUT = PlainText()
            '''
        )
    )
    monkeypatch.setattr(outputs, "__path__", [*outputs.__path__, str(tmp_path)])
    registry.cache_clear()
    try:
        analysis = pydicom_analysis()
        made = render(analysis, ["text"])["text"]
        assert made[0].data.decode() == analysis.report.text
    finally:
        monkeypatch.undo()
        registry.cache_clear()
        sys.modules.pop("mriscribe.outputs.plain_text", None)
    assert "text" not in registry()


def _check(artifact):
    magic = MAGIC[artifact.media_type.split(";")[0]]
    if magic is None:
        assert artifact.data[128:132] == b"DICM"
    else:
        assert artifact.data.startswith(magic)
    assert artifact.name and "/" not in artifact.name


@needs_colin27
def test_every_output_of_a_dicom_series(tmp_path):
    analysis = series_analysis()
    made = render(analysis, sorted(EXPECTED))
    for name, artifacts in made.items():
        assert artifacts, name
        for artifact in artifacts:
            assert artifact.media_type == get_output(name).media_type
            _check(artifact)
    assert len(made["images"]) == len(analysis.images)
    assert json.loads(made["json"][0].data) == json.loads(
        json.dumps(results_json(analysis), ensure_ascii=False)
    )
    names = [a.name for artifacts in made.values() for a in artifacts]
    assert len(names) == len(set(names)), "every file has its own name"


def test_a_rendering_makes_each_output_once_and_shares_its_uids():
    rendering = Rendering(pydicom_analysis())
    first = rendering.artifact("pdf")
    assert rendering.artifact("pdf") is first
    assert rendering.tracking_uid(1) == rendering.tracking_uid(1) != rendering.tracking_uid(2)
    assert Rendering(pydicom_analysis()).tracking_uid(1) != rendering.tracking_uid(1)


@needs_colin27
@pytest.mark.parametrize("name", ["dicom-sr", "dicom-pr", "dicom-pdf"])
def test_dicom_outputs_refuse_png_slices_and_say_why(name):
    with pytest.raises(OutputRefusedError) as caught:
        render(png_analysis(), [name])
    message = str(caught.value)
    assert message.startswith(f"{name}: ") and "image 1 is PNG" in message
    assert "FHIR" in message  # says what works instead
    # The other outputs work for PNG.
    made = render(png_analysis(), ["json", "pdf", "fhir"])
    assert all(made.values())


# --- what the DICOM results share (outputs/dicom_source.py) ----------------------------------

RESULT_CLASSES = {
    "dicom-sr": "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
    "dicom-pr": "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
    "dicom-pdf": "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
}


@pytest.mark.parametrize("sop_class", RESULT_CLASSES.values(), ids=list(RESULT_CLASSES))
def test_every_dicom_result_copies_its_iods_patient_and_study_modules(sop_class):
    from highdicom._standard_utils import (
        get_iod_module_map,
        get_module_attribute_map,
        get_sop_class_iod_map,
    )

    from mriscribe.outputs.dicom_source import (
        PATIENT_AND_STUDY_MODULES,
        patient_and_study_keywords,
    )

    modules = get_iod_module_map()[get_sop_class_iod_map()[sop_class]]
    entities = [module["key"] for module in modules if module["ie"] in ("Patient", "Study")]
    assert sorted(entities) == sorted(PATIENT_AND_STUDY_MODULES)
    attributes = get_module_attribute_map()
    in_modules = {
        str(attribute["keyword"])
        for key in entities
        for attribute in attributes[key]
        if not attribute["path"]
    }
    assert patient_and_study_keywords() == in_modules - {"StudyInstanceUID"}


def test_the_sealed_header_keeps_what_the_results_copy():
    """imaging/patient.py's KEPT holds the Patient, General Study and Patient Study attributes the
    results copy (the one list every DICOM result copies, less what the header never keeps), and
    every type 2 attribute a result must state."""
    from mriscribe.imaging.patient import KEPT
    from mriscribe.outputs.dicom_source import TYPE_2, patient_and_study_keywords

    copied = set(KEPT) & patient_and_study_keywords()
    assert set(TYPE_2) <= copied
    assert copied == {
        "PatientName", "PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence",
        "TypeOfPatientID", "PatientBirthDate", "PatientBirthTime", "PatientSex",
        "QualityControlSubject", "OtherPatientIDsSequence", "OtherPatientNames",
        "PatientComments", "PatientSpeciesDescription", "PatientSpeciesCodeSequence",
        "PatientBreedDescription", "PatientBreedCodeSequence", "BreedRegistrationSequence",
        "ResponsiblePerson", "ResponsiblePersonRole", "ResponsibleOrganization",
        "PatientIdentityRemoved", "DeidentificationMethod",
        "DeidentificationMethodCodeSequence", "StudyDate", "StudyTime",
        "ReferringPhysicianName", "StudyID", "AccessionNumber",
        "IssuerOfAccessionNumberSequence", "StudyDescription", "PhysiciansOfRecord",
        "NameOfPhysiciansReadingStudy", "ProcedureCodeSequence",
        "ReasonForPerformedProcedureCodeSequence", "AdmittingDiagnosesDescription",
        "PatientAge", "PatientSize", "PatientWeight", "Occupation", "AdditionalPatientHistory",
    }


def test_a_new_instance_copies_the_patient_and_study_and_nothing_else():
    from pydicom.dataset import Dataset

    from mriscribe.outputs.dicom_source import DicomSource, new_instance

    header = Dataset()
    header.SpecificCharacterSet = "ISO_IR 100"
    header.PatientName = "Müller^Jörg"
    header.PatientID = "P-1"
    header.OtherPatientIDsSequence = [Dataset()]
    header.OtherPatientIDsSequence[0].PatientID = "P-2"
    header.StudyDescription = "MRI BRAIN"
    header.InstitutionName = "Somewhere"  # kept by the header, but of the equipment: not copied
    header.SeriesDescription = "T1"  # the source series', not the result's
    header.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    header.SOPInstanceUID = header.SeriesInstanceUID = "1.2.3"
    source = DicomSource("1.2", (), (header,))
    instance = new_instance(
        Rendering(pydicom_analysis()),
        source,
        sop_class_uid=RESULT_CLASSES["dicom-pr"],
        modality="PR",
        purpose="test",
        series_number=1,
        series_description="ours",
    )
    assert str(instance.PatientName) == "Müller^Jörg"
    assert instance.SpecificCharacterSet == "ISO_IR 100"
    assert instance.OtherPatientIDsSequence[0].PatientID == "P-2"
    assert instance.OtherPatientIDsSequence is not header.OtherPatientIDsSequence  # a copy
    assert instance.StudyDescription == "MRI BRAIN" and instance.StudyInstanceUID == "1.2"
    assert "InstitutionName" not in instance and instance.SeriesDescription == "ours"


def test_dates_are_local_and_a_naive_moment_is_utc():
    from datetime import UTC, datetime

    from mriscribe.outputs.dicom_source import local_time

    naive = datetime(2026, 1, 2, 3, 4, 5)
    local = local_time(naive)
    assert local == naive.replace(tzinfo=UTC)  # the same moment
    assert local.utcoffset() == naive.replace(tzinfo=UTC).astimezone().utcoffset()
    aware = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    assert local_time(aware) == aware and local_time(aware).tzinfo is not None


DICOM_OUTPUTS = ("dicom-sr", "dicom-pr", "dicom-pdf")


@pytest.mark.parametrize("name", DICOM_OUTPUTS)
def test_a_dicom_result_of_images_naming_two_patients_is_refused_without_naming_them(name):
    rendering = Rendering(two_patients_analysis())
    with pytest.raises(OutputRefusedError) as refused:
        rendering.artifact(name)
    message = str(refused.value)
    assert "2 different patients" in message
    assert not any(value in message for value in ("PAT-A", "PAT-B", "Alpha", "Beta"))


def test_dicom_results_and_the_fhir_bundle_tell_patients_apart_alike():
    from mriscribe.outputs.dicom_source import patient_key, refuse_several_patients

    one = patient_key({"PatientID": "P-1 ", "PatientName": "A^B"})
    assert one == patient_key({"PatientID": "P-1", "PatientName": "A^B"})
    refuse_several_patients("x", [one, one, patient_key({})])  # one patient, one unnamed
    with pytest.raises(OutputRefusedError):
        refuse_several_patients("x", [one, patient_key({"PatientID": "P-2", "PatientName": "A^B"})])


def _read(data: bytes):
    import io

    import pydicom

    return pydicom.dcmread(io.BytesIO(data))


@pytest.mark.parametrize("name", DICOM_OUTPUTS)
@pytest.mark.parametrize("stated", ["+0100", "-0400", None])
def test_a_result_keeps_the_sources_time_zone_and_states_none_it_did_not(name, stated):
    """Timezone Offset From UTC applies to every date and time of an instance, the copied study
    date and time included: a result states the source's (and its own times in it), or none
    (its own times in the server's local time) where the source stated none."""
    from datetime import UTC, datetime, timedelta, timezone

    changes = (
        ("TimezoneOffsetFromUTC", stated),
        ("StudyDate", "20260101"),
        ("StudyTime", "101500"),
    )
    created = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    rendering = Rendering(changed_analysis("MR_small.dcm", changes), created=created)
    result = _read(rendering.artifact(name).data)
    assert (result.StudyDate, result.StudyTime) == ("20260101", "101500")
    if stated is None:
        assert "TimezoneOffsetFromUTC" not in result
        local = created.astimezone()
    else:
        assert result.TimezoneOffsetFromUTC == stated
        hours = int(stated[1:3]) * (-1 if stated[0] == "-" else 1)
        local = created.astimezone(timezone(timedelta(hours=hours)))
    assert result.InstanceCreationDate == local.strftime("%Y%m%d")
    assert result.InstanceCreationTime.startswith(local.strftime("%H%M%S"))
    assert (result.SeriesDate, result.SeriesTime[:6]) == (
        local.strftime("%Y%m%d"),
        local.strftime("%H%M%S"),
    )


def test_one_lesion_name_for_every_output():
    rendering = Rendering(pydicom_analysis())
    assert rendering.tracking_identifier(2) == Rendering.tracking_identifier(2) == "Lesion 2"


@needs_colin27
def test_each_lesions_findings_are_paired_with_their_images_and_boxes():
    analysis = series_analysis()
    found = analysis.lesion_findings()
    assert [(lesion.id, fact) for lesion, fact, _i, _m in found] == [
        (lesion.id, fact) for lesion in analysis.facts.lesions for fact in lesion.detections
    ]
    for _lesion, fact, image, measured in found:
        assert measured in image.findings and fact.image_number == image.number
        assert measured.finding.confidence == pytest.approx(fact.confidence)
    tumours = {id(measured) for _f, _i, measured in analysis.tumours()}
    assert {id(measured) for _l, _f, _i, measured in found} == tumours


def test_warming_up_renders_every_output_of_a_blank_slice(caplog):
    from mriscribe.outputs.warm import blank_slice, warm_up
    from mriscribe.pipeline import InputFile, analyze, get_detector
    from mriscribe.settings import Settings

    settings = Settings(report_engine="template")
    with caplog.at_level("WARNING", logger="mriscribe.outputs"):
        warm_up(settings, get_detector(settings))
    assert not caplog.records  # a failure would be logged, never raised
    analysis = analyze([InputFile("blank.dcm", blank_slice())], settings)
    made = render(analysis, sorted(registry()))
    assert all(made.values())
