"""``rsseg-eval``: the evaluation report of a trained rsseg-* run.

Renders the evaluation views (``semantic_eval_path`` frames), accumulates one confusion matrix and writes
metrics.json (mIoU, total and average accuracy, per-class IoU / accuracy, pixel count, render time per view, view
consistency), per_class.md, confusion_matrix.png, per_class.png and view_consistency.png.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import tyro
from nerfstudio.utils.rich_utils import CONSOLE

from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.evaluation.consistency import ConsistencyResult, point_zbuffer_depth, view_consistency
from nerfseg_plugin.evaluation.render import RenderedViews, render_pipeline_views, sparse_points
from nerfseg_plugin.evaluation.report import METRICS_FILE, summary_line, write_report

Visibility = Literal["rendered-depth", "point-zbuffer"]


@dataclass
class ConsistencyConfig:
    """How the view-consistency score decides which views see a sparse point."""

    views: Literal["none", "eval", "all"] = "eval"
    """Views whose labels are compared: the evaluation views, all views (adds the training views), or none (skip
    the score)."""
    visibility: Visibility = "rendered-depth"
    """Occlusion test: against the model's rendered depth, or against a z-buffer of the sparse points themselves
    (the test the 2D baselines must use, since they have no geometry; pick it to compare with them)."""
    depth_tolerance: float = 0.03
    """A point is seen when its z-depth is within this fraction of the depth map at its pixel."""
    zbuffer_cell: int = 8
    """Pixel block size of the point z-buffer (point-zbuffer visibility only)."""


def score_consistency(
    rendered: RenderedViews, points: np.ndarray | None, num_classes: int, config: ConsistencyConfig
) -> tuple[ConsistencyResult | None, ConsistencyResult | None]:
    """The consistency of the predictions and of the ground truth (views without ground truth contribute nothing
    to the latter), or ``(None, None)`` when not asked for or the scene has no sparse points."""
    if config.views == "none" or not rendered.views:
        return None, None
    if points is None or len(points) == 0:
        CONSOLE.print("[bold yellow]The scene has no sparse point cloud: view consistency is skipped.")
        return None, None
    if config.visibility == "point-zbuffer":
        depth_maps = [point_zbuffer_depth(points, view, config.zbuffer_cell) for view in rendered.views]
    elif any(depth is None for depth in rendered.depth_maps):
        raise ValueError("the model renders no 'depth' output; use --consistency.visibility point-zbuffer")
    else:
        depth_maps = rendered.depth_maps
    ground_truth = [
        np.full(labels.shape, -1, np.int64) if gt is None else gt
        for labels, gt in zip(rendered.label_maps, rendered.ground_truth_maps, strict=True)
    ]
    return tuple(
        view_consistency(
            points, rendered.views, maps, depth_maps, num_classes, config.depth_tolerance, config.visibility
        )
        for maps in (rendered.label_maps, ground_truth)
    )


@dataclass
class EvaluateRun:
    """Evaluation report (metrics.json, figures, view consistency) of a trained rsseg-* model."""

    load_config: Path
    """config.yml of the training run (outputs/<scene>/<method>/<timestamp>/config.yml)."""
    output_dir: Path | None = None
    """Folder for the report; default: <run>/evaluation next to config.yml."""
    consistency: ConsistencyConfig = field(default_factory=ConsistencyConfig)
    """View-consistency settings."""

    def main(self) -> dict:
        from nerfstudio.utils.eval_utils import eval_setup

        from nerfseg_plugin.data.trained_frame import changed_scene_warning, trained_frame_differs

        if not self.load_config.is_file():
            raise SceneFormatError(self.load_config, "config.yml of a training run not found")
        config, pipeline, checkpoint, step = eval_setup(self.load_config, test_mode="test")
        if trained_frame_differs(pipeline, self.load_config.parent):
            CONSOLE.print(changed_scene_warning(self.load_config.parent))
        model = pipeline.model
        if not hasattr(model, "label_space"):
            raise SceneFormatError(self.load_config, f"{config.method_name} is not an rsseg-* (semantic) method")
        output_dir = self.output_dir or self.load_config.parent / "evaluation"
        rendered = render_pipeline_views(pipeline, self.consistency.views)
        if int(rendered.confusion.matrix.sum()) == 0:
            raise SceneFormatError(
                config.pipeline.datamanager.data, "no evaluation view carries ground truth (semantic_eval_path)"
            )
        consistency, reference = score_consistency(
            rendered, sparse_points(pipeline), model.label_space.num_classes, self.consistency
        )
        report = write_report(
            output_dir,
            rendered.confusion.compute(),
            model.label_space,
            rendered.seconds_per_view,
            consistency,
            reference,
            extra={
                "method": config.method_name,
                "config": str(self.load_config),
                "checkpoint": str(checkpoint),
                "step": int(step),
                "device": str(pipeline.device),
                "rgb_psnr": rendered.mean_psnr,
            },
            title=f"{config.method_name} ({config.experiment_name})",
        )
        CONSOLE.print(rendered.confusion.compute().per_class_table(model.label_space.names))
        CONSOLE.print(f"[bold green]{summary_line(report)}")
        timing = report["render_time_per_view"]["mean_s"]
        CONSOLE.print(f"[bold green]{report['num_views']} views, {timing:.3f} s per view; report: {output_dir}")
        CONSOLE.print(f"[bold green]  metrics: {output_dir / METRICS_FILE}")
        return report


def entrypoint() -> None:
    """Console-script entry point (``rsseg-eval``)."""
    tyro.extras.set_accent_color("bright_yellow")
    tyro.cli(EvaluateRun).main()


if __name__ == "__main__":
    entrypoint()
