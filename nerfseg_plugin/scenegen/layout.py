"""Procedural towns: a style paints the core of the grid, then a rural ring of fields, hedgerows and copses.

Beyond the grid the ground continues as analytically textured farmland (``Material.FIELD``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from nerfseg_plugin.scenegen.districts import paint_box, scatter_trees
from nerfseg_plugin.scenegen.grid import TownGrid
from nerfseg_plugin.scenegen.materials import Material
from nerfseg_plugin.scenegen.props import add_hedge
from nerfseg_plugin.scenegen.riverside import build_riverside
from nerfseg_plugin.scenegen.styles import build_downtown, build_industrial
from nerfseg_plugin.scenegen.suburb import build_suburb

TownStyle = Literal["downtown", "suburb", "riverside", "industrial"]
STYLE_BUILDERS = {
    "downtown": build_downtown,
    "suburb": build_suburb,
    "riverside": build_riverside,
    "industrial": build_industrial,
}


def build_town(
    style: TownStyle, rng: np.random.Generator, town_size: float, margin: float = 30.0, cell_size: float = 0.25
) -> TownGrid:
    """A town of ``style`` filling a ``town_size`` square, inside a grid ``margin`` metres larger on every side."""
    if style not in STYLE_BUILDERS:
        raise ValueError(f"unknown town style {style!r}; choose one of {sorted(STYLE_BUILDERS)}")
    half = 0.5 * town_size
    grid = TownGrid(half_extent=half + margin, cell_size=cell_size)
    _meadows(grid, rng)
    STYLE_BUILDERS[style](grid, rng, half)
    _countryside(grid, rng, half)
    return grid


def _meadows(grid: TownGrid, rng: np.random.Generator) -> None:
    """Base ground: grass with bare soil patches."""
    edge = grid.half_extent
    for _ in range(int((2 * edge) ** 2 / 1500)):
        cx, cy = rng.uniform(-edge, edge, 2)
        w, h = rng.uniform(4, 14, 2)
        paint_box(grid, (cx - w, cx + w, cy - h, cy + h), Material.SOIL)


def _countryside(grid: TownGrid, rng: np.random.Generator, half: float) -> None:
    """The ring between the town core and the grid edge: ploughed plots, hedgerows and clumps of trees."""
    edge = grid.half_extent
    ring = [
        (-edge, -half, -edge, edge),
        (half, edge, -edge, edge),
        (-half, half, -edge, -half),
        (-half, half, half, edge),
    ]
    for box in ring:
        x0, x1, y0, y1 = box
        for _ in range(3):
            px, py = rng.uniform(x0, x1), rng.uniform(y0, y1)
            w, h = rng.uniform(6, 18), rng.uniform(6, 18)
            window = grid.window(px - w, px + w, py - h, py + h)
            if window is not None:
                free = ~grid.claimed[window.sx, window.sy]
                grid.paint_ground(window, free, Material.SOIL if rng.random() < 0.6 else Material.GRASS)
        for _ in range(2):
            if x1 - x0 > y1 - y0:
                y = rng.uniform(y0, y1)
                start = (rng.uniform(x0, x1 - 20), y)
                end = (start[0] + rng.uniform(15, 40), y)
            else:
                x = rng.uniform(x0, x1)
                start = (x, rng.uniform(y0, y1 - 20))
                end = (x, start[1] + rng.uniform(15, 40))
            add_hedge(grid, rng, start, end, rng.uniform(1.0, 1.8))
        area = (x1 - x0) * (y1 - y0)
        for _ in range(max(1, int(area / 2500))):  # copses: clusters of trees
            cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
            scatter_trees(grid, rng, (cx - 10, cx + 10, cy - 10, cy + 10), int(rng.integers(3, 9)))
