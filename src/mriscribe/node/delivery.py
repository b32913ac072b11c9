"""Where results go: a PACS by C-STORE (pynetdicom) or by STOW-RS (dicomweb-client).

A destination sends a whole job's results or raises DeliveryError; the node retries with
backoff. Sending again is harmless: the results keep their UIDs, so a PACS keeps one copy.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from mriscribe.errors import MriscribeError
from mriscribe.settings import Settings, parse_peer

log = logging.getLogger("mriscribe.node")

# C-STORE answers that mean the PACS has the instance (success, or a warning: PS3.4 B.2.3).
STORED = {0x0000, 0xB000, 0xB006, 0xB007}


class DeliveryError(MriscribeError):
    """A destination did not take the results (why, without patient data). ``unreachable``:
    the destination did not answer or refused the association (it is down for every study);
    else it refused this study's results (the next study may go through)."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


class Destination(Protocol):
    @property
    def key(self) -> str:
        """A stable name for the spool's delivered markers (a hash: no host names on disk)."""
        ...

    @property
    def label(self) -> str:
        """How logs and /health name it."""
        ...

    def send(self, files: Sequence[Path]) -> None:
        """Send every file, or raise DeliveryError."""
        ...


@dataclass(frozen=True)
class CStoreDestination:
    """A Storage SCP, AE@HOST:PORT, sent to from ``calling_ae``."""

    ae_title: str
    host: str
    port: int
    calling_ae: str
    timeout_s: float = 30.0

    @property
    def label(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    @property
    def key(self) -> str:
        return "cstore-" + hashlib.sha256(self.label.encode()).hexdigest()[:16]

    def send(self, files: Sequence[Path]) -> None:
        from pynetdicom import AE

        datasets = [dcmread(path) for path in files]
        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = self.timeout_s
        ae.dimse_timeout = self.timeout_s
        ae.network_timeout = self.timeout_s
        ae.connection_timeout = self.timeout_s
        for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        assoc = ae.associate(self.host, self.port, ae_title=self.ae_title)
        if not assoc.is_established:
            reason = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else (
                "no answer"
            )
            raise DeliveryError(f"{self.label}: association {reason}", unreachable=True)
        try:
            for number, dataset in enumerate(datasets, start=1):
                try:
                    status = assoc.send_c_store(dataset)
                except ValueError:  # the PACS took no presentation context for this class
                    raise DeliveryError(
                        f"{self.label}: result {number} refused (its SOP class was not accepted)"
                    ) from None
                except RuntimeError:  # the association went away between two instances
                    lost = f"{self.label}: association lost"
                    raise DeliveryError(lost, unreachable=True) from None
                code = int(status.Status) if status and "Status" in status else None
                if code not in STORED:
                    what = "no answer" if code is None else f"status {code:04X}"
                    raise DeliveryError(f"{self.label}: result {number} refused ({what})")
        finally:
            if assoc.is_established:
                assoc.release()


@dataclass(frozen=True)
class StowDestination:
    """A DICOMweb server's STOW-RS (its base URL, e.g. http://pacs:8042/dicom-web)."""

    url: str
    timeout_s: float = 60.0

    @property
    def label(self) -> str:
        return f"STOW-RS {public_url(self.url)}"

    @property
    def key(self) -> str:
        return "stow-" + hashlib.sha256(public_url(self.url).encode()).hexdigest()[:16]

    def send(self, files: Sequence[Path]) -> None:
        import requests
        from dicomweb_client.api import DICOMwebClient

        datasets = [dcmread(path) for path in files]
        url, auth = split_credentials(self.url)
        with requests.Session() as session:
            session.auth = auth
            client = DICOMwebClient(url=url, session=session, timeout=self.timeout_s)
            try:
                answer = client.store_instances(datasets)
            except requests.HTTPError as exc:
                code = exc.response.status_code if exc.response is not None else 0
                # 5xx, 401/403/404/408/429: the server, not these results
                down = code >= 500 or code in (401, 403, 404, 408, 429)
                raise DeliveryError(f"{self.label}: HTTP {code}", unreachable=down) from None
            except (requests.RequestException, OSError) as exc:
                raise DeliveryError(
                    f"{self.label}: {type(exc).__name__}", unreachable=True
                ) from None
            except (ValueError, KeyError) as exc:  # an answer dicomweb-client cannot read
                raise DeliveryError(f"{self.label}: {type(exc).__name__}") from None
        # The store response (PS3.18 10.5.3): every instance failed or taken is listed.
        failed = answer.get("FailedSOPSequence") if answer is not None else None
        if failed:
            raise DeliveryError(f"{self.label}: {len(failed)} result(s) refused")
        stored = answer.get("ReferencedSOPSequence") if answer is not None else None
        if stored is not None and len(stored) < len(datasets):
            raise DeliveryError(f"{self.label}: {len(datasets) - len(stored)} result(s) not stored")


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without user and password, and those as HTTP basic auth (or None)."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    netloc = parts.netloc.rsplit("@", 1)[1]
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return bare, (unquote(parts.username), unquote(parts.password or ""))


def public_url(url: str) -> str:
    """A URL as logs and /health may show it: no user, password, query or fragment."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def destinations(settings: Settings) -> list[Destination]:
    """Every configured destination: each of node_send_to, then node_stow_url."""
    found: list[Destination] = [
        CStoreDestination(*parse_peer(peer), calling_ae=settings.node_ae_title)
        for peer in settings.node_send_to
    ]
    if settings.node_stow_url:
        found.append(StowDestination(settings.node_stow_url))
    return found
