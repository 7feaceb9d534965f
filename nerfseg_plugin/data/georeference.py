"""A scene's georeference through training: from model (dataparser) coordinates back to the CRS.

``transforms.json`` may carry ``"georeference": {"crs", "scene_to_crs", ...}`` (written by rsseg-process-data), where
``scene_to_crs`` maps the frames' transform_matrix space to CRS easting/northing/height. rsseg-data then orients,
centres and scales the scene. nerfstudio records ``p_model = scale * (transform @ p_original)`` where
``p_scene = applied @ p_original`` and
``applied`` is transforms.json's ``applied_transform`` (or, for a scene with colmap/sparse/0 and none recorded,
nerfstudio's assumed axis swap; rsseg-process-data records the identity). The run's ``dataparser_transforms.json``
keeps that meaning ("transform", "scale"). ``GeoDataparserOutputs`` adds a
``"georeference"`` key to that file with the composed ``model_to_crs``, so exporters need only the run folder::

    crs, model_to_crs = model_to_crs(run_dir)
    crs_xyz = points_model @ model_to_crs[:3, :3].T + model_to_crs[:3, 3]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs

from nerfseg_plugin.core.errors import SceneFormatError

GEOREFERENCE_KEY = "georeference"
DATAPARSER_TRANSFORMS_FILE = "dataparser_transforms.json"


@dataclass(frozen=True)
class SceneGeoreference:
    """The transforms.json block: ``crs`` (e.g. "EPSG:32614") and ``scene_to_crs`` (4x4)."""

    crs: str
    scene_to_crs: np.ndarray
    record: dict
    """The whole block as written (source, num_inliers, residual_rms_m, ...)."""

    @classmethod
    def from_meta(cls, meta: dict, transforms_path: Path) -> SceneGeoreference | None:
        block = meta.get(GEOREFERENCE_KEY)
        if block is None:
            return None
        if not isinstance(block, dict) or not isinstance(block.get("crs"), str) or not block["crs"]:
            raise SceneFormatError(transforms_path, "'georeference' needs a 'crs' string, e.g. \"EPSG:32614\"")
        try:
            matrix = np.asarray(block.get("scene_to_crs"), dtype=np.float64)
        except (TypeError, ValueError):
            matrix = np.zeros(0)
        if matrix.shape != (4, 4) or not np.isfinite(matrix).all() or not np.allclose(matrix[3], [0, 0, 0, 1]):
            raise SceneFormatError(transforms_path, "'georeference.scene_to_crs' must be a finite 4x4 affine matrix")
        if abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
            raise SceneFormatError(transforms_path, "'georeference.scene_to_crs' is singular")
        return cls(block["crs"], matrix, dict(block))


def scene_to_model_matrix(dataparser_transform: np.ndarray, scale: float) -> np.ndarray:
    """4x4 of nerfstudio's ``p -> scale * (transform @ p)`` (scene file -> model coordinates)."""
    forward = np.eye(4)
    forward[:3, :4] = np.asarray(dataparser_transform, dtype=np.float64)[:3, :4]
    forward[:3] *= scale
    return forward


def model_to_crs_matrix(
    scene_to_crs: np.ndarray, dataparser_transform: np.ndarray, scale: float, applied: np.ndarray | None = None
) -> np.ndarray:
    """``scene_to_crs @ applied @ inverse(p -> scale * (transform @ p))``: model -> CRS coordinates (4x4).
    ``applied``: the scene's applied_transform as nerfstudio read it (4x4; identity when None)."""
    forward = scene_to_model_matrix(dataparser_transform, scale)
    applied = np.eye(4) if applied is None else np.asarray(applied, dtype=np.float64)
    return np.asarray(scene_to_crs, dtype=np.float64) @ applied @ np.linalg.inv(forward)


def nerfstudio_applied_transform(meta: dict, scene_dir: Path) -> np.ndarray:
    """The applied_transform nerfstudio's parser assumes for this transforms.json (4x4)."""
    applied = np.eye(4)
    if "applied_transform" in meta:
        applied[:3] = np.asarray(meta["applied_transform"], dtype=np.float64)[:3]
    elif (scene_dir / "colmap" / "sparse" / "0").exists():
        applied[:3] = [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, -1, 0]]  # nerfstudio_dataparser's legacy default
    return applied


@dataclass
class GeoDataparserOutputs(DataparserOutputs):
    """DataparserOutputs that also writes the georeference (with ``model_to_crs``) into dataparser_transforms.json.

    nerfstudio's readers use only "transform" and "scale", which keep their meaning."""

    georeference: SceneGeoreference | None = None
    applied_transform: np.ndarray | None = None
    """4x4 applied_transform nerfstudio's parser used (see nerfstudio_applied_transform)."""

    def model_to_crs(self) -> tuple[str, np.ndarray]:
        if self.georeference is None:
            raise ValueError("this scene has no georeference (transforms.json has no 'georeference' block)")
        matrix = model_to_crs_matrix(
            self.georeference.scene_to_crs,
            self.dataparser_transform.numpy(),
            float(self.dataparser_scale),
            self.applied_transform,
        )
        return self.georeference.crs, matrix

    def save_dataparser_transform(self, path: Path) -> None:
        super().save_dataparser_transform(path)
        if self.georeference is None:
            return
        data = json.loads(path.read_text(encoding="utf-8"))
        crs, matrix = self.model_to_crs()
        data[GEOREFERENCE_KEY] = {**self.georeference.record, "crs": crs, "model_to_crs": matrix.tolist()}
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(json.dumps(data, indent=4), encoding="utf-8")
        temporary.replace(path)


def model_to_crs(source: Path | DataparserOutputs) -> tuple[str, np.ndarray]:
    """(CRS, 4x4 model -> CRS matrix) of a run folder (its dataparser_transforms.json, or that file itself) or of
    dataparser outputs. Raises ValueError when the scene was not georeferenced."""
    if isinstance(source, GeoDataparserOutputs):
        return source.model_to_crs()
    if isinstance(source, DataparserOutputs):
        raise ValueError("these dataparser outputs carry no georeference (not parsed by rsseg-data from a geo scene)")
    path = Path(source)
    if path.is_dir():
        path = path / DATAPARSER_TRANSFORMS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read the run's dataparser transforms ({err})") from None
    block = data.get(GEOREFERENCE_KEY)
    if not isinstance(block, dict) or "model_to_crs" not in block:
        raise ValueError(f"{path}: no georeference (the scene's transforms.json had no 'georeference' block)")
    return block["crs"], np.asarray(block["model_to_crs"], dtype=np.float64)
