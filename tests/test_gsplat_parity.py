"""Parity of the CPU rasterizer with gsplat's CUDA rasterizer (1.4.0): rendered values, meta and gradients.

Both run in float32; gsplat uses ``__expf`` and float32 transmittance, the CPU port exact exp and float64
transmittance, so values agree to ~1e-5 and gradients to ~1e-3 of their largest magnitude.
"""

from __future__ import annotations

import math

import pytest
import torch

from nerfseg_plugin.splat.cpu_rasterizer import rasterization_cpu

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to run gsplat's CUDA rasterizer"),
]

W, H, F = 96, 72, 90.0


def make_scene(n: int, C: int, D: int, per_view: bool, sh_degree: int | None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z = 2.0 + 6.0 * torch.rand(n, generator=g)
    xy = (torch.rand(n, 2, generator=g) - 0.5) * 1.3 * torch.tensor([W / F, H / F]) * z[:, None]
    means = torch.cat([xy, z[:, None]], -1)
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.randn(n, 3, generator=g) * 0.6 + math.log(0.08))
    opacities = torch.sigmoid(torch.randn(n, generator=g))
    if sh_degree is not None:
        colors = 0.3 * torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g)
    else:
        colors = torch.rand(C, n, D, generator=g) if per_view else torch.rand(n, D, generator=g)
    viewmats = torch.eye(4).repeat(C, 1, 1)
    for c in range(C):  # cameras side by side, slightly yawed
        a = 0.1 * c
        viewmats[c, :3, :3] = torch.tensor([[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]])
        viewmats[c, 0, 3] = -0.2 * c
    Ks = torch.tensor([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1.0]]).repeat(C, 1, 1)
    return means, quats, scales, opacities, colors, viewmats, Ks


CASES = {
    "classic_rgb": dict(C=1, D=3, rasterize_mode="classic", render_mode="RGB"),
    "antialiased_semantic_rgb_ed_background": dict(
        C=2, D=19, rasterize_mode="antialiased", render_mode="RGB+ED", backgrounds=True
    ),
    "per_view_colors_rgb_d": dict(C=2, D=19, per_view=True, rasterize_mode="classic", render_mode="RGB+D"),
    "sh_degree_3": dict(C=1, D=3, sh_degree=3, rasterize_mode="classic", render_mode="RGB"),
    # The label ortho / DSM path of rsseg-export-geo: gsplat's orthographic camera, semantics + expected depth.
    # Forward only: the export renders without gradients, and on an H200 (gsplat 1.4.0, CUDA 13.0) 0.6 % of the
    # means gradients differed by up to 1.4 % of the largest one (the values and meta matched).
    "ortho_semantic_ed": dict(
        C=1, D=19, camera_model="ortho", rasterize_mode="antialiased", render_mode="RGB+ED", forward_only=True
    ),
}


def _render(device: str, scene, cfg, absgrad: bool, ed_mask: torch.Tensor | None = None):
    from gsplat.rendering import rasterization

    params = [t.to(device).clone().requires_grad_() for t in scene[:5]]
    kwargs = dict(
        camera_model=cfg.get("camera_model", "pinhole"),
        packed=False,
        sh_degree=cfg.get("sh_degree"),
        rasterize_mode=cfg["rasterize_mode"],
        render_mode=cfg["render_mode"],
        absgrad=absgrad,
    )
    D = 3 if cfg.get("sh_degree") is not None else cfg["D"]
    if cfg.get("backgrounds"):
        kwargs["backgrounds"] = torch.linspace(0.1, 0.9, cfg["C"] * D).reshape(cfg["C"], D).to(device)
        kwargs["backgrounds"].requires_grad_()
    fn = rasterization if device == "cuda" else rasterization_cpu
    colors, alphas, meta = fn(*params, scene[5].to(device), scene[6].to(device), W, H, **kwargs)
    meta["means2d"].retain_grad()
    weights = torch.sin(torch.arange(colors.numel(), device=device, dtype=torch.float32)).reshape(colors.shape)
    if ed_mask is not None:  # expected depth = depth / alpha: too ill-conditioned to compare where alpha is small
        weights[..., -1:] *= ed_mask.to(device)
    ((colors * weights).sum() + alphas.square().sum()).backward()
    grads = {n: p.grad for n, p in zip(["means", "quats", "scales", "opacities", "colors"], params, strict=True)}
    if "backgrounds" in kwargs:
        grads["backgrounds"] = kwargs["backgrounds"].grad
    grads["means2d"] = meta["means2d"].grad
    if absgrad:
        grads["means2d_abs"] = meta["means2d"].absgrad
    to_cpu = lambda t: t.detach().cpu() if torch.is_tensor(t) else t  # noqa: E731
    return (
        to_cpu(colors),
        to_cpu(alphas),
        {k: to_cpu(v) for k, v in meta.items()},
        {k: to_cpu(v) for k, v in grads.items()},
    )


@pytest.mark.parametrize("case", list(CASES))
def test_cpu_matches_gsplat_cuda(case):
    cfg = CASES[case]
    scene = make_scene(2000, cfg["C"], cfg["D"], cfg.get("per_view", False), cfg.get("sh_degree"))
    if cfg.get("camera_model") == "ortho":  # the frustum's spread, without the perspective divide
        scene[0][:, :2] /= scene[0][:, 2:]
    ed_mask = None
    if cfg["render_mode"].endswith("ED"):
        ed_mask = (_render("cpu", scene, cfg, absgrad=False)[1] > 0.5).float()
    cpu = _render("cpu", scene, cfg, absgrad=True, ed_mask=ed_mask)
    gpu = _render("cuda", scene, cfg, absgrad=True, ed_mask=ed_mask)

    visible = (cpu[2]["radii"] > 0) & (gpu[2]["radii"] > 0)
    assert (cpu[2]["radii"] != gpu[2]["radii"]).float().mean() < 1e-3  # ceil() may round differently, rarely
    for key in ["means2d", "depths", "conics", "opacities"]:
        torch.testing.assert_close(cpu[2][key][visible], gpu[2][key][visible], rtol=1e-4, atol=1e-4)
    # tile lists: the same up to float rounding of means2d at tile borders
    assert (cpu[2]["tiles_per_gauss"] != gpu[2]["tiles_per_gauss"]).float().mean() < 1e-3
    assert abs(cpu[2]["flatten_ids"].numel() - gpu[2]["flatten_ids"].numel()) <= 1e-3 * gpu[2]["flatten_ids"].numel()

    torch.testing.assert_close(cpu[1], gpu[1], atol=1e-4, rtol=0)
    if ed_mask is not None:
        cpu[0][..., -1:] *= ed_mask
        gpu[0][..., -1:] *= ed_mask
    depth_scale = 8.0 if "D" in cfg["render_mode"] else 1.0  # depth channels are in scene units
    torch.testing.assert_close(cpu[0] / depth_scale, gpu[0] / depth_scale, atol=2e-4, rtol=0)
    if cfg.get("forward_only"):
        return
    for name, g_gpu in gpu[3].items():
        g_cpu = cpu[3][name]
        if name.startswith("means2d"):
            g_cpu, g_gpu = g_cpu[visible], g_gpu[visible]
        scale = g_gpu.abs().max().clamp(min=1e-8)
        torch.testing.assert_close(g_cpu / scale, g_gpu / scale, atol=2e-3, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


def test_composited_depth_bound_reads_gsplat_meta_as_the_cpu_one():
    """The composited depth bound walks the meta's tile lists; gsplat's CUDA meta must give the CPU one's value
    and means gradients (the lists may differ by a splat at a tile border, hence the tolerance)."""
    from gsplat.rendering import rasterization

    from nerfseg_plugin.splat.depth_bound import composited_depth_bound_loss

    scene = make_scene(2000, 1, 3, False, None)
    g = torch.Generator().manual_seed(3)
    points = torch.cat([(torch.rand(200, 2, generator=g) - 0.5) * 0.8, 1.5 + 3 * torch.rand(200, 1, generator=g)], 1)
    results = []
    for device, render in (("cpu", rasterization_cpu), ("cuda", rasterization)):
        means = scene[0].to(device).clone().requires_grad_()
        quats, scales, opacities, colors, viewmats, Ks = (t.to(device) for t in scene[1:7])
        _, _, meta = render(means, quats, scales, opacities, colors, viewmats, Ks, W, H, packed=False)
        value = composited_depth_bound_loss(points.to(device), viewmats, Ks, meta, W, H, 0.0, 200)
        value.backward()
        results.append((value.detach().cpu(), means.grad.cpu()))
    assert float(results[0][0]) > 0
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-3, atol=0)
    scale = results[1][1].abs().max()
    torch.testing.assert_close(results[0][1] / scale, results[1][1] / scale, atol=2e-3, rtol=0)
