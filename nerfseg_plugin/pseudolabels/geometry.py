"""Label transfer through geometry: pinhole projection, a depth-tested visibility check and soft voting.

Conventions: cameras are nerfstudio's (camera-to-world, OpenGL axes: x right, y up, looking down -z), depth maps hold
z-depth (distance along the viewing axis, ``inf`` where unknown) and pixel ``(row, col)`` has its centre at
``(u, v) = (col + 0.5, row + 0.5)``, as in nerfstudio's ray generation.

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
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor


@dataclass(frozen=True)
class PinholeView:
    """One undistorted pinhole camera."""

    c2w: Float[Tensor, "3 4"]
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @property
    def origin(self) -> Float[Tensor, "3"]:
        return self.c2w[:, 3]


def views_from_cameras(cameras: Cameras) -> list[PinholeView]:
    """Per-camera pinhole views (callers reject lens distortion beforehand)."""
    c2w = cameras.camera_to_worlds.float()
    return [
        PinholeView(
            c2w=c2w[i],
            fx=float(cameras.fx[i]),
            fy=float(cameras.fy[i]),
            cx=float(cameras.cx[i]),
            cy=float(cameras.cy[i]),
            width=int(cameras.width[i]),
            height=int(cameras.height[i]),
        )
        for i in range(len(cameras))
    ]


def pixel_centres(view: PinholeView, device: torch.device | None = None) -> Float[Tensor, "hw 2"]:
    """``(u, v)`` of every pixel centre, row-major."""
    rows, cols = torch.meshgrid(
        torch.arange(view.height, device=device), torch.arange(view.width, device=device), indexing="ij"
    )
    return torch.stack([cols.reshape(-1) + 0.5, rows.reshape(-1) + 0.5], -1).float()


def backproject(view: PinholeView, depth: Float[Tensor, "h w"]) -> Float[Tensor, "hw 3"]:
    """World points of every pixel at its z-depth (non-finite where the depth is unknown)."""
    uv = pixel_centres(view, depth.device)
    z = depth.reshape(-1)
    camera = torch.stack([(uv[:, 0] - view.cx) / view.fx * z, -(uv[:, 1] - view.cy) / view.fy * z, -z], -1)
    c2w = view.c2w.to(depth.device)
    return camera @ c2w[:, :3].T + c2w[:, 3]


def project(view: PinholeView, points: Float[Tensor, "n 3"]) -> tuple[Float[Tensor, "n 2"], Float[Tensor, " n"]]:
    """Pixel coordinates ``(u, v)`` and z-depth of world points (z <= 0: behind the camera)."""
    c2w = view.c2w.to(points.device)
    camera = (points - c2w[:, 3]) @ torch.linalg.inv(c2w[:, :3]).T
    z = -camera[:, 2]
    safe_z = torch.where(z.abs() > 1e-9, z, torch.full_like(z, 1e-9))
    uv = torch.stack([view.cx + view.fx * camera[:, 0] / safe_z, view.cy - view.fy * camera[:, 1] / safe_z], -1)
    return uv, z


def inside_image(view: PinholeView, uv: Float[Tensor, "n 2"], z: Float[Tensor, " n"]) -> Bool[Tensor, " n"]:
    return (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < view.width) & (uv[:, 1] >= 0) & (uv[:, 1] < view.height)


def sample_nearest(image: Float[Tensor, "h w"], uv: Float[Tensor, "n 2"]) -> Float[Tensor, " n"]:
    """Value of the pixel containing each ``uv`` (callers mask coordinates outside the image)."""
    height, width = image.shape
    cols = uv[:, 0].floor().long().clamp(0, width - 1)
    rows = uv[:, 1].floor().long().clamp(0, height - 1)
    return image[rows, cols]


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
        uv, z = project(source.view, torch.where(known[:, None], points, torch.zeros_like(points)))
        candidate = known & inside_image(source.view, uv, z)
        index = candidate.nonzero().squeeze(-1)
        if index.numel() == 0:
            continue
        uv_c, z_c = uv[index], z[index]
        surface = sample_nearest(source.depth.to(device), uv_c)
        visible = torch.isfinite(surface) & ((z_c - surface).abs() <= config.depth_tolerance * surface)
        index, uv_c = index[visible], uv_c[visible]
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
