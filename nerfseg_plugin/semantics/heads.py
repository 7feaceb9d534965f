"""Small per-pixel heads shared by the two methods; their sizes come from the method configs."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor, nn


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
        widths = [in_dim] + [hidden_dim] * (num_layers - 1) + [num_classes]
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers.append(nn.Linear(widths[i], widths[i + 1]))
            if i < num_layers - 1:
                layers.append(nn.ReLU())
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: Float[Tensor, "*batch C"]) -> Float[Tensor, "*batch K"]:
        return self.mlp(features)


class ColourRadianceHead(nn.Module):
    """The NeRF paper's colour-radiance network: a pixel's observed RGB to a ``hidden_dim`` ray feature.

    A stack of Linear+ReLU layers; the NeRF method concatenates its output with the volume-rendered semantic
    feature (fusion head) and also classifies it alone (colour-to-segmentation head), so colour helps where the
    few labeled views leave the 3D semantic field under-constrained.
    """

    def __init__(self, hidden_dim: int = 128, num_layers: int = 2) -> None:
        super().__init__()
        if num_layers < 1 or hidden_dim < 1:
            raise ValueError(f"need num_layers >= 1 and hidden_dim >= 1, got {num_layers}, {hidden_dim}")
        self.out_dim = hidden_dim
        layers: list[nn.Module] = []
        in_dim = 3
        for _ in range(num_layers):
            layers += [nn.Linear(in_dim, hidden_dim), nn.ReLU()]
            in_dim = hidden_dim
        self.mlp = nn.Sequential(*layers)

    def forward(self, rgb: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch hidden"]:
        return self.mlp(rgb)
