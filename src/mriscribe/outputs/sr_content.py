"""The DICOM SR's content tree, encoded straight to bytes: a small encoder of SR content items.

Why not highdicom's classes: highdicom builds every content item as a pydicom Dataset, deep
copies the templates' items as it nests them, and pydicom then writes each of them element by
element. For a 24-slice series (about 1,200 sequence items) that costs about 200 ms, against a
150 ms budget for all four standard results (SR, presentation state, encapsulated PDF and FHIR
together; bench/results_latency.py). Encoded here, the tree takes a few milliseconds; highdicom
still builds the document around it (header modules, evidence, flags, equipment).

What keeps it honest: tests/test_dicom_sr.py rebuilds whole documents' content trees with
highdicom's templates and content item classes (lesion and no-tumour groups, observer, language,
procedure, image library, the study's result) and requires them, byte for byte, equal to what is
written here, for studies that between them make every item kind this module writes: CONTAINER
(with and without a template), CODE (with and without children), TEXT, UIDREF, NUM (with and
without children), IMAGE (of an instance and of a frame) and SCOORD (on an instance and on a
frame); tests/test_dicom_sr.py also checks long code values (Long and URN Code Value) against
highdicom.

Each function returns one encoded sequence item (item tag, length, the item's elements in tag
order), as pydicom writes it in explicit VR little endian with defined lengths (the file's
transfer syntax). Every value is ASCII (codes, numbers, UIDs, the model's name): valid in every
character set; anything else would be written as "?".
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from functools import cache

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.valuerep import format_number_as_ds

from mriscribe.outputs.codes import Concept

CONTAINS = "CONTAINS"
CONCEPT_MOD = "HAS CONCEPT MOD"
OBS_CONTEXT = "HAS OBS CONTEXT"
ACQ_CONTEXT = "HAS ACQ CONTEXT"
SELECTED_FROM = "SELECTED FROM"

_CODE_VALUE = 0x00080100
_CODING_SCHEME = 0x00080102
_CODE_MEANING = 0x00080104
_MAPPING_RESOURCE = 0x00080105
_LONG_CODE_VALUE = 0x00080119
_URN_CODE_VALUE = 0x00080120
_REFERENCED_SOP_CLASS = 0x00081150
_REFERENCED_SOP_INSTANCE = 0x00081155
_REFERENCED_FRAME = 0x00081160
_REFERENCED_SOP_SEQUENCE = 0x00081199
_UNITS_CODE_SEQUENCE = 0x004008EA
_RELATIONSHIP_TYPE = 0x0040A010
_VALUE_TYPE = 0x0040A040
_CONCEPT_NAME_SEQUENCE = 0x0040A043
_CONTINUITY = 0x0040A050
_UID = 0x0040A124
_TEXT_VALUE = 0x0040A160
_FLOATING_POINT_VALUE = 0x0040A161
_CONCEPT_CODE_SEQUENCE = 0x0040A168
_MEASURED_VALUE_SEQUENCE = 0x0040A300
_NUMERIC_VALUE = 0x0040A30A
_TEMPLATE_SEQUENCE = 0x0040A504
CONTENT_SEQUENCE = 0x0040A730
_TEMPLATE_IDENTIFIER = 0x0040DB00
_GRAPHIC_DATA = 0x00700022
_GRAPHIC_TYPE = 0x00700023

# VRs with a 4-byte length (and 2 reserved bytes) in explicit VR (PS3.5 7.1.2).
_LONG_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
_ITEM = struct.Struct("<HHI")
_SHORT = struct.Struct("<HH2sH")
_LONG = struct.Struct("<HH2s2xI")

Element = tuple[int, bytes]  # (tag, the encoded element)


def attach(dataset: Dataset, items: Iterable[bytes]) -> None:
    """Give ``dataset`` these encoded items as its Content Sequence, written as they are: the
    dataset's own encoding is declared the file's (explicit VR little endian, in its Specific
    Character Set), which is when pydicom writes a raw element unchanged."""
    content = b"".join(items)
    dataset[CONTENT_SEQUENCE] = RawDataElement(
        Tag(CONTENT_SEQUENCE), "SQ", len(content), content, 0, False, True, True, False
    )
    dataset.set_original_encoding(False, True, _character_set(dataset))


def _character_set(dataset: Dataset) -> str | list[str]:
    """The Python encodings of the dataset's Specific Character Set (pydicom's default without
    one), as pydicom compares them when it writes."""
    if "SpecificCharacterSet" in dataset and dataset.SpecificCharacterSet:
        return convert_encodings(dataset.SpecificCharacterSet)
    return default_encoding


# -- content items ----------------------------------------------------------------------------


def code_item(
    name: Concept, value: Concept, relationship: str, children: Sequence[bytes] = ()
) -> bytes:
    """A CODE item: ``name`` = ``value``."""
    return _content_item(
        "CODE", name, relationship, _coded(_CONCEPT_CODE_SEQUENCE, value), children=children
    )


def text_item(name: Concept, text: str, relationship: str) -> bytes:
    """A TEXT item."""
    return _content_item("TEXT", name, relationship, _string(_TEXT_VALUE, "UT", text))


def uid_item(name: Concept, uid: str, relationship: str) -> bytes:
    """A UIDREF item."""
    return _content_item("UIDREF", name, relationship, _string(_UID, "UI", uid))


def num_item(
    name: Concept,
    value: float,
    unit: Concept,
    relationship: str,
    children: Sequence[bytes] = (),
) -> bytes:
    """A NUM item: the value as FD and as DS (as highdicom writes both), in ``unit``."""
    measured = _item(
        _coded(_UNITS_CODE_SEQUENCE, unit),
        _element(_FLOATING_POINT_VALUE, "FD", struct.pack("<d", value)),
        _string(_NUMERIC_VALUE, "DS", format_number_as_ds(value)),
    )
    return _content_item(
        "NUM",
        name,
        relationship,
        _sequence(_MEASURED_VALUE_SEQUENCE, [measured]),
        children=children,
    )


def image_item(
    name: Concept, sop_class_uid: str, sop_instance_uid: str, frame: int | None, relationship: str
) -> bytes:
    """An IMAGE item: an instance, or one frame of a multi-frame instance."""
    reference = [
        _string(_REFERENCED_SOP_CLASS, "UI", sop_class_uid),
        _string(_REFERENCED_SOP_INSTANCE, "UI", sop_instance_uid),
    ]
    if frame is not None:
        reference.append(_string(_REFERENCED_FRAME, "IS", str(frame)))
    return _content_item(
        "IMAGE", name, relationship, _sequence(_REFERENCED_SOP_SEQUENCE, [_item(*reference)])
    )


def scoord_item(
    name: Concept,
    graphic_type: str,
    points: Sequence[float],
    relationship: str,
    children: Sequence[bytes] = (),
) -> bytes:
    """A SCOORD item: ``points`` (column, row, column, row, ...) as FL, of ``graphic_type``;
    its children say on which image (an IMAGE item, SELECTED FROM)."""
    return _content_item(
        "SCOORD",
        name,
        relationship,
        _element(_GRAPHIC_DATA, "FL", struct.pack(f"<{len(points)}f", *points)),
        _string(_GRAPHIC_TYPE, "CS", graphic_type),
        children=children,
    )


def container(
    name: Concept, relationship: str, children: Sequence[bytes], template: str | None = None
) -> bytes:
    """A CONTAINER item (continuous), with its DCMR template where it has one."""
    elements = [_string(_CONTINUITY, "CS", "CONTINUOUS")]
    if template is not None:
        elements.append(
            _sequence(
                _TEMPLATE_SEQUENCE,
                [
                    _item(
                        _string(_MAPPING_RESOURCE, "CS", "DCMR"),
                        _string(_TEMPLATE_IDENTIFIER, "CS", template),
                    )
                ],
            )
        )
    return _content_item("CONTAINER", name, relationship, *elements, children=children)


# -- elements ---------------------------------------------------------------------------------


def _content_item(
    value_type: str,
    name: Concept,
    relationship: str,
    *value: Element,
    children: Sequence[bytes] = (),
) -> bytes:
    elements = [
        _string(_RELATIONSHIP_TYPE, "CS", relationship),
        _string(_VALUE_TYPE, "CS", value_type),
        _coded(_CONCEPT_NAME_SEQUENCE, name),
        *value,
    ]
    if children:
        elements.append(_sequence(CONTENT_SEQUENCE, children))
    return _item(*elements)


def _element(tag: int, vr: str, value: bytes) -> Element:
    header = _LONG if vr in _LONG_VRS else _SHORT
    return tag, header.pack(tag >> 16, tag & 0xFFFF, vr.encode("ascii"), len(value)) + value


def _string(tag: int, vr: str, text: str) -> Element:
    """A text element, padded to even length (UI with NUL, the others with a space)."""
    value = text.encode("ascii", "replace")
    if len(value) % 2:
        value += b"\0" if vr == "UI" else b" "
    return _element(tag, vr, value)


def _sequence(tag: int, items: Iterable[bytes]) -> Element:
    return _element(tag, "SQ", b"".join(items))


def _item(*elements: Element) -> bytes:
    body = b"".join(encoded for _, encoded in sorted(elements, key=lambda element: element[0]))
    return _ITEM.pack(0xFFFE, 0xE000, len(body)) + body


@cache
def _code(concept: Concept) -> bytes:
    """A code sequence item: a value over 16 characters in URN Code Value (a URN or URL) or
    Long Code Value, as PS3.3 8.8 asks and highdicom decides."""
    value = concept.value
    if len(value) <= 16:
        coded = _string(_CODE_VALUE, "SH", value)
    elif value.startswith("urn") or "://" in value:
        coded = _string(_URN_CODE_VALUE, "UR", value)
    else:
        coded = _string(_LONG_CODE_VALUE, "UC", value)
    return _item(
        coded,
        _string(_CODING_SCHEME, "SH", concept.scheme),
        _string(_CODE_MEANING, "LO", concept.meaning),
    )


def _coded(tag: int, concept: Concept) -> Element:
    return _sequence(tag, [_code(concept)])
