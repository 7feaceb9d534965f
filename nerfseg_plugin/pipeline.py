"""Pipeline that reports semantic metrics at dataset level and ends training with a semantic report.

nerfstudio averages per-image metrics; for segmentation that would make mIoU a mean of per-image mIoUs, which
over-weights small, easy images and classes absent from most of them. The per-image loop stays nerfstudio's; the
model accumulates one confusion matrix during it, and the pipeline replaces the semantic averages afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils import writer
from nerfstudio.utils.rich_utils import CONSOLE
from torch.cuda.amp.grad_scaler import GradScaler

from nerfseg_plugin.appearance.config import AppearanceConfig
from nerfseg_plugin.appearance.driver import AppearanceDriver
from nerfseg_plugin.core.atomic import write_json_atomic
from nerfseg_plugin.export.label_maps import save_label_map
from nerfseg_plugin.semantics.model_mixin import SemanticModelMixin, semantic_metrics_dict

SEMANTIC_SUMMARY_KEYS = ("miou", "total_accuracy", "average_accuracy")
REPORT_FOLDER = "semantic_report"
APPEARANCE_2D_FOLDER = "appearance_2d"
"""Inside the report folder: the 2D appearance model's own label maps of the scored views (labels/, labels_colour/)."""


class WithPixelColours:
    """An eval loader whose views render with their own pixels: while nerfstudio's loop handles a view, the model
    fuses each ray chunk with that view's image (rsseg-nerf's colour branch), so no full-image feature map exists."""

    def __init__(self, loader, model: SemanticModelMixin) -> None:
        self.loader, self.model = loader, model

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for camera, batch in self.loader:
            with self.model.pixel_colours(batch.get("image")):
                yield camera, batch


@dataclass
class RssegPipelineConfig(VanillaPipelineConfig):
    """VanillaPipeline with dataset-level semantic metrics and an end-of-training report."""

    _target: type = field(default_factory=lambda: RssegPipeline)
    """target class to instantiate"""
    final_report: bool = True
    """After the last training step, evaluate every eval view and write metrics.json plus label maps
    (labels/<stem>.png, labels_colour/<stem>.png) into <run>/semantic_report/."""
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)
    """The 2D appearance model and its rounds with the 3D field (README: "2D appearance model");
    --pipeline.appearance.enabled False gives 3D propagation only."""


class RssegPipeline(VanillaPipeline):
    """Adds dataset-level mIoU / accuracies / per-class IoU to nerfstudio's evaluation (ns-eval, training evals)."""

    config: RssegPipelineConfig
    _keep_label_maps: bool = False
    appearance: AppearanceDriver | None = None

    def __init__(
        self,
        config: RssegPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: GradScaler | None = None,
    ) -> None:
        # An explicit step before the datamanager reads its pseudo-labels (generation is no datamanager's job).
        from nerfseg_plugin.pseudolabels.pipeline import prepare_pseudo_labels

        prepare_pseudo_labels(config.datamanager)
        super().__init__(config, device, test_mode, world_size, local_rank, grad_scaler)

    def get_eval_image_metrics_and_images(self, step: int):
        """nerfstudio's single-view evaluation, rendered with the view's own pixels (see ``pixel_colours``)."""
        if not isinstance(self.model, SemanticModelMixin):
            return super().get_eval_image_metrics_and_images(step)
        self.eval()
        camera, batch = self.datamanager.next_eval_image(step)
        with self.model.pixel_colours(batch.get("image")):
            outputs = self.model.get_outputs_for_camera(camera)
        metrics_dict, images_dict = self.model.get_image_metrics_and_images(outputs, batch)
        metrics_dict["num_rays"] = (camera.height * camera.width * camera.size).item()
        self.train()
        return metrics_dict, images_dict

    def get_average_image_metrics(self, data_loader, image_prefix, step=None, output_path=None, get_std=False):
        model = self.model
        if not isinstance(model, SemanticModelMixin):
            return super().get_average_image_metrics(data_loader, image_prefix, step, output_path, get_std)
        model.start_semantic_evaluation(keep_label_maps=self._keep_label_maps)
        views = WithPixelColours(data_loader, model)
        try:
            metrics = super().get_average_image_metrics(views, image_prefix, step, output_path, get_std)
        finally:
            dataset_metrics = model.finish_semantic_evaluation()
        for key in SEMANTIC_SUMMARY_KEYS:  # drop the per-image means (and stds) nerfstudio computed
            metrics.pop(key, None)
            metrics.pop(f"{key}_std", None)
        if dataset_metrics is not None:
            metrics.update(semantic_metrics_dict(dataset_metrics, model.label_space, per_class=True))
            CONSOLE.print(dataset_metrics.per_class_table(model.label_space.names))
            if output_path is not None:
                report = dataset_metrics.to_dict(model.label_space.names)
                write_json_atomic(Path(output_path) / "semantic_metrics.json", report)
        return metrics

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes):
        callbacks = super().get_training_callbacks(training_callback_attributes)
        trainer = training_callback_attributes.trainer
        if self.config.appearance.enabled and trainer is not None and isinstance(self.model, SemanticModelMixin):
            self.appearance = AppearanceDriver(
                self.config.appearance,
                self.datamanager,
                self.model,
                trainer.config.max_num_iterations,
                start_step=trainer._start_step,
            )
            callbacks.append(
                TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], self.appearance.after_step)
            )
        if self.config.final_report and trainer is not None:
            callbacks.append(
                TrainingCallback(
                    [TrainingCallbackLocation.AFTER_TRAIN_ITERATION], self._report_after_last_step, args=[trainer]
                )
            )
        return callbacks

    def _report_after_last_step(self, trainer, step: int) -> None:
        if step != trainer._start_step + trainer.config.max_num_iterations - 1:
            return
        self.write_semantic_report(Path(trainer.base_dir) / REPORT_FOLDER, step)

    def write_semantic_report(self, output_dir: Path, step: int | None = None) -> dict:
        """Metrics over all eval views (metrics.json) and their label maps; prints where they are."""
        output_dir.mkdir(parents=True, exist_ok=True)
        self._keep_label_maps = True  # one render per view serves the metrics and the label maps
        try:
            metrics = self.get_average_eval_image_metrics(step=step)
        finally:
            self._keep_label_maps = False
        scored_2d = self.appearance.score_2d(self.datamanager.eval_dataset) if self.appearance is not None else None
        if scored_2d is not None:  # the 2D model alone, for the ablation's "2D only" figure
            scores_2d, label_maps_2d = scored_2d
            metrics.update(
                {
                    f"appearance_2d/{k}": v
                    for k, v in semantic_metrics_dict(scores_2d, self.model.label_space, per_class=True).items()
                }
            )
            for stem, labels in label_maps_2d.items():
                save_label_map(output_dir / APPEARANCE_2D_FOLDER, stem, labels, self.model.label_space)
        if step is not None:  # tensorboard / wandb, under nerfstudio's name for all-image evaluations
            writer.put_dict(name="Eval Images Metrics Dict (all images)", scalar_dict=metrics, step=step)
            writer.write_out_storage()
        dataset, label_space = self.datamanager.eval_dataset, self.model.label_space
        for index, labels in sorted(self.model.take_label_maps().items()):
            save_label_map(output_dir, Path(dataset.image_filenames[index]).stem, labels, label_space)
        label_space.save(output_dir / "classes.json")
        # Last and atomic: run_matrix --resume takes an existing metrics.json for a finished report.
        write_json_atomic(output_dir / "metrics.json", metrics)
        summary = ", ".join(f"{k} {metrics[k]:.3f}" for k in SEMANTIC_SUMMARY_KEYS if k in metrics)
        CONSOLE.print(f"[bold green]Semantic report ({summary})")
        CONSOLE.print(f"[bold green]  metrics:    {output_dir / 'metrics.json'}")
        CONSOLE.print(f"[bold green]  label maps: {output_dir / 'labels'} (colour: {output_dir / 'labels_colour'})")
        return metrics
