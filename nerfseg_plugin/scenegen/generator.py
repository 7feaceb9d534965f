"""Synthetic aerial scenes: a procedural town seen by a drone, with exact per-pixel labels and depth."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from nerfseg_plugin.core.geometry import Intrinsics
from nerfseg_plugin.core.scene_io import write_points
from nerfseg_plugin.scenegen.cameras import FlightPattern, flight_path
from nerfseg_plugin.scenegen.geotag import GeotagOrigin, make_geotags, write_geotag_truth
from nerfseg_plugin.scenegen.layout import STYLE_BUILDERS, TownStyle, build_town
from nerfseg_plugin.scenegen.materials import IGNORE_LABEL
from nerfseg_plugin.scenegen.noise import ValueNoise
from nerfseg_plugin.scenegen.ortho_truth import write_ortho_truth
from nerfseg_plugin.scenegen.shading import Lighting, Renderer
from nerfseg_plugin.scenegen.writer import (
    DEPTH_DIR,
    IMAGES_DIR,
    POINTS_FILE,
    SEMANTICS_DIR,
    check_output,
    frame_stem,
    prepare_output,
    write_image,
    write_label_map,
    write_transforms,
)


@dataclass
class SceneGenConfig:
    """Generate a synthetic drone survey of a procedural town in the project's scene format."""

    output: Path
    """Folder to write the scene to (created; must be empty unless --overwrite)."""
    seed: int = 0
    """Random seed: the same seed and settings give byte-identical output."""
    style: TownStyle = "downtown"
    """Town layout: downtown (grid blocks, towers), suburb (curvy streets, houses, gardens), riverside (river,
    bridge, mixed buildings) or industrial (warehouses, big parking lots, few trees)."""
    num_views: int = 64
    """Number of camera views along the flight path."""
    width: int = 256
    """Image width in pixels."""
    height: int = 256
    """Image height in pixels."""
    num_labeled: int = 3
    """Views whose label maps are training supervision (``semantic_path``), spread evenly along the path; the
    other views' label maps are evaluation ground truth (``semantic_eval_path``)."""
    labeled_views: tuple[int, ...] = ()
    """Explicit labeled view indices (0-based, along the flight); overrides num_labeled's even spread. The scene
    itself does not depend on them, so the same seed regenerates it with other labeled views."""
    image_format: Literal["png", "jpg"] = "png"
    """Image file format."""
    jpeg_quality: int = 90
    """JPEG quality (1-100) when ``image_format`` is jpg."""
    save_depth: bool = False
    """Also write each view's float32 z-depth to ``depth/<stem>.npy`` (for tests; not part of the scene format)."""
    overwrite: bool = False
    """Allow writing into a non-empty folder, replacing a previous scene there."""
    flight: FlightPattern = "orbit"
    """Flight pattern: orbit (circle around the town looking at its centre), lawnmower (back-and-forth strips) or
    grid (serpentine nadir survey lines, about square, sized by --overlap)."""
    town_size: float = 120.0
    """Side of the built-up square in metres."""
    altitude: float = 0.75
    """Flight altitude as a fraction of ``town_size`` (orbit and lawnmower; grid derives it from --overlap)."""
    tilt_deg: float = 35.0
    """Camera tilt from nadir in degrees (orbit and lawnmower; grid cameras look straight down)."""
    overlap: float = 0.7
    """Grid flight only: front and side overlap of neighbouring footprints on the ground. Cameras look straight
    down (tilt ignored), image x along the flight; the altitude follows from the overlap and the line spacing
    (footprint = spacing / (1 - overlap)) but never goes below 1.5x the tallest building, where the overlap then
    comes out higher than asked."""
    fov_deg: float = 60.0
    """Horizontal field of view in degrees."""
    jitter: float = 1.0
    """Scale of the random jitter in altitude, heading, aim and roll (0 for a perfect path)."""
    num_points: int = 12000
    """Points in the SfM-like initial point cloud (``sparse_pc.ply``)."""
    antialias: bool = True
    """Supersample colours 2x2 at label and depth edges (labels always come from the pixel centre)."""
    show_progress: bool = True
    """Show a progress bar while rendering."""
    ortho_truth: bool = False
    """Also write ``ortho_truth/``: the town's exact top-down label map and surface heights (straight-down rays
    over the town grid, see ``ortho_truth.py``), the reference for orthographic exports such as rsseg-export-geo."""
    ortho_truth_gsd: float = 0.25
    """Cell size of the ortho-truth rasters in metres."""
    geotag: bool = False
    """Write EXIF GPS (camera centre plus --gps-noise-m), camera and capture time into each JPEG, with the world
    placed at --origin-lat/--origin-lon in its UTM zone; the exact mapping goes to geotag_truth.json. Needs jpg."""
    gps_noise_m: float = 3.0
    """Standard deviation of the GPS error per axis in metres (consumer drone GPS: 1-5 m)."""
    origin_lat: float = 40.7128
    """Latitude (WGS 84 degrees) of the world origin when geotagging."""
    origin_lon: float = -74.0060
    """Longitude (WGS 84 degrees) of the world origin when geotagging."""
    origin_alt: float = 100.0
    """Altitude in metres of the world origin (the ground) when geotagging."""

    def validate(self) -> None:
        """Raise ValueError naming the first setting that cannot work."""
        checks = [
            (self.num_views >= 1, f"num_views must be at least 1, got {self.num_views}"),
            (self.num_labeled >= 1, f"num_labeled must be at least 1, got {self.num_labeled}"),
            (
                self.num_labeled <= self.num_views,
                f"num_labeled ({self.num_labeled}) cannot exceed num_views ({self.num_views})",
            ),
            (self.width >= 16 and self.height >= 16, f"images must be at least 16x16, got {self.width}x{self.height}"),
            (self.width <= 4096 and self.height <= 4096, f"images larger than 4096 px: {self.width}x{self.height}"),
            (1 <= self.jpeg_quality <= 100, f"jpeg_quality must be in 1..100, got {self.jpeg_quality}"),
            (self.style in STYLE_BUILDERS, f"unknown style {self.style!r}; choose one of {sorted(STYLE_BUILDERS)}"),
            (self.image_format in ("png", "jpg"), f"image_format must be png or jpg, got {self.image_format!r}"),
            (40.0 <= self.town_size <= 400.0, f"town_size must be in 40..400 metres, got {self.town_size}"),
            (0.2 <= self.altitude <= 3.0, f"altitude must be in 0.2..3 (x town_size), got {self.altitude}"),
            (5.0 <= self.tilt_deg <= 60.0, f"tilt_deg must be in 5..60, got {self.tilt_deg}"),
            (10.0 <= self.fov_deg <= 120.0, f"fov_deg must be in 10..120, got {self.fov_deg}"),
            (self.jitter >= 0.0, f"jitter must be non-negative, got {self.jitter}"),
            (0.0 <= self.overlap <= 0.95, f"overlap must be in 0..0.95, got {self.overlap}"),
            (
                all(0 <= i < self.num_views for i in self.labeled_views),
                f"labeled_views {list(self.labeled_views)} must be view indices in 0..{self.num_views - 1}",
            ),
            (
                len(set(self.labeled_views)) == len(self.labeled_views),
                f"labeled_views {list(self.labeled_views)} has duplicates",
            ),
            (self.num_points >= 1, f"num_points must be at least 1, got {self.num_points}"),
            (not self.geotag or self.image_format == "jpg", "geotag needs --image-format jpg (EXIF lives in JPEGs)"),
            (self.gps_noise_m >= 0.0, f"gps_noise_m must be non-negative, got {self.gps_noise_m}"),
            (-80.0 <= self.origin_lat <= 84.0, f"origin_lat must be in -80..84 (UTM), got {self.origin_lat}"),
            (-180.0 <= self.origin_lon <= 180.0, f"origin_lon must be in -180..180, got {self.origin_lon}"),
            (0.02 <= self.ortho_truth_gsd <= 10.0, f"ortho_truth_gsd must be in 0.02..10, got {self.ortho_truth_gsd}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def labeled_indices(num_views: int, num_labeled: int) -> list[int]:
    """Evenly spread view indices (centres of equal stretches of the path)."""
    return [int((i + 0.5) * num_views / num_labeled) for i in range(num_labeled)]


def generate_scene(config: SceneGenConfig) -> Path:
    """Build the town, fly the cameras, render and write the scene; returns the scene folder."""
    config.validate()
    folder = Path(config.output)
    check_output(folder, config.overwrite)
    # Independent streams, so that e.g. changing the number of views leaves the town itself unchanged.
    town_seed, camera_seed, light_seed, texture_seed, point_seed = np.random.SeedSequence(config.seed).spawn(5)
    grid = build_town(config.style, np.random.default_rng(town_seed), config.town_size)
    renderer = Renderer(
        grid, Lighting.random(np.random.default_rng(light_seed)), ValueNoise(np.random.default_rng(texture_seed))
    )
    intrinsics = Intrinsics.from_fov(config.width, config.height, config.fov_deg)
    poses = flight_path(
        config.flight,
        config.num_views,
        config.town_size,
        config.altitude * config.town_size,
        config.tilt_deg,
        config.jitter,
        np.random.default_rng(camera_seed),
        intrinsics=intrinsics,
        overlap=config.overlap,
        tallest=renderer.tracer.max_height,
    )
    lowest_camera = min(float(c2w[2, 3]) for c2w in poses)
    if lowest_camera <= renderer.tracer.max_height + 2.0:
        raise ValueError(
            f"altitude {config.altitude} puts cameras as low as {lowest_camera:.0f} m, but this town's buildings and "
            f"trees reach {renderer.tracer.max_height:.0f} m; raise --altitude"
        )
    geotags, geotag_truth = (
        make_geotags(
            poses,
            GeotagOrigin(config.origin_lat, config.origin_lon, config.origin_alt),
            config.gps_noise_m,
            config.fov_deg,
            config.seed,
        )
        if config.geotag
        else (None, None)
    )
    prepare_output(folder, config.overwrite, with_depth=config.save_depth)
    point_rng = np.random.default_rng(point_seed)
    point_views = set(np.linspace(0, config.num_views - 1, min(config.num_views, 12)).round().astype(int).tolist())
    points_per_view = int(np.ceil(config.num_points / len(point_views)))
    suffix = ".jpg" if config.image_format == "jpg" else ".png"
    cloud_xyz, cloud_rgb = [], []
    # Views are rendered in batches of about 2^18 rays: big enough to amortise the tracer's per-step overhead.
    batch = max(1, (1 << 18) // (config.width * config.height))
    with tqdm(total=len(poses), desc="rendering views", unit="view", disable=not config.show_progress) as progress:
        for first in range(0, len(poses), batch):
            views = renderer.render(poses[first : first + batch], intrinsics, antialias=config.antialias)
            for index, (rgb, labels, depth) in enumerate(views, start=first):
                stem = frame_stem(index)
                exif = geotags[index] if geotags is not None else None
                write_image(folder / IMAGES_DIR / f"{stem}{suffix}", rgb, config.jpeg_quality, exif)
                write_label_map(folder / SEMANTICS_DIR / f"{stem}.png", labels)
                if config.save_depth:
                    np.save(folder / DEPTH_DIR / f"{stem}.npy", depth)
                if index in point_views:
                    c2w = poses[index]
                    xyz, colors = _sample_points(c2w, intrinsics, rgb, labels, depth, points_per_view, point_rng)
                    cloud_xyz.append(xyz)
                    cloud_rgb.append(colors)
                progress.update()
    labeled = config.labeled_views or labeled_indices(config.num_views, config.num_labeled)
    write_transforms(folder, intrinsics, poses, suffix, set(labeled))
    xyz, colors = np.concatenate(cloud_xyz)[: config.num_points], np.concatenate(cloud_rgb)[: config.num_points]
    write_points(folder / POINTS_FILE, xyz, colors)
    if geotag_truth is not None:
        write_geotag_truth(folder, geotag_truth)
    if config.ortho_truth:
        write_ortho_truth(folder, renderer.tracer, config.ortho_truth_gsd)
    return folder


def _sample_points(
    c2w: np.ndarray,
    intrinsics: Intrinsics,
    rgb: np.ndarray,
    labels: np.ndarray,
    depth: np.ndarray,
    count: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Back-project random surface pixels with their depth plus SfM-like noise (0.1% of the depth)."""
    valid = np.flatnonzero((labels.reshape(-1) != IGNORE_LABEL) & np.isfinite(depth.reshape(-1)))
    if valid.size == 0:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
    chosen = rng.choice(valid, size=min(count, valid.size), replace=False)
    rows, cols = np.divmod(chosen, intrinsics.width)
    z = depth.reshape(-1)[chosen].astype(np.float64)
    camera = np.stack(
        [
            (cols + 0.5 - intrinsics.cx) / intrinsics.fx * z,
            -(rows + 0.5 - intrinsics.cy) / intrinsics.fy * z,
            -z,
        ],
        -1,
    )
    world = camera @ c2w[:3, :3].T + c2w[:3, 3]
    world += rng.normal(0.0, 0.001, world.shape) * z[:, None]
    return world.astype(np.float32), rgb.reshape(-1, 3)[chosen]
