"""The sparse-point depth bound: a rendered surface may not lie behind a triangulated point it frames.

An SfM point is a surface point, so along the ray through it in any view the first surface is at that point or in
front of it (an occluder). This needs no visibility (no tracks): a point hidden behind an occluder costs nothing,
while a surface rendered behind the point (a thick slab of Gaussians under the ground, a facade pushed back) is
pulled forward. It pins depth where photometric splatting leaves it loose, at grazing angles: on an orbit the
outer town is seen only from the far side of the circle, and there the trained ground lay metres too deep, which a
straight-down render (label ortho, DSM) turns into labels shifted sideways.

Known loophole (why it is off by default): the bound acts on the expected, alpha-normalised depth, which faint
Gaussians in front of the surface lower at little photometric cost. On one orbit they floated over a fifth of the
map (README, "Sparse-point depth bound"); a bound on the median depth would not have that loophole.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from nerfseg_plugin.core.geometry import sample_nearest


def depth_bound_loss(
    points: Float[Tensor, "N 3"],
    viewmat: Float[Tensor, "1 4 4"],
    K: Float[Tensor, "1 3 3"],
    depth: Float[Tensor, "H W 1"],
    margin: float,
    max_points: int,
) -> Tensor:
    """Mean over the points framed by the view of ``relu(rendered depth / point depth - 1 - margin)``, the
    rendered depth being the nearest within the point's pixel and its 8 neighbours.

    ``viewmat`` is world -> OpenCV camera (z forward) and ``depth`` the expected z-depth at the size ``K`` is for;
    ``margin`` is the relative depth noise of the points; at most ``max_points`` random points are used per call.
    """
    if points.shape[0] > max_points:
        points = points[torch.randint(points.shape[0], (max_points,), device=points.device)]
    camera = points @ viewmat[0, :3, :3].T + viewmat[0, :3, 3]
    z = camera[:, 2]
    safe_z = z.clamp(min=1e-6)
    u = K[0, 0, 0] * camera[:, 0] / safe_z + K[0, 0, 2]
    v = K[0, 1, 1] * camera[:, 1] / safe_z + K[0, 1, 2]
    height, width = depth.shape[:2]
    framed = (z > 1e-6) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    if not bool(framed.any()):
        return depth.sum() * 0.0
    # the nearest surface within one pixel: a point at a depth edge (a roof point beside the ground it overhangs)
    # binds only where its whole neighbourhood lies behind it, not on sub-pixel projection error
    nearest = -F.max_pool2d(-depth[None, None, :, :, 0], kernel_size=3, stride=1, padding=1)[0, 0]
    rendered = sample_nearest(nearest, torch.stack([u[framed], v[framed]], -1))
    return torch.relu(rendered / z[framed].detach() - (1.0 + margin)).mean()
