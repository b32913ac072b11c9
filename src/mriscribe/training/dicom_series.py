"""Test studies from 3-D volumes: DICOM series a user would upload, and synthetic 3-D lesions.

``volume_to_dicom`` turns a volume in NIfTI's RAS+ world into one MR Image Storage file per
slice, laid out and labelled as a scanner writes an axial, coronal or sagittal series (patient
left along a row, posterior or inferior down a column); ``shuffled_files`` gives them in the
random order and with the meaningless names of a PACS export or a user's folder; ``add_lesion``
paints a glioma, meningioma or pituitary mass into a T1-like head at a world position, in three
dimensions, looking like the lesions the shipped detector was trained on (lesions.py and
contrast.py draw them in 2-D).

Coordinates. NIfTI affines map voxel indices to RAS+ millimetres, named by where each axis
points: x to the patient's Right, y Anterior, z Superior. So the patient's LEFT hemisphere has
RAS x < 0 (MNI x = -30 is left of the midline). DICOM patient coordinates are LPS (x to the
patient's Left, y Posterior, z Superior): LPS = (-x, -y, z) of RAS, and the left hemisphere has
LPS x > 0.

Everything here is fictional test data: the default patient is an obvious invention, and the
lesions are drawings, not tumours.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from scipy import ndimage

from mriscribe.imaging.geometry import RAS_TO_LPS

# Stored pixel range when a volume's values are rescaled (12 bits, as most MR scanners store).
STORED_MAX = 4095

# The patient of every test study unless the caller names another: obviously invented.
FICTIONAL_PATIENT: dict[str, str] = {
    "PatientName": "FICTIONAL^TEST^PATIENT",
    "PatientID": "FICT-000001",
    "PatientBirthDate": "19700101",
    "PatientSex": "O",
    "AccessionNumber": "FICTACC0001",
    "InstitutionName": "Fictional Test Hospital",
    "ReferringPhysicianName": "FICTIONAL^REFERRER",
    "StudyDate": "20240101",
    "StudyTime": "120000",
    "StudyID": "1",
    "StudyDescription": "MRI BRAIN (synthetic test study)",
}

# Where a scanner puts an image's rows and columns, by the slice's main direction (LPS):
# (row direction, column direction) targets. Axial: left along a row, posterior down a column;
# coronal and sagittal: inferior down a column, with left resp. posterior along a row.
_TARGETS = {
    2: (np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])),  # normal along z: axial
    1: (np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, -1.0])),  # normal along y: coronal
    0: (np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])),  # normal along x: sagittal
}
_PLANE_NAMES = {2: "AX", 1: "COR", 0: "SAG"}


def _layout(affine: np.ndarray, axis: int) -> tuple[int, int, bool, bool]:
    """(row axis, column axis, flip rows, flip columns) of the stored slices.

    The row axis is the voxel axis that runs along a DICOM row (the column index c grows along
    it), the column axis the one down a column; each is flipped where its voxel order runs
    against the scanner convention of ``_TARGETS``.
    """
    lps = RAS_TO_LPS[:3, :3] @ affine[:3, :3]
    in_plane = [a for a in range(3) if a != axis]
    normal = lps[:, axis] / np.linalg.norm(lps[:, axis])
    row_target, column_target = _TARGETS[int(np.argmax(np.abs(normal)))]
    units = {a: lps[:, a] / np.linalg.norm(lps[:, a]) for a in in_plane}
    first, second = in_plane
    if abs(units[first] @ row_target) >= abs(units[second] @ row_target):
        row_axis, column_axis = first, second
    else:
        row_axis, column_axis = second, first
    if abs(units[row_axis] @ units[column_axis]) > 1e-3:
        raise ValueError("the affine's in-plane axes are not orthogonal (sheared volume)")
    flip_columns = bool(units[row_axis] @ row_target < 0)  # the row axis gives the columns
    flip_rows = bool(units[column_axis] @ column_target < 0)
    return row_axis, column_axis, flip_rows, flip_columns


def _stored_values(volume: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The volume as uint16 stored values, and (scale, offset): stored = value * scale + offset.

    Integer volumes within 0..65535 keep their values; anything else is rescaled linearly from
    its own range to 0..4095.
    """
    if volume.dtype.kind in "iu" and volume.size and volume.min() >= 0 and volume.max() <= 65535:
        return volume.astype(np.uint16), 1.0, 0.0
    values = np.asarray(volume, dtype=np.float64)
    finite = values[np.isfinite(values)]
    low = float(finite.min()) if finite.size else 0.0
    high = float(finite.max()) if finite.size else 0.0
    scale = STORED_MAX / (high - low) if high > low else 0.0
    stored = np.rint(np.clip(np.nan_to_num((values - low) * scale, nan=0.0), 0, STORED_MAX))
    return stored.astype(np.uint16), scale, -low * scale


def _robust_window(stored: np.ndarray) -> tuple[float, float]:
    """A whole-series (low, high) window in stored units, as a scanner's auto-window picks one:
    the 0.5th to 99.5th percentile of the voxels above 10 % of the robust range (foreground)."""
    sample = stored[:: max(1, stored.shape[0] // 64)].ravel().astype(np.float64)
    low, high = np.percentile(sample, (1, 99))
    foreground = sample[sample > low + 0.1 * (high - low)]
    if foreground.size < 16:
        foreground = sample
    lo, hi = np.percentile(foreground, (0.5, 99.5))
    if hi <= lo:
        lo, hi = float(sample.min()), float(sample.max())
    return float(lo), float(max(hi, lo + 1.0))


def _uid(*parts: object) -> str:
    """A UID made from ``parts``: the same parts always give the same UID."""
    return generate_uid(entropy_srcs=["mriscribe-test-study", *(str(p) for p in parts)])


def volume_to_dicom(
    volume: np.ndarray,
    affine: np.ndarray,
    *,
    axis: int = 2,
    study_uid: str | None = None,
    series_uid: str | None = None,
    series_number: int = 1,
    patient: Mapping[str, str] | None = None,
    slices: Sequence[int] | None = None,
    seed: int = 0,
    window: tuple[float, float] | None = None,
    series_description: str | None = None,
) -> list[bytes]:
    """One MR Image Storage Part-10 file (explicit VR little endian) per slice along ``axis``.

    ``volume`` is a 3-D array in the voxel space of ``affine`` (voxel index to RAS+ mm, as
    NIfTI); ``axis`` is the voxel axis the slices cut across; ``slices`` the indices along it to
    write (default: all), in that order. Each file's pixels are laid out as a scanner lays out
    that plane (see ``_TARGETS``): pixel (row r, column c) lies at ImagePositionPatient +
    c * PixelSpacing[1] * row direction + r * PixelSpacing[0] * column direction, all in DICOM
    LPS, with PixelSpacing = (between rows, between columns). So the same head stored RAS or LPS
    gives the same files. InstanceNumber counts slices along the slice normal (row x column
    direction) through the whole volume, so a subset keeps its place in the series.

    Pixels are 16-bit unsigned MONOCHROME2: an integer volume within 0..65535 keeps its values,
    any other is rescaled from its range to 0..4095. Every file carries one window for the whole
    series (WindowCenter/Width, as scanners write): ``window`` in the volume's own units, else
    the foreground's 0.5th-99.5th percentile. The UIDs come from ``seed`` (and the series number)
    unless given, so the same call writes the same bytes; the FrameOfReferenceUID comes from the
    study UID, so two series of one volume in one study share it. ``patient`` holds DICOM
    keywords and values that replace those of ``FICTIONAL_PATIENT``.

    Raises ValueError for a volume that is not 3-D, an axis out of range, a slice index out of
    range, a sheared in-plane geometry or an unknown patient keyword.
    """
    volume = np.asarray(volume)
    affine = np.asarray(affine, dtype=np.float64)
    if volume.ndim != 3:
        raise ValueError(f"a 3-D volume is needed, not {volume.ndim}-D")
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ValueError("the affine must be a finite 4 x 4 matrix")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, not {axis}")
    details = dict(FICTIONAL_PATIENT)
    for keyword, value in (patient or {}).items():
        if tag_for_keyword(keyword) is None:
            raise ValueError(f"unknown DICOM keyword {keyword!r} in patient details")
        details[keyword] = str(value)
    count = volume.shape[axis]
    indices = list(range(count)) if slices is None else [int(k) for k in slices]
    if any(not 0 <= k < count for k in indices):
        raise ValueError(f"slice indices must lie in 0..{count - 1}")

    row_axis, column_axis, flip_rows, flip_columns = _layout(affine, axis)
    lps = RAS_TO_LPS[:3, :3] @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    row_direction = lps[:, row_axis] / spacing[row_axis] * (-1 if flip_columns else 1)
    column_direction = lps[:, column_axis] / spacing[column_axis] * (-1 if flip_rows else 1)
    normal = np.cross(row_direction, column_direction)
    ascending = bool(lps[:, axis] @ normal > 0)  # voxel order along the axis runs with normal
    orientation = [*row_direction, *column_direction]
    pixel_spacing = [float(spacing[column_axis]), float(spacing[row_axis])]
    thickness = float(abs(lps[:, axis] @ normal))

    stored, scale, offset = _stored_values(volume)
    if window is None:
        low, high = _robust_window(stored)
    else:
        low, high = (float(v) * scale + offset for v in window)
        if high <= low:
            raise ValueError("a window needs low < high")
    bits = 12 if int(stored.max(initial=0)) <= STORED_MAX else 16

    study_uid = study_uid or _uid("study", seed)
    series_uid = series_uid or _uid("series", study_uid, series_number, seed)
    frame_of_reference = _uid("frame-of-reference", study_uid)
    description = series_description or f"T1 {_PLANE_NAMES[_dominant(normal)]} (synthetic)"

    files = []
    for k in indices:
        plane = np.moveaxis(stored, axis, 0)[k]  # axes: the two in-plane axes, in order
        in_plane = [a for a in range(3) if a != axis]
        pixels = plane if in_plane.index(column_axis) == 0 else plane.T
        if flip_rows:
            pixels = pixels[::-1, :]
        if flip_columns:
            pixels = pixels[:, ::-1]
        corner = np.zeros(3)
        corner[axis] = k
        corner[row_axis] = volume.shape[row_axis] - 1 if flip_columns else 0
        corner[column_axis] = volume.shape[column_axis] - 1 if flip_rows else 0
        position = RAS_TO_LPS[:3, :3] @ (affine[:3, :3] @ corner + affine[:3, 3])
        instance = k + 1 if ascending else count - k
        sop_uid = _uid("instance", series_uid, instance)
        ds = _dataset(details, description)
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_of_reference
        ds.SeriesNumber = series_number
        ds.InstanceNumber = instance
        ds.AcquisitionNumber = 1
        ds.ImagePositionPatient = [_ds_number(v) for v in position]
        ds.ImageOrientationPatient = [_ds_number(v) for v in orientation]
        ds.PixelSpacing = [_ds_number(v) for v in pixel_spacing]
        ds.SliceThickness = _ds_number(thickness)
        ds.SpacingBetweenSlices = _ds_number(thickness)
        ds.SliceLocation = _ds_number(float(position @ normal))
        ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = bits
        ds.HighBit = bits - 1
        ds.PixelRepresentation = 0
        ds.WindowCenter = _ds_number((low + high) / 2 + 0.5)
        ds.WindowWidth = _ds_number(high - low + 1)
        ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.file_meta = meta
        buffer = io.BytesIO()
        dcmwrite(buffer, ds, enforce_file_format=True)
        files.append(buffer.getvalue())
    return files


def _dominant(normal: np.ndarray) -> int:
    return int(np.argmax(np.abs(normal)))


def _ds_number(value: float) -> str:
    """A decimal string of at most 16 characters (DICOM DS), exact to about a micrometre."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    return text[:16]


def _dataset(details: Mapping[str, str], description: str) -> Dataset:
    """A dataset holding the patient, study, equipment and acquisition details of a series."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.Modality = "MR"
    ds.Manufacturer = "mriscribe synthetic series"
    ds.SeriesDescription = description
    ds.BodyPartExamined = "HEAD"
    ds.PatientPosition = "HFS"
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = "SP"
    ds.MRAcquisitionType = "3D"
    ds.PositionReferenceIndicator = ""
    for keyword, value in details.items():
        vr = dictionary_VR(keyword)
        setattr(ds, keyword, int(value) if vr in ("IS", "US", "SS", "UL", "SL") else value)
    ds.setdefault("SeriesDate", details.get("StudyDate", ""))
    ds.setdefault("ContentDate", details.get("StudyDate", ""))
    return ds


def shuffled_files(files: list[bytes], seed: int) -> list[tuple[str, bytes]]:
    """``files`` in a random order with random, meaningless names, as an export gives them.

    Names are 8 to 16 lowercase hex digits, some with ".dcm" and some with no extension; they
    say nothing of the file's place in the series. The same seed gives the same order and names.
    """
    rng = np.random.default_rng([seed, 0x5EED])
    order = rng.permutation(len(files))
    names: set[str] = set()
    result = []
    for index in order:
        while True:
            digits = int(rng.integers(8, 17))
            name = "".join(f"{v:x}" for v in rng.integers(0, 16, digits))
            if rng.random() < 0.5:
                name += ".dcm"
            if name not in names:
                break
        names.add(name)
        result.append((name, files[int(index)]))
    return result


LESION_KINDS = ("glioma", "meningioma", "pituitary")

# Lesion intensities as multiples of the head's white matter on a T1 image, from the
# contrast-enhanced T1 look the detector was trained on (contrast.py: white matter 0.66,
# enhancing rim 0.95, necrosis 0.13, oedema 0.36, meningioma 0.9, pituitary 0.78).
APPEARANCE = {
    "glioma": {"enhancing": 1.45, "necrosis": 0.22, "oedema": 0.6},
    "meningioma": {"solid": 1.4, "cleft": 0.2},
    "pituitary": {"solid": 1.2},
}


def _white_matter(volume: np.ndarray, region: np.ndarray) -> float:
    """The white-matter intensity of a T1 head near a lesion: the brightest tissue peak.

    Tissue is what lies above the volume's Otsu threshold (background and skull below); in the
    ``region`` around the lesion, the upper of its histogram's peaks is white matter on T1 and
    on contrast-enhanced T1 (fat and enhancement are bright but few).
    """
    sample = volume[tuple(slice(None, None, max(1, n // 64)) for n in volume.shape)]
    sample = np.asarray(sample, dtype=np.float64).ravel()
    top = float(np.percentile(sample, 99.5))
    hist, edges = np.histogram(sample, bins=128, range=(float(sample.min()), top))
    centres = (edges[:-1] + edges[1:]) / 2
    weights = hist.cumsum()
    means = (hist * centres).cumsum()
    total, grand = weights[-1], means[-1]
    between = (grand * weights - total * means) ** 2 / np.maximum(weights * (total - weights), 1)
    threshold = float(centres[int(np.argmax(between))])
    tissue = np.asarray(region, dtype=np.float64)
    tissue = tissue[(tissue > threshold) & (tissue <= top)]
    if tissue.size < 100:
        return float(np.percentile(sample[sample > threshold], 75))
    hist, edges = np.histogram(tissue, bins=48)
    smooth = ndimage.gaussian_filter1d(hist.astype(np.float64), 1.5)
    peaks = [
        i
        for i in range(1, len(smooth) - 1)
        if smooth[i] >= smooth[i - 1]
        and smooth[i] >= smooth[i + 1]
        and smooth[i] >= 0.35 * smooth.max()
    ]
    peak = peaks[-1] if peaks else int(np.argmax(smooth))
    return float((edges[peak] + edges[peak + 1]) / 2)


def _noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: np.ndarray) -> np.ndarray:
    """Smooth random texture with zero mean and unit spread (sigma per axis, in voxels)."""
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox)
    return field_ / (field_.std() + 1e-6)


def _soft(distance: np.ndarray, edge: float, width: float) -> np.ndarray:
    """1 inside ``edge``, 0 outside, with a smooth border of relative ``width``."""
    return np.clip((edge - distance) / width + 0.5, 0.0, 1.0).astype(np.float32)


def add_lesion(
    volume: np.ndarray,
    affine: np.ndarray,
    centre_ras_mm: tuple[float, float, float],
    radii_mm: tuple[float, float, float],
    kind: str = "glioma",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A copy of a T1-like head ``volume`` with a synthetic 3-D lesion, and the lesion's mask.

    ``centre_ras_mm`` is the lesion's centre in the RAS+ world of ``affine`` (x < 0 is the
    patient's left); ``radii_mm`` its semi-axes along RAS x, y and z. The outline is irregular
    (a smooth random bump over the directions) and the surrounding tissue is pushed away, as a
    growing mass does. Kinds, as the training lesions of lesions.py in 3-D:

    - ``"glioma"``: a thick enhancing rim around a dark necrotic core, with oedema (darker than
      white matter) reaching out along tissue, not into CSF or fat;
    - ``"meningioma"``: a homogeneous bright mass with a thin dark CSF cleft; place it against
      the inner skull (dural based);
    - ``"pituitary"``: a homogeneous, moderately bright mass; place it at the sella.

    Intensities are ``APPEARANCE`` multiples of the white matter next to the lesion (see
    ``_white_matter``), so T1 and contrast-enhanced T1 of any scale work. The mask (boolean, the
    volume's shape) is the tumour itself, without oedema or cleft. The result keeps an integer
    volume's dtype (rounded, clipped to its range), else it is float32. Deterministic from
    ``seed``; only a box around the lesion is computed, so a head takes well under a second.
    """
    if kind not in APPEARANCE:
        raise ValueError(f"kind must be one of {', '.join(LESION_KINDS)}, not {kind!r}")
    volume = np.asarray(volume)
    affine = np.asarray(affine, dtype=np.float64)
    if volume.ndim != 3:
        raise ValueError(f"a 3-D volume is needed, not {volume.ndim}-D")
    radii = np.asarray(radii_mm, dtype=np.float64)
    if radii.shape != (3,) or not np.all(radii > 0):
        raise ValueError("radii_mm must be three positive numbers")
    rng = np.random.default_rng([seed, LESION_KINDS.index(kind)])
    linear, inverse = affine[:3, :3], np.linalg.inv(affine[:3, :3])
    zooms = np.linalg.norm(linear, axis=0)
    centre_vox = inverse @ (np.asarray(centre_ras_mm, dtype=np.float64) - affine[:3, 3])

    # The box around the lesion that the mass effect reaches (2.2 times the largest radius).
    reach = 2.2 * float(radii.max())
    extent = np.abs(inverse) @ np.full(3, reach)
    low = np.clip(np.floor(centre_vox - extent), 0, np.array(volume.shape)).astype(int)
    high = np.clip(np.ceil(centre_vox + extent) + 1, 0, np.array(volume.shape)).astype(int)
    if np.any(high <= low):
        raise ValueError("the lesion lies outside the volume")
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
    region = volume[box].astype(np.float32)
    shape = region.shape
    index = np.indices(shape, dtype=np.float32).reshape(3, -1) + low[:, None]
    offset = (linear @ (index - centre_vox[:, None])).astype(np.float32)  # RAS mm from centre

    # Mass effect: each voxel takes the tissue from nearer the centre.
    distance_mm = np.linalg.norm(offset, axis=0)
    radius = float(np.cbrt(radii.prod()))
    strength = rng.uniform(0.15, 0.3)
    # A Gaussian push, tapered to nothing at ``reach`` so that the box's edge shows no seam.
    push = np.exp(-((distance_mm / (1.6 * radius)) ** 2)) - np.exp(-((reach / (1.6 * radius)) ** 2))
    factor = 1.0 - strength * np.clip(push, 0.0, None)
    source = centre_vox[:, None] + inverse @ (offset * factor) - low[:, None]
    region = ndimage.map_coordinates(region, source, order=1, mode="nearest").reshape(shape)

    # Distance in units of the lesion's outline: 1.0 on its border.
    scaled = offset / radii[:, None].astype(np.float32)
    rho = np.linalg.norm(scaled, axis=0)
    direction = scaled / np.maximum(rho, 1e-6)
    bumps = ndimage.gaussian_filter(rng.standard_normal((9, 9, 9)), 1.2)
    bumps /= np.abs(bumps).max() + 1e-9
    irregularity = rng.uniform(0.12, 0.25) if kind == "glioma" else rng.uniform(0.03, 0.08)
    outline = 1.0 + irregularity * ndimage.map_coordinates(
        bumps, (direction + 1.0) * 4.0, order=1, mode="nearest"
    )
    fine = _noise(rng, shape, 1.5 / zooms).reshape(-1)
    dist = (rho / outline + 0.03 * fine).reshape(shape)
    texture = _noise(rng, shape, 1.2 / zooms)

    white = _white_matter(volume, region)
    values = {name: ratio * white for name, ratio in APPEARANCE[kind].items()}
    tumour = _soft(dist, 1.0, 0.08)
    layers: list[tuple[np.ndarray, float]] = []
    if kind == "glioma":
        core = _soft(dist, rng.uniform(0.5, 0.65), 0.1)
        oedema_dist = dist + 0.2 * _noise(rng, shape, 4.0 / zooms)
        oedema = _soft(oedema_dist, rng.uniform(1.3, 1.45), 0.2)
        # Oedema follows tissue (white matter most), not CSF, bone or fat.
        tissue = np.clip((region - 0.55 * white) / (0.3 * white), 0, 1)
        tissue *= np.clip((1.3 * white - region) / (0.15 * white), 0, 1)
        layers += [
            (np.clip(oedema - tumour, 0, 1) * tissue, values["oedema"]),
            (np.clip(tumour - core, 0, 1), values["enhancing"]),
            (core, values["necrosis"]),
        ]
    else:
        if "cleft" in values:
            cleft = np.clip(_soft(dist, 1.12, 0.08) - tumour, 0, 1) * 0.6
            layers.append((cleft, values["cleft"]))
        layers.append((tumour, values["solid"]))
    for weight, value in layers:
        painted = value * (1.0 + 0.07 * texture)
        region = region * (1.0 - weight) + painted * weight

    if volume.dtype.kind in "iu":
        result = volume.copy()
        info = np.iinfo(volume.dtype)
        result[box] = np.clip(np.rint(region), info.min, info.max).astype(volume.dtype)
    else:
        result = volume.astype(np.float32)  # always a copy
        result[box] = region
    mask = np.zeros(volume.shape, dtype=bool)
    mask[box] = dist < 1.0
    return result, mask
