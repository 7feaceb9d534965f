"""Label transfer through geometry: a depth-tested visibility check and soft voting (camera model:
:mod:`nerfseg_plugin.core.geometry`, whose conventions apply).

The vote follows GNeSF (paper 004) without its learned parts: a target pixel's surface point is projected into every
labeled view; views that do not see it (outside the image, or the depth test says another surface is in front) are
dropped, the visibility module's job; the rest vote with their bilinearly sampled class distribution, weighted so that
views looking at the point from a similar direction count more (GNeSF encodes the displacement to each source
camera for the same reason).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from nerfseg_plugin.core.geometry import PinholeView, backproject, visible_in


def sample_class_distribution(
    labels: Int[Tensor, "h w"], uv: Float[Tensor, "n 2"], num_classes: int
) -> tuple[Float[Tensor, "n k"], Float[Tensor, " n"]]:
    """Bilinearly interpolated one-hot labels at ``uv``: a soft class distribution that is mixed only across label
    edges. Returns (distribution renormalised over labeled neighbours, fraction of the 4 neighbours that are labeled).
    """
    height, width = labels.shape
    valid = (labels >= 0) & (labels < num_classes)
    one_hot = F.one_hot(torch.where(valid, labels, 0).long(), num_classes).float() * valid[..., None]
    grid = torch.stack([uv[:, 0] / width * 2 - 1, uv[:, 1] / height * 2 - 1], -1).view(1, 1, -1, 2)
    sampled = F.grid_sample(
        one_hot.permute(2, 0, 1)[None], grid.to(one_hot.dtype), mode="bilinear", align_corners=False
    )
    sampled = sampled[0, :, 0].T  # [n, k]
    labeled_fraction = sampled.sum(-1)
    return sampled / labeled_fraction.clamp_min(1e-6)[:, None], labeled_fraction


@dataclass
class VoteConfig:
    """Geometric soft voting of labeled views into other views."""

    depth_tolerance: float = 0.03
    """Visibility check: a labeled view sees a surface point when the point's depth in that view is within this
    fraction of the depth that view's depth map holds at the projected pixel."""
    angle_sigma_deg: float = 30.0
    """View-proximity weight exp(-angle^2 / (2 sigma^2)), angle between the target's and the labeled view's rays to
    the surface point: nearby views count more."""
    evidence_scale: float = 0.5
    """Confidence = winning class probability x (1 - exp(-total weight / evidence_scale)): a point seen by a single
    distant labeled view gets low confidence."""
    min_confidence: float = 0.5
    """Pixels whose confidence is below this get no pseudo-label (255)."""


@dataclass(frozen=True)
class SourceView:
    """A labeled view: camera, z-depth and class indices (anything outside [0, K) counts as unlabeled)."""

    view: PinholeView
    depth: Float[Tensor, "h w"]
    labels: Int[Tensor, "h w"]


@dataclass(frozen=True)
class VoteResult:
    """Per-pixel vote of the labeled views in one target view."""

    probabilities: Float[Tensor, "k h w"]
    """Weighted class distribution (all zero where no labeled view voted)."""
    evidence: Float[Tensor, "h w"]
    """Sum of the voting weights."""
    observed: Bool[Tensor, "h w"]
    """The pixel's surface point passes the visibility check in at least one labeled view."""

    def labels_and_confidence(
        self, config: VoteConfig, ignore_index: int
    ) -> tuple[Int[Tensor, "h w"], Float[Tensor, "h w"]]:
        best, labels = self.probabilities.max(0)
        confidence = best * (1 - torch.exp(-self.evidence / config.evidence_scale))
        labels = torch.where(confidence >= config.min_confidence, labels, torch.full_like(labels, ignore_index))
        return labels, confidence


def vote_view(
    target: PinholeView,
    target_depth: Float[Tensor, "h w"],
    sources: Sequence[SourceView],
    num_classes: int,
    config: VoteConfig,
) -> VoteResult:
    """Transfer the labeled views' labels into ``target`` through its depth map (see the module docstring)."""
    height, width = target.height, target.width
    device = target_depth.device
    points = backproject(target, target_depth)
    known = torch.isfinite(points).all(-1) & (target_depth.reshape(-1) > 0)
    target_rays = F.normalize(points - target.origin.to(device), dim=-1)
    votes = torch.zeros(height * width, num_classes, device=device)
    evidence = torch.zeros(height * width, device=device)
    observed = torch.zeros(height * width, dtype=torch.bool, device=device)
    inv_two_sigma_sq = 1.0 / (2 * math.radians(config.angle_sigma_deg) ** 2)
    for source in sources:
        index, uv_c = visible_in(source.view, source.depth, points, known, config.depth_tolerance)
        if index.numel() == 0:
            continue
        observed[index] = True
        source_rays = F.normalize(points[index] - source.view.origin.to(device), dim=-1)
        cosine = (source_rays * target_rays[index]).sum(-1).clamp(-1.0, 1.0)
        weight = torch.exp(-(torch.arccos(cosine) ** 2) * inv_two_sigma_sq)
        distribution, labeled_fraction = sample_class_distribution(source.labels.to(device), uv_c, num_classes)
        weight = weight * labeled_fraction.clamp(0, 1)  # an unlabeled (ignore) neighbourhood casts no vote
        votes.index_add_(0, index, distribution * weight[:, None])
        evidence.index_add_(0, index, weight)
    probabilities = votes / evidence.clamp_min(1e-9)[:, None]
    return VoteResult(
        probabilities=probabilities.T.reshape(num_classes, height, width),
        evidence=evidence.reshape(height, width),
        observed=observed.reshape(height, width),
    )
