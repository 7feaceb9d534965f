"""Where the labeled views' labels reached: the pixels of every view whose surface a labeled view saw at a labeled
pixel (a depth-tested visibility check through the 3D field's rendered depth, as GNeSF's vote in paper 004).

Those pixels are the 3D field's own business: the labels arrive there through the geometry, class borders and thin
structures included, and a 2D network trained from a few views would only blur them. The 2D model supervises the
rest, the surfaces no labeled view looked at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from nerfseg_plugin.core.geometry import PinholeView, backproject, sample_nearest, visible_in


@dataclass(frozen=True)
class ReachView:
    """One view as rendered for a round: its camera at the render size, z-depth there (``inf`` where the field
    renders no surface) and the user's labels at the same size (``ignore_index`` where unlabeled)."""

    view: PinholeView
    depth: Float[Tensor, "h w"]
    labels: Int[Tensor, "h w"]


def geometric_reach(views: Sequence[ReachView], ignore_index: int, depth_tolerance: float) -> list[Bool[Tensor, "h w"]]:
    """Per view, the pixels whose rendered surface point a labeled view sees at one of its labeled pixels (labeled
    pixels of the view itself included)."""
    sources = [view for view in views if bool((view.labels != ignore_index).any())]
    reached = []
    for target in views:
        labeled_here = target.labels != ignore_index
        points = backproject(target.view, target.depth)
        known = torch.isfinite(points).all(-1) & torch.isfinite(target.depth.reshape(-1))
        seen = labeled_here.reshape(-1).clone()
        for source in sources:
            if source is target:
                continue
            index, uv = visible_in(source.view, source.depth, points, known & ~seen, depth_tolerance)
            label = sample_nearest(source.labels.float(), uv)
            seen[index[label != ignore_index]] = True
        reached.append(seen.reshape(labeled_here.shape))
    return reached
