"""Pure display helpers for the viewer: the class legend and the highlighted colour map."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
from jaxtyping import Float
from PIL import Image
from torch import Tensor

from nerfseg_plugin.core.label_space import LabelSpace
from nerfseg_plugin.semantics.outputs import SEMANTIC_COLORMAP, SEMANTIC_LOGITS, predicted_labels

ALL_CLASSES = "(all classes)"
"""Highlight dropdown entry that leaves the colour map as it is."""


def swatch_data_url(color: tuple[int, int, int] | np.ndarray, size: int = 14) -> str:
    """A small solid PNG as a data URL: markdown images are the one way to show a colour in viser's markdown."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), color, dtype=np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def legend_markdown(label_space: LabelSpace) -> str:
    """One line per class: its colour swatch, index and name (colours from the scene's classes.json)."""
    lines = [
        f"![{name}]({swatch_data_url(color)}) {index}: **{name}**  "
        for index, (name, color) in enumerate(zip(label_space.names, label_space.colors_uint8, strict=True))
    ]
    return "\n".join(lines)


def highlight_colormap(outputs: dict[str, Tensor], class_index: int | None, dim: float) -> dict[str, Tensor]:
    """``outputs`` with the colour map of every class but ``class_index`` scaled by ``dim`` (None: unchanged).
    Float in, float out: the viewer shows float images."""
    if class_index is None or SEMANTIC_COLORMAP not in outputs or SEMANTIC_LOGITS not in outputs:
        return outputs
    colormap: Float[Tensor, "H W 3"] = outputs[SEMANTIC_COLORMAP]
    keep = (predicted_labels(outputs[SEMANTIC_LOGITS]) == class_index)[..., None].to(colormap.device)
    return {**outputs, SEMANTIC_COLORMAP: torch.where(keep, colormap, colormap * dim)}
