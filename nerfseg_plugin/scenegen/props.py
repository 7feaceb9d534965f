"""Small objects and ground features: trees, hedges, cars (and vans and trucks), parking lots and pools.

Colour palettes deliberately overlap across classes (autumn trees vs brown roofs, dark cars vs shadowed asphalt),
so that a segmenter cannot read the class off the colour.
"""

from __future__ import annotations

import numpy as np

from nerfseg_plugin.scenegen.grid import TownGrid, rect_frame, rect_side_normal, rect_window
from nerfseg_plugin.scenegen.materials import Material

CAR_COLORS = np.array(
    [
        [0.85, 0.85, 0.85],
        [0.60, 0.61, 0.63],
        [0.08, 0.08, 0.09],
        [0.30, 0.31, 0.33],
        [0.60, 0.08, 0.07],
        [0.12, 0.22, 0.50],
        [0.12, 0.28, 0.16],
        [0.70, 0.64, 0.50],
        [0.85, 0.70, 0.10],
    ]
)
TREE_COLORS = np.array(
    [
        [0.20, 0.35, 0.12],
        [0.26, 0.40, 0.15],
        [0.15, 0.28, 0.12],
        [0.31, 0.38, 0.16],
        [0.22, 0.32, 0.20],
        [0.55, 0.36, 0.13],  # autumn foliage, close to tiled roofs
        [0.46, 0.44, 0.16],
    ]
)
TREE_AUTUMN_SHARE = 2  # the last entries of TREE_COLORS are drawn less often


def jitter_color(rng: np.random.Generator, palette: np.ndarray, spread: float = 0.08) -> np.ndarray:
    """A palette colour with per-instance brightness and channel variation."""
    base = palette[rng.integers(len(palette))]
    return np.clip(base * rng.uniform(1 - spread, 1 + spread) + rng.normal(0, spread * 0.25, 3), 0.02, 0.95)


def tree_color(rng: np.random.Generator) -> np.ndarray:
    greens = len(TREE_COLORS) - TREE_AUTUMN_SHARE
    palette = TREE_COLORS if rng.random() < 0.12 else TREE_COLORS[:greens]
    return jitter_color(rng, palette, 0.12)


def canopy_half_depth(radius: np.ndarray | float, height: np.ndarray | float) -> np.ndarray | float:
    """Half the vertical extent of a tree's canopy ellipsoid, whose top is at ``height``."""
    return 0.5 * np.minimum(np.asarray(height) - 2.5, 1.6 * np.asarray(radius))


def canopy_ellipsoids(instance: np.ndarray, table: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Centres and radii (``[M, 3]`` each) of the canopy ellipsoids of tree instances."""
    center, radius, height = table["center"][instance], table["half_size"][instance, 0], table["height"][instance]
    half_depth = canopy_half_depth(radius, height)
    centers = np.stack([center[:, 0], center[:, 1], height - half_depth], -1)
    return centers, np.stack([radius, radius, half_depth], -1)


def canopy_normals(points: np.ndarray, instance: np.ndarray, table: dict[str, np.ndarray]) -> np.ndarray:
    """Smooth normals of the canopy ellipsoids at hit points, hiding the steps of the heightfield."""
    centers, radii = canopy_ellipsoids(instance, table)
    gradient = (points - centers) / radii**2
    return (gradient / np.maximum(np.linalg.norm(gradient, axis=-1, keepdims=True), 1e-6)).astype(np.float32)


def add_tree(
    grid: TownGrid, rng: np.random.Generator, center: tuple[float, float], radius: float, height: float
) -> int | None:
    """A tree: a lumpy ellipsoidal canopy on a trunk; it may overhang the ground but not other objects."""
    cx, cy = center
    window = grid.window(cx - 1.3 * radius, cx + 1.3 * radius, cy - 1.3 * radius, cy + 1.3 * radius)
    if window is None:
        return None
    dx, dy = window.x - cx, window.y - cy
    theta = np.arctan2(dy, dx)
    wobble = 1 + 0.12 * np.sin(3 * theta + rng.uniform(0, 6.3)) + 0.08 * np.sin(5 * theta + rng.uniform(0, 6.3))
    q = np.hypot(dx, dy) / (radius * wobble)
    mask = q < 1.0
    existing = grid.instance[window.sx, window.sy][mask]
    if np.any((existing > 0) & (grid.top_material[window.sx, window.sy][mask] != Material.TREE)):
        return None
    ix, iy = int((cx - grid.origin) / grid.cell_size), int((cy - grid.origin) / grid.cell_size)
    if not (0 <= ix < grid.size and 0 <= iy < grid.size) or grid.ground[ix, iy] in (Material.WATER, Material.ASPHALT):
        return None
    instance = grid.instances.add(color=tree_color(rng), center=center, half_size=(radius, radius), height=height)
    half_depth = canopy_half_depth(radius, height)
    middle = height - half_depth
    dome = np.sqrt(np.clip(1.0 - q**2, 0.0, 1.0))
    top = middle + half_depth * dome
    floor = np.where(np.hypot(dx, dy) < 0.35, 0.0, middle - 0.55 * half_depth * dome)  # trunk reaches the ground
    radial = np.stack([dx, dy], -1) / np.maximum(np.hypot(dx, dy), 1e-6)[..., None]
    slope = half_depth * q / (radius * np.maximum(dome, 0.25))
    top_normal = radial * (slope / np.sqrt(1 + slope**2))[..., None]
    grid.add_column(window, mask, top, floor, Material.TREE, Material.TREE, instance, top_normal, radial)
    return instance


def add_hedge(grid: TownGrid, rng: np.random.Generator, start, end, width: float = 1.0) -> None:
    """A trimmed hedge along a straight line."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    center, delta = 0.5 * (start + end), end - start
    angle, half_l = float(np.arctan2(delta[1], delta[0])), 0.5 * float(np.linalg.norm(delta))
    window = rect_window(grid, center[0], center[1], angle, half_l, width / 2, pad=0.5)
    if window is None:
        return
    lx, ly = rect_frame(window, center[0], center[1], angle)
    mask = (np.abs(lx) <= half_l) & (np.abs(ly) <= width / 2)
    mask &= (grid.instance[window.sx, window.sy] == 0) & ~grid.claimed[window.sx, window.sy]
    instance = grid.instances.add(color=tree_color(rng) * 0.8, center=center, angle=angle, half_size=(half_l, width))
    normal = rect_side_normal(lx, ly, half_l, width / 2, angle)
    top = rng.uniform(1.0, 1.8)
    grid.add_column(window, mask, top, 0.0, Material.HEDGE, Material.HEDGE, instance, None, normal)


CAR_KINDS = {"car": (2.25, 0.9, 1.45), "van": (2.6, 1.0, 2.0), "truck": (6.5, 1.25, 3.6)}


def add_car(grid: TownGrid, rng: np.random.Generator, center, heading: float, kind: str = "car") -> int | None:
    """A car, van or truck (all class ``car``) as a stepped box; None where the spot is taken."""
    half_l, half_w, height = CAR_KINDS[kind]
    cx, cy = center
    window = rect_window(grid, cx, cy, heading, half_l, half_w, pad=0.3)
    if window is None:
        return None
    lx, ly = rect_frame(window, cx, cy, heading)
    mask = (np.abs(lx) <= half_l) & (np.abs(ly) <= half_w)
    if np.any(grid.instance[window.sx, window.sy][mask] > 0):
        return None
    color = jitter_color(rng, CAR_COLORS, 0.05)
    instance = grid.instances.add(
        color=color,
        color2=jitter_color(rng, CAR_COLORS[:4]) if kind == "truck" else color,
        center=center,
        angle=heading,
        half_size=(half_l, half_w),
        height=height,
        variant=list(CAR_KINDS).index(kind),
    )
    if kind == "truck":  # cab in front of a taller box trailer
        top = np.where(lx > half_l - 1.8, height - 0.8, height)
    else:  # bonnet and boot lower than the cabin
        cabin = (lx > -0.5 * half_l) & (lx < 0.35 * half_l)
        top = np.where(cabin, height, 0.62 * height)
    normal = rect_side_normal(lx, ly, half_l, half_w, heading)
    grid.add_column(window, mask, top, 0.0, Material.CAR, Material.CAR, instance, None, normal)
    return instance


def add_parking_lot(
    grid: TownGrid,
    rng: np.random.Generator,
    center: tuple[float, float],
    angle: float,
    half_size: tuple[float, float],
    occupancy: float,
    trucks: float = 0.0,
) -> None:
    """Asphalt with rows of marked stalls along the lot's long axis, filled with parked cars."""
    cx, cy = center
    half_l, half_w = half_size
    window = rect_window(grid, cx, cy, angle, half_l, half_w)
    if window is None:
        return
    lx, ly = rect_frame(window, cx, cy, angle)
    lot = (np.abs(lx) <= half_l) & (np.abs(ly) <= half_w)
    grid.paint_ground(window, lot, Material.PARKING, claim=True)
    stall_w, stall_d, aisle = 2.6, 5.2, 6.5
    module = 2 * stall_d + aisle  # two facing stall rows share one aisle
    rows_y = []
    for k in range(int((2 * half_w - aisle) // module) + 1):
        base = -half_w + k * module
        rows_y += [(base, +1.0), (base + stall_d + aisle, -1.0)]
    rows_y = [(y0, facing) for y0, facing in rows_y if y0 + stall_d <= half_w]
    stalls_x = np.arange(-half_l + 1.0, half_l - stall_w, stall_w)
    for y0, facing in rows_y:
        in_row = lot & (ly >= y0) & (ly <= y0 + stall_d) & (lx >= stalls_x[0]) & (lx <= stalls_x[-1] + stall_w)
        line = in_row & (np.abs(np.mod(lx - stalls_x[0] + 0.12, stall_w) - 0.12) < 0.13)
        grid.paint_ground(window, line, Material.MARKING)
        for sx in stalls_x:
            if rng.random() > occupancy:
                continue
            px, py = sx + stall_w / 2 + rng.normal(0, 0.1), y0 + stall_d / 2 + rng.normal(0, 0.15)
            wx = cx + px * np.cos(angle) - py * np.sin(angle)
            wy = cy + px * np.sin(angle) + py * np.cos(angle)
            heading = angle + np.pi / 2 * facing + rng.choice([0.0, np.pi]) * (rng.random() < 0.3)
            add_car(grid, rng, (wx, wy), heading + rng.normal(0, 0.03), "van" if rng.random() < 0.1 else "car")
    if trucks > 0:
        for _ in range(rng.poisson(trucks)):
            px, py = rng.uniform(-half_l + 7, half_l - 7), rng.uniform(-half_w + 2, half_w - 2)
            wx = cx + px * np.cos(angle) - py * np.sin(angle)
            wy = cy + px * np.sin(angle) + py * np.cos(angle)
            add_car(grid, rng, (wx, wy), angle + rng.choice([0.0, np.pi]), "truck")


def add_pool(grid: TownGrid, center: tuple[float, float], angle: float, half_size: tuple[float, float]) -> None:
    """A garden pool: water inside a paved deck."""
    window = rect_window(grid, center[0], center[1], angle, half_size[0] + 1.2, half_size[1] + 1.2)
    if window is None:
        return
    lx, ly = rect_frame(window, center[0], center[1], angle)
    deck = (np.abs(lx) <= half_size[0] + 1.0) & (np.abs(ly) <= half_size[1] + 1.0)
    water = (np.abs(lx) <= half_size[0]) & (np.abs(ly) <= half_size[1])
    grid.paint_ground(window, deck, Material.PLAZA, claim=True)
    grid.paint_ground(window, water, Material.WATER)
