"""Render a trained pipeline's views once for everything the report needs: the dataset-level confusion matrix over
the evaluation views, their render times, and (for the view-consistency score) label and z-depth maps.

The evaluation views are iterated exactly as nerfstudio's ``get_average_image_metrics`` does (its
``FixedIndicesEvalDataloader``, the model's outputs for the camera given the view's image (``render_view``, which
rsseg-nerf's pixel-colour branch reads as its metrics do), arg-max of the ``semantics`` logits against
``semantic_gt``), so ``rsseg-eval`` and ``ns-eval`` report the same mIoU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from nerfstudio.data.utils.dataloaders import FixedIndicesEvalDataloader

from nerfseg_plugin.core.geometry import PinholeView, depth_convention, ray_distance_to_z, view_from_cameras
from nerfseg_plugin.core.keys import SEMANTIC_GT
from nerfseg_plugin.semantics.metrics import ConfusionMatrix
from nerfseg_plugin.semantics.outputs import SEMANTIC_LOGITS, predicted_labels


@dataclass
class RenderedViews:
    """What one pass over the views produced."""

    confusion: ConfusionMatrix
    seconds_per_view: dict[str, float] = field(default_factory=dict)
    """Render time of each scored (evaluation) view, by image stem."""
    views: list[PinholeView] = field(default_factory=list)
    """Cameras of the views kept for the consistency score."""
    label_maps: list[np.ndarray] = field(default_factory=list)
    """``[H, W]`` uint8 predicted labels of those views."""
    depth_maps: list[np.ndarray | None] = field(default_factory=list)
    """``[H, W]`` float32 rendered z-depth of those views (None when the model renders no depth)."""
    ground_truth_maps: list[np.ndarray | None] = field(default_factory=list)
    """``[H, W]`` ground-truth labels of those views (None for views without ground truth)."""
    psnr_per_view: dict[str, float] = field(default_factory=dict)
    """RGB PSNR (dB) of each scored view against its image: shows whether semantic training cost geometry."""

    @property
    def mean_psnr(self) -> float | None:
        return float(np.mean(list(self.psnr_per_view.values()))) if self.psnr_per_view else None


def _synchronise(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def _render(model: torch.nn.Module, camera, device, image=None) -> tuple[dict[str, torch.Tensor], float]:
    _synchronise(device)
    started = time.perf_counter()
    outputs = model.render_view(camera, image)
    _synchronise(device)
    return outputs, time.perf_counter() - started


def rgb_psnr(rendered: torch.Tensor, image: torch.Tensor) -> float:
    """PSNR in dB of a rendered ``[H, W, 3]`` image in [0, 1] against the captured one (alpha channel dropped)."""
    image = image[..., :3].to(rendered)
    if image.shape != rendered.shape:
        raise ValueError(f"image {tuple(image.shape)} does not match the render {tuple(rendered.shape)}")
    mse = torch.mean((rendered.clamp(0, 1) - image) ** 2).clamp(min=1e-10)
    return float(-10.0 * torch.log10(mse))


def render_pipeline_views(pipeline, keep_views: Literal["none", "eval", "all"] = "eval") -> RenderedViews:
    """Score every evaluation view; keep label and z-depth maps of ``keep_views`` for the consistency score
    ("all" adds the training views that are not evaluation views)."""
    model = pipeline.model
    label_space = model.label_space
    convention = depth_convention(model)
    result = RenderedViews(ConfusionMatrix(label_space.num_classes, label_space.ignore_index))

    def keep(camera, outputs: dict[str, torch.Tensor], labels: torch.Tensor, gt: torch.Tensor | None) -> None:
        view = view_from_cameras(camera.to("cpu"))
        result.views.append(view)
        result.label_maps.append(labels.to(torch.uint8).cpu().numpy())
        result.ground_truth_maps.append(None if gt is None else gt.cpu().numpy())
        if "depth" not in outputs:
            result.depth_maps.append(None)
            return
        depth = outputs["depth"][..., 0].float().cpu().numpy()
        result.depth_maps.append((depth if convention == "z" else ray_distance_to_z(depth, view)).astype(np.float32))

    eval_dataset = pipeline.datamanager.eval_dataset
    loader = FixedIndicesEvalDataloader(eval_dataset, device=pipeline.device)
    stems = set()
    for index, (camera, batch) in zip(loader.image_indices, loader, strict=True):
        stem = Path(eval_dataset.image_filenames[index]).stem
        stems.add(stem)
        outputs, seconds = _render(model, camera, pipeline.device, batch.get("image"))
        labels = predicted_labels(outputs[SEMANTIC_LOGITS])
        if SEMANTIC_GT in batch:
            result.confusion.update(labels, batch[SEMANTIC_GT])
            result.seconds_per_view[stem] = seconds
            if "image" in batch and "rgb" in outputs:
                result.psnr_per_view[stem] = rgb_psnr(outputs["rgb"], batch["image"])
        if keep_views != "none":
            keep(camera, outputs, labels, batch.get(SEMANTIC_GT))
    if keep_views == "all":
        train_dataset = pipeline.datamanager.train_dataset
        cameras = train_dataset.cameras.to(pipeline.device)
        for index, name in enumerate(train_dataset.image_filenames):
            if Path(name).stem not in stems:  # transductive: evaluation views are training views too
                image = train_dataset.get_image_float32(index).to(pipeline.device)
                outputs, _ = _render(model, cameras[index : index + 1], pipeline.device, image)
                keep(cameras[index : index + 1], outputs, predicted_labels(outputs[SEMANTIC_LOGITS]), None)
    return result


def sparse_points(pipeline) -> np.ndarray | None:
    """The scene's sparse points in the cameras' (dataparser-transformed) frame, or None without a point cloud."""
    outputs = getattr(pipeline.datamanager, "train_dataparser_outputs", None)
    points = None if outputs is None else outputs.metadata.get("points3D_xyz")
    return None if points is None else points.detach().cpu().numpy().astype(np.float64)
