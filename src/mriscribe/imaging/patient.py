"""Patient and study details from DICOM headers, sealed: only the DICOM and FHIR outputs read them.

Names, identifiers, dates, accession numbers, physicians and institutions are needed to file a
result against its study in a PACS or an EHR, and nowhere else. A :class:`Sealed` context holds
them: it prints, logs and formats as a placeholder, cannot be pickled, copied into JSON or
compared by value, and gives its values only to a reader token that the DICOM and FHIR writers
hold. Facts, logs, the JSON and error messages therefore never hold them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NoReturn

# The header attributes kept (DICOM keywords): the Patient, General Study and Patient Study
# modules, which DICOM results copy into the source study, and the series and equipment's
# names. They identify a patient and are sealed.
KEPT = (
    "SpecificCharacterSet",
    # Patient
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "TypeOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "QualityControlSubject",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "EthnicGroup",
    "PatientComments",
    "PatientSpeciesDescription",
    "PatientSpeciesCodeSequence",
    "PatientBreedDescription",
    "PatientBreedCodeSequence",
    "BreedRegistrationSequence",
    "ResponsiblePerson",
    "ResponsiblePersonRole",
    "ResponsibleOrganization",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    # General Study
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "StudyDescription",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "ProcedureCodeSequence",
    "ReasonForPerformedProcedureCodeSequence",
    # The source's time zone, which its study date and time are in
    "TimezoneOffsetFromUTC",
    # Patient Study
    "AdmittingDiagnosesDescription",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "Occupation",
    "AdditionalPatientHistory",
    # The source series and equipment, named
    "PerformingPhysicianName",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "SeriesDescription",
    "SeriesNumber",
    "SeriesDate",
    "SeriesTime",
    "Manufacturer",
    "BodyPartExamined",
)
# Image attributes that a presentation state or an SR reference needs from its source image
# (none identifies a patient; kept with the rest so that one header travels).
IMAGE_KEPT = (
    "Modality",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleIntercept",
    "RescaleSlope",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "PixelSpacing",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "SliceThickness",
    "BurnedInAnnotation",
    # A multi-frame image's spacing, window and rescale live in its functional groups.
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
)
TEXT_KEPT = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "SeriesDescription",
    "SeriesNumber",
    "SeriesDate",
    "SeriesTime",
    "Manufacturer",
    "BodyPartExamined",
)


class Reader:
    """A token that opens sealed contexts; one per output that may read them."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Reader({self.name!r})"


DICOM_READER = Reader("dicom")
FHIR_READER = Reader("fhir")
_READERS = (DICOM_READER, FHIR_READER)


class SealedError(TypeError):
    """Someone other than a DICOM or FHIR output tried to read or copy a sealed context."""


class Sealed:
    """Patient and study details that only the DICOM and FHIR outputs may open."""

    __slots__ = ("__header", "__values")

    def __init__(self, values: Mapping[str, str], header: Any = None) -> None:
        object.__setattr__(self, "_Sealed__values", MappingProxyType(dict(values)))
        object.__setattr__(self, "_Sealed__header", header)

    def open(self, reader: Reader) -> Mapping[str, str]:
        """The details, for a DICOM or FHIR output holding its reader token."""
        if not any(reader is allowed for allowed in _READERS):
            raise SealedError("only the DICOM and FHIR outputs may read patient details")
        return self.__values

    def header(self, reader: Reader) -> Any:
        """A fresh pydicom Dataset of the kept header attributes (KEPT and IMAGE_KEPT, as the
        file stated them), for a DICOM or FHIR output holding its reader token; an empty
        Dataset when the source was not DICOM."""
        from pydicom.dataset import Dataset

        self.open(reader)
        header = Dataset()
        if self.__header is not None:
            for element in self.__header:
                header.add(_copied(element))
        return header

    def __bool__(self) -> bool:
        return bool(self.__values)

    def __repr__(self) -> str:
        return "<sealed patient context>"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise SealedError("a sealed context cannot be changed")

    def __reduce__(self) -> NoReturn:
        raise SealedError("a sealed context cannot be pickled or copied")

    def __eq__(self, other: object) -> bool:  # identity only: no value comparison to probe with
        return self is other

    def __hash__(self) -> int:
        return id(self)


def _copied(element: Any) -> Any:
    """A data element no reader can change the sealed one through: sequences deep-copied,
    multi-valued elements with their own list, single values (immutable) shared."""
    if element.VR == "SQ":
        return copy.deepcopy(element)
    fresh = copy.copy(element)
    if isinstance(element.value, list) or hasattr(element.value, "_list"):
        fresh.value = list(element.value)
    return fresh


def seal_dataset(ds: Any) -> Sealed:
    """The kept attributes of a pydicom dataset: TEXT_KEPT (present and non-empty) as text,
    and KEPT and IMAGE_KEPT as data elements, copied (a malformed value is left out, never
    quoted)."""
    from pydicom.dataset import Dataset

    values: dict[str, str] = {}
    for keyword in TEXT_KEPT:
        try:
            value = ds.get(keyword)
        except Exception:  # a malformed value: left out, never quoted
            continue
        if value is None or value == "":
            continue
        text = str(value).strip(" \x00")
        if text:
            values[keyword] = text
    header = Dataset()
    for keyword in (*KEPT, *IMAGE_KEPT):
        try:
            element = ds.data_element(keyword)
            if element is None:
                continue
            element.value  # noqa: B018 - a raw element is converted (and checked) here
            header.add(copy.deepcopy(element))
        except Exception:  # a malformed value: left out
            continue
    return Sealed(values, header)
