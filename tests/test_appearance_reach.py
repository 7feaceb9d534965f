"""The geometric reach test: which pixels a labeled view saw, through the rendered depth."""

from __future__ import annotations

import torch

from nerfseg_plugin.appearance.reach import ReachView, geometric_reach
from nerfseg_plugin.core.geometry import PinholeView, visible_in

IGNORE = 255
SIZE = 32


def _nadir_view(x: float, height: float = 10.0) -> PinholeView:
    """A camera at (x, 0, height) looking straight down (-z in OpenGL camera axes is world -z)."""
    c2w = torch.tensor([[1.0, 0, 0, x], [0, 1.0, 0, 0], [0, 0, 1.0, height]])
    return PinholeView(c2w=c2w, fx=32.0, fy=32.0, cx=SIZE / 2, cy=SIZE / 2, width=SIZE, height=SIZE)


def _flat_ground_depth(height: float = 10.0) -> torch.Tensor:
    return torch.full((SIZE, SIZE), height)


def test_reach_is_the_overlap_with_the_labeled_pixels_of_labeled_views() -> None:
    labeled = torch.full((SIZE, SIZE), IGNORE, dtype=torch.int16)
    labeled[:, SIZE // 2 :] = 3  # only the right half (+x) of the labeled view carries labels
    views = [
        ReachView(_nadir_view(0.0), _flat_ground_depth(), labeled),
        # 2.5 m to the right: at 10 m with f=32 px a metre is 3.2 px, so the shift is 8 px
        ReachView(_nadir_view(2.5), _flat_ground_depth(), torch.full((SIZE, SIZE), IGNORE, dtype=torch.int16)),
    ]
    reach = geometric_reach(views, IGNORE, depth_tolerance=0.03)
    assert torch.equal(reach[0], labeled != IGNORE)
    columns = reach[1].all(0)
    # the other view's column c sees ground x = (c + 0.5 - 16) / 3.2 + 2.5; labeled ground has x >= 0 (col >= 16)
    expected = torch.tensor([(c + 0.5 - 16) / 3.2 + 2.5 >= 0 for c in range(SIZE)])
    # the labeled view's footprint ends at x = 5 m, which the other view's column 24 and beyond reach past
    expected &= torch.tensor([(c + 0.5 - 16) / 3.2 + 2.5 < 5.0 for c in range(SIZE)])
    assert torch.equal(columns, expected)
    assert not reach[1].any(0)[~expected].any()


def test_an_occluded_surface_is_not_reached() -> None:
    labeled = torch.zeros((SIZE, SIZE), dtype=torch.int16)
    occluded_depth = _flat_ground_depth()
    occluded_depth[:, :] = 5.0  # the labeled view sees a roof 5 m above the ground the other view renders
    views = [
        ReachView(_nadir_view(0.0), occluded_depth, labeled),
        ReachView(_nadir_view(0.0), _flat_ground_depth(), torch.full((SIZE, SIZE), IGNORE, dtype=torch.int16)),
    ]
    reach = geometric_reach(views, IGNORE, depth_tolerance=0.03)
    assert reach[0].all()
    assert not reach[1].any()


def test_pixels_without_a_rendered_surface_are_not_reached() -> None:
    depth = _flat_ground_depth()
    depth[:8] = float("inf")
    views = [
        ReachView(_nadir_view(0.0), _flat_ground_depth(), torch.zeros((SIZE, SIZE), dtype=torch.int16)),
        ReachView(_nadir_view(0.0), depth, torch.full((SIZE, SIZE), IGNORE, dtype=torch.int16)),
    ]
    reach = geometric_reach(views, IGNORE, depth_tolerance=0.03)
    assert not reach[1][:8].any() and reach[1][8:].all()


def test_visible_in_keeps_candidates_in_view_and_at_the_rendered_depth() -> None:
    view = _nadir_view(0.0)
    depth = _flat_ground_depth()
    depth[:, : SIZE // 2] = 5.0  # a roof 5 m up covers the left half (-x) of the image
    points = torch.tensor(
        [
            [1.0, 0.0, 0.0],  # ground, right half: visible
            [-1.0, 0.0, 0.0],  # ground under the roof: occluded
            [-1.0, 0.0, 5.0],  # the roof itself: visible
            [100.0, 0.0, 0.0],  # outside the image
            [2.0, 0.0, 0.0],  # visible but not a candidate
        ]
    )
    candidates = torch.tensor([True, True, True, True, False])
    index, uv = visible_in(view, depth, points, candidates, depth_tolerance=0.03)
    assert index.tolist() == [0, 2]
    # x = 1 m at 10 m depth is 3.2 px right of the centre; x = -1 m at 5 m depth is 6.4 px left
    assert torch.allclose(uv, torch.tensor([[16 + 3.2, 16.0], [16 - 6.4, 16.0]]))
