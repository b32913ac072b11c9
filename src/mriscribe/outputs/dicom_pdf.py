"""The report PDF as a DICOM Encapsulated PDF in the source study (LOINC 18748-4, unverified,
pointing at the analysed instances), so that a PACS files it beside the images."""

from __future__ import annotations

from dataclasses import dataclass

from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.uid import EncapsulatedPDFStorage
from pydicom.valuerep import DT

from mriscribe.outputs.base import Artifact, Rendering
from mriscribe.outputs.codes import DIAGNOSTIC_IMAGING_STUDY
from mriscribe.outputs.dicom_source import (
    DicomSource,
    analysed_frames,
    image_reference,
    new_instance,
    part10,
    result_time,
)

SERIES_NUMBER = 9903
SERIES_DESCRIPTION = "mriscribe report: preliminary machine read, unverified"
DOCUMENT_TITLE = "Brain MRI: automated first-read report (preliminary, unverified)"
PDF = "application/pdf"
# How the document came to be (SC Equipment): synthesised by software from the images, not
# scanned or digitised.
CONVERSION_TYPE = "SYN"


def even(data: bytes) -> bytes:
    """``data`` padded with one NUL byte where its length is odd: DICOM values are of even
    length, and PS3.3 C.24.2.1 pads an encapsulated document so."""
    return data + b"\x00" if len(data) % 2 else data


# Whether the document shows enough to identify the patient (PS3.3 C.24.2.1): "YES", always.
# render/pdf.py prints no name, identifier or birth date, but it prints the uploaded files'
# names, which may name the patient (and it shows the images, whose pixels may carry such text):
# de-identification pipelines rely on this attribute, so the answer is the conservative one.
BURNED_IN = "YES"


def source_instances(source: DicomSource) -> list[Dataset]:
    """Every analysed instance (and its frames, where not all), as the Source Instance
    Sequence names the instances a document was made from."""
    frames = analysed_frames(source)
    return [image_reference(h, frames[str(h.SOPInstanceUID)]) for h in source.instances]


def encapsulated_pdf(rendering: Rendering, source: DicomSource, pdf: bytes) -> Dataset:
    """``pdf`` as an Encapsulated PDF instance of ``source``'s study, in a new series."""
    document = new_instance(
        rendering,
        source,
        sop_class_uid=EncapsulatedPDFStorage,
        modality="DOC",
        purpose="dicom-pdf",
        series_number=SERIES_NUMBER,
        series_description=SERIES_DESCRIPTION,
    )
    document.ConversionType = CONVERSION_TYPE
    # When the data in the document were made: the analysis (the PDF's "Generated" time).
    generated = result_time(rendering.analysis.timestamp, source)
    document.AcquisitionDateTime = DT(generated.strftime("%Y%m%d%H%M%S.%f%z"))
    document.BurnedInAnnotation = BURNED_IN
    document.DocumentTitle = DOCUMENT_TITLE
    code = DIAGNOSTIC_IMAGING_STUDY.dicom()
    document.ConceptNameCodeSequence = [
        CodedConcept(code.value, code.scheme_designator, code.meaning)
    ]
    document.VerificationFlag = "UNVERIFIED"
    document.SourceInstanceSequence = source_instances(source)
    document.MIMETypeOfEncapsulatedDocument = PDF
    document.EncapsulatedDocument = even(pdf)
    document.EncapsulatedDocumentLength = len(pdf)
    return document


@dataclass(frozen=True)
class EncapsulatedPdf:
    name: str = "dicom-pdf"
    summary: str = "the report PDF as a DICOM Encapsulated PDF in the source study"
    media_type: str = "application/dicom"
    needs_images: bool = True  # the PDF shows the annotated images
    needs_dicom: bool = True

    def render(self, rendering: Rendering) -> tuple[Artifact, ...]:
        source = DicomSource.of(rendering, self.name)  # refuses before the PDF is made
        pdf = rendering.artifact("pdf").data
        document = encapsulated_pdf(rendering, source, pdf)
        return (Artifact("report-pdf.dcm", self.media_type, part10(document)),)


OUTPUT = EncapsulatedPdf()
