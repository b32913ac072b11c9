"""The Orthanc test harness itself: a real Orthanc receives, indexes and routes a series."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from pydicom.uid import MRImageStorage

from orthanc import Orthanc, echoscu, free_port, make_series, start_orthanc, storescu


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    with start_orthanc(tmp_path / "orthanc") as server:
        yield server


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """DCMTK's storescp as a destination (AE title DEST): its port and output folder."""
    port, out = free_port(), tmp_path / "received"
    out.mkdir()
    log = (tmp_path / "storescp.log").open("wb")
    process = subprocess.Popen(
        ["storescp", "-aet", "DEST", "-od", str(out), str(port)], stdout=log, stderr=log
    )
    try:
        for _ in range(100):
            if echoscu(port, "DEST").returncode == 0:
                break
            assert process.poll() is None, (tmp_path / "storescp.log").read_text()
        else:
            pytest.fail("storescp did not answer C-ECHO")
        yield port, out
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def test_store_and_find(orthanc: Orthanc, tmp_path: Path) -> None:
    assert echoscu(orthanc.dicom_port, orthanc.aet).returncode == 0
    study_uid = "1.2.826.0.1.3680043.8.498.1"
    files = make_series(tmp_path / "series", 24, study_uid=study_uid)
    sent = storescu(files, orthanc.dicom_port, called_aet=orthanc.aet)
    assert sent.returncode == 0, sent.stdout + sent.stderr

    assert len(orthanc.studies()) == 1
    instances = orthanc.study_instances(study_uid)
    assert len(instances) == 24
    assert {i["SOPClassUID"] for i in instances} == {MRImageStorage}
    assert {(i["Modality"], i["Manufacturer"], i["SeriesNumber"]) for i in instances} == {
        ("MR", "TestScanner", "1")
    }
    assert orthanc.instance_file(instances[0]["ID"])[128:132] == b"DICM"

    qido = requests.get(
        f"{orthanc.dicomweb}/studies",
        params={"StudyInstanceUID": study_uid},
        headers={"Accept": "application/dicom+json"},
        timeout=30,
    )
    qido.raise_for_status()
    assert [s["0020000D"]["Value"] for s in qido.json()] == [[study_uid]]
    assert orthanc.study_instances("1.2.3.4") == []


def test_route_stable_study(storescp: tuple[int, Path], tmp_path: Path) -> None:
    port, received = storescp
    with start_orthanc(
        tmp_path / "orthanc",
        modalities={"dest": ("DEST", "127.0.0.1", port)},
        route_stable_to="dest",
    ) as server:
        files = make_series(tmp_path / "series", 5)
        sent = storescu(files, server.dicom_port, called_aet=server.aet)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        server.wait_for(lambda: len(list(received.iterdir())) >= 5, 30, "5 routed files")
        server.wait_for(lambda: "route: sent study" in server.log_tail(10**6), 30, "the Lua log")
        assert len(list(received.iterdir())) == 5
