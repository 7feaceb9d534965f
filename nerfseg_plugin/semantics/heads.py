"""Small per-pixel heads shared by the two methods (nerfstudio MLPs); their sizes come from the method configs."""

from __future__ import annotations

import re

from jaxtyping import Float
from nerfstudio.field_components.mlp import MLP
from torch import Tensor, nn

_SEQUENTIAL_KEY = re.compile(r"mlp\.(\d+)\.(weight|bias)$")


def upgrade_head_keys(state_dict: dict, prefix: str) -> None:
    """Rename, in place, a head's checkpoint keys from before the heads were nerfstudio MLPs: their
    ``nn.Sequential`` of Linear/ReLU pairs stored layer i as ``mlp.{2i}.*``, nerfstudio's MLP as
    ``mlp.layers.{i}.*``. ``prefix``: the head's own prefix (e.g. ``_model.semantic_decoder.``)."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        match = _SEQUENTIAL_KEY.fullmatch(key[len(prefix) :])
        if match:
            state_dict[f"{prefix}mlp.layers.{int(match[1]) // 2}.{match[2]}"] = state_dict.pop(key)


def _load_sequential_checkpoints(module: nn.Module) -> None:
    """Let ``module`` load checkpoints written before the heads were nerfstudio MLPs."""
    module._register_load_state_dict_pre_hook(lambda state_dict, prefix, *args: upgrade_head_keys(state_dict, prefix))


class SemanticDecoder(nn.Module):
    """Per-pixel MLP from rendered semantic features to class logits.

    Linear layers over the last dimension are a 1x1 convolution over a feature image, and apply equally to a
    batch of rays ``[R, C]`` (NeRF) or a splatted map ``[H, W, C]`` (splatting). ``hidden_dim=0`` gives the single
    linear "transfer layer" of the splatting paper (16 feature channels to K classes): with a linear decoder the
    per-Gaussian features must carry the class evidence themselves, which is what the aggregation losses act on.
    """

    def __init__(self, in_dim: int, num_classes: int, hidden_dim: int = 0, num_layers: int = 1) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        if (hidden_dim == 0) != (num_layers == 1):
            raise ValueError(
                f"hidden_dim={hidden_dim} with num_layers={num_layers}: use hidden_dim=0 for a single linear layer "
                "and hidden_dim>0 with num_layers>=2 for an MLP"
            )
        self.in_dim = in_dim
        self.num_classes = num_classes
        width = hidden_dim or num_classes  # unused by a single layer
        self.mlp = MLP(in_dim, num_layers, width, out_dim=num_classes, activation=nn.ReLU(), out_activation=None)
        _load_sequential_checkpoints(self)

    def forward(self, features: Float[Tensor, "*batch C"]) -> Float[Tensor, "*batch K"]:
        return self.mlp(features)


class ColourRadianceHead(nn.Module):
    """The NeRF paper's colour-radiance network: a pixel's observed RGB to a ``hidden_dim`` ray feature.

    Linear+ReLU layers (the output is activated too); the NeRF method concatenates its output with the
    volume-rendered semantic feature (fusion head) and also classifies it alone (colour-to-segmentation head), so
    colour helps where the few labeled views leave the 3D semantic field under-constrained.
    """

    def __init__(self, hidden_dim: int = 128, num_layers: int = 2) -> None:
        super().__init__()
        if num_layers < 1 or hidden_dim < 1:
            raise ValueError(f"need num_layers >= 1 and hidden_dim >= 1, got {num_layers}, {hidden_dim}")
        self.out_dim = hidden_dim
        self.mlp = MLP(3, num_layers, hidden_dim, out_dim=hidden_dim, activation=nn.ReLU(), out_activation=nn.ReLU())
        _load_sequential_checkpoints(self)

    def forward(self, rgb: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch hidden"]:
        return self.mlp(rgb)
