"""The encapsulated PDF: valid for dciodvfy, the rendering's own report PDF byte for byte (padded
to an even length), LOINC 18748-4, unverified, pointing at exactly the analysed instances, in a
new series of the source study with the patient and study copied and nothing invented."""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import EncapsulatedPDFStorage

from dicom_files import dataset
from mriscribe.outputs import OutputRefusedError, Rendering, get_output, registry
from mriscribe.outputs.dicom_pdf import SERIES_NUMBER, even
from mriscribe.outputs.dicom_source import patient_and_study_keywords
from result_studies import (
    COLIN27_STUDIES,
    DICOM_STUDIES,
    PATIENT,
    SECRETS,
    needs_colin27,
    nifti_analysis,
    no_birth_date_analysis,
    png_analysis,
    pydicom_analysis,
    series_analysis,
)
from validators import dciodvfy

STUDIES = DICOM_STUDIES
needs_dciodvfy = pytest.mark.skipif(
    shutil.which("dciodvfy") is None, reason="dciodvfy missing: make install"
)


def study_param(name: str) -> object:
    marks = [needs_colin27] if name in COLIN27_STUDIES else []
    return pytest.param(name, marks=marks, id=name)


def read(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


@cache
def made(study: str) -> tuple[Rendering, Dataset, bytes]:
    """The study's encapsulated PDF (one rendering per study)."""
    rendering = Rendering(STUDIES[study]())
    artifact = rendering.artifact("dicom-pdf")
    assert (artifact.name, artifact.media_type) == ("report-pdf.dcm", "application/dicom")
    return rendering, read(artifact.data), artifact.data


def document_bytes(ds: Dataset) -> bytes:
    """The encapsulated document without its pad."""
    return bytes(ds.EncapsulatedDocument)[: int(ds.EncapsulatedDocumentLength)]


# --- the contract ----------------------------------------------------------------------------


def test_registered_as_a_dicom_output_of_the_drawn_images():
    output = get_output("dicom-pdf")
    assert registry()["dicom-pdf"] is output
    assert output.media_type == "application/dicom"
    assert output.needs_dicom and output.needs_images


@needs_colin27
@pytest.mark.parametrize("make", [png_analysis, nifti_analysis], ids=["png", "nifti"])
def test_refuses_images_that_are_not_dicom_and_says_why(make):
    with pytest.raises(OutputRefusedError) as caught:
        Rendering(make()).artifact("dicom-pdf")
    message = str(caught.value)
    assert message.startswith("dicom-pdf: ")
    assert "image 1 is " in message and "send the study as DICOM files" in message


# --- validity --------------------------------------------------------------------------------


@needs_dciodvfy
@pytest.mark.parametrize("study", [study_param(name) for name in STUDIES])
def test_dciodvfy_finds_no_error(study, tmp_path: Path):
    _rendering, _document, data = made(study)
    path = tmp_path / "report-pdf.dcm"
    path.write_bytes(data)
    verdict = dciodvfy(path)
    assert verdict.errors == (), str(verdict)
    assert "EncapsulatedPDF" in verdict.output
    # Every module attribute it holds is one the IOD defines.
    assert "not present in standard DICOM IOD" not in verdict.output, str(verdict)


@pytest.mark.parametrize("study", [study_param(name) for name in STUDIES])
def test_a_new_encapsulated_pdf_in_a_new_series_of_the_source_study(study):
    rendering, document, _data = made(study)
    analysis = rendering.analysis
    assert document.SOPClassUID == EncapsulatedPDFStorage
    assert document.file_meta.MediaStorageSOPClassUID == EncapsulatedPDFStorage
    assert document.Modality == "DOC"
    assert document.SOPInstanceUID == rendering.uid("dicom-pdf")
    assert document.SeriesInstanceUID == rendering.uid("dicom-pdf series")
    (study_uid,) = {image.slice.source.study_uid for image in analysis.images}
    assert document.StudyInstanceUID == study_uid
    series = {image.slice.source.series_uid for image in analysis.images}
    assert document.SeriesInstanceUID not in series
    assert (document.SeriesNumber, document.InstanceNumber) == (SERIES_NUMBER, 1)
    assert "unverified" in document.SeriesDescription
    assert document.ConversionType == "SYN"


# --- the document ----------------------------------------------------------------------------


@pytest.mark.parametrize("study", [study_param(name) for name in STUDIES])
def test_the_document_is_the_renderings_pdf(study):
    rendering, document, _data = made(study)
    pdf = rendering.artifact("pdf").data  # made once: the one the wrapper carries
    assert document_bytes(document) == pdf
    assert pdf.startswith(b"%PDF-")
    assert document.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert document.EncapsulatedDocumentLength == len(pdf)
    stored = bytes(document.EncapsulatedDocument)
    assert len(stored) % 2 == 0
    assert stored == pdf + b"\x00" * (len(pdf) % 2)


@pytest.mark.skipif(shutil.which("dcm2pdf") is None, reason="DCMTK's dcm2pdf missing")
@pytest.mark.parametrize("study", [study_param(name) for name in ("one lesion", "MR_small")])
def test_dcmtk_extracts_exactly_the_pdf(study, tmp_path: Path):
    rendering, _document, data = made(study)
    (tmp_path / "report-pdf.dcm").write_bytes(data)
    subprocess.run(["dcm2pdf", "report-pdf.dcm", "out.pdf"], cwd=tmp_path, check=True, timeout=60)
    assert (tmp_path / "out.pdf").read_bytes() == rendering.artifact("pdf").data


def test_an_odd_length_document_gets_one_nul_byte():
    assert even(b"%PDF-1") == b"%PDF-1"
    assert even(b"%PDF-1.") == b"%PDF-1.\x00"
    assert even(b"") == b""


@pytest.mark.parametrize("study", [study_param(name) for name in STUDIES])
def test_a_diagnostic_imaging_report_not_yet_verified(study):
    _rendering, document, _data = made(study)
    (concept,) = document.ConceptNameCodeSequence
    assert (concept.CodeValue, concept.CodingSchemeDesignator) == ("18748-4", "LN")
    assert concept.CodeMeaning == "Diagnostic imaging study"
    assert document.VerificationFlag == "UNVERIFIED"
    assert "unverified" in document.DocumentTitle
    # The PDF prints the uploaded files' names, which may name the patient (render/pdf.py):
    # a de-identification pipeline must treat it as identifying.
    assert document.BurnedInAnnotation == "YES"


@pytest.mark.parametrize("study", [study_param(name) for name in STUDIES])
def test_the_source_instances_are_exactly_the_analysed_ones(study):
    rendering, document, _data = made(study)
    expected = {
        (str(i.slice.source.sop_class_uid), str(i.slice.source.sop_instance_uid))
        for i in rendering.analysis.images
    }
    found = [
        (str(item.ReferencedSOPClassUID), str(item.ReferencedSOPInstanceUID))
        for item in document.SourceInstanceSequence
    ]
    assert len(found) == len(set(found)) and set(found) == expected
    # Every frame of each test instance was analysed: no frame list.
    assert not any("ReferencedFrameNumber" in i for i in document.SourceInstanceSequence)


def test_dates_and_times_are_the_renderings_and_the_analysis():
    created = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    rendering = Rendering(pydicom_analysis(), created=created)
    document = read(rendering.artifact("dicom-pdf").data)
    # MR_small.dcm states its offset from UTC (-0400): the document keeps it, its times in it.
    zone = datetime.strptime("-0400", "%z").tzinfo
    local = created.astimezone(zone)
    assert document.ContentDate == local.strftime("%Y%m%d")
    assert document.ContentTime.startswith(local.strftime("%H%M%S"))
    assert document.InstanceCreationDate == local.strftime("%Y%m%d")
    assert document.TimezoneOffsetFromUTC == "-0400"
    generated = rendering.analysis.timestamp
    generated = (generated if generated.tzinfo else generated.replace(tzinfo=UTC)).astimezone(zone)
    assert document.AcquisitionDateTime == generated.strftime("%Y%m%d%H%M%S.%f%z")


# --- the patient -----------------------------------------------------------------------------


@needs_colin27
@pytest.mark.parametrize("study", ["one lesion", "24 frames"])
def test_patient_and_study_are_the_series(study):
    _rendering, document, _data = made(study)
    for keyword, value in PATIENT.items():
        assert str(document[keyword].value) == value, keyword


def test_nothing_is_invented_about_the_patient():
    source = dataset("MR_small.dcm")
    del source.PatientBirthDate
    document = read(Rendering(no_birth_date_analysis()).artifact("dicom-pdf").data)
    assert "PatientBirthDate" in document and document.PatientBirthDate == ""  # Type 2
    for keyword in patient_and_study_keywords():
        if keyword not in document:
            continue
        ours = document[keyword].value
        if keyword in source and source[keyword].value not in (None, ""):
            assert ours == source[keyword].value, keyword
        else:
            assert ours in (None, ""), f"{keyword} invented"
    assert str(document.PatientName) == "CompressedSamples^MR1" and document.PatientID == "4MR1"


@needs_colin27
def test_no_patient_data_or_uid_reaches_a_log_line(caplog):
    caplog.set_level(logging.DEBUG)
    rendering = Rendering(series_analysis())
    rendering.artifact("dicom-pdf")
    study_uid = str(rendering.analysis.images[0].slice.source.study_uid)
    for secret in (*SECRETS, study_uid):
        assert secret not in caplog.text, "a log line names the patient or the study"
