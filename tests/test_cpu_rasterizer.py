"""CPU rasterizer: against the dense autograd reference, gsplat's pure-torch pieces, gradcheck, and DefaultStrategy."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from nerfseg_plugin.splat.cpu_rasterizer import (
    isect_tiles_cpu,
    project_gaussians,
    rasterization_cpu,
    rasterize_to_pixels_cpu,
)
from nerfseg_plugin.splat.dense_reference import rasterization_dense
from nerfseg_plugin.splat.rasterization import rasterize

W, H, F = 40, 32, 40.0  # image not a multiple of the 16 px tile: partial tiles on the right and bottom


def look(yaw: float, shift: float) -> torch.Tensor:
    """World-to-camera: a small yaw and sideways shift away from the identity camera looking down +z."""
    c, s = math.cos(yaw), math.sin(yaw)
    v = torch.eye(4, dtype=torch.float64)
    v[:3, :3] = torch.tensor([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])
    v[0, 3] = shift
    return v


def make_scene(n=120, C=1, D=3, dtype=torch.float64, seed=0, opacity=(0.2, 0.9), scale=(0.05, 0.4), depth=(2.0, 6.0)):
    """Well-conditioned random Gaussians inside the view frustum: screen sigmas of ~0.3-8 px."""
    g = torch.Generator().manual_seed(seed)
    u = lambda *shape: torch.rand(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    z = depth[0] + (depth[1] - depth[0]) * u(n)
    means = torch.stack([(u(n) - 0.5) * 1.2 * W / F * z, (u(n) - 0.5) * 1.2 * H / F * z, z], -1)
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    scales = torch.exp(math.log(scale[0]) + (math.log(scale[1]) - math.log(scale[0])) * u(n, 3))
    opacities = opacity[0] + (opacity[1] - opacity[0]) * u(n)
    colors = u(n, D)
    viewmats = torch.stack([look(0.0, 0.0), look(0.15, -0.3)][:C])
    Ks = torch.tensor([[F, 0.0, W / 2], [0.0, F, H / 2], [0.0, 0.0, 1.0]], dtype=torch.float64).expand(C, 3, 3)
    return [t.to(dtype) for t in (means, quats, scales, opacities, colors, viewmats, Ks)]


def render_both(scene, **kwargs):
    """Render with the CPU rasterizer and the dense reference, backpropagate the same loss through both; returns
    (colors, alphas, {input name: gradient}) for each. Gradients include the camera poses (camera optimisation)."""
    names = ["means", "quats", "scales", "opacities", "colors", "viewmats"]
    out = []
    for fn in (rasterization_cpu, rasterization_dense):
        g = torch.Generator().manual_seed(1)
        inputs = dict(zip(names, (t.clone().requires_grad_() for t in scene[:6]), strict=True))
        extra = {k: v.clone().requires_grad_() if torch.is_tensor(v) else v for k, v in kwargs.items()}
        colors, alphas, _ = fn(*inputs.values(), scene[6], W, H, **extra)
        w = torch.rand(colors.shape, generator=g, dtype=colors.dtype)
        ((colors * w).sum() + (alphas * alphas).sum()).backward()
        grads = {k: t.grad for k, t in {**inputs, **extra}.items() if torch.is_tensor(t)}
        out.append((colors.detach(), alphas.detach(), grads))
    return out


def assert_close_all(cpu, ref, atol):
    torch.testing.assert_close(cpu[0], ref[0], atol=atol, rtol=0)
    torch.testing.assert_close(cpu[1], ref[1], atol=atol, rtol=0)
    for name, a in cpu[2].items():
        b = ref[2][name]
        if a is None or b is None:  # an input the render does not use (colours in depth-only modes)
            assert a is None and b is None, name
            continue
        scale = b.abs().max().clamp(min=1.0)
        torch.testing.assert_close(a / scale, b / scale, atol=atol, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


CASES = {
    "classic": dict(C=1, D=3),
    "two_cameras_per_view_colors": dict(C=2, D=3, per_view=True),
    "antialiased": dict(C=1, D=3, rasterize_mode="antialiased"),
    "rgb_plus_16_semantic_channels_background": dict(C=2, D=19, backgrounds=True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_dense_reference_float64(case):
    cfg = dict(CASES[case])
    scene = make_scene(C=cfg["C"], D=cfg["D"])
    if cfg.get("per_view"):
        scene[4] = torch.rand(cfg["C"], *scene[4].shape, dtype=torch.float64)
    kwargs = {"rasterize_mode": cfg.get("rasterize_mode", "classic")}
    if cfg.get("backgrounds"):
        kwargs["backgrounds"] = torch.rand(cfg["C"], cfg["D"], dtype=torch.float64)
    cpu, ref = render_both(scene, **kwargs)
    assert cpu[1].max() > 0.5  # the scene covers the view
    assert_close_all(cpu, ref, atol=1e-9)


def test_matches_dense_reference_float32():
    cpu, ref = render_both(make_scene(D=19, dtype=torch.float32))
    assert cpu[0].dtype == torch.float32 and cpu[2]["means"].dtype == torch.float32
    assert_close_all(cpu, ref, atol=2e-4)


@pytest.mark.parametrize("render_mode", ["RGB", "RGB+ED"])
def test_geometry_grad_channels_equal_a_second_pass_over_detached_geometry(render_mode):
    """One pass with geometry_grad_channels=3 gives the values and gradients of two passes: colour with gradients
    to the geometry, and 16 feature channels over detached geometry."""
    means, quats, scales, opacities, colors, viewmats, Ks = make_scene(D=19)
    weights = torch.rand(1, H, W, 20, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def run(single_pass: bool):
        geometry = [t.clone().requires_grad_() for t in (means, quats, scales, opacities)]
        feats = colors.clone().requires_grad_()
        if single_pass:
            out, alphas, _ = rasterization_cpu(
                *geometry, feats, viewmats, Ks, W, H, render_mode=render_mode, geometry_grad_channels=3
            )
        else:
            rgb, alphas, _ = rasterization_cpu(*geometry, feats[:, :3], viewmats, Ks, W, H, render_mode=render_mode)
            detached = [t.detach() for t in geometry]
            features, _, _ = rasterization_cpu(*detached, feats[:, 3:], viewmats, Ks, W, H)
            out = torch.cat([rgb[..., :3], features, rgb[..., 3:]], -1)
        ((out * weights[..., : out.shape[-1]]).sum() + (alphas * alphas).sum()).backward()
        return out.detach(), [t.grad for t in (*geometry, feats)]

    (out_one, grads_one), (out_two, grads_two) = run(True), run(False)
    torch.testing.assert_close(out_one, out_two, atol=1e-10, rtol=0)
    assert all(g.abs().sum() > 0 for g in grads_one)
    for a, b in zip(grads_one, grads_two, strict=True):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)
    # and the features do move the geometry without the option
    geometry = [t.clone().requires_grad_() for t in (means, quats, scales, opacities)]
    out, _, _ = rasterization_cpu(*geometry, colors, viewmats, Ks, W, H, render_mode=render_mode)
    (out[..., 3:19] * weights[..., 3:19]).sum().backward()
    assert geometry[0].grad.abs().sum() > 0


def test_early_stop_and_alpha_clamp():
    """Opaque layers: the front splat saturates at alpha 0.999 and pixels stop at transmittance 1e-4, like gsplat."""
    scene = make_scene(n=80, opacity=(0.5, 1.0), scale=(0.4, 1.5))
    scene[0][0], scene[2][0], scene[3][0] = torch.tensor([0.0, 0.0, 1.5]), 1.0, 1.0  # wide, opaque, in front
    cpu, ref = render_both(scene)
    assert_close_all(cpu, ref, atol=1e-9)
    no_stop, _, _ = rasterization_dense(*scene, W, H, early_stop=False)
    assert (no_stop - ref[0]).abs().max() > 1e-6, "the scene must exercise the early stop"
    assert (cpu[1] > 0.999).float().mean() > 0.5
    front = [t[:1] for t in scene[:5]] + scene[5:]
    cpu, ref = render_both(front)
    assert_close_all(cpu, ref, atol=1e-9)
    assert (cpu[1] == 0.999).sum() >= 4, "the front splat alone must hit the 0.999 clamp"


@pytest.mark.parametrize("mode", ["D", "ED", "RGB+D", "RGB+ED"])
def test_render_modes(mode):
    scene = make_scene(D=3)
    cpu, ref = render_both(scene, render_mode=mode, backgrounds=torch.rand(1, 3, dtype=torch.float64))
    assert cpu[0].shape[-1] == (1 if mode in ("D", "ED") else 4)
    assert_close_all(cpu, ref, atol=1e-9)


def test_spherical_harmonics_colors():
    scene = make_scene()
    scene[4] = 0.3 * torch.randn(scene[0].shape[0], 4, 3, dtype=torch.float64)
    cpu, ref = render_both(scene, sh_degree=1)
    assert_close_all(cpu, ref, atol=1e-9)


def test_culling():
    scene = make_scene(n=40)
    means = scene[0]
    means[0] = torch.tensor([0.0, 0.0, -2.0])  # behind the camera
    means[1] = torch.tensor([0.0, 0.0, 0.0])  # at the camera centre
    means[2] = torch.tensor([0.0, 0.0, 20.0])  # beyond far_plane
    means[3] = torch.tensor([30.0, 0.0, 3.0])  # far off-screen
    scene[2][4] = 0.001  # tiny: its 3-sigma radius (2 px from the eps2d blur) is under radius_clip
    kwargs = dict(far_plane=10.0, radius_clip=2.0)
    _, _, meta = rasterization_cpu(*scene, W, H, **kwargs)
    assert (meta["radii"][0, :5] == 0).all() and (meta["radii"][0, 5:] > 0).float().mean() > 0.5
    keep = torch.arange(len(means)) != 1  # gsplat's torch projection divides by z = 0: NaN in the reference
    cpu, ref = render_both([t[keep] for t in scene[:5]] + scene[5:], **kwargs)
    assert_close_all(cpu, ref, atol=1e-9)
    params = [t.clone().requires_grad_() for t in scene[:5]]
    colors, alphas, _ = rasterization_cpu(*params, scene[5], scene[6], W, H, **kwargs)
    (colors.sum() + alphas.sum()).backward()
    for p in params:
        assert torch.isfinite(p.grad).all() and (p.grad[:5] == 0).all()


@pytest.mark.parametrize("n", [0, 5])
def test_nothing_visible(n):
    """No Gaussians, or all behind the camera: the background, zero alpha, zero (finite) gradients."""
    scene = make_scene(n=n)
    scene[0][:, 2] = -3.0
    params = [t.clone().requires_grad_() for t in scene[:5]]
    backgrounds = torch.rand(1, 3, dtype=torch.float64)
    colors, alphas, meta = rasterization_cpu(*params, scene[5], scene[6], W, H, backgrounds=backgrounds)
    assert meta["flatten_ids"].numel() == 0 and (meta["isect_offsets"] == 0).all()
    torch.testing.assert_close(colors, backgrounds[:, None, None, :].expand(1, H, W, 3))
    assert (alphas == 0).all()
    (colors.sum() + alphas.sum()).backward()
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in params)


def test_absgrad():
    scene = make_scene(C=2)
    params = [t.clone().requires_grad_() for t in scene[:5]]
    colors, alphas, meta = rasterization_cpu(*params, scene[5], scene[6], W, H, absgrad=True)
    meta["means2d"].retain_grad()
    colors[:, 10, 20].sum().backward()  # one pixel: per-pixel |grad| summed over one pixel is |grad|
    absgrad, grad = meta["means2d"].absgrad, meta["means2d"].grad
    assert absgrad.shape == grad.shape == (2, scene[0].shape[0], 2)
    assert (absgrad > 0).any()
    torch.testing.assert_close(absgrad, grad.abs(), atol=1e-12, rtol=0)
    params = [t.clone().requires_grad_() for t in scene[:5]]
    colors, _, meta = rasterization_cpu(*params, scene[5], scene[6], W, H, absgrad=True)
    meta["means2d"].retain_grad()
    colors.sum().backward()
    absgrad, grad = meta["means2d"].absgrad, meta["means2d"].grad
    assert (absgrad >= grad.abs() - 1e-12).all() and (absgrad > grad.abs() + 1e-6).any()
    assert (absgrad[meta["radii"] == 0] == 0).all()


def test_compositing_gradcheck():
    """torch.autograd.gradcheck of the compositing Function alone (float64, tiny, with a background)."""
    g = torch.Generator().manual_seed(3)
    n, w, h, ts = 7, 13, 11, 8
    means2d = torch.rand(1, n, 2, generator=g, dtype=torch.float64) * torch.tensor([w, h])
    L = torch.randn(1, n, 2, 2, generator=g, dtype=torch.float64)
    conics = torch.linalg.inv(L @ L.transpose(-1, -2) * 3.0 + 0.3 * torch.eye(2))[..., [0, 0, 1], [0, 1, 1]]
    colors = torch.rand(1, n, 2, generator=g, dtype=torch.float64)
    opacities = 0.3 + 0.6 * torch.rand(1, n, generator=g, dtype=torch.float64)
    backgrounds = torch.rand(1, 2, generator=g, dtype=torch.float64)
    radii = torch.full((1, n), 8, dtype=torch.int32)
    depths = torch.rand(1, n, generator=g, dtype=torch.float64)
    _, _, flatten_ids, offsets = isect_tiles_cpu(means2d, radii, depths, ts, math.ceil(w / ts), math.ceil(h / ts))
    inputs = [t.requires_grad_() for t in (means2d, conics, colors, opacities, backgrounds)]

    def fn(m, c, col, op, bg):
        return rasterize_to_pixels_cpu(m, c, col, op, w, h, ts, offsets, flatten_ids, backgrounds=bg)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_projection_and_isect_match_gsplat_torch_impl():
    from nerfseg_plugin.splat.gsplat_private import torch_impl

    gsplat_torch = torch_impl()
    _fully_fused_projection, _quat_scale_to_covar_preci = (
        gsplat_torch._fully_fused_projection,
        gsplat_torch._quat_scale_to_covar_preci,
    )
    _isect_offset_encode, _isect_tiles = gsplat_torch._isect_offset_encode, gsplat_torch._isect_tiles

    means, quats, scales, _, _, viewmats, Ks = make_scene(n=60, C=2)
    ours = project_gaussians(means, quats, scales, viewmats, Ks, W, H)
    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    ref = _fully_fused_projection(means, covars, viewmats, Ks, W, H, calc_compensations=True)
    assert torch.equal(ours[0], ref[0])
    for a, b in zip(ours[1:], ref[1:], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    radii, means2d, depths = ref[0], ref[1].float(), ref[2].float()
    tiles_per_gauss, isect_ids, flatten_ids, offsets = isect_tiles_cpu(means2d, radii, depths, 16, 3, 2)
    ref_tpg, ref_ids, ref_flat = _isect_tiles(means2d, radii, depths, 16, 3, 2)
    assert torch.equal(tiles_per_gauss, ref_tpg) and torch.equal(isect_ids, ref_ids)
    assert torch.equal(flatten_ids, ref_flat) and torch.equal(offsets, _isect_offset_encode(ref_ids, 2, 3, 2))


@pytest.mark.parametrize("absgrad", [False, True])
def test_default_strategy_densifies_with_cpu_meta(monkeypatch, absgrad):
    """gsplat's DefaultStrategy reads our meta (means2d grads, radii, sizes) and clones, splits and prunes on CPU."""
    import gsplat.strategy.default as default_mod
    from gsplat.strategy import DefaultStrategy

    counts = {"duplicate": 0, "split": 0, "remove": 0}
    for name in counts:

        def counted(*args, _op=getattr(default_mod, name), _name=name, **kwargs):
            counts[_name] += int(kwargs["mask"].sum())
            return _op(*args, **kwargs)

        monkeypatch.setattr(default_mod, name, counted)
    means, quats, scales, opacities, colors, viewmats, Ks = make_scene(n=150, dtype=torch.float32)
    opacities[:10] = 0.01  # below prune_opa
    init = {"means": means, "quats": quats, "scales": scales.log(), "opacities": torch.logit(opacities)}
    params = torch.nn.ParameterDict({k: torch.nn.Parameter(v) for k, v in {**init, "colors": colors}.items()})
    optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
    max_scale = scales.max(-1).values.median().item()  # half small (cloned), half large (split)
    strategy = DefaultStrategy(
        prune_opa=0.02, grow_grad2d=1e-9, grow_scale3d=max_scale, refine_start_iter=0, refine_every=2, absgrad=absgrad
    )
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=1.0)
    target = torch.rand(1, H, W, 3)
    n0 = len(params["means"])
    for step in range(1, 4):  # refines at step 2; step 0 would reset the opacities
        img, _, info = rasterization_cpu(
            params["means"], params["quats"], params["scales"].exp(), params["opacities"].sigmoid(),
            params["colors"], viewmats, Ks, W, H, absgrad=strategy.absgrad,
        )  # fmt: skip
        strategy.step_pre_backward(params, optimizers, state, step, info)
        ((img - target) ** 2).mean().backward()
        for opt in optimizers.values():
            opt.step()
        strategy.step_post_backward(params, optimizers, state, step, info, packed=False)
        for opt in optimizers.values():
            opt.zero_grad()
    assert counts["duplicate"] > 0 and counts["split"] > 0 and counts["remove"] >= 10
    assert len(params["means"]) == n0 + counts["duplicate"] + counts["split"] - counts["remove"]
    assert all(len(opt.param_groups[0]["params"][0]) == len(params["means"]) for opt in optimizers.values())


def test_meta_keys_and_dispatch():
    scene = make_scene(n=30, dtype=torch.float32)
    colors, alphas, meta = rasterize(*scene, W, H)  # auto on CPU tensors: the CPU backend
    assert colors.shape == (1, H, W, 3) and alphas.shape == (1, H, W, 1)
    keys = ["means2d", "radii", "depths", "conics", "opacities", "width", "height", "n_cameras", "tile_size"]
    keys += ["tile_width", "tile_height", "isect_offsets", "isect_ids", "flatten_ids", "tiles_per_gauss"]
    assert all(key in meta for key in keys)
    assert meta["camera_ids"] is None and meta["gaussian_ids"] is None
    assert meta["radii"].dtype == torch.int32 and meta["radii"].shape == (1, 30)
    assert meta["isect_offsets"].shape == (1, 2, 3) and meta["n_cameras"] == 1
    with pytest.raises(ValueError, match="CUDA"):
        rasterize(*scene, W, H, backend="gsplat")
    with pytest.raises(ValueError, match="packed"):
        rasterize(*scene, W, H, packed=True)
    with pytest.raises(ValueError, match="pinhole"):
        rasterize(*scene, W, H, camera_model="fisheye")


def test_import_does_not_load_gsplat():
    code = "import sys, nerfseg_plugin.splat.rasterization; assert 'gsplat' not in sys.modules, 'gsplat imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
