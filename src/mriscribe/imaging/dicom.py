"""Decoding DICOM files (native, deflated and compressed transfer syntaxes) into display slices."""

from __future__ import annotations

import io
import math
import re
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.filereader import _read_command_set_elements, _read_file_meta_info, read_preamble
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder, iter_pixels
from pydicom.pixels.decoders.base import DecodeRunner
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
)

from mriscribe.errors import InputError, UnsupportedFormatError, library_reason
from mriscribe.imaging.codestream import FrameHeader, j2k_header, jpeg_header
from mriscribe.imaging.inflate import inflate
from mriscribe.imaging.limits import DecodeBudget, Limits
from mriscribe.imaging.slices import Slice

INSTALL_HINT = "pip install 'mriscribe[dicom]'"
# CT without a stored window is shown as a brain window (centre, width in HU).
CT_BRAIN_WINDOW = (40.0, 80.0)
PERCENTILES = (0.5, 99.5)
# No brain image has pixels this large; a larger value is a broken header, not a measurement.
MAX_SPACING_MM = 50.0
# Enough samples per frame for stable percentiles without copying whole large frames, and
# (roughly: up to four times) no more than _SAMPLES_PER_STACK for all frames together.
_SAMPLES_PER_FRAME = 262_144
_SAMPLES_PER_STACK = 1 << 20
_UNDEFINED_LENGTH = 0xFFFFFFFF
_REASON_CHARACTERS = 120
# Sequence items are searched for values to scrub this many levels deep.
_SCRUB_DEPTH = 8
_CODE_STRING = re.compile(r"[A-Z0-9_ ]{1,16}")
# The value representations of names, identifiers, free text, dates, times, ages and UIDs:
# what a decoder's message must never quote.
_IDENTIFYING_VRS = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "DA", "DT", "TM", "AS", "UI"})
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

    Grey images go through the modality LUT (rescale) and a window (the file's own, a brain
    window for CT, else robust percentiles); colour and palette images become RGB. Patient data
    never reaches the slices' meta or the error messages. The inflated dataset of a deflated
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
            )
        )
    return slices


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
        raise UnsupportedFormatError(
            name, f"DICOM transfer syntax {syntax.name} is not supported"
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

    windows = [_stored_window(ds, index) for index in range(len(arrays))]
    if any(window is None for window in windows):
        fallback = _stack_window(ds, arrays)
        windows = [window or fallback for window in windows]
    rgb = []
    for index, (arr, (low, high)) in enumerate(zip(arrays, windows, strict=True)):
        scale = 255.0 / (high - low) if high > low else 0.0
        frame = _modality(ds, arr, index)  # floats only while this frame's slice is made
        frame -= low
        frame *= scale
        grey = np.rint(np.clip(frame, 0, 255, out=frame), out=frame).astype(np.uint8)
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


def _stored_window(ds: Dataset, frame: int) -> tuple[float, float] | None:
    """The (low, high) of the file's own linear window, or CT's brain window, or None."""
    centre = _number(_frame_value(ds, frame, "FrameVOILUTSequence", "WindowCenter"))
    width = _number(_frame_value(ds, frame, "FrameVOILUTSequence", "WindowWidth"))
    if centre is None or width is None or width < 1:
        if _code(ds, "Modality") != "CT":
            return None
        centre, width = CT_BRAIN_WINDOW
    # DICOM PS3.3 C.11.2.1.2.1: the linear window maps [c - 0.5 - (w-1)/2, c - 0.5 + (w-1)/2].
    return centre - 0.5 - (width - 1) / 2, centre - 0.5 + (width - 1) / 2


def _stack_window(ds: Dataset, arrays: list[np.ndarray]) -> tuple[float, float]:
    """One percentile window for all frames, so that frames of a stack look alike: from a
    strided sample of each frame's values in modality units."""
    samples = []
    per_frame = max(1, min(_SAMPLES_PER_FRAME, _SAMPLES_PER_STACK // len(arrays)))
    for index, arr in enumerate(arrays):
        step = max(1, math.isqrt(arr.size // per_frame))
        samples.append(_modality(ds, arr[::step, ::step], index).ravel())
    low, high = np.percentile(np.concatenate(samples), PERCENTILES, overwrite_input=True)
    return float(low), float(high)


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
    items = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and frame < len(per_frame):
        items.append(per_frame[frame])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        items.append(shared[0])
    for item in items:
        sequence = item.get(group)
        if sequence and keyword in sequence[0]:
            return sequence[0][keyword].value
    return ds.get(keyword)


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
    """A code string attribute, or "" if it is missing or not a plain code (never free text)."""
    value = str(ds.get(keyword, "") or "").strip().upper()
    return value if _CODE_STRING.fullmatch(value) else ""


def _reason(exc: Exception, ds: Dataset | None = None) -> str:
    """A library's message as a short phrase that is safe to show (see library_reason), with
    every value of a name, identifier, text, date, time, age or UID element of ``ds`` (its file
    meta and sequence items too) taken out."""
    text = library_reason(exc, limit=1000)
    # Longest first, so that a value is not left in pieces by one of its parts.
    for value in sorted(_identifying_values(ds) if ds is not None else (), key=len, reverse=True):
        text = text.replace(value, "...")
    return text if len(text) <= _REASON_CHARACTERS else text[: _REASON_CHARACTERS - 3] + "..."


def _identifying_values(ds: Dataset) -> set[str]:
    """The values, and the parts of them (names' components, multiple values), of the elements
    with a VR in _IDENTIFYING_VRS, as text of at least 3 characters.

    Read from the raw bytes, so that pydicom never converts (and may log) one of them here; only
    sequences are converted, to reach their items' raw elements.
    """
    values: set[str] = set()
    stack: list[tuple[Dataset, int]] = [(ds, 0)]
    meta = getattr(ds, "file_meta", None)
    if isinstance(meta, Dataset):
        stack.append((meta, 0))
    while stack:
        dataset, depth = stack.pop()
        for tag in list(dataset.keys()):
            element = dataset.get_item(tag)
            vr = _vr(element)
            if vr in _IDENTIFYING_VRS:
                values.update(_texts(element.value))
            elif vr == "SQ" and depth < _SCRUB_DEPTH:
                stack.extend((item, depth + 1) for item in _items(dataset, tag))
    return values


def _vr(element: DataElement | RawDataElement) -> str | None:
    """An element's VR: as encoded, else (implicit VR, or UN) from the data dictionary."""
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


def _texts(value: Any) -> set[str]:
    """A raw (or already converted) value and its parts as text."""
    if isinstance(value, bytes):
        wholes = {value.decode("utf-8", "replace"), value.decode("latin-1")}
    elif isinstance(value, (list, tuple, MultiValue)):
        wholes = {"\\".join(str(v) for v in value)}
    else:
        wholes = {str(value)} if value is not None else set()
    parts = {part for whole in wholes for part in (whole, *re.split(r"[\\^=]", whole))}
    return {part.strip(" \x00") for part in parts if len(part.strip(" \x00")) >= 3}
