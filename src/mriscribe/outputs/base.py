"""The one contract every output keeps: an analysis in, named bytes with a media type out.

An output is a module of this package holding ``OUTPUT``, an object with a ``name`` (how the
routes and the CLI ask for it), ``needs_images`` (whether the pipeline must draw the annotated
images first), ``needs_dicom`` (whether every source image must be DICOM) and
``render(rendering) -> tuple[Artifact, ...]``. Adding an output is adding a file; see
:func:`mriscribe.outputs.registry`.

A :class:`Rendering` is one analysis being turned into outputs: each output is made at most
once per rendering and outputs may ask for each other's (the encapsulated PDF and the FHIR
bundle carry the PDF that the ``pdf`` output made). Identifiers that several outputs must share
(the new series, the lesions' tracking UIDs) are drawn once per rendering.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from mriscribe.errors import MriscribeError

if TYPE_CHECKING:
    from mriscribe.analysis import Analysis


@dataclass(frozen=True)
class Artifact:
    """One file an output made: its name (never patient data), media type and bytes."""

    name: str
    media_type: str
    data: bytes

    def __repr__(self) -> str:
        return f"Artifact({self.name!r}, {self.media_type!r}, {len(self.data)} bytes)"


class OutputRefusedError(MriscribeError):
    """An output cannot be made from this analysis (DICOM results from PNG slices, say); the
    message says which output and why, and names no patient data."""

    def __init__(self, output: str, reason: str) -> None:
        self.output = output
        self.reason = reason
        super().__init__(f"{output}: {reason}")


class Output(Protocol):
    """What an output module's ``OUTPUT`` provides."""

    name: str
    summary: str
    media_type: str
    needs_images: bool
    needs_dicom: bool

    def render(self, rendering: Rendering) -> tuple[Artifact, ...]: ...


def new_uid() -> str:
    """A new DICOM UID under the 2.25 root (a UUID as an integer): unique without a
    registered organisation root."""
    from pydicom.uid import generate_uid

    return str(generate_uid(prefix=None))


@dataclass
class Rendering:
    """One analysis on its way out: the outputs made so far and the identifiers they share.

    ``options`` carries what a caller chose for an output (``fhir_version``: "R4B" or "R5").
    ``created`` is when the results were made (content date and time of every DICOM result
    and the FHIR bundle's timestamp).
    """

    analysis: Analysis
    options: Mapping[str, Any] = field(default_factory=dict)
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    _made: dict[str, tuple[Artifact, ...]] = field(default_factory=dict, repr=False)
    _uids: dict[str, str] = field(default_factory=dict, repr=False)
    _shared: dict[str, Any] = field(default_factory=dict, repr=False)

    def artifacts(self, name: str) -> tuple[Artifact, ...]:
        """The named output's artifacts, made on first request (OutputRefusedError when it
        cannot be made from this analysis, KeyError for an unknown name)."""
        if name not in self._made:
            from mriscribe.outputs import get_output

            output = get_output(name)
            self._made[name] = tuple(output.render(self))
        return self._made[name]

    def artifact(self, name: str) -> Artifact:
        """The named output's single artifact."""
        made = self.artifacts(name)
        if len(made) != 1:
            raise ValueError(f"the {name} output makes {len(made)} files, not one")
        return made[0]

    def shared(self, key: str, make: Callable[[], Any]) -> Any:
        """What ``make`` returns, made once per rendering for every output that asks by
        ``key`` (the DICOM source study, say)."""
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]

    def uid(self, purpose: str) -> str:
        """A UID drawn once per rendering for ``purpose`` ("sr-series", "lesion 2", ...): every
        output that names the same thing gives it the same UID."""
        if purpose not in self._uids:
            self._uids[purpose] = new_uid()
        return self._uids[purpose]

    def tracking_uid(self, lesion_id: int) -> str:
        """Lesion ``lesion_id``'s tracking UID, shared by the SR, the presentation state and
        the FHIR observations."""
        return self.uid(f"lesion {lesion_id}")

    @staticmethod
    def tracking_identifier(lesion_id: int) -> str:
        """Lesion ``lesion_id``'s human-readable tracking identifier ("Lesion 2", as the report
        names it), beside its tracking UID in the SR, the presentation state and FHIR."""
        return f"Lesion {lesion_id}"
