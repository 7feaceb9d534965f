"""Albedo of every material at hit points: asphalt grain, paving slabs, window grids, roof tiles, leaf clumps, ...

Each function receives the hits of one material as a :class:`Surface` and returns ``[M, 3]`` albedo in [0, 1].
Detail is layered from metres down to the pixel footprint, since feature matching (SIFT) needs texture at pixel
scale while view consistency needs anything finer filtered away.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from nerfseg_plugin.scenegen.materials import Material
from nerfseg_plugin.scenegen.noise import ValueNoise, hash01, lines, mix, stripes
from nerfseg_plugin.scenegen.props import canopy_ellipsoids


@dataclass
class Surface:
    """Hit samples of one material."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    normal: np.ndarray
    """``[M, 3]`` unit normals."""
    direction: np.ndarray
    """``[M, 3]`` unit ray directions."""
    footprint: np.ndarray
    """Pixel footprint at the hit (metres)."""
    side: np.ndarray
    """Vertical-face hits."""
    instance: np.ndarray
    table: dict[str, np.ndarray]
    """The instance table's columns (see ``grid.InstanceTable``)."""

    def field(self, name: str) -> np.ndarray:
        return self.table[name][self.instance]

    def local_xy(self) -> tuple[np.ndarray, np.ndarray]:
        """Hit coordinates in the instance's own frame."""
        center, angle = self.field("center"), self.field("angle")
        c, s = np.cos(angle), np.sin(angle)
        dx, dy = self.x - center[:, 0], self.y - center[:, 1]
        return c * dx + s * dy, -s * dx + c * dy

    def along_wall(self) -> np.ndarray:
        """Horizontal coordinate along a vertical face, measured from the instance centre."""
        center = self.field("center")
        return (self.x - center[:, 0]) * -self.normal[:, 1] + (self.y - center[:, 1]) * self.normal[:, 0]


def _rgb(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def _grass(s: Surface, n: ValueNoise) -> np.ndarray:
    lush, dry, bare = _rgb(0.27, 0.42, 0.15), _rgb(0.50, 0.49, 0.27), _rgb(0.44, 0.36, 0.25)
    base = mix(lush, dry, np.clip(n.fbm(s.x, s.y, 40.0, seed=1) * 1.5 + 0.35, 0, 1))
    patches = np.clip((n.fbm(s.x, s.y, 6.0, s.footprint, seed=2) - 0.25) * 6.0, 0, 1)
    base = mix(base, bare, 0.7 * patches)
    shade = 1.0 + 0.35 * n.fbm(s.x, s.y, 2.0, s.footprint, octaves=4, seed=3)
    return base * shade[:, None]


def _soil(s: Surface, n: ValueNoise) -> np.ndarray:
    base = mix(_rgb(0.47, 0.37, 0.26), _rgb(0.33, 0.25, 0.18), np.clip(n.fbm(s.x, s.y, 12.0, seed=4) + 0.5, 0, 1))
    furrows = 1.0 - 0.12 * stripes(s.x / 1.4, 0.4, s.footprint / 1.4)
    grain = 1.0 + 0.4 * n.fbm(s.x, s.y, 1.2, s.footprint, octaves=4, seed=5)
    return base * (furrows * grain)[:, None]


def _asphalt(s: Surface, n: ValueNoise, tone: float = 0.35) -> np.ndarray:
    grey = tone + 0.05 * n.fbm(s.x, s.y, 30.0, seed=6)
    repairs = np.clip((n.fbm(s.x, s.y, 9.0, seed=7) - 0.2) * 8.0, 0, 1) * 0.18
    ridge = 1.0 - np.abs(2.0 * (n(s.x / 4.0 + 11.0, s.y / 4.0 - 7.0) - 0.5))
    cracks = np.clip((ridge - 0.93) * 14.0, 0, 1) * np.clip(1.5 - s.footprint * 2.0, 0, 1)
    grain = 0.22 * n.fbm(s.x, s.y, 0.9, s.footprint, octaves=3, seed=8)
    value = grey * (1.0 - repairs - 0.35 * cracks + grain)
    return np.stack([value * 0.98, value, value * 1.03], -1)


def _parking(s: Surface, n: ValueNoise) -> np.ndarray:
    color = _asphalt(s, n, tone=0.29)
    stains = np.clip((n.fbm(s.x, s.y, 1.6, s.footprint, seed=9) - 0.18) * 5.0, 0, 1)
    return color * (1.0 - 0.35 * stains)[:, None]


def _marking(s: Surface, n: ValueNoise, paint: np.ndarray) -> np.ndarray:
    wear = np.clip(n.fbm(s.x, s.y, 1.5, s.footprint, seed=10) * 2.5 + 0.25, 0, 1)
    return mix(paint[None, :] * (0.95 + 0.1 * wear)[:, None], _rgb(0.36, 0.36, 0.37)[None, :], 0.35 * (1 - wear))


def _slabs(s: Surface, n: ValueNoise, size: float, light: np.ndarray, dark: np.ndarray, seed: int) -> np.ndarray:
    u, v = s.x / size, s.y / size
    per_slab = hash01(np.floor(u), np.floor(v), seed)
    base = mix(light, dark, np.clip(n.fbm(s.x, s.y, 35.0, seed=seed) + 0.5, 0, 1))
    grout = np.maximum(lines(u, 0.06, s.footprint / size), lines(v, 0.06, s.footprint / size))
    shade = (0.9 + 0.2 * per_slab) * (1.0 - 0.3 * grout) + 0.25 * n.fbm(s.x, s.y, 0.8, s.footprint, seed=seed + 1)
    return base * shade[:, None]


def _sidewalk(s: Surface, n: ValueNoise) -> np.ndarray:
    return _slabs(s, n, 1.25, _rgb(0.64, 0.62, 0.59), _rgb(0.66, 0.57, 0.52), seed=11)


def _plaza(s: Surface, n: ValueNoise) -> np.ndarray:
    checker = (np.floor(s.x / 2.5) + np.floor(s.y / 2.5)) % 2
    color = _slabs(s, n, 0.83, _rgb(0.70, 0.66, 0.60), _rgb(0.58, 0.52, 0.50), seed=13)
    return color * (1.0 - 0.12 * checker)[:, None]


def _concrete(s: Surface, n: ValueNoise) -> np.ndarray:
    u = np.where(s.side, s.x * -s.normal[:, 1] + s.y * s.normal[:, 0], s.x)
    seams = lines(u / 2.5, 0.05, s.footprint / 2.5)
    value = 0.6 * (1.0 + 0.3 * n.fbm(u, s.z + s.y, 1.5, s.footprint, seed=15)) * (1.0 - 0.25 * seams)
    return np.stack([value, value, value * 0.97], -1)


def _water(s: Surface, n: ValueNoise) -> np.ndarray:
    deep = mix(_rgb(0.07, 0.16, 0.20), _rgb(0.12, 0.21, 0.18), np.clip(n.fbm(s.x, s.y, 25.0, seed=16) + 0.5, 0, 1))
    ripples = n.fbm(s.x * 0.5, s.y * 2.0, 1.2, s.footprint, octaves=3, seed=17)
    cos_view = np.clip(-s.direction[:, 2], 0.05, 1.0)
    fresnel = 0.02 + 0.98 * (1.0 - cos_view) ** 5
    color = mix(deep * (1.0 + 0.5 * ripples)[:, None], _rgb(0.55, 0.63, 0.72)[None, :], np.clip(fresnel * 1.5, 0, 0.6))
    return color


def _foliage(s: Surface, n: ValueNoise, scale: float, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Leaf clumps: fractal noise projected along the three axes and blended by the normal (triplanar), so that
    steep canopy sides are not streaked by a noise meant for the ground plane."""
    weights = np.abs(s.normal) ** 2
    weights /= weights.sum(-1, keepdims=True)
    clumps = (
        weights[:, 2] * n.fbm(x, y, scale, s.footprint, octaves=4, gain=0.6, seed=18)
        + weights[:, 1] * n.fbm(x, z, scale, s.footprint, octaves=4, gain=0.6, seed=50)
        + weights[:, 0] * n.fbm(y, z, scale, s.footprint, octaves=4, gain=0.6, seed=51)
    )
    base = s.field("color")
    hue = n.fbm(x, y, 3.0, seed=19)[:, None] * _rgb(0.10, 0.05, -0.04)
    return np.clip(base * (0.95 + 1.6 * clumps)[:, None] + hue * base, 0.0, 1.0)


def _tree(s: Surface, n: ValueNoise) -> np.ndarray:
    # Texture the smooth ellipsoid the canopy approximates, not the steps of its heightfield columns.
    centers, radii = canopy_ellipsoids(s.instance, s.table)
    offset = (np.stack([s.x, s.y, s.z], -1) - centers) / radii
    smooth = centers + offset / np.maximum(np.linalg.norm(offset, axis=-1, keepdims=True), 1e-6) * radii
    return _foliage(s, n, 1.8, smooth[:, 0], smooth[:, 1], smooth[:, 2])


def _hedge(s: Surface, n: ValueNoise) -> np.ndarray:
    return _foliage(s, n, 0.9, s.x, s.y, s.z)


def _wall(s: Surface, n: ValueNoise) -> np.ndarray:
    color, glass = s.field("color"), s.field("color2")
    kind, height = s.field("variant").astype(int), s.field("height")
    storey, period = s.field("floor_height"), s.field("window_period")
    u, z, fp = s.along_wall(), s.z, s.footprint
    floors = z / storey
    grime = 1.0 + 0.25 * n.fbm(u * 3.0, z * 0.4, 3.0, fp * 3.0, seed=20)
    texture = 1.0 + 0.2 * n.fbm(u + z, z - u, 1.0, fp, seed=21)
    wall = color * (grime * texture * (1.0 - 0.25 * lines(floors, 0.05, fp / storey)))[:, None]
    window_id = hash01(np.floor(u / period + 0.5), np.floor(floors), 23)
    pane = glass * (0.65 + 0.7 * window_id)[:, None]
    pane = mix(pane, _rgb(0.80, 0.74, 0.62)[None, :], (window_id > 0.85) * 0.6)  # drawn curtains

    shop = floors < 1.0
    col = np.where(shop & (kind == 0), stripes(u / period + 0.45, 0.9, fp / period), 0.0)
    col = np.where(~shop | (kind != 0), stripes(u / period + 0.27, 0.55, fp / period), col)
    row = np.where(
        shop & (kind == 0), stripes(floors - 0.1, 0.75, fp / storey), stripes(floors - 0.3, 0.5, fp / storey)
    )
    windows = col * row * (z < height - 0.8) * (z > 0.3)
    # Curtain walls: glass everywhere between mullions and floor slabs.
    mullions = np.maximum(lines(u / 1.5, 0.1, fp / 1.5), lines(floors, 0.12, fp / storey))
    curtain = mix(glass * (0.8 + 0.5 * hash01(np.floor(u / 1.5), np.floor(floors), 29))[:, None], color, mullions)
    # Houses: sparse small windows; industrial cladding: panel seams and a band of high windows.
    house_windows = stripes(u / 3.4 + 0.2, 0.35, fp / 3.4) * stripes(floors - 0.35, 0.4, fp / storey) * (z < height)
    panels = 1.0 - 0.25 * lines(u / 1.2, 0.06, fp / 1.2) + 0.06 * (hash01(np.floor(u / 1.2), 0, 31) - 0.5)
    band = stripes(u / 3.0, 0.7, fp / 3.0) * ((z > height - 2.6) & (z < height - 1.3))
    door = stripes(u / 14.0, 0.3, fp / 14.0) * (z < 4.5)
    out = mix(wall, pane, windows)
    out = np.where((kind == 1)[:, None], curtain, out)
    out = np.where((kind == 2)[:, None], mix(wall, pane, house_windows), out)
    industrial = mix(mix(color * panels[:, None], pane, band), _rgb(0.35, 0.36, 0.38)[None, :], door)
    out = np.where((kind == 3)[:, None], industrial, out)
    brick = wall * (1.0 + 0.25 * n.fbm(u * 2.0, z * 4.0, 1.0, fp * 4.0, seed=33))[:, None]
    out = np.where((kind == 4)[:, None], mix(brick, mix(pane, _rgb(0.9, 0.9, 0.88), 0.15), windows), out)
    return out * np.clip(0.7 + 0.3 * z / 3.0, 0.7, 1.0)[:, None]  # ground-level grime


def _flat_roof(s: Surface, n: ValueNoise) -> np.ndarray:
    color, kind, fp = s.field("roof_color"), s.field("roof_variant").astype(int), s.footprint
    lx, ly = s.local_xy()
    stains = 1.0 + 0.3 * n.fbm(s.x, s.y, 7.0, fp, octaves=2, seed=34)
    membrane = 1.0 - 0.18 * lines(ly / 1.6, 0.06, fp / 1.6) + 0.15 * n.fbm(s.x, s.y, 1.3, fp, seed=35)
    gravel = 1.0 + 0.5 * n.fbm(s.x, s.y, 0.7, fp, octaves=3, seed=36)
    sedum = 1.0 + 1.1 * n.fbm(s.x, s.y, 1.6, fp, octaves=4, gain=0.6, seed=37)
    ribs = 1.0 - 0.2 * stripes(lx / 1.0, 0.5, fp) - 0.3 * lines(ly / 6.0, 0.04, fp / 6.0)
    shade = np.choose(np.clip(kind, 0, 3), [membrane, gravel, sedum, ribs]) * stains
    out = color * shade[:, None]
    skylights = (
        (kind == 3) & (stripes(ly / 8.0 + 0.3, 0.15, fp / 8.0) > 0.5) & (np.abs(lx) < s.field("half_size")[:, 0] - 3)
    )
    out[skylights] = _rgb(0.70, 0.76, 0.80) * (0.9 + 0.2 * hash01(np.floor(lx[skylights] / 2.0), 0, 38))[:, None]
    coping = (s.z > s.field("height") + 0.3) | s.side  # parapet tops and faces
    out[coping] = _rgb(0.62, 0.61, 0.58) * (1.0 + 0.2 * n.fbm(s.x, s.y, 0.8, fp, seed=39))[coping, None]
    return out


def _tiled_roof(s: Surface, n: ValueNoise) -> np.ndarray:
    color, fp = s.field("roof_color"), s.footprint
    slope_dir = s.normal[:, :2] / np.maximum(np.linalg.norm(s.normal[:, :2], axis=-1, keepdims=True), 1e-3)
    across = s.x * slope_dir[:, 0] + s.y * slope_dir[:, 1]
    along = s.x * -slope_dir[:, 1] + s.y * slope_dir[:, 0]
    courses = 1.0 - 0.25 * stripes(across / 0.34, 0.3, fp / 0.34)
    tile = 1.0 + 0.16 * (hash01(np.floor(across / 0.34), np.floor(along / 0.3), 40) - 0.5) * np.clip(1 - fp, 0, 1)
    weather = 1.0 + 0.3 * n.fbm(s.x, s.y, 3.0, fp, octaves=3, seed=41)
    out = color * (courses * tile * weather)[:, None]
    moss = np.clip((n.fbm(s.x, s.y, 2.5, fp, seed=42) - 0.2) * 4.0, 0, 1) * 0.4
    out = mix(out, _rgb(0.30, 0.34, 0.20)[None, :], moss)
    # Some houses carry a solar array on one slope: dark panels with light frames, strong matching texture.
    lx, ly = s.local_xy()
    half = s.field("half_size")
    has_solar = hash01(s.instance, 0, 43) < 0.35
    array = has_solar & (ly > 0.8) & (ly < half[:, 1] - 0.6) & (np.abs(lx) < half[:, 0] - 1.2) & ~s.side
    frames = np.maximum(lines(lx / 1.05, 0.06, fp / 1.05), lines(ly / 1.7, 0.05, fp / 1.7))
    panel = mix(
        _rgb(0.07, 0.09, 0.16)[None, :] * (1.0 + 0.3 * hash01(np.floor(lx / 1.05), 0, 44))[:, None], 0.65, frames
    )
    out[array] = panel[array]
    return out


def _roof_unit(s: Surface, n: ValueNoise) -> np.ndarray:
    vents = 1.0 - 0.3 * lines(s.x / 0.8, 0.1, s.footprint / 0.8) * ~s.side
    return s.field("color") * (vents + 0.12 * n.fbm(s.x, s.y + s.z, 1.0, s.footprint, seed=45))[:, None]


def _car(s: Surface, n: ValueNoise) -> np.ndarray:
    body, roof_color = s.field("color"), s.field("color2")
    lx, _ = s.local_xy()
    half_l, height, kind = s.field("half_size")[:, 0], s.field("height"), s.field("variant").astype(int)
    glass = _rgb(0.08, 0.10, 0.12)[None, :]
    u = lx / half_l
    truck = kind == 2
    on_cabin = ~s.side & (s.z > 0.9 * height)
    windshield = ~truck & ~s.side & (((u > 0.1) & (u < 0.42)) | ((u > -0.62) & (u < -0.45)))
    side_windows = ~truck & s.side & (s.z > 0.66 * height) & (u > -0.5) & (u < 0.35)
    cab_glass = truck & (u > 0.72) & ((s.side & (s.z > height - 1.5)) | (~s.side & (u > 0.9)))
    out = np.where((truck & on_cabin & (u < 0.72))[:, None], roof_color, body)
    out = out * (1.0 + 0.08 * n.fbm(s.x, s.y, 0.6, s.footprint, seed=46))[:, None]
    out = np.where((windshield | side_windows | cab_glass)[:, None], glass, out)
    wheels = s.side & (s.z < 0.4)
    return np.where(wheels[:, None], _rgb(0.05, 0.05, 0.05)[None, :], out)


def _field(s: Surface, n: ValueNoise) -> np.ndarray:
    crops = np.array(
        [[0.36, 0.45, 0.20], [0.62, 0.56, 0.30], [0.45, 0.36, 0.26], [0.24, 0.36, 0.16], [0.52, 0.52, 0.28]],
        dtype=np.float32,
    )
    parcel = hash01(np.floor(s.x / 70.0 + 0.3 * np.floor(s.y / 55.0)), np.floor(s.y / 55.0), 47)
    base = crops[np.minimum((parcel * len(crops)).astype(int), len(crops) - 1)]
    rows = np.where(parcel > 0.5, s.x, s.y)
    furrow = 1.0 - 0.2 * stripes(rows / 1.5, 0.5, s.footprint / 1.5)
    return base * (furrow * (1.0 + 0.35 * n.fbm(s.x, s.y, 10.0, s.footprint, octaves=4, seed=48)))[:, None]


ALBEDO: dict[Material, Callable[[Surface, ValueNoise], np.ndarray]] = {
    Material.GRASS: _grass,
    Material.SOIL: _soil,
    Material.ASPHALT: _asphalt,
    Material.MARKING: lambda s, n: _marking(s, n, _rgb(0.88, 0.88, 0.86)),
    Material.MARKING_YELLOW: lambda s, n: _marking(s, n, _rgb(0.90, 0.74, 0.20)),
    Material.SIDEWALK: _sidewalk,
    Material.PLAZA: _plaza,
    Material.PARKING: _parking,
    Material.WATER: _water,
    Material.TREE: _tree,
    Material.HEDGE: _hedge,
    Material.WALL: _wall,
    Material.FLAT_ROOF: _flat_roof,
    Material.TILED_ROOF: _tiled_roof,
    Material.ROOF_UNIT: _roof_unit,
    Material.CAR: _car,
    Material.FIELD: _field,
    Material.CONCRETE: _concrete,
}
"""Albedo function per material."""
