"""Pipeline that reports semantic metrics at dataset level (one confusion matrix over all evaluated pixels).

nerfstudio averages per-image metrics; for segmentation that would make mIoU a mean of per-image mIoUs, which
over-weights small, easy images and classes absent from most of them. The per-image loop stays nerfstudio's; the
model accumulates the confusion matrix during it, and the pipeline replaces the semantic averages afterwards.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE

from nerfseg_plugin.semantics.model_mixin import SemanticModelMixin, semantic_metrics_dict

SEMANTIC_SUMMARY_KEYS = ("miou", "total_accuracy", "average_accuracy")


@dataclass
class RssegPipelineConfig(VanillaPipelineConfig):
    """VanillaPipeline with dataset-level semantic metrics."""

    _target: type = field(default_factory=lambda: RssegPipeline)
    """target class to instantiate"""


class RssegPipeline(VanillaPipeline):
    """Adds dataset-level mIoU / accuracies / per-class IoU to nerfstudio's evaluation (ns-eval, training evals)."""

    def get_average_image_metrics(self, data_loader, image_prefix, step=None, output_path=None, get_std=False):
        model = self.model
        if not isinstance(model, SemanticModelMixin):
            return super().get_average_image_metrics(data_loader, image_prefix, step, output_path, get_std)
        model.start_semantic_evaluation()
        try:
            metrics = super().get_average_image_metrics(data_loader, image_prefix, step, output_path, get_std)
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
                (Path(output_path) / "semantic_metrics.json").write_text(json.dumps(report, indent=2))
        return metrics
