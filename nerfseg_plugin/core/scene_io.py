"""Scene files on disk: transforms.json, label maps, point clouds (PLY, via plyfile) and atomic writes.

Every reader raises :class:`SceneFormatError` naming the file, so a broken scene fails before training starts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from nerfseg_plugin.core.atomic import write_atomic
from nerfseg_plugin.core.errors import SceneFormatError

SINGLE_CHANNEL_LABEL_MODES = ("L", "P")
"""8-bit single-channel PNG modes: grey values or palette indices are both class indices."""


def read_json(path: Path, what: str, missing: str = "") -> object:
    """Parse a JSON file the user or an earlier step wrote; a missing or malformed file is a
    :class:`SceneFormatError` naming it (``what`` says which file it is; ``missing`` adds why it is needed)."""
    if not path.is_file():
        raise SceneFormatError(path, f"{what} is missing{f' ({missing})' if missing else ''}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SceneFormatError(path, f"malformed JSON in {what}: {err}") from None


def load_transforms(data: Path) -> tuple[dict, Path]:
    """Read transforms.json (``data`` is the scene folder or the json itself); returns (meta, scene folder)."""
    path = data if data.suffix == ".json" else data / "transforms.json"
    if not data.exists():
        raise SceneFormatError(data, "scene folder does not exist")
    meta = read_json(path, "transforms.json")
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list) or not meta["frames"]:
        raise SceneFormatError(path, "needs a non-empty 'frames' list")
    return meta, path.parent


def read_label_map(path: Path) -> np.ndarray:
    """Load a label map as ``[H, W]`` uint8 class indices; refuses RGB or 16-bit maps with a clear error."""
    if not path.is_file():
        raise SceneFormatError(path, "label map is missing")
    try:
        with Image.open(path) as image:
            if image.mode not in SINGLE_CHANNEL_LABEL_MODES:
                raise SceneFormatError(
                    path,
                    f"label map has mode {image.mode}; expected a single-channel 8-bit PNG of class indices "
                    "(mode L or P). RGB colour-coded label maps must be converted to indices with classes.json.",
                )
            return np.array(image, dtype=np.uint8)  # a writable copy, not PIL's read-only buffer
    except OSError as err:
        raise SceneFormatError(path, f"unreadable label map: {err}") from None


def read_points(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``[N, 3]`` float64 x y z and ``[N, 3]`` uint8 red green blue (None when the PLY has no colours)."""
    from plyfile import PlyData

    try:
        vertex = PlyData.read(str(path))["vertex"]
        xyz = np.stack([vertex[axis] for axis in ("x", "y", "z")], axis=-1).astype(np.float64)
        names = vertex.data.dtype.names
        colours = (
            np.stack([vertex[c] for c in ("red", "green", "blue")], axis=-1).astype(np.uint8)
            if all(c in names for c in ("red", "green", "blue"))
            else None
        )
    except (OSError, KeyError, ValueError) as err:
        raise SceneFormatError(
            path, f"unreadable point cloud (need a PLY with x y z [red green blue]): {err}"
        ) from None
    return xyz, colours


def write_points(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> Path:
    """Binary little-endian PLY with float x y z and uchar red green blue (what ``read_points`` reads), atomically."""
    from plyfile import PlyData, PlyElement

    vertex = np.empty(len(xyz), dtype=[(k, "<f4") for k in "xyz"] + [(k, "u1") for k in ("red", "green", "blue")])
    xyz, rgb = np.asarray(xyz).reshape(-1, 3), np.asarray(rgb).reshape(-1, 3)
    for axis, name in enumerate("xyz"):
        vertex[name] = xyz[:, axis]
    for channel, name in enumerate(("red", "green", "blue")):
        vertex[name] = rgb[:, channel]
    ply = PlyData([PlyElement.describe(vertex, "vertex")], byte_order="<")
    return write_atomic(path, lambda temp: ply.write(str(temp)))
