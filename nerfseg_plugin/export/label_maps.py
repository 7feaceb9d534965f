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

from nerfseg_plugin.semantics.label_space import LabelSpace
from nerfseg_plugin.semantics.outputs import SEMANTIC_LOGITS, predicted_labels

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
    """``[H, W]`` uint8 class indices for one camera; ``ignore_index`` where the model covers less than
    ``min_coverage`` of the pixel (accumulated opacity), i.e. where it has no content to label."""
    outputs = model.render_view(camera, image)
    labels = predicted_labels(outputs[SEMANTIC_LOGITS]).to(torch.uint8)
    if "accumulation" in outputs:
        labels[outputs["accumulation"][..., 0] < min_coverage] = ignore_index
    return labels.cpu().numpy()


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
    (output_dir / LABELS_FOLDER).mkdir(parents=True, exist_ok=True)
    (output_dir / COLOUR_FOLDER).mkdir(parents=True, exist_ok=True)
    written = []
    for stem, camera, image in views:
        labels = render_label_map(model, camera, label_space.ignore_index, min_coverage, image)
        path = output_dir / LABELS_FOLDER / f"{stem}.png"
        Image.fromarray(labels, mode="L").save(path)
        Image.fromarray(colourise(labels, label_space)).save(output_dir / COLOUR_FOLDER / f"{stem}.png")
        written.append(path)
    label_space.save(output_dir / "classes.json")
    return written
