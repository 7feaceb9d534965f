"""The NeRF paper's stage-2 network (section II-C): Seg-MLP, ray convolution, volume rendering of the semantic
features, colour-radiance branch and the F2S / C2S prediction heads. Independent of nerfacto: it takes per-sample
density features, sample positions along the ray and the (frozen) render weights."""

from __future__ import annotations

import torch
from jaxtyping import Float
from nerfstudio.field_components.mlp import MLP
from nerfstudio.model_components.renderers import SemanticRenderer
from torch import Tensor, nn

from nerfseg_plugin.nerf.ray_convolution import RayConvolution
from nerfseg_plugin.semantics.heads import ColourRadianceHead, SemanticDecoder


class SemanticBranch(nn.Module):
    """Per-sample features -> (ray convolution) -> rendered ray feature ``S_s(r)`` -> F2S logits, and the pixel
    colour -> ``N(r)`` -> C2S logits (the auxiliary head that keeps ``N(r)`` discriminative, eq. 7)."""

    def __init__(
        self,
        density_feature_dim: int,
        num_classes: int,
        feature_dim: int = 128,
        seg_mlp_num_layers: int = 2,
        use_ray_convolution: bool = True,
        ray_conv_distance_scale: float = 0.02,
        learn_ray_conv_distance_scale: bool = True,
        use_colour_radiance: bool = True,
        colour_radiance_num_layers: int = 2,
        f2s_hidden_dim: int = 128,
        f2s_num_layers: int = 2,
    ) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        # Seg-MLP: the density features of each sample to its semantic feature s_i. The ReLU output keeps the
        # features non-negative, like the paper's MLP features before rendering.
        self.seg_mlp = MLP(
            in_dim=density_feature_dim,
            num_layers=seg_mlp_num_layers,
            layer_width=feature_dim,
            out_dim=feature_dim,
            activation=nn.ReLU(),
            out_activation=nn.ReLU(),
            implementation="torch",
        )
        self.ray_convolution = (
            RayConvolution(feature_dim, ray_conv_distance_scale, learn_ray_conv_distance_scale)
            if use_ray_convolution
            else None
        )
        self.renderer = SemanticRenderer()  # eq. 5: sum_i w_i s_i with the frozen geometry's weights
        self.colour_radiance = (
            ColourRadianceHead(feature_dim, colour_radiance_num_layers) if use_colour_radiance else None
        )
        fused_dim = feature_dim * (2 if use_colour_radiance else 1)
        self.f2s = SemanticDecoder(fused_dim, num_classes, f2s_hidden_dim, f2s_num_layers)
        # C2S is "another classification layer" on N(r): a single linear layer.
        self.c2s = SemanticDecoder(feature_dim, num_classes) if use_colour_radiance else None

    @property
    def uses_colour(self) -> bool:
        return self.colour_radiance is not None

    def render_features(
        self,
        density_features: Float[Tensor, "*rays samples D"],
        midpoints: Float[Tensor, "*rays samples 1"],
        weights: Float[Tensor, "*rays samples 1"],
    ) -> Float[Tensor, "*rays C"]:
        """``S_s(r)``: Seg-MLP on every sample, the ray convolution along each ray, then volume rendering."""
        leading = density_features.shape[:-1]
        features = self.seg_mlp(density_features.reshape(-1, density_features.shape[-1])).view(*leading, -1)
        if self.ray_convolution is not None:
            features = self.ray_convolution(features, midpoints)
        return self.renderer(semantics=features, weights=weights.detach())

    def classify(
        self, rendered: Float[Tensor, "*rays C"], colour: Float[Tensor, "*rays 3"] | None
    ) -> tuple[Float[Tensor, "*rays K"], Float[Tensor, "*rays K"] | None]:
        """F2S logits from ``[S_s(r), N(r)]`` and C2S logits from ``N(r)`` (None without the colour branch)."""
        if self.colour_radiance is None or self.c2s is None:
            return self.f2s(rendered), None
        if colour is None:
            raise ValueError("the colour-radiance branch needs a colour per ray")
        colour_feature = self.colour_radiance(colour[..., :3].to(rendered.dtype))
        return self.f2s(torch.cat([rendered, colour_feature], dim=-1)), self.c2s(colour_feature)
