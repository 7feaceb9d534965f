"""Lighting and rendering: sun (Lambert + cast shadows), sky ambient with occlusion, haze; labels and depth.

Cast shadows use a *shadow height* map: a point (x, y, z) is in shadow iff z lies below
``max_r [top(xy + r * sun_xy) - r * tan(sun elevation)]``, which a log-step max-doubling over the grid computes once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from nerfseg_plugin.core.geometry import Intrinsics
from nerfseg_plugin.scenegen.cameras import camera_rays
from nerfseg_plugin.scenegen.grid import TownGrid
from nerfseg_plugin.scenegen.materials import IGNORE_LABEL, MATERIAL_TO_CLASS, NO_MATERIAL, Material
from nerfseg_plugin.scenegen.noise import ValueNoise, mix
from nerfseg_plugin.scenegen.props import canopy_normals
from nerfseg_plugin.scenegen.raycast import HeightfieldTracer, RayHits
from nerfseg_plugin.scenegen.textures import ALBEDO, Surface

SKY_COLOR = np.array([0.66, 0.76, 0.88], dtype=np.float32)
HAZE_COLOR = np.array([0.70, 0.76, 0.83], dtype=np.float32)


@dataclass(frozen=True)
class Lighting:
    """Sun and sky."""

    sun_direction: np.ndarray
    """Unit vector towards the sun."""
    sun_color: np.ndarray
    """RGB irradiance of direct sunlight."""
    ambient_color: np.ndarray
    """RGB irradiance of the open sky."""
    haze_distance: float = 1400.0
    """Distance (metres) over which the view fades ~63% towards the haze colour."""

    @classmethod
    def random(cls, rng: np.random.Generator) -> Lighting:
        azimuth, elevation = rng.uniform(0, 2 * np.pi), np.radians(rng.uniform(38.0, 58.0))
        direction = np.array(
            [np.cos(azimuth) * np.cos(elevation), np.sin(azimuth) * np.cos(elevation), np.sin(elevation)]
        )
        warmth = rng.uniform(0.0, 0.06)
        return cls(
            sun_direction=direction.astype(np.float32),
            sun_color=np.array([0.84, 0.82 - warmth, 0.76 - 2 * warmth], dtype=np.float32),
            ambient_color=np.array([0.40, 0.44, 0.50], dtype=np.float32),
        )


def shadow_height_map(grid: TownGrid, sun_direction: np.ndarray) -> np.ndarray:
    """Per cell, the height below which a point there is shaded from the sun."""
    heights = np.where(grid.instance > 0, grid.top, 0.0).astype(np.float32)
    horizontal = float(np.hypot(*sun_direction[:2]))
    slope = sun_direction[2] / max(horizontal, 1e-6)  # height lost per metre travelled towards the sun
    step_dir = sun_direction[:2] / max(horizontal, 1e-6)
    reach = float(heights.max(initial=0.0)) / max(slope, 1e-3)
    shadow, span = heights.copy(), grid.cell_size
    while span < reach + grid.cell_size:
        sx, sy = np.round(step_dir * span / grid.cell_size).astype(int)
        shifted = np.full_like(shadow, -np.inf)
        n = grid.size
        dst = (slice(max(0, -sx), min(n, n - sx)), slice(max(0, -sy), min(n, n - sy)))
        src = (slice(max(0, sx), min(n, n + sx)), slice(max(0, sy), min(n, n + sy)))
        shifted[dst] = shadow[src] - span * slope
        np.maximum(shadow, shifted, out=shadow)
        span *= 2.0
    return shadow


def occlusion_map(grid: TownGrid) -> np.ndarray:
    """Sky visibility of ground and roofs: darker next to anything taller (cheap ambient occlusion)."""
    heights = np.where(grid.instance > 0, grid.top, 0.0).astype(np.float32)
    near = ndimage.uniform_filter(heights, int(3.0 / grid.cell_size)) - heights
    far = ndimage.uniform_filter(heights, int(10.0 / grid.cell_size)) - heights
    return np.clip(1.0 - 0.05 * np.maximum(near, 0) - 0.015 * np.maximum(far, 0), 0.45, 1.0).astype(np.float32)


class Renderer:
    """Traces, shades and labels camera views of one town."""

    def __init__(self, grid: TownGrid, lighting: Lighting, noise: ValueNoise) -> None:
        self.grid = grid
        self.lighting = lighting
        self.noise = noise
        self.tracer = HeightfieldTracer(grid)
        self.instances = grid.instances.arrays()
        self.shadow_height = shadow_height_map(grid, lighting.sun_direction)
        self.occlusion = occlusion_map(grid)

    def shade(self, hits: RayHits, directions: np.ndarray, footprint_per_metre: float) -> np.ndarray:
        """Linear RGB in [0, 1] for every ray."""
        rgb = np.tile(SKY_COLOR, (len(hits.t), 1))
        hit = np.flatnonzero(hits.material != NO_MATERIAL)
        if hit.size == 0:
            return rgb
        p, nrm, d = hits.position[hit], hits.normal[hit], directions[hit]
        t, side = hits.t[hit], hits.side[hit]
        material = hits.material[hit]
        canopy = material == Material.TREE
        if canopy.any():  # smooth ellipsoid normals instead of the heightfield's steps
            nrm = nrm.copy()
            nrm[canopy] = canopy_normals(p[canopy], hits.instance[hit][canopy], self.instances)
        facing = np.maximum(np.abs((nrm * d).sum(-1)), 0.25)
        footprint = (t * footprint_per_metre / facing).astype(np.float32)
        albedo = np.zeros((hit.size, 3), dtype=np.float32)
        for m in np.unique(material):
            sel = material == m
            surface = Surface(
                x=p[sel, 0],
                y=p[sel, 1],
                z=p[sel, 2],
                normal=nrm[sel],
                direction=d[sel],
                footprint=footprint[sel],
                side=side[sel],
                instance=hits.instance[hit][sel],
                table=self.instances,
            )
            albedo[sel] = ALBEDO[Material(int(m))](surface, self.noise)

        light = self.lighting
        # Light is looked up in the cell just outside the surface: in front of a face, above a roof or the ground.
        cell = hits.outer_cell[hit]
        on_grid = material != Material.FIELD
        shadow_top = np.where(on_grid, self.shadow_height[cell[:, 0], cell[:, 1]], -np.inf)
        shadow = np.clip((shadow_top - p[:, 2] - 0.08) / 0.25, 0.0, 1.0)
        sun = np.maximum((nrm * light.sun_direction).sum(-1), 0.0) * (1.0 - shadow)
        sky = np.where(side, 0.55 + 0.45 * np.clip(p[:, 2] / 4.0, 0.0, 1.0), self.occlusion[cell[:, 0], cell[:, 1]])
        sky = np.where(on_grid & ~canopy, sky, 1.0) * (0.62 + 0.38 * nrm[:, 2])
        color = albedo * (sky[:, None] * light.ambient_color + sun[:, None] * light.sun_color)
        haze = 1.0 - np.exp(-t / light.haze_distance)
        rgb[hit] = mix(color, HAZE_COLOR[None, :], haze)
        return rgb

    def render(
        self, poses: list[np.ndarray], intrinsics: Intrinsics, antialias: bool = True
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per pose: RGB (uint8 ``[H, W, 3]``), labels (uint8 ``[H, W]``, 255 where nothing was hit) and z-depth
        (float32, inf where nothing was hit).

        Labels and depth come from the pixel-centre ray. With ``antialias`` the colour of pixels on a label or
        depth edge is the mean of a 2x2 grid of sub-pixel rays. All views' rays are traced together, which keeps
        the per-step overhead of the vectorised tracer low for small images.
        """
        h, w = intrinsics.height, intrinsics.width
        pixel_angle = 1.0 / intrinsics.fx
        rays = [camera_rays(c2w, intrinsics) for c2w in poses]
        directions = np.concatenate([r[1] for r in rays])
        hits = self.tracer.trace(np.concatenate([r[0] for r in rays]), directions)
        rgb = self.shade(hits, directions, pixel_angle).reshape(len(poses), h * w, 3)
        labels = np.where(hits.material == NO_MATERIAL, IGNORE_LABEL, MATERIAL_TO_CLASS[hits.material])
        labels = labels.reshape(len(poses), h, w).astype(np.uint8)
        depth = (hits.t * np.concatenate([r[2] for r in rays])).astype(np.float32).reshape(len(poses), h, w)
        if antialias:
            material, instance = hits.material.reshape(len(poses), h, w), hits.instance.reshape(len(poses), h, w)
            edges = [np.flatnonzero(_edge_pixels(material[v], instance[v], depth[v])) for v in range(len(poses))]
            offsets = ((0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75))
            sub_rays = [
                camera_rays(c2w, intrinsics, o, e) for c2w, e in zip(poses, edges, strict=True) for o in offsets
            ]
            if sum(e.size for e in edges):
                sub_dirs = np.concatenate([r[1] for r in sub_rays])
                sub_hits = self.tracer.trace(np.concatenate([r[0] for r in sub_rays]), sub_dirs)
                sub_rgb = self.shade(sub_hits, sub_dirs, 0.5 * pixel_angle)
                start = 0
                for v, flat in enumerate(edges):
                    block = sub_rgb[start : start + len(offsets) * flat.size]
                    rgb[v, flat] = block.reshape(len(offsets), flat.size, 3).mean(axis=0)
                    start += block.shape[0]
        images = (np.clip(rgb, 0.0, 1.0) ** (1 / 1.15) * 255.0 + 0.5).astype(np.uint8).reshape(len(poses), h, w, 3)
        return [(images[v], labels[v], depth[v]) for v in range(len(poses))]


def _edge_pixels(material: np.ndarray, instance: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Pixels whose material, object or depth differs from a 4-neighbour's: where aliasing would show."""
    finite = np.where(np.isfinite(depth), depth, 1e6)
    log_depth = np.log(np.maximum(finite, 1e-3))
    edges = np.zeros(material.shape, dtype=bool)
    for axis in (0, 1):
        differs = (np.diff(material.astype(np.int16), axis=axis) != 0) | (np.diff(instance, axis=axis) != 0)
        differs |= np.abs(np.diff(log_depth, axis=axis)) > 0.02
        if axis == 0:
            edges[1:] |= differs
            edges[:-1] |= differs
        else:
            edges[:, 1:] |= differs
            edges[:, :-1] |= differs
    return edges
