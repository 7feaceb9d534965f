"""How many training photos frame each map pixel: where the survey's products are supported by data.

Photogrammetric tools stop their products where the photos stop overlapping (OpenDroneMap's auto-boundary, the
processing area of Pix4D): beyond the last photos' footprints a trained model only extrapolates, and an
orthomosaic or an area table that includes those margins reports classes nobody photographed. A pixel counts a
photo when its surface point (map x, y and rendered height) projects inside the photo's frame, in front of the
camera; there is no occlusion test, so a framed but hidden point still counts (the count is an upper bound).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from nerfseg_plugin.core.geometry import PinholeView, inside_image, project
from nerfseg_plugin.geo.frames import MapFrame
from nerfseg_plugin.geo.grid import RasterTile


class PhotoFootprints:
    """Counts, per map point, the training photos whose frame contains it."""

    def __init__(self, views: Sequence[PinholeView], frame: MapFrame) -> None:
        """``views``: the training photos in model coordinates (the shared pinhole model)."""
        self.views = list(views)
        self.frame = frame

    def count(self, points_map: np.ndarray) -> np.ndarray:
        """``[N]`` photo counts of ``[N, 3]`` map points (x, y, height); non-finite points count 0."""
        finite = np.isfinite(points_map).all(-1)
        model = torch.from_numpy(self.frame.to_model(np.where(finite[:, None], points_map, 0.0)))
        counts = torch.zeros(len(points_map), dtype=torch.int32)
        for view in self.views:
            uv, z = project(view, model.to(view.c2w.dtype))
            counts += inside_image(view, uv, z).to(torch.int32)
        return np.where(finite, counts.numpy(), 0)

    def count_tile(self, tile: RasterTile, gsd: float, heights: np.ndarray) -> np.ndarray:
        """``[h, w]`` photo counts of a tile's pixel centres at their rendered ``heights`` (NaN: count 0)."""
        rows, cols = np.mgrid[0 : tile.height, 0 : tile.width]
        points = np.stack(
            [tile.x_min + (cols + 0.5) * gsd, tile.y_max - (rows + 0.5) * gsd, heights.astype(np.float64)], -1
        )
        return self.count(points.reshape(-1, 3)).reshape(tile.height, tile.width)
