"""Where a displayed slice came from and where it lies in the patient.

Every decoder gives each slice a :class:`SourceRef`: the DICOM identity of exactly these pixels
(Study, Series and SOP Instance UIDs, frame), and, where the file states it, the slice's
:class:`Plane` in DICOM patient coordinates (LPS: x to the patient's left, y to the back, z to the
head; millimetres). A NIfTI slice's plane is computed from the affine and the display transform
(both kept), so every format meets the same geometry downstream. PNG, JPEG and TIFF have none.
UIDs identify a study; they never go into facts, logs, JSON or error messages, only into the
DICOM results that must point back at their source.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from mriscribe.imaging.patient import Sealed

Vector = tuple[float, float, float]
# No scanner's coordinates reach this far (100 m): a larger value is a broken header.
MAX_COORDINATE_MM = 1e5
Matrix = tuple[tuple[float, float, float, float], ...]  # 4 x 4, row-major


def _unit(vector: np.ndarray) -> Vector:
    norm = float(np.linalg.norm(vector))
    if not math.isfinite(norm) or norm < 1e-6:
        raise ValueError("a zero or non-finite direction")
    return tuple(float(v) / norm for v in vector)  # type: ignore[return-value]


@dataclass(frozen=True)
class Plane:
    """A displayed slice's place in the patient (LPS, mm).

    ``position`` is the centre of the top-left displayed pixel (DICOM ImagePositionPatient);
    ``row_direction`` points along a displayed row (the column index increasing) and
    ``column_direction`` down a displayed column (the row index increasing), as DICOM
    ImageOrientationPatient; ``spacing`` is (between rows, between columns) as DICOM PixelSpacing.
    ``oriented`` is False where the file places the slices but does not say which way the
    patient lies (a NIfTI file with neither qform nor sform, or an identity affine): such a
    plane orders slices and measures extent, but no side is ever read from it.
    """

    position: Vector
    row_direction: Vector
    column_direction: Vector
    spacing: tuple[float, float]
    oriented: bool = True

    @classmethod
    def of(
        cls,
        position: np.ndarray | tuple[float, ...],
        row_direction: np.ndarray | tuple[float, ...],
        column_direction: np.ndarray | tuple[float, ...],
        spacing: tuple[float, float],
        oriented: bool = True,
    ) -> Plane:
        """A plane from any array-likes; directions are normalised. ValueError if degenerate:
        a position or spacing that is not finite, or beyond any patient (MAX_COORDINATE_MM)."""
        place = tuple(float(v) for v in np.asarray(position, dtype=float).ravel()[:3])
        if len(place) != 3 or not all(
            math.isfinite(v) and abs(v) <= MAX_COORDINATE_MM for v in place
        ):
            raise ValueError("a position needs three finite numbers within a patient's reach")
        steps = (float(spacing[0]), float(spacing[1]))
        if not all(math.isfinite(v) and 0 < v <= MAX_COORDINATE_MM for v in steps):
            raise ValueError("a pixel spacing must be positive and finite")
        return cls(
            place,  # type: ignore[arg-type]
            _unit(np.asarray(row_direction, dtype=float)),
            _unit(np.asarray(column_direction, dtype=float)),
            steps,
            oriented,
        )

    @property
    def normal(self) -> np.ndarray:
        """The unit normal (row direction x column direction), as DICOM defines a slice's."""
        normal = np.cross(self.row_direction, self.column_direction)
        return normal / np.linalg.norm(normal)

    def point(self, row: float, column: float) -> np.ndarray:
        """The patient coordinates (LPS, mm) of a displayed pixel position (row, column)."""
        return (
            np.asarray(self.position)
            + column * self.spacing[1] * np.asarray(self.row_direction)
            + row * self.spacing[0] * np.asarray(self.column_direction)
        )

    def in_plane(self, point: np.ndarray, origin: np.ndarray) -> tuple[float, float]:
        """A patient point's (down, across) offsets in mm from ``origin`` within this plane."""
        offset = np.asarray(point, dtype=float) - origin
        return float(offset @ self.column_direction), float(offset @ self.row_direction)

    def parallel_to(self, other: Plane, tolerance: float = 1e-3) -> bool:
        """Whether two planes have the same orientation (their direction cosines agree)."""
        return all(
            abs(a - b) <= tolerance
            for a, b in zip(
                (*self.row_direction, *self.column_direction),
                (*other.row_direction, *other.column_direction),
                strict=True,
            )
        )


@dataclass(frozen=True)
class SourceRef:
    """Exactly which pixels a slice shows.

    ``series_key`` groups slices into series: (StudyInstanceUID, SeriesInstanceUID) for DICOM,
    the file for NIfTI, the file and its place in the upload for PNG/JPEG/TIFF (one-image
    series). ``frame`` is the 1-based frame of a multi-frame DICOM file, ``index`` the slice's
    axial index of a NIfTI slice in the volume turned to RAS+ (``display_to_voxel`` maps every
    displayed pixel to its stored voxel). ``affine`` (NIfTI's best affine, voxel
    index to RAS+ mm) and ``display_to_voxel`` (display (column, row, 0, 1) to stored voxel
    index (i, j, k, 1)) are kept for NIfTI; ``plane`` holds the same geometry for every format.
    """

    format: str
    series_key: tuple[str, ...]
    plane: Plane | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_instance_uid: str | None = None
    sop_class_uid: str | None = None
    frame_of_reference_uid: str | None = None
    frame: int | None = None
    index: int | None = None
    series_number: int | None = None  # DICOM SeriesNumber: orders the series of a study
    instance_number: int | None = None  # DICOM InstanceNumber: orders slices without geometry
    affine: Matrix | None = None
    display_to_voxel: Matrix | None = None
    patient: Sealed | None = field(default=None, compare=False)  # DICOM: opened by outputs only

    def __repr__(self) -> str:  # UIDs identify a study: never in a log line or a traceback
        return f"SourceRef(format={self.format!r}, frame={self.frame}, index={self.index})"


_decodes = itertools.count(1)


def decode_token() -> str:
    """A token that tells one decode of a file from another (two files of one name in an
    upload are two series), in the series key of formats without series UIDs."""
    return f"decode {next(_decodes)}"


def as_matrix(array: np.ndarray) -> Matrix:
    return tuple(tuple(float(v) for v in row) for row in np.asarray(array, dtype=float))  # type: ignore[return-value]


# RAS+ (NIfTI world) to LPS (DICOM patient): x and y change sign.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def nifti_plane(
    canonical_affine: np.ndarray, shape: tuple[int, int, int], k: int, oriented: bool = True
) -> tuple[Plane, np.ndarray]:
    """The displayed plane of axial slice ``k`` of a RAS+ volume (see nifti.display_plane:
    display[r, c] = volume[nx - 1 - c, ny - 1 - r, k]), and the matrix from display
    (column, row, 0, 1) to the canonical voxel index (i, j, k, 1)."""
    nx, ny, _ = shape
    display_to_canonical = np.array(
        [
            [-1.0, 0.0, 0.0, nx - 1.0],
            [0.0, -1.0, 0.0, ny - 1.0],
            [0.0, 0.0, 0.0, float(k)],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    to_lps = RAS_TO_LPS @ canonical_affine @ display_to_canonical
    position = to_lps[:3, 3]
    across, down = to_lps[:3, 0], to_lps[:3, 1]  # per displayed column, per displayed row
    spacing = (float(np.linalg.norm(down)), float(np.linalg.norm(across)))
    return Plane.of(position, across, down, spacing, oriented), display_to_canonical
