"""One 2D -> 3D round: render the 3D field on every training view, train the 2D model on the labeled views plus the
confident 3D labels, and turn its predictions into per-view targets for the 3D loss.

The 3D field carries a label only to surfaces a labeled view saw; the 2D model generalises by appearance to the rest
of every view but is not view-consistent. Training the 2D model on the 3D field's confident labels gives it ~all
views' worth of examples instead of the few labeled images, and supervising the 3D field with the 2D predictions
(weighted by their confidence) lets the 3D field fuse them into one answer per surface point.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor

from nerfseg_plugin.appearance.config import AppearanceConfig
from nerfseg_plugin.appearance.model import AppearanceModel, AppearanceView, fit_size
from nerfseg_plugin.appearance.reach import ReachView, geometric_reach
from nerfseg_plugin.appearance.targets import AppearanceTargets
from nerfseg_plugin.core.geometry import views_from_cameras

Renderer = Callable[[Cameras, Tensor], tuple[Tensor, Tensor, Tensor]]
"""Renders one camera (``[1]`` Cameras at the wanted resolution) given that view's image at the same resolution:
class logits ``[h, w, K]``, z-depth ``[h, w, 1]`` and accumulation ``[h, w, 1]``."""


@dataclass
class RoundView:
    """A training view as a round needs it."""

    camera: Cameras
    """The view's camera (one camera, training resolution); the round rescales a copy."""
    image: Float[Tensor, "H W 3"]
    """The captured image in [0, 1], training resolution."""
    labels: Int[Tensor, "H W"]
    """The user's labels (labeled views and click corrections), ignore index elsewhere."""


@dataclass
class RoundSummary:
    """What a round did (printed, logged, and kept for the report)."""

    round_index: int
    target_coverage: float
    """Share of the unlabeled pixels of all views that got a confident 3D label as a 2D training target."""
    supervised_share: float
    """Share of the unlabeled pixels whose 2D prediction supervises the 3D field (confidence above the minimum)."""
    seconds: float
    reached_share: float | None = None
    """First round only: share of the unlabeled pixels the labeled views' labels reached (``config.reach``)."""
    extra: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        reached = "" if self.reached_share is None else f"labels reached {self.reached_share:.0%}, "
        return (
            f"2D appearance round {self.round_index}: 3D targets on {self.target_coverage:.0%} of unlabeled pixels, "
            f"{reached}2D supervises {self.supervised_share:.0%}, {self.seconds:.1f} s"
        )


def round_steps(config: AppearanceConfig, first_step: int, last_step: int) -> list[int]:
    """Training steps after which the rounds run (fractions of the semantic training span)."""
    span = max(last_step - first_step, 1)
    return sorted({first_step + int(round(fraction * span)) for fraction in config.rounds if 0.0 < fraction < 1.0})


def _surface_points(camera: Cameras, depth: Float[Tensor, "h w 1"]) -> Float[Tensor, "h w 3"]:
    """Each pixel's rendered surface point in the world (depth is z-depth along the camera axis, as nerfstudio's
    models render it; the rsseg-data parser puts the vertical on +z)."""
    rays = camera.generate_rays(camera_indices=0, keep_shape=True)
    return rays.origins + rays.directions * rays.metadata["directions_norm"] * depth.to(rays.origins.device)


def _surface_uprightness(points: Float[Tensor, "h w 3"]) -> Float[Tensor, "h w"]:
    """|up component| of the rendered surface's unit normal (cross product of the surface points' image-space
    central differences): 1 on level ground and flat roofs, 0 on walls and at height jumps. Where the normal is
    undefined (no surface change), the surface counts as level."""
    along_rows, along_cols = torch.gradient(points.float(), dim=(0, 1))
    normal = torch.linalg.cross(along_rows, along_cols, dim=-1)
    length = normal.norm(dim=-1)
    upright = normal[..., 2].abs() / length.clamp_min(1e-12)
    return torch.where(torch.isfinite(upright) & (length > 0), upright, torch.ones_like(upright))


def _resize(image: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    """An ``[H, W]`` or ``[H, W, C]`` map at ``size`` (unchanged when it already has that size)."""
    if tuple(image.shape[:2]) == tuple(size):
        return image
    planar = image[None, None].float() if image.dim() == 2 else image.permute(2, 0, 1)[None].float()
    resized = F.interpolate(planar, size=size, mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))
    return resized[0, 0] if image.dim() == 2 else resized[0].permute(1, 2, 0)


class AppearanceRounds:
    """The 2D model and the state shared across rounds (input normalisation, last targets)."""

    def __init__(self, config: AppearanceConfig, num_classes: int, ignore_index: int) -> None:
        self.config = config
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.model: AppearanceModel | None = None
        self.targets: AppearanceTargets | None = None
        self.summaries: list[RoundSummary] = []
        self._height_range: tuple[float, float] | None = None
        self._reached: list[Tensor] | None = None
        """Per view, the pixels the 3D field labeled with confidence in the first round: where a labeled view's
        labels reached through the geometry, before any 2D prediction influenced the field."""
        self._rgb_stats: tuple[Tensor, Tensor] | None = None

    def _inputs(self, entry: dict[str, Tensor]) -> Tensor:
        """RGB (+ height, + uprightness) channels, each normalised to about [-1, 1]."""
        mean, std = self._rgb_stats  # type: ignore[misc]
        channels = [(entry["image"].permute(2, 0, 1).float() - mean) / std]
        if "height" in entry:
            low, high = self._height_range  # type: ignore[misc]
            height = entry["height"].float()
            channels.append(((height - low) / max(high - low, 1e-6)).clamp(-0.5, 1.5)[None] * 2.0 - 1.0)
        if "uprightness" in entry:
            channels.append(entry["uprightness"].float()[None] * 2.0 - 1.0)
        return torch.cat(channels, 0).to(torch.float16)

    @torch.no_grad()
    def _render_all(self, views: Sequence[RoundView], render: Renderer, with_reach: bool) -> list[dict[str, Tensor]]:
        """Each view's image, labels and 3D renders at the 2D model's size. The 3D field may render smaller
        (``render_max_side``: a NeRF's renders are slow on a CPU) and is then resized up to it. ``with_reach``: also
        the render-size camera, depth and labels for the geometric reach test."""
        rendered = []
        for view in views:
            height, width = view.image.shape[:2]
            size = fit_size(height, width, self.config.max_image_side)
            camera = view.camera.reshape(view.camera.shape)  # a copy: rescaling replaces the intrinsics tensors
            render_scale = min(1.0, self.config.render_max_side / max(height, width), size[0] / height)
            if render_scale < 1.0:
                camera.rescale_output_resolution(render_scale)
            render_size = (int(camera.height.item()), int(camera.width.item()))
            logits, depth, accumulation = render(camera, _resize(view.image, render_size, "area"))
            entry = {
                "image": _resize(view.image, size, "area").cpu(),
                "labels": _resize(view.labels, size, "nearest").long().cpu(),
                "probabilities": _resize(torch.softmax(logits.float(), dim=-1), size, "bilinear").cpu(),
                "accumulation": _resize(accumulation.float(), size, "bilinear")[..., 0].cpu(),
            }
            if self.config.height_input or self.config.normal_input:
                points = _surface_points(camera, depth)
            if self.config.height_input:
                entry["height"] = _resize(points[..., 2:3], size, "bilinear")[..., 0].cpu()
            if self.config.normal_input:
                uprightness = _surface_uprightness(points)[..., None]
                entry["uprightness"] = _resize(uprightness, size, "bilinear")[..., 0].cpu()
            if with_reach:  # the geometric reach test works at the render size, with the z-depth
                surface_depth = torch.where(accumulation[..., 0] > 0.5, depth[..., 0].float(), float("inf"))
                entry["reach_view"] = ReachView(
                    views_from_cameras(camera.to("cpu"))[0],
                    surface_depth.cpu(),
                    _resize(view.labels, render_size, "nearest").to(torch.int16).cpu(),
                )
            rendered.append(entry)
        return rendered

    def _geometric_reach(self, rendered: list[dict[str, Tensor]]) -> list[Tensor]:
        """Per view, the pixels whose surface a labeled view saw at a labeled pixel, at the 2D size."""
        geometric = geometric_reach(
            [entry["reach_view"] for entry in rendered], self.ignore_index, self.config.reach_depth_tolerance
        )
        return [
            _resize(mask, tuple(entry["labels"].shape), "nearest").bool()
            for mask, entry in zip(geometric, rendered, strict=True)
        ]

    def _first_round_reach(self, confident: list[Tensor], geometric: list[Tensor] | None) -> list[Tensor]:
        """Where the labeled views' labels reached (``config.reach``), at the 2D size."""
        if self.config.reach == "confidence":
            return confident
        assert geometric is not None
        if self.config.reach == "geometry":
            return geometric
        return [a | b for a, b in zip(geometric, confident, strict=True)]

    def _fix_normalisation(self, rendered: list[dict[str, Tensor]]) -> None:
        """Input statistics, fixed at the first round so the warm-started network sees the same inputs later."""
        if self._rgb_stats is None:
            pixels = torch.cat([r["image"].reshape(-1, 3) for r in rendered]).float()
            sample = pixels[torch.randperm(pixels.shape[0], generator=torch.Generator().manual_seed(0))[:200_000]]
            self._rgb_stats = (sample.mean(0).view(3, 1, 1), sample.std(0).clamp_min(1e-3).view(3, 1, 1))
        if self.config.height_input and self._height_range is None:
            heights = torch.cat([r["height"][r["accumulation"] > 0.5] for r in rendered])
            if heights.numel() == 0:  # an early or sparse field: take every finite rendered height instead
                heights = torch.cat([r["height"].flatten() for r in rendered])
                heights = heights[torch.isfinite(heights)]
            if heights.numel() == 0:
                raise ValueError("the 3D field renders no surface on any training view: cannot use the height input")
            sample = heights[torch.randperm(heights.numel(), generator=torch.Generator().manual_seed(0))[:200_000]]
            self._height_range = (float(sample.quantile(0.02)), float(sample.quantile(0.98)))

    def run(self, views: Sequence[RoundView], render: Renderer, device: torch.device) -> AppearanceTargets:
        """One round; returns (and keeps) the new per-view targets for the 3D loss."""
        started = time.perf_counter()
        first_round = self._reached is None
        geometric_targets = first_round and self.config.first_round_targets == "geometric"
        with_geometry = first_round and (self.config.reach != "confidence" or geometric_targets)
        rendered = self._render_all(views, render, with_geometry)
        self._fix_normalisation(rendered)
        geometric = self._geometric_reach(rendered) if with_geometry else None
        ignore = self.ignore_index
        training_views, unlabeled_pixels, targeted_pixels, reached = [], 0, 0, []
        for index, entry in enumerate(rendered):
            confidence, classes = entry["probabilities"].max(dim=-1)
            confident = (confidence >= self.config.min_3d_confidence) & (entry["accumulation"] > 0.5)
            labeled = entry["labels"] != ignore
            reached.append(confident | labeled)
            if geometric_targets:
                confident = confident & geometric[index]  # type: ignore[index]
            targets = torch.where(labeled, entry["labels"], torch.where(confident, classes, ignore))
            weights = torch.where(labeled, 1.0, torch.where(confident, confidence, 0.0))
            unlabeled_pixels += int((~labeled).sum())
            targeted_pixels += int((confident & ~labeled).sum())
            entry["inputs"] = self._inputs(entry)
            training_views.append(
                AppearanceView(entry["inputs"], targets, weights.float(), labeled=bool(labeled.any()))
            )
        if first_round:
            self._reached = self._first_round_reach(reached, geometric)
            reach_share = sum(
                int((r & (e["labels"] == ignore)).sum()) for r, e in zip(self._reached, rendered, strict=True)
            )
        else:
            reach_share = None
        if self.model is None:
            in_channels = int(training_views[0].inputs.shape[0])
            self.model = AppearanceModel(self.config, in_channels, self.num_classes, ignore)
        self.model.to(device).fit(training_views)
        labels, weights, supervised = [], [], 0
        for entry, view_reached in zip(rendered, self._reached, strict=True):
            probabilities = self.model.predict(entry["inputs"].float()).cpu()
            confidence, classes = probabilities.max(dim=-1)
            excluded = entry["labels"] != ignore
            if not self.config.supervise_reached:
                excluded = excluded | view_reached
            weight = torch.where((confidence >= self.config.min_2d_confidence) & ~excluded, confidence, 0.0)
            supervised += int((weight > 0).sum())
            labels.append(classes)
            weights.append(weight)
        self.targets = AppearanceTargets(
            labels, weights, [tuple(view.image.shape[:2]) for view in views], ignore_index=ignore
        )
        summary = RoundSummary(
            round_index=len(self.summaries),
            target_coverage=targeted_pixels / max(unlabeled_pixels, 1),
            supervised_share=supervised / max(unlabeled_pixels, 1),
            seconds=time.perf_counter() - started,
            reached_share=None if reach_share is None else reach_share / max(unlabeled_pixels, 1),
        )
        self.summaries.append(summary)
        return self.targets
