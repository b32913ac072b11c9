"""Studies for the tests of the DICOM and FHIR results, each analysed once per test session.

Real DICOM inputs: a real head (Colin27) as a 24-slice MR series with one or two synthetic
tumours, or none, and as one multi-frame file; six slices of it without pixel spacing (tumour
sizes estimated); pydicom's own MR test files (one slice, a multi-frame file, one without pixel
spacing, one without a birth date, one with black pixels and a sparse header, one beside a
half-size copy of itself); and, for the refused cases, the same head as PNG slices and as NIfTI.
"""

from __future__ import annotations

import gzip
import io
import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from dicom_files import dataset, to_bytes
from mriscribe.analysis import Analysis
from mriscribe.pipeline import InputFile, analyze
from mriscribe.settings import Settings
from mriscribe.training.dicom_series import add_lesion, shuffled_files, volume_to_dicom

COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")
needs_colin27 = pytest.mark.skipif(
    not COLIN27.exists(), reason="Colin27 missing: apt-get install mricron-data"
)
LEFT = (-30.0, -10.0, 15.0)  # RAS mm
RIGHT_LOW = (35.0, 5.0, -5.0)
RADII = (16.0, 18.0, 15.0)
SLICES = list(range(60, 132, 3))  # 24 axial slices, 3 mm apart
SETTINGS = Settings(report_engine="template")
PATIENT = {
    "PatientName": "Testperson^Fictional",
    "PatientID": "FICT-0042",
    "PatientBirthDate": "19700101",
    "PatientSex": "O",
    "AccessionNumber": "ACC-TEST-7",
    "StudyID": "S-1",
    "ReferringPhysicianName": "Doctor^Fictional",
    "StudyDate": "20260101",
    "StudyTime": "101500",
}


@cache
def _head() -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(COLIN27)
    return np.asarray(image.dataobj, dtype=np.float32), image.affine


def series_files(
    centres: tuple[tuple[float, float, float], ...] = (LEFT,), seed: int = 0
) -> list[InputFile]:
    """The head with a tumour at each RAS centre, as a shuffled 24-slice DICOM series."""
    volume, affine = _head()
    for centre in centres:
        volume, _mask = add_lesion(volume, affine, centre, RADII)
    files = volume_to_dicom(volume, affine, slices=SLICES, seed=seed, patient=PATIENT)
    return [InputFile(name, data) for name, data in shuffled_files(files, seed=seed + 7)]


@cache
def series_analysis(centres: tuple[tuple[float, float, float], ...] = (LEFT,)) -> Analysis:
    """The analysed series (``centres=()``: a normal head, the negative study)."""
    return analyze(series_files(centres), SETTINGS)


@cache
def pydicom_analysis(name: str = "MR_small.dcm", *, drop_spacing: bool = False) -> Analysis:
    """One of pydicom's test files analysed (``drop_spacing``: without PixelSpacing, so sizes
    are estimates; MR_small.dcm has no tumour: estimated_analysis() has estimated tumours)."""
    ds = dataset(name)
    if drop_spacing:
        for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
            if keyword in ds:
                delattr(ds, keyword)
    return _analyze_quietly([InputFile("source.dcm", to_bytes(ds))])


def _analyze_quietly(files: list[InputFile]) -> Analysis:
    """Analysed with pydicom's warnings about its test files silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return analyze(files, SETTINGS)


@cache
def estimated_analysis() -> Analysis:
    """Six slices through the one-lesion series' tumour without Pixel Spacing: every tumour's
    size is made with the configured default spacing (estimated)."""
    slices = []
    for item in series_files():
        ds = pydicom.dcmread(io.BytesIO(item.data))
        del ds.PixelSpacing
        slices.append((float(ds.ImagePositionPatient[2]), item.name, ds))
    slices.sort(key=lambda found: found[0])
    return _analyze_quietly([InputFile(name, to_bytes(ds)) for _, name, ds in slices[6:12]])


@cache
def no_birth_date_analysis() -> Analysis:
    """MR_small.dcm without Patient's Birth Date."""
    ds = dataset("MR_small.dcm")
    del ds.PatientBirthDate
    return _analyze_quietly([InputFile("source.dcm", to_bytes(ds))])


# The Patient and General Study attributes the sparse study's file leaves out (it keeps the
# patient's name and ID and the study's date and time): results must leave them out or empty.
SPARSE_DROPPED = (
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyID",
    "StudyDescription",
    "NameOfPhysiciansReadingStudy",
)
SPARSE_KEPT = ("PatientName", "PatientID", "StudyDate", "StudyTime")


@cache
def sparse_source() -> Dataset:
    """MR_small.dcm with black pixels (the detector finds nothing) and, of the patient and the
    study, only the name, ID, date and time."""
    ds = dataset("MR_small.dcm")
    ds.PixelData = np.zeros_like(ds.pixel_array).tobytes()
    for keyword in SPARSE_DROPPED:
        if keyword in ds:
            delattr(ds, keyword)
    return ds


@cache
def sparse_analysis() -> Analysis:
    """The sparse source analysed: no finding at all (an indeterminate study)."""
    return _analyze_quietly([InputFile("source.dcm", to_bytes(sparse_source()))])


@cache
def two_sizes_analysis() -> Analysis:
    """MR_small.dcm and a half-size copy of it as a second series of the same study, with its
    own window."""
    first = dataset("MR_small.dcm")
    second = dataset("MR_small.dcm")
    pixels = second.pixel_array[::2, ::2].copy()
    second.Rows, second.Columns = pixels.shape
    second.PixelData = pixels.tobytes()
    second.PixelSpacing = [2 * float(v) for v in first.PixelSpacing]
    second.SeriesInstanceUID = first.SeriesInstanceUID + ".2"
    second.SOPInstanceUID = first.SOPInstanceUID + ".2"
    second.file_meta.MediaStorageSOPInstanceUID = second.SOPInstanceUID
    second.SeriesNumber = 2
    second.WindowCenter, second.WindowWidth = 700, 1400
    return _analyze_quietly(
        [InputFile(f"{n}.dcm", to_bytes(ds)) for n, ds in (("a", first), ("b", second))]
    )


@cache
def png_analysis() -> Analysis:
    """Two slices of the head with a tumour, as PNG files: no DICOM source."""
    volume, affine = _head()
    volume, _mask = add_lesion(volume, affine, LEFT, RADII)
    files = []
    for k in (86, 92):
        plane = np.rot90(volume[:, :, k])
        scaled = (255 * plane / max(float(plane.max()), 1.0)).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(scaled).save(buffer, format="PNG")
        files.append(InputFile(f"slice{k}.png", buffer.getvalue()))
    return analyze(files, SETTINGS)


@cache
def nifti_analysis() -> Analysis:
    """The head with a tumour as one NIfTI volume: geometry, but no DICOM instances."""
    volume, affine = _head()
    volume, _mask = add_lesion(volume, affine, LEFT, RADII)
    data = nib.Nifti1Image(volume[:, :, 60:132:3].astype(np.int16), affine).to_bytes()
    return analyze([InputFile("head.nii.gz", gzip.compress(data, compresslevel=1))], SETTINGS)


def multiframe_bytes(centres: tuple[tuple[float, float, float], ...] = (LEFT,)) -> bytes:
    """The 24-slice series with its tumour as one multi-frame file: highdicom's Legacy
    Converted Enhanced MR Image (per-frame positions in functional groups), patient kept."""
    import highdicom as hd
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slices = [pydicom.dcmread(io.BytesIO(item.data)) for item in series_files(centres)]
        frames = hd.legacy.LegacyConvertedEnhancedMRImage(
            slices,
            series_instance_uid=hd.UID(),
            series_number=5,
            sop_instance_uid=hd.UID(),
            instance_number=1,
        )
        return to_bytes(frames)


@cache
def multiframe_analysis() -> Analysis:
    """The multi-frame study with a tumour, analysed: every image is a frame of one instance."""
    return analyze([InputFile("frames.dcm", multiframe_bytes())], SETTINGS)


@cache
def changed_analysis(name: str, changes: tuple[tuple[str, object], ...]) -> Analysis:
    """One of pydicom's test files analysed with header attributes changed (a value of None
    deletes the attribute, a tuple is a multi-valued one): ``changes`` as (keyword, value)
    pairs."""
    ds = dataset(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pydicom's, on a malformed value
        for keyword, value in changes:
            if value is None:
                if keyword in ds:
                    delattr(ds, keyword)
            else:
                setattr(ds, keyword, list(value) if isinstance(value, tuple) else value)
    return _analyze_quietly([InputFile("source.dcm", to_bytes(ds))])


@cache
def two_patients_analysis() -> Analysis:
    """MR_small.dcm twice, in two series of one study, whose headers name two patients."""
    first, second = dataset("MR_small.dcm"), dataset("MR_small.dcm")
    first.PatientID, first.PatientName = "PAT-A", "Alpha^Anna"
    second.PatientID, second.PatientName = "PAT-B", "Beta^Bert"
    second.SeriesInstanceUID = first.SeriesInstanceUID + ".2"
    second.SOPInstanceUID = first.SOPInstanceUID + ".2"
    second.file_meta.MediaStorageSOPInstanceUID = second.SOPInstanceUID
    return _analyze_quietly(
        [InputFile(f"{n}.dcm", to_bytes(ds)) for n, ds in (("a", first), ("b", second))]
    )


@cache
def mixed_analysis() -> Analysis:
    """MR_small.dcm (a DICOM patient, black pixels) and a PNG slice of the head with a tumour
    (no patient at all) in one upload."""
    ds = dataset("MR_small.dcm")
    ds.PixelData = np.zeros_like(ds.pixel_array).tobytes()
    volume, affine = _head()
    volume, _mask = add_lesion(volume, affine, LEFT, RADII)
    plane = np.rot90(volume[:, :, 90])
    scaled = (255 * plane / max(float(plane.max()), 1.0)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(scaled).save(buffer, format="PNG")
    return _analyze_quietly(
        [InputFile("a.dcm", to_bytes(ds)), InputFile("other.png", buffer.getvalue())]
    )


# The DICOM results' test studies by name, and which need Colin27.
DICOM_STUDIES: dict[str, Callable[[], Analysis]] = {
    "one lesion": lambda: series_analysis(),
    "two lesions": lambda: series_analysis((LEFT, RIGHT_LOW)),
    "negative": lambda: series_analysis(()),
    "estimated": lambda: estimated_analysis(),
    "24 frames": lambda: multiframe_analysis(),
    "MR_small": lambda: pydicom_analysis("MR_small.dcm"),
    "multi-frame": lambda: pydicom_analysis("emri_small.dcm"),
    "no spacing": lambda: pydicom_analysis(drop_spacing=True),
}
COLIN27_STUDIES = {"one lesion", "two lesions", "negative", "estimated", "24 frames"}
# What the test series' headers say about the patient (PATIENT, less the values too short to
# tell apart from other text): none of it may reach a log line.
SECRETS = ("Testperson", "Fictional", "FICT-0042", "19700101", "ACC-TEST-7", "Doctor")
