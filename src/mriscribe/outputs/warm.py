"""Warming every output before the first request: one blank DICOM slice analysed and rendered.

The first rendering in a process pays for imports and the standard's tables (highdicom's
module maps, fhir.resources' classes): about half a second. The service calls ``warm_up`` in
the background at start, so no request pays it.
"""

from __future__ import annotations

import io
import logging

import numpy as np

from mriscribe.detection.base import Detector
from mriscribe.report.writer import ReportWriter
from mriscribe.settings import Settings

log = logging.getLogger("mriscribe.outputs")

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def blank_slice() -> bytes:
    """A 64 x 64 black MR slice with geometry and no patient: a Part 10 file."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid(prefix=None)
    ds.StudyInstanceUID = generate_uid(prefix=None)
    ds.SeriesInstanceUID = generate_uid(prefix=None)
    ds.FrameOfReferenceUID = generate_uid(prefix=None)
    ds.Modality = "MR"
    ds.PatientName = ""
    ds.PatientID = ""
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [1, 1]
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelData = np.zeros((64, 64), dtype=np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def warm_up(settings: Settings, detector: Detector) -> None:
    """Render every output once for a blank slice (the template report, from a writer of its
    own that loads no model); a failure is logged and otherwise ignored: the first request
    then pays as before."""
    from mriscribe.outputs import registry, render
    from mriscribe.pipeline import InputFile, analyze

    try:
        analysis = analyze(
            [InputFile("warm-up.dcm", blank_slice())],
            settings,
            detector=detector,
            render_images=True,
            writer=ReportWriter(settings),
            report_engine="template",
        )
        render(analysis, list(registry()))
    except Exception as exc:  # never fails the service; logged without any data
        log.warning("warming the outputs failed", extra={"reason": type(exc).__name__})
