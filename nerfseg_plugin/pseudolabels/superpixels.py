"""Image regions for ``--method sam2+vote``: geometric votes decided per region so pseudo-label edges follow image
edges. Regions come from SAM2's automatic masks, or from SLIC superpixels when no SAM2 checkpoint is given."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Float, Int, UInt8
from torch import Tensor


@dataclass
class RegionConfig:
    """Regions and the region-level decision of ``--method sam2+vote``."""

    superpixel_area: int = 56
    """Mean SLIC superpixel size in pixels (superpixels replace SAM2 regions without a SAM2 checkpoint)."""
    compactness: float = 10.0
    """SLIC compactness: higher gives rounder superpixels that follow colour edges less."""
    min_support: float = 0.2
    """A region takes a class only when at least this fraction of its pixels carry a geometric vote."""
    min_agreement: float = 0.8
    """... and at least this fraction of its (confidence-weighted) votes agree on that class."""
    full_support: float = 0.6
    """Region confidence = agreement x min(1, support / full_support)."""
    min_confidence: float = 0.4
    """Pixels whose region confidence is below this fall back to their own per-pixel vote."""


def superpixel_regions(image: UInt8[np.ndarray, "h w 3"], config: RegionConfig) -> Int[np.ndarray, "h w"]:
    """SLIC superpixel index per pixel."""
    from skimage.segmentation import slic

    count = max(1, round(image.shape[0] * image.shape[1] / config.superpixel_area))
    return slic(image, n_segments=count, compactness=config.compactness, start_label=0).astype(np.int64)


def regions_from_masks(masks: Sequence[Bool[np.ndarray, "h w"]], shape: tuple[int, int]) -> Int[np.ndarray, "h w"]:
    """A region index per pixel from possibly overlapping masks (-1 where none): masks are painted largest first,
    so where SAM2 gives nested masks the finer one wins."""
    regions = np.full(shape, -1, dtype=np.int64)
    for index in sorted(range(len(masks)), key=lambda i: -int(np.count_nonzero(masks[i]))):
        regions[np.asarray(masks[index], dtype=bool)] = index
    return regions


def region_vote(
    regions: Int[np.ndarray, "h w"],
    probabilities: Float[Tensor, "k h w"],
    confidence: Float[Tensor, "h w"],
    voted: Bool[Tensor, "h w"],
    config: RegionConfig,
) -> tuple[Int[Tensor, "h w"], Float[Tensor, "h w"]]:
    """Per region: the class with the largest confidence-weighted vote mass among its pixels. Returns the region
    class per pixel (-1 where the region is undecided or the pixel has no region) and the region confidence."""
    num_classes = probabilities.shape[0]
    region = torch.from_numpy(regions).reshape(-1)
    has_region = region >= 0
    region, probs = region[has_region], probabilities.reshape(num_classes, -1)[:, has_region]
    weight = (confidence.reshape(-1)[has_region] * voted.reshape(-1)[has_region]).float()
    count = int(region.max()) + 1 if region.numel() else 0
    mass = torch.zeros(count, num_classes).index_add_(0, region, (probs * weight).T)
    size = torch.zeros(count).index_add_(0, region, torch.ones_like(weight))
    support = torch.zeros(count).index_add_(0, region, voted.reshape(-1)[has_region].float()) / size.clamp_min(1)
    best, label = mass.max(1)
    agreement = best / mass.sum(1).clamp_min(1e-9)
    region_confidence = agreement * (support / config.full_support).clamp(max=1.0)
    decided = (support >= config.min_support) & (agreement >= config.min_agreement)
    decided &= region_confidence >= config.min_confidence
    label = torch.where(decided, label, torch.full_like(label, -1))
    out_label = torch.full((regions.size,), -1, dtype=torch.long)
    out_confidence = torch.zeros(regions.size)
    out_label[has_region] = label[region]
    out_confidence[has_region] = torch.where(decided, region_confidence, torch.zeros_like(region_confidence))[region]
    return out_label.view(regions.shape), out_confidence.view(regions.shape)
