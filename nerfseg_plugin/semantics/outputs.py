"""The semantic part of the model output contract, shared by both methods, the viewer, exporters and metrics.

Every image here is a float tensor: nerfstudio's viewer and ``ns-render`` show float images, and an integer map
under an output name would be misread. Integer labels come from :func:`predicted_labels`, for code that needs them.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float, Int, Shaped
from torch import Tensor

from nerfseg_plugin.semantics.colormaps import label_colormap, probabilities_confidence_entropy

SEMANTIC_LOGITS = "semantics"
"""Raw class logits, ``[H, W, K]`` (image) or ``[R, K]`` (ray batch), float."""
SEMANTIC_COLORMAP = "semantics_colormap"
"""Predicted class colours, ``[..., 3]`` float in [0, 1]."""
SEMANTIC_CONFIDENCE = "semantics_confidence"
"""Top-class probability, ``[..., 1]`` float in [0, 1]."""
SEMANTIC_ENTROPY = "semantics_entropy"
"""Class entropy normalised by ``log K``, ``[..., 1]`` float in [0, 1] (1 = uniform)."""
SEMANTIC_FEATURES_PCA = "semantic_features_pca"
"""Semantic features through a fixed 3-component PCA, ``[..., 3]`` float in [0, 1]."""


def predicted_labels(logits: Float[Tensor, "*batch K"]) -> Int[Tensor, "*batch"]:
    """Arg-max class index (int64) per pixel or ray."""
    return torch.argmax(logits, dim=-1)


def label_map(outputs: dict[str, Tensor], ignore_index: int, min_coverage: float = 0.05) -> np.ndarray:
    """``[H, W]`` uint8 class indices of one rendered view; ``ignore_index`` where the model covers less than
    ``min_coverage`` of the pixel (accumulated opacity), i.e. where it has no content to label."""
    labels = predicted_labels(outputs[SEMANTIC_LOGITS]).to(torch.uint8)
    if "accumulation" in outputs:
        labels[outputs["accumulation"][..., 0] < min_coverage] = ignore_index
    return labels.cpu().numpy()


def semantic_render_outputs(
    logits: Float[Tensor, "*batch K"],
    label_space_colors: Shaped[Tensor, "K 3"] | Shaped[np.ndarray, "K 3"],
    ignore_index: int,
) -> dict[str, Float[Tensor, "*batch C"]]:
    """Colour map, confidence and entropy images from logits, keyed by the output names above.

    ``label_space_colors`` may be float in [0, 1] or 8-bit (``LabelSpace.colors_uint8``). The images are derived
    from detached logits: they are for display and evaluation, never a training signal.
    """
    logits = logits.detach()
    if logits.shape[-1] != label_space_colors.shape[0]:
        raise ValueError(f"{logits.shape[-1]} logit channels but {label_space_colors.shape[0]} class colours")
    _, confidence, entropy = probabilities_confidence_entropy(logits)
    return {
        SEMANTIC_COLORMAP: label_colormap(predicted_labels(logits), label_space_colors, ignore_index),
        SEMANTIC_CONFIDENCE: confidence,
        SEMANTIC_ENTROPY: entropy,
    }
