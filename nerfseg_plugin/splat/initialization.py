"""Gaussians initialised from a point cloud, with splatfacto's initial values, on the points' device."""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float, UInt8
from nerfstudio.models.splatfacto import RGB2SH, num_sh_bases, random_quat_tensor
from torch import Tensor, nn


def gaussians_from_points(
    points: Float[Tensor, "N 3"],
    colors: UInt8[Tensor, "N 3"],
    sh_degree: int,
    k_nearest: Callable[[Tensor, int], tuple],
) -> nn.ParameterDict:
    """means = points; scales = log of the mean distance to the 3 nearest points; random rotations; opacity 0.1;
    SH DC from the colour (sigmoid-logit colour when ``sh_degree == 0``, as splatfacto)."""
    distances, _ = k_nearest(points, 3)
    mean_distance = torch.from_numpy(distances).float().mean(dim=-1, keepdim=True).clamp_min(1e-7)
    num_points = points.shape[0]
    rgb = colors.float() / 255.0
    shs = torch.zeros((num_points, num_sh_bases(sh_degree), 3))
    shs[:, 0] = RGB2SH(rgb) if sh_degree > 0 else torch.logit(rgb, eps=1e-10)
    return nn.ParameterDict(
        {
            "means": nn.Parameter(points.float().clone()),
            "scales": nn.Parameter(torch.log(mean_distance.repeat(1, 3))),
            "quats": nn.Parameter(random_quat_tensor(num_points)),
            "features_dc": nn.Parameter(shs[:, 0, :]),
            "features_rest": nn.Parameter(shs[:, 1:, :]),
            "opacities": nn.Parameter(torch.logit(0.1 * torch.ones(num_points, 1))),
        }
    )
