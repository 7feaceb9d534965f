"""Class polygons and areas from the label orthomosaic.

The label raster is read tile by tile; each tile is polygonised with ``rasterio.features.shapes``, the pieces of a
class are merged across tile seams (``shapely.unary_union``) and simplified by one GSD. Areas come from pixel counts
(exact for the raster); the polygons carry their own area too. The vector file is GeoJSON with the legacy ``crs``
member, which GDAL/QGIS honour for projected CRSs (RFC 7946 readers assume WGS 84 and would misplace them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nerfseg_plugin.core.label_space import LabelSpace
from nerfseg_plugin.geo.frames import MapFrame
from nerfseg_plugin.geo.grid import OrthoGrid
from nerfseg_plugin.geo.ortho_render import NO_CLASS
from nerfseg_plugin.geo.rasters import atomic_write_text


@dataclass
class ClassAreas:
    """Per-class pixel counts and polygons of a label raster."""

    pixel_counts: np.ndarray
    polygons: dict[int, object] = field(default_factory=dict)
    """class index -> shapely (Multi)Polygon, simplified."""


def vectorise_labels(labels_tif: Path, grid: OrthoGrid, num_classes: int, simplify: float) -> ClassAreas:
    import rasterio
    import shapely
    from rasterio.features import shapes
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    counts = np.zeros(256, dtype=np.int64)
    pieces: dict[int, list] = {}
    with rasterio.open(labels_tif) as dataset:
        for tile in grid.tiles():
            window = Window(tile.col, tile.row, tile.width, tile.height)
            labels = dataset.read(1, window=window)
            counts += np.bincount(labels.reshape(-1), minlength=256)
            mask = labels != NO_CLASS
            if not mask.any():
                continue
            for geometry, value in shapes(labels, mask=mask, transform=window_transform(window, dataset.transform)):
                pieces.setdefault(int(value), []).append(shapely.geometry.shape(geometry))
    areas = ClassAreas(counts[:num_classes])
    for index, parts in pieces.items():
        merged = shapely.unary_union(parts)
        areas.polygons[index] = shapely.make_valid(merged.simplify(simplify, preserve_topology=True))
    return areas


def area_summary(areas: ClassAreas, grid: OrthoGrid, frame: MapFrame, label_space: LabelSpace, asprs: list[int]):
    pixel_area = grid.gsd**2
    mapped = int(areas.pixel_counts.sum())
    total_pixels = grid.width * grid.height
    unit = "m²" if frame.units == "metre" else "scene unit²"
    classes = []
    for index, name in enumerate(label_space.names):
        count = int(areas.pixel_counts[index])
        classes.append(
            {
                "index": index,
                "name": name,
                "asprs": asprs[index],
                "pixels": count,
                "area": count * pixel_area,
                "share_of_mapped": count / mapped if mapped else 0.0,
            }
        )
    return {
        "crs": frame.crs if not frame.is_local else "local engineering frame",
        "local_frame": frame.is_local,
        "area_unit": unit,
        "gsd": grid.gsd,
        "bounds": list(grid.bounds),
        "raster_area": total_pixels * pixel_area,
        "mapped_area": mapped * pixel_area,
        "unmapped_area": (total_pixels - mapped) * pixel_area,
        "classes": classes,
    }


def write_areas(summary: dict, output_dir: Path) -> tuple[Path, Path]:
    json_path, md_path = output_dir / "areas.json", output_dir / "areas.md"
    atomic_write_text(json_path, json.dumps(summary, indent=2) + "\n")
    unit = summary["area_unit"]
    lines = [
        "# Class areas",
        "",
        f"CRS: {summary['crs']}; GSD {summary['gsd']:.4g}; mapped area {summary['mapped_area']:.1f} {unit} "
        f"of {summary['raster_area']:.1f} {unit}.",
        "",
        f"| class | ASPRS | area ({unit}) | share of mapped area |",
        "|---|---:|---:|---:|",
    ]
    for entry in summary["classes"]:
        lines.append(f"| {entry['name']} | {entry['asprs']} | {entry['area']:.1f} | {entry['share_of_mapped']:.1%} |")
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    return json_path, md_path


def write_class_polygons(
    areas: ClassAreas, frame: MapFrame, label_space: LabelSpace, asprs: list[int], path: Path, pixel_area: float
) -> Path:
    import shapely

    features = []
    colours = label_space.colors_uint8
    for index, geometry in sorted(areas.polygons.items()):
        if geometry.is_empty or index >= label_space.num_classes:
            continue
        features.append(
            {
                "type": "Feature",
                "properties": {
                    "class_index": index,
                    "class_name": label_space.names[index],
                    "asprs": asprs[index],
                    "colour": "#{:02x}{:02x}{:02x}".format(*map(int, colours[index])),
                    "area": float(geometry.area),
                    "raster_area": float(areas.pixel_counts[index] * pixel_area),
                    "parts": int(shapely.get_num_geometries(geometry)),
                },
                "geometry": shapely.geometry.mapping(geometry),
            }
        )
    collection: dict = {"type": "FeatureCollection", "name": "classes", "features": features}
    if not frame.is_local:
        epsg = frame.rasterio_crs().to_epsg()
        if epsg is not None:
            collection["crs"] = {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{epsg}"}}
    atomic_write_text(path, json.dumps(collection))
    return path
