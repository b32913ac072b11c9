"""Decoding DICOM files (native, deflated and compressed transfer syntaxes) into display slices."""

from __future__ import annotations

import io
import math
import re
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.filereader import _read_command_set_elements, _read_file_meta_info, read_preamble
from pydicom.multival import MultiValue
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi_lut,
    get_decoder,
    iter_pixels,
)
from pydicom.pixels.decoders.base import DecodeRunner
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
)
from pydicom.values import convert_PN, convert_text

from mriscribe.errors import InputError, UnsupportedFormatError, scrub
from mriscribe.imaging.codestream import FrameHeader, j2k_header, jpeg_header
from mriscribe.imaging.geometry import Plane, SourceRef
from mriscribe.imaging.inflate import inflate
from mriscribe.imaging.limits import DecodeBudget, Limits
from mriscribe.imaging.patient import seal_dataset
from mriscribe.imaging.slices import Slice
from mriscribe.imaging.window import Window, percentile_window, sample_step

INSTALL_HINT = "pip install 'mriscribe[dicom]'"
# CT without a usable VOI of its own is shown through a brain window (centre, width in HU).
CT_BRAIN_WINDOW = (40, 80)
# No brain image has pixels this large; a larger value is a broken header, not a measurement.
MAX_SPACING_MM = 50.0
# Enough samples per frame for stable percentiles without copying whole large frames, and
# (roughly: up to four times) no more than _SAMPLES_PER_STACK for all frames together.
_SAMPLES_PER_FRAME = 262_144
_SAMPLES_PER_STACK = 1 << 20
# Pixels a frame is windowed at a time: pydicom's windowing holds several float64 copies.
_VOI_BLOCK_PIXELS = 1 << 20
# The VOI LUT Functions (PS3.3 C.11.2.1.3) pydicom's windowing applies; a window with any other
# (or none) is LINEAR, the standard's default.
_VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
# The bits per entry a VOI LUT may declare (PS3.3 C.11.2.1.1).
_VOI_LUT_DEPTHS = frozenset({8, *range(10, 17)})
# What makes a Frame VOI LUT item the frame's VOI.
_VOI_KEYWORDS = ("VOILUTSequence", "WindowCenter", "WindowWidth")
_UNDEFINED_LENGTH = 0xFFFFFFFF
_REASON_CHARACTERS = 120
# Sequence items are searched for values to scrub this many levels deep.
_SCRUB_DEPTH = 8
# The codes a message or the meta may name: Modality's defined terms (PS3.3 C.7.3.1.1.1, retired
# ones too) and Photometric Interpretation's (C.7.6.3.1.2). Any other value of a code string is
# whatever the writer put there, which may be a name.
_MODALITIES = frozenset(
    {
        "AR", "ASMT", "AU", "BDUS", "BI", "BMD", "CFM", "CR", "CT", "CTPROTOCOL", "DG", "DMS",
        "DOC", "DX", "ECG", "EEG", "EMG", "EOG", "EPS", "ES", "FID", "GM", "HC", "HD", "IO", "IOL",
        "IVOCT", "IVUS", "KER", "KO", "LEN", "LS", "M3D", "MG", "MR", "NM", "OAM", "OCT", "OP",
        "OPM", "OPT", "OPTBSV", "OPTENF", "OPV", "OSS", "OT", "PA", "PLAN", "POS", "PR", "PT", "PX",
        "REG", "RESP", "RF", "RG", "RTDOSE", "RTIMAGE", "RTINTENT", "RTPLAN", "RTRAD", "RTRECORD",
        "RTSEGANN", "RTSTRUCT", "RWV", "SEG", "SM", "SMR", "SR", "SRF", "STAIN", "TEXTUREMAP", "TG",
        "US", "VA", "XA", "XAPROTOCOL", "XC", "AS", "CD", "CF", "CP", "CS", "DD", "DF", "DM", "DS",
        "EC", "FA", "FS", "LP", "MA", "MS", "OPR", "ST", "VF",
    }
)
_PHOTOMETRICS = frozenset(
    {
        "MONOCHROME1",
        "MONOCHROME2",
        "PALETTE COLOR",
        "RGB",
        "YBR_FULL",
        "YBR_FULL_422",
        "YBR_PARTIAL_422",
        "YBR_PARTIAL_420",
        "YBR_ICT",
        "YBR_RCT",
        "XYB",
        "HSV",
        "ARGB",
        "CMYK",
    }
)
_DEFINED_TERMS = {"Modality": _MODALITIES, "PhotometricInterpretation": _PHOTOMETRICS}
_UID = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,126}[\x21-\x7e])?")  # grouped as stated
# A file name holding one of its identifying values of at least this many characters is not
# shown: the slice is named by its number instead (see WITHHELD_NAME).
NAME_VALUE_CHARACTERS = 4
WITHHELD_NAME = "DICOM file"
_NAME_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_NAME_VALUES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "OtherPatientIDs",
    "StudyDate",
)
# The value representations of names, identifiers, free text, URIs, dates, times, ages, UIDs
# and application entity titles (a station's name): what a decoder's message must never quote.
_IDENTIFYING_VRS = frozenset(
    {"PN", "LO", "SH", "LT", "ST", "UT", "UC", "UR", "AE", "DA", "DT", "TM", "AS", "UI"}
)
# The VRs whose values are in the Specific Character Set (PS3.5 6.1.2.3); the others' are ASCII.
_CHARSET_VRS = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "UC"})
# An element whose VR is unknown (a private one read without its VR, or UN) may hold any of
# those: the text in values up to this size is scrubbed as well.
_UNKNOWN_VALUE_BYTES = 1 << 16
# A Python string or bytes literal, escaped quotes and all.
_LITERAL = re.compile(r"""(?:\bb)?(?:'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")""")
# Where values are cut into the parts a message may quote alone: multiple values, name
# components and groups, control characters (text inside binary values) and failed decodes.
_VALUE_PARTS = re.compile(r"[\\^=\x00-\x1f\x7f\ufffd]+")
# The words a message may quote alone of a value that has them: a name's given names, a URI's
# host and path segments.
_WORDS = {"PN": re.compile(r"\s+"), "UR": re.compile(r"[/:?#&=@]+")}
# How each compressed transfer syntax's frames declare their size to their decoders.
_FRAME_HEADERS: dict[str, Callable[[bytes], FrameHeader | None]] = {
    **dict.fromkeys(JPEGTransferSyntaxes + JPEGLSTransferSyntaxes, jpeg_header),
    **dict.fromkeys(JPEG2000TransferSyntaxes, j2k_header),
}


def _register_plugins() -> None:
    """Add our imagecodecs plugin for 12-bit JPEG Extended to pydicom's decoder, once."""
    from pydicom.pixels.decoders import JPEGExtended12BitDecoder

    if "imagecodecs" not in JPEGExtended12BitDecoder.available_plugins:
        JPEGExtended12BitDecoder.add_plugin(
            "imagecodecs", ("mriscribe.imaging.dicom_imagecodecs", "_decode_frame")
        )


_register_plugins()
# pydicom warns about every small deviation from the standard; none of them stops a read, and a
# module-wide filter (unlike warnings.catch_warnings) is safe with decodes in several threads.
warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\.|$)")


def decode_dicom(
    data: bytes, name: str, limits: Limits, *, budget: DecodeBudget | None = None
) -> list[Slice]:
    """Decode a DICOM Part 10 file into one RGB slice per frame.

    Grey images go through the modality LUT (rescale) and the VOI LUT that pydicom applies (the
    file's own window, LINEAR, LINEAR_EXACT or SIGMOID, or table; a brain window for CT), else
    the percentile window (imaging/window.py); colour and palette images become RGB. Patient
    data never reaches the slices' meta or the error messages. The inflated dataset of a deflated
    file, then the pixel data and the pixels its header declares, are spent from ``budget``
    (default: a fresh one from ``limits``) before they are inflated or decoded; compressed
    frames must declare the header's size in their own codestreams, which their decoders
    allocate from. Frames stay in their stored type, and each is turned into floats only while
    its RGB slice is made.
    """
    budget = limits.budget() if budget is None else budget
    _take_inflated(data, name, budget)
    ds = _read(data, name)
    syntax = _transfer_syntax(ds, name)
    # Element offsets in a deflated file point into the inflated data, not the file.
    _check_complete(ds, name, None if syntax == DeflatedExplicitVRLittleEndian else len(data))
    image = _check_image(ds, name, limits, syntax)
    _check_frames(ds, name, syntax, image)
    budget.take(name, image.decoded_bytes, "the DICOM image decodes to")
    budget.take_pixels(name, image.rows * image.columns * image.frames)
    frames = image.frames
    try:
        arrays = list(iter_pixels(ds))
    except Exception as exc:  # the decoders raise many types; none may escape unwrapped
        raise _undecodable(name, syntax, exc, ds) from None
    if len(arrays) != frames:
        raise InputError(name, f"the DICOM file declares {frames} frames but holds {len(arrays)}")
    try:
        pixels = _to_rgb(ds, arrays, name)
        spacings = [_spacing(ds, index) for index in range(frames)]
    except InputError:
        raise
    except Exception as exc:  # malformed LUTs or functional groups
        raise InputError(
            name, f"the DICOM image attributes are unusable ({_reason(exc, ds)})"
        ) from None

    meta = {
        "format": "DICOM",
        "transfer_syntax": syntax.name,
        "modality": _code(ds, "Modality"),
        "photometric": _code(ds, "PhotometricInterpretation"),
    }
    identity = _identity(ds, name)
    patient = seal_dataset(ds)
    if _name_identifies(name, ds):
        # PACS exports name files by their UIDs, users by the patient: the slice must not carry
        # such a name into the JSON or the PDF. The pipeline numbers it instead.
        name = WITHHELD_NAME
        meta["name_withheld"] = "1"
    slices = []
    for index, (rgb, (spacing, source)) in enumerate(zip(pixels, spacings, strict=True)):
        frame_meta = dict(meta)
        if frames > 1:
            frame_meta.update(frame=str(index + 1), frames=str(frames))
        slices.append(
            Slice(
                name=f"{name} [frame {index + 1}]" if frames > 1 else name,
                pixels=rgb,
                meta=frame_meta,
                spacing_mm=spacing,
                spacing_source=source,
                source=SourceRef(
                    format="DICOM",
                    series_key=identity[:2],
                    plane=_plane(ds, index, spacing),
                    study_uid=_uid(ds, "StudyInstanceUID") or None,
                    series_uid=_uid(ds, "SeriesInstanceUID") or None,
                    sop_instance_uid=identity[2] or None,
                    sop_class_uid=identity[3] or None,
                    frame_of_reference_uid=_uid(ds, "FrameOfReferenceUID") or None,
                    frame=index + 1 if frames > 1 else None,
                    series_number=_integer(ds, "SeriesNumber"),
                    instance_number=_integer(ds, "InstanceNumber"),
                    patient=patient,
                ),
            )
        )
    return slices


def _uid(ds: Dataset, keyword: str) -> str:
    """A UID attribute as the file states it (anonymisers write UIDs that are not numeric, and
    files of one series must still group), or "" when missing, not text or implausibly long."""
    try:
        value = str(ds.get(keyword, "") or "").strip(" \x00")
    except Exception:  # a malformed value
        return ""
    return value if _UID.fullmatch(value) else ""


def _name_identifies(name: str, ds: Dataset) -> bool:
    """Whether a file name holds the file's own UIDs, or its patient's name, ID, birth date or
    accession number, or the study's date: UIDs as written, the others compared on letters
    and digits alone (a file "kim_min_001.dcm" holds "KIM^MIN"), a person's name whole in
    either order or by any part of at least NAME_VALUE_CHARACTERS. Descriptions, equipment and
    coded terms are not identifying here: "t1_axial.dcm" stays as it is."""
    folded = name.casefold()
    plain = _plain(name)
    for keyword in _NAME_UIDS:
        value = _uid(ds, keyword)
        if value and value.casefold() in folded:
            return True
    for keyword in _NAME_VALUES:
        try:
            value = str(ds.get(keyword, "") or "")
        except Exception:  # a malformed value: nothing to compare
            continue
        parts = [_plain(part) for part in re.split(r"[\^=\\]", value)]
        parts = [part for part in parts if part]
        candidates = {"".join(parts), "".join(reversed(parts[:2]))}
        if keyword == "PatientName":
            candidates.update(part for part in parts if len(part) >= NAME_VALUE_CHARACTERS)
        shortest = 3 if keyword == "PatientName" else NAME_VALUE_CHARACTERS
        if any(len(candidate) >= shortest and candidate in plain for candidate in candidates):
            return True
    return False


def _plain(text: str) -> str:
    """Letters and digits only, in one case: how a value is compared with a file name."""
    return "".join(char for char in text.casefold() if char.isalnum())


def _integer(ds: Dataset, keyword: str) -> int | None:
    """An integer string attribute, or None when missing or malformed."""
    try:
        number = _number(ds.get(keyword))
    except Exception:  # a malformed value: as if missing
        return None
    return int(number) if number is not None and number.is_integer() else None


def _identity(ds: Dataset, name: str) -> tuple[str, str, str, str]:
    """(study, series, SOP instance, SOP class) UIDs. A file without a study or series UID is
    a series of its own (keyed by its SOP instance, else by its name)."""
    study, series = _uid(ds, "StudyInstanceUID"), _uid(ds, "SeriesInstanceUID")
    instance = _uid(ds, "SOPInstanceUID")
    sop_class = _uid(ds, "SOPClassUID")
    if not series:
        study, series = study or "?", f"file:{instance or name}"
    return study, series, instance, sop_class


def _plane(ds: Dataset, frame: int, spacing: tuple[float, float] | None) -> Plane | None:
    """A frame's plane from ImagePositionPatient and ImageOrientationPatient (per-frame or
    shared functional groups first), or None when either is missing, malformed or there is
    no pixel spacing."""
    if spacing is None:
        return None
    try:
        position = _frame_value(ds, frame, "PlanePositionSequence", "ImagePositionPatient")
        orientation = _frame_value(
            ds, frame, "PlaneOrientationSequence", "ImageOrientationPatient"
        )
        point = [float(v) for v in position]
        cosines = [float(v) for v in orientation]
        if len(point) != 3 or len(cosines) != 6:
            return None
        row, column = np.asarray(cosines[:3]), np.asarray(cosines[3:])
        # Direction cosines must be (nearly) unit and orthogonal, else the header is broken.
        if abs(np.linalg.norm(row) - 1) > 0.01 or abs(np.linalg.norm(column) - 1) > 0.01:
            return None
        if abs(float(row @ column)) > 0.01:
            return None
        return Plane.of(point, row, column, spacing)
    except Exception:  # a malformed or corrupt attribute: no geometry, never a failed decode
        return None


def _undecodable(name: str, syntax: UID, exc: Exception, ds: Dataset) -> InputError:
    return InputError(
        name,
        f"the DICOM pixel data ({syntax.name}) cannot be decoded: truncated, corrupt "
        f"or not supported by the installed codecs ({_reason(exc, ds)})",
    )


def _take_inflated(data: bytes, name: str, budget: DecodeBudget) -> None:
    """Spend the inflated size of a deflated dataset, counted in chunks before pydicom inflates
    it all, and stopping as soon as it is more than the budget has left."""
    start = _deflated_start(data)
    if start is None:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    size = 0
    try:
        for piece in inflate(inflater, [memoryview(data)[start:]], budget.left + 1):
            size += len(piece)
    except zlib.error:
        pass  # pydicom reports the corrupt stream in its own words, inflating no more than this
    budget.take(name, size, "the deflated DICOM dataset inflates to at least")


def _deflated_start(data: bytes) -> int | None:
    """Where pydicom starts inflating ``data``, or None if it does not inflate it.

    Found with pydicom's own readers, as ``dcmread`` finds it: the file meta is read up to the
    first element of another group, whatever its group length (0002,0000) says (or where there
    is none), then any command set (group 0000); the transfer syntax is the one that meta holds.
    """
    fp = io.BytesIO(data)
    try:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
        _read_command_set_elements(fp)
    except Exception:  # dcmread fails here as well, before it inflates anything
        return None
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return None
    return fp.tell()


def _read(data: bytes, name: str) -> Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:  # pydicom raises many types on broken files
        raise InputError(
            name, f"not a readable DICOM file: truncated or corrupt ({_reason(exc)})"
        ) from None


def _check_complete(ds: Dataset, name: str, size: int | None) -> None:
    """Refuse what a cut file leaves, which pydicom reads without complaint.

    A cut shows as a last value shorter than its declared length, or as missing pixel data
    where there are image attributes, an image SOP class, or bytes after the last element that
    pydicom could not read (``size``: the file's length, None where offsets are not file offsets).
    """
    if not len(ds):
        raise InputError(name, "the DICOM file is truncated or corrupt (no data after its header)")
    last = ds.get_item(max(ds.keys()))
    if isinstance(last, RawDataElement) and last.length != _UNDEFINED_LENGTH:
        short = isinstance(last.value, bytes) and len(last.value) < last.length
        unread = size is not None and last.value_tell + last.length < size
    else:
        short = unread = False
    image_class = "Image Storage" in UID(ds.file_meta.get("MediaStorageSOPClassUID", "")).name
    if short or ("PixelData" not in ds and ("Rows" in ds or unread or image_class)):
        raise InputError(name, "the DICOM file is truncated or corrupt (its data end too early)")


def _transfer_syntax(ds: Dataset, name: str) -> UID:
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if not syntax or not isinstance(syntax, str):  # a damaged meta may give bytes or a list
        raise InputError(name, "the DICOM file meta has no transfer syntax (truncated or corrupt)")
    return UID(syntax)


@dataclass(frozen=True)
class _Image:
    """The image a DICOM header declares."""

    rows: int
    columns: int
    frames: int
    samples: int
    bits: int

    @property
    def decoded_bytes(self) -> int:
        """The size of its decoded pixel data (samples of 1 bit are unpacked to a byte each)."""
        return self.rows * self.columns * self.frames * self.samples * math.ceil(self.bits / 8)


def _check_image(ds: Dataset, name: str, limits: Limits, syntax: UID) -> _Image:
    """The image the header declares, after checking it is within the limits and that there
    is a codec for it."""
    if "PixelData" not in ds:
        raise InputError(name, f"DICOM file has no image (Modality {_code(ds, 'Modality') or '?'})")
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
        samples = int(ds.get("SamplesPerPixel") or 1)
        bits = int(ds.get("BitsAllocated") or 8)
    except (AttributeError, TypeError, ValueError):
        raise InputError(
            name, "the DICOM image has no valid Rows, Columns, frames or sample size"
        ) from None
    if rows < 1 or columns < 1 or frames < 1:
        raise InputError(name, f"the DICOM image has an invalid size {columns}x{rows}x{frames}")
    if samples < 1 or bits < 1:
        raise InputError(
            name, f"the DICOM image has an invalid sample size ({samples} of {bits} bits)"
        )
    limits.check_pixels(name, columns, rows, frames)
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        # An unregistered UID is quoted by no message: it may name its maker.
        known = syntax.name if syntax.name != str(syntax) else "(an unregistered UID)"
        raise UnsupportedFormatError(
            name, f"DICOM transfer syntax {known} is not supported"
        ) from None
    if not decoder.is_available:
        raise UnsupportedFormatError(
            name,
            f"decoding {syntax.name} DICOM needs codecs that are not installed: {INSTALL_HINT}",
        )
    return _Image(rows, columns, frames, samples, bits)


def _check_frames(ds: Dataset, name: str, syntax: UID, image: _Image) -> None:
    """Before decoding compressed pixel data: there must be as many frames as the header
    declares (pydicom would decode every frame it finds), and each JPEG, JPEG-LS or JPEG 2000
    frame's codestream must declare the header's size, sample count and at most its bits
    (the codecs allocate from the codestream, and pydicom compares only after decoding)."""
    if not syntax.is_encapsulated:
        return
    read_header = _FRAME_HEADERS.get(syntax)
    count = 0
    for count, frame in enumerate(_encoded_frames(ds, name, syntax), start=1):
        if read_header is not None and count <= image.frames:
            _check_codestream(read_header(frame), count, name, image)
    if count != image.frames:
        raise InputError(name, f"the DICOM file declares {image.frames} frames but holds {count}")


def _encoded_frames(ds: Dataset, name: str, syntax: UID) -> Iterator[bytes]:
    """The encoded frames as pydicom's decoders get them: split by the same runner options
    and the same frame generator."""
    try:
        runner = DecodeRunner(syntax)
        runner.set_source(ds)
        runner.validate()
        frames = generate_frames(
            runner.src,
            number_of_frames=runner.number_of_frames,
            extended_offsets=runner.extended_offsets,
        )
        yield from frames
    except Exception as exc:  # what iter_pixels would raise on the same data
        raise _undecodable(name, syntax, exc, ds) from None


def _check_codestream(header: FrameHeader | None, index: int, name: str, image: _Image) -> None:
    frame = f"the DICOM frame {index}'s image data"
    if header is None:
        raise InputError(name, f"{frame} declare no readable size (truncated or corrupt)")
    if (header.width, header.height) != (image.columns, image.rows):
        raise InputError(
            name,
            f"{frame} declare {header.width}x{header.height}, not the header's "
            f"{image.columns}x{image.rows}",
        )
    if header.components != image.samples:
        raise InputError(
            name,
            f"{frame} declare {header.components} components, not the header's "
            f"{image.samples} samples per pixel",
        )
    if header.precision > image.bits:
        raise InputError(
            name,
            f"{frame} declare {header.precision}-bit samples, more than the header's "
            f"{image.bits} bits allocated",
        )


def _to_rgb(ds: Dataset, arrays: list[np.ndarray], name: str) -> list[np.ndarray]:
    photometric = _code(ds, "PhotometricInterpretation")
    if arrays[0].ndim == 3:
        if arrays[0].shape[2] != 3:
            raise InputError(
                name, f"DICOM photometric interpretation {photometric!r} is unsupported"
            )
        # pydicom has already turned YBR into RGB; only the bit depth is left to map.
        return [_colour_to_uint8(arr, int(ds.get("BitsStored") or 8)) for arr in arrays]
    if photometric == "PALETTE COLOR":
        return [_colour_to_uint8(apply_color_lut(arr, ds), 16) for arr in arrays]

    rgb = []
    for index, (arr, voi) in enumerate(zip(arrays, _frame_vois(ds, arrays), strict=True)):
        values = _modality(ds, arr, index)  # floats only while this frame's slice is made
        grey = voi.grey(values)
        if photometric == "MONOCHROME1":  # stored with white as the lowest value
            grey = 255 - grey
        rgb.append(np.repeat(grey[:, :, None], 3, axis=2))
    return rgb


def _modality(ds: Dataset, arr: np.ndarray, frame: int) -> np.ndarray:
    """Stored values to modality units (e.g. Hounsfield) for one frame, as a new float32 array."""
    if "ModalityLUTSequence" in ds:
        return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    # Enhanced multi-frame files keep the rescale in functional groups, which pydicom's
    # apply_modality_lut does not read, so the linear rescale is done here for both kinds.
    slope = _number(_frame_value(ds, frame, "PixelValueTransformationSequence", "RescaleSlope"))
    intercept = _number(
        _frame_value(ds, frame, "PixelValueTransformationSequence", "RescaleIntercept")
    )
    values = arr.astype(np.float32)
    if slope is not None and slope != 0:
        values *= slope
    if intercept is not None:
        values += intercept
    return values


def _frame_vois(ds: Dataset, arrays: list[np.ndarray]) -> list[_Voi | Window]:
    """Each frame's VOI, read once per place that holds one (a stack's frames share the top
    level's or the shared group's), and one percentile window for all frames without any."""
    found: dict[int, _Voi | None] = {}
    vois = []
    for index in range(len(arrays)):
        source = _voi_source(ds, index)
        if id(source) not in found:
            found[id(source)] = _voi(ds, source)
        vois.append(found[id(source)])
    if all(voi is not None for voi in vois):
        return [voi for voi in vois if voi is not None]
    fallback = _stack_window(ds, arrays)
    return [fallback if voi is None else voi for voi in vois]


@dataclass(frozen=True)
class _Voi:
    """A frame's VOI LUT (PS3.3 C.11.2), applied by pydicom's own ``apply_voi_lut``: a window
    (LINEAR, LINEAR_EXACT or SIGMOID) or a VOI LUT Sequence's table.

    ``view`` is a dataset that holds that one VOI and what pydicom reads besides: 8 unsigned
    bits stored, so that a window's output range is 0 to 255 (pydicom takes the output range
    from the stored pixels' bits, not from a display). ``top`` is the output that shows white:
    255 for a window, a table's largest output for its bits. ``entries`` is a table's (first,
    last) input value, None for a window.
    """

    view: Dataset = field(repr=False)  # its file meta holds UIDs and a station's name
    top: float
    entries: tuple[int, int] | None = None

    def grey(self, values: np.ndarray) -> np.ndarray:
        """A frame's float32 modality values (overwritten) as 8-bit grey, a block of rows at a
        time."""
        if self.entries is not None:  # a table is indexed by the integers its entries cover
            np.clip(np.rint(values, out=values), *self.entries, out=values)
        grey = np.empty(values.shape, dtype=np.uint8)
        rows = max(1, _VOI_BLOCK_PIXELS // max(1, values.shape[1]))
        white = Window(0.0, self.top)
        for top in range(0, values.shape[0], rows):
            block = values[top : top + rows]
            if self.entries is not None:
                block = block.astype(np.int32)
            with np.errstate(over="ignore"):  # SIGMOID's exponential saturates
                out = apply_voi_lut(block, self.view)
            # As float64, pydicom's windowing output: no rounding before the grey levels'.
            grey[top : top + rows] = white.grey(np.asarray(out, dtype=np.float64))
        return grey


def _voi_source(ds: Dataset, frame: int) -> Dataset:
    """Where a frame's VOI LUT module is: its per-frame Frame VOI LUT item, else the shared
    one, else the top level (which may hold none)."""
    for item in _functional_groups(ds, frame):
        sequence = item.get("FrameVOILUTSequence")
        if sequence and any(keyword in sequence[0] for keyword in _VOI_KEYWORDS):
            return sequence[0]
    return ds


def _voi(ds: Dataset, source: Dataset) -> _Voi | None:
    """The VOI that ``source`` holds (its VOI LUT Sequence's first table where usable, as
    pydicom prefers, else its first window), else CT's brain window, else None (the frame gets
    the percentile window). A malformed VOI is as if missing: the image shows all the same."""
    for read in (_voi_table, _voi_window):
        try:
            voi = read(ds, source)
        except Exception:  # values pydicom cannot convert, a table shorter than declared
            voi = None
        if voi is not None:
            return voi
    if _code(ds, "Modality") != "CT":
        return None
    view = _voi_view(ds)
    view.WindowCenter, view.WindowWidth = CT_BRAIN_WINDOW
    return _Voi(view, 255.0)


def _voi_view(ds: Dataset) -> Dataset:
    """A dataset for ``apply_voi_lut`` to read, without a VOI yet (see _Voi)."""
    view = Dataset()
    view.file_meta = ds.file_meta  # the byte order of an OW table
    # MONOCHROME1 is inverted after the VOI, as a display does; pydicom's windowing only checks
    # that the image is grey.
    view.PhotometricInterpretation = "MONOCHROME2"
    view.BitsStored, view.PixelRepresentation = 8, 0
    return view


def _voi_window(ds: Dataset, source: Dataset) -> _Voi | None:
    """The first window of ``source`` (the standard's default of several), when its centre and
    width are finite and the width is one its function allows; a function pydicom does not
    know is LINEAR, the standard's default."""
    centre = _number(source.get("WindowCenter"))
    width = _number(source.get("WindowWidth"))
    if centre is None or width is None:
        return None
    function = str(source.get("VOILUTFunction", "") or "").strip().upper()
    if function not in _VOI_FUNCTIONS:
        function = "LINEAR"
    # PS3.3 C.11.2.1.2 and C.11.2.1.3: LINEAR needs a width of at least 1, the others above 0.
    usable = width >= 1 if function == "LINEAR" else width > 0
    if not usable:
        return None
    view = _voi_view(ds)
    view.WindowCenter, view.WindowWidth = centre, width
    if function != "LINEAR":
        view.VOILUTFunction = function
    return _Voi(view, 255.0)


def _voi_table(ds: Dataset, source: Dataset) -> _Voi | None:
    """The first table of ``source``'s VOI LUT Sequence, when pydicom reads all the entries its
    descriptor declares. White is the largest output of the declared bits per entry (PS3.3
    C.11.2.1.1), except where the entries use less than a sixteenth of that range: then of the
    bits they need (at least 8), so that a table declared 16 bits whose entries need 12, a
    common mistake, still spans black to white.
    """
    sequence = source.get("VOILUTSequence")
    if not sequence:
        return None
    item = sequence[0]
    count, first, depth = (int(value) for value in item.LUTDescriptor)
    entries = count or 1 << 16
    if depth not in _VOI_LUT_DEPTHS or "LUTData" not in item:
        return None
    table = Dataset()
    # pydicom 3.0 indexes an 8-bit table with 8-bit indices, which wrap past 256 entries: the
    # table is handed over as 16-bit entries (the same values; each entry is 16 bits stored).
    table.LUTDescriptor = [count, first, 16 if depth == 8 else depth]
    table.add(item["LUTData"])
    view = _voi_view(ds)
    view.VOILUTSequence = Sequence([table])
    outputs = np.asarray(apply_voi_lut(np.arange(first, first + entries), view))
    if outputs.shape != (entries,):
        return None
    needed = int(outputs.max()).bit_length()
    bits = max(8, needed) if needed <= depth - 4 else depth
    return _Voi(view, float(2**bits - 1), (first, first + entries - 1))


def _stack_window(ds: Dataset, arrays: list[np.ndarray]) -> Window:
    """One percentile window for all frames, so that frames of a stack look alike: from a
    strided sample of each frame's values in modality units."""
    samples = []
    per_frame = max(1, min(_SAMPLES_PER_FRAME, _SAMPLES_PER_STACK // len(arrays)))
    for index, arr in enumerate(arrays):
        step = sample_step(arr.size, per_frame)
        samples.append(_modality(ds, arr[::step, ::step], index).ravel())
    return percentile_window(np.concatenate(samples))


def _colour_to_uint8(arr: np.ndarray, bits: int) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    top = int(arr.max(initial=0))
    if top <= 255:  # 8-bit values in a 16-bit container, common in palettes
        return arr.astype(np.uint8)
    full = 2.0 ** max(bits, top.bit_length()) - 1
    return np.rint(np.clip(arr.astype(np.float32) * (255.0 / full), 0, 255)).astype(np.uint8)


def _spacing(ds: Dataset, frame: int) -> tuple[tuple[float, float] | None, str]:
    """(row, column) spacing in mm and where it came from, or (None, "") when unknown."""
    candidates = (
        (_frame_value(ds, frame, "PixelMeasuresSequence", "PixelSpacing"), "DICOM PixelSpacing"),
        (ds.get("ImagerPixelSpacing"), "DICOM ImagerPixelSpacing"),
    )
    for value, source in candidates:
        try:
            row, column = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if all(math.isfinite(v) and 0 < v <= MAX_SPACING_MM for v in (row, column)):
            return (row, column), source
    return None, ""


def _frame_value(ds: Dataset, frame: int, group: str, keyword: str) -> Any:
    """An attribute for one frame: per-frame functional group, shared group, then top level."""
    for item in _functional_groups(ds, frame):
        sequence = item.get(group)
        if sequence and keyword in sequence[0]:
            return sequence[0][keyword].value
    return ds.get(keyword)


def _functional_groups(ds: Dataset, frame: int) -> list[Dataset]:
    """A frame's per-frame functional groups item and the shared one, those that are present."""
    items = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and frame < len(per_frame):
        items.append(per_frame[frame])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        items.append(shared[0])
    return items


def _number(value: Any) -> float | None:
    """The first value of a (possibly multi-valued) numeric attribute, if it is finite."""
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, MultiValue)):
        if not value:
            return None
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _code(ds: Dataset, keyword: str) -> str:
    """Modality or Photometric Interpretation, or "" where it is missing, malformed or not one of
    the standard's terms (a writer's own value is never shown: it may be a name)."""
    try:
        value = str(ds.get(keyword, "") or "").strip().upper()
    except Exception:  # a malformed value: as if missing
        return ""
    return value if value in _DEFINED_TERMS[keyword] else ""


def _reason(exc: Exception, ds: Dataset | None = None) -> str:
    """A library's message as a short phrase that is safe to show (as library_reason makes it),
    with every value of a name, identifier, text, URI, date, time, age, UID, station or unknown
    element of ``ds`` (its file meta and sequence items too) taken out: in any letter case,
    whole or in parts (a name's components, one of several values); parts of two characters
    where they stand as a word (a short surname), shorter ones not at all."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    # pydicom quotes raw values as Python literals, whose escaped quotes library_reason's
    # quote matching would stop at: each literal goes whole first.
    text = scrub(_LITERAL.sub("...", lines[0] if lines else ""), limit=1000)
    if ds is not None:
        text = _scrub_values(text, _identifying_values(ds))
    if not text or text == "...":
        return type(exc).__name__
    return text if len(text) <= _REASON_CHARACTERS else text[: _REASON_CHARACTERS - 3] + "..."


def _scrub_values(text: str, values: set[str]) -> str:
    # Longest first, so that a value is not left in pieces by one of its parts.
    for value in sorted(values, key=len, reverse=True):
        if value.casefold() not in text.casefold():
            continue
        pattern = re.escape(value)
        if len(value) < 3:
            pattern = rf"(?<!\w){pattern}(?!\w)"
        text = re.sub(pattern, "...", text, flags=re.IGNORECASE)
    return text


def _identifying_values(ds: Dataset) -> set[str]:
    """The values, and the parts of them, of the elements with a VR in _IDENTIFYING_VRS or an
    unknown one (up to _UNKNOWN_VALUE_BYTES), as text of at least 2 characters with a letter
    or of at least 3: decoded with the dataset's character sets, as pydicom would, and as
    UTF-8 and Latin-1.

    Read from the raw bytes, so that no element of ``ds`` is converted (and may be logged) here;
    only sequences are, to reach their items' raw elements.
    """
    values: set[str] = set()
    stack: list[tuple[Dataset, int]] = [(ds, 0)]
    meta = getattr(ds, "file_meta", None)
    if isinstance(meta, Dataset):
        stack.append((meta, 0))
    while stack:
        dataset, depth = stack.pop()
        encodings = _encodings(dataset)
        for tag in list(dataset.keys()):
            element = dataset.get_item(tag)
            vr = _vr(element)
            if vr in _IDENTIFYING_VRS:
                values.update(_texts(element.value, vr, encodings))
            elif vr == "SQ" and depth < _SCRUB_DEPTH:
                stack.extend((item, depth + 1) for item in _items(dataset, tag))
            elif vr in (None, "UN") and _size(element.value) <= _UNKNOWN_VALUE_BYTES:
                values.update(_texts(element.value, vr, encodings))
    return values


def _vr(element: DataElement | RawDataElement) -> str | None:
    """An element's VR: as encoded, else (implicit VR, or UN) from the data dictionary, else
    None (a private or unknown element)."""
    if element.VR not in (None, "UN"):
        return element.VR
    try:
        return dictionary_VR(element.tag)
    except KeyError:  # private or unknown
        return element.VR


def _items(dataset: Dataset, tag: int) -> list[Dataset]:
    try:
        return [item for item in dataset[tag].value if isinstance(item, Dataset)]
    except Exception:  # a broken sequence: no items to search
        return []


def _encodings(dataset: Dataset) -> list[str]:
    """The Python encodings of a dataset's Specific Character Set (an item inherits its
    dataset's), or none where it is missing or unusable."""
    try:
        encodings = dataset._character_set  # pydicom's own reading, with the inheritance
    except Exception:  # a malformed Specific Character Set: UTF-8 and Latin-1 still serve
        return []
    return [encodings] if isinstance(encodings, str) else list(encodings)


def _converted(value: bytes, vr: str | None, encodings: list[str]) -> str | None:
    """A raw value as pydicom converts one of ``vr`` in the character sets (an unknown VR's as
    LO's), or None where the VR's values are ASCII or the value is undecodable as declared."""
    if not encodings or vr not in (*_CHARSET_VRS, None, "UN"):
        return None
    try:
        if vr == "PN":
            converted: Any = convert_PN(value, encodings)
        else:
            converted = convert_text(value, encodings, vr if vr in _CHARSET_VRS else "LO")
    except Exception:  # undecodable as declared: the UTF-8 and Latin-1 readings stand
        return None
    return "\\".join(map(str, converted)) if _multiple(converted) else str(converted)


def _multiple(value: Any) -> bool:
    return isinstance(value, (list, tuple, MultiValue))


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (bytes, str)) else 0


def _texts(value: Any, vr: str | None, encodings: list[str]) -> set[str]:
    """A raw (or already converted) value and its parts as text: decoded with ``encodings``
    as pydicom converts a value of ``vr``, and as UTF-8 and Latin-1."""
    if isinstance(value, bytes):
        wholes = {value.decode("utf-8", "replace"), value.decode("latin-1")}
        converted = _converted(value, vr, encodings)
        if converted is not None:
            wholes.add(converted)
    elif _multiple(value):
        wholes = {"\\".join(str(v) for v in value)}
    else:
        wholes = {str(value)} if value is not None else set()
    parts = {part for whole in wholes for part in (whole, *_VALUE_PARTS.split(whole))}
    words = _WORDS.get(vr or "")
    if words is not None:
        parts |= {word for part in parts for word in words.split(part)}
    stripped = (part.strip(" \x00") for part in parts)
    return {
        part
        for part in stripped
        if len(part) >= 3 or (len(part) == 2 and any(ch.isalpha() for ch in part))
    }
