"""Exact top-down truth of a generated town: orthographic label and height rasters (``--ortho-truth``).

Straight-down rays (one per raster cell centre) are cast into the same heightfield as the camera views, so the
labels are what a true orthophoto of the town shows and the heights are its digital surface model (the ground is
z = 0). Rows run north to south and columns west to east, with pixel-is-area geometry: cell (row, col) covers
``x_min + [col, col + 1) * gsd`` and ``y_max - [row + 1, row) * gsd`` in the scene's world frame (metres, z up).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from nerfseg_plugin.scenegen.materials import IGNORE_LABEL, MATERIAL_TO_CLASS, NO_MATERIAL
from nerfseg_plugin.scenegen.raycast import HeightfieldTracer

ORTHO_TRUTH_DIR = "ortho_truth"
LABELS_FILE, HEIGHT_FILE, GRID_FILE = "labels.png", "height.npy", "grid.json"
_RAYS_PER_BATCH = 1 << 18


def render_ortho_truth(
    tracer: HeightfieldTracer, x_min: float, y_max: float, width: int, height: int, gsd: float
) -> tuple[np.ndarray, np.ndarray]:
    """``[height, width]`` uint8 class labels (255 where nothing was hit) and float32 surface heights (NaN there)."""
    cols = x_min + (np.arange(width) + 0.5) * gsd
    rows = y_max - (np.arange(height) + 0.5) * gsd
    xx, yy = np.meshgrid(cols, rows)
    start_z = tracer.max_height + 10.0
    labels = np.empty(width * height, dtype=np.uint8)
    heights = np.empty(width * height, dtype=np.float32)
    for first in range(0, width * height, _RAYS_PER_BATCH):
        x, y = xx.reshape(-1)[first : first + _RAYS_PER_BATCH], yy.reshape(-1)[first : first + _RAYS_PER_BATCH]
        origins = np.stack([x, y, np.full_like(x, start_z)], -1)
        directions = np.broadcast_to(np.array([0.0, 0.0, -1.0]), origins.shape)
        hits = tracer.trace(origins, directions)
        stop = first + len(x)
        missed = hits.material == NO_MATERIAL
        labels[first:stop] = np.where(missed, IGNORE_LABEL, MATERIAL_TO_CLASS[hits.material])
        heights[first:stop] = np.where(missed, np.nan, hits.position[:, 2])
    return labels.reshape(height, width), heights.reshape(height, width)


def write_ortho_truth(folder: Path, tracer: HeightfieldTracer, gsd: float) -> Path:
    """Rasters over the town grid's square into ``folder/ortho_truth/``; returns that folder.

    ``grid.json`` gives the raster's georeferencing in the scene frame (x_min, y_max, gsd, width, height).
    """
    half = tracer.grid.half_extent
    size = int(np.ceil(2.0 * half / gsd))
    labels, heights = render_ortho_truth(tracer, -half, half, size, size, gsd)
    out = folder / ORTHO_TRUTH_DIR
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels).save(out / LABELS_FILE)
    np.save(out / HEIGHT_FILE, heights)
    grid = {
        "frame": "scene",
        "units": "metre",
        "x_min": -half,
        "y_max": half,
        "gsd": gsd,
        "width": size,
        "height": size,
        "ignore_index": IGNORE_LABEL,
        "labels": LABELS_FILE,
        "height_map": HEIGHT_FILE,
    }
    # grid.json is what a reader trusts to find the rasters: written last, atomically.
    temporary = out / f".{GRID_FILE}.tmp"
    temporary.write_text(json.dumps(grid, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, out / GRID_FILE)
    return out


def load_ortho_truth(folder: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Labels, heights and the grid description written by :func:`write_ortho_truth` (``folder`` is the scene)."""
    out = Path(folder) / ORTHO_TRUTH_DIR
    grid = json.loads((out / GRID_FILE).read_text(encoding="utf-8"))
    return np.asarray(Image.open(out / grid["labels"])), np.load(out / grid["height_map"]), grid
