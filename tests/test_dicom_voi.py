"""DICOM grey levels through pydicom's own VOI LUT: the window functions (LINEAR, LINEAR_EXACT,
SIGMOID), VOI LUT Sequence tables, per-frame VOIs, and what happens to a VOI that is unusable."""


import numpy as np
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian

from dicom_files import dataset, to_bytes
from mriscribe.imaging import dicom
from mriscribe.imaging.dicom import decode_dicom
from mriscribe.imaging.limits import Limits

CENTRE, WIDTH = 900, 700


def greys(ds: Dataset) -> list[np.ndarray]:
    slices = decode_dicom(to_bytes(ds), "scan.dcm", Limits())
    for decoded in slices:
        assert (decoded.pixels[:, :, 0] == decoded.pixels[:, :, 2]).all()
    return [decoded.pixels[:, :, 0] for decoded in slices]


def grey(ds: Dataset) -> np.ndarray:
    (only,) = greys(ds)
    return only


def stored(name: str = "MR_small.dcm") -> np.ndarray:
    return dataset(name).pixel_array.astype(np.float64)


def windowed(function: str | None) -> Dataset:
    ds = dataset()
    ds.WindowCenter, ds.WindowWidth = CENTRE, WIDTH
    if function is not None:
        ds.VOILUTFunction = function
    return ds


def without_voi(ds: Dataset) -> Dataset:
    for keyword in ("WindowCenter", "WindowWidth", "VOILUTFunction", "VOILUTSequence"):
        if keyword in ds:
            delattr(ds, keyword)
    return ds


def table_item(entries: np.ndarray, first: int, bits: int, vr: str = "US") -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [len(entries) % 65536, first, bits]
    if vr == "US":
        item.add(DataElement(0x00283006, "US", [int(v) for v in entries]))
    else:
        item.add(DataElement(0x00283006, "OW", entries.astype("<u2").tobytes()))
    return item


def looked_up(values: np.ndarray, entries: np.ndarray, first: int, white: int) -> np.ndarray:
    index = np.clip(values - first, 0, len(entries) - 1).astype(int)
    return np.rint(entries[index].astype(np.float64) * 255 / white)


# ---- the window functions ----


def test_linear_exact_maps_the_whole_width_from_black_to_white():
    values = stored()
    expected = np.rint(np.clip(((values - CENTRE) / WIDTH + 0.5) * 255, 0, 255))
    np.testing.assert_array_equal(grey(windowed("LINEAR_EXACT")), expected)


def test_sigmoid_follows_its_curve():
    values = stored()
    expected = np.rint(255 / (1 + np.exp(-4 * (values - CENTRE) / WIDTH)))
    np.testing.assert_array_equal(grey(windowed("SIGMOID")), expected)


def test_each_function_gives_its_own_picture_and_an_unknown_one_is_linear():
    linear = grey(windowed(None))
    low = CENTRE - 0.5 - (WIDTH - 1) / 2
    expected = np.rint(np.clip((stored() - low) * 255 / (WIDTH - 1), 0, 255))
    np.testing.assert_array_equal(linear, expected)
    assert not np.array_equal(grey(windowed("SIGMOID")), linear)
    assert not np.array_equal(grey(windowed("LINEAR_EXACT")), linear)
    np.testing.assert_array_equal(grey(windowed("LINEAR")), linear)
    np.testing.assert_array_equal(grey(windowed("LOGARITHMIC")), linear)


def test_the_width_each_function_allows():
    # LINEAR needs a width of at least 1; LINEAR_EXACT and SIGMOID any above 0.
    percentile = grey(without_voi(dataset()))
    narrow = windowed("LINEAR")
    narrow.WindowWidth = 0.5
    np.testing.assert_array_equal(grey(narrow), percentile)
    exact = windowed("LINEAR_EXACT")
    exact.WindowWidth = 0.5
    assert set(np.unique(grey(exact))) <= {0, 255}  # a threshold at the centre
    assert not np.array_equal(grey(exact), percentile)
    sigmoid = windowed("SIGMOID")
    sigmoid.WindowWidth = 0
    np.testing.assert_array_equal(grey(sigmoid), percentile)


def test_the_first_of_several_windows_is_used():
    ds = windowed(None)
    ds.WindowCenter, ds.WindowWidth = [CENTRE, 40], [WIDTH, 80]
    np.testing.assert_array_equal(grey(ds), grey(windowed(None)))


def test_monochrome1_is_inverted_after_the_window():
    ds = windowed("SIGMOID")
    normal = grey(ds)
    ds.PhotometricInterpretation = "MONOCHROME1"
    np.testing.assert_array_equal(grey(ds), 255 - normal)


# ---- VOI LUT Sequence tables ----


@pytest.mark.parametrize(
    ("vr", "syntax"), [("US", None), ("OW", None), ("OW", ImplicitVRLittleEndian)]
)
def test_a_voi_lut_table_maps_the_modality_values(vr, syntax):
    ds = without_voi(dataset())
    if syntax is not None:
        ds.file_meta.TransferSyntaxUID = syntax
    entries = np.rint(4095 * np.linspace(0, 1, 1500) ** 2).astype(np.uint16)  # not a window
    ds.VOILUTSequence = Sequence([table_item(entries, 300, 12, vr)])
    np.testing.assert_array_equal(grey(ds), looked_up(stored(), entries, 300, 4095))


def test_a_table_is_preferred_to_a_window():
    ds = windowed("SIGMOID")
    entries = np.arange(4096, dtype=np.uint16)[::-1].copy()  # an inverting table
    ds.VOILUTSequence = Sequence([table_item(entries, 0, 12)])
    np.testing.assert_array_equal(grey(ds), looked_up(stored(), entries, 0, 4095))


def test_an_8_bit_table_with_more_than_256_entries_is_looked_up_in_full():
    # pydicom 3.0 alone wraps its indices past 256 for an 8-bit table.
    ds = without_voi(dataset())
    entries = np.rint(np.linspace(0, 255, 2000)).astype(np.uint16)
    ds.VOILUTSequence = Sequence([table_item(entries, 100, 8)])
    values = stored()
    assert (values - 100 > 255).mean() > 0.25
    np.testing.assert_array_equal(grey(ds), looked_up(values, entries, 100, 255))


def test_a_table_declared_16_bits_whose_entries_need_12_spans_black_to_white():
    ds = without_voi(dataset())
    entries = np.rint(np.linspace(0, 4095, 1500)).astype(np.uint16)
    ds.VOILUTSequence = Sequence([table_item(entries, 127, 16)])  # 127: the lowest value
    picture = grey(ds)
    np.testing.assert_array_equal(picture, looked_up(stored(), entries, 127, 4095))
    assert picture.min() == 0 and picture.max() == 255
    # A table that uses its declared bits is scaled by them, even short of its top.
    wide = np.rint(np.linspace(0, 40_000, 1500)).astype(np.uint16)
    ds.VOILUTSequence = Sequence([table_item(wide, 0, 16)])
    np.testing.assert_array_equal(grey(ds), looked_up(stored(), wide, 0, 65535))
    assert grey(ds).max() == 156


def test_values_outside_a_table_take_its_first_and_last_entries():
    ds = without_voi(dataset())
    entries = np.array([0, 1000, 2000, 4095], dtype=np.uint16)
    ds.VOILUTSequence = Sequence([table_item(entries, 1000, 12)])
    picture = grey(ds)
    values = stored()
    assert (picture[values < 1000] == 0).all() and (picture[values > 1003] == 255).all()


def test_a_broken_table_falls_back_to_the_window_and_then_to_percentiles():
    ds = windowed("SIGMOID")
    item = table_item(np.arange(100, dtype=np.uint16), 0, 12)
    item.LUTDescriptor = [4096, 0, 12]  # declares more entries than it holds
    ds.VOILUTSequence = Sequence([item])
    np.testing.assert_array_equal(grey(ds), grey(windowed("SIGMOID")))
    item.LUTDescriptor = [100, 0, 9]  # a depth the standard does not allow
    np.testing.assert_array_equal(grey(ds), grey(windowed("SIGMOID")))
    without_window = without_voi(dataset())
    without_window.VOILUTSequence = Sequence([item])
    np.testing.assert_array_equal(grey(without_window), grey(without_voi(dataset())))


# ---- per-frame VOIs ----


def _frame_voi(**values: object) -> Dataset:
    item, group = Dataset(), Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    group.FrameVOILUTSequence = Sequence([item])
    return group


def test_per_frame_and_shared_vois_of_an_enhanced_stack():
    ds = dataset("emri_small.dcm")
    values = stored("emri_small.dcm")
    ds.SharedFunctionalGroupsSequence = Sequence(
        [_frame_voi(WindowCenter=200, WindowWidth=300, VOILUTFunction="LINEAR_EXACT")]
    )
    per_frame = [Dataset() for _ in range(10)]
    per_frame[3] = _frame_voi(WindowCenter=100, WindowWidth=80, VOILUTFunction="SIGMOID")
    entries = np.arange(512, dtype=np.uint16)[::-1].copy()
    per_frame[5] = _frame_voi(VOILUTSequence=Sequence([table_item(entries, 0, 10)]))
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    pictures = greys(ds)
    shared = np.rint(np.clip(((values - 200) / 300 + 0.5) * 255, 0, 255))
    for index in (0, 1, 9):
        np.testing.assert_array_equal(pictures[index], shared[index])
    sigmoid = np.rint(255 / (1 + np.exp(-4 * (values[3] - 100) / 80)))
    np.testing.assert_array_equal(pictures[3], sigmoid)
    np.testing.assert_array_equal(pictures[5], looked_up(values[5], entries, 0, 1023))


def test_frames_without_a_voi_share_one_percentile_window():
    ds = dataset("emri_small.dcm")
    per_frame = [Dataset() for _ in range(10)]
    per_frame[0] = _frame_voi(WindowCenter=100, WindowWidth=80)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    values = stored("emri_small.dcm")
    low, high = np.percentile(values, (0.5, 99.5))
    expected = np.rint(np.clip((values - low) * 255 / (high - low), 0, 255))
    pictures = greys(ds)
    for index in range(1, 10):
        assert np.abs(pictures[index].astype(int) - expected[index]).max() <= 1


# ---- large frames are windowed a block of rows at a time ----


@pytest.mark.parametrize("voi", ["SIGMOID", "table"])
def test_blocks_of_rows_give_the_same_picture(monkeypatch, voi):
    ds = windowed("SIGMOID")
    if voi == "table":
        entries = np.rint(np.linspace(0, 4095, 3000) ** 1.1 % 4096).astype(np.uint16)
        ds.VOILUTSequence = Sequence([table_item(entries, 50, 12)])
    whole = grey(ds)
    monkeypatch.setattr(dicom, "_VOI_BLOCK_PIXELS", 100)  # one row (64 pixels) at a time
    np.testing.assert_array_equal(grey(ds), whole)
