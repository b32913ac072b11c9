"""Patient and study details from DICOM headers, sealed: only the DICOM and FHIR outputs read them.

Names, identifiers, dates, accession numbers, physicians and institutions are needed to file a
result against its study in a PACS or an EHR, and nowhere else. A :class:`Sealed` context holds
them: it prints, logs and formats as a placeholder, cannot be pickled, copied into JSON or
compared by value, and gives its values only to a reader token that the DICOM and FHIR writers
hold. Facts, logs, the JSON and error messages therefore never hold them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NoReturn

# The header attributes kept (keyword -> DICOM keyword): patient, study and the equipment's
# place, as DICOM SR and FHIR need them to address a result.
KEPT = (
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

    __slots__ = ("__values",)

    def __init__(self, values: Mapping[str, str]) -> None:
        object.__setattr__(self, "_Sealed__values", MappingProxyType(dict(values)))

    def open(self, reader: Reader) -> Mapping[str, str]:
        """The details, for a DICOM or FHIR output holding its reader token."""
        if not any(reader is allowed for allowed in _READERS):
            raise SealedError("only the DICOM and FHIR outputs may read patient details")
        return self.__values

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


def seal_dataset(ds: Any) -> Sealed:
    """The kept attributes of a pydicom dataset (present and non-empty ones), as text."""
    values: dict[str, str] = {}
    for keyword in KEPT:
        try:
            value = ds.get(keyword)
        except Exception:  # a malformed value: left out, never quoted
            continue
        if value is None or value == "":
            continue
        text = str(value).strip(" \x00")
        if text:
            values[keyword] = text
    return Sealed(values)
