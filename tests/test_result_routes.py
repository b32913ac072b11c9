"""The standard results through the CLI and over HTTP, as a PACS integrator and an EHR use them:
`mriscribe analyze --dicom-out DIR --fhir FILE`, `POST /analyze-dicom` (multipart/related, as
DICOMweb answers) and `POST /analyze-fhir`; DICOM results refused for PNG and NIfTI with the
reason, nothing written, no patient data in any log."""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import warnings
from pathlib import Path

import httpx
import pydicom
import pytest
from fhir.resources.bundle import Bundle as BundleR5
from fhir.resources.R4B.bundle import Bundle as BundleR4B

from conftest import run_cli
from result_studies import PATIENT, needs_colin27, series_files

pytestmark = needs_colin27
DICOM_FILES = {"sr.dcm", "pr.dcm", "report-pdf.dcm"}
SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
}


@pytest.fixture(scope="module")
def series_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("series")
    for item in series_files():
        (folder / item.name).write_bytes(item.data)
    return folder


def _read(data: bytes) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return pydicom.dcmread(io.BytesIO(data))


def _source_study(folder: Path) -> str:
    first = next(p for p in folder.iterdir() if p.is_file())
    return str(_read(first.read_bytes()).StudyInstanceUID)


def test_cli_writes_the_dicom_and_fhir_results(series_folder, tmp_path):
    out, bundle = tmp_path / "dicom", tmp_path / "fhir" / "bundle.json"
    result = run_cli(
        "analyze", str(series_folder), "--report-engine", "template",
        "--dicom-out", str(out), "--fhir", str(bundle),
    )
    assert result.returncode == 0, result.stderr
    assert {p.name for p in out.iterdir()} == DICOM_FILES
    study = _source_study(series_folder)
    made = [_read(p.read_bytes()) for p in sorted(out.iterdir())]
    assert {str(ds.SOPClassUID) for ds in made} == SOP_CLASSES
    assert {str(ds.StudyInstanceUID) for ds in made} == {study}
    assert len({str(ds.SeriesInstanceUID) for ds in made}) == 3
    assert all(str(ds.PatientID) == PATIENT["PatientID"] for ds in made)
    parsed = BundleR4B.model_validate_json(bundle.read_text())
    kinds = [entry.resource.get_resource_type() for entry in parsed.entry]
    assert "DiagnosticReport" in kinds and "Observation" in kinds
    for text in (result.stdout, result.stderr):
        assert PATIENT["PatientID"] not in text and "Testperson" not in text


def test_cli_writes_fhir_r5_on_request(series_folder, tmp_path):
    bundle = tmp_path / "bundle.json"
    result = run_cli(
        "analyze", str(series_folder), "--report-engine", "template",
        "--fhir", str(bundle), "--fhir-version", "R5",
    )
    assert result.returncode == 0, result.stderr
    BundleR5.model_validate_json(bundle.read_text())


def test_cli_refuses_dicom_results_for_png_and_writes_nothing(tmp_path, heldout_cases):
    from conftest import HELDOUT

    image = HELDOUT / heldout_cases[0]["file"]
    out, results = tmp_path / "dicom", tmp_path / "results.json"
    result = run_cli(
        "analyze", str(image), "--report-engine", "template",
        "--dicom-out", str(out), "--json", str(results),
    )
    assert result.returncode == 1
    assert "dicom-sr: DICOM results point at DICOM images, and image 1 is PNG" in result.stderr
    assert "nothing was written" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() and not results.exists()


def _parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    """The parts of a multipart/related answer: (content type, body)."""
    head = f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        head + response.content
    )
    assert message.is_multipart()
    parts = message.iter_parts()
    return [(part.get_content_type(), part.get_payload(decode=True)) for part in parts]


def _upload(folder: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [
        ("images", (path.name, path.read_bytes(), "application/octet-stream"))
        for path in sorted(folder.iterdir())
    ]


def test_analyze_dicom_answers_as_dicomweb_does(live_server_process, series_folder):
    response = httpx.post(
        f"{live_server_process.url}/analyze-dicom?report_engine=template",
        files=_upload(series_folder),
        timeout=120,
    )
    assert response.status_code == 200, response.text
    content_type = response.headers["content-type"]
    assert content_type.startswith('multipart/related; type="application/dicom"; boundary=')
    parts = _parts(response)
    assert [kind for kind, _ in parts] == ["application/dicom"] * 3
    made = [_read(body) for _, body in parts]
    assert {str(ds.SOPClassUID) for ds in made} == SOP_CLASSES
    assert {str(ds.StudyInstanceUID) for ds in made} == {_source_study(series_folder)}
    server_id = response.headers["x-server-request-id"]
    logged = json.dumps(live_server_process.records_of(server_id))
    assert PATIENT["PatientID"] not in logged and "Testperson" not in logged
    assert live_server_process.leftovers() == []


def test_analyze_dicom_chooses_outputs_by_name(live_server, series_folder):
    response = httpx.post(
        f"{live_server}/analyze-dicom?outputs=dicom-sr&report_engine=template",
        files=_upload(series_folder),
        timeout=120,
    )
    assert response.status_code == 200, response.text
    parts = _parts(response)
    assert len(parts) == 1
    assert str(_read(parts[0][1]).SOPClassUID) == "1.2.840.10008.5.1.4.1.1.88.34"
    bad = httpx.post(
        f"{live_server}/analyze-dicom?outputs=json", files=_upload(series_folder), timeout=120
    )
    assert bad.status_code == 400 and "outputs" in bad.json()["error"]


def test_analyze_dicom_refuses_png_with_the_reason(live_server, heldout_cases):
    from conftest import HELDOUT

    case = heldout_cases[0]
    response = httpx.post(
        f"{live_server}/analyze-dicom",
        files=[("images", (case["file"], (HELDOUT / case["file"]).read_bytes(), "image/png"))],
        timeout=120,
    )
    assert response.status_code == 422
    assert "DICOM results point at DICOM images, and image 1 is PNG" in response.json()["error"]


@pytest.mark.parametrize(("version", "bundle_class"), [("R4B", BundleR4B), ("R5", BundleR5)])
def test_analyze_fhir_returns_a_bundle(live_server, series_folder, version, bundle_class):
    response = httpx.post(
        f"{live_server}/analyze-fhir?version={version}&report_engine=template",
        files=_upload(series_folder),
        timeout=120,
    )
    assert response.status_code == 200, response.text
    release = {"R4B": "4.3", "R5": "5.0"}[version]
    assert response.headers["content-type"] == f"application/fhir+json; fhirVersion={release}"
    bundle = bundle_class.model_validate_json(response.content)
    report = next(
        e.resource for e in bundle.entry if e.resource.get_resource_type() == "DiagnosticReport"
    )
    assert report.status == "preliminary"


def test_the_api_documents_the_result_routes(live_server):
    document = httpx.get(f"{live_server}/openapi.json").json()
    dicom = document["paths"]["/analyze-dicom"]["post"]
    assert 'multipart/related; type="application/dicom"' in dicom["responses"]["200"]["content"]
    assert "422" in dicom["responses"]
    fhir = document["paths"]["/analyze-fhir"]["post"]
    assert "application/fhir+json" in fhir["responses"]["200"]["content"]


def _tracking_uids(sr: pydicom.Dataset) -> set[str]:
    """The SR's tracking unique identifiers (DCM 112040), anywhere in its content."""
    found: set[str] = set()
    items = list(sr.ContentSequence)
    while items:
        item = items.pop()
        if item.ValueType == "UIDREF" and item.ConceptNameCodeSequence[0].CodeValue == "112040":
            found.add(str(item.UID))
        items.extend(item.get("ContentSequence", []))
    return found


def test_analyze_outputs_makes_named_outputs_of_one_analysis(live_server, series_folder):
    response = httpx.post(
        f"{live_server}/analyze-outputs?outputs=dicom-sr&outputs=fhir&outputs=json"
        "&report_engine=template",
        files=_upload(series_folder),
        timeout=120,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("multipart/mixed; boundary=")
    head = f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        head + response.content
    )
    parts = {part.get_filename(): part.get_payload(decode=True) for part in message.iter_parts()}
    assert set(parts) == {"sr.dcm", "fhir-bundle.json", "results.json"}
    sr_uids = _tracking_uids(_read(parts["sr.dcm"]))
    bundle = BundleR4B.model_validate_json(parts["fhir-bundle.json"])
    fhir_uids = {
        identifier.value.removeprefix("urn:oid:")
        for entry in bundle.entry
        if entry.resource.get_resource_type() == "Observation"
        for identifier in entry.resource.identifier or []
        if identifier.value.startswith("urn:oid:")
    }
    lesions = json.loads(parts["results.json"])["lesions"]
    # One analysis: FHIR's lesions are the SR's, by the same tracking UIDs (the SR also tracks
    # each image it states no tumour on).
    assert len(fhir_uids) == len(lesions) >= 1
    assert fhir_uids <= sr_uids
    unknown = httpx.post(
        f"{live_server}/analyze-outputs?outputs=xml", files=_upload(series_folder), timeout=120
    )
    assert unknown.status_code == 400 and "no output is called xml" in unknown.json()["error"]
