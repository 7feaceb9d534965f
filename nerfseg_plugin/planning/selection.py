"""Choosing the views to label: greedy maximum coverage of the sparse points, appearance diversity on near-ties.

Coverage of a set of views is the number of sparse points at least one of them sees. It is monotone and
submodular, so adding, at each step, the view that sees the most points not yet covered reaches at least
(1 - 1/e) of the best possible coverage (Nemhauser, Wolsey and Fisher 1978), and in practice far more. Appearance is
the secondary objective: among the views whose new coverage is within ``tie_tolerance`` of the step's best, the one
whose seen points' colours differ most from those of the views already chosen wins (total-variation distance of
colour histograms to the nearest chosen view), so labels span roofs, vegetation, water and shadows rather than
more of the same; remaining ties go to the lower view index, so the result is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nerfseg_plugin.planning.visibility import Visibility

COLOUR_BINS = 4
"""Histogram bins per colour channel (4^3 = 64 colours)."""


@dataclass(frozen=True)
class Suggestion:
    """Views in the order chosen, with the points each newly covers."""

    views: list[int]
    new_points: list[int]
    """Points the view adds to those covered before it (fixed views included)."""
    fixed: list[int]
    """Views counted as already chosen before the suggestion (e.g. frames already labeled)."""
    num_visible_points: int
    """Points seen by at least one view: the coverable surface, the denominator of every coverage share."""

    def coverage_share(self, new_points: int) -> float:
        return new_points / self.num_visible_points


def view_colour_histograms(visibility: Visibility, colours: np.ndarray) -> np.ndarray:
    """``[V, COLOUR_BINS^3]`` normalised colour histogram of the points each view sees (zeros for a blind view)."""
    levels = (colours.astype(np.int64) * COLOUR_BINS) // 256
    point_bin = (levels[:, 0] * COLOUR_BINS + levels[:, 1]) * COLOUR_BINS + levels[:, 2]
    bins = COLOUR_BINS**3
    counts = np.bincount(
        visibility.view_index * bins + point_bin[visibility.point_index], minlength=visibility.num_views * bins
    ).reshape(visibility.num_views, bins)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


def greedy_coverage(
    visibility: Visibility,
    num: int,
    histograms: np.ndarray | None = None,
    tie_tolerance: float = 0.0,
    fixed: Sequence[int] = (),
) -> Suggestion:
    """Choose ``num`` views greedily by new coverage, after the ``fixed`` ones; with ``histograms``, near-ties
    (within ``tie_tolerance`` of the best new coverage) go to the most different appearance."""
    available = visibility.num_views - len(set(fixed))
    if not 1 <= num <= available:
        raise ValueError(f"can suggest 1..{available} views here, not {num}")
    if not 0.0 <= tie_tolerance < 1.0:
        raise ValueError(f"tie_tolerance must be in [0, 1), got {tie_tolerance}")
    view_index, point_index = visibility.view_index, visibility.point_index
    covered = visibility.covered(fixed)
    taken = np.zeros(visibility.num_views, dtype=bool)
    taken[list(fixed)] = True
    chosen: list[int] = list(dict.fromkeys(int(v) for v in fixed))
    views, gains_taken = [], []
    for _ in range(num):
        gains = np.bincount(view_index, weights=~covered[point_index], minlength=visibility.num_views)
        gains[taken] = -1.0
        best = gains.max()
        candidates = np.flatnonzero(gains >= best * (1.0 - tie_tolerance))
        if histograms is not None and chosen and len(candidates) > 1:
            distance = 0.5 * np.abs(histograms[candidates, None, :] - histograms[None, chosen, :]).sum(-1)
            pick = int(candidates[np.argmax(distance.min(axis=1))])
        else:
            pick = int(candidates[np.argmax(gains[candidates])])
        views.append(pick)
        gains_taken.append(int(gains[pick]))
        chosen.append(pick)
        taken[pick] = True
        covered[visibility.seen_by(pick)] = True
    return Suggestion(
        views=views,
        new_points=gains_taken,
        fixed=list(dict.fromkeys(int(v) for v in fixed)),
        num_visible_points=int(np.count_nonzero(visibility.counts())),
    )
