"""Per-Gaussian colours for one camera, evaluated before rasterization.

Colours are evaluated up front (instead of passing SH coefficients to the rasterizer) so that colour and the
semantic features can be composited in the same pass, as N-D colours with ``sh_degree=None``.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor


def gaussian_colors(
    features_dc: Float[Tensor, "N 3"],
    features_rest: Float[Tensor, "N R 3"],
    means: Float[Tensor, "N 3"],
    camera_center: Float[Tensor, "3"],
    sh_degree: int | None,
) -> Float[Tensor, "N 3"]:
    """RGB per Gaussian as gsplat's rasterization computes it: SH evaluated towards the camera, +0.5, clamped at
    0; or, with ``sh_degree=None`` (splatfacto's colour-only mode), a sigmoid of the DC term."""
    if sh_degree is None:
        return torch.sigmoid(features_dc)
    coefficients = torch.cat([features_dc[:, None, :], features_rest], dim=1)[:, : (sh_degree + 1) ** 2]
    directions = means - camera_center
    from nerfseg_plugin.splat.gsplat_private import spherical_harmonics

    evaluate = spherical_harmonics(on_cuda=means.is_cuda)
    return torch.clamp_min(evaluate(sh_degree, directions, coefficients) + 0.5, 0.0)
