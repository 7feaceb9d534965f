"""Streaming the ortho tiles into Cloud-Optimized GeoTIFFs.

Tiles are written window by window into tiled, compressed GeoTIFFs in a staging folder inside the output folder,
so memory is bounded by a tile, not the area. ``finish`` turns each into a COG (rio-cogeo: internal tiles,
overviews, deflate) under a temporary name and then renames it into place: an interrupted export leaves the staging
folder and no file with a final name.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nerfseg_plugin.core.label_space import LabelSpace
from nerfseg_plugin.geo.frames import MapFrame
from nerfseg_plugin.geo.grid import OrthoGrid, RasterTile
from nerfseg_plugin.geo.ortho_render import NO_CLASS, OrthoTile

STAGING_DIR = ".rsseg-export-geo.partial"
FLOAT_NODATA = -9999.0
LABELS, CONFIDENCE, ORTHOPHOTO, DSM = "labels.tif", "confidence.tif", "orthophoto.tif", "dsm.tif"


@dataclass(frozen=True)
class RasterSpec:
    name: str
    dtype: str
    count: int
    nodata: float | None
    overview_resampling: str
    description: tuple[str, ...]


SPECS = (
    RasterSpec(LABELS, "uint8", 1, NO_CLASS, "mode", ("class index",)),
    RasterSpec(CONFIDENCE, "float32", 1, FLOAT_NODATA, "average", ("class confidence (max probability)",)),
    RasterSpec(ORTHOPHOTO, "uint8", 4, None, "average", ("red", "green", "blue", "alpha")),
    RasterSpec(DSM, "float32", 1, FLOAT_NODATA, "average", ("surface height",)),
)


def atomic_write_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


class OrthoRasterWriter:
    """Staged tiled GeoTIFFs for labels, confidence, orthophoto (RGBA) and DSM; ``finish`` makes the COGs."""

    def __init__(self, output_dir: Path, grid: OrthoGrid, frame: MapFrame, label_space: LabelSpace, asprs: list[int]):
        import rasterio
        from rasterio.enums import ColorInterp

        self.output_dir, self.grid, self.label_space = output_dir, grid, label_space
        self.staging = output_dir / STAGING_DIR
        if self.staging.exists():
            shutil.rmtree(self.staging)  # left by an interrupted export
        self.staging.mkdir(parents=True)
        block = 256 if grid.tile_size % 256 == 0 else 16 * max(1, grid.tile_size // 16)
        base = {
            "driver": "GTiff",
            "width": grid.width,
            "height": grid.height,
            "crs": frame.rasterio_crs(),
            "transform": grid.affine(),
            "tiled": True,
            "blockxsize": block,
            "blockysize": block,
            "compress": "deflate",
            "BIGTIFF": "IF_SAFER",
        }
        names = label_space.names
        self.datasets = {}
        for spec in SPECS:
            dataset = rasterio.open(
                self.staging / spec.name, "w", **base, count=spec.count, dtype=spec.dtype, nodata=spec.nodata
            )
            for band, description in enumerate(spec.description, start=1):
                dataset.set_band_description(band, description)
            self.datasets[spec.name] = dataset
        labels = self.datasets[LABELS]
        colours = label_space.colors_uint8
        colormap = {i: (*map(int, colours[i]), 255) for i in range(label_space.num_classes)}
        colormap[NO_CLASS] = (0, 0, 0, 0)
        labels.write_colormap(1, colormap)
        labels.update_tags(
            CLASS_NAMES=json.dumps(names),
            ASPRS_CODES=json.dumps(asprs),
            NODATA_MEANING="no model content (coverage below threshold)",
        )
        labels.update_tags(1, **{f"CLASS_{i}": name for i, name in enumerate(names)})
        self.datasets[ORTHOPHOTO].colorinterp = [
            ColorInterp.red,
            ColorInterp.green,
            ColorInterp.blue,
            ColorInterp.alpha,
        ]
        self.datasets[DSM].update_tags(UNITS=frame.units, VERTICAL="map frame height axis (up)")

    def write(self, tile: RasterTile, result: OrthoTile) -> None:
        from rasterio.windows import Window

        window = Window(tile.col, tile.row, tile.width, tile.height)
        alpha = np.where(result.valid, 255, 0).astype(np.uint8)
        self.datasets[LABELS].write(result.labels, 1, window=window)
        self.datasets[CONFIDENCE].write(np.nan_to_num(result.confidence, nan=FLOAT_NODATA), 1, window=window)
        self.datasets[ORTHOPHOTO].write(
            np.concatenate([result.rgb, alpha[..., None]], -1).transpose(2, 0, 1), window=window
        )
        self.datasets[DSM].write(np.nan_to_num(result.height, nan=FLOAT_NODATA), 1, window=window)

    def close(self) -> None:
        for dataset in self.datasets.values():
            dataset.close()

    def finish(self) -> list[Path]:
        """COGs from the staged rasters, renamed into the output folder (``discard`` then removes the staging)."""
        from rio_cogeo.cogeo import cog_translate
        from rio_cogeo.profiles import cog_profiles

        self.close()
        written = []
        for spec in SPECS:
            final = self.output_dir / spec.name
            temporary = self.output_dir / f".{spec.name}.partial"
            profile = cog_profiles.get("deflate")
            profile.update(blockxsize=256, blockysize=256)
            cog_translate(
                self.staging / spec.name,
                temporary,
                profile,
                overview_resampling=spec.overview_resampling,
                in_memory=False,
                forward_band_tags=True,
                quiet=True,
                use_cog_driver=False,
            )
            os.replace(temporary, final)
            written.append(final)
        return written

    def discard(self) -> None:
        self.close()
        shutil.rmtree(self.staging, ignore_errors=True)
