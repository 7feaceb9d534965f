"""Dense reference rasterizer: every pixel against every Gaussian, in plain torch, differentiated by autograd.

It applies gsplat 1.4.0's compositing rules literally (tile membership from the 3-sigma radius, skip sigma < 0 and
alpha < 1/255, alpha clamped to 0.999, a pixel stops before the splat that would take its transmittance to <= 1e-4,
background weighted by the final transmittance) and uses gsplat's own pure-torch projection
(``gsplat.cuda._torch_impl``), so it is an independent check of the CPU pipeline. Memory is O(H W N): tests and the
benchmark use it on small views only.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor


def composite_dense(
    means2d: Float[Tensor, "C N 2"],
    conics: Float[Tensor, "C N 3"],
    colors: Float[Tensor, "C N D"],
    opacities: Float[Tensor, "C N"],
    radii: Int[Tensor, "C N"],
    depths: Float[Tensor, "C N"],
    width: int,
    height: int,
    tile_size: int = 16,
    backgrounds: Float[Tensor, "C D"] | None = None,
    early_stop: bool = True,
) -> tuple[Float[Tensor, "C H W D"], Float[Tensor, "C H W 1"]]:
    """Front-to-back compositing of all Gaussians with radii > 0, ordered by depth (stable, like gsplat)."""
    C = means2d.shape[0]
    dev, dt = means2d.device, means2d.dtype
    ys, xs = torch.meshgrid(torch.arange(height, device=dev), torch.arange(width, device=dev), indexing="ij")
    pix = torch.stack([xs, ys], dim=-1).reshape(-1, 2)  # [P, 2] integer pixel coordinates
    centres = pix.to(dt) + 0.5
    out_colors, out_alphas = [], []
    for c in range(C):
        order = torch.argsort(depths[c].detach(), stable=True)
        order = order[radii[c, order] > 0]
        m2d, con, op, col = means2d[c, order], conics[c, order], opacities[c, order], colors[c, order]
        # tile rectangle of each splat, in float32 like gsplat's isect_tiles
        tile_xy = m2d.detach().float() / tile_size
        tile_r = radii[c, order].float()[:, None] / tile_size
        lo, hi = torch.floor(tile_xy - tile_r), torch.ceil(tile_xy + tile_r)
        pix_tile = (pix // tile_size).float()[:, None, :]  # [P, 1, 2]
        in_tile = ((pix_tile >= lo) & (pix_tile < hi)).all(-1)  # [P, M]

        d = m2d[None, :, :] - centres[:, None, :]  # [P, M, 2]
        sigma = 0.5 * (con[:, 0] * d[..., 0] ** 2 + con[:, 2] * d[..., 1] ** 2) + con[:, 1] * d[..., 0] * d[..., 1]
        with torch.no_grad():
            alpha_raw = torch.clamp_max(op * torch.exp(-sigma), 0.999)
            valid = in_tile & (sigma >= 0) & (alpha_raw >= 1.0 / 255.0)
        # zero the exponent where invalid so that no inf reaches autograd through the discarded branch
        alpha = torch.where(valid, torch.clamp_max(op * torch.exp(-torch.where(valid, sigma, 0.0)), 0.999), 0.0)
        if early_stop:
            with torch.no_grad():
                keep = torch.cumprod(1.0 - alpha, dim=1) > 1e-4  # transmittance after each splat
            alpha = torch.where(keep, alpha, 0.0)
        trans = torch.cumprod(1.0 - alpha, dim=1)
        trans_before = torch.cat([torch.ones_like(trans[:, :1]), trans[:, :-1]], dim=1)
        weights = alpha * trans_before
        img = weights @ col  # [P, D]
        t_final = trans[:, -1:] if trans.shape[1] > 0 else torch.ones_like(centres[:, :1])
        if backgrounds is not None:
            img = img + t_final * backgrounds[c]
        out_colors.append(img.reshape(height, width, -1))
        out_alphas.append((1.0 - t_final).reshape(height, width, 1))
    return torch.stack(out_colors), torch.stack(out_alphas)


def rasterization_dense(
    means: Float[Tensor, "N 3"],
    quats: Float[Tensor, "N 4"],
    scales: Float[Tensor, "N 3"],
    opacities: Float[Tensor, " N"],
    colors: Tensor,
    viewmats: Float[Tensor, "C 4 4"],
    Ks: Float[Tensor, "C 3 3"],
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: int | None = None,
    tile_size: int = 16,
    backgrounds: Float[Tensor, "C D"] | None = None,
    render_mode: Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"] = "RGB",
    rasterize_mode: Literal["classic", "antialiased"] = "classic",
    early_stop: bool = True,
) -> tuple[Tensor, Float[Tensor, "C H W 1"], dict]:
    """Same arguments and outputs as ``rasterization_cpu`` (meta: radii, means2d, depths, conics, opacities)."""
    from nerfseg_plugin.splat.gsplat_private import torch_impl

    gsplat_torch = torch_impl()
    _fully_fused_projection = gsplat_torch._fully_fused_projection
    _quat_scale_to_covar_preci = gsplat_torch._quat_scale_to_covar_preci
    _spherical_harmonics = gsplat_torch._spherical_harmonics

    C = viewmats.shape[0]
    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    radii, means2d, depths, conics, compensations = _fully_fused_projection(
        means, covars, viewmats, Ks, width, height, eps2d, near_plane, far_plane,
        calc_compensations=rasterize_mode == "antialiased",
    )  # fmt: skip
    radii = torch.where(radii > radius_clip, radii, 0)
    opacities = opacities.repeat(C, 1)
    if compensations is not None:
        opacities = opacities * compensations
    if sh_degree is None:
        colors = colors.expand(C, -1, -1) if colors.dim() == 2 else colors
    else:
        shs = colors.expand(C, -1, -1, -1) if colors.dim() == 3 else colors
        dirs = means[None] - torch.linalg.inv(viewmats)[:, None, :3, 3]
        colors = torch.clamp_min(_spherical_harmonics(sh_degree, dirs, shs) + 0.5, 0.0)
    if render_mode in ("RGB+D", "RGB+ED"):
        colors = torch.cat([colors, depths[..., None]], dim=-1)
        backgrounds = None if backgrounds is None else torch.cat([backgrounds, backgrounds.new_zeros(C, 1)], -1)
    elif render_mode in ("D", "ED"):
        colors = depths[..., None]
        backgrounds = None if backgrounds is None else backgrounds.new_zeros(C, 1)
    render_colors, render_alphas = composite_dense(
        means2d, conics, colors, opacities, radii, depths, width, height, tile_size, backgrounds, early_stop
    )
    if render_mode in ("ED", "RGB+ED"):
        depth = render_colors[..., -1:] / render_alphas.clamp(min=1e-10)
        render_colors = torch.cat([render_colors[..., :-1], depth], dim=-1)
    meta = {"radii": radii, "means2d": means2d, "depths": depths, "conics": conics, "opacities": opacities}
    meta["tile_width"], meta["tile_height"] = math.ceil(width / tile_size), math.ceil(height / tile_size)
    return render_colors, render_alphas, meta
