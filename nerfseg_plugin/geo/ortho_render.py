"""True orthographic renders of a trained model, straight down the map frame's up axis, one raster tile at a time.

Splatting models go through ``rasterize(camera_model="ortho")`` (gsplat's orthographic projection on CUDA, the CPU
rasterizer's port of it elsewhere). The ortho camera is built in the map frame, with axes east, south and down and
its centre above the highest Gaussian, and composed with the model -> map transform in float64. The viewmat thus maps
model coordinates straight to tile-local metres (no float32 jitter from large UTM offsets), and the rendered depth is
the height below the camera in map units. Only the Gaussians whose 3-sigma footprint reaches the tile are
rasterized, so a tile costs what its content costs, whatever the area. NeRF models get parallel rays along the
map's -z, from above the scene down to below its lowest sparse point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from nerfseg_plugin.geo.frames import MapFrame
from nerfseg_plugin.geo.grid import RasterTile
from nerfseg_plugin.semantics.outputs import SEMANTIC_LOGITS

NO_CLASS = 255


@dataclass
class OrthoTile:
    """One rendered tile; nodata pixels (coverage below the threshold) hold NO_CLASS / NaN."""

    rgb: np.ndarray
    """``[h, w, 3]`` uint8 colour."""
    labels: np.ndarray
    """``[h, w]`` uint8 arg-max class."""
    confidence: np.ndarray
    """``[h, w]`` float32 maximum class probability."""
    height: np.ndarray
    """``[h, w]`` float32 surface height in map units."""
    valid: np.ndarray
    """``[h, w]`` bool: enough of the model was hit to trust the pixel."""


def finish_tile(
    rgb: Tensor, logits: Tensor, height: Tensor, coverage: Tensor, min_coverage: float, vertical: Sequence[int] = ()
) -> OrthoTile:
    """Arg-max, confidence, nodata masking and 8-bit colour from per-pixel renders (``[h, w, ...]`` tensors).

    The ``vertical`` classes (see ``vertical_classes.py``) take no part in the arg-max and the confidence.
    """
    logits = logits.float()
    if len(vertical) > 0:
        logits = logits.index_fill(-1, torch.as_tensor(list(vertical), device=logits.device), float("-inf"))
    probabilities = torch.softmax(logits, dim=-1)
    confidence, labels = probabilities.max(dim=-1)
    valid = (coverage.reshape(labels.shape) >= min_coverage).cpu().numpy()
    height_np = height.reshape(labels.shape).float().cpu().numpy()
    valid &= np.isfinite(height_np)
    rgb8 = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return OrthoTile(
        rgb=np.where(valid[..., None], rgb8, 0).astype(np.uint8),
        labels=np.where(valid, labels.to(torch.uint8).cpu().numpy(), NO_CLASS).astype(np.uint8),
        confidence=np.where(valid, confidence.cpu().numpy(), np.nan).astype(np.float32),
        height=np.where(valid, height_np, np.nan).astype(np.float32),
        valid=valid,
    )


def restrict_tile(tile: OrthoTile, keep: np.ndarray) -> OrthoTile:
    """The tile with every pixel outside ``keep`` turned to nodata."""
    valid = tile.valid & keep
    return OrthoTile(
        rgb=np.where(valid[..., None], tile.rgb, 0).astype(np.uint8),
        labels=np.where(valid, tile.labels, NO_CLASS).astype(np.uint8),
        confidence=np.where(valid, tile.confidence, np.nan).astype(np.float32),
        height=np.where(valid, tile.height, np.nan).astype(np.float32),
        valid=valid,
    )


def ortho_viewmat(frame: MapFrame, tile: RasterTile, camera_height: float) -> np.ndarray:
    """Model -> ortho camera (OpenCV axes: x east, y south, z down), origin at the tile's north-west corner."""
    map_to_camera = np.array(
        [
            [1.0, 0.0, 0.0, -tile.x_min],
            [0.0, -1.0, 0.0, tile.y_max],
            [0.0, 0.0, -1.0, camera_height],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    return map_to_camera @ frame.crs_from_model


class SplatOrthoRenderer:
    """Ortho tiles of a splatting model (rsseg-splat, rsseg-splat-lite)."""

    def __init__(
        self,
        model,
        frame: MapFrame,
        gsd: float,
        min_coverage: float = 0.5,
        min_opacity: float = 0.0,
        vertical: Sequence[int] = (),
    ):
        params = model.gauss_params
        self.model, self.frame, self.gsd, self.min_coverage = model, frame, gsd, min_coverage
        self.vertical = tuple(vertical)
        with torch.no_grad():
            opacity = torch.sigmoid(params["opacities"][:, 0])
            keep = (opacity >= min_opacity).cpu().numpy()
            means = params["means"].detach().cpu().numpy()
            extent = torch.exp(params["scales"]).max(dim=-1).values.cpu().numpy() * frame.metres_per_model_unit
        self.ids = np.flatnonzero(keep)
        self.means_map = frame.to_crs(means[keep])
        self.reach = 3.0 * extent[keep]
        self.camera_height = float((self.means_map[:, 2] + self.reach).max(initial=0.0)) + 1.0
        up = frame.model_from_crs[:3, :3] @ np.array([0.0, 0.0, 1.0])
        self.up_model = torch.tensor(up / np.linalg.norm(up), dtype=torch.float32, device=model.device)

    def _select(self, tile: RasterTile) -> np.ndarray:
        x, y, reach = self.means_map[:, 0], self.means_map[:, 1], self.reach
        x_max, y_min = tile.x_min + tile.width * self.gsd, tile.y_max - tile.height * self.gsd
        inside = (x + reach >= tile.x_min) & (x - reach <= x_max) & (y + reach >= y_min) & (y - reach <= tile.y_max)
        return self.ids[inside]

    @torch.no_grad()
    def render(self, tile: RasterTile) -> OrthoTile:
        from nerfseg_plugin.splat.appearance import gaussian_colors
        from nerfseg_plugin.splat.model import SEMANTIC_FEATURES
        from nerfseg_plugin.splat.rasterization import rasterize

        model, device = self.model, self.model.device
        ids = torch.from_numpy(self._select(tile)).to(device)
        h, w = tile.height, tile.width
        if ids.numel() == 0:
            empty = torch.zeros(h, w, device=device)
            return finish_tile(empty[..., None].expand(h, w, 3), empty[..., None], empty, empty, 1.0)
        params = {name: value[ids] for name, value in model.gauss_params.items()}
        means = params["means"]
        sh_degree = model.config.sh_degree if model.config.sh_degree > 0 else None
        # A camera centre far up the vertical: view-dependent colour as seen from straight above.
        centre = means.mean(dim=0) + 1e4 * self.up_model
        colors = gaussian_colors(params["features_dc"], params["features_rest"], means, centre, sh_degree)
        features = params[SEMANTIC_FEATURES]
        viewmat = torch.tensor(ortho_viewmat(self.frame, tile, self.camera_height), dtype=means.dtype, device=device)
        K = torch.tensor([[1.0 / self.gsd, 0, 0], [0, 1.0 / self.gsd, 0], [0, 0, 1]], dtype=means.dtype, device=device)
        render, alpha, _ = rasterize(
            means=means,
            quats=params["quats"],
            scales=torch.exp(params["scales"]),
            opacities=torch.sigmoid(params["opacities"]).squeeze(-1),
            colors=torch.cat([colors, features], dim=-1),
            viewmats=viewmat[None],
            Ks=K[None],
            width=w,
            height=h,
            backend=model.config.rasterizer_backend,
            packed=False,
            near_plane=0.01,
            far_plane=1e10,
            render_mode="RGB+ED",
            rasterize_mode=model.config.rasterize_mode,
            camera_model="ortho",
        )
        render, alpha = render[0], alpha[0]
        coverage = alpha[..., 0]
        # Straight colour of the covered part (the render is premultiplied by alpha).
        rgb = render[..., :3] / alpha.clamp(min=1e-6)
        logits = model.semantic_decoder(render[..., 3:-1])
        height = self.camera_height - render[..., -1]
        return finish_tile(rgb, logits, height, coverage, self.min_coverage, self.vertical)


class NerfOrthoRenderer:
    """Ortho tiles of a NeRF model (rsseg-nerf, rsseg-nerf-lite) from parallel downward rays."""

    def __init__(
        self,
        model,
        frame: MapFrame,
        gsd: float,
        height_range: tuple[float, float],
        min_coverage: float = 0.5,
        vertical: Sequence[int] = (),
    ):
        self.model, self.frame, self.gsd, self.min_coverage = model, frame, gsd, min_coverage
        self.vertical = tuple(vertical)
        self.bottom, self.top = height_range
        down = frame.model_from_crs[:3, :3] @ np.array([0.0, 0.0, -1.0])
        self.model_units_per_map_unit = float(np.linalg.norm(down))
        self.down_model = down / self.model_units_per_map_unit

    @torch.no_grad()
    def render(self, tile: RasterTile) -> OrthoTile:
        from nerfstudio.cameras.rays import RayBundle

        model, device = self.model, self.model.device
        h, w = tile.height, tile.width
        cols = tile.x_min + (np.arange(w) + 0.5) * self.gsd
        rows = tile.y_max - (np.arange(h) + 0.5) * self.gsd
        xx, yy = np.meshgrid(cols, rows)
        top = np.stack([xx.ravel(), yy.ravel(), np.full(xx.size, self.top)], -1)
        origins = torch.tensor(self.frame.to_model(top), dtype=torch.float32, device=device)
        directions = torch.tensor(self.down_model, dtype=torch.float32, device=device).expand_as(origins)
        length = (self.top - self.bottom) * self.model_units_per_map_unit
        ones = torch.ones_like(origins[:, :1])
        pixel_area = ones * float(self.gsd * self.model_units_per_map_unit) ** 2
        outputs: dict[str, list[Tensor]] = {"rgb": [], "depth": [], "accumulation": [], SEMANTIC_LOGITS: []}
        chunk = int(getattr(model.config, "eval_num_rays_per_chunk", 4096))
        for start in range(0, len(origins), chunk):
            part = slice(start, start + chunk)
            bundle = RayBundle(
                origins=origins[part],
                directions=directions[part],
                pixel_area=pixel_area[part],
                camera_indices=torch.zeros_like(ones[part], dtype=torch.long),
                nears=torch.zeros_like(ones[part]),
                fars=ones[part] * length,
                metadata={"directions_norm": ones[part]},
            )
            # get_outputs, not forward: the model's collider would replace the near/far of these rays.
            result = model.get_outputs(bundle)
            outputs["depth"].append(result.get("expected_depth", result["depth"]))
            for key in ("rgb", "accumulation", SEMANTIC_LOGITS):
                outputs[key].append(result[key])
        merged = {key: torch.cat(values).reshape(h, w, -1) for key, values in outputs.items()}
        height = self.top - merged["depth"][..., 0] / self.model_units_per_map_unit
        return finish_tile(
            merged["rgb"],
            merged[SEMANTIC_LOGITS],
            height,
            merged["accumulation"][..., 0],
            self.min_coverage,
            self.vertical,
        )
