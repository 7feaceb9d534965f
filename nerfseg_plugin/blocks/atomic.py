"""Atomic writes of the block runs' files (see ``nerfseg_plugin.atomic``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nerfseg_plugin.atomic import write_atomic, write_json_atomic

__all__ = ["write_atomic", "write_json_atomic", "write_ply_atomic"]


def write_ply_atomic(path: Path, points: np.ndarray, colors: np.ndarray) -> Path:
    """x y z red green blue vertices, as the rsseg-data parser reads them."""
    from plyfile import PlyData, PlyElement

    vertex = np.empty(len(points), dtype=[(k, "f4") for k in "xyz"] + [(k, "u1") for k in ("red", "green", "blue")])
    for axis, name in enumerate("xyz"):
        vertex[name] = points[:, axis]
    for channel, name in enumerate(("red", "green", "blue")):
        vertex[name] = colors[:, channel]
    return write_atomic(path, lambda temp: PlyData([PlyElement.describe(vertex, "vertex")]).write(str(temp)))
