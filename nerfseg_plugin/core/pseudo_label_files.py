"""File layout of a pseudo-label set: ``SCENE/pseudo_labels/<method>/``.

Per source image stem: ``<stem>.png`` (8-bit class indices, 255 = no pseudo-label), ``<stem>_confidence.png``
(8-bit, confidence x 255) and ``<stem>_boundary.png`` (8-bit, 255 inside the boundary mask B where the
pseudo-label applies). Writers and the training-time reader share these names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from nerfseg_plugin.core.scene_io import read_label_map

PSEUDO_LABEL_ROOT = "pseudo_labels"


def pseudo_label_paths(directory: Path, stem: str) -> tuple[Path, Path, Path]:
    """(labels, confidence, boundary) file paths for one image stem."""
    return directory / f"{stem}.png", directory / f"{stem}_confidence.png", directory / f"{stem}_boundary.png"


def load_pseudo_label(directory: Path, stem: str, ignore_index: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Labels ``[H, W]`` uint8 and per-pixel weights ``[H, W]`` float32 (confidence inside B, else 0), or None
    when the set has no pseudo-label for this image."""
    labels_path, confidence_path, boundary_path = pseudo_label_paths(directory, stem)
    if not labels_path.is_file():
        return None
    labels = read_label_map(labels_path)
    confidence = read_label_map(confidence_path).astype(np.float32) / 255.0
    boundary = read_label_map(boundary_path) > 0
    weights = np.where(boundary & (labels != ignore_index), confidence, 0.0).astype(np.float32)
    return labels, weights


def save_pseudo_label(
    directory: Path, stem: str, labels: np.ndarray, confidence: np.ndarray, boundary: np.ndarray
) -> None:
    """Write one view's pseudo-label triplet (callers make the whole set atomic by writing into a staging dir)."""
    labels_path, confidence_path, boundary_path = pseudo_label_paths(directory, stem)
    Image.fromarray(labels.astype(np.uint8), mode="L").save(labels_path)
    Image.fromarray(np.clip(np.round(confidence * 255), 0, 255).astype(np.uint8), mode="L").save(confidence_path)
    Image.fromarray((boundary > 0).astype(np.uint8) * 255, mode="L").save(boundary_path)
