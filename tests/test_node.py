"""The DICOM node in this process, against real peers: pynetdicom and DCMTK's storescu as
senders, DCMTK's storescp as the PACS results go to (tests/test_node_orthanc.py does the same
against Orthanc, with the node as its own process, killed and restarted).

Covered here: the durable spool (modes, duplicates, half-written files, one node per spool),
what the receiver accepts and refuses, stable studies analysed once, the loop guard, delivery
retried until the PACS answers, a restart that resumes, a study with no usable image beside a
good one, the node's status in /health, in the spool and in ``mriscribe models``, and its
settings.
"""

from __future__ import annotations

import io
import json
import logging
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    Comprehensive3DSRStorage,
    GrayscaleSoftcopyPresentationStateStorage,
    MRImageStorage,
    RTPlanStorage,
)

from mriscribe.cli import main
from mriscribe.node.node import DicomNode, check_node_settings, read_status
from mriscribe.node.spool import Spool, SpoolError
from mriscribe.service.app import create_app
from mriscribe.settings import Settings, SettingsError
from orthanc import echoscu, free_port, storescu
from result_studies import PATIENT, series_files

SECRETS = (PATIENT["PatientName"], PATIENT["PatientID"], "Testperson", "FICT-0042")
RESULT_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
}


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def series_folder(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The 24-slice head series with one tumour, as files."""
    folder = tmp_path_factory.mktemp("series")
    paths = []
    for number, item in enumerate(series_files(), start=1):
        path = folder / f"{number:02d}.dcm"
        path.write_bytes(item.data)
        paths.append(path)
    return paths


def new_study(paths: list[Path], folder: Path) -> list[Path]:
    """The same slices as a new study (new study, series and instance UIDs)."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    copies = []
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        copy = folder / path.name
        ds.save_as(copy, enforce_file_format=True)
        copies.append(copy)
    return copies


def spoil_rle(path: Path) -> None:
    """Rewrite an instance as RLE Lossless whose one fragment is not RLE."""
    ds = pydicom.dcmread(path)
    ds.compress(RLELossless)
    ds.PixelData = encapsulate([b"\x01\x00\x00\x00" + bytes(60) + b"\xff" * 200])
    ds.save_as(path, enforce_file_format=True)


class Destination:
    """DCMTK's storescp (AE title DEST) on a free port: the PACS results go to."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["storescp", "-aet", "DEST", "-od", str(self.folder), str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: echoscu(self.port, "DEST").returncode == 0, 20, "storescp")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def received(self) -> list[pydicom.Dataset]:
        return [pydicom.dcmread(path) for path in sorted(self.folder.iterdir())]

    @property
    def peer(self) -> str:
        return f"DEST@127.0.0.1:{self.port}"


@pytest.fixture
def destination(tmp_path: Path) -> Iterator[Destination]:
    found = Destination(tmp_path / "pacs")
    found.start()
    yield found
    found.stop()


def node_settings(tmp_path: Path, destination: Destination, **changes: object) -> Settings:
    values: dict[str, object] = {
        "report_engine": "template",
        "node_port": free_port(),
        "node_send_to": [destination.peer],
        "node_stable_s": 0.5,
        "node_spool_dir": tmp_path / "spool",
        "node_retry_base_s": 0.2,
        "node_retry_max_s": 1.0,
    }
    values.update(changes)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def running() -> Iterator[Callable[[Settings], DicomNode]]:
    """Start nodes that are stopped after the test, whatever happens."""
    nodes: list[DicomNode] = []

    def start(settings: Settings) -> DicomNode:
        node = DicomNode(settings)
        node.start()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        if node.started:
            node.stop()


def send(
    paths: list[Path] | list[pydicom.Dataset], port: int, calling: str = "SCU",
    sop_class: str | None = None, called: str = "MRISCRIBE",
) -> list[int]:
    """C-STORE each file or dataset with pynetdicom; the status of each (-1: no context)."""
    datasets = [p if isinstance(p, pydicom.Dataset) else pydicom.dcmread(p) for p in paths]
    ae = AE(ae_title=calling)
    # Each file's own transfer syntax besides the uncompressed ones; MR always, so that an
    # association offering only a refused class is still made.
    syntaxes = sorted({str(ds.file_meta.TransferSyntaxUID) for ds in datasets}
                      | {ExplicitVRLittleEndian, ImplicitVRLittleEndian})
    for uid in {sop_class or str(ds.SOPClassUID) for ds in datasets} | {MRImageStorage}:
        for syntax in syntaxes:  # one context each: the SCP accepts one syntax per context
            ae.add_requested_context(uid, syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return [-2] * len(datasets)
    statuses = []
    try:
        for ds in datasets:
            try:
                status = assoc.send_c_store(ds)
            except ValueError:  # no accepted presentation context for this class
                statuses.append(-1)
                continue
            statuses.append(int(status.Status) if "Status" in status else -3)
    finally:
        assoc.release()
    return statuses


# The spool


def test_spool_writes_private_files_durably_and_one_copy_per_instance(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.open()
    study, instance = spool.key_of("1.2.3.4"), spool.key_of("1.2.3.4.5")
    spool.store(study, instance, b"first")
    spool.store(study, instance, b"second")  # the same instance again: one file, the last
    files = list((spool.incoming / study).iterdir())
    assert [f.read_bytes() for f in files] == [b"second"]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(spool.root.stat().st_mode) == 0o700
    assert stat.S_IMODE((spool.incoming / study).stat().st_mode) == 0o700
    assert "1.2.3.4" not in str(files[0])  # names are hashes of UIDs, never UIDs
    assert spool.take(study, quiet_since=time.monotonic() - 60) is None  # not quiet yet
    job = spool.take(study, quiet_since=time.monotonic())
    assert job is not None and [p.read_bytes() for p in job.instances()] == [b"second"]
    assert spool.waiting() == {}
    spool.close()


def test_spool_is_held_by_one_node_and_half_written_files_go(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.open()
    (spool.tmp / "1-2-3.part").write_bytes(b"half an instance")
    study = spool.key_of("1.2")
    spool.store(study, spool.key_of("1.2.3"), b"whole")
    other = Spool(tmp_path / "spool")
    with pytest.raises(SpoolError, match="another mriscribe node"):
        other.open()
    spool.close()
    again = Spool(tmp_path / "spool")
    again.open()  # as after kill -9: the lock is free, half-written files are gone
    assert list(again.tmp.iterdir()) == []
    assert list(again.waiting()) == [study]
    assert again.key_of("1.2") == study  # the spool's key survives a restart
    again.close()


def test_a_spool_whose_key_is_lost_with_studies_in_it_refuses_to_open(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.open()
    spool.store(spool.key_of("1.2"), spool.key_of("1.2.3"), b"waiting")
    spool.close()
    (tmp_path / "spool" / "key").unlink()
    with pytest.raises(SpoolError, match="key is missing or damaged"):
        Spool(tmp_path / "spool").open()
    with pytest.raises(SpoolError, match="key is missing"):  # not "another node": let go
        Spool(tmp_path / "spool").open()
    empty = Spool(tmp_path / "empty")
    empty.open()  # a new spool makes its key
    assert len((tmp_path / "empty" / "key").read_bytes()) == 32
    empty.close()


@pytest.mark.filterwarnings("ignore")  # pydicom's own odd test files warn as they are read
def test_the_receiver_leaves_valid_native_pixel_data_alone() -> None:
    """Every uncompressed image of pydicom's test files that pydicom decodes is not 'short'
    (YBR_FULL_422, 1-bit, odd lengths, multi-frame, big endian, implicit VR...)."""
    from pydicom.data import get_testdata_file
    from pydicom.data.data_manager import get_testdata_files

    from mriscribe.node.receiver import _pixels_short

    checked = 0
    for name in get_testdata_files("*.dcm"):
        try:
            full = pydicom.dcmread(name)
            syntax = full.file_meta.TransferSyntaxUID
            if "PixelData" not in full or syntax.is_compressed or syntax.is_deflated:
                continue
            full.pixel_array  # noqa: B018 (decodable: a valid image)
        except Exception:
            continue
        header = pydicom.dcmread(name, defer_size=4096)
        assert not _pixels_short(header, Path(name).stat().st_size), name
        checked += 1
    assert checked >= 20
    whole = Path(get_testdata_file("MR_small.dcm"))
    cut = whole.read_bytes()[:-3000]
    header = pydicom.dcmread(io.BytesIO(cut), defer_size=4096)
    assert _pixels_short(header, len(cut))


# Receiving, analysing, delivering


def test_a_stable_study_is_analysed_once_and_its_results_reach_the_pacs(
    tmp_path: Path,
    destination: Destination,
    series_folder: list[Path],
    running: Callable[[Settings], DicomNode],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    node = running(node_settings(tmp_path, destination))
    result = storescu(series_folder, node.port, called_aet="MRISCRIBE", calling_aet="SCANNER")
    assert result.returncode == 0, result.stderr
    wait_until(lambda: len(list(destination.folder.iterdir())) == 3, 60, "3 results")
    results = destination.received()
    assert {str(ds.SOPClassUID) for ds in results} == RESULT_CLASSES
    source = pydicom.dcmread(series_folder[0])
    assert {ds.StudyInstanceUID for ds in results} == {source.StudyInstanceUID}
    assert {ds.Manufacturer for ds in results} == {"mriscribe"}
    wait_until(lambda: node.health()["studies_delivered"] == 1, 10, "the delivery counted")
    health = node.health()
    assert health["instances_stored"] == 24 and health["studies_analysed"] == 1
    assert health["studies_receiving"] == health["studies_awaiting_delivery"] == 0
    assert health["last_delivery"] is not None
    # Delivered: the spool keeps no instance and no result (retention 0).
    assert list((tmp_path / "spool" / "jobs").iterdir()) == []
    assert list((tmp_path / "spool" / "incoming").iterdir()) == []

    # The same study again (a PACS forwarding it, our results included): not analysed again.
    # (storescu proposes no context for Comprehensive 3D SR: pynetdicom sends the results.)
    result = storescu(series_folder, node.port, called_aet="MRISCRIBE", calling_aet="PACS")
    assert result.returncode == 0, result.stderr
    assert send(results, node.port, calling="PACS") == [0, 0, 0]
    wait_until(lambda: node.health()["instances_ignored"] == 3, 10, "our results ignored")
    assert node.health()["instances_repeated"] == 24
    time.sleep(1.5)
    assert len(list(destination.folder.iterdir())) == 3
    assert node.health()["studies_analysed"] == 1

    # Nothing identifying in the node's log, its status or its spool's names.
    status = (tmp_path / "spool" / "status.json").read_text()
    names = " ".join(str(p) for p in (tmp_path / "spool").rglob("*"))
    for text in (caplog.text, status, names):
        for secret in (*SECRETS, source.StudyInstanceUID, source.SOPInstanceUID):
            assert secret not in text
    assert stat.S_IMODE((tmp_path / "spool" / "status.json").stat().st_mode) == 0o600


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_what_the_receiver_refuses(
    tmp_path: Path,
    destination: Destination,
    series_folder: list[Path],
    running: Callable[[Settings], DicomNode],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    node = running(node_settings(tmp_path, destination, node_allowed_calling_aets=["SCANNER"]))
    good = pydicom.dcmread(series_folder[0])

    # An unknown calling AE title, or another called AE title: the association is refused.
    assert send([good], node.port, calling="STRANGER") == [-2]
    assert send([good], node.port, calling="SCANNER", called="SOMEONE") == [-2]
    # A SOP class the node does not take: no presentation context for it.
    plan = pydicom.dcmread(series_folder[1])
    plan.SOPClassUID = RTPlanStorage
    assert send([plan], node.port, calling="SCANNER", sop_class=RTPlanStorage) == [-1]
    # An MR image without pixels, one whose UIDs are not UIDs, one whose pixels are cut short.
    no_pixels = pydicom.dcmread(series_folder[2])
    del no_pixels.PixelData
    bad_uid = pydicom.dcmread(series_folder[3])
    bad_uid.StudyInstanceUID = "not a uid"
    short = pydicom.dcmread(series_folder[4])
    short.PixelData = short.PixelData[: len(short.PixelData) // 3]
    statuses = send([no_pixels, bad_uid, short], node.port, calling="SCANNER")
    assert statuses[0] == 0xA900
    assert 0xC000 <= statuses[1] <= 0xCFFF and 0xC000 <= statuses[2] <= 0xCFFF
    health = node.health()
    assert health["associations_refused"] == 2
    assert health["presentation_contexts_refused"] == 2  # RT Plan, in two transfer syntaxes
    assert health["instances_refused"] == {
        "no pixel data": 1,
        "no valid study or instance UID": 1,
        "pixel data shorter than the image": 1,
    }
    assert health["instances_stored"] == 0
    assert "association refused" in caplog.text and "STRANGER" in caplog.text
    assert "instance refused: no pixel data" in caplog.text
    for secret in SECRETS:
        assert secret not in caplog.text


def test_a_study_with_no_usable_image_does_not_hold_up_its_neighbour(
    tmp_path: Path,
    destination: Destination,
    series_folder: list[Path],
    running: Callable[[Settings], DicomNode],
) -> None:
    node = running(node_settings(tmp_path, destination))
    # RLE instances whose compressed frames are garbage: nothing is wrong with the DICOM, so
    # they are accepted; the decoder refuses them at analysis.
    broken = new_study(series_folder[:4], tmp_path / "broken")
    for path in broken:
        spoil_rle(path)
    good = new_study(series_folder, tmp_path / "good")
    spoil_rle(good[5])  # one such slice in a good study: left out, the other 23 analysed
    assert send(broken, node.port) == [0] * 4
    assert send(good, node.port) == [0] * 24
    wait_until(lambda: len(list(destination.folder.iterdir())) == 3, 60, "the good results")
    wait_until(lambda: node.health()["studies_without_results"] == 1, 20, "the broken study")
    results = destination.received()
    assert {ds.StudyInstanceUID for ds in results} == {pydicom.dcmread(good[0]).StudyInstanceUID}
    sr = next(ds for ds in results if ds.Modality == "SR")
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert len(evidence.ReferencedSOPSequence) == 23
    health = node.health()
    assert health["studies_analysed"] == 1 and health["analysis_errors"] == 1
    assert "no usable image" in health["last_error"]
    assert node.started and node.health()["listening"]


def test_results_wait_for_a_pacs_that_is_down_and_a_restart_resumes(
    tmp_path: Path, series_folder: list[Path], running: Callable[[Settings], DicomNode]
) -> None:
    pacs = Destination(tmp_path / "pacs")  # not started yet: deliveries fail and are retried
    settings = node_settings(tmp_path, pacs, node_stable_s=0.3)
    node = running(settings)
    assert send(series_folder, node.port) == [0] * 24
    wait_until(lambda: node.health()["delivery_errors"] >= 2, 30, "failed deliveries")
    health = node.health()
    assert health["studies_awaiting_delivery"] == 1
    assert "association" in health["last_error"] and "retry" in health["last_error"]
    node.stop()
    assert read_status(tmp_path / "spool")["listening"] is False  # type: ignore[index]

    # The PACS is back; a new process on the same spool sends the results it left.
    pacs.start()
    try:
        again = running(settings)
        wait_until(lambda: len(list(pacs.folder.iterdir())) == 3, 30, "the results, resent")
        wait_until(lambda: again.health()["studies_delivered"] == 1, 10, "the delivery")
        assert again.health()["studies_analysed"] == 0  # resumed, not analysed again
    finally:
        pacs.stop()


def test_instances_spooled_before_a_stop_are_analysed_after_the_restart(
    tmp_path: Path,
    destination: Destination,
    series_folder: list[Path],
    running: Callable[[Settings], DicomNode],
) -> None:
    settings = node_settings(tmp_path, destination, node_stable_s=60.0)
    node = running(settings)
    assert send(series_folder[:10], node.port) == [0] * 10
    node.stop()  # long before the study was stable
    assert len(list((tmp_path / "spool" / "incoming").rglob("*.dcm"))) == 10
    quick = settings.model_copy(update={"node_stable_s": 0.5})
    again = running(quick)
    assert send(series_folder[10:], again.port) == [0] * 14
    wait_until(lambda: len(list(destination.folder.iterdir())) == 3, 60, "results")
    sr = next(ds for ds in destination.received() if ds.Modality == "SR")
    referenced = {
        item.ReferencedSOPInstanceUID
        for item in sr.CurrentRequestedProcedureEvidenceSequence[0]
        .ReferencedSeriesSequence[0]
        .ReferencedSOPSequence
    }
    assert len(referenced) == 24  # one study of all 24 slices, from both processes


class PickyPacs:
    """A real Storage SCP (pynetdicom) that takes SRs and presentation states but no PDF."""

    def __init__(self) -> None:
        self.received: list[str] = []
        ae = AE(ae_title="PICKY")
        ae.add_supported_context(Comprehensive3DSRStorage)
        ae.add_supported_context(GrayscaleSoftcopyPresentationStateStorage)

        def store(event: Any) -> int:
            self.received.append(str(event.dataset.SOPClassUID))
            return 0

        self.port = free_port()
        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, store)]
        )

    def stop(self) -> None:
        self.server.shutdown()


def test_a_pacs_that_refuses_a_result_class_gets_retries_not_a_stall(
    tmp_path: Path,
    destination: Destination,
    series_folder: list[Path],
    running: Callable[[Settings], DicomNode],
) -> None:
    picky = PickyPacs()
    try:
        settings = node_settings(tmp_path, destination)
        settings = settings.model_copy(
            update={"node_send_to": [f"PICKY@127.0.0.1:{picky.port}", destination.peer]}
        )
        node = running(settings)
        assert send(series_folder, node.port) == [0] * 24
        assert send(new_study(series_folder, tmp_path / "second"), node.port) == [0] * 24
        # The PACS that takes everything gets both studies' results; the other one is retried,
        # study by study: its refusal of the first never holds up the second.
        wait_until(lambda: len(list(destination.folder.iterdir())) == 6, 60, "results")
        wait_until(lambda: node.health()["delivery_errors"] >= 3, 30, "retries")
        wait_until(lambda: picky.received.count(str(Comprehensive3DSRStorage)) >= 2, 30,
                   "the second study tried at the picky PACS")
        health = node.health()
        assert "its SOP class was not accepted" in health["last_error"]
        assert health["studies_awaiting_delivery"] == 2 and health["studies_delivered"] == 0
        attempts = health["delivery_errors"]
        time.sleep(1.5)  # backoff: one try a second a study at most, never a busy loop
        assert node.health()["delivery_errors"] <= attempts + 6
    finally:
        picky.stop()


class PartialStow:
    """A DICOMweb STOW-RS endpoint on loopback that answers 202 Accepted with every SR in the
    response's FailedSOPSequence (PS3.18 10.5.3: some instances stored, some not). Orthanc
    cannot be made to answer so (a Lua filter drops an instance yet reports it stored)."""

    def __init__(self) -> None:
        import threading
        from email import message_from_bytes
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        posts: list[list[str]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self._body()
                head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
                parts = message_from_bytes(head + body).get_payload()
                classes = [
                    str(pydicom.dcmread(io.BytesIO(part.get_payload(decode=True))).SOPClassUID)
                    for part in parts
                ]
                posts.append(classes)

                def item(uid: str) -> dict[str, Any]:
                    return {"00081150": {"vr": "UI", "Value": [uid]}}

                answer = {
                    "00081198": {"vr": "SQ", "Value": [item(c) for c in classes if c == SR]},
                    "00081199": {"vr": "SQ", "Value": [item(c) for c in classes if c != SR]},
                }
                data = json.dumps(answer).encode()
                self.send_response(202)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                if "Content-Length" in self.headers:
                    return self.rfile.read(int(self.headers["Content-Length"]))
                chunks = []  # Transfer-Encoding: chunked, as dicomweb-client sends it
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)

            def log_message(self, *args: object) -> None:
                pass

        self.posts = posts
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dicom-web"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


SR = "1.2.840.10008.5.1.4.1.1.88.34"


def test_a_stow_rs_answer_that_lists_failures_is_retried_never_taken(
    tmp_path: Path,
    destination: Destination,
    series_folder: list[Path],
    running: Callable[[Settings], DicomNode],
) -> None:
    stow = PartialStow()
    try:
        settings = node_settings(tmp_path, destination).model_copy(
            update={"node_send_to": [], "node_stow_url": stow.url}
        )
        node = running(settings)
        assert send(series_folder, node.port) == [0] * 24
        wait_until(lambda: node.health()["delivery_errors"] >= 2, 60, "failed deliveries")
        health = node.health()
        assert "1 result(s) refused" in health["last_error"]
        assert health["studies_delivered"] == 0 and health["studies_awaiting_delivery"] == 1
        assert all(sorted(post)[-1] == SR for post in stow.posts) and len(stow.posts) >= 2
        assert list((tmp_path / "spool" / "jobs").glob("*/results/*"))  # kept for a retry
    finally:
        stow.stop()


def test_a_study_whose_analysis_fails_is_given_up_and_the_next_one_goes_through(
    tmp_path: Path,
    destination: Destination,
    series_folder: list[Path],
    running: Callable[[Settings], DicomNode],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mriscribe.node import node as node_module

    real_render = node_module.outputs.render
    poisoned = pydicom.dcmread(series_folder[0]).StudyInstanceUID

    def render(analysis: Any, names: Any, options: Any = None) -> Any:
        # Fault injection: the first study's rendering fails as a library bug would.
        uids = {image.slice.source.study_uid for image in analysis.images if image.slice.source}
        if poisoned in uids:
            raise ValueError("a library failed")
        return real_render(analysis, names, options)

    monkeypatch.setattr(node_module.outputs, "render", render)
    node = running(node_settings(tmp_path, destination))
    assert send(series_folder, node.port) == [0] * 24
    good = new_study(series_folder, tmp_path / "good")
    assert send(good, node.port) == [0] * 24
    wait_until(lambda: len(list(destination.folder.iterdir())) == 3, 60, "the good results")
    wait_until(lambda: node.health()["studies_without_results"] == 1, 30, "the study given up")
    health = node.health()
    assert health["analysis_errors"] == 3 and "internal error (ValueError)" in health["last_error"]
    assert health["studies_analysing"] == 0


def test_a_study_that_kept_killing_the_node_is_given_up_after_the_restart(
    tmp_path: Path,
    destination: Destination,
    series_folder: list[Path],
    running: Callable[[Settings], DicomNode],
) -> None:
    settings = node_settings(tmp_path, destination, node_stable_s=60.0)
    node = running(settings)
    assert send(series_folder, node.port) == [0] * 24
    node.stop()
    # As after three starts that each died in this study's analysis: taken, tried three times.
    spool = Spool(tmp_path / "spool")
    spool.open()
    job = spool.take(next(iter(spool.waiting())), quiet_since=time.monotonic() + 1)
    assert job is not None
    for _ in range(3):
        job.attempt(spool)
    spool.close()
    again = running(settings)
    wait_until(lambda: again.health()["studies_without_results"] == 1, 30, "given up")
    assert "did not finish" in again.health()["last_error"]
    assert again.health()["studies_analysed"] == 0
    assert list(destination.folder.iterdir()) == []


def test_a_study_without_results_is_read_again_when_it_is_sent_again(
    tmp_path: Path,
    destination: Destination,
    series_folder: list[Path],
    running: Callable[[Settings], DicomNode],
) -> None:
    settings = node_settings(tmp_path, destination, max_images=10)
    node = running(settings)
    assert send(series_folder, node.port) == [0] * 24
    wait_until(lambda: node.health()["studies_without_results"] == 1, 60, "no results")
    assert "more than the limit of 10 images" in node.health()["last_error"]
    node.stop()
    again = running(settings.model_copy(update={"max_images": 200}))
    assert send(series_folder, again.port) == [0] * 24
    wait_until(lambda: len(list(destination.folder.iterdir())) == 3, 60, "results")
    assert again.health()["studies_skipped_by_loop_guard"] == 0


# Seen from outside


def test_the_node_beside_the_service_shows_in_health_and_models(
    tmp_path: Path,
    destination: Destination,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = node_settings(tmp_path, destination, node_enabled=True)
    with TestClient(create_app(settings)) as client:
        node = client.get("/health").json()["dicom_node"]
        assert node["listening"] is True and node["port"] == settings.node_port
        assert node["destinations"] == [destination.peer]
        assert echoscu(settings.node_port, "MRISCRIBE").returncode == 0
        monkeypatch.setenv("MRISCRIBE_NODE_SPOOL_DIR", str(tmp_path / "spool"))
        monkeypatch.setenv("MRISCRIBE_REPORT_ENGINE", "template")
        assert main(["models", "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)["dicom_node"]
        assert shown["listening"] is True and shown["ae_title"] == "MRISCRIBE"
        assert main(["models"]) == 0
        assert "dicom node: MRISCRIBE on port" in capsys.readouterr().out
    assert read_status(tmp_path / "spool")["listening"] is False  # type: ignore[index]
    assert echoscu(settings.node_port, "MRISCRIBE").returncode != 0


def test_node_settings_are_checked_before_it_listens(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="nowhere to send"):
        check_node_settings(Settings())
    with pytest.raises(SettingsError, match="beyond loopback"):
        check_node_settings(Settings(node_send_to=["A@h:104"], node_host="0.0.0.0"))
    check_node_settings(
        Settings(node_send_to=["A@h:104"], node_host="0.0.0.0", node_allowed_calling_aets=["X"])
    )
    with pytest.raises(SettingsError, match="does not make DICOM"):
        check_node_settings(Settings(node_send_to=["A@h:104"], node_outputs=["json"]))
    with pytest.raises(ValueError, match="AE@HOST:PORT"):
        Settings(node_send_to=["PACS@host"])
    with pytest.raises(ValueError, match="not an AE title"):
        Settings(node_ae_title="A" * 17)


def test_the_command_line_refuses_a_node_with_nowhere_to_send(tmp_path: Path) -> None:
    def node(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "mriscribe", "dicom-node", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    result = node("--spool", str(tmp_path / "spool"))
    assert result.returncode == 2 and "nowhere to send results" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "spool").exists()
    result = node("--send-to", f"X@127.0.0.1:{free_port()}", "--port", "99999")
    assert result.returncode == 2 and "node_port" in result.stderr
    result = node("--send-to", "nowhere")
    assert result.returncode == 2 and "AE@HOST:PORT" in result.stderr
