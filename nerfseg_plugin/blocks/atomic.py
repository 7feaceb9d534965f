"""Atomic writes (temp file in the same folder, then os.replace): later steps trust these files."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np


def write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(temp_path)`` and move the result onto ``path`` only once it is complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temp))
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: Path, data) -> Path:
    return write_atomic(path, lambda temp: temp.write_text(json.dumps(data, indent=2), encoding="utf-8"))


def write_ply_atomic(path: Path, points: np.ndarray, colors: np.ndarray) -> Path:
    """x y z red green blue vertices, as the rsseg-data parser reads them."""
    from plyfile import PlyData, PlyElement

    vertex = np.empty(len(points), dtype=[(k, "f4") for k in "xyz"] + [(k, "u1") for k in ("red", "green", "blue")])
    for axis, name in enumerate("xyz"):
        vertex[name] = points[:, axis]
    for channel, name in enumerate(("red", "green", "blue")):
        vertex[name] = colors[:, channel]
    return write_atomic(path, lambda temp: PlyData([PlyElement.describe(vertex, "vertex")]).write(str(temp)))
