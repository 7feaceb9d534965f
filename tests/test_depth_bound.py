"""The composited sparse-point depth bound: gsplat's compositing along a point's rays, and what it pulls."""

from __future__ import annotations

import math

import pytest
import torch
from test_cpu_rasterizer import H, W, make_scene

from nerfseg_plugin.splat.config import RssegSplatModelConfig
from nerfseg_plugin.splat.cpu_rasterizer import rasterization_cpu
from nerfseg_plugin.splat.dense_reference import composite_dense, rasterization_dense
from nerfseg_plugin.splat.depth_bound import _excess_depth_along_rays, composited_depth_bound_loss

K = torch.tensor([[[10.0, 0.0, 5.0], [0.0, 10.0, 5.0], [0.0, 0.0, 1.0]]])
VIEW = torch.eye(4)[None]


def test_rays_composite_as_the_rasterizer_does() -> None:
    """At every pixel centre, the excess depth along the ray (the CPU rasterizer's tile lists) equals the dense
    reference's composite of each splat's excess as a colour (its own tiles, alpha rules and order, no early stop),
    in value and in gradient."""
    means, quats, scales, opacities, _, viewmats, Ks = make_scene(n=80, C=1)
    point_depth, margin = 3.5, 0.05
    results = []
    for along_rays in (True, False):
        leaf = means.clone().requires_grad_()
        render = rasterization_cpu if along_rays else rasterization_dense  # the CPU meta has the tile lists
        _, _, meta = render(leaf, quats, scales, opacities, torch.ones(80, 1, dtype=leaf.dtype), viewmats, Ks, W, H)
        if along_rays:
            ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
            rays = torch.stack([xs, ys], -1).reshape(-1, 2).to(leaf.dtype) + 0.5
            depths = torch.full((H * W,), point_depth, dtype=leaf.dtype)
            value = _excess_depth_along_rays(meta, rays, depths, margin, None)
        else:
            excess = torch.relu(meta["depths"] / point_depth - 1 - margin)[..., None]
            image, _ = composite_dense(meta["means2d"], meta["conics"], excess, meta["opacities"], meta["radii"],
                                       meta["depths"], W, H, early_stop=False)  # fmt: skip
            value = image.reshape(-1)
        value.pow(2).sum().backward()
        results.append((value.detach(), leaf.grad))
    assert float(results[1][0].max()) > 0.1, "some splats lie behind the point"
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-9, rtol=0)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-9, rtol=0)


def _sheet(depth: float, opacity: float, size: int = 20) -> list[torch.Tensor]:
    """A flat grid of Gaussians facing the identity camera at ``depth``, covering its 10 x 10 px frame."""
    spacing = 1.2 * depth / size  # the frame spans +-0.5 depth at f = 10 px
    xs = (torch.arange(size) - (size - 1) / 2) * spacing
    grid = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), -1).reshape(-1, 2)
    means = torch.cat([grid, torch.full((grid.shape[0], 1), depth)], -1)
    scales = torch.tensor([[spacing, spacing, 1e-3]]).expand(grid.shape[0], 3)
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(grid.shape[0], 4)
    return [means, quats, scales, torch.full((grid.shape[0],), opacity)]


def _bound(
    *sheets: list[torch.Tensor], point_depth: float = 2.0, max_excess: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    means, quats, scales, opacities = (torch.cat(parts).clone() for parts in zip(*sheets, strict=True))
    means.requires_grad_()
    colors = torch.ones(means.shape[0], 1)
    _, _, meta = rasterization_cpu(means, quats, scales, opacities, colors, VIEW, K, 10, 10)
    point = torch.tensor([[0.05, 0.05, point_depth]])
    value = composited_depth_bound_loss(point, VIEW, K, meta, 10, 10, margin=0.0, max_points=10, max_excess=max_excess)
    value.backward()
    return value.detach(), means.grad


def _alpha_and_expected_depth(*sheets: list[torch.Tensor]) -> tuple[float, float]:
    """Accumulated alpha and expected depth at the frame's centre pixel."""
    means, quats, scales, opacities = (torch.cat(parts) for parts in zip(*sheets, strict=True))
    image, alpha, _ = rasterization_dense(means, quats, scales, opacities, torch.ones(means.shape[0], 1), VIEW, K,
                                          10, 10, render_mode="ED")  # fmt: skip
    return float(alpha[0, 5, 5, 0]), float(image[0, 5, 5, 0])


def test_a_surface_behind_the_point_is_pulled_forward_and_a_floater_does_not_buy_it_off() -> None:
    behind, grad = _bound(_sheet(3.0, 0.9))
    assert math.isclose(float(behind), 0.5, rel_tol=0.01), "weight ~1 at 3 / 2 - 1 = 0.5 behind"
    assert float(grad[:, 2].sum()) > 0, "descent moves the sheet towards the camera"
    # a faint floater layer in front leaves the bound times its transmittance, where it pulls the expected depth
    # (the expected form's input) almost onto the point, releasing most of that bound
    floater = _sheet(1.0, 0.05)
    floater_alpha, _ = _alpha_and_expected_depth(floater)
    assert 0.3 < floater_alpha < 0.5
    with_floater, _ = _bound(_sheet(3.0, 0.9), floater)
    assert math.isclose(float(with_floater / behind), 1.0 - floater_alpha, abs_tol=0.02)
    _, expected_depth = _alpha_and_expected_depth(floater, _sheet(3.0, 0.9))
    assert expected_depth / 2.0 - 1.0 < 0.2 * float(behind)
    # an opaque surface in front occludes the point: nothing to pull
    occluded, _ = _bound(_sheet(3.0, 0.9), _sheet(1.5, 0.999))
    assert float(occluded) < 0.01 * float(behind)
    at_point, _ = _bound(_sheet(2.0, 0.9))
    assert float(at_point) == 0.0


def test_nothing_framed_gives_a_zero_loss_with_a_graph() -> None:
    means, quats, scales, opacities = _sheet(3.0, 0.9)
    means = means.clone().requires_grad_()
    _, _, meta = rasterization_cpu(means, quats, scales, opacities, torch.ones(means.shape[0], 1), VIEW, K, 10, 10)
    behind_camera = torch.tensor([[0.0, 0.0, -1.0], [50.0, 0.0, 1.0]])
    value = composited_depth_bound_loss(behind_camera, VIEW, K, meta, 10, 10, margin=0.0, max_points=10)
    assert float(value.detach()) == 0.0
    value.backward()  # connected to the Gaussians, so a step with nothing framed still backpropagates


def test_a_point_far_in_front_of_the_surface_is_taken_for_an_outlier() -> None:
    """With ``max_excess`` the loss is truncated: a surface 3 % behind the point is pulled, one 50 % behind is not
    (the point is likelier an SfM outlier in free space)."""
    near, near_grad = _bound(_sheet(2.06, 0.9), max_excess=0.05)
    assert math.isclose(float(near), 0.03, rel_tol=0.05) and float(near_grad[:, 2].sum()) > 0
    far, far_grad = _bound(_sheet(3.0, 0.9), max_excess=0.05)
    assert float(far) == 0.0 and float(far_grad.abs().sum()) == 0.0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"depth_bound_mode": "expected", "depth_bound_max_excess": 0.05}, "composited depth bound only"),
        ({"depth_bound_max_excess": 0.004}, "must exceed depth_bound_margin"),
    ],
)
def test_a_truncation_the_bound_cannot_use_is_refused(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RssegSplatModelConfig(**settings)
    RssegSplatModelConfig(depth_bound_max_excess=0.05)  # the measured setting is accepted
