"""The 2.5D town: a square grid of cells, each holding a ground material and at most one raised column.

A column occupies heights ``[floor, top]`` above its cell (``floor`` > 0 for tree canopies and bridge decks, which
overhang what lies below). Each raised column belongs to an object instance whose parameters (colours, frame,
facade rhythm) live in an :class:`InstanceTable` row that the shaders read. Arrays are indexed ``[ix, iy]``: the
first axis runs along world x, the second along world y.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nerfseg_plugin.scenegen.materials import NO_MATERIAL, Material

_INSTANCE_FIELDS = {
    "color": 3,  # main albedo (facade, roof membrane, car paint, canopy green, ...)
    "color2": 3,  # secondary albedo (window glass, roof trim, ...)
    "center": 2,  # object frame origin in world xy
    "angle": 1,  # object frame rotation (radians, counter-clockwise from +x)
    "half_size": 2,  # half extents along the object frame's axes
    "height": 1,  # top height (or eave height of a pitched roof)
    "floor_height": 1,  # storey height of a facade
    "window_period": 1,  # horizontal window spacing of a facade
    "variant": 1,  # material-specific style switch (facade kind, car kind, ...)
    "roof_color": 3,  # roof albedo of a building part
    "roof_variant": 1,  # roof kind (membrane, gravel, green, ribbed metal, ...)
}


class InstanceTable:
    """Per-object shading parameters; row 0 means "no object"."""

    def __init__(self) -> None:
        self._rows: list[dict[str, np.ndarray]] = [{}]

    def add(self, **fields: object) -> int:
        unknown = set(fields) - set(_INSTANCE_FIELDS)
        if unknown:
            raise KeyError(f"unknown instance fields: {sorted(unknown)}")
        self._rows.append({k: np.asarray(v, dtype=np.float32).reshape(-1) for k, v in fields.items()})
        return len(self._rows) - 1

    def __len__(self) -> int:
        return len(self._rows)

    def arrays(self) -> dict[str, np.ndarray]:
        """Column arrays ``[num_instances, width]`` (width-1 fields squeezed to ``[num_instances]``)."""
        out = {}
        for name, width in _INSTANCE_FIELDS.items():
            column = np.zeros((len(self._rows), width), dtype=np.float32)
            for i, row in enumerate(self._rows):
                if name in row:
                    column[i] = row[name]
            out[name] = column[:, 0] if width == 1 else column
        return out


@dataclass
class Window:
    """A rectangular block of cells and the world coordinates of their centres."""

    sx: slice
    sy: slice
    x: np.ndarray
    y: np.ndarray


class TownGrid:
    """Cell arrays of the town plus the instance table; painted by the layout code, read by the ray caster."""

    def __init__(self, half_extent: float, cell_size: float) -> None:
        self.cell_size = float(cell_size)
        self.size = int(round(2.0 * half_extent / cell_size))
        self.origin = -0.5 * self.size * self.cell_size  # world x (and y) of the grid's lower corner
        shape = (self.size, self.size)
        self.ground = np.full(shape, Material.GRASS, dtype=np.uint8)
        self.top = np.zeros(shape, dtype=np.float32)
        self.floor = np.zeros(shape, dtype=np.float32)
        self.top_material = np.full(shape, NO_MATERIAL, dtype=np.uint8)
        self.side_material = np.full(shape, NO_MATERIAL, dtype=np.uint8)
        self.instance = np.zeros(shape, dtype=np.int32)
        self.top_normal = np.zeros((*shape, 2), dtype=np.float32)  # xy of the upward surface normal
        self.side_normal = np.zeros((*shape, 2), dtype=np.float32)  # outward horizontal normal of the nearest face
        self.claimed = np.zeros(shape, dtype=bool)  # cells that layout code must not build over
        self.instances = InstanceTable()

    @property
    def half_extent(self) -> float:
        return -self.origin

    def centers(self) -> np.ndarray:
        """World coordinate of every cell centre along one axis."""
        return self.origin + (np.arange(self.size, dtype=np.float32) + 0.5) * self.cell_size

    def window(self, xmin: float, xmax: float, ymin: float, ymax: float) -> Window | None:
        """Cells whose centres may fall in the box, or None when the box misses the grid."""
        lo = np.floor((np.array([xmin, ymin]) - self.origin) / self.cell_size).astype(int)
        hi = np.ceil((np.array([xmax, ymax]) - self.origin) / self.cell_size).astype(int)
        lo, hi = np.clip(lo, 0, self.size), np.clip(hi, 0, self.size)
        if np.any(hi <= lo):
            return None
        centers = self.centers()
        xs, ys = centers[lo[0] : hi[0]], centers[lo[1] : hi[1]]
        x, y = np.meshgrid(xs, ys, indexing="ij")
        return Window(slice(lo[0], hi[0]), slice(lo[1], hi[1]), x, y)

    def world_window(self) -> Window:
        window = self.window(self.origin, -self.origin, self.origin, -self.origin)
        assert window is not None
        return window

    def is_free(self, window: Window, mask: np.ndarray) -> bool:
        return not np.any(self.claimed[window.sx, window.sy][mask])

    def paint_ground(self, window: Window, mask: np.ndarray, material: Material, claim: bool = False) -> None:
        self.ground[window.sx, window.sy][mask] = material
        if claim:
            self.claimed[window.sx, window.sy][mask] = True

    def add_column(
        self,
        window: Window,
        mask: np.ndarray,
        top: np.ndarray | float,
        floor: np.ndarray | float,
        top_material: Material | np.ndarray,
        side_material: Material | np.ndarray,
        instance: int,
        top_normal: np.ndarray | None = None,
        side_normal: np.ndarray | None = None,
    ) -> None:
        """Raise an object over ``mask``; where it meets an existing column the taller one wins.

        ``top``, ``floor`` and the materials are scalars or arrays shaped like the window; normals are ``[..., 2]``
        arrays (their xy parts).
        """
        shape = window.x.shape
        top = np.broadcast_to(np.asarray(top, dtype=np.float32), shape)
        floor = np.broadcast_to(np.asarray(floor, dtype=np.float32), shape)
        old_top = self.top[window.sx, window.sy]
        had_object = self.instance[window.sx, window.sy] > 0
        wins = mask & (top > old_top)
        if not np.any(wins):
            return
        old_floor = self.floor[window.sx, window.sy]
        # Overlapping canopies merge into one column spanning both, so no gap opens between them.
        new_floor = np.where(had_object, np.minimum(old_floor, floor), floor)
        old_top[wins] = top[wins]
        old_floor[wins] = new_floor[wins]
        self.top_material[window.sx, window.sy][wins] = np.broadcast_to(np.asarray(top_material), shape)[wins]
        self.side_material[window.sx, window.sy][wins] = np.broadcast_to(np.asarray(side_material), shape)[wins]
        self.instance[window.sx, window.sy][wins] = instance
        if top_normal is not None:
            self.top_normal[window.sx, window.sy][wins] = np.broadcast_to(top_normal, (*shape, 2))[wins]
        else:
            self.top_normal[window.sx, window.sy][wins] = 0.0
        if side_normal is not None:
            self.side_normal[window.sx, window.sy][wins] = np.broadcast_to(side_normal, (*shape, 2))[wins]
        self.claimed[window.sx, window.sy][mask] = True


def rect_frame(window: Window, cx: float, cy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres in a rectangle's frame (origin at its centre, first axis along ``angle``)."""
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = window.x - cx, window.y - cy
    return c * dx + s * dy, -s * dx + c * dy


def rect_window(grid: TownGrid, cx: float, cy: float, angle: float, half_l: float, half_w: float, pad: float = 0.0):
    """The grid window bounding a rotated rectangle (plus ``pad``), or None off-grid."""
    c, s = abs(np.cos(angle)), abs(np.sin(angle))
    ex, ey = c * half_l + s * half_w + pad, s * half_l + c * half_w + pad
    return grid.window(cx - ex, cx + ex, cy - ey, cy + ey)


def rect_side_normal(lx: np.ndarray, ly: np.ndarray, half_l: float, half_w: float, angle: float) -> np.ndarray:
    """World-space outward normal of the rectangle edge nearest to each point (points given in the rect frame)."""
    along_x = (half_l - np.abs(lx)) < (half_w - np.abs(ly))
    nlx = np.where(along_x, np.sign(lx), 0.0)
    nly = np.where(along_x, 0.0, np.sign(ly))
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([c * nlx - s * nly, s * nlx + c * nly], axis=-1).astype(np.float32)


def to_world_xy(vx: np.ndarray, vy: np.ndarray, angle: float) -> np.ndarray:
    """Rotate frame-local xy vectors into the world."""
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([c * vx - s * vy, s * vx + c * vy], axis=-1).astype(np.float32)
