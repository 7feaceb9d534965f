"""One entry point for Gaussian rasterization: gsplat's CUDA rasterizer on GPU tensors, our CPU port elsewhere.

Both backends take ``gsplat.rendering.rasterization``'s arguments and return its ``(render_colors, render_alphas,
meta)``; the CPU one is ``nerfseg_plugin.splat.cpu_rasterizer.rasterization_cpu`` (same maths, non-packed only).
gsplat is imported on use, so importing this module never touches gsplat's CUDA extension.
"""

from __future__ import annotations

from typing import Literal

from jaxtyping import Float
from torch import Tensor

from nerfseg_plugin.splat.cpu_rasterizer import rasterization_cpu

Backend = Literal["auto", "gsplat", "cpu"]


def resolve_backend(backend: Backend, device_is_cuda: bool) -> Literal["gsplat", "cpu"]:
    """``auto`` picks gsplat for CUDA tensors and the CPU rasterizer otherwise; gsplat on CPU tensors is an error."""
    if backend == "auto":
        return "gsplat" if device_is_cuda else "cpu"
    if backend == "gsplat" and not device_is_cuda:
        raise ValueError("backend='gsplat' needs CUDA tensors; use backend='cpu' (or 'auto') for CPU tensors.")
    if backend not in ("gsplat", "cpu"):
        raise ValueError(f"unknown rasterizer backend {backend!r}; expected 'auto', 'gsplat' or 'cpu'.")
    return backend


def rasterize(
    means: Float[Tensor, "N 3"],
    quats: Float[Tensor, "N 4"],
    scales: Float[Tensor, "N 3"],
    opacities: Float[Tensor, " N"],
    colors: Tensor,
    viewmats: Float[Tensor, "C 4 4"],
    Ks: Float[Tensor, "C 3 3"],
    width: int,
    height: int,
    *,
    backend: Backend = "auto",
    **kwargs,
) -> tuple[Tensor, Float[Tensor, "C H W 1"], dict]:
    """Rasterize N Gaussians into C views with ``gsplat.rendering.rasterization``'s keyword arguments.

    ``packed`` defaults to False here (gsplat's default is True) so that ``meta`` has the same [C, N] layout on both
    backends; the CPU backend supports only that layout.
    """
    kwargs.setdefault("packed", False)
    if resolve_backend(backend, means.is_cuda) == "gsplat":
        from gsplat.rendering import rasterization

        return rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height, **kwargs)
    return rasterization_cpu(means, quats, scales, opacities, colors, viewmats, Ks, width, height, **kwargs)
