"""The ray-convolution network of the NeRF paper (eq. 4): a 1x3 convolution over the samples of each ray.

``f_i = Phi_cnn(f_{i-1}, f_i, f_{i+1})`` mixes each sample's semantic feature with its two neighbours along the
ray, so that points the few labeled views barely constrain borrow evidence from the points next to them.

The paper samples rays uniformly (coarse) and by importance (fine), and convolves over sample order. nerfacto's
proposal sampler puts samples very unevenly: a few metres apart in empty space, millimetres apart at a surface. A
kernel over sample order alone would mix a surface point with a point far in front of it as readily as with its
true neighbour. Here the two neighbour taps are therefore gated by the distance between sample midpoints,
``g = exp(-|t_j - t_i| / tau)`` (``tau`` learned, in scene units): where samples are dense (at surfaces, where the
render weights are) the layer is a plain 1x3 convolution, and across empty-space gaps it falls back to the centre
tap. The rays' ends are zero-padded: a missing neighbour contributes nothing (gate 0), as in ``Conv1d(padding=1)``.

Every ray is convolved on its own samples only, so the layer works on random ray batches (no image neighbourhood).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn


def ray_neighbours(
    features: Float[Tensor, "*rays samples C"], midpoints: Float[Tensor, "*rays samples 1"], tau: Float[Tensor, ""]
) -> tuple[Float[Tensor, "*rays samples C"], Float[Tensor, "*rays samples C"]]:
    """Each sample's previous and next neighbour features along its ray, gated by ``exp(-distance / tau)``.

    Zero padding at the ends: the first sample has no previous neighbour and the last none after it.
    """
    gaps = (midpoints[..., 1:, :] - midpoints[..., :-1, :]).abs()  # [*rays, S-1, 1]: distance i -> i+1
    gates = torch.exp(-gaps / tau)
    weighted_next = features[..., 1:, :] * gates  # neighbour i+1 as seen from i
    weighted_prev = features[..., :-1, :] * gates  # neighbour i as seen from i+1
    # F.pad pads the last dims first: (C: 0, 0), then (samples: before, after).
    previous = F.pad(weighted_prev, (0, 0, 1, 0))
    following = F.pad(weighted_next, (0, 0, 0, 1))
    return previous, following


class RayConvolution(nn.Module):
    """Distance-gated 1x3 convolution over the samples of each ray, followed by a ReLU.

    Equivalent to ``Conv1d(C, C, kernel_size=3, padding=1)`` along the ray when every gate is 1 (uniform, dense
    samples). Holds only its kernel and ``log(tau)``: no per-ray state, any number of rays and samples.
    """

    def __init__(self, channels: int, distance_scale: float, learn_distance_scale: bool = True) -> None:
        super().__init__()
        if channels < 1 or distance_scale <= 0:
            raise ValueError(f"need channels >= 1 and distance_scale > 0, got {channels}, {distance_scale}")
        self.channels = channels
        # One linear map over [previous, centre, next] is the 1x3 kernel (3C inputs -> C outputs).
        self.kernel = nn.Linear(3 * channels, channels)
        self.log_tau = nn.Parameter(torch.tensor(math.log(distance_scale)), requires_grad=learn_distance_scale)

    @property
    def distance_scale(self) -> float:
        return float(self.log_tau.exp())

    def forward(
        self, features: Float[Tensor, "*rays samples C"], midpoints: Float[Tensor, "*rays samples 1"]
    ) -> Float[Tensor, "*rays samples C"]:
        if features.shape[-1] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got features of shape {tuple(features.shape)}")
        if midpoints.shape[:-1] != features.shape[:-1] or midpoints.shape[-1] != 1:
            raise ValueError(f"midpoints {tuple(midpoints.shape)} do not match features {tuple(features.shape)}")
        previous, following = ray_neighbours(features, midpoints.to(features.dtype), self.log_tau.exp())
        return F.relu(self.kernel(torch.cat([previous, features, following], dim=-1)))
