"""Patient and study details are sealed: only the DICOM and FHIR outputs may open them; the
facts, the JSON, the PDF, the logs and error messages never hold them."""

from __future__ import annotations

import copy
import io
import json
import logging
import pickle

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from mriscribe.imaging.decode import decode_file
from mriscribe.imaging.limits import Limits
from mriscribe.imaging.patient import DICOM_READER, FHIR_READER, Reader, Sealed, SealedError
from mriscribe.pipeline import InputFile, analyze
from mriscribe.render.pdf import render_pdf
from mriscribe.render.results import results_json
from mriscribe.settings import Settings

DETAILS = {
    "PatientName": "Quixote^Alonso^Q",
    "PatientID": "PID-734512",
    "PatientBirthDate": "19470312",
    "AccessionNumber": "ACC98127",
    "InstitutionName": "Hospital de la Mancha",
    "ReferringPhysicianName": "Panza^Sancho",
    "StudyDate": "20261201",
    "StudyDescription": "MRI HEAD W CONTRAST",
}


def _dicom() -> tuple[bytes, str, str]:
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    for keyword, value in DETAILS.items():
        setattr(ds, keyword, value)
    study, series = generate_uid(), generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue(), study, series


def test_the_sealed_context_opens_only_for_dicom_and_fhir() -> None:
    data, study, _ = _dicom()
    (one,) = decode_file(data, "mr.dcm", Limits())
    sealed = one.source.patient
    assert isinstance(sealed, Sealed) and sealed
    assert sealed.open(DICOM_READER)["PatientName"] == DETAILS["PatientName"]
    assert sealed.open(FHIR_READER)["AccessionNumber"] == DETAILS["AccessionNumber"]
    with pytest.raises(SealedError):
        sealed.open(Reader("json"))
    for shown in (repr(sealed), str(sealed), f"{sealed}", f"{sealed:>40}", repr(one.source)):
        assert "Quixote" not in shown and study not in shown
    with pytest.raises(SealedError):
        pickle.dumps(sealed)
    with pytest.raises(SealedError):
        copy.deepcopy(sealed)
    with pytest.raises(TypeError):
        json.dumps(sealed)
    with pytest.raises(SealedError):
        sealed.values = {}  # type: ignore[attr-defined]
    # The source reference keeps the identity a DICOM result needs.
    assert one.source.study_uid == study and one.source.plane is not None


def test_no_patient_detail_reaches_json_pdf_or_logs(caplog) -> None:
    data, study, series = _dicom()
    caplog.set_level(logging.DEBUG)
    analysis = analyze([InputFile("mr.dcm", data)], Settings(), render_images=True)
    body = json.dumps(results_json(analysis, annotated=False))
    pdf = render_pdf(analysis)
    logged = "\n".join(record.getMessage() + str(record.__dict__) for record in caplog.records)
    secrets = [*DETAILS.values(), "Quixote", "Panza", "Mancha", study, series]
    for text, where in ((body, "JSON"), (analysis.report.text, "report"), (logged, "logs")):
        for secret in secrets:
            assert secret not in text, f"{secret!r} in the {where}"
    for secret in secrets:
        assert secret.encode() not in pdf
    assert "Quixote" not in repr(analysis.facts)


def test_identifying_values_stay_out_of_errors() -> None:
    data, study, _ = _dicom()
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.Rows = 0  # an invalid image: the error must not quote any header value
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    with pytest.raises(Exception) as caught:
        decode_file(buffer.getvalue(), "bad.dcm", Limits())
    message = str(caught.value)
    assert "bad.dcm" in message
    for secret in [*DETAILS.values(), study]:
        assert secret not in message


def test_file_names_that_identify_the_study_or_patient_are_not_shown() -> None:
    data, study, series = _dicom()
    sop = pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID
    files = [
        InputFile(f"{sop}.dcm", data),  # a PACS export names files by their UIDs
        InputFile("quixote_alonso_mri.dcm", _dicom()[0]),  # a user names them by the patient
        InputFile("head.dcm", _dicom()[0]),
    ]
    analysis = analyze(files, Settings(report_engine="template"))
    body = results_json(analysis)
    images = sorted(body["detection_results"]["images"], key=lambda image: image["file_number"])
    assert [image["filename"] for image in images] == ["file 1", "file 2", "head.dcm"]
    assert [image["file_number"] for image in images] == [1, 2, 3]
    text = json.dumps(body)
    for secret in (sop, study, series, "quixote", "Quixote"):
        assert secret not in text
    assert sop not in repr(analysis)


@pytest.mark.parametrize(
    ("patient", "name", "withheld"),
    [
        ("Doe^Jo", "doe_jo_t1.dcm", True),
        ("Doe^Jo", "DoeJo.dcm", True),
        ("Kim^Min", "KIM_MIN_001.dcm", True),
        ("Li^Wu", "li wu.dcm", True),
        ("Li^Wu", "wu-li.dcm", True),
        ("Quixote^Alonso", "alonso-scan.dcm", True),
        ("Li^Wu", "t1_axial.dcm", False),
        ("Li^Wu", "head.dcm", False),
        ("Li^Wu", "IM0001", False),
        ("Li^Wu", "siemens_t1.dcm", False),
    ],
)
def test_which_file_names_are_withheld(patient: str, name: str, withheld: bool) -> None:
    ds = pydicom.dcmread(io.BytesIO(_dicom()[0]))
    ds.PatientName = patient
    ds.SeriesDescription, ds.StudyDescription = "t1_axial", "HEAD^BRAIN"
    ds.Manufacturer = "SIEMENS"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    (one,) = decode_file(buffer.getvalue(), name, Limits())
    assert (one.name != name) == withheld
