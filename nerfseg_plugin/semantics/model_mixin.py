"""What both methods' models share on top of their nerfstudio parent: outputs, supervision losses, metrics.

A mixin (listed before ``NerfactoModel`` / ``SplatfactoModel`` in the bases) so each method keeps its parent's
rendering and only adds the semantic contract once.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

import numpy as np
import torch
from jaxtyping import Float, Int
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor

from nerfseg_plugin.core.keys import PSEUDO_LABELS, PSEUDO_WEIGHTS, SEMANTIC_GT, SEMANTIC_LABELS, SEMANTICS_METADATA_KEY
from nerfseg_plugin.core.label_space import LabelSpace
from nerfseg_plugin.semantics.colormaps import label_colormap
from nerfseg_plugin.semantics.losses import semantic_cross_entropy
from nerfseg_plugin.semantics.metrics import ConfusionMatrix, SegmentationMetrics
from nerfseg_plugin.semantics.outputs import SEMANTIC_LOGITS, label_map, predicted_labels, semantic_render_outputs

SEMANTIC_LOSS = "semantic_loss"
PSEUDO_LABEL_LOSS = "pseudo_label_loss"
APPEARANCE_LOSS = "appearance_loss"


class PixelTargets(Protocol):
    """Per-view class targets and weights the 3D field is supervised with (the 2D appearance model's
    ``AppearanceTargets``); a protocol so this layer does not import the model that fills it."""

    def for_image(self, index: int, height: int, width: int) -> tuple[Int[Tensor, "H W"], Float[Tensor, "H W"]]: ...

    def for_rays(self, indices: Int[Tensor, "R 3"]) -> tuple[Int[Tensor, " R"], Float[Tensor, " R"]]: ...


class SemanticModelMixin:
    """Semantic output contract, label/pseudo-label losses and dataset-level metric accumulation."""

    label_space: LabelSpace
    kwargs: dict
    device: torch.device
    appearance_targets: PixelTargets | None = None
    """Per-view 2D appearance predictions supervising the 3D field (set by the pipeline after each 2D round)."""
    appearance_loss_weight: float = 0.0

    def semantic_first_step(self) -> int:
        """First training step at which the semantic field learns (2D rounds are scheduled after it)."""
        return 0

    def set_appearance_targets(self, targets: PixelTargets | None, loss_weight: float) -> None:
        """Supervise the semantic field with these 2D predictions from now on (None: stop)."""
        self.appearance_targets = targets
        self.appearance_loss_weight = loss_weight

    def appearance_supervision_loss(
        self,
        logits: Float[Tensor, "*batch K"],
        targets: Tensor,
        weights: Tensor,
        user_labels: Tensor | None,
    ) -> dict[str, Tensor]:
        """Cross-entropy against the 2D predictions, weighted by their confidence; never where the user labeled
        (real labels win). Averaged over all pixels (rays) of the batch without a user label, not only the
        supervised ones: where the 2D model supervises a few pixels (an orbit, where the labels reach almost
        everywhere) its pull stays as small as their share instead of a full-strength loss on them. User-labeled
        pixels are left out of that share, so a batch's mix (rsseg-nerf's stage-2 batches are half labeled rays)
        does not dilute it. Empty when no 2D round has run yet."""
        if self.appearance_targets is None or self.appearance_loss_weight <= 0:
            return {}
        targets, weights = targets.to(logits.device), weights.to(logits.device)
        labeled = torch.zeros_like(weights, dtype=torch.bool)
        if user_labels is not None:
            labeled = user_labels.to(logits.device) != self.label_space.ignore_index
            weights = torch.where(labeled, 0.0, weights)
        valid = weights > 0
        loss = semantic_cross_entropy(logits[valid], targets[valid], self.label_space.ignore_index, weights[valid])
        unlabeled = (~labeled).sum().clamp(min=1)  # a tensor: no host sync per step
        share = weights[valid].sum() / unlabeled  # sum(w * ce) / #pixels without a user label
        return {APPEARANCE_LOSS: self.appearance_loss_weight * share * loss}

    def pixel_colours(self, image: Tensor | None) -> contextlib.AbstractContextManager:
        """Context in which renders may use ``image`` (the view's captured pixels); models whose semantics do not
        take pixel colours ignore it."""
        return contextlib.nullcontext()

    def setup_label_space(self) -> LabelSpace:
        """The scene's label space, handed to every model through the pipeline's dataset metadata."""
        metadata = self.kwargs.get("metadata") or {}
        if SEMANTICS_METADATA_KEY not in metadata:
            raise ValueError("rsseg models need the rsseg-data dataparser (its metadata carries the label space)")
        self.label_space = metadata[SEMANTICS_METADATA_KEY].label_space
        self._evaluation_confusion: ConfusionMatrix | None = None
        self._kept_label_maps: dict[int, np.ndarray] | None = None
        return self.label_space

    def render_view(self, camera: Cameras, image: Float[Tensor, "H W C"] | None = None) -> dict[str, Tensor]:
        """Outputs for one camera. ``image``: the captured view's own image when there is one (evaluation, label
        maps of dataset views); models whose semantics read the pixel colour use it (rsseg-nerf's colour branch)."""
        with self.pixel_colours(image):
            return self.get_outputs_for_camera(camera)  # type: ignore[attr-defined]

    @property
    def class_colors(self) -> Float[Tensor, "K 3"]:
        return torch.from_numpy(self.label_space.colors_uint8).float() / 255.0

    def semantic_outputs(self, logits: Float[Tensor, "*batch K"]) -> dict[str, Tensor]:
        """Logits plus the float display images (colour map, confidence, entropy)."""
        outputs = semantic_render_outputs(logits, self.class_colors.to(logits.device), self.label_space.ignore_index)
        outputs[SEMANTIC_LOGITS] = logits
        return outputs

    def semantic_supervision_losses(
        self,
        logits: Float[Tensor, "*batch K"],
        batch: dict,
        label_weight: float,
        pseudo_label_weight: float,
    ) -> dict[str, Tensor]:
        """Cross-entropy on labeled pixels and, where pseudo-labels exist, on pseudo-labeled pixels (weighted by
        confidence inside the boundary mask B). Keys absent from ``batch`` (eval batches) give no loss."""
        losses: dict[str, Tensor] = {}
        ignore = self.label_space.ignore_index
        if SEMANTIC_LABELS in batch and label_weight > 0:
            labels = batch[SEMANTIC_LABELS].to(logits.device)
            valid = labels != ignore
            # Most views carry no labels: gather the labeled pixels first instead of a full-image softmax.
            losses[SEMANTIC_LOSS] = label_weight * semantic_cross_entropy(logits[valid], labels[valid], ignore)
        if PSEUDO_LABELS in batch and pseudo_label_weight > 0:
            pseudo = batch[PSEUDO_LABELS].to(logits.device)
            weights = batch[PSEUDO_WEIGHTS].to(logits.device)
            valid = (pseudo != ignore) & (weights > 0)
            losses[PSEUDO_LABEL_LOSS] = pseudo_label_weight * semantic_cross_entropy(
                logits[valid], pseudo[valid], ignore, weights[valid]
            )
        return losses

    def semantic_image_metrics(
        self, outputs: dict[str, Tensor], batch: dict
    ) -> tuple[dict[str, float], dict[str, Tensor]]:
        """Per-image semantic metrics and a GT | prediction image; feeds the running dataset-level confusion (and
        keeps the view's label map when the evaluation was started with ``keep_label_maps``)."""
        if SEMANTIC_LOGITS in outputs and self._kept_label_maps is not None and "image_idx" in batch:
            self._kept_label_maps[int(batch["image_idx"])] = label_map(outputs, self.label_space.ignore_index)
        if SEMANTIC_GT not in batch or SEMANTIC_LOGITS not in outputs:
            return {}, {}
        gt = batch[SEMANTIC_GT].to(outputs[SEMANTIC_LOGITS].device)
        prediction = predicted_labels(outputs[SEMANTIC_LOGITS])
        confusion = ConfusionMatrix(self.label_space.num_classes, self.label_space.ignore_index)
        confusion.update(prediction, gt)
        if self._evaluation_confusion is not None:
            self._evaluation_confusion.merge(confusion)
        metrics = semantic_metrics_dict(confusion.compute(), self.label_space, per_class=False)
        colors = self.class_colors.to(gt.device)
        gt_image = label_colormap(gt, colors, self.label_space.ignore_index)
        pred_image = label_colormap(prediction, colors, self.label_space.ignore_index)
        return metrics, {"semantics": torch.cat([gt_image, pred_image], dim=1)}

    def start_semantic_evaluation(self, keep_label_maps: bool = False) -> None:
        """Begin accumulating one confusion matrix over every evaluated image; with ``keep_label_maps`` also keep
        each image's label map (by image index) so a report can write them without rendering again."""
        self._evaluation_confusion = ConfusionMatrix(self.label_space.num_classes, self.label_space.ignore_index)
        self._kept_label_maps = {} if keep_label_maps else None

    def take_label_maps(self) -> dict[int, np.ndarray]:
        """The label maps kept since ``start_semantic_evaluation(keep_label_maps=True)``, by image index."""
        kept, self._kept_label_maps = self._kept_label_maps or {}, None
        return kept

    def finish_semantic_evaluation(self) -> SegmentationMetrics | None:
        confusion, self._evaluation_confusion = self._evaluation_confusion, None
        if confusion is None or int(confusion.matrix.sum()) == 0:
            return None
        return confusion.compute()


def semantic_metrics_dict(metrics: SegmentationMetrics, label_space: LabelSpace, per_class: bool) -> dict[str, float]:
    """Flat float metrics (as nerfstudio logs them): mIoU, accuracies and, optionally, per-class IoU/accuracy."""
    flat = {
        "miou": float(metrics.miou),
        "total_accuracy": float(metrics.total_accuracy),
        "average_accuracy": float(metrics.average_accuracy),
    }
    if per_class:
        flat["num_semantic_pixels"] = float(metrics.num_pixels)
        for index, name in enumerate(label_space.names):
            if bool(metrics.class_present[index]):
                flat[f"iou/{name}"] = float(metrics.per_class_iou[index])
                flat[f"accuracy/{name}"] = float(metrics.per_class_accuracy[index])
    return flat
