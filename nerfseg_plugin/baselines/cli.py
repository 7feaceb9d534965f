"""``rsseg-baseline``: train a 2D baseline on a scene's labeled views and write the same report as ``rsseg-eval``.

    rsseg-baseline --data SCENE --method colour --output-dir out/colour
    rsseg-baseline --data SCENE --method unet --output-dir out/unet
    # data augmentation (paper 000, Table IV): also train on a 3D model's rendered labels of every view
    rsseg-export-labels --load-config RUN/config.yml --output-dir out/rendered --split all
    rsseg-baseline --data SCENE --method unet --extra-labels out/rendered --output-dir out/unet-rendered

Training reads only ``semantic_path`` label maps (and ``--extra-labels``); ``semantic_eval_path`` ground truth is
used to score, with the shared confusion matrix.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import tyro
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image

from nerfseg_plugin.baselines.colour_lookup import ColourLookupClassifier, ColourLookupConfig
from nerfseg_plugin.baselines.data import BaselineScene, load_scene, training_views
from nerfseg_plugin.baselines.data import evaluation_views as load_evaluation_views
from nerfseg_plugin.baselines.unet import UNetConfig, UNetSegmenter
from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.evaluation.consistency import ConsistencyResult, point_zbuffer_depth, view_consistency
from nerfseg_plugin.evaluation.report import METRICS_FILE, summary_line, write_report
from nerfseg_plugin.export.label_maps import COLOUR_FOLDER, LABELS_FOLDER, colourise
from nerfseg_plugin.semantics.metrics import ConfusionMatrix

METHOD_NAMES = {"colour": "colour-lookup", "unet": "unet-2d"}


@dataclass
class BaselineRun:
    """Train a 2D segmentation baseline on the labeled views of a scene and evaluate it on the evaluation views."""

    data: Path
    """Scene folder (transforms.json, images, semantics, classes.json)."""
    method: Literal["colour", "unet"]
    """colour: per-class colour histograms with a Bayes decision; unet: a small UNet trained from scratch."""
    output_dir: Path
    """Folder for metrics.json, the figures and (with --save-labels) the predicted label maps."""
    extra_labels: Path | None = None
    """Label maps of other views to train on as well (rsseg-export-labels output: DIR or DIR/labels with
    <image stem>.png), for the data-augmentation experiment. Frames with semantic_path keep their real labels."""
    colour: ColourLookupConfig = field(default_factory=ColourLookupConfig)
    """Colour-lookup settings."""
    unet: UNetConfig = field(default_factory=UNetConfig)
    """UNet settings."""
    consistency: bool = True
    """Score view consistency on the sparse points (visibility from a z-buffer of the points: no geometry here)."""
    depth_tolerance: float = 0.03
    """Relative depth tolerance of the visibility test."""
    zbuffer_cell: int = 8
    """Pixel block size of the point z-buffer."""
    save_labels: bool = True
    """Write labels/<stem>.png (class indices) and labels_colour/<stem>.png for the evaluation views."""

    def main(self) -> dict:
        scene = load_scene(self.data)
        report = run_baseline(self, scene)
        CONSOLE.print((self.output_dir / "per_class.md").read_text(encoding="utf-8"))
        CONSOLE.print(f"[bold green]{METHOD_NAMES[self.method]}: {summary_line(report)}")
        CONSOLE.print(
            f"[bold green]trained on {report['num_training_views']} views in {report['train_time_s']:.2f} s; "
            f"report: {self.output_dir / METRICS_FILE}"
        )
        return report


def point_zbuffer_consistency(
    scene: BaselineScene,
    predictions: dict[int, np.ndarray],
    ground_truth: dict[int, np.ndarray],
    depth_tolerance: float,
    zbuffer_cell: int,
) -> tuple[ConsistencyResult, ConsistencyResult]:
    """Consistency of label maps (frame index -> map) and of the ground truth of the same views (the score's
    ceiling), with visibility from a z-buffer of the sparse points: the test any method's label maps can take."""
    views = [scene.views[i] for i in predictions]
    depths = [point_zbuffer_depth(scene.points, view, zbuffer_cell) for view in views]
    return tuple(
        view_consistency(
            scene.points,
            views,
            [maps[i] for i in predictions],
            depths,
            scene.label_space.num_classes,
            depth_tolerance,
            "point-zbuffer",
        )
        for maps in (predictions, ground_truth)
    )


def run_baseline(run: BaselineRun, scene: BaselineScene) -> dict:
    """Train, predict every evaluation view, score and write the report; returns metrics.json's content."""
    label_space = scene.label_space
    evaluation = load_evaluation_views(scene)
    if not evaluation:
        raise SceneFormatError(scene.scene_dir, "no frame has a semantic_eval_path: nothing to evaluate on")
    train = training_views(scene, run.extra_labels)
    pairs = [(view.image, view.labels) for view in train]
    started = time.perf_counter()
    if run.method == "colour":
        model = ColourLookupClassifier(run.colour, label_space.num_classes, label_space.ignore_index).fit(pairs)
        settings = dataclasses.asdict(run.colour)
    else:
        model = UNetSegmenter(run.unet, label_space.num_classes, label_space.ignore_index)
        model.fit(pairs)
        settings = dataclasses.asdict(run.unet)
    train_time = time.perf_counter() - started

    confusion = ConfusionMatrix(label_space.num_classes, label_space.ignore_index)
    seconds: dict[str, float] = {}
    predictions: dict[int, np.ndarray] = {}
    for index, view in evaluation:
        started = time.perf_counter()
        predictions[index] = model.predict(view.image)
        seconds[view.stem] = time.perf_counter() - started
        confusion.update(predictions[index], view.labels)
    if run.save_labels:
        for folder in (LABELS_FOLDER, COLOUR_FOLDER):
            (run.output_dir / folder).mkdir(parents=True, exist_ok=True)
        for index, labels in predictions.items():
            stem = scene.frames[index].image_path.stem
            Image.fromarray(labels, mode="L").save(run.output_dir / LABELS_FOLDER / f"{stem}.png")
            Image.fromarray(colourise(labels, label_space)).save(run.output_dir / COLOUR_FOLDER / f"{stem}.png")
        label_space.save(run.output_dir / "classes.json")
    consistency, reference = None, None
    if run.consistency and scene.points is not None:
        ground_truth = {index: view.labels for index, view in evaluation}
        consistency, reference = point_zbuffer_consistency(
            scene, predictions, ground_truth, run.depth_tolerance, run.zbuffer_cell
        )
    return write_report(
        run.output_dir,
        confusion.compute(),
        label_space,
        seconds,
        consistency,
        reference,
        extra={
            "method": METHOD_NAMES[run.method],
            "scene": str(scene.scene_dir),
            "train_time_s": train_time,
            "num_training_views": len(train),
            "num_training_pixels": int(sum(int((v.labels != label_space.ignore_index).sum()) for v in train)),
            "extra_labels": None if run.extra_labels is None else str(run.extra_labels),
            "settings": settings,
        },
        title=f"{METHOD_NAMES[run.method]} ({scene.scene_dir.name})",
    )


def entrypoint() -> None:
    """Console-script entry point (``rsseg-baseline``)."""
    tyro.extras.set_accent_color("bright_yellow")
    tyro.cli(BaselineRun).main()


if __name__ == "__main__":
    entrypoint()
