"""``rsseg-export-geo``: map products of a trained rsseg run, the way a survey tool delivers them.

Writes into ``--output-dir``: ``labels.tif`` (class index, colour table, class names), ``confidence.tif``,
``orthophoto.tif`` (RGBA) and ``dsm.tif`` as Cloud-Optimized GeoTIFFs from true orthographic renders;
``classified.laz`` (LAS 1.4, ASPRS classes); ``classes.geojson`` (polygons per class); ``areas.json``/``areas.md``
and ``preview.png``. Coordinates are in the scene's CRS (transforms.json ``georeference``) or, without one, in a
local engineering frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.geo.frames import LocalUnits, MapFrame

PRODUCTS = ("labels.tif", "confidence.tif", "orthophoto.tif", "dsm.tif", "classified.laz", "classes.geojson")


@dataclass
class ExportGeo:
    """Export GIS products (COG orthomosaics, DSM, classified LAZ, class polygons and areas) of a trained run."""

    load_config: Path
    """config.yml of the training run (outputs/<scene>/<method>/<timestamp>/config.yml)."""
    output_dir: Path
    """Folder for the products (created; existing products there are replaced when the export completes)."""
    gsd: float | None = None
    """Ground sampling distance of the rasters in map units per pixel; default: the photos' median GSD at their
    image centres."""
    bounds: tuple[float, float, float, float] | None = None
    """Area to map as x_min y_min x_max y_max in map coordinates; default: the x/y extent of the scene's sparse
    points (without them, the cameras' ground footprints)."""
    tile_size: int = 512
    """Rendered tile side in pixels: bounds the memory of an export, whatever its area."""
    min_coverage: float = 0.5
    """Pixels where the model's accumulated opacity is below this are nodata."""
    min_photos: int = 2
    """Pixels whose surface point fewer than this many training photos frame are nodata: the survey's footprint,
    as photogrammetric tools bound their products (2: the minimum for a 3D point; 0 keeps every rendered pixel)."""
    local_units: LocalUnits = "scene"
    """Unit name of the local frame when the scene has no georeference ("metre" for metric scenes, such as
    rsseg-make-scene's)."""
    vertical_classes: tuple[str, ...] | None = None
    """Classes of vertical surfaces (walls, facades): a true orthophoto shows none of their area, so the label ortho
    gives each pixel its best other class (classified.laz keeps them). Default: classes.json's ``"vertical": true``,
    else by name (a word wall/walls/facade/facades); the flag with no names keeps every class in the ortho."""
    point_cloud: bool = True
    """Write classified.laz (Gaussians for splatting models, ortho surface samples for NeRF models)."""
    min_opacity: float = 0.05
    """Gaussians below this opacity are left out of the point cloud."""
    polygons: bool = True
    """Write classes.geojson (one simplified (multi)polygon per class)."""

    def main(self) -> dict:
        from nerfstudio.utils.eval_utils import eval_setup
        from nerfstudio.utils.rich_utils import CONSOLE

        if not self.load_config.is_file():
            raise SceneFormatError(self.load_config, "config.yml of a training run not found")
        if self.tile_size < 16:
            raise ValueError(f"--tile-size must be at least 16 px, got {self.tile_size}")
        if self.min_photos < 0:
            raise ValueError(f"--min-photos must be 0 or more, got {self.min_photos}")
        started = time.perf_counter()
        _, pipeline, _, _ = eval_setup(self.load_config, test_mode="test")
        return export_geo(pipeline, self, CONSOLE, started)


def _sparse_points_map(pipeline, frame: MapFrame) -> np.ndarray | None:
    outputs = pipeline.datamanager.train_dataparser_outputs
    points = outputs.metadata.get("points3D_xyz")
    if points is None or len(points) == 0:
        model = pipeline.model
        if not hasattr(model, "gauss_params"):
            return None
        points = model.gauss_params["means"]
    return frame.to_crs(points.detach().double().cpu().numpy())


def _cameras(pipeline) -> dict[str, np.ndarray]:
    cameras = pipeline.datamanager.train_dataset.cameras
    return {
        "camera_to_worlds": cameras.camera_to_worlds.double().cpu().numpy(),
        "fx": cameras.fx[:, 0].double().cpu().numpy(),
        "fy": cameras.fy[:, 0].double().cpu().numpy(),
        "cx": cameras.cx[:, 0].double().cpu().numpy(),
        "cy": cameras.cy[:, 0].double().cpu().numpy(),
        "widths": cameras.width[:, 0].double().cpu().numpy(),
        "heights": cameras.height[:, 0].double().cpu().numpy(),
    }


def export_geo(pipeline, options: ExportGeo, console, started: float | None = None) -> dict:
    """Render and write every product for a loaded pipeline; returns a summary (paths, grid, timings)."""
    from tqdm import tqdm

    from nerfseg_plugin.core.geometry import views_from_cameras
    from nerfseg_plugin.data.trained_frame import align_to_trained_frame
    from nerfseg_plugin.geo.asprs import asprs_codes
    from nerfseg_plugin.geo.footprints import PhotoFootprints
    from nerfseg_plugin.geo.frames import pipeline_map_frame
    from nerfseg_plugin.geo.grid import OrthoGrid, camera_ground_footprints, photo_gsd, robust_extent
    from nerfseg_plugin.geo.ortho_render import NerfOrthoRenderer, SplatOrthoRenderer, restrict_tile
    from nerfseg_plugin.geo.pointcloud import ClassifiedLasWriter, labeled_gaussians
    from nerfseg_plugin.geo.preview import write_preview
    from nerfseg_plugin.geo.rasters import LABELS, OrthoRasterWriter
    from nerfseg_plugin.geo.vectors import area_summary, vectorise_labels, write_areas, write_class_polygons
    from nerfseg_plugin.geo.vertical_classes import resolve_vertical_classes

    started = time.perf_counter() if started is None else started
    model = pipeline.model
    label_space = model.label_space
    run_dir = Path(options.load_config).parent
    if align_to_trained_frame(pipeline, run_dir):
        console.print(
            f"[bold yellow]The scene's frame changed since training (a georeference added or the poses edited?): "
            f"mapping in the frame of {run_dir / 'dataparser_transforms.json'}, which the checkpoint was trained in."
        )
    frame, scene_dir = pipeline_map_frame(pipeline, options.local_units)
    classes_json = scene_dir / pipeline.datamanager.dataparser.config.classes_file
    asprs = asprs_codes(label_space.names, classes_json)
    vertical = resolve_vertical_classes(options.vertical_classes, label_space.names, classes_json)
    if frame.is_local:
        console.print(
            f"[bold yellow]{scene_dir / 'transforms.json'} has no 'georeference': writing the products in the "
            f"scene's local frame (a local engineering CRS in {frame.units}s), not in a map projection."
        )
    points = _sparse_points_map(pipeline, frame)
    ground = float(np.median(points[:, 2])) if points is not None else 0.0
    cameras = _cameras(pipeline)
    gsd = (
        options.gsd if options.gsd is not None else photo_gsd(cameras["camera_to_worlds"], cameras["fx"], frame, ground)
    )
    if options.bounds is not None:
        bounds = options.bounds
    elif points is not None:
        bounds = robust_extent(points[:, :2])
    else:
        bounds = robust_extent(camera_ground_footprints(frame=frame, ground_height=ground, **cameras), 0.0)
    grid = OrthoGrid.from_bounds(bounds, gsd, options.tile_size)
    where = "the local frame" if frame.is_local else frame.crs
    if vertical:
        names = ", ".join(label_space.names[i] for i in vertical)
        console.print(f"Vertical classes left out of the label ortho (kept in the point cloud): {names}")
    console.print(
        f"Mapping {grid.width} x {grid.height} px at GSD {gsd:.4g} {frame.units} over "
        f"{tuple(round(v, 3) for v in grid.bounds)} ({grid.num_tiles} tiles) in {where}"
    )
    is_splat = hasattr(model, "gauss_params")
    if is_splat:
        renderer = SplatOrthoRenderer(model, frame, gsd, options.min_coverage, vertical=vertical)
    else:
        heights = points[:, 2] if points is not None else np.array([ground])
        low, high = np.quantile(heights, [0.005, 0.995])
        margin = 0.2 * (high - low) + 1.0
        renderer = NerfOrthoRenderer(
            model, frame, gsd, (low - margin, high + margin), options.min_coverage, vertical=vertical
        )

    train_cameras = pipeline.datamanager.train_dataset.cameras.to("cpu")
    footprints = PhotoFootprints(views_from_cameras(train_cameras), frame) if options.min_photos > 0 else None
    output_dir = options.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    rasters = OrthoRasterWriter(output_dir, grid, frame, label_space, asprs)
    las_path = output_dir / "classified.laz"
    offset = (grid.bounds[0], grid.bounds[1], min(ground, 0.0))
    codes = np.asarray(asprs, dtype=np.uint8)
    timings: dict[str, float] = {}
    try:
        las = ClassifiedLasWriter(las_path, offset, frame.wkt()) if options.point_cloud else None
        try:
            render_started = time.perf_counter()
            for tile in tqdm(grid.tiles(), total=grid.num_tiles, desc="ortho tiles", unit="tile"):
                result = renderer.render(tile)
                if footprints is not None:  # nodata beyond the survey's footprint
                    photos = footprints.count_tile(tile, gsd, result.height)
                    result = restrict_tile(result, photos >= options.min_photos)
                rasters.write(tile, result)
                if las is not None and not is_splat and result.valid.any():
                    rows, cols = np.nonzero(result.valid)
                    xyz = np.stack(
                        [
                            tile.x_min + (cols + 0.5) * gsd,
                            tile.y_max - (rows + 0.5) * gsd,
                            result.height[rows, cols].astype(np.float64),
                        ],
                        -1,
                    )
                    las.write(
                        xyz, result.rgb[rows, cols], codes[result.labels[rows, cols]], result.confidence[rows, cols]
                    )
            timings["render_s"] = time.perf_counter() - render_started
            if las is not None and is_splat:
                xyz, rgb8, classes, confidence = labeled_gaussians(model, frame, grid.bounds, options.min_opacity)
                las.write(xyz, rgb8, codes[classes], confidence)
        except BaseException:
            if las is not None:
                las.__exit__(RuntimeError, None, None)
            raise
        if las is not None:
            las.__exit__(None, None, None)
        cog_started = time.perf_counter()
        written = rasters.finish()
        timings["cog_s"] = time.perf_counter() - cog_started
    finally:
        rasters.discard()
    if las is not None:
        written.append(las_path)

    vector_started = time.perf_counter()
    areas = vectorise_labels(output_dir / LABELS, grid, label_space.num_classes, simplify=gsd)
    summary = area_summary(areas, grid, frame, label_space, asprs)
    written.extend(write_areas(summary, output_dir))
    if options.polygons:
        written.append(write_class_polygons(areas, frame, label_space, asprs, output_dir / "classes.geojson", gsd**2))
    title = f"{Path(str(options.load_config)).parent.name}: labels, GSD {gsd:.3g} " + (
        "(local frame)" if frame.is_local else frame.crs
    )
    written.append(write_preview(output_dir / LABELS, output_dir / "preview.png", label_space, frame.units, title))
    timings["vectors_areas_preview_s"] = time.perf_counter() - vector_started
    timings["total_s"] = time.perf_counter() - started
    console.print(f"[bold green]Wrote {len(written)} products to {output_dir} in {timings['total_s']:.1f} s")
    for path in written:
        console.print(f"  {path.name}")
    return {
        "written": [str(p) for p in written],
        "grid": {"bounds": list(grid.bounds), "gsd": gsd, "width": grid.width, "height": grid.height},
        "local_frame": frame.is_local,
        "crs": frame.crs,
        "points_written": None if las is None else las.count,
        "timings": timings,
        "areas": summary,
    }


def entrypoint() -> None:
    tyro.extras.set_accent_color("bright_yellow")
    tyro.cli(ExportGeo).main()


if __name__ == "__main__":
    entrypoint()
