"""Letterbox resizing and its inverse."""

import numpy as np
import pytest

from mriscribe.detection.letterbox import PAD_VALUE, letterbox


@pytest.mark.parametrize("shape", [(256, 256), (512, 512), (300, 200), (120, 400), (97, 131)])
def test_round_trip_of_boxes(shape):
    image = np.zeros((*shape, 3), dtype=np.uint8)
    padded, mapping = letterbox(image, (256, 256))
    assert padded.shape == (256, 256, 3)
    h, w = shape
    boxes = np.array([[0, 0, w, h], [w * 0.25, h * 0.5, w * 0.75, h * 0.9]])
    back = mapping.to_original(mapping.to_input(boxes))
    np.testing.assert_allclose(back, boxes, atol=1e-6)


def test_content_is_centred_and_padded_with_grey():
    image = np.full((100, 200, 3), 255, dtype=np.uint8)  # wide: pads top and bottom
    padded, mapping = letterbox(image, (256, 256))
    assert mapping.scale == pytest.approx(256 / 200)
    assert mapping.pad_x == 0
    assert mapping.pad_y == 64
    assert (padded[:64] == PAD_VALUE).all() and (padded[-64:] == PAD_VALUE).all()
    assert (padded[64:192] == 255).all()


def test_feature_lands_where_the_mapping_says():
    image = np.zeros((400, 300, 3), dtype=np.uint8)
    image[100:140, 200:260] = 255  # a bright block at x 200..260, y 100..140
    padded, mapping = letterbox(image, (256, 256))
    x1, y1, x2, y2 = mapping.to_input(np.array([[200, 100, 260, 140]]))[0]
    inside = padded[int(y1) + 2 : int(y2) - 2, int(x1) + 2 : int(x2) - 2]
    assert inside.min() > 200
    assert padded[int(y2) + 3 :, :].max() < 120


def test_boxes_are_clipped_to_the_original_image():
    _, mapping = letterbox(np.zeros((100, 200, 3), dtype=np.uint8), (256, 256))
    back = mapping.to_original(np.array([[-20.0, 0.0, 300.0, 256.0]]))
    np.testing.assert_allclose(back, [[0, 0, 200, 100]])
