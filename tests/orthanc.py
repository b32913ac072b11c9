"""A real PACS for the tests: Orthanc started on free loopback ports, plus DCMTK's SCUs.

Each test starts its own Orthanc (Debian's ``orthanc`` and ``orthanc-dicomweb`` packages) with a
configuration, storage and log in a temporary folder, talks to it over REST, DICOMweb and DICOM,
and stops it. ``make_series`` writes a small synthetic MR series to send.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
MISSING = (
    "Orthanc with its DICOMweb plugin is needed for these tests ({what} not found): "
    "`make install` installs Debian's orthanc and orthanc-dicomweb packages"
)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Orthanc:
    """A running Orthanc: its folder (config, storage, log), ports and process."""

    folder: Path
    aet: str
    dicom_port: int
    http_port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return self.url + "/dicom-web"

    def get(self, path: str) -> Any:
        """GET ``path`` of the REST API as JSON; raises on an HTTP error."""
        response = requests.get(self.url + path, timeout=30)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Any) -> Any:
        """POST ``body`` (JSON, or a str/bytes as it is) to ``path``; the answer as JSON."""
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        response = requests.post(self.url + path, data=data, timeout=120)
        response.raise_for_status()
        return response.json()

    def studies(self) -> list[str]:
        """Orthanc's ids of the studies it holds."""
        return list(self.get("/studies"))

    def study_instances(self, study_instance_uid: str) -> list[dict[str, str]]:
        """Each instance of a DICOM study with its main tags and Orthanc ``ID``, in order."""
        found = self.post(
            "/tools/find", {"Level": "Study", "Query": {"StudyInstanceUID": study_instance_uid}}
        )
        keys = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "SeriesNumber",
                "InstanceNumber", "Modality", "Manufacturer")  # fmt: skip
        rows = []
        for study in found:
            for instance in self.get(f"/studies/{study}/instances"):
                tags = self.get(f"/instances/{instance['ID']}/simplified-tags")
                rows.append({"ID": instance["ID"]} | {k: tags.get(k, "") for k in keys})
        return sorted(rows, key=lambda r: (r["SeriesInstanceUID"], int(r["InstanceNumber"] or 0)))

    def instance_file(self, orthanc_instance_id: str) -> bytes:
        """The stored DICOM file of an instance."""
        response = requests.get(f"{self.url}/instances/{orthanc_instance_id}/file", timeout=30)
        response.raise_for_status()
        return response.content

    def log_tail(self, n: int = 60) -> str:
        """The last ``n`` lines of Orthanc's log (and of its stderr, when it wrote any)."""
        lines: list[str] = []
        for name in ("orthanc.log", "orthanc.stderr"):
            path = self.folder / name
            if path.exists():
                lines += path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll ``predicate`` until true; an AssertionError naming ``what`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout_s} s waiting for {what}; Orthanc log:\n"
                    + self.log_tail()
                )
            if self.process.poll() is not None:
                raise AssertionError(
                    f"Orthanc exited ({self.process.returncode}) while waiting for {what}:\n"
                    + self.log_tail()
                )
            time.sleep(0.2)

    def stop(self) -> None:
        """Terminate Orthanc (kill it after 10 s) and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Orthanc:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


ROUTE_LUA = """\
function OnStableStudy(studyId, tags, metadata)
  local body = '{"Resources": ["' .. studyId .. '"], "Synchronous": true}'
  print('route: sending stable study ' .. studyId .. ' to {modality}')
  local answer = RestApiPost('/modalities/{modality}/store', body)
  print('route: sent study ' .. studyId .. ' to {modality}: ' .. tostring(answer))
end
"""


def start_orthanc(
    folder: Path,
    *,
    modalities: dict[str, tuple[str, str, int]] | None = None,
    route_stable_to: str | None = None,
    stable_age_s: int = 1,
    lua_extra: str = "",
) -> Orthanc:
    """Start Orthanc with its config, storage and log in ``folder``; wait until it answers.

    ``modalities`` maps names to (AE title, host, port); ``route_stable_to`` names one of them to
    which a Lua script sends each study once stable (no new instance for ``stable_age_s``).
    """
    for path in (ORTHANC, DICOMWEB_PLUGIN):
        if not Path(path).exists():
            raise RuntimeError(MISSING.format(what=path))
    folder.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
    while http_port == dicom_port:
        http_port = free_port()
    config: dict[str, Any] = {
        "Name": f"test-orthanc-{http_port}",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "StorageCompression": False,
        "ConcurrentJobs": 2,
        "SaveJobs": False,
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,  # the HTTP server refuses any client but localhost
        "AuthenticationEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": "ORTHANC",
        "DicomCheckCalledAet": True,  # refuse associations to another AE title, as PACSs do
        "DicomPort": dicom_port,
        "DicomModalities": {k: list(v) for k, v in (modalities or {}).items()},
        "DicomAssociationCloseDelay": 0,
        "StableAge": stable_age_s,
    }
    lua = lua_extra
    if route_stable_to is not None:
        lua = ROUTE_LUA.replace("{modality}", route_stable_to) + lua
    if lua:
        (folder / "scripts.lua").write_text(lua)
        config["LuaScripts"] = [str(folder / "scripts.lua")]
    config_path = folder / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    with (folder / "orthanc.stderr").open("wb") as stderr:
        process = subprocess.Popen(
            [ORTHANC, "--verbose", f"--logfile={folder / 'orthanc.log'}", str(config_path)],
            stdout=stderr,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        )
    orthanc = Orthanc(folder, "ORTHANC", dicom_port, http_port, process)
    try:
        orthanc.wait_for(lambda: _answers(orthanc.url + "/system"), 30, "Orthanc's GET /system")
    except BaseException:
        orthanc.stop()
        raise
    return orthanc


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


def storescu(
    files: Sequence[Path],
    port: int,
    *,
    called_aet: str,
    calling_aet: str = "STORESCU",
    host: str = "127.0.0.1",
    timeout_s: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Send ``files`` with DCMTK's storescu in one association; the finished process, unchecked.

    storescu proposes each file's own transfer syntax besides the uncompressed ones; ``-nh`` goes
    on after a refused instance (the output and return code tell).
    """
    args = ["storescu", "-nh", "-aet", calling_aet, "-aec", called_aet, host, str(port)]
    return subprocess.run(
        [*args, *map(str, files)], capture_output=True, text=True, timeout=timeout_s, check=False
    )


def echoscu(
    port: int, called_aet: str, calling_aet: str = "ECHOSCU", host: str = "127.0.0.1"
) -> subprocess.CompletedProcess[str]:
    """A C-ECHO with DCMTK's echoscu; the finished process, unchecked."""
    args = ["echoscu", "-aet", calling_aet, "-aec", called_aet, host, str(port)]
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)


def make_series(
    folder: Path,
    count: int = 24,
    *,
    study_uid: str | None = None,
    patient_name: str = "Test^Patient",
    patient_id: str = "TEST0001",
    size: int = 128,
    seed: int = 0,
) -> list[Path]:
    """Write a synthetic axial MR series (a bright ball in a dim disc), one file per slice."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    radius = np.hypot(x, y)
    paths = []
    for i in range(count):
        z = i - (count - 1) / 2  # mm from the middle slice
        ball = max(size * 0.12, 1.0) ** 2 - z**2  # squared radius of the ball's cut
        image = np.where(radius < size * 0.4, 300.0, 0.0)
        image[radius**2 < ball] = 1500.0
        image += rng.normal(0, 10, image.shape)
        pixels = np.clip(image, 0, 4095).astype(np.uint16)

        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop_uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientName, ds.PatientID = patient_name, patient_id
        ds.PatientBirthDate, ds.PatientSex = "", "O"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240102"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.Modality, ds.Manufacturer = "MR", "TestScanner"
        ds.SeriesNumber, ds.InstanceNumber = 1, i + 1
        ds.SeriesDescription = "T1 axial"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "NONE", ""
        ds.MRAcquisitionType, ds.EchoTrainLength = "2D", 1
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 1.0
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-(size - 1) / 2, -(size - 1) / 2, float(i)]
        ds.SliceLocation = float(i)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = pixels.tobytes()
        path = folder / f"{series_uid.rsplit('.', 1)[-1][-8:]}_{i + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
