"""The map frame of an export: model coordinates -> CRS (georeferenced) or the scene's local frame.

nerfstudio's dataparser maps the scene file's coordinates (transforms.json) to model coordinates with
``model = scale * T @ scene`` (``dataparser_transforms.json``; ``T`` also undoes an ``applied_transform`` the file
records). A scene georeferenced by ``"georeference": {"crs": ..., "scene_to_crs": 4x4}`` in transforms.json then
gives ``crs_from_model = scene_to_crs @ inverse(scale * T)`` (``nerfseg_plugin.data.georeference``). Without a
georeference the map frame is a local engineering frame: the scene's own coordinates turned so that the model's up
(+z, the ``aerial`` orientation) is up, in scene units. Every map frame has its third axis up, so an orthophoto
looks along -z.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from nerfseg_plugin.core.errors import SceneFormatError

GEOREFERENCE_KEY = "georeference"
LocalUnits = Literal["scene", "metre"]


def local_crs_wkt(units: LocalUnits) -> str:
    """WKT1 of a local engineering CRS (GDAL's LOCAL_CS, readable by QGIS, PDAL and CloudCompare)."""
    unit = 'UNIT["metre",1]' if units == "metre" else 'UNIT["scene unit",1]'
    return (
        f'LOCAL_CS["nerfseg scene local frame ({units} units)",LOCAL_DATUM["nerfseg scene",0],{unit},'
        'AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
    )


@dataclass(frozen=True)
class MapFrame:
    """Where exported coordinates live and how to get there from the model."""

    crs_from_model: np.ndarray
    """``[4, 4]`` affine map from model to map coordinates (x, y, height)."""
    crs: str
    """The CRS as the scene gives it (e.g. ``EPSG:32614``) or a LOCAL_CS WKT."""
    is_local: bool
    """True when the scene has no georeference (local engineering frame)."""
    units: str
    """Linear unit of the map frame (``metre`` or ``scene unit``)."""

    @property
    def model_from_crs(self) -> np.ndarray:
        return np.linalg.inv(self.crs_from_model)

    @property
    def metres_per_model_unit(self) -> float:
        """Uniform scale of the linear part (cube root of its determinant)."""
        return float(abs(np.linalg.det(self.crs_from_model[:3, :3])) ** (1.0 / 3.0))

    def to_crs(self, points: np.ndarray) -> np.ndarray:
        """``[N, 3]`` model points -> map coordinates (float64)."""
        points = np.asarray(points, dtype=np.float64)
        return points @ self.crs_from_model[:3, :3].T + self.crs_from_model[:3, 3]

    def to_model(self, points: np.ndarray) -> np.ndarray:
        inverse = self.model_from_crs
        return np.asarray(points, dtype=np.float64) @ inverse[:3, :3].T + inverse[:3, 3]

    def rasterio_crs(self):
        from rasterio.crs import CRS

        return CRS.from_wkt(self.crs) if self.is_local else CRS.from_user_input(self.crs)

    def wkt(self) -> str:
        """OGC WKT (WKT1 for GDAL-era readers) of the CRS, for the LAS WKT VLR."""
        if self.is_local:
            return self.crs
        return self.rasterio_crs().to_wkt()


def read_georeference(meta: dict, transforms_path: Path) -> tuple[str, np.ndarray] | None:
    """(crs, scene_to_crs) from transforms.json, or None; a malformed block, or a CRS without metric x/y, is a
    SceneFormatError."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    from nerfseg_plugin.data.georeference import SceneGeoreference

    georeference = SceneGeoreference.from_meta(meta, transforms_path)
    if georeference is None:
        return None
    try:
        crs = CRS.from_user_input(georeference.crs)
    except CRSError as err:
        raise SceneFormatError(
            transforms_path, f"'georeference.crs' {georeference.crs!r} is not a CRS: {err}"
        ) from None
    if not crs.is_projected:
        raise SceneFormatError(
            transforms_path,
            f"'georeference.crs' {georeference.crs!r} is not a projected CRS; orthophotos need metric x/y",
        )
    return georeference.crs, georeference.scene_to_crs


def map_frame(
    meta: dict,
    scene_dir: Path,
    transforms_path: Path,
    dataparser_transform: np.ndarray,
    dataparser_scale: float,
    local_units: LocalUnits = "scene",
) -> MapFrame:
    """The export's map frame for a scene and its run's dataparser transform."""
    from nerfseg_plugin.data.georeference import model_to_crs_matrix, nerfstudio_applied_transform

    applied = nerfstudio_applied_transform(meta, scene_dir)
    georeference = read_georeference(meta, transforms_path)
    if georeference is not None:
        crs, scene_to_crs = georeference
        model_to_crs = model_to_crs_matrix(scene_to_crs, dataparser_transform, dataparser_scale, applied)
        return MapFrame(model_to_crs, crs, False, "metre")
    # Local frame: the scene's coordinates, rotated by the dataparser's orientation only (no centring, no scale),
    # i.e. model / scale minus the centring (the scene -> model translation, in scene units).
    model_to_scene = model_to_crs_matrix(np.eye(4), dataparser_transform, dataparser_scale, applied)
    local_from_model = np.eye(4)
    local_from_model[:3, :3] /= dataparser_scale
    local_from_model[:3, 3] = np.linalg.inv(model_to_scene)[:3, 3] / -dataparser_scale
    units = "metre" if local_units == "metre" else "scene unit"
    return MapFrame(local_from_model, local_crs_wkt(local_units), True, units)


def pipeline_map_frame(pipeline, local_units: LocalUnits = "scene") -> tuple[MapFrame, Path]:
    """The map frame of a loaded pipeline (its scene's transforms.json and its dataparser transform)."""
    from nerfseg_plugin.core.scene_io import load_transforms

    data = Path(pipeline.datamanager.dataparser.config.data)
    meta, scene_dir = load_transforms(data)
    transforms_path = data if data.suffix == ".json" else scene_dir / "transforms.json"
    outputs = pipeline.datamanager.train_dataparser_outputs
    frame = map_frame(
        meta,
        scene_dir,
        transforms_path,
        outputs.dataparser_transform.detach().cpu().numpy(),
        float(outputs.dataparser_scale),
        local_units,
    )
    return frame, scene_dir
