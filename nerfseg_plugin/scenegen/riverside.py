"""The riverside style: a river with green banks, promenades and a bridge, between quarters of mixed buildings."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from nerfseg_plugin.scenegen.buildings import site_is_free
from nerfseg_plugin.scenegen.districts import scatter_buildings, scatter_trees, split_lots, street_trees, traffic
from nerfseg_plugin.scenegen.grid import TownGrid
from nerfseg_plugin.scenegen.materials import Material
from nerfseg_plugin.scenegen.props import add_parking_lot, add_tree
from nerfseg_plugin.scenegen.roads import Road, compute_road_field, paint_roads, wavy_polyline
from nerfseg_plugin.scenegen.styles import road_positions


def _offset_polyline(points: np.ndarray, offset: float) -> np.ndarray:
    tangent = np.gradient(points, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    return points + offset * np.stack([-tangent[:, 1], tangent[:, 0]], -1)


def _bridge(grid: TownGrid, field, road_index: int, road: Road, water: np.ndarray, deck: float = 2.4) -> None:
    """Lift the road where it crosses water onto a deck with parapets, reached by short ramps."""
    band = (field.road == road_index) & (field.edge < road.sidewalk_width)
    distance = ndimage.distance_transform_edt(~water) * grid.cell_size
    ramp = 12.0
    height = deck * np.clip(1.0 - distance / ramp, 0.0, 1.0)
    gx, gy = np.gradient(height, grid.cell_size)
    normal = np.stack([-gx, -gy], -1) / np.sqrt(1.0 + gx**2 + gy**2)[..., None]
    span = band & (height > 0.05)
    parapet = span & (field.edge > road.sidewalk_width - 0.45)
    top = np.where(parapet, height + 1.0, height)
    top_material = np.where(parapet, Material.CONCRETE, grid.ground).astype(np.uint8)
    floor = np.where(water, deck - 0.9, 0.0)
    instance = grid.instances.add(color=(0.6, 0.6, 0.58))
    grid.ground[span & water] = Material.WATER
    grid.add_column(grid.world_window(), span, top, floor, top_material, Material.CONCRETE, instance, normal, None)


def build_riverside(grid: TownGrid, rng: np.random.Generator, half: float) -> None:
    """A river with grassy banks, promenades and a bridge, between quarters of mixed buildings."""
    edge = grid.half_extent
    y0 = rng.uniform(-0.15, 0.15) * half
    river_pts = wavy_polyline(
        np.array([-edge - 5, y0 + rng.uniform(-6, 6)]), np.array([edge + 5, y0 + rng.uniform(-6, 6)]), 10.0, rng
    )
    river_hw = rng.uniform(8.0, 10.0)
    river_field = compute_road_field(grid, [Road(river_pts, river_hw, 0.0)])
    water = river_field.edge < 0
    grid.paint_ground(grid.world_window(), water, Material.WATER, claim=True)
    bank = rng.uniform(4.0, 6.0)
    promenade = (river_field.edge > bank) & (river_field.edge < bank + 3.0)
    grid.paint_ground(grid.world_window(), promenade, Material.PLAZA, claim=True)
    grid.claimed |= river_field.edge < bank  # keep the banks green

    roads: list[Road] = []
    offset = river_hw + bank + 3.0 + 1.5 + 4.0
    for side in (-1.0, 1.0):
        roads.append(Road(_offset_polyline(river_pts, side * offset), 4.0, 3.0, "dashed"))
    xs = road_positions(rng, half, (40.0, 55.0))
    bridge_at, bridge_index = int(np.argmin(np.abs(xs))), -1
    for i, x in enumerate(xs):
        if i == bridge_at:
            bridge_index = len(roads)
            roads.append(Road(np.array([[x, -edge], [x, edge]]), 4.5, 3.0, "dashed", edge_lines=True))
            continue
        for side in (-1.0, 1.0):
            start_y = np.interp(x, roads[0 if side < 0 else 1].points[:, 0], roads[0 if side < 0 else 1].points[:, 1])
            roads.append(Road(np.array([[x, start_y], [x, side * edge]]), 4.0, 3.0, "dashed"))
    for side in (-1.0, 1.0):  # ring roads just outside the core
        y = side * (half + rng.uniform(6.0, 12.0))
        roads.append(Road(np.array([[-edge, y], [edge, y]]), 4.0, 3.0))
    field = compute_road_field(grid, roads)
    paint_roads(grid, roads, field)
    _bridge(grid, field, bridge_index, roads[bridge_index], water)

    for lot in split_lots(rng, (-half, half, -half, half), 40.0, 20.0):
        center = ((lot[0] + lot[1]) / 2, (lot[2] + lot[3]) / 2)
        half_size = ((lot[1] - lot[0]) / 2 - 2.0, (lot[3] - lot[2]) / 2 - 2.0)
        if rng.random() < 0.15 and site_is_free(grid, center, 0.0, half_size):
            add_parking_lot(grid, rng, center, 0.0, half_size, occupancy=0.7)
    core = (-half, half, -half, half)
    scatter_buildings(grid, rng, core, 16, (14.0, 26.0), (12.0, 26.0), pitched=0.2, facades=(0, 1, 4), gap=1.5)
    scatter_buildings(grid, rng, core, 60, (8.0, 14.0), (7.0, 14.0), pitched=0.6, facades=(0, 2, 4), gap=1.5)
    banks = (river_field.edge > 0) & (river_field.edge < bank)
    bx, by = np.nonzero(banks)
    for k in rng.choice(len(bx), size=min(len(bx), 40), replace=False):
        x, y = grid.centers()[bx[k]], grid.centers()[by[k]]
        if max(abs(x), abs(y)) < half + 20:
            add_tree(grid, rng, (x, y), rng.uniform(2.5, 4.5), rng.uniform(7.0, 13.0))
    scatter_trees(grid, rng, (-half, half, -half, half), 25)
    street_trees(grid, rng, roads, field, spacing=12.0, keep=0.4)
    traffic(grid, rng, roads, field, spacing=18.0)
