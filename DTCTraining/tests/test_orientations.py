import numpy as np
import pytest

from dtc_training.orientations import COUNTS, average_over_orientations


def identity(array):
    return array.astype(np.float32), {"windows": 1}


@pytest.mark.parametrize("count", COUNTS)
def test_every_orientation_is_mapped_back(count):
    array = np.random.default_rng(0).random((7, 5, 3)).astype(np.float32)  # x != y: a missed swap fails
    seen = []
    prob, info = average_over_orientations(lambda a: (seen.append(a.shape), identity(a))[1], array, count)
    np.testing.assert_allclose(prob, array, rtol=1e-6)
    assert info == {"windows": 1, "orientations": count}
    assert len(seen) == count and seen.count((5, 7, 3)) == max(0, count - 4)  # the last 4 swap x and y


@pytest.mark.parametrize("count", COUNTS)
def test_channels_first_results_are_mapped_back_channel_by_channel(count):
    """The doubt channels (probability, doubt, level-set probability) come back as the probabilities do."""
    array = np.random.default_rng(1).random((7, 5, 3)).astype(np.float32)
    prob, _ = average_over_orientations(lambda a: (np.stack([a, 2 * a, -a]), {}), array, count)
    np.testing.assert_allclose(prob, np.stack([array, 2 * array, -array]), rtol=1e-6)


def test_a_predictor_blind_to_the_image_is_averaged_over_the_flips():
    ramp = np.broadcast_to(np.arange(6, dtype=np.float32)[:, None, None], (6, 4, 2))
    prob, _ = average_over_orientations(lambda a: (ramp.copy(), {}), np.zeros((6, 4, 2)), 2)  # identity, flip x
    np.testing.assert_allclose(prob, 2.5)  # (x + (5 - x)) / 2 everywhere


def test_other_counts_are_refused():
    with pytest.raises(ValueError, match="orientations 3"):
        average_over_orientations(identity, np.zeros((4, 4, 4)), 3)
