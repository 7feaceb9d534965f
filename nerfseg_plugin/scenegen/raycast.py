"""Vectorised ray casting against the 2.5D town.

The ground is the plane z = 0 and is intersected analytically. Raised columns are found by sphere tracing with a
conservative distance bound: per 1 m height level, a 2D distance transform gives the horizontal clearance to every
column reaching above that level, and the bound at a point combines those clearances with the vertical clearance to
the levels below it. A ray steps by that bound (at least ``min_step``), stops at the first sample inside a column
and is then bisected to sub-millimetre precision, so depths, labels and normals come from the exact cell hit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from nerfseg_plugin.scenegen.grid import TownGrid
from nerfseg_plugin.scenegen.materials import NO_MATERIAL, Material

_SIDE_TOLERANCE = 0.03  # a hit this far below its column's top came in through a side face
_BISECTION_STEPS = 18
_VERTICAL_LOOKBACK = 16  # levels below a point whose vertical clearance is worth combining


@dataclass
class RayHits:
    """What each ray hit; rays that hit nothing have ``material == NO_MATERIAL`` and ``t == inf``."""

    t: np.ndarray
    """``[R]`` distance along the unit ray direction."""
    position: np.ndarray
    """``[R, 3]`` world hit points."""
    normal: np.ndarray
    """``[R, 3]`` unit surface normals."""
    material: np.ndarray
    """``[R]`` uint8 :class:`Material` ids."""
    instance: np.ndarray
    """``[R]`` instance ids (0 for the ground)."""
    cell: np.ndarray
    """``[R, 2]`` grid cell just inside the surface (clamped to the grid for far-field hits)."""
    outer_cell: np.ndarray
    """``[R, 2]`` grid cell just outside the surface (differs from ``cell`` for side hits)."""
    side: np.ndarray
    """``[R]`` bool: the ray hit a vertical face."""


class HeightfieldTracer:
    """Casts rays into a :class:`TownGrid`; constructing it precomputes the distance-bound tables."""

    def __init__(self, grid: TownGrid, coarse_factor: int = 2, level_height: float = 1.0, min_step: float = 0.2):
        if grid.size % coarse_factor:
            raise ValueError(f"grid size {grid.size} is not a multiple of the coarse factor {coarse_factor}")
        self.grid = grid
        self.min_step = min_step
        self.level_height = level_height
        self.coarse_factor = coarse_factor
        self.has_object = grid.instance > 0
        self.top = np.where(self.has_object, grid.top, -np.inf).astype(np.float32)
        self.floor = grid.floor.astype(np.float32)
        self.max_height = float(self.top.max(initial=0.0)) + 0.05
        self.coarse_size = grid.cell_size * coarse_factor
        n = grid.size // coarse_factor
        block_top = self.top.reshape(n, coarse_factor, n, coarse_factor).max(axis=(1, 3))
        self._bounds = self._level_bounds(block_top)
        # Horizontal clearance around each cell at full resolution: a ray whose remaining path to its ground point
        # stays inside the clearance disk of that point meets no column on the way.
        if self.has_object.any():
            ground_clearance = ndimage.distance_transform_edt(~self.has_object) * grid.cell_size
            self._ground_clearance = (ground_clearance - grid.cell_size * np.sqrt(2.0)).astype(np.float32)
        else:
            self._ground_clearance = np.full(self.has_object.shape, np.inf, dtype=np.float32)

    def _level_bounds(self, block_top: np.ndarray) -> np.ndarray:
        """``bounds[k, i, j]``: a safe step for any point in block (i, j) with height in ``[k, k + 1)`` levels."""
        h = self.level_height
        margin = self.coarse_size * np.sqrt(2.0)  # query and nearest point may each sit anywhere in their block
        num_levels = int(np.ceil(self.max_height / h)) + 1
        clearance = np.full((num_levels, *block_top.shape), np.inf, dtype=np.float32)
        for k in range(num_levels):
            reaching = block_top > k * h
            if reaching.any():
                clearance[k] = ndimage.distance_transform_edt(~reaching) * self.coarse_size - margin
        bounds = np.empty_like(clearance)
        for k in range(num_levels):
            # Level 0 holds every column, so its clearance alone is safe; level j > 0 leaves out only columns
            # lower than j * h, which lie at least (k - j) * h below any point on level k.
            lowest = max(1, k - _VERTICAL_LOOKBACK)
            vertical = ((k - np.arange(lowest, k + 1)) * h).astype(np.float32)[:, None, None]
            combined = np.minimum(clearance[lowest : k + 1], vertical).max(axis=0) if k >= lowest else clearance[0]
            bounds[k] = np.maximum(clearance[0], combined)
        return np.maximum(bounds, 0.0)

    def _cells(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        grid = self.grid
        ix = np.floor((x - grid.origin) / grid.cell_size).astype(np.int32)
        iy = np.floor((y - grid.origin) / grid.cell_size).astype(np.int32)
        on_grid = (ix >= 0) & (ix < grid.size) & (iy >= 0) & (iy < grid.size)
        return np.clip(ix, 0, grid.size - 1), np.clip(iy, 0, grid.size - 1), on_grid

    def _off_grid(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Horizontal distance to the grid's square; off the grid every column is at least that far away."""
        half = self.grid.half_extent
        return np.hypot(np.maximum(np.abs(x) - half, 0.0), np.maximum(np.abs(y) - half, 0.0))

    def inside(self, points: np.ndarray) -> np.ndarray:
        """Whether points lie in the ground half-space or inside a column."""
        x, y, z = points[:, 0], points[:, 1], points[:, 2]
        ix, iy, on_grid = self._cells(x, y)
        in_column = on_grid & (z <= self.top[ix, iy]) & (z >= self.floor[ix, iy])
        return (z <= 0.0) | in_column

    def trace(self, origins: np.ndarray, directions: np.ndarray, max_steps: int = 400) -> RayHits:
        """Intersect rays (unit ``directions``) with the town; origins must lie above every column."""
        grid = self.grid
        origins = np.ascontiguousarray(origins, dtype=np.float32)
        directions = np.ascontiguousarray(directions, dtype=np.float32)
        num = len(origins)
        down = directions[:, 2] < -1e-6
        t_ground = np.full(num, np.inf, dtype=np.float32)
        t_ground[down] = origins[down, 2] / -directions[down, 2]
        start_height = self.max_height + self.level_height
        t_start = np.where(down, np.maximum(origins[:, 2] - start_height, 0.0) / np.maximum(-directions[:, 2], 1e-6), 0)
        t_lo = t_start.astype(np.float32)
        t_hi = np.full(num, np.inf, dtype=np.float32)
        needs_bisection = np.zeros(num, dtype=bool)

        # Per-active-ray state, compacted as rays finish.
        ids = np.flatnonzero(down)
        ox, oy, oz = (origins[ids, i].copy() for i in range(3))
        dx, dy, dz = (directions[ids, i].copy() for i in range(3))
        t, tg = t_lo[ids].copy(), t_ground[ids]
        # How close the remaining path must come to its ground point for the clearance test there to settle it.
        gx, gy = ox + tg * dx, oy + tg * dy
        gix, giy, g_on = self._cells(gx, gy)
        g_clear = np.maximum(np.where(g_on, self._ground_clearance[gix, giy], 0.0), self._off_grid(gx, gy))
        horizontal = np.hypot(dx, dy)

        n, nc = grid.size, grid.size // self.coarse_factor
        top, floor = self.top.reshape(-1), self.floor.reshape(-1)
        bounds, plane, last_level = self._bounds.reshape(-1), nc * nc, self._bounds.shape[0] - 1
        inv_cell, inv_level = 1.0 / grid.cell_size, 1.0 / self.level_height
        for _ in range(max_steps):
            if ids.size == 0:
                break
            px, py, pz = ox + t * dx, oy + t * dy, oz + t * dz
            ix = np.floor((px - grid.origin) * inv_cell).astype(np.int32)
            iy = np.floor((py - grid.origin) * inv_cell).astype(np.int32)
            on_grid = (ix >= 0) & (ix < n) & (iy >= 0) & (iy < n)
            np.clip(ix, 0, n - 1, out=ix)
            np.clip(iy, 0, n - 1, out=iy)
            cell = ix * n + iy
            entered = (pz <= 0.0) | (on_grid & (pz <= top[cell]) & (pz >= floor[cell]))
            level = np.minimum(np.maximum(pz, 0.0) * inv_level, last_level).astype(np.int32)
            coarse = (ix // self.coarse_factor) * nc + iy // self.coarse_factor
            # Clamped lookups stay safe off the grid: projecting onto the grid's square never increases distances.
            bound = bounds[level * plane + coarse]
            grounded = ~entered & ((t + bound >= tg) | ((tg - t) * horizontal < g_clear))
            t_hi[ids[entered]] = t[entered]
            needs_bisection[ids[entered]] = True
            t_hi[ids[grounded]] = tg[grounded]
            keep = ~(entered | grounded)
            t_lo[ids[keep]] = t[keep]
            step = np.maximum(bound[keep], self.min_step)
            ids, ox, oy, oz, dx, dy, dz = (a[keep] for a in (ids, ox, oy, oz, dx, dy, dz))
            t, tg, g_clear, horizontal = t[keep] + step, tg[keep], g_clear[keep], horizontal[keep]
        # Rays still marching after max_steps (grazing runs along facades; none in practice) end on the ground.
        t_hi[ids] = t_ground[ids]

        bisect = np.flatnonzero(needs_bisection)
        lo, hi = t_lo[bisect], t_hi[bisect]
        o, d = origins[bisect], directions[bisect]
        for _ in range(_BISECTION_STEPS):
            mid = 0.5 * (lo + hi)
            entered = self.inside(o + mid[:, None] * d)
            hi = np.where(entered, mid, hi)
            lo = np.where(entered, lo, mid)
        t_hi[bisect], t_lo[bisect] = hi, lo
        # Ground hits found by the clearance tests have no bracket; their outer sample sits just above the plane.
        ground_only = ~needs_bisection & np.isfinite(t_hi)
        t_lo[ground_only] = t_hi[ground_only] - 1e-3
        return self._classify(origins, directions, t_lo, t_hi)

    def _classify(self, origins, directions, t_lo, t_hi) -> RayHits:
        grid = self.grid
        num = len(origins)
        hit = np.isfinite(t_hi)
        t_safe = np.where(hit, t_hi, 0.0)
        inner = origins + t_safe[:, None] * directions
        outer = origins + np.where(hit, t_lo, 0.0)[:, None] * directions
        ix, iy, on_grid = self._cells(inner[:, 0], inner[:, 1])
        ox, oy, _ = self._cells(outer[:, 0], outer[:, 1])
        z = inner[:, 2]
        column = hit & on_grid & self.has_object[ix, iy] & (z >= self.floor[ix, iy] - 1e-3)
        top = grid.top[ix, iy]
        below_top = column & (top - z > _SIDE_TOLERANCE)
        # A side face shared with the same object (the steps of a pitched roof or a canopy) is shaded as its top.
        same_object = grid.instance[ox, oy] == grid.instance[ix, iy]
        riser = below_top & same_object & (outer[:, 2] >= grid.top[ox, oy] - 0.05)
        side = below_top & ~riser

        material = np.full(num, NO_MATERIAL, dtype=np.uint8)
        material[hit] = np.where(on_grid, grid.ground[ix, iy], Material.FIELD)[hit]
        material[column] = np.where(side, grid.side_material[ix, iy], grid.top_material[ix, iy])[column]
        normal = np.zeros((num, 3), dtype=np.float32)
        normal[:, 2] = 1.0
        top_xy = grid.top_normal[ix, iy]
        tops = column & ~side
        normal[tops, :2] = top_xy[tops]
        normal[tops, 2] = np.sqrt(np.clip(1.0 - (top_xy[tops] ** 2).sum(-1), 0.0, 1.0))
        side_xy = grid.side_normal[ix[side], iy[side]]
        # The stored normal is the nearest face's; at corners the ray may have come through the other face, which
        # the step from the outer to the inner cell reveals.
        step_xy = np.stack([ox[side] - ix[side], oy[side] - iy[side]], -1).astype(np.float32)
        facing_away = (side_xy * directions[side, :2]).sum(-1) > 0
        step_xy /= np.maximum(np.linalg.norm(step_xy, axis=-1, keepdims=True), 1e-6)
        side_xy[facing_away] = step_xy[facing_away]
        normal[side, :2] = side_xy
        normal[side, 2] = 0.0
        instance = np.where(column, grid.instance[ix, iy], 0)
        return RayHits(
            t=np.where(hit, t_hi, np.inf).astype(np.float32),
            position=inner.astype(np.float32),
            normal=normal,
            material=material,
            instance=instance.astype(np.int32),
            cell=np.stack([ix, iy], -1),
            outer_cell=np.stack([ox, oy], -1),
            side=side,
        )
