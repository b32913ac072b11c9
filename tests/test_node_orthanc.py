"""The DICOM node against a real PACS: Orthanc, the node as a subprocess, DCMTK's storescu.

The issue's scenario (Orthanc routes each stable study to the node, the node sends its SR,
presentation state and PDF back into the same study, and the study coming back again is not
analysed twice), STOW-RS delivery, and bad input: an unknown calling AE, a SOP class the node
does not take, corrupt instances and a study of nothing else, beside a good study. The series
is the Colin27 head with a synthetic tumour (``result_studies.series_files``), its patient
renamed so the node's log can be searched for it.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from orthanc import Orthanc, free_port, start_orthanc, storescu
from result_studies import series_files

MR = "1.2.840.10008.5.1.4.1.1.4"
SR = "1.2.840.10008.5.1.4.1.1.88.34"
PR = "1.2.840.10008.5.1.4.1.1.11.1"
PDF = "1.2.840.10008.5.1.4.1.1.104.1"
RAW_DATA = "1.2.840.10008.5.1.4.1.1.66"
RESULTS = {SR: 1, PR: 1, PDF: 1}
SECRET_NAME, SECRET_ID = "Secret^Person", "SECRET-ID-77"
NODE_AE = "MRISCRIBE"
BROKEN = ("truncated", "garbage", "no-pixels")
WAIT_S = 60


def write_series(folder: Path, seed: int) -> tuple[str, list[Path]]:
    """The 24-slice head (its UIDs from ``seed``) as files, patient renamed; its study UID."""
    folder.mkdir(parents=True)
    paths = []
    for item in series_files(seed=seed):
        ds = pydicom.dcmread(io.BytesIO(item.data))
        ds.PatientName, ds.PatientID = SECRET_NAME, SECRET_ID
        paths.append(folder / item.name)
        ds.save_as(paths[-1], enforce_file_format=True)
    return str(ds.StudyInstanceUID), sorted(paths)


@dataclass
class Node:
    """``mriscribe dicom-node`` running in a subprocess."""

    process: subprocess.Popen[bytes]
    port: int
    spool: Path
    log: Path

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.spool / "status.json").read_text()))
        except (OSError, ValueError):
            return {}

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """Poll status.json until ``predicate`` holds; the status."""
        deadline = time.monotonic() + WAIT_S
        while not predicate(status := self.status()):
            assert self.process.poll() is None, f"the node exited:\n{self.stderr()[-3000:]}"
            assert time.monotonic() < deadline, f"no {what} in {WAIT_S} s: {status}"
            time.sleep(0.2)
        return status

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    """Everything started in a test is stopped here, whatever happened."""
    with ExitStack() as stack:
        yield stack


def run_node(stack: ExitStack, folder: Path, port: int, *options: str) -> Node:
    """Start the node (stable 1 s, template report) and wait until it listens."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "node.stderr"
    args = ["--port", str(port), "--ae-title", NODE_AE, "--stable-s", "1",
            "--spool", str(folder / "spool"), "--report-engine", "template"]  # fmt: skip
    env = {**os.environ, "MRISCRIBE_REPORT_ENGINE": "template"}
    env.pop("MRISCRIBE_CONFIG", None)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mriscribe", "dicom-node", *args, *options],
            stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
    node = Node(process, port, folder / "spool", log)
    stack.callback(node.stop)
    deadline = time.monotonic() + 60
    while "listening on" not in node.stderr():
        assert process.poll() is None, f"the node did not start:\n{node.stderr()}"
        assert time.monotonic() < deadline, f"the node is not listening:\n{node.stderr()}"
        time.sleep(0.1)
    return node


def run_orthanc(stack: ExitStack, folder: Path, **options: Any) -> Orthanc:
    return stack.enter_context(start_orthanc(folder, stable_age_s=1, **options))


def classes(orthanc: Orthanc, study_uid: str) -> Counter[str]:
    return Counter(row["SOPClassUID"] for row in orthanc.study_instances(study_uid))


def results_of(orthanc: Orthanc, study_uid: str) -> list[dict[str, str]]:
    return [r for r in orthanc.study_instances(study_uid) if r["SOPClassUID"] in RESULTS]


def assert_clean_log(node: Node) -> None:
    text = node.stderr()
    for secret in (SECRET_NAME, SECRET_ID, "Secret", "SECRET", "Traceback"):
        assert secret not in text, f"{secret!r} in the node's log:\n{text[-3000:]}"


def referenced_instances(ds: Dataset) -> set[str]:
    """Every ReferencedSOPInstanceUID anywhere in ``ds``."""
    found: set[str] = set()

    def visit(dataset: Dataset, element: Any) -> None:
        if element.keyword == "ReferencedSOPInstanceUID":
            found.add(str(element.value))

    ds.walk(visit)
    return found


def test_orthanc_routes_a_stable_study_through_the_node(stack: ExitStack, tmp_path: Path) -> None:
    study_uid, files = write_series(tmp_path / "series", seed=0)
    node_port = free_port()
    orthanc = run_orthanc(
        stack,
        tmp_path / "orthanc",
        modalities={"mriscribe": (NODE_AE, "127.0.0.1", node_port)},
        route_stable_to="mriscribe",
    )
    node = run_node(
        stack, tmp_path / "node", node_port, "--send-to", f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"
    )
    sent = storescu(files, orthanc.dicom_port, called_aet=orthanc.aet, calling_aet="SCANNER")
    assert sent.returncode == 0, sent.stdout + sent.stderr

    expected = Counter({MR: 24} | RESULTS)
    orthanc.wait_for(lambda: classes(orthanc, study_uid) == expected, WAIT_S, "24 MR + SR/PR/PDF")
    results = results_of(orthanc, study_uid)
    assert {r["Manufacturer"] for r in results} == {"mriscribe"}
    series = requests.get(
        f"{orthanc.dicomweb}/studies/{study_uid}/series",
        headers={"Accept": "application/dicom+json"},
        timeout=30,
    )
    series.raise_for_status()
    assert len(series.json()) == 4
    modalities = sorted(s["00080060"]["Value"][0] for s in series.json())
    assert modalities == ["DOC", "MR", "PR", "SR"]

    # The study is stable again once the results are in: Orthanc routes all of it, results
    # included, back to the node, which must not analyse it again: its own results are
    # ignored on arrival, and a study made only of instances it has analysed is skipped.
    status = node.wait_for(
        lambda s: (
            s.get("instances_ignored", 0) >= 3
            and s.get("studies_skipped_by_loop_guard", 0) >= 1
            and s.get("instances_repeated", 0) >= 24
        ),
        "loop guard in status.json",
    )
    time.sleep(3)  # the node's stable time and an analysis, were it to start again
    status = node.status()
    assert status["studies_analysed"] == 1, status
    assert status["studies_delivered"] == 1, status
    # The study came back whole: spooled again (48 stored, 24 of them repeats), then skipped.
    assert status["instances_stored"] == 48 and status["instances_repeated"] == 24, status
    assert status["studies_skipped_by_loop_guard"] == 1, status
    assert classes(orthanc, study_uid) == expected
    assert "route: sent study" in orthanc.log_tail(10**6)

    sr_row = next(r for r in results if r["SOPClassUID"] == SR)
    sr = pydicom.dcmread(io.BytesIO(orthanc.instance_file(sr_row["ID"])))
    assert sr.StudyInstanceUID == study_uid and sr.Manufacturer == "mriscribe"
    sources = {pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in files}
    referenced = referenced_instances(sr)
    assert referenced & sources, "the SR references no instance of the source series"
    images = {r["SOPInstanceUID"] for r in orthanc.study_instances(study_uid)}
    assert referenced <= images, "the SR references instances the study does not hold"
    assert_clean_log(node)


def test_results_by_stow_rs(stack: ExitStack, tmp_path: Path) -> None:
    study_uid, files = write_series(tmp_path / "series", seed=1)
    orthanc = run_orthanc(stack, tmp_path / "orthanc")
    node = run_node(stack, tmp_path / "node", free_port(), "--stow-url", orthanc.dicomweb)
    sent = storescu(files, node.port, called_aet=NODE_AE)
    assert sent.returncode == 0, sent.stdout + sent.stderr

    orthanc.wait_for(
        lambda: classes(orthanc, study_uid) == Counter(RESULTS), WAIT_S, "SR/PR/PDF by STOW"
    )
    assert {r["Manufacturer"] for r in results_of(orthanc, study_uid)} == {"mriscribe"}
    node.wait_for(lambda s: s.get("studies_delivered") == 1, "the delivery in status.json")
    assert_clean_log(node)


def bad_instances(folder: Path, source: Path) -> tuple[str, dict[str, Path]]:
    """Instances of one new study: pixel data cut short, garbage after the file meta, an MR
    image without pixel data, and a Raw Data instance (a class the node does not take)."""
    folder.mkdir(parents=True)
    study_uid, series_uid = generate_uid(), generate_uid()

    def variant(name: str) -> tuple[Dataset, Path]:
        ds = pydicom.dcmread(source)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        return ds, folder / f"{name}.dcm"

    paths = {}
    ds, path = variant("truncated")
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - len(ds.PixelData) // 2])
    paths["truncated"] = path

    ds, path = variant("garbage")
    ds.save_as(path, enforce_file_format=True)
    meta_end = 132 + 12 + int.from_bytes(path.read_bytes()[140:144], "little")
    path.write_bytes(path.read_bytes()[:meta_end] + os.urandom(4096))
    paths["garbage"] = path

    ds, path = variant("no-pixels")
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    paths["no-pixels"] = path

    ds, path = variant("raw-data")
    raw = Dataset()
    raw.file_meta = FileMetaDataset()
    raw.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    raw.file_meta.MediaStorageSOPClassUID = raw.SOPClassUID = RAW_DATA
    raw.file_meta.MediaStorageSOPInstanceUID = raw.SOPInstanceUID = ds.SOPInstanceUID
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "PatientName", "PatientID"):
        setattr(raw, keyword, ds.get(keyword))
    raw.Modality, raw.InstanceNumber = "OT", 1
    raw.save_as(path, enforce_file_format=True)
    paths["raw-data"] = path
    return study_uid, paths


def send_raw(path: Path, port: int, calling_aet: str) -> int | None:
    """C-STORE a file's bytes as they are (pynetdicom streams the dataset undecoded, which
    storescu will not do for a broken file); the status, or None without an answer."""
    from pynetdicom import AE, _config

    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        ae = AE(ae_title=calling_aet)
        ae.add_requested_context(MR, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AE)
        assert assoc.is_established
        try:
            answer = assoc.send_c_store(path)
        finally:
            assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
    return int(answer.Status) if answer and "Status" in answer else None


def test_bad_input_is_refused_and_a_good_study_still_goes_through(
    stack: ExitStack, tmp_path: Path
) -> None:
    good_uid, good_files = write_series(tmp_path / "good", seed=2)
    bad_uid, bad = bad_instances(tmp_path / "bad", good_files[0])
    orthanc = run_orthanc(stack, tmp_path / "orthanc")
    node = run_node(
        stack,
        tmp_path / "node",
        free_port(),
        "--allow-calling-ae", "GOOD",
        "--send-to", f"ORTHANC@127.0.0.1:{orthanc.dicom_port}",
    )  # fmt: skip

    stranger = storescu(good_files[:2], node.port, called_aet=NODE_AE, calling_aet="BAD")
    assert stranger.returncode != 0, stranger.stdout + stranger.stderr
    node.wait_for(lambda s: s.get("associations_refused", 0) >= 1, "associations_refused")
    assert re.search(r"association refused.*\"calling_ae\": \"BAD\"", node.stderr())

    raw = storescu([bad["raw-data"]], node.port, called_aet=NODE_AE, calling_aet="GOOD")
    # storescu -nh exits 0 after an instance it could not send: its message tells.
    assert "No presentation context" in raw.stderr, raw.stdout + raw.stderr

    # The good study and the broken one at the same time, over separate associations.
    with ExitStack() as sending:
        good = subprocess.Popen(
            ["storescu", "-nh", "-aet", "GOOD", "-aec", NODE_AE, "127.0.0.1", str(node.port),
             *map(str, good_files)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        sending.callback(good.kill)
        statuses = {name: send_raw(bad[name], node.port, "GOOD") for name in BROKEN}
        output, _ = good.communicate(timeout=120)
    assert good.returncode == 0, output
    # Failure statuses are 0xAxxx or 0xCxxx (PS3.4 B.2.3); the truncated file is left to
    # test_truncated_pixel_data_is_refused.
    for name in ("garbage", "no-pixels"):
        assert statuses[name] is not None and statuses[name] >> 12 in (0xA, 0xC), statuses

    orthanc.wait_for(
        lambda: classes(orthanc, good_uid) == Counter(RESULTS), WAIT_S, "the good study's results"
    )
    idle = node.wait_for(
        lambda s: (
            s.get("studies_delivered") == 1
            and s.get("studies_receiving") == s.get("studies_analysing") == 0
            and s.get("studies_awaiting_delivery") == 0
        ),
        "an idle node after the good delivery",
    )
    assert classes(orthanc, bad_uid) == Counter()
    assert idle["studies_analysed"] == 1 and idle["instances_stored"] >= 24, idle
    assert sum(idle["instances_refused"].values()) >= 2, idle
    assert node.process.poll() is None
    assert_clean_log(node)


def test_truncated_pixel_data_is_refused(stack: ExitStack, tmp_path: Path) -> None:
    _, files = write_series(tmp_path / "series", seed=3)
    _, bad = bad_instances(tmp_path / "bad", files[0])
    node = run_node(stack, tmp_path / "node", free_port(), "--send-to", "PACS@127.0.0.1:9")
    status = send_raw(bad["truncated"], node.port, "GOOD")
    assert status is not None and status >> 12 in (0xA, 0xC), f"status {status!r}"
