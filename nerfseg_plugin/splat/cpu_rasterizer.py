"""CPU rasterization of 3D Gaussians with gsplat 1.4.0's maths (forward and backward).

Pipeline, mirroring ``gsplat.rendering.rasterization(packed=False)``:

1. ``project_gaussians``: EWA projection in plain torch, differentiated by autograd (so gradients also reach
   ``viewmats`` and ``Ks``, e.g. for nerfstudio's camera optimizer). Same formulas and culling rules as gsplat's
   ``fully_fused_projection_fwd.cu``, arranged for the CPU: R M for all Gaussians is one [3, 3] x [3, 3N] matmul per
   camera and the 2x3 Jacobian is applied row by row, ~8x faster than gsplat's ``_torch_impl`` batched einsums.
2. ``isect_tiles_cpu``: per-tile depth-sorted lists in gsplat's ``isect_offsets`` / ``flatten_ids`` format (numba).
3. ``rasterize_to_pixels_cpu``: front-to-back compositing as a ``torch.autograd.Function`` whose backward is gsplat's
   (numba kernels in ``cpu_kernels``).

Inputs are CPU tensors (float32 or float64; outputs and gradients keep the dtype).
"""

from __future__ import annotations

import math
import threading
from typing import Literal

import numba
import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from nerfseg_plugin.splat import cpu_kernels

# One kernel launch at a time: they use every core anyway, and numba's fallback threading layer (workqueue, when no
# OpenMP/TBB is installed) aborts on concurrent launches, e.g. from nerfstudio's viewer thread while training.
_KERNEL_LOCK = threading.Lock()


def quat_scale_to_rotmat_scaled(quats: Float[Tensor, "N 4"], scales: Float[Tensor, "N 3"]) -> Float[Tensor, "N 3 3"]:
    """R(q) diag(s), so that covar = M M^T. Quaternions are wxyz and need not be normalised."""
    w, x, y, z = F.normalize(quats, p=2, dim=-1).unbind(-1)
    R = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(-1, 3, 3)  # fmt: skip
    return R * scales[:, None, :]


def project_gaussians(
    means: Float[Tensor, "N 3"],
    quats: Float[Tensor, "N 4"],
    scales: Float[Tensor, "N 3"],
    viewmats: Float[Tensor, "C 4 4"],
    Ks: Float[Tensor, "C 3 3"],
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    camera_model: Literal["pinhole", "ortho"] = "pinhole",
) -> tuple[
    Int[Tensor, "C N"], Float[Tensor, "C N 2"], Float[Tensor, "C N"], Float[Tensor, "C N 3"], Float[Tensor, "C N"]
]:
    """Pinhole (or orthographic) EWA splatting: returns radii (int32, 0 = culled), means2d, depths, conics (upper
    triangle of the inverse blurred 2D covariance) and the antialiasing compensation sqrt(det(cov) / det(cov + eps2d
    I)). ``ortho`` is gsplat's ``_ortho_proj``: u = fx x + cx, v = fy y + cy, Jacobian [[fx, 0, 0], [0, fy, 0]]; depth
    culling (near/far planes) is the same as for pinhole cameras.

    Culled entries keep finite values and receive zero gradients (their depth is replaced before dividing), as in
    gsplat whose CUDA backward skips them.
    """
    C, N = viewmats.shape[0], means.shape[0]
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    means_c = means @ R.transpose(1, 2) + t[:, None, :]  # [C, N, 3]
    M = quat_scale_to_rotmat_scaled(quats, scales)
    # covar_c = (R M)(R M)^T; one [3, 3] x [3, 3N] product per camera, row i of R M is Mc[:, i]: [C, N, 3]
    Mc = (R @ M.permute(1, 0, 2).reshape(3, 3 * N)).reshape(C, 3, N, 3)

    x, y, depths = means_c.unbind(-1)
    in_depth = (depths >= near_plane) & (depths <= far_plane)
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    if camera_model == "ortho":
        JM0, JM1 = fx[..., None] * Mc[:, 0], fy[..., None] * Mc[:, 1]
        means2d = torch.stack([fx * x + cx, fy * y + cy], dim=-1)
    else:
        JM0, JM1, means2d = _pinhole_jacobian_rows(x, y, depths, in_depth, Mc, fx, fy, cx, cy, width, height)
    c00, c01, c11 = (JM0 * JM0).sum(-1), (JM0 * JM1).sum(-1), (JM1 * JM1).sum(-1)
    det_orig = c00 * c11 - c01 * c01
    c00, c11 = c00 + eps2d, c11 + eps2d
    det = c00 * c11 - c01 * c01
    ok = det > 0
    det = torch.where(ok, det, torch.ones_like(det))
    conics = torch.stack([c11 / det, -c01 / det, c00 / det], dim=-1)
    ratio = det_orig / det
    # sqrt has an infinite slope at 0: keep its argument away from 0 where the value is 0 anyway
    compensations = torch.where(ratio > 0, torch.sqrt(ratio.clamp(min=1e-30)), torch.zeros_like(ratio))

    with torch.no_grad():
        b = 0.5 * (c00 + c11)
        radius = torch.ceil(3.0 * torch.sqrt(b + torch.sqrt(torch.clamp(b * b - det, min=0.01))))
        u, v = means2d.unbind(-1)
        on_screen = (u + radius > 0) & (u - radius < width) & (v + radius > 0) & (v - radius < height)
        keep = in_depth & ok & (radius > radius_clip) & on_screen
        radii = torch.where(keep, radius, torch.zeros_like(radius)).int()
    return radii, means2d, depths, conics, compensations


def _pinhole_jacobian_rows(
    x: Tensor, y: Tensor, depths: Tensor, in_depth: Tensor, Mc: Tensor,
    fx: Tensor, fy: Tensor, cx: Tensor, cy: Tensor, width: int, height: int,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """Rows of J Mc and means2d for pinhole cameras (gsplat's ``_persp_proj``)."""
    z = torch.where(in_depth, depths, torch.ones_like(depths))
    # gsplat clamps the Jacobian's x/z, y/z to 1.3x the half field of view (beyond the principal point)
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    rz = 1.0 / z
    tx = z * torch.minimum(torch.maximum(x * rz, -lim_x_neg), lim_x_pos)
    ty = z * torch.minimum(torch.maximum(y * rz, -lim_y_neg), lim_y_pos)
    # rows of J Mc with J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]]; cov2d = (J Mc)(J Mc)^T
    JM0 = (fx * rz)[..., None] * Mc[:, 0] - (fx * tx * rz * rz)[..., None] * Mc[:, 2]
    JM1 = (fy * rz)[..., None] * Mc[:, 1] - (fy * ty * rz * rz)[..., None] * Mc[:, 2]
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)
    return JM0, JM1, means2d


@torch.no_grad()
def isect_tiles_cpu(
    means2d: Float[Tensor, "C N 2"],
    radii: Int[Tensor, "C N"],
    depths: Float[Tensor, "C N"],
    tile_size: int,
    tile_width: int,
    tile_height: int,
) -> tuple[Int[Tensor, "C N"], Int[Tensor, " n_isects"], Int[Tensor, " n_isects"], Int[Tensor, "C th tw"]]:
    """gsplat's ``isect_tiles`` + ``isect_offset_encode``: tiles_per_gauss, isect_ids (camera | tile | depth bits),
    flatten_ids (into C * N) sorted by camera, tile, depth, and isect_offsets [C, tile_height, tile_width]."""
    depths32 = depths.detach().float().contiguous().numpy()
    # stable, so equal depths keep index order like gsplat's stable radix sort
    depth_order = np.argsort(depths32, axis=1, kind="stable")
    with _KERNEL_LOCK:
        outputs = cpu_kernels.isect_tiles_kernel(
            means2d.detach().contiguous().numpy(),
            radii.to(torch.int32).contiguous().numpy(),
            depths32.view(np.int32),
            depth_order,
            tile_size,
            tile_width,
            tile_height,
        )
    return tuple(torch.from_numpy(a) for a in outputs)


def _np(x: Tensor, dtype: torch.dtype) -> np.ndarray:
    return x.detach().to(dtype).contiguous().numpy()


class _RasterizeToPixelsCPU(torch.autograd.Function):
    """Compositing with gsplat's ``_RasterizeToPixels`` interface (non-packed)."""

    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, backgrounds, width, height, tile_size, offsets, flatten_ids,
                absgrad, geometry_channels):  # fmt: skip
        C, N, D = colors.shape
        dt = means2d.dtype
        inputs, shapes = (means2d, conics, colors, opacities), ((C * N, 2), (C * N, 3), (C * N, D), (C * N,))
        splats = [_np(x.reshape(shape), dt) for x, shape in zip(inputs, shapes, strict=True)]
        # zero rows tell the kernels there is no background
        bgs = np.zeros((0, D), dtype=splats[0].dtype) if backgrounds is None else _np(backgrounds, dt)
        arrays = (*splats, bgs, _np(offsets, torch.int32), _np(flatten_ids, torch.int32))
        with _KERNEL_LOCK:
            render_colors, transmittance, last_ids = cpu_kernels.rasterize_fwd_kernel(
                *arrays, width, height, tile_size, numba.get_num_threads()
            )
        transmittance = torch.from_numpy(transmittance)
        ctx.arrays = arrays  # numpy views or copies of the inputs, for the backward kernel
        ctx.tile_size, ctx.absgrad = tile_size, absgrad
        ctx.geometry_channels = np.ones(D, dtype=splats[0].dtype) if geometry_channels is None else geometry_channels
        ctx.save_for_backward(means2d, backgrounds, transmittance, torch.from_numpy(last_ids))
        return torch.from_numpy(render_colors), (1.0 - transmittance).to(dt)[..., None]

    @staticmethod
    def backward(ctx, v_render_colors, v_render_alphas):
        means2d, backgrounds, transmittance, last_ids = ctx.saved_tensors
        C, N = means2d.shape[:2]
        dt = means2d.dtype
        with _KERNEL_LOCK:
            v_geom, v_colors = cpu_kernels.rasterize_bwd_kernel(
                *ctx.arrays,
                (transmittance.numpy(), last_ids.numpy()),
                (_np(v_render_colors, dt), _np(v_render_alphas[..., 0], dt)),
                ctx.geometry_channels,
                ctx.tile_size,
                numba.get_num_threads(),
            )
        # per-worker partial sums
        v_geom = torch.from_numpy(v_geom.sum(0)).reshape(C, N, 8)
        v_colors = torch.from_numpy(v_colors.sum(0)).reshape(C, N, v_colors.shape[-1])
        v_means2d, v_abs, v_conics, v_opacities = (v_geom[..., i].contiguous() for i in ([0, 1], [2, 3], [4, 5, 6], 7))
        if ctx.absgrad:
            means2d.absgrad = v_abs
        v_backgrounds = None
        if ctx.needs_input_grad[4]:
            v_backgrounds = (v_render_colors * transmittance.to(dt)[..., None]).sum(dim=(1, 2))
        return v_means2d, v_conics, v_colors, v_opacities, v_backgrounds, *([None] * 7)


def rasterize_to_pixels_cpu(
    means2d: Float[Tensor, "C N 2"],
    conics: Float[Tensor, "C N 3"],
    colors: Float[Tensor, "C N D"],
    opacities: Float[Tensor, "C N"],
    image_width: int,
    image_height: int,
    tile_size: int,
    isect_offsets: Int[Tensor, "C th tw"],
    flatten_ids: Int[Tensor, " n_isects"],
    backgrounds: Float[Tensor, "C D"] | None = None,
    absgrad: bool = False,
    geometry_channels: Bool[Tensor, " D"] | None = None,
) -> tuple[Float[Tensor, "C H W D"], Float[Tensor, "C H W 1"]]:
    """CPU twin of ``gsplat.rasterize_to_pixels`` (non-packed). With ``absgrad`` the backward sets
    ``means2d.absgrad`` [C, N, 2] to the sum over pixels of |dL/dmeans2d| per pixel. ``geometry_channels`` (default:
    all) marks the channels whose gradients reach means2d/conics/opacities; the others are a stop-gradient there."""
    mask = None
    if geometry_channels is not None:
        if geometry_channels.shape != colors.shape[-1:]:
            raise ValueError(f"geometry_channels must be [D={colors.shape[-1]}], got {tuple(geometry_channels.shape)}")
        mask = _np(geometry_channels, means2d.dtype)
    return _RasterizeToPixelsCPU.apply(
        means2d, conics, colors, opacities, backgrounds, image_width, image_height, tile_size, isect_offsets,
        flatten_ids, absgrad, mask,
    )  # fmt: skip


def rasterization_cpu(
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
    packed: bool = False,
    tile_size: int = 16,
    backgrounds: Float[Tensor, "C D"] | None = None,
    render_mode: Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"] = "RGB",
    sparse_grad: bool = False,
    absgrad: bool = False,
    rasterize_mode: Literal["classic", "antialiased"] = "classic",
    channel_chunk: int = 32,
    distributed: bool = False,
    camera_model: Literal["pinhole", "ortho", "fisheye"] = "pinhole",
    covars: Tensor | None = None,
    geometry_grad_channels: int | None = None,
) -> tuple[Float[Tensor, "C H W X"], Float[Tensor, "C H W 1"], dict]:
    """``gsplat.rendering.rasterization`` (1.4.0) on CPU: same arguments, outputs and ``meta`` keys, for the
    non-packed layout only (hence ``packed`` defaults to False here, True in gsplat). ``colors``: [N, D] or
    [C, N, D], or SH coefficients [N, K, 3] / [C, N, K, 3] when ``sh_degree`` is set. ``channel_chunk`` is accepted
    and ignored: the kernels composite any number of channels in one pass. ``camera_model`` is ``pinhole`` or
    ``ortho`` (gsplat's orthographic projection); ``fisheye``, ``covars``, ``sparse_grad`` and ``distributed`` raise
    ValueError.

    ``geometry_grad_channels=k`` (CPU only, not in gsplat): only the first k channels of ``colors`` (and the depth
    of the ``+D``/``+ED`` modes) send gradients to the geometry; the remaining channels get their own gradients with
    the geometry held constant. This is one pass with the result of two, colour with gradients and the rest over
    detached geometry, e.g. for semantic features that must not move the Gaussians."""
    if packed:
        raise ValueError("rasterization_cpu supports packed=False only; pass packed=False on CPU.")
    if camera_model not in ("pinhole", "ortho"):
        raise ValueError(f"rasterization_cpu supports camera_model 'pinhole' and 'ortho', got {camera_model!r}.")
    if sparse_grad or distributed or covars is not None:
        raise ValueError("rasterization_cpu does not support sparse_grad, distributed or covars.")
    if render_mode not in ("RGB", "D", "ED", "RGB+D", "RGB+ED"):
        raise ValueError(f"unknown render_mode {render_mode!r}")
    if rasterize_mode not in ("classic", "antialiased"):
        raise ValueError(f"unknown rasterize_mode {rasterize_mode!r}")
    N, C = means.shape[0], viewmats.shape[0]
    if means.is_cuda:
        raise ValueError("rasterization_cpu takes CPU tensors; use backend='gsplat' (or 'auto') for CUDA tensors.")
    if means.shape != (N, 3) or quats.shape != (N, 4) or scales.shape != (N, 3) or opacities.shape != (N,):
        raise ValueError("expected means [N, 3], quats [N, 4], scales [N, 3], opacities [N]")
    if viewmats.shape != (C, 4, 4) or Ks.shape != (C, 3, 3):
        raise ValueError("expected viewmats [C, 4, 4] and Ks [C, 3, 3]")

    radii, means2d, depths, conics, compensations = project_gaussians(
        means, quats, scales, viewmats, Ks, width, height, eps2d, near_plane, far_plane, radius_clip, camera_model
    )
    opacities = opacities.repeat(C, 1)  # [C, N]
    if rasterize_mode == "antialiased":
        opacities = opacities * compensations

    if sh_degree is None:
        if colors.dim() == 2:
            colors = colors.expand(C, -1, -1)
        if colors.shape[:2] != (C, N):
            raise ValueError(f"colors must be [N, D] or [C, N, D], got {tuple(colors.shape)}")
    else:
        from gsplat.cuda._torch_impl import _spherical_harmonics  # pure torch

        if colors.dim() == 3:
            colors = colors.expand(C, -1, -1, -1)
        if colors.shape[:2] != (C, N) or colors.shape[-1] != 3 or (sh_degree + 1) ** 2 > colors.shape[-2]:
            raise ValueError("SH colors must be [N, K, 3] or [C, N, K, 3] with K >= (sh_degree + 1)^2")
        campos = torch.linalg.inv(viewmats)[:, :3, 3]
        dirs = means[None, :, :] - campos[:, None, :]
        colors = torch.clamp_min(_spherical_harmonics(sh_degree, dirs, colors) + 0.5, 0.0)

    if render_mode in ("RGB+D", "RGB+ED"):
        colors = torch.cat((colors, depths[..., None]), dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(C, 1)], dim=-1)
    elif render_mode in ("D", "ED"):
        colors = depths[..., None]
        if backgrounds is not None:
            backgrounds = backgrounds.new_zeros(C, 1)

    geometry_channels = None
    if geometry_grad_channels is not None:
        geometry_channels = torch.zeros(colors.shape[-1], dtype=torch.bool)
        geometry_channels[:geometry_grad_channels] = True
        if render_mode in ("RGB+D", "RGB+ED"):
            geometry_channels[-1] = True

    tile_width, tile_height = math.ceil(width / tile_size), math.ceil(height / tile_size)
    tiles_per_gauss, isect_ids, flatten_ids, isect_offsets = isect_tiles_cpu(
        means2d, radii, depths, tile_size, tile_width, tile_height
    )
    render_colors, render_alphas = rasterize_to_pixels_cpu(
        means2d, conics, colors, opacities, width, height, tile_size, isect_offsets, flatten_ids,
        backgrounds=backgrounds, absgrad=absgrad, geometry_channels=geometry_channels,
    )  # fmt: skip
    if render_mode in ("ED", "RGB+ED"):
        render_colors = torch.cat(
            [render_colors[..., :-1], render_colors[..., -1:] / render_alphas.clamp(min=1e-10)], dim=-1
        )
    meta = {
        "camera_ids": None,
        "gaussian_ids": None,
        "radii": radii,
        "means2d": means2d,
        "depths": depths,
        "conics": conics,
        "opacities": opacities,
        "tile_width": tile_width,
        "tile_height": tile_height,
        "tiles_per_gauss": tiles_per_gauss,
        "isect_ids": isect_ids,
        "flatten_ids": flatten_ids,
        "isect_offsets": isect_offsets,
        "width": width,
        "height": height,
        "tile_size": tile_size,
        "n_cameras": C,
    }
    return render_colors, render_alphas, meta
