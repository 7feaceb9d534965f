"""Render label maps for cameras and write them as class-index PNGs plus colourised PNGs (no ffmpeg needed)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from PIL import Image
from torch import Tensor, nn

from nerfseg_plugin.core.label_space import LabelSpace
from nerfseg_plugin.semantics.outputs import label_map

LABELS_FOLDER = "labels"
COLOUR_FOLDER = "labels_colour"


class LabelView(NamedTuple):
    """A view to label: output file stem, its camera, and its captured image when it has one (dataset views)."""

    stem: str
    camera: Cameras
    image: Float[Tensor, "H W C"] | None = None


@torch.no_grad()
def render_label_map(
    model: nn.Module, camera: Cameras, ignore_index: int, min_coverage: float, image: Tensor | None = None
) -> np.ndarray:
    """``[H, W]`` uint8 class indices for one camera (see :func:`label_map`)."""
    return label_map(model.render_view(camera, image), ignore_index, min_coverage)


def save_label_map(output_dir: Path, stem: str, labels: np.ndarray, label_space: LabelSpace) -> Path:
    """Write ``labels/<stem>.png`` (8-bit class indices) and ``labels_colour/<stem>.png``; returns the first."""
    (output_dir / LABELS_FOLDER).mkdir(parents=True, exist_ok=True)
    (output_dir / COLOUR_FOLDER).mkdir(parents=True, exist_ok=True)
    path = output_dir / LABELS_FOLDER / f"{stem}.png"
    Image.fromarray(labels, mode="L").save(path)
    Image.fromarray(colourise(labels, label_space)).save(output_dir / COLOUR_FOLDER / f"{stem}.png")
    return path


def colourise(labels: np.ndarray, label_space: LabelSpace) -> np.ndarray:
    """``[H, W, 3]`` uint8 display image; ignore pixels are black."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: label_space.num_classes] = label_space.colors_uint8
    return palette[labels]


def write_label_maps(
    model: nn.Module,
    views: Iterable[LabelView],
    label_space: LabelSpace,
    output_dir: Path,
    min_coverage: float = 0.05,
) -> list[Path]:
    """Render every view and write ``labels/<stem>.png`` and ``labels_colour/<stem>.png``."""
    written = []
    for stem, camera, image in views:
        labels = render_label_map(model, camera, label_space.ignore_index, min_coverage, image)
        written.append(save_label_map(output_dir, stem, labels, label_space))
    output_dir.mkdir(parents=True, exist_ok=True)
    label_space.save(output_dir / "classes.json")
    return written
