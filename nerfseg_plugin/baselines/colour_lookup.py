"""Per-colour lookup classifier: the simplest baseline that uses the labeled views' pixels and nothing else.

Each class gets a histogram over quantised RGB (``bins`` per channel), smoothed over neighbouring bins so that a
colour never seen in training borrows the evidence of similar colours, and a pixel is labeled with the Bayes
decision ``argmax_k p(colour | k) p(k)``. The decision is precomputed per bin, so prediction is one table lookup.
It shows how much of a scene is separable by colour alone (roads vs. vegetation: yes; roof vs. road: rarely).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.ndimage import gaussian_filter


@dataclass
class ColourLookupConfig:
    """Settings of the colour-histogram classifier."""

    bins: int = 32
    """Quantisation levels per RGB channel (bins**3 colour cells)."""
    smoothing: float = 1.0
    """Standard deviation, in bins, of the Gaussian blur applied to each class histogram (0: none)."""
    pseudo_count: float = 1e-3
    """Laplace pseudo-count added to every cell of every class histogram, so no likelihood is exactly 0."""
    class_prior: Literal["empirical", "uniform"] = "empirical"
    """p(k): the labeled pixel share of each class, or uniform over the classes seen in training."""


class ColourLookupClassifier:
    """Fit per-class colour histograms on labeled views; predict by table lookup."""

    def __init__(self, config: ColourLookupConfig, num_classes: int, ignore_index: int) -> None:
        if not 2 <= config.bins <= 256:
            raise ValueError(f"bins must be in [2, 256], got {config.bins}")
        self.config = config
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.counts = np.zeros((num_classes, config.bins**3), dtype=np.float64)
        self.table: np.ndarray | None = None  # [bins**3] uint8 decision per colour cell

    def _cells(self, image: np.ndarray) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an [H, W, 3] uint8 RGB image, got {image.shape} {image.dtype}")
        quantised = (image.astype(np.int64) * self.config.bins) // 256
        return (quantised[..., 0] * self.config.bins + quantised[..., 1]) * self.config.bins + quantised[..., 2]

    def fit(self, views: Iterable[tuple[np.ndarray, np.ndarray]]) -> ColourLookupClassifier:
        """Accumulate ``(image [H, W, 3] uint8, labels [H, W])`` pairs (ignore pixels skipped), then decide."""
        for image, labels in views:
            if labels.shape != image.shape[:2]:
                raise ValueError(f"labels {labels.shape} do not match image {image.shape[:2]}")
            valid = labels != self.ignore_index
            classes = labels[valid].astype(np.int64)
            if classes.size and (classes.min() < 0 or classes.max() >= self.num_classes):
                raise ValueError(f"labels outside [0, {self.num_classes}) and not ignore {self.ignore_index}")
            flat = classes * self.config.bins**3 + self._cells(image)[valid]
            self.counts += np.bincount(flat, minlength=self.counts.size).reshape(self.counts.shape)
        self._decide()
        return self

    def _decide(self) -> None:
        pixels = self.counts.sum(axis=1)
        seen = pixels > 0
        if not seen.any():
            raise ValueError("no labeled pixel to fit the colour histograms")
        shape = (self.config.bins,) * 3
        log_posterior = np.full_like(self.counts, -np.inf)
        for k in np.flatnonzero(seen):
            histogram = self.counts[k].reshape(shape)
            if self.config.smoothing > 0:
                histogram = gaussian_filter(histogram, self.config.smoothing, mode="nearest")
            histogram = histogram.reshape(-1) + self.config.pseudo_count
            prior = pixels[k] / pixels.sum() if self.config.class_prior == "empirical" else 1.0 / seen.sum()
            log_posterior[k] = np.log(histogram / histogram.sum()) + np.log(prior)
        self.table = np.argmax(log_posterior, axis=0).astype(np.uint8)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """``[H, W]`` uint8 class indices."""
        if self.table is None:
            raise RuntimeError("fit the classifier before predicting")
        return self.table[self._cells(image)]
