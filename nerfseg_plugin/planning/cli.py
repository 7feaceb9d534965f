"""``rsseg-suggest-views``: which K photos to label, right after SfM and before any training.

    rsseg-suggest-views --data SCENE --num 3            # one file_path per line, best first
    rsseg-suggest-views --data SCENE --num 3 --json     # views, new and cumulative coverage, total coverage

The views are chosen from the scene's geometry alone (transforms.json cameras and the sparse points of
``ply_file_path``; no image is read): greedy maximum coverage of the points the views see, colour diversity of the
seen points on near-ties. See :mod:`nerfseg_plugin.planning.visibility` and :mod:`nerfseg_plugin.planning.selection`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tyro

from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.planning.scene import PlanningScene, load_planning_scene
from nerfseg_plugin.planning.selection import Suggestion, greedy_coverage, view_colour_histograms
from nerfseg_plugin.planning.visibility import Visibility, VisibilityConfig, compute_visibility


@dataclass
class SuggestViews:
    """Suggest the photos to label: the K views that together see most of the scene's surface (its sparse points),
    the most varied in appearance among equally good ones."""

    data: Path
    """Scene folder (or its transforms.json) with cameras and a sparse point cloud (ply_file_path)."""
    num: int = 3
    """How many views to suggest (K)."""
    json: bool = False
    """Print a JSON object instead of file paths: views (file_path, index, new and cumulative coverage), total."""
    keep_labeled: bool = False
    """Count the frames that already have a semantic_path as chosen and suggest K more views around them."""
    tie_tolerance: float = 0.005
    """Views whose new coverage is within this fraction of a step's best count as tied; among them the most
    different in colour wins (0: coverage only)."""
    visibility: VisibilityConfig = field(default_factory=VisibilityConfig)
    """Occlusion test of the sparse points."""

    def main(self) -> dict:
        scene = load_planning_scene(self.data)
        fixed = [int(i) for i in np.flatnonzero(scene.labeled)] if self.keep_labeled else []
        available = scene.num_views - len(fixed)
        if not 1 <= self.num <= available:
            raise SceneFormatError(
                scene.transforms_path,
                f"--num must be in 1..{available} ({scene.num_views} views, {len(fixed)} already labeled), "
                f"got {self.num}",
            )
        visibility = compute_visibility(scene, self.visibility)
        if not np.any(visibility.counts()):
            raise SceneFormatError(
                scene.transforms_path,
                f"none of the {len(scene.points)} sparse points is seen by any camera: are the transform_matrix "
                "entries camera-to-world (OpenGL axes) and the points in the same frame?",
            )
        histograms = None if scene.colours is None else view_colour_histograms(visibility, scene.colours)
        suggestion = greedy_coverage(visibility, self.num, histograms, self.tie_tolerance, fixed)
        return suggestion_report(scene, visibility, suggestion)


def suggestion_report(scene: PlanningScene, visibility: Visibility, suggestion: Suggestion) -> dict:
    """The JSON-ready result: chosen views best first, each with its new and the cumulative coverage share."""
    cumulative = int(np.count_nonzero(visibility.covered(suggestion.fixed)))
    views = []
    for view, new in zip(suggestion.views, suggestion.new_points, strict=True):
        cumulative += new
        views.append(
            {
                "file_path": scene.file_paths[view],
                "index": view,
                "new_coverage": suggestion.coverage_share(new),
                "cumulative_coverage": suggestion.coverage_share(cumulative),
            }
        )
    return {
        "transforms": str(scene.transforms_path),
        "num_views": scene.num_views,
        "num_points": len(scene.points),
        "num_visible_points": suggestion.num_visible_points,
        "fixed_views": [{"file_path": scene.file_paths[v], "index": v} for v in suggestion.fixed],
        "views": views,
        "total_coverage": suggestion.coverage_share(cumulative),
    }


def run(config: SuggestViews) -> None:
    """Print the suggestion; bad input exits with status 2 and a message naming the file and the problem."""
    try:
        report = config.main()
    except (SceneFormatError, ValueError) as err:
        print(f"rsseg-suggest-views: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if config.json:
        print(json.dumps(report, indent=2))
        return
    for view in report["views"]:
        print(view["file_path"])
    print(
        f"{len(report['views'])} views cover {report['total_coverage']:.1%} of the "
        f"{report['num_visible_points']} sparse points some view sees",
        file=sys.stderr,
    )


def entrypoint() -> None:
    """Console-script entry point (``rsseg-suggest-views``)."""
    tyro.extras.set_accent_color("bright_yellow")
    run(tyro.cli(SuggestViews))


if __name__ == "__main__":
    entrypoint()
