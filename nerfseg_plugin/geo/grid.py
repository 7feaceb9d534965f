"""The export raster: bounds and ground sampling distance in the map frame, cut into tiles.

Rows run north to south and columns west to east with pixel-is-area geometry (GeoTIFF's default): pixel (row, col)
covers ``x_min + [col, col + 1) * gsd`` by ``y_max - [row + 1, row) * gsd``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from nerfseg_plugin.geo.frames import MapFrame


@dataclass(frozen=True)
class RasterTile:
    """A window of the export raster."""

    row: int
    col: int
    height: int
    width: int
    x_min: float
    y_max: float

    @property
    def index(self) -> tuple[int, int]:
        return self.row, self.col


@dataclass(frozen=True)
class OrthoGrid:
    """Raster geometry of every ortho product of one export."""

    x_min: float
    y_max: float
    gsd: float
    width: int
    height: int
    tile_size: int = 512

    @classmethod
    def from_bounds(cls, bounds: tuple[float, float, float, float], gsd: float, tile_size: int = 512) -> OrthoGrid:
        """Bounds ``(x_min, y_min, x_max, y_max)``, snapped outwards to whole pixels."""
        x_min, y_min, x_max, y_max = (float(v) for v in bounds)
        if not (x_max > x_min and y_max > y_min):
            raise ValueError(f"bounds must have x_min < x_max and y_min < y_max, got {bounds}")
        if not gsd > 0:
            raise ValueError(f"gsd must be positive, got {gsd}")
        width, height = math.ceil((x_max - x_min) / gsd - 1e-9), math.ceil((y_max - y_min) / gsd - 1e-9)
        return cls(x_min, y_max, float(gsd), width, height, tile_size)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return self.x_min, self.y_max - self.height * self.gsd, self.x_min + self.width * self.gsd, self.y_max

    @property
    def num_tiles(self) -> int:
        return math.ceil(self.width / self.tile_size) * math.ceil(self.height / self.tile_size)

    def affine(self):
        from rasterio.transform import from_origin

        return from_origin(self.x_min, self.y_max, self.gsd, self.gsd)

    def tiles(self) -> Iterator[RasterTile]:
        size = self.tile_size
        for row in range(0, self.height, size):
            for col in range(0, self.width, size):
                yield RasterTile(
                    row,
                    col,
                    min(size, self.height - row),
                    min(size, self.width - col),
                    self.x_min + col * self.gsd,
                    self.y_max - row * self.gsd,
                )


def robust_extent(xy: np.ndarray, quantile: float = 0.005) -> tuple[float, float, float, float]:
    """x/y extent of points, ignoring the ``quantile`` tails on each side (stray SfM points)."""
    low = np.quantile(xy, quantile, axis=0)
    high = np.quantile(xy, 1.0 - quantile, axis=0)
    return float(low[0]), float(low[1]), float(high[0]), float(high[1])


def camera_ground_footprints(
    camera_to_worlds: np.ndarray, fx: np.ndarray, fy: np.ndarray, cx: np.ndarray, cy: np.ndarray,
    widths: np.ndarray, heights: np.ndarray, frame: MapFrame, ground_height: float,
) -> np.ndarray:  # fmt: skip
    """``[M, 2]`` map x/y where image corners and centres of (OpenGL) model-frame cameras meet ``z = ground``."""
    points = []
    for i, c2w in enumerate(camera_to_worlds):
        u = np.array([0.0, widths[i], widths[i], 0.0, cx[i]])
        v = np.array([0.0, 0.0, heights[i], heights[i], cy[i]])
        directions = np.stack([(u - cx[i]) / fx[i], -(v - cy[i]) / fy[i], -np.ones_like(u)], -1) @ c2w[:3, :3].T
        origin = frame.to_crs(c2w[None, :3, 3])[0]
        directions = directions @ frame.crs_from_model[:3, :3].T
        down = directions[:, 2] < -1e-6
        t = (ground_height - origin[2]) / np.where(down, directions[:, 2], -1.0)
        hits = origin[:2] + t[:, None] * directions[:, :2]
        points.append(hits[down & (t > 0)])
    return np.concatenate(points) if points else np.zeros((0, 2))


def photo_gsd(camera_to_worlds: np.ndarray, fx: np.ndarray, frame: MapFrame, ground_height: float) -> float:
    """Median ground sampling distance of the photos at their image centres (map units per pixel)."""
    values = []
    for c2w, f in zip(camera_to_worlds, fx, strict=True):
        origin = frame.to_crs(c2w[None, :3, 3])[0]
        axis = frame.crs_from_model[:3, :3] @ -c2w[:3, 2]  # optical axis in map units per model unit
        axis_length = np.linalg.norm(axis)
        if axis[2] >= -1e-6 * axis_length:
            continue  # looking at or above the horizon
        slant = (ground_height - origin[2]) / axis[2] * axis_length
        if slant > 0:
            values.append(slant / float(f))
    if not values:
        raise ValueError("no camera looks down onto the ground; pass --gsd")
    return float(np.median(values))
