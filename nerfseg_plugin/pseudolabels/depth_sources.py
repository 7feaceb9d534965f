"""Per-view z-depth for label transfer: the scene's sparse point cloud densified, or a trained model's rendering."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from scipy.spatial import cKDTree
from torch import Tensor

from nerfseg_plugin.core.geometry import PinholeView, inside_image, pixel_centres, project, ray_distance_to_z


class DepthSource(Protocol):
    """z-depth ``[H, W]`` of view ``index`` (``inf`` where unknown), in the views' world frame."""

    def __call__(self, index: int) -> Float[Tensor, "h w"]: ...


@dataclass
class SparseDepthConfig:
    """Densifying the sparse point cloud into per-view depth maps (used when no --load-config is given)."""

    occlusion_tolerance: float = 0.05
    """A projected point is hidden when a point within about one point spacing on screen is closer by more than
    this fraction of its depth (a z-buffer at the point cloud's own screen density)."""
    neighbours: int = 4
    """Visible points interpolated per pixel (inverse-distance weights on inverse depth)."""
    max_fill_distance: float = 3.0
    """Pixels farther than this many point spacings from every visible point stay unknown."""


def densify_depth(points: Float[Tensor, "n 3"], view: PinholeView, config: SparseDepthConfig) -> Float[Tensor, "h w"]:
    """Depth map of ``view`` from sparse points: hidden points are removed with a z-buffer whose cells match the
    points' screen spacing (so a foreground surface, sampled as sparsely as the background, still hides it), then
    inverse depth (linear in screen space on planes) is interpolated from the nearest visible points. Where those
    straddle a depth edge the result matches neither surface, so the visibility check rejects it: no vote there."""
    uv, z = project(view, points)
    keep = inside_image(view, uv, z)
    uv, z = uv[keep], z[keep]
    unknown = torch.full((view.height, view.width), math.inf)
    if len(z) < 3:
        return unknown
    spacing = math.sqrt(view.width * view.height / len(z))
    cell_size = max(1.0, spacing)
    cells_w, cells_h = math.ceil(view.width / cell_size), math.ceil(view.height / cell_size)
    cell = (uv[:, 1] / cell_size).long().clamp(0, cells_h - 1) * cells_w + (uv[:, 0] / cell_size).long().clamp(
        0, cells_w - 1
    )
    nearest = torch.full((cells_h * cells_w,), math.inf).scatter_reduce(0, cell, z, reduce="amin")
    # The nearest surface of each 3x3 neighbourhood of cells: a background point between two foreground samples
    # would otherwise show through the gap.
    nearest = -F.max_pool2d(-nearest.view(1, 1, cells_h, cells_w), 3, stride=1, padding=1).reshape(-1)
    front = z <= nearest[cell] * (1 + config.occlusion_tolerance)
    uv_np, inverse = uv[front].numpy().astype(np.float64), (1.0 / z[front]).numpy().astype(np.float64)
    pixels = pixel_centres(view).numpy().astype(np.float64)
    neighbours = min(config.neighbours, len(inverse))
    distance, index = cKDTree(uv_np).query(pixels, k=neighbours)
    distance, index = distance.reshape(len(pixels), -1), index.reshape(len(pixels), -1)
    weight = 1.0 / np.maximum(distance, 1e-3) ** 2
    inverse_map = (weight * inverse[index]).sum(-1) / weight.sum(-1)
    inverse_map[distance[:, 0] > config.max_fill_distance * spacing] = np.nan
    depth = np.where(np.isfinite(inverse_map) & (inverse_map > 0), 1.0 / np.maximum(inverse_map, 1e-12), np.inf)
    return torch.from_numpy(depth.astype(np.float32)).view(view.height, view.width)


class SparsePointDepth:
    """Depth maps densified from the scene's sparse point cloud (``metadata["points3D_xyz"]``)."""

    def __init__(self, points: Float[Tensor, "n 3"], views: list[PinholeView], config: SparseDepthConfig) -> None:
        self.points = points.float().cpu()
        self.views = views
        self.config = config

    def __call__(self, index: int) -> Float[Tensor, "h w"]:
        return densify_depth(self.points, self.views[index], self.config)


class ModelDepth:
    """Depth rendered by a trained nerfstudio model (``--load-config``).

    Gaussian splatting renders z-depth ("RGB+ED"); ray-based models (nerfacto and its relatives) render the distance
    along unit rays, which is converted. ``cameras`` must be in the model's own world frame.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        cameras,
        views: list[PinholeView],
        convention: Literal["auto", "z", "ray"] = "auto",
    ) -> None:
        from nerfstudio.models.splatfacto import SplatfactoModel

        self.model, self.cameras, self.views = model, cameras, views
        self.convention = ("z" if isinstance(model, SplatfactoModel) else "ray") if convention == "auto" else convention

    @torch.no_grad()
    def __call__(self, index: int) -> Float[Tensor, "h w"]:
        camera = self.cameras[index : index + 1].to(self.model.device)
        depth = self.model.get_outputs_for_camera(camera)["depth"].reshape(camera.height.item(), camera.width.item())
        depth = depth.float().cpu()
        if self.convention == "ray":
            depth = ray_distance_to_z(depth, self.views[index])
        return torch.where(torch.isfinite(depth) & (depth > 0), depth, torch.full_like(depth, math.inf))


def load_model_depth(
    load_config: Path, scene: Path, image_names: list[str], convention: Literal["auto", "z", "ray"] = "auto"
) -> tuple[ModelDepth, list[PinholeView]]:
    """Load a trained pipeline and the views of ``image_names`` in the model's world frame.

    The model's own dataparser settings (orientation, centring, scale) are re-applied to ``scene`` with every frame
    kept, so the cameras match the frame the model was trained in even for frames it never trained on.
    """
    from nerfstudio.utils.eval_utils import eval_setup

    from nerfseg_plugin.core.errors import SceneFormatError
    from nerfseg_plugin.core.geometry import views_from_cameras

    if not load_config.is_file():
        raise SceneFormatError(load_config, "--load-config must be a trained run's config.yml")
    trainer_config, pipeline, _, _ = eval_setup(load_config, test_mode="inference")
    parser_config = trainer_config.pipeline.datamanager.dataparser
    updates = {"data": scene}
    if hasattr(parser_config, "evaluation_setting"):
        updates["evaluation_setting"] = "transductive"
    outputs = replace(parser_config, **updates).setup().get_dataparser_outputs("train")
    by_name = {Path(name).name: i for i, name in enumerate(outputs.image_filenames)}
    missing = [name for name in image_names if name not in by_name]
    if missing:
        raise SceneFormatError(load_config, f"the model's dataparser does not list images {missing[:5]} of {scene}")
    order = torch.tensor([by_name[name] for name in image_names])
    cameras = outputs.cameras[order]
    views = views_from_cameras(cameras)
    return ModelDepth(pipeline.model, cameras, views, convention), views
