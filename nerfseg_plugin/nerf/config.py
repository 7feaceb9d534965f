"""Config of the two-stage semantic NeRF (paper 000). Importing it does not import the model module."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from nerfstudio.models.nerfacto import NerfactoModelConfig


def build_model(*args, **kwargs):
    """Imports the model only when a pipeline builds it, so registering the method stays light."""
    from nerfseg_plugin.nerf.model import RssegNerfModel

    return RssegNerfModel(*args, **kwargs)


@dataclass
class RssegNerfModelConfig(NerfactoModelConfig):
    """nerfacto (stage 1: RGB reconstruction) plus the paper's semantic stage on the frozen geometry (stage 2)."""

    _target: type = field(default_factory=lambda: build_model)
    """target class to instantiate"""
    semantic_stage_start: int = 20_000
    """First step of stage 2: the field, the proposal networks and the camera optimizer freeze (no gradients, no
    optimizer updates) and only the semantic branch trains, on labeled rays."""
    semantic_feature_dim: int = 128
    """Channels of the per-sample semantic features s_i, of S_s(r) and of the colour feature N(r) (paper: 128)."""
    seg_mlp_input: Literal["encoding+geo", "geo"] = "encoding+geo"
    """Density features the Seg-MLP reads per sample: the frozen hash-grid encoding and geo features of the
    field's density network, or the geo features alone."""
    semantic_grid: bool = False
    """Beyond paper 000: give the semantic branch its own trainable hash grid over the sample positions, read by
    the Seg-MLP beside the frozen density features. The paper's branch can only recombine features the density
    field learned for geometry and colour, so two surfaces those features do not separate get one label; the grid
    adds spatial capacity that only the semantic losses train."""
    semantic_grid_num_levels: int = 8
    """Resolution levels of the semantic hash grid (2 features each; coarsest 16, finest the field's max_res)."""
    semantic_grid_log2_hashmap_size: int = 16
    """log2 of the semantic hash grid's table size per level."""
    seg_mlp_num_layers: int = 2
    """Layers of the Seg-MLP (density features of a sample to s_i)."""
    use_ray_convolution: bool = True
    """Ablation switch: the 1x3 ray convolution over neighbouring samples (eq. 4)."""
    ray_conv_distance_scale: float = 0.02
    """Initial tau (scene units; rsseg-data scales the cameras into [-1, 1]) of the neighbour gate exp(-d / tau)
    that adapts the ray convolution to proposal sampling's uneven sample spacing."""
    learn_ray_conv_distance_scale: bool = True
    """Whether tau is trained with the kernel."""
    use_colour_radiance: bool = True
    """Ablation switch: the colour-radiance network N(r), its fusion into F2S and the auxiliary C2S head."""
    colour_radiance_num_layers: int = 2
    """Linear+ReLU layers of the colour-radiance network."""
    colour_input: Literal["pixel", "rendered"] = "pixel"
    """Colour fed to the colour-radiance network. "pixel" (paper): the ray's pixel colour while training and on
    evaluated views that have an image (metrics, exports of captured views); views without an image (viewer,
    ns-render of novel poses) fall back to the model's rendered RGB. "rendered": always the rendered RGB, so training
    and novel views see the same kind of input."""
    f2s_hidden_dim: int = 128
    """Hidden width of the F2S head (fused features to segmentation)."""
    f2s_num_layers: int = 2
    """Layers of the F2S head."""
    label_loss_weight: float = 1.0
    """Weight of the F2S cross-entropy on labeled rays (L_f, eq. 6)."""
    colour_loss_weight: float = 1.0
    """Weight of the C2S cross-entropy (L_c, eq. 7); it applies to labeled and pseudo-labeled rays alike."""
    pseudo_label_weight: float = 0.5
    """Weight of the cross-entropy on pseudo-labeled rays (confidence-weighted inside the boundary mask), relative
    to labeled rays; used whenever the datamanager has a pseudo-label set (a cached set picked by
    --pipeline.datamanager.pseudo-labels, or pseudo_label_dir). 0 disables it."""
