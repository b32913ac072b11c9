"""The C-STORE receiver: which associations, SOP classes and transfer syntaxes it takes, and
what it answers for each instance (only after the instance is durably spooled)."""

from __future__ import annotations

import logging
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, _config, dimse_messages, evt
from pynetdicom.sop_class import (
    Comprehensive3DSRStorage,
    CTImageStorage,
    EncapsulatedPDFStorage,
    EnhancedCTImageStorage,
    EnhancedMRImageStorage,
    GrayscaleSoftcopyPresentationStateStorage,
    LegacyConvertedEnhancedMRImageStorage,
    MRImageStorage,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from mriscribe.node.spool import Spool
from mriscribe.outputs.dicom_source import MANUFACTURER, MODEL_NAME
from mriscribe.settings import Settings, SettingsError

log = logging.getLogger("mriscribe.node")

IMAGE_CLASSES = (
    MRImageStorage,
    EnhancedMRImageStorage,
    LegacyConvertedEnhancedMRImageStorage,
    CTImageStorage,
    EnhancedCTImageStorage,
    SecondaryCaptureImageStorage,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
)
# Accepted only to recognise mriscribe's own results coming back (a PACS that forwards whole
# studies): acknowledged and dropped, never analysed.
RESULT_CLASSES = (
    Comprehensive3DSRStorage,
    GrayscaleSoftcopyPresentationStateStorage,
    EncapsulatedPDFStorage,
)
# Deflated Explicit VR Little Endian is left out: a deflated dataset can only be read whole,
# inflated in memory (a small file can claim gigabytes); senders fall back to explicit VR.
UNCOMPRESSED = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
)
COMPRESSED = (
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

# C-STORE statuses (PS3.4 B.2.3)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
NOT_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000


@dataclass
class Counters:
    """What the receiver did, for /health (counts only); its threads count under one lock."""

    associations: int = 0
    refused_associations: int = 0
    refused_contexts: int = 0
    stored: int = 0
    repeated: int = 0
    results_ignored: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, count: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + count)

    def refuse(self, reason: str) -> None:
        with self.lock:
            self.refused[reason] = self.refused.get(reason, 0) + 1


def transfer_syntaxes(settings: Settings) -> list[UID]:
    """The syntaxes accepted: as set, else uncompressed and each compressed one that decodes."""
    if settings.node_transfer_syntaxes is not None:
        return [_uid(item, "node_transfer_syntaxes") for item in settings.node_transfer_syntaxes]
    from pydicom.pixels import get_decoder

    usable = []
    for syntax in COMPRESSED:
        try:
            if get_decoder(syntax).is_available:
                usable.append(syntax)
        except NotImplementedError:
            continue
    return [*UNCOMPRESSED, *usable]


def image_classes(settings: Settings) -> list[UID]:
    if settings.node_sop_classes is None:
        return list(IMAGE_CLASSES)
    return [_uid(item, "node_sop_classes") for item in settings.node_sop_classes]


def _uid(value: str, setting: str) -> UID:
    """A UID given as a keyword (MRImageStorage, JPEGLSLossless) or dotted digits."""
    import pydicom.uid
    from pynetdicom import sop_class

    item = value.strip()
    if item.isidentifier() and not item.startswith("_"):
        for module in (pydicom.uid, sop_class):
            found = getattr(module, item, None)
            if isinstance(found, str) and UID(found).is_valid and UID(found).name != found:
                return UID(found)
    uid = UID(item)
    if not item[:1].isdigit() or not uid.is_valid:
        raise SettingsError(f"{setting}: {value!r} is neither a known keyword nor a UID")
    return uid


# pynetdicom writes each dataset it receives into a NamedTemporaryFile of its own: each node's
# go into its spool's tmp/ (0700, cleared at start), found by the association's AE.
_TEMPORARY_FOLDERS: dict[int, Path] = {}


def _receive_into(ae: AE, folder: Path) -> None:
    _TEMPORARY_FOLDERS[id(ae)] = folder
    if getattr(dimse_messages.NamedTemporaryFile, "mriscribe", False):
        return

    def named_temporary_file(*args: Any, **kwargs: Any) -> Any:
        assoc = getattr(threading.current_thread(), "assoc", None)
        folder = _TEMPORARY_FOLDERS.get(id(getattr(assoc, "ae", None)))
        if folder is None:  # another pynetdicom server in this process: its own business
            return tempfile.NamedTemporaryFile(*args, **kwargs)
        return tempfile.NamedTemporaryFile(*args, dir=folder, **kwargs)

    named_temporary_file.mriscribe = True  # type: ignore[attr-defined]
    dimse_messages.NamedTemporaryFile = named_temporary_file  # type: ignore[attr-defined]


class Receiver:
    """The node's Storage SCP and Verification SCP on ``settings.node_port``."""

    def __init__(self, settings: Settings, spool: Spool) -> None:
        self.settings = settings
        self.spool = spool
        self.counters = Counters()
        self.max_bytes = int(settings.max_file_mb * 1024 * 1024)
        self.server: ThreadedAssociationServer | None = None
        self.images = set(image_classes(settings))
        self.ae: AE | None = None

    def start(self) -> None:
        # Datasets arrive into a file, never whole into memory: the spool's tmp/ folder (the
        # node points temporary files there), cleared at every start.
        _config.STORE_RECV_CHUNKED_DATASET = True
        _config.LOG_HANDLER_LEVEL = "none"
        ae = AE(ae_title=self.settings.node_ae_title)
        _receive_into(ae, self.spool.tmp)
        self.ae = ae
        ae.require_called_aet = True
        ae.maximum_associations = 16
        ae.acse_timeout = 30
        ae.dimse_timeout = 60
        ae.network_timeout = 60
        if self.settings.node_allowed_calling_aets:
            ae.require_calling_aet = list(self.settings.node_allowed_calling_aets)
        syntaxes = transfer_syntaxes(self.settings)
        for sop_class in [*self.images, *RESULT_CLASSES]:
            ae.add_supported_context(sop_class, syntaxes)
        ae.add_supported_context(Verification)
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._store),
            (evt.EVT_C_ECHO, lambda _event: SUCCESS),
            (evt.EVT_ACCEPTED, self._accepted),
            (evt.EVT_REJECTED, self._rejected),
        ]
        self.server = ae.start_server(
            (self.settings.node_host, self.settings.node_port),
            block=False,
            evt_handlers=handlers,
        )

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def stop(self) -> None:
        if self.server is not None:
            for assoc in list(self.server.active_associations):
                assoc.abort()  # unacknowledged instances: their senders resend them
            self.server.shutdown()
            self.server = None
        if self.ae is not None:
            _TEMPORARY_FOLDERS.pop(id(self.ae), None)
            self.ae = None

    def _accepted(self, event: Any) -> None:
        self.counters.add("associations")
        refused = event.assoc.rejected_contexts
        if refused:
            # Senders often propose every storage class they know: an instance of one of these
            # classes would fail at the sender, which says so.
            self.counters.add("refused_contexts", len(refused))
            names = sorted({UID(str(c.abstract_syntax)).name for c in refused})
            log.info(
                f"association accepted; {len(refused)} presentation context(s) refused",
                extra={
                    "calling_ae": _printable(event.assoc.requestor.ae_title),
                    "sop_classes": names[:20],
                },
            )

    def _rejected(self, event: Any) -> None:
        self.counters.add("refused_associations")
        calling = _printable(event.assoc.requestor.ae_title)
        log.warning(f"association refused (calling AE title {calling!r})",
                    extra={"calling_ae": calling})

    def _store(self, event: Any) -> int:
        calling = _printable(event.assoc.requestor.ae_title)
        path = Path(event.dataset_path)
        try:
            size = path.stat().st_size
            if size > self.max_bytes:
                return self._refuse("larger than max_file_mb", calling, CANNOT_UNDERSTAND)
            # Values over 4 KiB (the pixels) stay on disk: only the header is read.
            header = dcmread(path, defer_size=4096)
            has_pixels = "Rows" in header and any(k in header for k in PIXEL_KEYWORDS)
            sop_class = str(event.request.AffectedSOPClassUID)
        except (InvalidDicomError, OSError):
            return self._refuse("unreadable", calling, CANNOT_UNDERSTAND)
        except Exception:  # a malformed dataset fails pydicom in many ways
            return self._refuse("unreadable", calling, CANNOT_UNDERSTAND)
        if sop_class in RESULT_CLASSES:
            own = (header.get("Manufacturer"), header.get("ManufacturerModelName")) == (
                MANUFACTURER,
                MODEL_NAME,
            )
            self.counters.add("results_ignored")
            log.info(
                "instance ignored: " + ("mriscribe's own result" if own else "not an image"),
                extra={"calling_ae": calling},
            )
            return SUCCESS
        if not has_pixels:
            return self._refuse("no pixel data", calling, NOT_SOP_CLASS)
        if _pixels_short(header, size):
            return self._refuse("pixel data shorter than the image", calling, CANNOT_UNDERSTAND)
        study_uid = str(header.get("StudyInstanceUID", "") or "")
        instance_uid = str(header.get("SOPInstanceUID", "") or "")
        if not (_uid_like(study_uid) and _uid_like(instance_uid)):
            return self._refuse("no valid study or instance UID", calling, CANNOT_UNDERSTAND)
        study, instance = self.spool.key_of(study_uid), self.spool.key_of(instance_uid)
        if self.spool.seen(study, instance):
            # Spooled all the same: a study that comes back whole is skipped as a whole (the
            # loop guard), one that gains images is read again with all of them.
            self.counters.add("repeated")
        try:
            self.spool.store(study, instance, path)
        except OSError as exc:
            log.error("cannot spool an instance", extra={"reason": exc.strerror or "OSError"})
            return self._refuse("spool write failed", calling, OUT_OF_RESOURCES)
        self.counters.add("stored")
        return SUCCESS

    def _refuse(self, reason: str, calling: str, status: int) -> int:
        self.counters.refuse(reason)
        log.warning(
            f"instance refused: {reason}", extra={"calling_ae": calling, "status": f"{status:04X}"}
        )
        return status


def _pixels_short(header: Any, file_size: int) -> bool:
    """Whether the pixel data runs past the end of the file, or native (uncompressed) pixel
    data holds fewer bytes than its image needs: from the element's length alone (the pixels
    stay on disk). Compressed frames, and anything this cannot tell, are left to the decoder at
    analysis."""
    from pydicom.pixels.utils import get_expected_length

    element = header.get_item(0x7FE00010, keep_deferred=True)
    length = getattr(element, "length", None)
    if element is None or length is None or length == 0xFFFFFFFF:
        return False
    syntax = UID(str(header.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)))
    if syntax.is_deflated or syntax.is_compressed:
        return False
    if getattr(element, "value_tell", 0) + length > file_size:
        return True
    try:
        needed = int(get_expected_length(header, unit="bytes"))
    except Exception:  # attributes missing or odd: the decoder says what is wrong
        return False
    return int(length) < needed


def _uid_like(value: str) -> bool:
    """Digits and dots, 1 to 64 characters: what a sender's UID must be for us to key it (real
    UIDs with a leading zero in a part exist and are taken)."""
    return 0 < len(value) <= 64 and all(c.isdigit() or c == "." for c in value)


def _printable(title: object) -> str:
    text = title if isinstance(title, str) else str(title)
    return "".join(c for c in text if 32 <= ord(c) < 127).strip()[:16]

