"""Road networks: polylines with a width, painted into the grid as asphalt, sidewalks and lane markings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from nerfseg_plugin.scenegen.grid import TownGrid
from nerfseg_plugin.scenegen.materials import Material


@dataclass
class Road:
    """One road: a centreline polyline and its cross-section."""

    points: np.ndarray
    """``[n, 2]`` centreline vertices in world xy (a single vertex makes a round cul-de-sac)."""
    half_width: float
    """Half the asphalt width."""
    sidewalk_width: float = 3.0
    """Sidewalk width on each side (0 for none)."""
    center_line: Literal["dashed", "double_yellow", "none"] = "dashed"
    """Marking along the centreline."""
    edge_lines: bool = False
    """Solid white lines along both asphalt edges."""
    crossings: bool = True
    """Zebra crossings and stop lines where this road meets another road that has them too."""


@dataclass
class RoadField:
    """Per cell: the nearest and second-nearest road, as signed distances to their asphalt edges."""

    edge: np.ndarray
    """Signed distance to the nearest road's asphalt edge (negative on its asphalt)."""
    edge2: np.ndarray
    """The same for the second-nearest road (large where only one road is near)."""
    road: np.ndarray
    """Index of the nearest road (-1 where none is near)."""
    road2: np.ndarray
    """Index of the second-nearest road (-1 where none)."""
    along: np.ndarray
    """Arc length along the nearest road."""
    lateral: np.ndarray
    """Signed offset from the nearest road's centreline (positive to the left of its direction)."""


def polyline_length(points: np.ndarray) -> np.ndarray:
    """Cumulative arc length at each vertex."""
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])


def wavy_polyline(
    start: np.ndarray, end: np.ndarray, amplitude: float, rng: np.random.Generator, step: float = 2.0
) -> np.ndarray:
    """A line from ``start`` to ``end`` bent sideways by two random sine waves that vanish at both ends."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    length = float(np.linalg.norm(end - start))
    t = np.linspace(0.0, 1.0, max(2, int(length / step) + 1))
    normal = np.array([-(end - start)[1], (end - start)[0]]) / max(length, 1e-9)
    waves = sum(
        rng.uniform(0.4, 1.0) * np.sin(np.pi * k * t + rng.uniform(0, 2 * np.pi)) * np.sin(np.pi * t) for k in (1, 2)
    )
    return start + t[:, None] * (end - start) + amplitude * waves[:, None] * normal


def point_on_polyline(points: np.ndarray, s: float) -> tuple[np.ndarray, float]:
    """Position and heading (radians) at arc length ``s``."""
    lengths = polyline_length(points)
    i = int(np.clip(np.searchsorted(lengths, s) - 1, 0, len(points) - 2))
    seg = points[i + 1] - points[i]
    seg_len = max(float(np.linalg.norm(seg)), 1e-9)
    frac = np.clip((s - lengths[i]) / seg_len, 0.0, 1.0)
    return points[i] + frac * seg, float(np.arctan2(seg[1], seg[0]))


def compute_road_field(grid: TownGrid, roads: list[Road]) -> RoadField:
    n = grid.size
    big = np.float32(1e6)
    field = RoadField(
        edge=np.full((n, n), big, np.float32),
        edge2=np.full((n, n), big, np.float32),
        road=np.full((n, n), -1, np.int32),
        road2=np.full((n, n), -1, np.int32),
        along=np.zeros((n, n), np.float32),
        lateral=np.zeros((n, n), np.float32),
    )
    for index, road in enumerate(roads):
        reach = road.half_width + road.sidewalk_width + 16.0
        dist = np.full((n, n), big, np.float32)
        along = np.zeros((n, n), np.float32)
        lateral = np.zeros((n, n), np.float32)
        points = np.asarray(road.points, float)
        segments = [(points[0], points[0])] if len(points) == 1 else list(zip(points[:-1], points[1:], strict=True))
        cumulative = polyline_length(points)
        for (a, b), s0 in zip(segments, cumulative, strict=False):
            lo, hi = np.minimum(a, b) - reach, np.maximum(a, b) + reach
            window = grid.window(lo[0], hi[0], lo[1], hi[1])
            if window is None:
                continue
            ab = b - a
            seg_len = float(np.linalg.norm(ab))
            direction = ab / seg_len if seg_len > 1e-9 else np.array([1.0, 0.0])
            px, py = window.x - a[0], window.y - a[1]
            t = np.clip(px * direction[0] + py * direction[1], 0.0, seg_len)
            d = np.hypot(px - t * direction[0], py - t * direction[1])
            sub = dist[window.sx, window.sy]
            closer = d < sub
            sub[closer] = d[closer]
            along[window.sx, window.sy][closer] = (s0 + t)[closer]
            lateral[window.sx, window.sy][closer] = (direction[0] * py - direction[1] * px)[closer]
        edge = np.where(dist < big, dist - road.half_width, big)
        nearest = edge < field.edge
        second = ~nearest & (edge < field.edge2)
        field.edge2 = np.where(nearest, field.edge, np.where(second, edge, field.edge2))
        field.road2 = np.where(nearest, field.road, np.where(second, index, field.road2))
        field.edge = np.where(nearest, edge, field.edge)
        field.road = np.where(nearest, index, field.road)
        field.along = np.where(nearest, along, field.along)
        field.lateral = np.where(nearest, lateral, field.lateral)
    return field


def paint_roads(grid: TownGrid, roads: list[Road], field: RoadField) -> None:
    """Asphalt, sidewalks, centre/edge lines and zebra crossings; all of it is claimed against building."""
    has_road = field.road >= 0
    half_width = np.array([r.half_width for r in roads] + [0.0], np.float32)[field.road]
    sidewalk = np.array([r.sidewalk_width for r in roads] + [0.0], np.float32)[field.road]
    sidewalk2 = np.array([r.sidewalk_width for r in roads] + [0.0], np.float32)[field.road2]
    asphalt = has_road & (field.edge < 0)
    walk = has_road & ~asphalt & (field.edge < sidewalk)
    all_cells = grid.world_window()
    grid.paint_ground(all_cells, walk, Material.SIDEWALK, claim=True)
    grid.paint_ground(all_cells, asphalt, Material.ASPHALT, claim=True)

    # Lines stop before junctions: the crossing road's sidewalk band carries a zebra crossing instead.
    clear_of_junction = field.edge2 > sidewalk2 + 2.0
    lateral, along = field.lateral, field.along
    center_kind = np.array([{"dashed": 1, "double_yellow": 2, "none": 0}[r.center_line] for r in roads] + [0])
    kind = center_kind[field.road]
    dashes = (kind == 1) & (np.abs(lateral) < 0.2) & (np.mod(along, 6.0) < 3.0)
    double = (kind == 2) & (np.abs(np.abs(lateral) - 0.3) < 0.15)
    edge_kind = np.array([r.edge_lines for r in roads] + [False])[field.road]
    edges = edge_kind & (np.abs(field.edge + 0.6) < 0.15)
    lines = asphalt & clear_of_junction
    grid.paint_ground(all_cells, lines & (dashes | edges), Material.MARKING)
    grid.paint_ground(all_cells, lines & double, Material.MARKING_YELLOW)
    marked = np.array([r.crossings for r in roads] + [False])
    junction = asphalt & marked[field.road] & marked[field.road2] & (sidewalk2 > 0) & (half_width > 2.5)
    crossing = (field.edge2 > 0.3) & (field.edge2 < sidewalk2 - 0.3) & (field.edge < -0.5)
    zebra = junction & crossing & (np.mod(lateral, 1.2) < 0.6)
    stop_line = junction & (np.abs(field.edge2 - sidewalk2 - 0.8) < 0.2)
    grid.paint_ground(all_cells, zebra | stop_line, Material.MARKING)


def lane_poses(
    roads: list[Road], field: RoadField, grid: TownGrid, rng: np.random.Generator, spacing: float
) -> list[tuple[float, float, float]]:
    """Random car poses ``(x, y, heading)`` in the driving lanes, away from junctions (right-hand traffic)."""
    poses = []
    for index, road in enumerate(roads):
        if len(road.points) < 2 or road.half_width < 2.5:
            continue
        length = float(polyline_length(road.points)[-1])
        for s in rng.uniform(0.0, length, rng.poisson(length / spacing)):
            center, heading = point_on_polyline(road.points, float(s))
            side = rng.choice([-1.0, 1.0])
            offset = side * road.half_width * rng.uniform(0.35, 0.6)
            normal = np.array([-np.sin(heading), np.cos(heading)])
            x, y = center + offset * normal
            ix = int((x - grid.origin) / grid.cell_size)
            iy = int((y - grid.origin) / grid.cell_size)
            if not (0 <= ix < grid.size and 0 <= iy < grid.size):
                continue
            if field.road[ix, iy] != index or field.edge2[ix, iy] < 4.0 or field.edge[ix, iy] > -1.0:
                continue
            poses.append((float(x), float(y), heading if side < 0 else heading + np.pi))
    return poses
