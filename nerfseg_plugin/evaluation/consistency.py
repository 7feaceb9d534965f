"""View consistency: do the predicted labels of a sparse 3D point agree across the views that see it?

A 2D network labels each view on its own, so the same roof corner can be "roof" in one view and "building_wall" in
the next; a semantic radiance field or splat labels the scene once and renders it. The score here measures that
property directly: project every sparse point into every view, keep the views that *see* it (in front of the
camera, inside the image, and not occluded: its depth matches the view's depth map within a relative tolerance),
and count how often those views agree on its label.

Cameras follow nerfstudio's convention (camera-to-world, OpenGL: x right, y up, looking down -z; pixel ``(row, col)``
is centred at ``(col + 0.5, row + 0.5)``). Depth maps are z-depth;
:func:`nerfseg_plugin.core.geometry.ray_distance_to_z` converts the ray distance that NeRF models render.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nerfseg_plugin.core.geometry import PinholeView, project_points


def point_zbuffer_depth(points: np.ndarray, view: PinholeView, cell: int) -> np.ndarray:
    """A z-depth map from the points themselves, for predictions that come without geometry (2D baselines): the
    nearest point per ``cell x cell`` pixel block, ``inf`` where no point falls. Coarse cells close the gaps between
    sparse points so that a point behind a surface is hidden by the surface's own points."""
    u, v, z = project_points(points, view)
    inside = (z > 0) & (u >= 0) & (u < view.width) & (v >= 0) & (v < view.height)
    grid_h, grid_w = math.ceil(view.height / cell), math.ceil(view.width / cell)
    nearest = np.full(grid_h * grid_w, np.inf)
    flat = (v[inside] // cell).astype(np.int64) * grid_w + (u[inside] // cell).astype(np.int64)
    np.minimum.at(nearest, flat, z[inside])
    depth = np.repeat(np.repeat(nearest.reshape(grid_h, grid_w), cell, axis=0), cell, axis=1)
    return depth[: view.height, : view.width]


def observed_labels(
    points: np.ndarray, view: PinholeView, labels: np.ndarray, depth: np.ndarray, tolerance: float
) -> np.ndarray:
    """Per point, the label of the pixel it projects to where the view sees it, else -1. Seen means: in front,
    inside the image, and ``|z - depth| <= tolerance * depth`` at that pixel (not occluded)."""
    if labels.shape != (view.height, view.width) or depth.shape != labels.shape:
        raise ValueError(
            f"labels {labels.shape} and depth {depth.shape} must be the view's size {(view.height, view.width)}"
        )
    u, v, z = project_points(points, view)
    result = np.full(len(points), -1, dtype=np.int64)
    inside = (z > 0) & (u >= 0) & (u < view.width) & (v >= 0) & (v < view.height)
    index = np.flatnonzero(inside)
    rows, cols = v[index].astype(np.int64), u[index].astype(np.int64)
    surface = depth[rows, cols]
    seen = np.isfinite(surface) & (np.abs(z[index] - surface) <= tolerance * surface)
    result[index[seen]] = labels[rows[seen], cols[seen]]
    return result


@dataclass(frozen=True)
class ConsistencyResult:
    """Agreement of predicted labels over the points seen by at least two views."""

    num_points: int
    """Sparse points given."""
    num_evaluated: int
    """Points seen (with a class label) by at least two views: the ones scored."""
    mean_views_per_point: float
    """Mean number of views that see an evaluated point."""
    consistent_share: float
    """Share of evaluated points whose label is the same in every view that sees them."""
    majority_agreement: float
    """Mean share of a point's observations that agree with its most frequent label (1 = fully consistent)."""
    per_class_consistent_share: np.ndarray
    """``[K]`` consistent share among points whose majority label is the class (NaN: no such point)."""
    agreement: np.ndarray
    """Per evaluated point, the share of observations agreeing with its majority label (for the histogram)."""
    visibility: str
    """How occlusion was decided: "rendered-depth" or "point-zbuffer"."""
    tolerance: float
    """Relative depth tolerance of the visibility test."""

    def to_dict(self, class_names: Sequence[str]) -> dict:
        def num(value: float) -> float | None:
            return None if math.isnan(value) else float(value)

        return {
            "num_points": self.num_points,
            "num_evaluated": self.num_evaluated,
            "mean_views_per_point": num(self.mean_views_per_point),
            "consistent_share": num(self.consistent_share),
            "majority_agreement": num(self.majority_agreement),
            "per_class_consistent_share": {
                name: num(self.per_class_consistent_share[i]) for i, name in enumerate(class_names)
            },
            "visibility": self.visibility,
            "depth_tolerance": self.tolerance,
        }


def view_consistency(
    points: np.ndarray,
    views: Sequence[PinholeView],
    label_maps: Sequence[np.ndarray],
    depth_maps: Sequence[np.ndarray],
    num_classes: int,
    tolerance: float,
    visibility: str,
) -> ConsistencyResult:
    """Score the agreement of ``label_maps`` (one per view; values outside ``[0, K)`` are ignored) at the points."""
    if not len(views) == len(label_maps) == len(depth_maps):
        raise ValueError(f"{len(views)} views, {len(label_maps)} label maps and {len(depth_maps)} depth maps")
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    counts = np.zeros((len(points), num_classes), dtype=np.int64)
    for view, labels, depth in zip(views, label_maps, depth_maps, strict=True):
        observed = observed_labels(points, view, np.asarray(labels), np.asarray(depth, dtype=np.float64), tolerance)
        valid = (observed >= 0) & (observed < num_classes)
        np.add.at(counts, (np.flatnonzero(valid), observed[valid]), 1)
    observations = counts.sum(axis=1)
    scored = observations >= 2
    majority_count = counts[scored].max(axis=1)
    agreement = majority_count / observations[scored]
    consistent = majority_count == observations[scored]
    majority_class = counts[scored].argmax(axis=1)
    per_class = np.full(num_classes, np.nan)
    for k in range(num_classes):
        members = majority_class == k
        if members.any():
            per_class[k] = float(consistent[members].mean())
    evaluated = int(scored.sum())
    return ConsistencyResult(
        num_points=len(points),
        num_evaluated=evaluated,
        mean_views_per_point=float(observations[scored].mean()) if evaluated else math.nan,
        consistent_share=float(consistent.mean()) if evaluated else math.nan,
        majority_agreement=float(agreement.mean()) if evaluated else math.nan,
        per_class_consistent_share=per_class,
        agreement=agreement,
        visibility=visibility,
        tolerance=tolerance,
    )


def plot_consistency(
    result: ConsistencyResult,
    class_names: Sequence[str],
    path: Path,
    reference: ConsistencyResult | None = None,
    title: str = "",
) -> None:
    """Histogram of per-point agreement and the consistent share per (majority) class, for the predictions and,
    when given, for the ground truth of the same views (the score's ceiling: label boundaries and the visibility
    test keep even exact labels below 100%)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4), layout="constrained")
    left, right = figure.subplots(1, 2)
    bins = np.linspace(0.0, 1.0, 21)
    left.hist(result.agreement, bins=bins, color="tab:blue", edgecolor="white", label="prediction")
    positions = np.arange(len(class_names))
    width = 0.8 if reference is None else 0.4
    shares = np.nan_to_num(result.per_class_consistent_share, nan=0.0)
    right.bar(positions - (0 if reference is None else 0.2), 100 * shares, width=width, label="prediction")
    heading = f"{result.num_evaluated} points seen by >= 2 views; consistent: {100 * result.consistent_share:.1f}%"
    if reference is not None:
        left.hist(reference.agreement, bins=bins, histtype="step", color="black", label="ground truth")
        reference_shares = np.nan_to_num(reference.per_class_consistent_share, nan=0.0)
        right.bar(positions + 0.2, 100 * reference_shares, width=width, color="grey", label="ground truth")
        heading += f" (ground truth {100 * reference.consistent_share:.1f}%)"
    left.set_xlabel("share of a point's views agreeing with its majority label")
    left.set_ylabel("points")
    left.set_title(heading, fontsize=10)
    left.legend(loc="upper left", fontsize=8)
    right.set_xticks(positions, class_names, rotation=45, ha="right")
    right.set_ylim(0, 100)
    right.set_ylabel("fully consistent points (%)")
    right.set_title("by majority class", fontsize=10)
    right.legend(loc="upper right", fontsize=8)
    figure.suptitle(title or f"View consistency ({result.visibility}, depth tolerance {result.tolerance:g})")
    figure.savefig(path, dpi=110)
