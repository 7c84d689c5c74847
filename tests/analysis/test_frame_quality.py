"""Per-frame quality: known frames, known verdicts."""

import numpy as np
import pytest

from nanostrain.analysis.frame_quality import BAD, MAX_MASKED_FRACTION, NO_SIGNAL, OK, FrameQuality, assess_frame

SHAPE = (8, 10)


def counts(value=100):
    return np.full(SHAPE, value, dtype=np.uint32) + np.arange(10, dtype=np.uint32)


def test_a_good_frame_is_ok_with_nothing_masked():
    quality, mask = assess_frame(counts(), SHAPE)
    assert quality == FrameQuality(OK) and quality.usable and not mask.any()


def test_a_wrong_shape_is_bad_and_says_both_shapes():
    quality, mask = assess_frame(np.ones((8, 9)), SHAPE)
    assert quality.status == BAD and mask is None and not quality.usable
    assert quality.reason == "wrong shape (8, 9), the detector is (8, 10)"


def test_a_few_non_finite_saturated_and_dead_pixels_are_masked():
    frame = counts().astype(np.float64)
    frame[0, 0], frame[0, 1] = np.nan, np.inf
    frame[1, 1] = 5000.0
    dead = np.zeros(SHAPE, dtype=bool)
    dead[2, 2] = True
    quality, mask = assess_frame(frame, SHAPE, dead_mask=dead, saturation=4000.0)
    assert quality == FrameQuality(OK, n_nonfinite=2, n_saturated=1, n_dead=1)
    assert mask.sum() == 4 and mask[0, 0] and mask[0, 1] and mask[1, 1] and mask[2, 2]


def test_an_integer_frame_saturates_at_the_top_of_its_counter():
    frame = counts().astype(np.uint16)
    frame[3, 3] = np.iinfo(np.uint16).max
    quality, mask = assess_frame(frame, SHAPE)
    assert quality.n_saturated == 1 and mask[3, 3]


def test_a_mostly_non_finite_frame_is_bad_with_the_counts():
    frame = np.full(SHAPE, np.nan)
    quality, mask = assess_frame(frame, SHAPE)
    assert quality.status == BAD and mask is None and quality.n_nonfinite == 80
    assert quality.reason.startswith("100.0% of the pixels masked (80 non-finite, 0 saturated, 0 dead)")
    assert MAX_MASKED_FRACTION == 0.1


@pytest.mark.parametrize("frame", [np.zeros(SHAPE, dtype=np.uint32), np.full(SHAPE, 7.0), np.full(SHAPE, -3.0)])
def test_a_frame_without_signal_says_so(frame):
    quality, mask = assess_frame(frame, SHAPE)
    assert quality.status == NO_SIGNAL and quality.usable and not mask.any()
    assert quality.reason.startswith("no signal: the 80 unmasked pixels read")


def test_the_record_is_a_row_of_plain_values():
    record = FrameQuality(BAD, "why", n_nonfinite=3).record()
    assert record == {"quality_status": "bad", "quality_reason": "why", "n_nonfinite": 3, "n_saturated": 0, "n_dead": 0}
