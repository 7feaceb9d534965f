"""Semantic Gaussian splatting (paper 002) as a SplatfactoModel subclass.

Every Gaussian carries a semantic feature (``gauss_params["semantic_features"]``, so gsplat's strategy splits,
clones and prunes it with the other parameters). Features are composited with the same geometry as colour, a
per-pixel decoder maps the feature map to class logits, and the losses are splatfacto's colour loss plus
cross-entropy on labeled views, pseudo-label cross-entropy inside the boundary mask B, and the 2D/3D aggregation
losses (eq. 11).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Int
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.models.splatfacto import SplatfactoModel, get_viewmat
from torch import Tensor, nn

from nerfseg_plugin.compat import drop_unavailable_lpips, offline_lpips
from nerfseg_plugin.core.keys import PSEUDO_LABELS, PSEUDO_WEIGHTS, SEMANTIC_LABELS
from nerfseg_plugin.semantics.colormaps import FixedPCAProjection
from nerfseg_plugin.semantics.heads import SemanticDecoder
from nerfseg_plugin.semantics.losses import aggregation_loss_2d, aggregation_loss_3d
from nerfseg_plugin.semantics.model_mixin import SemanticModelMixin
from nerfseg_plugin.semantics.outputs import SEMANTIC_FEATURES_PCA, SEMANTIC_LOGITS
from nerfseg_plugin.splat.appearance import gaussian_colors
from nerfseg_plugin.splat.config import RssegSplatModelConfig
from nerfseg_plugin.splat.depth_bound import composited_depth_bound_loss, depth_bound_loss
from nerfseg_plugin.splat.initialization import gaussians_from_points
from nerfseg_plugin.splat.rasterization import rasterize, resolve_backend
from nerfseg_plugin.splat.strategy import CappedStrategy
from nerfseg_plugin.viewer.semantic_panel import SemanticViewerMixin

SEMANTIC_FEATURES = "semantic_features"
"""Per-Gaussian feature parameter name, and the rendered ``[H, W, C]`` feature map in training outputs."""
PER_PIXEL_LABEL_KEYS = (SEMANTIC_LABELS, PSEUDO_LABELS, PSEUDO_WEIGHTS)


def resize_nearest(labels: Tensor, height: int, width: int) -> Tensor:
    """Label-like maps at the render resolution (splatfacto renders at lower resolution early in training)."""
    if labels.shape[:2] == (height, width):
        return labels
    resized = F.interpolate(labels[None, None].float(), size=(height, width), mode="nearest")[0, 0]
    return resized.to(labels.dtype)


def flatness(log_scales: Tensor) -> Tensor:
    """Mean smallest / largest scale of the Gaussians (1 for spheres, 0 for flat disks); the largest is detached,
    so the gradient only thins a Gaussian's shortest axis."""
    scales = torch.exp(log_scales)
    return (scales.min(dim=-1).values / scales.max(dim=-1).values.detach()).mean()


class RssegSplatModel(SemanticViewerMixin, SemanticModelMixin, SplatfactoModel):
    """Splatfacto with semantic features; see RssegSplatModelConfig for every switch."""

    config: RssegSplatModelConfig

    def populate_modules(self) -> None:
        # Splatfacto's seed-point branch calls .cuda(); seed it with a tiny random cloud and set the Gaussians from
        # the points ourselves (same initial values as splatfacto: kNN scales, SH DC from colour, opacity 0.1).
        seed_points, self.seed_points = self.seed_points, None
        seeded = seed_points is not None and not self.config.random_init and len(seed_points[0]) > 0
        num_random = self.config.num_random
        if seeded:
            self.config.num_random = 16
        try:
            with offline_lpips():
                super().populate_modules()
        finally:
            self.config.num_random = num_random
        if seeded:
            self.gauss_params = gaussians_from_points(*seed_points, self.config.sh_degree, self.k_nearest_sklearn)
        # not saved: the depth bound's points come from the scene, like the initial Gaussians
        bound_points = seed_points[0].float() if seeded else torch.zeros(0, 3)
        self.register_buffer("depth_bound_points", bound_points, persistent=False)
        num_points = self.gauss_params["means"].shape[0]
        features = 0.01 * torch.randn(num_points, self.config.semantic_feature_dim)  # ~uniform class scores
        self.gauss_params[SEMANTIC_FEATURES] = nn.Parameter(features)
        label_space = self.setup_label_space()
        self.setup_semantic_viewer()
        self.semantic_decoder = SemanticDecoder(
            self.config.semantic_feature_dim,
            label_space.num_classes,
            hidden_dim=self.config.decoder_hidden_dim,
            num_layers=self.config.decoder_num_layers,
        )
        self.feature_pca = FixedPCAProjection(self.config.semantic_feature_dim)
        self._pca_fit_step = -1
        # splatfacto's densification settings, with growth that never passes max_gaussians
        self.strategy = CappedStrategy.like(self.strategy, self.config.max_gaussians)

    def semantic_first_step(self) -> int:
        return self.config.semantic_start_step

    def get_gaussian_param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = super().get_gaussian_param_groups()
        groups[SEMANTIC_FEATURES] = [self.gauss_params[SEMANTIC_FEATURES]]
        return groups

    def get_param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = super().get_param_groups()
        groups["semantic_decoder"] = list(self.semantic_decoder.parameters())
        return groups

    def _rasterize(
        self,
        colors: Tensor,
        viewmat: Tensor,
        K: Tensor,
        width: int,
        height: int,
        *,
        geometry_grad: bool,
        render_mode: str,
        crop_ids: Tensor | None,
        **backend_options,
    ):
        params = self.gauss_params
        means, quats, scales, opacities = params["means"], params["quats"], params["scales"], params["opacities"]
        if crop_ids is not None:
            means, quats, scales, opacities = means[crop_ids], quats[crop_ids], scales[crop_ids], opacities[crop_ids]
        if not geometry_grad:
            means, quats, scales, opacities = means.detach(), quats.detach(), scales.detach(), opacities.detach()
        return rasterize(
            means=means,
            quats=quats,
            scales=torch.exp(scales),
            opacities=torch.sigmoid(opacities).squeeze(-1),
            colors=colors,
            viewmats=viewmat,
            Ks=K,
            width=width,
            height=height,
            backend=self.config.rasterizer_backend,
            packed=False,
            near_plane=0.01,
            far_plane=1e10,
            render_mode=render_mode,
            absgrad=self.strategy.absgrad,
            rasterize_mode=self.config.rasterize_mode,
            **backend_options,
        )

    # get_outputs follows splatfacto's steps (nerfstudio 1.1.5 has no render hook: its get_outputs calls gsplat
    # directly and moves K with .cuda()); only the render step differs, the steps around it mirror splatfacto's.
    def get_outputs(self, camera: Cameras) -> dict[str, Tensor]:  # type: ignore[override]
        if not isinstance(camera, Cameras):
            return {}
        assert camera.shape[0] == 1, "one camera at a time"
        camera_to_world = self.camera_optimizer.apply_to_camera(camera) if self.training else camera.camera_to_worlds
        crop_ids = None
        if self.crop_box is not None and not self.training:
            crop_ids = self.crop_box.within(self.means).squeeze()
            if crop_ids.sum() == 0:
                return self.get_empty_outputs(
                    int(camera.width.item()), int(camera.height.item()), self.background_color
                )
        viewmat, K, width, height = self._projection(camera, camera_to_world)
        # splatfacto's choice: depth only when evaluating or when output_depth_during_training asks for it
        expected_bound = self._uses_depth_bound() and self.config.depth_bound_mode == "expected"
        with_depth = self.config.output_depth_during_training or not self.training or expected_bound
        colour, depth, alpha, feature_map = self._render_step(
            camera_to_world, viewmat, K, width, height, crop_ids, with_depth
        )
        outputs = self._composite(colour, depth, alpha, camera, width, height)
        outputs.update(self._semantic_maps(feature_map.squeeze(0)))
        return outputs

    def _projection(self, camera: Cameras, camera_to_world: Tensor) -> tuple[Tensor, Tensor, int, int]:
        """View matrix, intrinsics (on the model's device) and size at splatfacto's current downscale factor."""
        downscale = self._get_downscale_factor()
        camera.rescale_output_resolution(1 / downscale)
        viewmat = get_viewmat(camera_to_world)
        K = camera.get_intrinsics_matrices().to(self.device)
        width, height = int(camera.width.item()), int(camera.height.item())
        self.last_size = (height, width)
        self.last_projection = (viewmat, K)  # for the depth bound, at the rendered size
        camera.rescale_output_resolution(downscale)
        return viewmat, K, width, height

    def _uses_depth_bound(self) -> bool:
        return self.training and self.config.depth_bound_weight > 0 and self.depth_bound_points.shape[0] > 0

    def _depth_bound_losses(self, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """The sparse-point depth bound on the view just rendered (its projection, depth map or splats)."""
        viewmat, K = self.last_projection
        config = self.config
        if config.depth_bound_mode == "composited":
            height, width = self.last_size
            value = composited_depth_bound_loss(
                self.depth_bound_points, viewmat, K, self.info, width, height,
                config.depth_bound_margin, config.depth_bound_ray_points, config.depth_bound_max_excess,
            )  # fmt: skip
        elif outputs.get("depth") is not None:
            value = depth_bound_loss(
                self.depth_bound_points, viewmat, K, outputs["depth"],
                config.depth_bound_margin, config.depth_bound_points,
            )  # fmt: skip
        else:
            return {}
        return {"depth_bound_loss": config.depth_bound_weight * value}

    def _render_step(
        self,
        camera_to_world: Tensor,
        viewmat: Tensor,
        K: Tensor,
        width: int,
        height: int,
        crop_ids: Tensor | None,
        with_depth: bool,
    ) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        """Colour, expected depth (None without ``with_depth``), alpha and the semantic feature map, ``[1, H, W, 3]``,
        ``[1, H, W, 1]``, ``[1, H, W, 1]``, ``[1, H, W, C]``; runs the strategy's pre-backward step on the colour
        pass's info, as splatfacto does."""
        params = self.gauss_params
        pick = (lambda t: t[crop_ids]) if crop_ids is not None else (lambda t: t)
        sh_degree = (
            min(self.step // self.config.sh_degree_interval, self.config.sh_degree)
            if self.config.sh_degree > 0
            else None
        )
        colors = gaussian_colors(
            pick(params["features_dc"]),
            pick(params["features_rest"]),
            pick(params["means"]),
            camera_to_world[0, :3, 3],
            sh_degree,
        )
        features = pick(params[SEMANTIC_FEATURES])
        # One pass for colour and features when semantic gradients may reach the geometry, when there are no
        # gradients at all (rendering, evaluation), or on the CPU backend, whose backward can stop the features'
        # geometry gradients itself; otherwise (gsplat) features get a second pass over detached geometry.
        stop_feature_geometry_grad = not self.config.semantic_geometry_gradients and torch.is_grad_enabled()
        on_cpu = resolve_backend(self.config.rasterizer_backend, self.device.type == "cuda") == "cpu"
        joint = not stop_feature_geometry_grad or on_cpu
        render, alpha, self.info = self._rasterize(
            torch.cat([colors, features], -1) if joint else colors,
            viewmat,
            K,
            width,
            height,
            geometry_grad=True,
            render_mode="RGB+ED" if with_depth else "RGB",
            crop_ids=crop_ids,
            **({"geometry_grad_channels": 3} if stop_feature_geometry_grad and on_cpu else {}),
        )
        if self.training:
            self.strategy.step_pre_backward(
                self.gauss_params, self.optimizers, self.strategy_state, self.step, self.info
            )
        if joint:
            feature_map = render[..., 3 : 3 + features.shape[-1]]
        else:
            feature_map, _, _ = self._rasterize(
                features, viewmat, K, width, height, geometry_grad=False, render_mode="RGB", crop_ids=crop_ids
            )
        depth = render[..., -1:] if with_depth else None  # "RGB+ED" puts the expected depth last
        return render[..., :3], depth, alpha, feature_map

    def _composite(
        self, colour: Tensor, depth: Tensor | None, alpha: Tensor, camera: Cameras, width: int, height: int
    ) -> dict[str, Tensor]:
        """Splatfacto's outputs from a colour (+ depth) render: background, bilateral grid, depth where empty."""
        background = self._get_background_color()
        rgb = torch.clamp(colour + (1 - alpha) * background, 0.0, 1.0)
        if self.config.use_bilateral_grid and self.training and camera.metadata and "cam_idx" in camera.metadata:
            rgb = self._apply_bilateral_grid(rgb, camera.metadata["cam_idx"], height, width)
        if depth is not None:
            depth = torch.where(alpha > 0, depth, depth.detach().max()).squeeze(0)
        if background.shape[0] == 3 and not self.training:
            background = background.expand(height, width, 3)
        return {"rgb": rgb.squeeze(0), "depth": depth, "accumulation": alpha.squeeze(0), "background": background}

    def _semantic_maps(self, feature_map: Tensor) -> dict[str, Tensor]:
        """Training: logits and features for the losses; otherwise the display images and logits."""
        logits = self.semantic_decoder(feature_map)
        if self.training:  # display images are for the viewer and evaluation, not for the loss
            return {SEMANTIC_LOGITS: logits, SEMANTIC_FEATURES: feature_map}
        return {**self.semantic_outputs(logits), SEMANTIC_FEATURES_PCA: self._fixed_pca()(feature_map)}

    def _fixed_pca(self) -> FixedPCAProjection:
        """One projection per model state, fitted on the per-Gaussian features (not on a frame), so every view
        uses the same colours; refitted at most every ``pca_refit_every`` steps while training."""
        stale = self._pca_fit_step < 0 or self.step - self._pca_fit_step >= self.config.pca_refit_every
        if not bool(self.feature_pca.fitted) or stale:
            self.feature_pca.fit(self.gauss_params[SEMANTIC_FEATURES].detach())
            self._pca_fit_step = self.step
        return self.feature_pca

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> dict[str, Tensor]:
        losses = super().get_loss_dict(outputs, batch, metrics_dict)
        if self.training and self.config.flatten_weight > 0:
            losses["flatten_loss"] = self.config.flatten_weight * flatness(self.gauss_params["scales"])
        if self._uses_depth_bound():
            losses.update(self._depth_bound_losses(outputs))
        if not self.training or self.step < self.config.semantic_start_step:
            return losses
        logits = outputs[SEMANTIC_LOGITS]
        height, width = logits.shape[:2]
        semantic_batch = {k: resize_nearest(batch[k], height, width) for k in PER_PIXEL_LABEL_KEYS if k in batch}
        losses.update(
            self.semantic_supervision_losses(
                logits, semantic_batch, self.config.semantic_loss_weight, self.config.pseudo_label_loss_weight
            )
        )
        if self.appearance_targets is not None and "image_idx" in batch:
            targets, weights = self.appearance_targets.for_image(int(batch["image_idx"]), height, width)
            losses.update(
                self.appearance_supervision_loss(logits, targets, weights, semantic_batch.get(SEMANTIC_LABELS))
            )
        k = self.config.aggregation_neighbours
        if self.config.aggregation_2d_weight > 0:
            losses["aggregation_2d_loss"] = self.config.aggregation_2d_weight * aggregation_loss_2d(
                outputs[SEMANTIC_FEATURES],
                self.config.aggregation_2d_anchors,
                self.config.aggregation_2d_candidates,
                k,
                valid_mask=outputs["accumulation"][..., 0].detach() > 0.5,
            )
        if self.config.aggregation_3d_weight > 0:
            losses["aggregation_3d_loss"] = self.config.aggregation_3d_weight * aggregation_loss_3d(
                self.gauss_params[SEMANTIC_FEATURES], self.means, self.config.aggregation_3d_anchors, k
            )
        return losses

    def get_image_metrics_and_images(self, outputs, batch):
        metrics, images = super().get_image_metrics_and_images(outputs, batch)
        semantic_metrics, semantic_images = self.semantic_image_metrics(outputs, batch)
        metrics.update(semantic_metrics)
        images.update(semantic_images)
        return drop_unavailable_lpips(metrics, self.lpips), images

    def predicted_label_map(self, camera: Cameras) -> Int[Tensor, "H W"]:
        """Arg-max class per pixel for one camera (used by exporters)."""
        return torch.argmax(self.get_outputs_for_camera(camera)[SEMANTIC_LOGITS], dim=-1)
