"""The region a click stands for: a SAM2 point prompt when a checkpoint is configured, else a flood fill.

The flood fill runs on a per-pixel distance to the clicked pixel that mixes the rendered colour (object edges)
and the rendered class probabilities (what the model already groups together), so one click covers the
mislabelled patch it lands in without leaking across colour edges into the rest of the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from jaxtyping import Bool, Float, UInt8
from skimage.segmentation import flood

from nerfseg_plugin.data.corrections import RegionConfig


def descriptor_distance(
    rgb: Float[np.ndarray, "H W 3"],
    probabilities: Float[np.ndarray, "H W K"] | None,
    seed: tuple[int, int],
    config: RegionConfig,
) -> Float[np.ndarray, "H W"]:
    """Weighted colour + class-probability distance of every pixel to the pixel at ``seed`` (y, x)."""
    y, x = seed
    distance = config.colour_weight * np.linalg.norm(rgb - rgb[y, x], axis=-1)
    if probabilities is not None and config.probability_weight > 0:
        distance = distance + config.probability_weight * np.linalg.norm(probabilities - probabilities[y, x], axis=-1)
    return distance.astype(np.float32)


def disk(shape: tuple[int, int], seed: tuple[int, int], radius: int) -> Bool[np.ndarray, "H W"]:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - seed[0]) ** 2 + (xx - seed[1]) ** 2 <= radius**2


def grow_region(
    rgb: Float[np.ndarray, "H W 3"],
    probabilities: Float[np.ndarray, "H W K"] | None,
    seed: tuple[int, int],
    config: RegionConfig,
) -> Bool[np.ndarray, "H W"]:
    """Connected pixels within ``tolerance`` of the seed's descriptor (skimage's flood fill), shrunk until the
    region is at most ``max_area_fraction`` of the image, plus a ``min_radius`` disk around the seed."""
    height, width = rgb.shape[:2]
    if not (0 <= seed[0] < height and 0 <= seed[1] < width):
        raise ValueError(f"click {seed} lies outside the {height}x{width} image")
    distance = descriptor_distance(rgb, probabilities, seed, config)
    tolerance = config.tolerance
    limit = config.max_area_fraction * height * width
    while True:
        region = flood(distance, seed, tolerance=tolerance, connectivity=1)
        if region.sum() <= limit or tolerance < 1e-4:
            break
        tolerance /= 2
    return region | disk((height, width), seed, config.min_radius)


class Sam2PointPrompter:
    """SAM2's image predictor with one positive point prompt; weights from a local checkpoint only (the same
    loader as the pseudo-label backend, so nothing is fetched)."""

    def __init__(
        self,
        checkpoint: Path,
        config: str | None = None,
        image_size: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        from nerfseg_plugin.pseudolabels.sam2_backend import build_sam2_predictor, resolve_config_name

        model = build_sam2_predictor(resolve_config_name(config, checkpoint), checkpoint, image_size, device)
        self.predictor = SAM2ImagePredictor(model)
        size = model.image_size
        # SAM2ImagePredictor hard-codes the backbone feature sizes of a 1024 input (as in Sam2MaskGenerator).
        self.predictor._bb_feat_sizes = [(size // s, size // s) for s in (4, 8, 16)]

    def __call__(self, image: UInt8[np.ndarray, "H W 3"], seed: tuple[int, int]) -> Bool[np.ndarray, "H W"]:
        point = np.array([[seed[1], seed[0]]], dtype=np.float32)  # SAM2 takes (x, y)
        with torch.inference_mode():
            self.predictor.set_image(image)
            masks, scores, _ = self.predictor.predict(
                point_coords=point, point_labels=np.array([1]), multimask_output=True
            )
        return np.asarray(masks[int(np.argmax(scores))]) > 0


def derive_region(
    rgb: Float[np.ndarray, "H W 3"],
    probabilities: Float[np.ndarray, "H W K"] | None,
    seed: tuple[int, int],
    config: RegionConfig,
    prompter: Sam2PointPrompter | None = None,
) -> Bool[np.ndarray, "H W"]:
    """The click's region: SAM2's mask when a prompter is given and its mask holds the click, else the flood fill."""
    if prompter is not None:
        image = np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)
        mask = prompter(image, seed)
        if mask[seed]:
            return mask | disk(mask.shape, seed, config.min_radius)
    return grow_region(rgb, probabilities, seed, config)


def load_prompter(config: RegionConfig, device: torch.device | str | None = None) -> Sam2PointPrompter | None:
    """A SAM2 prompter on ``device`` (the pipeline's) when ``sam2_checkpoint`` is set (sam2 imported only then),
    else None."""
    if config.sam2_checkpoint is None:
        return None
    return Sam2PointPrompter(config.sam2_checkpoint, config.sam2_config, config.sam2_image_size, device)
