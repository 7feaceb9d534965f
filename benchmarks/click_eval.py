"""Simulated-click evaluation of click-to-correct on a trained run (paper 003's protocol).

Every evaluation view gets up to ``max_clicks`` clicks, each at the interior of its largest connected error region
(distance-transform maximum) with the ground-truth class there. The click becomes a region exactly as in the
viewer (flood fill on the rendered colour and class probabilities, or a SAM2 point prompt with a local
checkpoint). Reported: mean per-view mIoU after 0/1/5/10/20 clicks, NoC@85 / NoC@90 (capped at 20) and the share
of views that never reach 85 / 90 %.

    python benchmarks/click_eval.py --load-config outputs/scene/rsseg-splat-lite/STAMP/config.yml
    # the 3D model must learn each correction: a few training steps after every click, scored on its render
    python benchmarks/click_eval.py --load-config ... --mode train --train-steps-per-click 5

Modes: ``overlay`` pastes each region into the view's prediction (interactive segmentation of that image);
``train`` adds the region as a correction of that training view, trains ``train-steps-per-click`` steps and scores
the model's new render (no pasting), with the model reset between views.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import tyro

from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.core.keys import SEMANTIC_GT
from nerfseg_plugin.data.corrections import CorrectionStore
from nerfseg_plugin.interactive.regions import RegionConfig, derive_region
from nerfseg_plugin.interactive.session import CorrectionSession
from nerfseg_plugin.interactive.simulation import (
    MAX_CLICKS,
    markdown_table,
    next_click,
    simulate_overlay,
    summarize,
    view_miou,
)
from nerfseg_plugin.semantics.outputs import SEMANTIC_LOGITS, predicted_labels


@dataclass
class ClickEval:
    """Simulated clicks on every evaluation view of a trained run."""

    load_config: Path
    """config.yml of the training run (outputs/<scene>/<method>/<timestamp>/config.yml)."""
    output_dir: Path = Path("benchmarks/results/click_eval")
    """Where click_eval.json and click_eval.md are written."""
    mode: Literal["overlay", "train"] = "overlay"
    """overlay: paste each click's region into the prediction; train: train on it and score the new render."""
    train_steps_per_click: int = 5
    """train mode: optimisation steps after each click."""
    max_clicks: int = MAX_CLICKS
    """Clicks per view (NoC is capped here)."""
    max_views: int | None = None
    """Evaluate at most this many evaluation views (None: all)."""
    region: RegionConfig = field(default_factory=RegionConfig)
    """How a click becomes a region (the viewer's default)."""


def render_view(session: CorrectionSession, camera) -> tuple[dict, np.ndarray]:
    outputs = session.render(camera)
    return outputs, predicted_labels(outputs[SEMANTIC_LOGITS]).cpu().numpy()


def overlay_trace(session: CorrectionSession, camera, gt: np.ndarray, config: ClickEval) -> list[float]:
    outputs, prediction = render_view(session, camera)
    rgb = outputs["rgb"][..., :3].float().cpu().numpy()
    probabilities = torch.softmax(outputs[SEMANTIC_LOGITS].float(), -1).cpu().numpy()
    space = session.label_space

    def region(click, _current):
        return derive_region(rgb, probabilities, (click.y, click.x), config.region, session.prompter)

    ious, _ = simulate_overlay(prediction, gt, region, space.num_classes, space.ignore_index, config.max_clicks)
    return ious


def train_trace(
    session: CorrectionSession, optimizer_config: dict, index: int, gt: np.ndarray, config: ClickEval, step: int
) -> list[float]:
    """Clicks on training view ``index``; after each, a few optimisation steps; the model is restored after."""
    from nerfstudio.engine.callbacks import TrainingCallbackAttributes, TrainingCallbackLocation
    from nerfstudio.engine.optimizers import Optimizers

    pipeline, space = session.pipeline, session.label_space
    saved = copy.deepcopy(pipeline.model.state_dict())
    optimizers = Optimizers(copy.deepcopy(optimizer_config), pipeline.get_param_groups())
    callbacks = pipeline.get_training_callbacks(TrainingCallbackAttributes(optimizers, None, pipeline, None))
    camera = session.dataset.cameras[index : index + 1]
    outputs, prediction = render_view(session, camera)
    ious = [view_miou(prediction, gt, space.num_classes, space.ignore_index)]
    for _ in range(config.max_clicks):
        click = next_click(prediction, gt, space.ignore_index)
        if click is not None:
            session.correct_frame(index, (click.x, click.y), click.class_index, outputs=outputs)
            pipeline.train()
            for _ in range(config.train_steps_per_click):
                for callback in callbacks:  # stage switches and step counters only; no densification
                    callback.run_callback_at_location(step, TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
                _, losses, _ = pipeline.get_train_loss_dict(step)
                optimizers.zero_grad_all()
                sum(losses.values()).backward()
                optimizers.optimizer_step_all()
                step += 1
            outputs, prediction = render_view(session, camera)
        ious.append(view_miou(prediction, gt, space.num_classes, space.ignore_index))
    while session.undo_last() is not None:
        pass
    pipeline.model.load_state_dict(saved)
    return ious


def main(config: ClickEval) -> dict:
    from nerfstudio.utils.eval_utils import eval_setup

    if not config.load_config.is_file():
        raise SceneFormatError(config.load_config, "config.yml of a training run not found")
    trainer_config, pipeline, _, step = eval_setup(config.load_config, test_mode="test")
    if not hasattr(pipeline.model, "label_space"):
        raise SceneFormatError(config.load_config, f"{trainer_config.method_name} is not an rsseg-* method")
    config.output_dir.mkdir(parents=True, exist_ok=True)
    store_dir = config.output_dir / "corrections"  # never the scene's own corrections
    shutil.rmtree(store_dir, ignore_errors=True)
    session = CorrectionSession(pipeline, config.region, CorrectionStore(store_dir), source="simulation")
    train_index = {Path(name).stem: i for i, name in enumerate(session.dataset.image_filenames)}
    eval_dataset = pipeline.datamanager.eval_dataset
    traces: dict[str, list[float]] = {}
    started = time.perf_counter()
    for i in range(len(eval_dataset)):
        if config.max_views is not None and len(traces) >= config.max_views:
            break
        item = eval_dataset[i]
        if SEMANTIC_GT not in item:
            continue
        stem = Path(eval_dataset.image_filenames[i]).stem
        gt = item[SEMANTIC_GT].numpy()
        if config.mode == "overlay":
            traces[stem] = overlay_trace(session, eval_dataset.cameras[i : i + 1], gt, config)
        elif stem in train_index:
            traces[stem] = train_trace(session, trainer_config.optimizers, train_index[stem], gt, config, step + 1)
        else:
            raise SceneFormatError(
                config.load_config, "train mode needs evaluation views in the training split (the transductive setting)"
            )
        print(f"{stem}: mIoU {100 * traces[stem][0]:.1f} -> {100 * traces[stem][-1]:.1f} after {config.max_clicks}")
    summary = summarize(traces, max_clicks=config.max_clicks)
    report = {
        "run": str(config.load_config),
        "method": trainer_config.method_name,
        "mode": config.mode,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "seconds": time.perf_counter() - started,
        "summary": summary,
        "per_view_miou": traces,
    }
    table = markdown_table(summary)
    (config.output_dir / "click_eval.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (config.output_dir / "click_eval.md").write_text(
        f"# Simulated clicks: {trainer_config.method_name}, {config.mode} mode\n\n{table}\n"
    )
    print(table)
    return report


def entrypoint() -> None:
    main(tyro.cli(ClickEval))


if __name__ == "__main__":
    entrypoint()
