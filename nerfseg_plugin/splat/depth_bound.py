"""The sparse-point depth bound: a rendered surface may not lie behind a triangulated point it frames.

An SfM point is a surface point, so along the ray through it in any view the first surface is at that point or in
front of it (an occluder). This needs no visibility (no tracks): a point hidden behind an occluder costs nothing,
while a surface rendered behind the point (a thick slab of Gaussians under the ground, a facade pushed back) is
pulled forward. It pins depth where photometric splatting leaves it loose, at grazing angles: on an orbit the
outer town is seen only from the far side of the circle, and there the trained ground lay metres too deep, which a
straight-down render (label ortho, DSM) turns into labels shifted sideways.

Two forms (``depth_bound_mode``):
- ``expected``: on the expected, alpha-normalised depth map. Loophole: faint Gaussians in front of the surface
  lower it at little photometric cost; on one orbit they floated over a fifth of the map (README, "Sparse-point
  depth bound").
- ``composited``: along the ray through the point, the compositing weight of every Gaussian behind the point times
  how far behind it lies, sum_g w_g relu(z_g / z_p - 1 - margin), from the colour pass's projected Gaussians
  (gsplat's own alpha rules). A surface behind the point costs its full weight whatever lies in front of it but
  the transmittance it leaves, so a faint floater of opacity a buys only a share a of the bound, where in the
  expected depth it bought all of it; the gradient moves the Gaussians behind the point forward (or thins them).
  An occluder in front still makes the point free, as it should.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from nerfseg_plugin.core.geometry import sample_nearest

_NEIGHBOURS = torch.tensor([[dx, dy] for dy in (-1.0, 0.0, 1.0) for dx in (-1.0, 0.0, 1.0)])


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
    uv, z = _framed_points(points, viewmat, K, depth.shape[1], depth.shape[0], max_points)
    if z.numel() == 0:
        return depth.sum() * 0.0
    # the nearest surface within one pixel: a point at a depth edge (a roof point beside the ground it overhangs)
    # binds only where its whole neighbourhood lies behind it, not on sub-pixel projection error
    nearest = -F.max_pool2d(-depth[None, None, :, :, 0], kernel_size=3, stride=1, padding=1)[0, 0]
    rendered = sample_nearest(nearest, uv)
    return torch.relu(rendered / z - (1.0 + margin)).mean()


def composited_depth_bound_loss(
    points: Float[Tensor, "N 3"],
    viewmat: Float[Tensor, "1 4 4"],
    K: Float[Tensor, "1 3 3"],
    meta: dict,
    width: int,
    height: int,
    margin: float,
    max_points: int,
    max_excess: float | None = None,
) -> Tensor:
    """Mean over the points framed by the view of ``sum_g w_g relu(z_g / z_p - 1 - margin)`` along the ray through
    the point (``w_g`` gsplat's compositing weights, ``z_g`` the Gaussians' centre depths), the least of the rays
    through the centres of the point's pixel and its 8 neighbours (the expected form's 3x3 nearest depth, so a
    point at a depth edge binds only where its whole neighbourhood lies behind it).

    ``meta`` is the rasterizer's meta of the view (gsplat's or the CPU backend's: projected splats and per-tile
    lists; unpacked, one camera) at ``width`` x ``height``, the size ``K`` is for. Gaussians more than
    ``max_excess`` (relative) behind the point are left alone (a truncated loss: such a point is likelier an SfM
    outlier in free space than the surface that wrong); None = no limit.
    """
    means2d = meta["means2d"][0]
    uv, z = _framed_points(points, viewmat, K, width, height, max_points)
    if z.numel() == 0:
        return means2d.sum() * 0.0
    neighbours = _NEIGHBOURS.to(device=uv.device, dtype=uv.dtype)
    centres = (uv.floor() + 0.5)[:, None, :] + neighbours[None]  # [P, 9, 2]
    excess = _excess_depth_along_rays(meta, centres.reshape(-1, 2), z.repeat_interleave(9), margin, max_excess)
    return excess.view(-1, 9).amin(dim=1).mean()


def _excess_depth_along_rays(
    meta: dict, rays: Float[Tensor, "R 2"], ray_depth: Float[Tensor, " R"], margin: float, max_excess: float | None
) -> Float[Tensor, " R"]:
    """``sum_g w_g relu(z_g / ray_depth - 1 - margin)`` per pixel position inside the image (inf outside),
    composited as gsplat does: the depth-sorted splat list of the ray's tile (``isect_offsets``, ``flatten_ids``),
    alpha = min(0.999, o exp(-sigma)), splats with sigma < 0 or alpha < 1/255 skipped."""
    means2d, conics = meta["means2d"][0], meta["conics"][0]
    opacities, depths = meta["opacities"][0], meta["depths"][0]
    tile_size, tiles_x, tiles_y = int(meta["tile_size"]), int(meta["tile_width"]), int(meta["tile_height"])
    pixel = rays.detach().floor().long()
    inside = (pixel[:, 0] >= 0) & (pixel[:, 0] < meta["width"]) & (pixel[:, 1] >= 0) & (pixel[:, 1] < meta["height"])
    tile = (pixel[:, 1] // tile_size).clamp(0, tiles_y - 1) * tiles_x + (pixel[:, 0] // tile_size).clamp(0, tiles_x - 1)
    flatten_ids = meta["flatten_ids"]
    offsets = meta["isect_offsets"][0].reshape(-1).long()  # camera 0's tiles, row-major
    ends = torch.cat([offsets[1:], offsets.new_tensor([flatten_ids.numel()])])
    counts = torch.where(inside, ends[tile] - offsets[tile], 0)
    ray = torch.repeat_interleave(torch.arange(rays.shape[0], device=rays.device), counts)
    first = torch.cumsum(counts, dim=0) - counts
    position = torch.arange(ray.numel(), device=rays.device) - first[ray] + offsets[tile][ray]
    gauss = flatten_ids[position].long()  # front to back within each ray's run
    with torch.no_grad():  # most of a tile's splats miss a given pixel: drop them before building the graph
        kept = _alpha_at(means2d, conics, opacities, gauss, rays, ray) > 0
    ray, gauss = ray[kept], gauss[kept]  # order within each ray is kept
    if ray.numel() == 0:
        return torch.where(inside, means2d.sum() * 0.0, torch.inf)
    alpha = _alpha_at(means2d, conics, opacities, gauss, rays, ray)
    counts = torch.bincount(ray, minlength=rays.shape[0])
    first = torch.cumsum(counts, dim=0) - counts
    # transmittance before each splat: exclusive cumulative sum of log(1 - alpha) within the ray's run (float64:
    # one running sum over all rays)
    log_keep = torch.log1p(-alpha).double()
    running = torch.cumsum(log_keep, dim=0)
    before_ray = torch.where(first > 0, running[(first - 1).clamp(min=0)], 0.0)
    transmittance = torch.exp(running - log_keep - before_ray[ray]).to(alpha.dtype)
    behind = torch.relu(depths[gauss] / ray_depth[ray] - (1.0 + margin))
    if max_excess is not None:
        behind = torch.where(behind.detach() > max_excess - margin, 0.0, behind)
    excess = torch.zeros_like(ray_depth).index_add(0, ray, alpha * transmittance * behind)
    return torch.where(inside, excess, torch.inf)


def _alpha_at(means2d: Tensor, conics: Tensor, opacities: Tensor, gauss: Tensor, rays: Tensor, ray: Tensor) -> Tensor:
    """gsplat's alpha of splat ``gauss[k]`` at position ``rays[ray[k]]``: 0 where sigma < 0 or alpha < 1/255."""
    d = means2d[gauss] - rays[ray]
    con = conics[gauss]
    sigma = 0.5 * (con[:, 0] * d[:, 0] ** 2 + con[:, 2] * d[:, 1] ** 2) + con[:, 1] * d[:, 0] * d[:, 1]
    raw = opacities[gauss] * torch.exp(-sigma.clamp(min=0))
    return torch.where((sigma < 0) | (raw.detach() < 1.0 / 255.0), 0.0, raw.clamp(max=0.999))


def _framed_points(
    points: Float[Tensor, "N 3"],
    viewmat: Float[Tensor, "1 4 4"],
    K: Float[Tensor, "1 3 3"],
    width: int,
    height: int,
    max_points: int,
) -> tuple[Float[Tensor, "P 2"], Float[Tensor, " P"]]:
    """Pixel positions and depths of (at most ``max_points`` random) points in front of the camera and inside the
    image; ``viewmat`` is world -> OpenCV camera (z forward)."""
    if points.shape[0] > max_points:
        points = points[torch.randint(points.shape[0], (max_points,), device=points.device)]
    camera = points @ viewmat[0, :3, :3].T + viewmat[0, :3, 3]
    z = camera[:, 2]
    safe_z = z.clamp(min=1e-6)
    u = K[0, 0, 0] * camera[:, 0] / safe_z + K[0, 0, 2]
    v = K[0, 1, 1] * camera[:, 1] / safe_z + K[0, 1, 2]
    framed = (z > 1e-6) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    return torch.stack([u[framed], v[framed]], -1), z[framed].detach()
