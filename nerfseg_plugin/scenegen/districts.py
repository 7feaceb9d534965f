"""Reusable pieces of town layout: lots, city blocks, parks, street trees, traffic and scattered buildings."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from nerfseg_plugin.scenegen.buildings import add_building, site_is_free
from nerfseg_plugin.scenegen.grid import TownGrid
from nerfseg_plugin.scenegen.materials import Material
from nerfseg_plugin.scenegen.props import add_car, add_parking_lot, add_tree
from nerfseg_plugin.scenegen.roads import Road, RoadField, lane_poses, point_on_polyline, polyline_length

Box = tuple[float, float, float, float]  # xmin, xmax, ymin, ymax


def split_lots(rng: np.random.Generator, box: Box, max_size: float, min_size: float) -> list[Box]:
    """Recursively cut a box across its longer side until every lot is at most ``max_size`` long."""
    x0, x1, y0, y1 = box
    w, h = x1 - x0, y1 - y0
    if max(w, h) <= max_size or max(w, h) < 2 * min_size:
        return [box]
    cut = rng.uniform(0.35, 0.65)
    if w >= h:
        xm = x0 + cut * w
        return split_lots(rng, (x0, xm, y0, y1), max_size, min_size) + split_lots(
            rng, (xm, x1, y0, y1), max_size, min_size
        )
    ym = y0 + cut * h
    return split_lots(rng, (x0, x1, y0, ym), max_size, min_size) + split_lots(rng, (x0, x1, ym, y1), max_size, min_size)


def paint_box(grid: TownGrid, box: Box, material: Material, claim: bool = False) -> None:
    """Paint the ground of an axis-aligned box."""
    window = grid.window(*box)
    if window is not None:
        grid.paint_ground(window, np.ones(window.x.shape, dtype=bool), material, claim=claim)


def paint_ellipse(grid: TownGrid, center, radii, material: Material, claim: bool = True, wobble: float = 0.0, rng=None):
    """Paint an axis-aligned ellipse of ground (a pond, a flower bed); ``wobble`` > 0 makes its outline irregular."""
    cx, cy = center
    window = grid.window(cx - radii[0] * 1.3, cx + radii[0] * 1.3, cy - radii[1] * 1.3, cy + radii[1] * 1.3)
    if window is None:
        return
    dx, dy = (window.x - cx) / radii[0], (window.y - cy) / radii[1]
    theta = np.arctan2(dy, dx)
    edge = 1.0
    if wobble and rng is not None:
        edge = 1.0 + wobble * (np.sin(2 * theta + rng.uniform(0, 6.3)) + 0.5 * np.sin(5 * theta + rng.uniform(0, 6.3)))
    mask = np.hypot(dx, dy) < edge
    grid.paint_ground(window, mask, material, claim=claim)


def scatter_trees(
    grid: TownGrid, rng: np.random.Generator, box: Box, count: int, radius=(2.0, 4.5), height=(6.0, 13.0)
) -> int:
    """Up to ``count`` trees at random spots of ``box`` (trunks on unclaimed ground); returns how many grew."""
    grown = 0
    x0, x1, y0, y1 = box
    for _ in range(count * 3):
        if grown >= count:
            break
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        ix, iy = int((x - grid.origin) / grid.cell_size), int((y - grid.origin) / grid.cell_size)
        if not (0 <= ix < grid.size and 0 <= iy < grid.size) or grid.claimed[ix, iy]:
            continue
        r = rng.uniform(*radius)
        if add_tree(grid, rng, (x, y), r, max(rng.uniform(*height), 2 * r + 1.0)) is not None:
            grown += 1
    return grown


def park(grid: TownGrid, rng: np.random.Generator, box: Box, pond: bool = True) -> None:
    """Lawn with crossing paths, clumps of trees and maybe a pond."""
    x0, x1, y0, y1 = box
    paint_box(grid, box, Material.GRASS)
    cx, cy = (
        rng.uniform(x0 + 0.3 * (x1 - x0), x1 - 0.3 * (x1 - x0)),
        rng.uniform(y0 + 0.3 * (y1 - y0), y1 - 0.3 * (y1 - y0)),
    )
    paint_box(grid, (x0, x1, cy - 1.2, cy + 1.2), Material.PLAZA, claim=True)
    paint_box(grid, (cx - 1.2, cx + 1.2, y0, y1), Material.PLAZA, claim=True)
    if pond and min(x1 - x0, y1 - y0) > 24:
        qx = x0 + 0.5 * (cx - x0) if cx - x0 > x1 - cx else cx + 0.5 * (x1 - cx)
        qy = y0 + 0.5 * (cy - y0) if cy - y0 > y1 - cy else cy + 0.5 * (y1 - cy)
        radii = (0.35 * min(abs(cx - x0), abs(x1 - cx)), 0.35 * min(abs(cy - y0), abs(y1 - cy)))
        paint_ellipse(grid, (qx, qy), radii, Material.WATER, wobble=0.08, rng=rng)
    area = (x1 - x0) * (y1 - y0)
    scatter_trees(grid, rng, box, int(area / 90))


def downtown_block(grid: TownGrid, rng: np.random.Generator, box: Box, centrality: float) -> None:
    """A city block: built up with flat-roofed lots (taller with ``centrality`` in [0, 1]), or left as a park, a
    plaza with rows of trees or a parking lot."""
    x0, x1, y0, y1 = box
    w, h = x1 - x0, y1 - y0
    if min(w, h) < 8:
        paint_box(grid, box, Material.PLAZA)
        return
    use = rng.choice(["buildings", "park", "parking", "plaza"], p=[0.7, 0.1, 0.12, 0.08])
    if use == "park":
        park(grid, rng, box)
        return
    if use == "parking":
        paint_box(grid, box, Material.SIDEWALK)
        along_x = w >= h
        half = (w / 2 - 1.5, h / 2 - 1.5) if along_x else (h / 2 - 1.5, w / 2 - 1.5)
        add_parking_lot(
            grid, rng, ((x0 + x1) / 2, (y0 + y1) / 2), 0.0 if along_x else np.pi / 2, half, rng.uniform(0.55, 0.9)
        )
        return
    paint_box(grid, box, Material.PLAZA if use == "plaza" or rng.random() < 0.6 else Material.GRASS)
    if use == "plaza":
        for gx in np.arange(x0 + 5, x1 - 3, 9.0):
            for gy in np.arange(y0 + 5, y1 - 3, 9.0):
                add_tree(
                    grid,
                    rng,
                    (gx + rng.normal(0, 0.5), gy + rng.normal(0, 0.5)),
                    rng.uniform(2, 3.2),
                    rng.uniform(6, 9),
                )
        return
    for lot in split_lots(rng, box, max_size=24.0, min_size=9.0):
        lx0, lx1, ly0, ly1 = lot
        setback = rng.uniform(0.6, 2.2)
        center = ((lx0 + lx1) / 2, (ly0 + ly1) / 2)
        half = ((lx1 - lx0) / 2 - setback, (ly1 - ly0) / 2 - setback)
        if min(half) < 3.0:
            continue
        height = rng.uniform(9.0, 20.0) + 30.0 * centrality * rng.random() ** 1.5
        facade = rng.choice([0, 1, 4], p=[0.5, 0.25, 0.25]) if height > 16 else rng.choice([0, 4])
        if height < 15 and rng.random() < 0.25:
            add_building(grid, rng, center, 0.0, half, rng.uniform(7, 12), rng.choice(["gable", "hip"]), facade=4)
        elif min(half) > 8 and rng.random() < 0.4:  # tower on a podium
            add_building(grid, rng, center, 0.0, half, rng.uniform(5.0, 8.0), facade=0, roof_units=False)
            tower = (half[0] * rng.uniform(0.45, 0.7), half[1] * rng.uniform(0.45, 0.7))
            shift = (rng.uniform(-1, 1) * (half[0] - tower[0]), rng.uniform(-1, 1) * (half[1] - tower[1]))
            add_building(
                grid,
                rng,
                (center[0] + shift[0], center[1] + shift[1]),
                0.0,
                tower,
                height + 8,
                facade=1,
                check_free=False,
            )
        else:
            add_building(grid, rng, center, 0.0, half, height, facade=facade)
    scatter_trees(grid, rng, box, 2, radius=(1.8, 3.0), height=(6.0, 9.0))


def street_trees(
    grid: TownGrid, rng: np.random.Generator, roads: list[Road], field: RoadField, spacing: float, keep: float
) -> None:
    """Trees on the sidewalks, their canopies overhanging the road."""
    for index, road in enumerate(roads):
        if road.sidewalk_width < 2.0 or len(road.points) < 2:
            continue
        length = float(polyline_length(road.points)[-1])
        for s in np.arange(rng.uniform(0, spacing), length, spacing):
            if rng.random() > keep:
                continue
            point, heading = point_on_polyline(road.points, float(s))
            normal = np.array([-np.sin(heading), np.cos(heading)])
            for side in (-1.0, 1.0):
                x, y = point + side * (road.half_width + 0.5 * road.sidewalk_width) * normal
                ix, iy = int((x - grid.origin) / grid.cell_size), int((y - grid.origin) / grid.cell_size)
                if not (0 <= ix < grid.size and 0 <= iy < grid.size):
                    continue
                if field.road[ix, iy] != index or field.edge2[ix, iy] < 3.0 or grid.ground[ix, iy] != Material.SIDEWALK:
                    continue
                add_tree(grid, rng, (x, y), rng.uniform(2.2, 3.6), rng.uniform(7.5, 11.0))


def traffic(
    grid: TownGrid, rng: np.random.Generator, roads: list[Road], field: RoadField, spacing: float, trucks: float = 0.05
):
    """Cars (and some vans and trucks) driving in the lanes."""
    for x, y, heading in lane_poses(roads, field, grid, rng, spacing):
        kind = "truck" if rng.random() < trucks else ("van" if rng.random() < 0.1 else "car")
        add_car(grid, rng, (x, y), heading + rng.normal(0, 0.02), kind)


def scatter_buildings(
    grid: TownGrid,
    rng: np.random.Generator,
    box: Box,
    count: int,
    size: tuple[float, float],
    height: tuple[float, float],
    pitched: float,
    facades: tuple[int, ...] = (0, 4),
    gap: float = 2.0,
) -> int:
    """Up to ``count`` axis-aligned buildings on the free land of ``box``, each at least ``gap`` from anything
    claimed; ``pitched`` is the share with gable or hip roofs. Returns how many were built.

    Sites are drawn among cells whose clearance (chessboard distance to claimed land) fits the smallest size, so
    narrow blocks fill up as well as open ones.
    """
    # The clearance is measured on a margin around the box too, so that sites near its edge see what lies beyond.
    margin = 0.5 * size[1] + gap + 1.0
    window = grid.window(box[0] - margin, box[1] + margin, box[2] - margin, box[3] + margin)
    if window is None:
        return 0
    in_box = (window.x >= box[0]) & (window.x <= box[1]) & (window.y >= box[2]) & (window.y <= box[3])
    built = 0
    clearance = None
    for _ in range(4 * count):
        if built >= count:
            break
        if clearance is None:
            # Chessboard distance: an axis-aligned square of half side h fits where it is at least h.
            free = ~grid.claimed[window.sx, window.sy]
            clearance = ndimage.distance_transform_cdt(free, metric="chessboard") * grid.cell_size - grid.cell_size
            clearance[~in_box] = 0.0
        sites = np.flatnonzero(clearance.reshape(-1) >= 0.5 * size[0] + gap)
        if sites.size == 0:
            break
        site = rng.choice(sites)
        center = (float(window.x.reshape(-1)[site]), float(window.y.reshape(-1)[site]))
        largest = min(0.5 * size[1], clearance.reshape(-1)[site] - gap)
        half = (rng.uniform(0.5 * size[0], largest), rng.uniform(0.5 * size[0], largest))
        roof = rng.choice(["gable", "hip"]) if rng.random() < pitched else "flat"
        storeys = rng.uniform(*height) * (0.5 if roof != "flat" else 1.0)
        if site_is_free(grid, center, 0.0, half, gap=gap):
            add_building(grid, rng, center, 0.0, half, storeys, roof, facade=int(rng.choice(facades)))
            built += 1
            # Rule out sites near the new building until the next clearance refresh.
            reach = max(half) + 0.5 * size[0] + gap
            clearance[np.hypot(window.x - center[0], window.y - center[1]) < reach] = 0.0
            if built % 4 == 0:
                clearance = None
    return built
