"""Runs the 2D appearance rounds inside a training run: gathers the training views from the datamanager, renders
them with the model, hands the new targets to the model, and scores the 2D model alone for the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from nerfstudio.utils.rich_utils import CONSOLE

from nerfseg_plugin.appearance.config import AppearanceConfig
from nerfseg_plugin.appearance.rounds import AppearanceRounds, RoundView, round_steps
from nerfseg_plugin.core.geometry import depth_convention
from nerfseg_plugin.core.keys import SEMANTIC_GT, SEMANTIC_LABELS
from nerfseg_plugin.semantics.metrics import ConfusionMatrix, SegmentationMetrics
from nerfseg_plugin.semantics.outputs import SEMANTIC_LOGITS


def _as_float_image(image: torch.Tensor) -> torch.Tensor:
    return image.float() / 255.0 if image.dtype == torch.uint8 else image.float()


class AppearanceDriver:
    """Owns the rounds of one run; the pipeline calls :meth:`after_step` after every training step."""

    def __init__(self, config: AppearanceConfig, datamanager, model, max_steps: int, start_step: int = 0) -> None:
        self.config = config
        self.datamanager = datamanager
        self.model = model
        label_space = model.label_space
        self.rounds = AppearanceRounds(config, label_space.num_classes, label_space.ignore_index)
        first = max(model.semantic_first_step(), start_step)
        self.steps = round_steps(config, first, start_step + max_steps) if config.enabled else []

    def _training_views(self) -> list[RoundView]:
        dataset = self.datamanager.train_dataset
        cached = getattr(self.datamanager, "cached_train", None)
        views = []
        for index in range(len(dataset)):
            data = cached[index] if cached is not None else dataset[index]
            views.append(
                RoundView(
                    camera=dataset.cameras[index : index + 1],
                    image=_as_float_image(data["image"][..., :3]).cpu(),
                    labels=data[SEMANTIC_LABELS].long().cpu(),
                )
            )
        return views

    def _render(self, camera, image):
        camera = camera.to(self.model.device)
        outputs = self.model.render_view(camera, image.to(self.model.device))
        depth = outputs["depth"]
        if depth_convention(self.model) == "ray":  # a NeRF renders the distance along unit rays: to z-depth
            rays = camera.generate_rays(camera_indices=0, keep_shape=True)
            depth = depth / rays.metadata["directions_norm"].to(depth.device)
        return outputs[SEMANTIC_LOGITS], depth, outputs["accumulation"]

    def after_step(self, step: int) -> None:
        if step not in self.steps:
            return
        was_training = self.model.training
        self.model.eval()
        try:
            targets = self.rounds.run(self._training_views(), self._render, self.model.device)
        finally:
            self.model.train(was_training)
        self.model.set_appearance_targets(targets, self.config.loss_weight)
        CONSOLE.print(f"[bold]{self.rounds.summaries[-1].line()}")

    def score_2d(self, eval_dataset) -> tuple[SegmentationMetrics, dict[str, np.ndarray]] | None:
        """The 2D model's latest predictions scored on the evaluation views that are also training views (the
        transductive setting), for the report's "2D only" figure, with those label maps by image stem (the
        ablation's view consistency). None before the first round or without overlap."""
        targets = self.rounds.targets
        if targets is None:
            return None
        train_index = {Path(name).name: i for i, name in enumerate(self.datamanager.train_dataset.image_filenames)}
        label_space = self.model.label_space
        confusion = ConfusionMatrix(label_space.num_classes, label_space.ignore_index)
        label_maps: dict[str, np.ndarray] = {}
        for index, name in enumerate(eval_dataset.image_filenames):
            if Path(name).name not in train_index:
                continue
            gt = eval_dataset[index].get(SEMANTIC_GT)
            if gt is None:
                continue
            labels = targets.labels[train_index[Path(name).name]]
            if labels.shape != gt.shape:
                labels = F.interpolate(labels[None, None].float(), size=tuple(gt.shape), mode="nearest")[0, 0]
            confusion.update(labels.long(), gt)
            label_maps[Path(name).stem] = labels.to(torch.uint8).cpu().numpy()
        return (confusion.compute(), label_maps) if label_maps else None
