"""The Mahalanobis out-of-distribution detector (melanoma.ood) on known Gaussians."""

import numpy as np
import pytest

from melanoma.ood import MahalanobisDetector, fit_mahalanobis


@pytest.fixture
def fitted():
    rng = np.random.default_rng(0)
    scale = np.linspace(0.5, 3.0, 32)  # unequal variances: the precision must use them
    classes = np.repeat([0, 1], 1000)
    means = np.stack([np.zeros(32), np.full(32, 4.0)])
    features = means[classes] + rng.normal(size=(2000, 32)) * scale
    validation = means[np.repeat([0, 1], 500)] + rng.normal(size=(1000, 32)) * scale
    detector = fit_mahalanobis(features, classes)
    return detector.with_threshold(detector.distances(validation), 0.95), scale, rng


def test_the_threshold_passes_the_share_of_validation_it_was_set_for(fitted):
    detector, scale, rng = fitted
    fresh = rng.normal(size=(4000, 32)) * scale  # class 0, unseen
    passed = detector.in_distribution(detector.distances(fresh)).mean()
    assert 0.92 < passed < 0.98


def test_points_far_from_every_class_are_flagged_and_between_them_too(fitted):
    detector, scale, rng = fitted
    far = rng.normal(size=(200, 32)) * scale + 25.0
    between = rng.normal(size=(200, 32)) * scale * 0.2 + 2.0  # no class lives here, tightly
    assert not detector.in_distribution(detector.distances(far)).any()
    # Along a low-variance direction a small step is far: the distance is not Euclidean.
    step = np.zeros((1, 32))
    step[0, 0] = 6 * scale[0]
    wide = np.zeros((1, 32))
    wide[0, -1] = 6 * scale[0]
    assert detector.distances(step)[0] > detector.distances(wide)[0]
    assert detector.distances(between).mean() > np.median(detector.distances(np.zeros((1, 32))))


def test_the_detector_round_trips_through_its_bytes(fitted):
    detector, _, rng = fitted
    again = MahalanobisDetector.from_bytes(detector.to_bytes())
    points = rng.normal(size=(10, 32))
    np.testing.assert_allclose(again.distances(points), detector.distances(points))
    assert again.threshold == detector.threshold


def test_fitting_with_more_dimensions_than_images_stays_finite():
    rng = np.random.default_rng(1)
    detector = fit_mahalanobis(rng.normal(size=(50, 300)), np.repeat([0, 1], 25))
    assert np.isfinite(detector.distances(rng.normal(size=(5, 300)))).all()
