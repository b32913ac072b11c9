"""Every coded concept the DICOM and FHIR results use, with its meaning, in one place.

Each code was checked, none invented:

- DCM codes and the SNOMED CT and LOINC codes marked ``in DICOM`` are in DICOM PS3.16 (the
  content mapping resource), as pydicom's concept dictionary holds it; the tests compare every
  one of them with that dictionary (the meaning too, letter for letter: the SR's content tree is
  checked byte for byte against highdicom, which takes pydicom's meanings).
- The three tumour disorders are SNOMED CT International concepts (disorders, not morphologies),
  checked against published SNOMED CT tables and release notes: 393564001 |Glioma (disorder)|,
  302820008 |Intracranial meningioma (disorder)|, 254956000 |Pituitary adenoma (disorder)|.
- LOINC codes carry a mod-10 check digit, which the tests recompute.
- TID 1500's own codes that pydicom's dictionary lacks (UMLS C0034375 "Qualitative
  Evaluations", the RFC 5646 language) are as PS3.16 and highdicom write them.

FHIR reads the same codes with the system URIs below. The codings only FHIR uses (HL7's own code
systems: report category, observation category, identifier type, security label, provenance
participant) are :class:`Coding` values, each with its system and display.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from pydicom.sr.coding import Code

SNOMED = "SCT"
DICOM = "DCM"
LOINC = "LN"
UCUM = "UCUM"
UMLS = "UMLS"
RFC5646 = "RFC5646"

# FHIR system URIs of the coding schemes (HL7 terminology).
FHIR_SYSTEMS = {
    SNOMED: "http://snomed.info/sct",
    DICOM: "http://dicom.nema.org/resources/ontology/DCM",
    LOINC: "http://loinc.org",
    UCUM: "http://unitsofmeasure.org",
    UMLS: "http://www.nlm.nih.gov/research/umls",
    RFC5646: "urn:ietf:bcp:47",
}


@dataclass(frozen=True)
class Concept:
    """A coded concept: value, scheme (DICOM designator) and meaning.

    ``in_dicom``: also in DICOM PS3.16 (pydicom's dictionary), with this meaning, or with
    ``dictionary_meaning`` where PS3.16's templates write another meaning than its context
    groups (pydicom's dictionary is made from the context groups)."""

    value: str
    scheme: str
    meaning: str
    in_dicom: bool = True
    dictionary_meaning: str | None = None

    def dicom(self) -> Code:
        """As a pydicom Code (what highdicom takes)."""
        return Code(self.value, self.scheme, self.meaning)

    def fhir(self) -> dict[str, str]:
        """As a FHIR Coding (system, code, display)."""
        return {"system": FHIR_SYSTEMS[self.scheme], "code": self.value, "display": self.meaning}


@dataclass(frozen=True)
class Coding:
    """A FHIR-only coding (an HL7 code system that DICOM does not use): system, code, display."""

    system: str
    code: str
    display: str

    def fhir(self) -> dict[str, str]:
        return {"system": self.system, "code": self.code, "display": self.display}


# The detector's tumour classes as SNOMED CT disorders (finding type of each lesion).
GLIOMA = Concept("393564001", SNOMED, "Glioma", in_dicom=False)
MENINGIOMA = Concept("302820008", SNOMED, "Intracranial meningioma", in_dicom=False)
PITUITARY_ADENOMA = Concept("254956000", SNOMED, "Pituitary adenoma", in_dicom=False)
FINDING_TYPES = {
    "Glioma": GLIOMA,
    "Meningioma": MENINGIOMA,
    "Pituitary": PITUITARY_ADENOMA,
}

# Anatomy (finding site), laterality, and the study's result: Neoplasm Present, Absent ("No
# Tumor" on every image) or Undetermined (the report's indeterminate study).
BRAIN = Concept("12738006", SNOMED, "Brain")
PITUITARY = Concept("56329008", SNOMED, "Pituitary")
FINDING_SITES = {"Glioma": BRAIN, "Meningioma": BRAIN, "Pituitary": PITUITARY}
NEOPLASM = Concept("108369006", SNOMED, "Neoplasm")
ABSENT = Concept("272519000", SNOMED, "Absent")
PRESENT = Concept("52101004", SNOMED, "Present")
UNDETERMINED = Concept("373068000", SNOMED, "Undetermined")
# report.wording.study_result's answers as the value of Neoplasm (CID 240).
STUDY_RESULTS = {"positive": PRESENT, "negative": ABSENT, "indeterminate": UNDETERMINED}
LATERALITY = Concept("272741003", SNOMED, "Laterality")
LEFT = Concept("7771000", SNOMED, "Left")
RIGHT = Concept("24028007", SNOMED, "Right")
SIDES = {"left": LEFT, "right": RIGHT}  # a measured side ("midline" has no laterality code)

# Measurements.
LONG_AXIS = Concept("103339001", SNOMED, "Long axis")
SHORT_AXIS = Concept("103340004", SNOMED, "Short axis")
ESTIMATED = Concept("414135002", SNOMED, "Estimated")
BOUNDED_BY = Concept("75958009", SNOMED, "Bounded by")
CERTAINTY_OF_FINDING = Concept("111012", DICOM, "Certainty of Finding")
MILLIMETRE = Concept("mm", UCUM, "millimeter", in_dicom=False)
PERCENT = Concept("%", UCUM, "Percent", in_dicom=False)

# Documents, equipment and provenance.
IMAGING_MEASUREMENT_REPORT = Concept("126000", DICOM, "Imaging Measurement Report")
DIAGNOSTIC_IMAGING_STUDY = Concept("18748-4", LOINC, "Diagnostic imaging study", in_dicom=False)
PROCESSING_EQUIPMENT = Concept("109102", DICOM, "Processing Equipment")
NEURORADIOLOGY = Concept("128011", DICOM, "Neuroradiology Imaging Specialty")

# The SR's content tree (TID 1500 and the templates it includes).
LANGUAGE_OF_CONTENT = Concept("121049", DICOM, "Language of Content Item and Descendants")
# The content's language, as highdicom writes it (TID 1204; RFC 5646 is not in PS3.16's tables).
ENGLISH_US = Concept("en-US", RFC5646, "English (United States)", in_dicom=False)
PROCEDURE_REPORTED = Concept("121058", DICOM, "Procedure reported")
# CID 100 "Quantitative Diagnostic Imaging Procedures": true of every study the SR takes.
IMAGING_PROCEDURE = Concept("363679005", SNOMED, "Imaging procedure")
IMAGE_LIBRARY = Concept("111028", DICOM, "Image Library")
IMAGE_LIBRARY_GROUP = Concept("126200", DICOM, "Image Library Group")
MODALITY = Concept("121139", DICOM, "Modality")
FRAME_OF_REFERENCE_UID = Concept("112227", DICOM, "Frame of Reference UID")
# An image a region or the image library refers to, with TID 1600's meaning (pydicom's
# dictionary gives SNOMED CT's "Source (attribute)"), as highdicom writes it.
SOURCE = Concept("260753009", SNOMED, "Source", dictionary_meaning="Source (attribute)")
IMAGING_MEASUREMENTS = Concept("126010", DICOM, "Imaging Measurements")
# TID 1500 row 12, the report's own qualitative evaluations (PS3.16; not in pydicom's
# dictionary).
QUALITATIVE_EVALUATIONS = Concept("C0034375", UMLS, "Qualitative Evaluations", in_dicom=False)
MEASUREMENT_GROUP = Concept("125007", DICOM, "Measurement Group")
TRACKING_IDENTIFIER = Concept("112039", DICOM, "Tracking Identifier")
TRACKING_UID = Concept("112040", DICOM, "Tracking Unique Identifier")
FINDING = Concept("121071", DICOM, "Finding")
FINDING_SITE = Concept("363698007", SNOMED, "Finding Site")
MEASUREMENT_METHOD = Concept("370129005", SNOMED, "Measurement Method")
GEOMETRIC_PURPOSE = Concept("130400", DICOM, "Geometric purpose of region")
IMAGE_REGION = Concept("111030", DICOM, "Image Region")
SOURCE_OF_MEASUREMENT = Concept("121112", DICOM, "Source of Measurement")
STUDY_INSTANCE_UID = Concept("110180", DICOM, "Study Instance UID")

# The observer (TID 1002, 1004) and the algorithm (TID 4019).
OBSERVER_TYPE = Concept("121005", DICOM, "Observer Type")
DEVICE = Concept("121007", DICOM, "Device")
DEVICE_OBSERVER_UID = Concept("121012", DICOM, "Device Observer UID")
DEVICE_OBSERVER_NAME = Concept("121013", DICOM, "Device Observer Name")
DEVICE_OBSERVER_MANUFACTURER = Concept("121014", DICOM, "Device Observer Manufacturer")
DEVICE_OBSERVER_MODEL_NAME = Concept("121015", DICOM, "Device Observer Model Name")
ALGORITHM_NAME = Concept("111001", DICOM, "Algorithm Name")
ALGORITHM_VERSION = Concept("111003", DICOM, "Algorithm Version")
ALGORITHM_PARAMETERS = Concept("111002", DICOM, "Algorithm Parameters")


@cache
def acquisition_modalities() -> dict[str, Concept]:
    """CID 29 "Acquisition Modality" by code value (MR, CT, ...), from pydicom's dictionary."""
    from pydicom.sr.codedict import codes as dcm

    found: dict[str, Concept] = {}
    for name in dcm.cid29.dir():
        code = getattr(dcm.cid29, name)
        found.setdefault(code.value, Concept(code.value, code.scheme_designator, code.meaning))
    return found


# FHIR only: HL7 code systems and identifier systems.
RADIOLOGY = Coding("http://terminology.hl7.org/CodeSystem/v2-0074", "RAD", "Radiology")
IMAGING = Coding("http://terminology.hl7.org/CodeSystem/observation-category", "imaging", "Imaging")
ACCESSION = Coding("http://terminology.hl7.org/CodeSystem/v2-0203", "ACSN", "Accession ID")
AI_ASSERTED = Coding(
    "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "AIAST",
    "Artificial Intelligence asserted",
)
AUTHOR = Coding(
    "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "author", "Author"
)
# Identifier systems: a DICOM UID (value ``urn:oid:<UID>``), and any URI.
DICOM_UID_SYSTEM = "urn:dicom:uid"
URI_SYSTEM = "urn:ietf:rfc:3986"
# Provenance.entity.role of the imaging studies (a FHIR code of the required value set
# provenance-entity-role: the element takes the code alone).
PROVENANCE_SOURCE = "source"

# Every concept and FHIR coding above, for the tests that check them.
ALL = tuple(value for value in tuple(globals().values()) if isinstance(value, Concept))
FHIR_ONLY = tuple(value for value in tuple(globals().values()) if isinstance(value, Coding))
IDENTIFIER_SYSTEMS = (DICOM_UID_SYSTEM, URI_SYSTEM)
