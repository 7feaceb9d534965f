"""``rsseg-nerf``: paper 000's two-stage semantic NeRF on top of nerfacto.

Stage 1 is nerfacto unchanged (hash grid, proposal sampling, RGB losses). From ``semantic_stage_start`` on, the
field, the proposal networks and the camera optimizer are frozen and nerfacto's forward pass runs without autograd;
the :class:`SemanticBranch` then maps the frozen density features of the final samples to semantic features, applies
the ray convolution, renders them with the frozen weights and classifies them, fused with the colour-radiance
feature of each ray's colour. Only the semantic branch receives gradients in stage 2 (paper: the location MLP is
frozen and the view MLP is no longer used, so RGB does not train either).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from jaxtyping import Float
from nerfstudio.cameras.rays import RayBundle, RaySamples
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.field_components.encodings import HashEncoding
from nerfstudio.field_components.mlp import MLP, MLPWithHashEncoding
from nerfstudio.models.nerfacto import NerfactoModel
from torch import Tensor, nn

from nerfseg_plugin.compat import drop_unavailable_lpips, offline_lpips
from nerfseg_plugin.core.keys import SEMANTIC_LABELS
from nerfseg_plugin.nerf.config import RssegNerfModelConfig
from nerfseg_plugin.nerf.datamanager import PIXEL_RGB
from nerfseg_plugin.nerf.hash_encoding import use_torch_hash_encoding
from nerfseg_plugin.nerf.semantic_branch import SemanticBranch
from nerfseg_plugin.semantics.colormaps import FixedPCAProjection
from nerfseg_plugin.semantics.model_mixin import SemanticModelMixin
from nerfseg_plugin.semantics.outputs import SEMANTIC_FEATURES_PCA, SEMANTIC_LOGITS
from nerfseg_plugin.viewer.semantic_panel import SemanticViewerMixin

COLOUR_LOGITS = "colour_semantics"
"""C2S logits from the colour feature alone, ``[R, K]`` (training outputs, for the auxiliary loss L_c)."""


class FinalSamplesRecorder:
    """Captures, during one nerfacto forward pass, what its ``get_outputs`` computes for the final samples but does
    not return outside training: the samples and their render weights (from the expected-depth renderer, which
    nerfacto calls exactly once per pass, on the final samples) and the field's density features: the output of the
    field's ``mlp_base`` (first channel the density, then nerfacto's geo features), its input (the samples'
    positions as the field normalised them) and, when given, the hash-grid encoding that feeds it. Proposal
    networks have their own modules, so only the final samples are recorded.

    Forward hooks rather than a re-implementation keep nerfacto's sampling and rendering the single source of truth.
    """

    def __init__(
        self, field_base: nn.Module, expected_depth_renderer: nn.Module, encoding: nn.Module | None = None
    ) -> None:
        self._active = False
        self._captured: dict[str, object] = {}
        field_base.register_forward_hook(self._capture("base"))
        if encoding is not None:
            encoding.register_forward_hook(self._capture("encoding"))
        expected_depth_renderer.register_forward_hook(self._on_expected_depth, with_kwargs=True)

    def _capture(self, key: str):
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            if self._active:
                self._captured[key] = output
                self._captured[f"{key}_input"] = args[0]

        return hook

    def _on_expected_depth(self, module: nn.Module, args: tuple, kwargs: dict, output: Tensor) -> None:
        if self._active:
            self._captured["weights"], self._captured["samples"] = kwargs["weights"], kwargs["ray_samples"]

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        self._captured = {}
        self._active = True
        try:
            yield
        finally:
            self._active = False

    def take(self) -> tuple[RaySamples, Float[Tensor, "R S 1"], Float[Tensor, "R S D"], Float[Tensor, "R S 3"]]:
        """Samples, weights, density features and normalised positions of the last recorded pass: the geo features
        (density channel dropped), preceded by the hash-grid encoding when an encoding module was given, and the
        positions in the field's normalised [0, 1] cube (nerfacto's contraction; zero outside it)."""
        captured, self._captured = self._captured, {}
        if {"samples", "weights", "base"} - captured.keys():
            raise RuntimeError("no nerfacto forward pass was recorded (did get_outputs call the field?)")
        samples, weights = captured["samples"], captured["weights"]
        assert isinstance(samples, RaySamples) and isinstance(weights, Tensor)
        leading = weights.shape[:-1]
        # tinycudann returns half precision; the semantic branch runs in float32.
        features = [captured["base"].view(*leading, -1)[..., 1:].float()]  # type: ignore[union-attr]
        if "encoding" in captured:
            features.insert(0, captured["encoding"].view(*leading, -1).float())  # type: ignore[union-attr]
        positions = captured["base_input"].view(*leading, 3).float()  # type: ignore[union-attr]
        return samples, weights, torch.cat(features, dim=-1), positions


def expose_hash_encoding(density_network: MLPWithHashEncoding) -> HashEncoding:
    """The hash-grid encoding inside nerfacto's density network, as a module whose output can be read.

    nerfstudio's torch build is ``Sequential(HashEncoding, MLP)`` already. With tinycudann it fuses both into one
    kernel that never returns the encoding; the same two parts are then built as separate tinycudann modules (same
    sizes, still tinycudann, freshly initialised like the fused one: this runs before any training).
    """
    parts = getattr(density_network, "model", None)
    if isinstance(parts, nn.Sequential) and isinstance(parts[0], HashEncoding):
        return parts[0]
    encoding = HashEncoding(
        num_levels=density_network.num_levels,
        min_res=density_network.min_res,
        max_res=density_network.max_res,
        log2_hashmap_size=density_network.log2_hashmap_size,
        features_per_level=density_network.features_per_level,
        hash_init_scale=density_network.hash_init_scale,
        implementation="tcnn",
    )
    mlp = MLP(
        in_dim=encoding.get_out_dim(),
        num_layers=density_network.num_layers,
        layer_width=density_network.layer_width,
        out_dim=density_network.out_dim,
        activation=density_network.activation,
        out_activation=density_network.out_activation,
        implementation="tcnn",
    )
    density_network.model = nn.Sequential(encoding, mlp)
    return encoding


class RssegNerfModel(SemanticViewerMixin, SemanticModelMixin, NerfactoModel):
    """nerfacto + the semantic stage of paper 000 (Seg-MLP, ray convolution, colour radiance, F2S / C2S)."""

    config: RssegNerfModelConfig

    def populate_modules(self) -> None:
        with offline_lpips():
            super().populate_modules()
        label_space = self.setup_label_space()
        self.setup_semantic_viewer()
        cfg = self.config
        encoding = expose_hash_encoding(self.field.mlp_base) if cfg.seg_mlp_input == "encoding+geo" else None
        encoding_dim = encoding.get_out_dim() if encoding is not None else 0
        self.semantic_grid = self._build_semantic_grid() if cfg.semantic_grid else None
        grid_dim = self.semantic_grid.get_out_dim() if self.semantic_grid is not None else 0
        self.semantic_branch = SemanticBranch(
            density_feature_dim=encoding_dim + self.field.geo_feat_dim + grid_dim,
            num_classes=label_space.num_classes,
            feature_dim=cfg.semantic_feature_dim,
            seg_mlp_num_layers=cfg.seg_mlp_num_layers,
            use_ray_convolution=cfg.use_ray_convolution,
            ray_conv_distance_scale=cfg.ray_conv_distance_scale,
            learn_ray_conv_distance_scale=cfg.learn_ray_conv_distance_scale,
            use_colour_radiance=cfg.use_colour_radiance,
            colour_radiance_num_layers=cfg.colour_radiance_num_layers,
            f2s_hidden_dim=cfg.f2s_hidden_dim,
            f2s_num_layers=cfg.f2s_num_layers,
        )
        self.geometry_frozen = False
        self._recorder = FinalSamplesRecorder(self.field.mlp_base, self.renderer_expected_depth, encoding)
        use_torch_hash_encoding(self)  # same outputs, ~1.5x faster torch hash grids (CPU, no tinycudann)

    def _build_semantic_grid(self) -> HashEncoding:
        """The semantic branch's own hash grid (``semantic_grid``), from 16 to the density field's finest
        resolution, in the field's implementation (tinycudann on GPU when installed, torch otherwise)."""
        cfg = self.config
        return HashEncoding(
            num_levels=cfg.semantic_grid_num_levels,
            min_res=16,
            max_res=cfg.max_res,
            log2_hashmap_size=cfg.semantic_grid_log2_hashmap_size,
            features_per_level=2,
            implementation=cfg.implementation,
        )

    def get_param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = super().get_param_groups()
        groups["semantics"] = list(self.semantic_branch.parameters())
        if self.semantic_grid is not None:
            groups["semantics"] += list(self.semantic_grid.parameters())
        return groups

    # --- stages -----------------------------------------------------------------------------------------------
    def semantic_first_step(self) -> int:
        return self.config.semantic_stage_start

    def in_semantic_stage(self, step: int) -> bool:
        """Whether ``step`` belongs to stage 2 (the datamanager follows this to switch to labeled rays)."""
        return step >= self.config.semantic_stage_start

    def freeze_geometry(self) -> None:
        """Stage 2: nothing of the reconstruction trains any more. ``requires_grad=False`` leaves these parameters
        without gradients, so Adam skips them (no momentum drift), and the forward pass runs under ``no_grad``."""
        for module in (self.field, self.proposal_networks, self.camera_optimizer):
            module.requires_grad_(False)
        self.geometry_frozen = True

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> list:
        def enter_semantic_stage(step: int) -> None:
            if self.in_semantic_stage(step) and not self.geometry_frozen:
                self.freeze_geometry()

        stage = TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], enter_semantic_stage)
        return [stage, *super().get_training_callbacks(training_callback_attributes)]

    # --- forward ----------------------------------------------------------------------------------------------
    def get_outputs(self, ray_bundle: RayBundle) -> dict[str, Tensor | list]:
        if self.training and not self.geometry_frozen:
            return super().get_outputs(ray_bundle)  # stage 1: plain nerfacto, no semantic work
        frozen = torch.no_grad() if self.geometry_frozen else contextlib.nullcontext()
        with frozen, self._recorder.recording():
            outputs = super().get_outputs(ray_bundle)
        ray_samples, weights, density_features, positions = self._recorder.take()
        midpoints = (ray_samples.frustums.starts + ray_samples.frustums.ends) / 2
        sample_features = density_features.detach()
        if self.semantic_grid is not None:  # trained by the semantic losses only (outside the frozen pass)
            leading = positions.shape[:-1]
            grid_features = self.semantic_grid(positions.detach().reshape(-1, 3)).view(*leading, -1).float()
            sample_features = torch.cat([sample_features, grid_features], dim=-1)
        rendered = self.semantic_branch.render_features(sample_features, midpoints.detach(), weights)
        logits, colour_logits = self.semantic_branch.classify(rendered, self._colour_input(ray_bundle, outputs))
        outputs.update(self.semantic_outputs(logits))
        if self.training and colour_logits is not None:
            outputs[COLOUR_LOGITS] = colour_logits
        if not self.training:  # the viewer's feature view: 3 channels per ray, never the C-channel features
            outputs[SEMANTIC_FEATURES_PCA] = self._feature_pca(rendered)
        return outputs

    def _feature_pca(self, features: Float[Tensor, "*batch C"]) -> Float[Tensor, "*batch 3"]:
        """A fixed PCA display of the rendered features, fitted on the first chunk rendered in eval mode. A plain
        attribute, not a submodule, so checkpoints stay as they were."""
        if getattr(self, "_feature_pca_projection", None) is None:
            object.__setattr__(self, "_feature_pca_projection", FixedPCAProjection(features.shape[-1]))
        return self._feature_pca_projection.to(features.device)(features)

    def _colour_input(self, ray_bundle: RayBundle, outputs: dict) -> Tensor | None:
        """The pixel colour the datamanager attached to training rays, else the rendered RGB (see colour_input)."""
        if not self.semantic_branch.uses_colour:
            return None
        pixel = ray_bundle.metadata.get(PIXEL_RGB) if self.config.colour_input == "pixel" else None
        return pixel[..., :3] if pixel is not None else outputs["rgb"].detach()

    @contextlib.contextmanager
    def pixel_colours(self, image: Float[Tensor, "H W C"] | None) -> Iterator[None]:
        """While active, full-image renders feed each ray chunk's colour branch with these captured pixel colours
        (the paper's setting) instead of the rendered RGB, so the semantic fusion happens per chunk and the
        outputs hold class maps only. A no-op without the colour branch or with ``colour_input="rendered"``."""
        previous = getattr(self, "_pixel_colours", None)
        use = image is not None and self.semantic_branch.uses_colour and self.config.colour_input == "pixel"
        object.__setattr__(self, "_pixel_colours", image if use else None)
        try:
            yield
        finally:
            object.__setattr__(self, "_pixel_colours", previous)

    @torch.no_grad()
    def get_outputs_for_camera_ray_bundle(self, camera_ray_bundle: RayBundle) -> dict[str, Tensor]:
        image = getattr(self, "_pixel_colours", None)
        if image is not None:  # nerfstudio slices metadata with the rays: every chunk gets its own pixels
            if image.shape[:2] != camera_ray_bundle.origins.shape[:2]:
                size = tuple(camera_ray_bundle.origins.shape[:2])
                raise ValueError(f"image {tuple(image.shape)} does not match the rendered view {size}")
            camera_ray_bundle.metadata[PIXEL_RGB] = image[..., :3].to(camera_ray_bundle.origins)
        return super().get_outputs_for_camera_ray_bundle(camera_ray_bundle)

    # --- losses and metrics -----------------------------------------------------------------------------------
    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> dict[str, Tensor]:
        if not (self.training and self.geometry_frozen):
            return super().get_loss_dict(outputs, batch, metrics_dict)
        cfg = self.config
        losses = self.semantic_supervision_losses(
            outputs[SEMANTIC_LOGITS], batch, cfg.label_loss_weight, cfg.pseudo_label_weight
        )
        appearance = self._appearance_targets_of(batch)
        if appearance is not None:
            losses.update(self.appearance_supervision_loss(outputs[SEMANTIC_LOGITS], *appearance))
        if COLOUR_LOGITS in outputs:
            colour_losses = self.semantic_supervision_losses(
                outputs[COLOUR_LOGITS],
                batch,
                cfg.label_loss_weight * cfg.colour_loss_weight,
                cfg.pseudo_label_weight * cfg.colour_loss_weight,
            )
            if appearance is not None:  # C2S learns from the 2D predictions like from pseudo-labels
                colour_appearance = self.appearance_supervision_loss(outputs[COLOUR_LOGITS], *appearance)
                colour_losses.update({k: cfg.colour_loss_weight * v for k, v in colour_appearance.items()})
            losses.update({f"colour_{name}": loss for name, loss in colour_losses.items()})
        return losses

    def _appearance_targets_of(self, batch: dict) -> tuple[Tensor, Tensor, Tensor | None] | None:
        """2D targets, weights and user labels of a stage-2 ray batch, when a 2D round has run."""
        if self.appearance_targets is None or "indices" not in batch:
            return None
        targets, weights = self.appearance_targets.for_rays(batch["indices"])
        return targets, weights, batch.get(SEMANTIC_LABELS)

    def get_image_metrics_and_images(
        self, outputs: dict[str, Tensor], batch: dict[str, Tensor]
    ) -> tuple[dict[str, float], dict[str, Tensor]]:
        metrics, images = super().get_image_metrics_and_images(outputs, batch)
        metrics = drop_unavailable_lpips(metrics, self.lpips)
        semantic_metrics, semantic_images = self.semantic_image_metrics(outputs, batch)
        metrics.update(semantic_metrics)
        images.update(semantic_images)
        return metrics, images
