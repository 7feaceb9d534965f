"""What view planning needs of a scene right after SfM: the cameras of transforms.json and the sparse points.

Cameras follow nerfstudio's convention (camera-to-world, OpenGL axes: x right, y up, looking down -z); intrinsics
may be per frame or file-level. Lens distortion is ignored: it moves points by a few pixels, which does not change
which surface a view covers. No image is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.core.scene_io import load_transforms, read_points

INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
PINHOLE_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "OPENCV", "SIMPLE_RADIAL", "RADIAL")
"""Perspective camera models (distortion, if any, is ignored); fisheye and equirectangular ones are refused."""


@dataclass(frozen=True)
class PlanningScene:
    """Cameras and sparse points of a scene (all arrays in the transforms.json world frame)."""

    transforms_path: Path
    file_paths: list[str]
    """Each frame's ``file_path`` exactly as transforms.json writes it."""
    camera_to_worlds: np.ndarray
    """``[V, 3, 4]`` float64."""
    intrinsics: np.ndarray
    """``[V, 6]`` float64: fx, fy, cx, cy, width, height."""
    points: np.ndarray
    """``[P, 3]`` float64 sparse points."""
    colours: np.ndarray | None
    """``[P, 3]`` uint8 point colours, or None when the PLY has none."""
    labeled: np.ndarray
    """``[V]`` bool: the frame already has a ``semantic_path``."""

    @property
    def num_views(self) -> int:
        return len(self.file_paths)


def _frame_camera(meta: dict, frame: dict, path: Path, index: int) -> tuple[np.ndarray, list[float]]:
    if not isinstance(frame, dict) or "file_path" not in frame or "transform_matrix" not in frame:
        raise SceneFormatError(path, f"frame {index} needs 'file_path' and 'transform_matrix'")
    model = frame.get("camera_model", meta.get("camera_model", "OPENCV"))
    if model not in PINHOLE_MODELS:
        raise SceneFormatError(path, f"frame {index} has camera model {model!r}; only perspective cameras work here")
    values = {key: frame.get(key, meta.get(key)) for key in INTRINSIC_KEYS}
    missing = [key for key, value in values.items() if value is None]
    if missing:
        raise SceneFormatError(path, f"frame {index} has no intrinsics {missing} (frame or file level)")
    matrix = np.asarray(frame["transform_matrix"], dtype=np.float64)
    if matrix.shape not in ((4, 4), (3, 4)) or not np.all(np.isfinite(matrix)):
        raise SceneFormatError(path, f"frame {index}: transform_matrix must be a finite 4x4 or 3x4 matrix")
    if abs(np.linalg.det(matrix[:3, :3])) < 1e-9:
        raise SceneFormatError(path, f"frame {index}: transform_matrix has a singular rotation")
    return matrix[:3, :4], [float(values[key]) for key in INTRINSIC_KEYS]


def read_scene_points(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Finite x y z (and red green blue when present) of the scene's sparse points; refuses a missing or empty file."""
    if not path.is_file():
        raise SceneFormatError(path, "point cloud (ply_file_path in transforms.json) not found")
    xyz, colours = read_points(path)
    if len(xyz) == 0:
        raise SceneFormatError(path, "point cloud has no points")
    finite = np.all(np.isfinite(xyz), axis=1)
    return xyz[finite], None if colours is None else colours[finite]


def load_planning_scene(data: Path) -> PlanningScene:
    """Read the cameras and the sparse points of ``data`` (scene folder or its transforms.json)."""
    meta, scene_dir = load_transforms(data)
    path = data if data.suffix == ".json" else scene_dir / "transforms.json"
    cameras = [_frame_camera(meta, frame, path, i) for i, frame in enumerate(meta["frames"])]
    ply = meta.get("ply_file_path")
    if not ply:
        raise SceneFormatError(path, "no 'ply_file_path': view planning needs the sparse points of SfM")
    points, colours = read_scene_points(scene_dir / ply)
    return PlanningScene(
        transforms_path=path,
        file_paths=[str(frame["file_path"]) for frame in meta["frames"]],
        camera_to_worlds=np.stack([c2w for c2w, _ in cameras]),
        intrinsics=np.array([values for _, values in cameras], dtype=np.float64),
        points=points,
        colours=colours,
        labeled=np.array(["semantic_path" in frame for frame in meta["frames"]]),
    )
