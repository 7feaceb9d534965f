"""The suburb style: curvy streets and cul-de-sacs lined by detached houses with gardens, and many trees."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from nerfseg_plugin.scenegen.buildings import add_building, site_is_free
from nerfseg_plugin.scenegen.districts import paint_ellipse, scatter_trees, street_trees, traffic
from nerfseg_plugin.scenegen.grid import TownGrid, rect_frame, rect_window
from nerfseg_plugin.scenegen.materials import Material
from nerfseg_plugin.scenegen.props import add_car, add_hedge, add_pool, add_tree
from nerfseg_plugin.scenegen.roads import (
    Road,
    compute_road_field,
    paint_roads,
    point_on_polyline,
    polyline_length,
    wavy_polyline,
)


@dataclass
class _Plot:
    """A house placed along a street, with what its garden needs to know."""

    center: np.ndarray
    heading: float
    street_point: np.ndarray
    side: float
    half_size: tuple[float, float]
    setback: float
    front: float


def _houses_along(grid: TownGrid, rng: np.random.Generator, road: Road, half: float) -> list[_Plot]:
    """Detached houses facing the road at regular spacing on both sides."""
    plots = []
    length = float(polyline_length(road.points)[-1])
    front = road.half_width + road.sidewalk_width
    for s in np.arange(rng.uniform(3, 8), length, rng.uniform(14.0, 16.0)):
        point, heading = point_on_polyline(road.points, float(s))
        normal = np.array([-np.sin(heading), np.cos(heading)])
        for side in (-1.0, 1.0):
            setback, depth, width = rng.uniform(3.0, 6.0), rng.uniform(3.6, 5.0), rng.uniform(4.5, 6.0)
            center = point + side * normal * (front + setback + depth)
            if np.max(np.abs(center)) > half or not site_is_free(grid, center, heading, (width, depth), gap=1.8):
                continue
            roof = rng.choice(["gable", "hip", "flat"], p=[0.45, 0.42, 0.13])
            if add_building(grid, rng, center, heading, (width, depth), rng.uniform(3.0, 6.2), roof, facade=2):
                plots.append(_Plot(center, heading, point, side, (width, depth), setback, front))
    return plots


def _garden(grid: TownGrid, rng: np.random.Generator, plot: _Plot) -> None:
    """A driveway (often with a car), garden trees, and sometimes a hedge, a pool or a vegetable bed."""
    along = np.array([np.cos(plot.heading), np.sin(plot.heading)])
    normal = plot.side * np.array([-np.sin(plot.heading), np.cos(plot.heading)])
    width, depth = plot.half_size
    drive_side = rng.choice([-1.0, 1.0])
    drive_length = 0.5 * (plot.setback + 2 * depth)
    drive = plot.street_point + along * drive_side * (width + 2.0) + normal * (plot.front + drive_length)
    window = rect_window(grid, drive[0], drive[1], plot.heading, 1.4, drive_length)
    if window is not None:
        lx, ly = rect_frame(window, drive[0], drive[1], plot.heading)
        mask = (np.abs(lx) <= 1.4) & (np.abs(ly) <= drive_length)
        if grid.is_free(window, mask):
            grid.paint_ground(window, mask, Material.PARKING, claim=True)
            if rng.random() < 0.55:
                add_car(grid, rng, drive + normal * rng.uniform(-1, 1), plot.heading + np.pi / 2, "car")
    back = plot.center + normal * (depth + rng.uniform(4.0, 7.0))
    for _ in range(rng.integers(1, 4)):
        spot = back + along * rng.uniform(-7, 7) + normal * rng.uniform(-1.5, 2.5)
        add_tree(grid, rng, tuple(spot), rng.uniform(2.0, 3.8), rng.uniform(6.0, 11.0))
    if rng.random() < 0.35:
        line = plot.center + normal * (depth + 10.0)
        add_hedge(grid, rng, line - along * 7.0, line + along * 7.0, rng.uniform(0.8, 1.3))
    if rng.random() < 0.15:
        add_pool(grid, tuple(plot.center + normal * (depth + 4.0) - along * drive_side * 3), plot.heading, (2.5, 1.5))
    elif rng.random() < 0.3:
        bed = plot.center + normal * (depth + 3.0) + along * drive_side * 4
        paint_ellipse(grid, tuple(bed), (2.5, 1.4), Material.SOIL, claim=False)


def build_suburb(grid: TownGrid, rng: np.random.Generator, half: float) -> None:
    """Curvy streets and cul-de-sacs lined by small houses with pitched roofs, gardens and many trees."""
    edge = grid.half_extent
    roads = []
    for y in np.sort(rng.uniform(-0.1, 0.1, 3) + np.array([-0.6, 0.0, 0.6])) * half:
        start, end = np.array([-edge, y + rng.uniform(-6, 6)]), np.array([edge, y + rng.uniform(-6, 6)])
        roads.append(Road(wavy_polyline(start, end, 10.0, rng), 3.8, 2.0, "dashed", crossings=False))
    through = [roads[0], roads[2]]
    for x in (rng.uniform(-0.6, -0.2) * half, rng.uniform(0.2, 0.6) * half):
        start = point_on_polyline(through[0].points, x + edge)[0]
        end = point_on_polyline(through[1].points, x + edge + rng.uniform(-10, 10))[0]
        roads.append(Road(wavy_polyline(start, end, 8.0, rng), 3.5, 2.0, "dashed", crossings=False))
    for _ in range(12):  # cul-de-sacs: side streets ending in a turning circle, clear of the other streets
        if sum(len(r.points) == 1 for r in roads) == 3:
            break
        parent = roads[rng.integers(3)]
        start, heading = point_on_polyline(parent.points, rng.uniform(0.2, 0.8) * polyline_length(parent.points)[-1])
        side = heading + rng.choice([-1.0, 1.0]) * np.pi / 2 + rng.normal(0.0, 0.2)
        end = start + rng.uniform(24.0, 32.0) * np.array([np.cos(side), np.sin(side)])
        if min(np.min(np.linalg.norm(r.points - end, axis=1)) for r in roads) < 22.0 or np.max(np.abs(end)) > half:
            continue
        roads.append(Road(wavy_polyline(start, end, 5.0, rng), 3.3, 2.0, "none", crossings=False))
        roads.append(Road(end[None, :], 7.5, 2.0, "none", crossings=False))  # turning circle
    field = compute_road_field(grid, roads)
    paint_roads(grid, roads, field)
    # All houses first, then the gardens, so that one garden's trees never block the next house.
    plots = [plot for road in roads if len(road.points) > 1 for plot in _houses_along(grid, rng, road, half)]
    for plot in plots:
        _garden(grid, rng, plot)
    # A park with a pond where the houses left the most room.
    room = ndimage.distance_transform_edt(~grid.claimed) * grid.cell_size
    core = np.abs(grid.centers()) < half - 12
    room[~core[:, None] | ~core[None, :]] = 0
    ix, iy = np.unravel_index(np.argmax(room), room.shape)
    radius = float(min(room[ix, iy], 22.0))
    if radius > 8:
        cx, cy = grid.centers()[ix], grid.centers()[iy]
        paint_ellipse(grid, (cx, cy), (0.6 * radius, 0.45 * radius), Material.WATER, wobble=0.1, rng=rng)
    scatter_trees(grid, rng, (-half, half, -half, half), 70)
    street_trees(grid, rng, roads, field, spacing=13.0, keep=0.35)
    traffic(grid, rng, roads, field, spacing=40.0, trucks=0.0)
