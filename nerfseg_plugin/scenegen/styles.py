"""Grid-plan styles: downtown (tall blocks, plazas, parks) and industrial (warehouses, tanks, truck yards)."""

from __future__ import annotations

import numpy as np

from nerfseg_plugin.scenegen.buildings import add_building, add_tank
from nerfseg_plugin.scenegen.districts import (
    Box,
    downtown_block,
    paint_box,
    paint_ellipse,
    scatter_buildings,
    scatter_trees,
    street_trees,
    traffic,
)
from nerfseg_plugin.scenegen.grid import TownGrid
from nerfseg_plugin.scenegen.materials import Material
from nerfseg_plugin.scenegen.props import add_car, add_parking_lot
from nerfseg_plugin.scenegen.roads import Road, compute_road_field, paint_roads


def road_positions(rng: np.random.Generator, half: float, spacing: tuple[float, float]) -> list[float]:
    """Positions of parallel roads across ``[-half, half]``, randomly spaced within ``spacing``."""
    positions, p = [], -half + rng.uniform(0.2, 0.6) * spacing[0]
    while p < half - 0.2 * spacing[0]:
        positions.append(float(p))
        p += rng.uniform(*spacing)
    return positions


def _grid_network(grid: TownGrid, rng, half, spacing, half_width, sidewalk, main_width=None, edge_lines=False):
    """Straight roads along x and y; the one nearest the centre in each direction may be a wider avenue."""
    edge = grid.half_extent
    xs, ys = road_positions(rng, half, spacing), road_positions(rng, half, spacing)
    roads, margins_x, margins_y = [], [], []
    for axis, positions, margins in ((0, xs, margins_x), (1, ys, margins_y)):
        main = int(np.argmin(np.abs(positions)))
        for i, p in enumerate(positions):
            is_main = main_width is not None and i == main
            hw = main_width if is_main else half_width
            points = np.array([[p, -edge], [p, edge]]) if axis == 0 else np.array([[-edge, p], [edge, p]])
            center = "double_yellow" if is_main else "dashed"
            roads.append(Road(points, hw, sidewalk, center, edge_lines=edge_lines or is_main))
            margins.append(hw + sidewalk)
    return roads, xs, ys, margins_x, margins_y


def _blocks(xs, ys, margins_x, margins_y, half) -> list[Box]:
    """The boxes between consecutive roads (and the core's edge), inside the sidewalks."""
    bx = [(-half, 0.0)] + list(zip(xs, margins_x, strict=True)) + [(half, 0.0)]
    by = [(-half, 0.0)] + list(zip(ys, margins_y, strict=True)) + [(half, 0.0)]
    boxes = []
    for (xa, ma), (xb, mb) in zip(bx[:-1], bx[1:], strict=True):
        for (ya, na), (yb, nb) in zip(by[:-1], by[1:], strict=True):
            box = (xa + ma, xb - mb, ya + na, yb - nb)
            if box[1] - box[0] > 4 and box[3] - box[2] > 4:
                boxes.append(box)
    return boxes


def build_downtown(grid: TownGrid, rng: np.random.Generator, half: float) -> None:
    """Grid blocks of tall flat-roofed buildings, towers on podiums, plazas, a park and surface parking."""
    roads, xs, ys, mx, my = _grid_network(grid, rng, half, (46.0, 60.0), 5.0, 3.5, main_width=7.0)
    field = compute_road_field(grid, roads)
    paint_roads(grid, roads, field)
    for box in _blocks(xs, ys, mx, my, half):
        center = np.hypot((box[0] + box[1]) / 2, (box[2] + box[3]) / 2)
        downtown_block(grid, rng, box, centrality=float(np.exp(-1.5 * (center / half) ** 2)))
    street_trees(grid, rng, roads, field, spacing=11.0, keep=0.55)
    traffic(grid, rng, roads, field, spacing=12.0)


def build_industrial(grid: TownGrid, rng: np.random.Generator, half: float) -> None:
    """Large warehouses with ribbed roofs, tank farms, truck yards, big parking lots and few trees."""
    roads, xs, ys, mx, my = _grid_network(grid, rng, half, (52.0, 72.0), 6.0, 1.8, edge_lines=True)
    field = compute_road_field(grid, roads)
    paint_roads(grid, roads, field)
    for box in _blocks(xs, ys, mx, my, half):
        x0, x1, y0, y1 = box
        w, h = x1 - x0, y1 - y0
        use = rng.choice(["warehouse", "tanks", "parking", "yard"], p=[0.55, 0.12, 0.18, 0.15])
        paint_box(grid, box, Material.GRASS)
        if use == "warehouse" and min(w, h) > 16:
            share = rng.uniform(0.5, 0.75)
            if w >= h:  # the hall along one side, its loading yard along the other
                cut = x0 + share * w
                hall, yard = (x0, cut, y0, y1), (cut, x1, y0, y1)
            else:
                cut = y0 + share * h
                hall, yard = (x0, x1, y0, cut), (x0, x1, cut, y1)
            hx, hy = (hall[1] - hall[0]) / 2 - 2.5, (hall[3] - hall[2]) / 2 - 2.5
            if min(hx, hy) > 4:
                center = ((hall[0] + hall[1]) / 2, (hall[2] + hall[3]) / 2)
                variant = int(rng.choice([0, 1, 3, 3]))
                add_building(grid, rng, center, 0.0, (hx, hy), rng.uniform(7.0, 14.0), facade=3, roof_variant=variant)
            yw, yh = (yard[1] - yard[0]) / 2 - 1.0, (yard[3] - yard[2]) / 2 - 1.0
            if min(yw, yh) > 5:
                along_x = yw >= yh
                add_parking_lot(
                    grid,
                    rng,
                    ((yard[0] + yard[1]) / 2, (yard[2] + yard[3]) / 2),
                    0.0 if along_x else np.pi / 2,
                    (yw, yh) if along_x else (yh, yw),
                    occupancy=0.3,
                    trucks=2.5,
                )
        elif use == "tanks":
            paint_box(grid, box, Material.SOIL)
            for _ in range(6):
                r = rng.uniform(4.0, 8.0)
                if min(w, h) > 2 * r + 4:
                    add_tank(
                        grid,
                        rng,
                        (rng.uniform(x0 + r + 2, x1 - r - 2), rng.uniform(y0 + r + 2, y1 - r - 2)),
                        r,
                        rng.uniform(6, 14),
                    )
        elif use == "parking":
            along_x = w >= h
            half_size = (w / 2 - 1.5, h / 2 - 1.5) if along_x else (h / 2 - 1.5, w / 2 - 1.5)
            add_parking_lot(
                grid,
                rng,
                ((x0 + x1) / 2, (y0 + y1) / 2),
                0.0 if along_x else np.pi / 2,
                half_size,
                rng.uniform(0.5, 0.85),
            )
        else:
            paint_box(grid, box, Material.SOIL)
            if rng.random() < 0.5 and min(w, h) > 20:
                paint_ellipse(
                    grid, ((x0 + x1) / 2, (y0 + y1) / 2), (0.3 * w, 0.3 * h), Material.WATER, wobble=0.1, rng=rng
                )
            scatter_buildings(grid, rng, box, 3, (6.0, 14.0), (4.0, 7.0), 0.0, facades=(3,))
            for _ in range(rng.integers(1, 4) if min(w, h) > 16 else 0):
                add_car(
                    grid,
                    rng,
                    (rng.uniform(x0 + 7, x1 - 7), rng.uniform(y0 + 3, y1 - 3)),
                    rng.uniform(0, np.pi),
                    "truck",
                )
            scatter_trees(grid, rng, box, 2)
    street_trees(grid, rng, roads, field, spacing=16.0, keep=0.15)
    traffic(grid, rng, roads, field, spacing=20.0, trucks=0.3)
