"""The one percentile window that DICOM without a VOI, 16/32-bit PNG and TIFF, and NIfTI share."""

import io
import warnings

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from conftest import encode
from mriscribe.imaging import decode_raster
from mriscribe.imaging.dicom import decode_dicom
from mriscribe.imaging.limits import Limits
from mriscribe.imaging.window import PERCENTILES, Window, percentile_window, sample_step


def test_the_window_is_the_half_percent_tails_of_the_sample():
    sample = np.arange(1000, dtype=np.float32)
    window = percentile_window(sample.copy())
    low, high = np.percentile(np.arange(1000), PERCENTILES)
    assert (window.low, window.high) == pytest.approx((low, high))


def test_a_few_hot_pixels_do_not_set_the_contrast():
    rng = np.random.default_rng(0)
    tissue = rng.normal(500, 50, 100_000).astype(np.float32)
    with_hot = np.concatenate([tissue, np.full(100, 60_000, dtype=np.float32)])
    window = percentile_window(with_hot)
    assert window.high < 1000
    assert window.grey(np.array([500.0], dtype=np.float32))[0] in range(100, 160)


def test_a_small_object_on_a_flat_background_still_shows():
    # 99.8% background: the percentiles meet, and the sample's whole range is the window.
    sample = np.zeros(10_000, dtype=np.float32)
    sample[:20] = 500
    window = percentile_window(sample)
    assert (window.low, window.high) == (0.0, 500.0)
    values = np.array([0, 250, 500], dtype=np.float32)
    np.testing.assert_array_equal(window.grey(values), [0, 128, 255])


def test_uniform_values_show_black():
    window = percentile_window(np.full(100, 7.0, dtype=np.float32))
    assert window == Window(7.0, 7.0)
    np.testing.assert_array_equal(window.grey(np.full((2, 3), 7.0, np.float32)), np.zeros((2, 3)))


def test_grey_rounds_to_the_nearest_level_and_clips():
    values = np.array([-50, 0.4, 0.6, 100.49, 100.51, 254.6, 400], dtype=np.float32)
    np.testing.assert_array_equal(Window(0, 255).grey(values), [0, 0, 1, 100, 101, 255, 255])


def test_values_that_are_not_numbers_neither_set_the_window_nor_warn():
    sample = np.array([np.nan, np.inf, -np.inf, *range(200)], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        window = percentile_window(sample.copy())
        grey = window.grey(sample)
    assert 0 < window.low < window.high < 200
    np.testing.assert_array_equal(grey[:3], [0, 255, 0])
    assert percentile_window(np.array([np.nan], dtype=np.float32)) == Window(0.0, 0.0)


@pytest.mark.parametrize("shape", [(7, 9), (64, 64), (512, 512), (1000, 3000), (2048, 2048)])
@pytest.mark.parametrize("samples", [1, 1000, 262_144])
def test_sample_step_leaves_at_least_the_samples_asked_for_and_not_many_more(shape, samples):
    step = sample_step(shape[0] * shape[1], samples)
    kept = np.zeros(shape)[::step, ::step].size
    assert kept >= min(samples, shape[0] * shape[1])
    assert step == 1 or kept <= 4 * samples + shape[0] + shape[1] + 1


def test_a_16_bit_png_and_a_dicom_without_a_window_look_the_same():
    # The same stored values through the two decoders: one window, one mapping to grey.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
        del ds.WindowCenter, ds.WindowWidth
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
    values = ds.pixel_array.astype(np.uint16)
    from_dicom = decode_dicom(buffer.getvalue(), "a.dcm", Limits())[0].pixels
    from_png = decode_raster(encode(values), "a.png").pixels
    np.testing.assert_array_equal(from_png, from_dicom)
    assert from_png.min() == 0 and from_png.max() == 255


def test_a_float_tiff_with_values_that_are_not_numbers_decodes_without_warnings():
    values = np.tile(np.linspace(0, 1000, 64, dtype=np.float32), (48, 1))
    values[0, :3] = (np.nan, np.inf, -np.inf)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="TIFF")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels = decode_raster(buffer.getvalue(), "f.tiff").pixels[:, :, 0]
    assert list(pixels[0, :3]) == [0, 255, 0]
    assert pixels[1:, 0].max() == 0 and pixels[1:, -1].min() == 255
    assert (np.diff(pixels[1:].astype(int), axis=1) >= 0).all()  # the ramp survives
