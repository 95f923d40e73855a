"""Is an image the model's kind of image? A Mahalanobis out-of-distribution score.

Lee, Lee, Lee and Shin, "A Simple Unified Framework for Detecting Out-of-Distribution
Samples and Adversarial Attacks", NeurIPS 2018: fit one Gaussian per class to the
training images' penultimate features, with a covariance shared by the classes; an
image's score is its Mahalanobis distance to the nearest class mean. A photograph of
anything else lands far from every diagnosis. The threshold is set on validation so
that a share (95% by default) of validation images pass.

Pure numpy and scikit-learn: fitting and scoring features. Computing the features is
the model's (``training.train`` fits, ``training.scoring`` scores). Research use only,
not a diagnostic device.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from sklearn.covariance import LedoitWolf

# The share of validation images the threshold lets through.
VALIDATION_PASS_SHARE = 0.95


@dataclass(frozen=True)
class MahalanobisDetector:
    """Class means (classes, d), the shared precision (d, d), and the distance above which
    an image is out of distribution."""

    means: np.ndarray
    precision: np.ndarray
    threshold: float = float("inf")

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Each row's Mahalanobis distance to the nearest class mean."""
        x = np.asarray(features, np.float64)
        squared = []
        for mean in self.means:
            centred = x - mean
            squared.append(np.einsum("ij,jk,ik->i", centred, self.precision, centred))
        return np.sqrt(np.maximum(np.min(squared, axis=0), 0.0))

    def in_distribution(self, distances: np.ndarray) -> np.ndarray:
        return np.asarray(distances) <= self.threshold

    def with_threshold(
        self, validation_distances: np.ndarray, pass_share: float
    ) -> MahalanobisDetector:
        """The same fit, its threshold the ``pass_share`` quantile of validation's distances."""
        if not 0 < pass_share <= 1:
            raise ValueError(f"pass_share must be in (0, 1], got {pass_share}")
        threshold = float(np.quantile(np.asarray(validation_distances), pass_share))
        return MahalanobisDetector(self.means, self.precision, threshold)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, means=self.means, precision=self.precision, threshold=self.threshold)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> MahalanobisDetector:
        with np.load(io.BytesIO(data)) as arrays:
            return cls(arrays["means"], arrays["precision"], float(arrays["threshold"]))


def fit_mahalanobis(features: np.ndarray, classes: np.ndarray) -> MahalanobisDetector:
    """Class means and a shared covariance, shrunk towards a scaled identity (Ledoit-Wolf):
    with 1,280 or more feature dimensions and a few thousand images, the sample
    covariance would be singular or nearly so."""
    x = np.asarray(features, np.float64)
    classes = np.asarray(classes)
    labels = np.unique(classes)
    means = np.stack([x[classes == c].mean(axis=0) for c in labels])
    centred = x - means[np.searchsorted(labels, classes)]
    covariance = LedoitWolf(assume_centered=True).fit(centred).covariance_
    return MahalanobisDetector(means, np.linalg.pinv(covariance, hermitian=True))
