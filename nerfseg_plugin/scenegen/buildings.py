"""Buildings: boxes with flat roofs (parapets, rooftop units) or gable and hip roofs with eaves, and tanks.

Roof and facade palettes deliberately overlap other classes (grey membranes vs asphalt, green roofs vs trees,
brown tiles vs soil, dark blue roofs vs water), so that a segmenter cannot read the class off the colour.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from nerfseg_plugin.scenegen.grid import TownGrid, rect_frame, rect_side_normal, rect_window, to_world_xy
from nerfseg_plugin.scenegen.materials import Material
from nerfseg_plugin.scenegen.props import jitter_color

FACADE_COLORS = np.array(
    [
        [0.76, 0.70, 0.58],
        [0.85, 0.82, 0.72],
        [0.70, 0.70, 0.68],
        [0.52, 0.52, 0.50],
        [0.58, 0.32, 0.24],
        [0.46, 0.33, 0.26],
        [0.88, 0.88, 0.86],
        [0.78, 0.62, 0.40],
        [0.62, 0.68, 0.74],
        [0.34, 0.34, 0.36],
        [0.80, 0.66, 0.60],
    ]
)
GLASS_COLORS = np.array([[0.14, 0.19, 0.27], [0.18, 0.28, 0.30], [0.17, 0.17, 0.19], [0.30, 0.26, 0.20]])
FLAT_ROOF_COLORS = np.array(
    [
        [0.45, 0.45, 0.43],  # gravel grey
        [0.24, 0.24, 0.25],  # dark membrane, close to asphalt
        [0.36, 0.36, 0.35],  # asphalt-like
        [0.82, 0.82, 0.80],  # white membrane
        [0.62, 0.62, 0.60],
        [0.32, 0.44, 0.22],  # green roof, close to vegetation
        [0.46, 0.37, 0.28],  # brown, close to soil
        [0.50, 0.31, 0.26],
        [0.44, 0.50, 0.56],  # blue-grey metal
        [0.20, 0.30, 0.38],  # dark blue, close to water
    ]
)
TILED_ROOF_COLORS = np.array(
    [
        [0.62, 0.31, 0.20],
        [0.47, 0.23, 0.16],
        [0.42, 0.31, 0.22],  # brown, close to soil
        [0.21, 0.21, 0.23],  # anthracite, close to shadowed asphalt
        [0.36, 0.38, 0.41],
        [0.27, 0.42, 0.32],  # copper green, close to vegetation
        [0.42, 0.16, 0.12],
    ]
)
RoofKind = Literal["flat", "gable", "hip"]


def site_is_free(grid: TownGrid, center, angle: float, half_size, gap: float = 0.0) -> bool:
    """Whether a rotated rectangle grown by ``gap`` lies on the grid and touches no claimed cell."""
    half_l, half_w = half_size[0] + gap, half_size[1] + gap
    window = rect_window(grid, center[0], center[1], angle, half_l, half_w)
    if window is None:
        return False
    lx, ly = rect_frame(window, center[0], center[1], angle)
    inside = (np.abs(lx) <= half_l) & (np.abs(ly) <= half_w)
    return bool(inside.sum() > 0.9 * (4 * half_l * half_w) / grid.cell_size**2) and grid.is_free(window, inside)


def add_building(
    grid: TownGrid,
    rng: np.random.Generator,
    center: tuple[float, float],
    angle: float,
    half_size: tuple[float, float],
    height: float,
    roof: RoofKind = "flat",
    facade: int = 0,
    roof_units: bool = True,
    check_free: bool = True,
    roof_variant: int | None = None,
) -> int | None:
    """A box building with a flat (parapet, rooftop units) or pitched roof; None when the site is taken.

    ``facade`` selects the wall texture: 0 punched windows, 1 glass curtain wall, 2 house, 3 industrial cladding,
    4 brick. ``roof_variant`` picks a flat roof's texture (0 membrane, 1 gravel, 2 green, 3 ribbed metal with
    skylights); random when None.
    """
    cx, cy = center
    half_l, half_w = max(half_size), min(half_size)
    if half_size[1] > half_size[0]:
        angle += np.pi / 2  # the frame's first axis runs along the long side, so ridges follow it
    overhang = 0.45 if roof != "flat" else 0.0
    window = rect_window(grid, cx, cy, angle, half_l, half_w, pad=overhang + 0.5)
    if window is None:
        return None
    lx, ly = rect_frame(window, cx, cy, angle)
    walls = (np.abs(lx) <= half_l) & (np.abs(ly) <= half_w)
    if not np.any(walls) or (check_free and not grid.is_free(window, walls)):
        return None
    floor_height = rng.uniform(2.7, 3.0) if facade == 2 else rng.uniform(3.0, 4.2)
    instance = grid.instances.add(
        color=jitter_color(rng, FACADE_COLORS),
        color2=jitter_color(rng, GLASS_COLORS),
        center=(cx, cy),
        angle=angle,
        half_size=(half_l, half_w),
        height=height,
        floor_height=floor_height,
        window_period=rng.uniform(1.8, 3.2),
        variant=facade,
        roof_color=jitter_color(rng, FLAT_ROOF_COLORS if roof == "flat" else TILED_ROOF_COLORS),
        roof_variant=(rng.integers(4) if roof_variant is None else roof_variant) if roof == "flat" else 0,
    )
    side_normal = rect_side_normal(lx, ly, half_l, half_w, angle)
    if roof == "flat":
        edge_distance = np.minimum(half_l - np.abs(lx), half_w - np.abs(ly))
        top = np.where(edge_distance < 0.45, height + 0.7, height)  # parapet
        grid.add_column(window, walls, top, 0.0, Material.FLAT_ROOF, Material.WALL, instance, None, side_normal)
        if roof_units and half_l > 6 and half_w > 5:
            _add_roof_units(grid, rng, cx, cy, angle, half_l, half_w, height)
        return instance

    slope = np.tan(np.radians(rng.uniform(24.0, 40.0)))
    rl, rw = half_l + overhang, half_w + overhang
    across = rw - np.abs(ly)
    if roof == "hip":
        along = rl - np.abs(lx)
        on_hip = along < across
        rise = np.where(on_hip, along, across)
        local_normal = (np.where(on_hip, np.sign(lx), 0.0) * slope, np.where(on_hip, 0.0, np.sign(ly)) * slope)
    else:
        rise = across
        local_normal = (np.zeros_like(lx), np.sign(ly) * slope)
    top = height + np.maximum(rise, 0.0) * slope
    normal_xy = to_world_xy(*local_normal, angle) / np.sqrt(1.0 + slope**2)
    roof_cells = (np.abs(lx) <= rl) & (np.abs(ly) <= rw)
    floor = np.where(walls, 0.0, height - 0.25)  # eaves overhang the walls
    side_material = np.where(walls, Material.WALL, Material.TILED_ROOF).astype(np.uint8)
    grid.add_column(
        window, roof_cells, top, floor, Material.TILED_ROOF, side_material, instance, normal_xy, side_normal
    )
    return instance


def _add_roof_units(grid, rng, cx, cy, angle, half_l, half_w, height) -> None:
    """HVAC boxes and stair housings: small raised roof parts that give flat roofs relief and shadows."""
    color = jitter_color(rng, np.array([[0.72, 0.73, 0.74], [0.55, 0.56, 0.58], [0.80, 0.78, 0.74]]))
    for _ in range(rng.integers(1, 2 + int(half_l * half_w / 60))):
        ul, uw = rng.uniform(0.8, 2.6), rng.uniform(0.6, 2.0)
        px, py = rng.uniform(-half_l + ul + 1.0, half_l - ul - 1.0), rng.uniform(-half_w + uw + 1.0, half_w - uw - 1.0)
        ux = cx + px * np.cos(angle) - py * np.sin(angle)
        uy = cy + px * np.sin(angle) + py * np.cos(angle)
        window = rect_window(grid, ux, uy, angle, ul, uw, pad=0.5)
        if window is None:
            continue
        lx, ly = rect_frame(window, ux, uy, angle)
        mask = (np.abs(lx) <= ul) & (np.abs(ly) <= uw)
        unit = grid.instances.add(color=color, center=(ux, uy), angle=angle, half_size=(ul, uw))
        top = height + rng.uniform(0.8, 2.4)
        normal = rect_side_normal(lx, ly, ul, uw, angle)
        grid.add_column(window, mask, top, 0.0, Material.ROOF_UNIT, Material.ROOF_UNIT, unit, None, normal)


def add_tank(grid: TownGrid, rng: np.random.Generator, center: tuple[float, float], radius: float, height: float):
    """A cylindrical storage tank with a shallow conical roof."""
    cx, cy = center
    window = grid.window(cx - radius - 1, cx + radius + 1, cy - radius - 1, cy + radius + 1)
    if window is None:
        return
    dx, dy = window.x - cx, window.y - cy
    r = np.hypot(dx, dy)
    mask = r <= radius
    if not grid.is_free(window, mask):
        return
    instance = grid.instances.add(
        color=jitter_color(rng, FACADE_COLORS[[1, 2, 6, 8]]),
        center=center,
        half_size=(radius, radius),
        height=height,
        floor_height=rng.uniform(1.5, 2.5),
        window_period=1.0,
        variant=3,
        roof_color=jitter_color(rng, FLAT_ROOF_COLORS[[0, 3, 4, 8]]),
    )
    slope = 0.15
    radial = np.stack([dx, dy], -1) / np.maximum(r, 1e-6)[..., None]
    top = height + slope * (radius - r)
    grid.add_column(
        window, mask, top, 0.0, Material.FLAT_ROOF, Material.WALL, instance, radial * slope, radial.astype(np.float32)
    )
