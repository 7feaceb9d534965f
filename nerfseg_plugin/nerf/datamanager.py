"""Ray batches for the two-stage NeRF: RGB rays from every frame (stage 1), labeled rays only (stage 2).

Stage 1 is nerfstudio's ray sampling unchanged (:class:`RssegRayDatamanager`). In stage 2 the reconstruction is
frozen, so RGB-only rays would teach nothing: every ray is drawn from the labeled pixels of the labeled frames (and,
when a pseudo-label set is configured, a share from the pseudo-labeled pixels of the other frames). The stage is
the model's: a training callback asks ``model.in_semantic_stage(step)`` before every iteration. Every training ray
carries its pixel colour in ``ray_bundle.metadata[PIXEL_RGB]``: the colour-radiance network's input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch
from jaxtyping import Int
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from torch import Tensor

from nerfseg_plugin.core.keys import PSEUDO_LABELS, PSEUDO_WEIGHTS, SEMANTIC_LABELS
from nerfseg_plugin.data.datamanager import RssegRayDatamanager, RssegRayDatamanagerConfig
from nerfseg_plugin.data.dataset import RssegDataset

PIXEL_RGB = "pixel_rgb"
"""Ray-bundle metadata key: each training ray's pixel colour, ``[R, 3]`` (or RGBA) float in [0, 1]."""

_SEMANTIC_RAY_KEYS = ("image", SEMANTIC_LABELS, PSEUDO_LABELS, PSEUDO_WEIGHTS)


@dataclass
class SemanticPixels:
    """The frames that carry labels or pseudo-labels, stacked, with the flat indices of their supervised pixels."""

    frame_indices: Int[Tensor, " F"]
    """Dataset index of every stacked frame."""
    data: dict[str, Tensor]
    """``_SEMANTIC_RAY_KEYS`` stacked over frames, ``[F, H, W, ...]``."""
    labeled: Int[Tensor, " M"]
    """Flat indices into ``F*H*W`` of pixels with a real label."""
    pseudo: Int[Tensor, " P"]
    """Flat indices of pixels with a pseudo-label of positive weight."""

    @classmethod
    def from_dataset(cls, dataset: RssegDataset, device: torch.device | str) -> SemanticPixels:
        labeled = dataset.supervised_indices
        pseudo = [i for i in range(len(dataset)) if dataset.has_pseudo_label(i) and i not in set(labeled)]
        frames = labeled + pseudo
        if not frames:
            raise ValueError("no training frame has a semantic_path (or a pseudo-label): stage 2 cannot train")
        items = [dataset[i] for i in frames]
        sizes = {tuple(item["image"].shape[:2]) for item in items}
        if len(sizes) > 1:
            raise ValueError(f"labeled frames must share one resolution for ray sampling, got {sorted(sizes)}")
        data = {key: torch.stack([item[key] for item in items]).to(device) for key in _SEMANTIC_RAY_KEYS}
        ignore = dataset.ignore_index
        labeled_pixels = (data[SEMANTIC_LABELS] != ignore).flatten()
        pseudo_pixels = ((data[PSEUDO_LABELS] != ignore) & (data[PSEUDO_WEIGHTS] > 0)).flatten()
        return cls(
            frame_indices=torch.tensor(frames, dtype=torch.long, device=device),
            data=data,
            labeled=torch.nonzero(labeled_pixels).squeeze(-1),
            pseudo=torch.nonzero(pseudo_pixels).squeeze(-1),
        )

    def sample(self, num_rays: int, pseudo_fraction: float) -> tuple[dict[str, Tensor], Int[Tensor, "R 3"]]:
        """A batch of supervised pixels (``num_rays``, ``pseudo_fraction`` of them pseudo-labeled when both kinds
        exist) and their ``(dataset image index, y, x)`` indices for the ray generator."""
        num_pseudo = round(num_rays * pseudo_fraction) if len(self.pseudo) else 0
        if not len(self.labeled):
            num_pseudo = num_rays
        picks = [
            pool[torch.randint(len(pool), (count,), device=pool.device)]
            for pool, count in ((self.labeled, num_rays - num_pseudo), (self.pseudo, num_pseudo))
            if count > 0
        ]
        flat = torch.cat(picks)
        _, height, width = self.data[SEMANTIC_LABELS].shape[:3]
        frame, pixel = flat // (height * width), flat % (height * width)
        y, x = pixel // width, pixel % width
        batch = {key: value[frame, y, x] for key, value in self.data.items()}
        return batch, torch.stack([self.frame_indices[frame], y, x], dim=-1)


@dataclass
class UnlabeledPixels:
    """The frames without user labels, stacked (8-bit colour), for stage-2 rays supervised by the 2D appearance
    model's predictions (which exist for every pixel of every view)."""

    frame_indices: Int[Tensor, " F"]
    images: Tensor
    """``[F, H, W, C]`` uint8."""
    ignore_index: int

    @classmethod
    def from_dataset(cls, dataset: RssegDataset, device: torch.device | str) -> UnlabeledPixels | None:
        labeled = set(dataset.supervised_indices)
        frames = [i for i in range(len(dataset)) if i not in labeled]
        if not frames:
            return None
        images = [(dataset.get_image_float32(i)[..., :3] * 255).round().to(torch.uint8) for i in frames]
        if len({tuple(image.shape[:2]) for image in images}) > 1:
            raise ValueError("frames must share one resolution for ray sampling of the 2D appearance targets")
        return cls(torch.tensor(frames, device=device), torch.stack(images).to(device), dataset.ignore_index)

    def sample(self, num_rays: int) -> tuple[dict[str, Tensor], Int[Tensor, "R 3"]]:
        """Uniform random pixels; their label keys say "no label", so only the 2D targets supervise them."""
        count, height, width = self.images.shape[:3]
        device = self.images.device
        frame = torch.randint(count, (num_rays,), device=device)
        y, x = torch.randint(height, (num_rays,), device=device), torch.randint(width, (num_rays,), device=device)
        ignore = torch.full((num_rays,), self.ignore_index, dtype=torch.long, device=device)
        batch = {
            "image": self.images[frame, y, x].float() / 255.0,
            SEMANTIC_LABELS: ignore,
            PSEUDO_LABELS: ignore.clone(),
            PSEUDO_WEIGHTS: torch.zeros(num_rays, device=device),
        }
        return batch, torch.stack([self.frame_indices[frame], y, x], dim=-1)


@dataclass
class RssegNerfDatamanagerConfig(RssegRayDatamanagerConfig):
    """RGB ray batches in stage 1, labeled (and pseudo-labeled) ray batches in stage 2."""

    _target: type = field(default_factory=lambda: RssegNerfDatamanager)
    """target class to instantiate"""
    num_semantic_rays_per_batch: int = 1024
    """Rays per stage-2 step, all from supervised pixels."""
    pseudo_ray_fraction: float = 0.5
    """Share of the stage-2 rays drawn from pseudo-labeled frames, when a pseudo-label set is in use."""
    appearance_ray_fraction: float = 0.5
    """Share of the stage-2 rays drawn uniformly from the unlabeled frames once the 2D appearance model has
    predictions (--pipeline.appearance.*): they are supervised by those predictions only."""


class RssegNerfDatamanager(RssegRayDatamanager):
    """RssegRayDatamanager that follows the model's stage and attaches pixel colours to training rays."""

    config: RssegNerfDatamanagerConfig
    semantic_stage: bool = False
    """Set before every iteration from the model (see get_training_callbacks)."""

    _has_appearance_targets = staticmethod(lambda: False)
    """Whether the model has 2D appearance targets yet (set from the pipeline; a callable, so the model is not
    registered as a submodule of the datamanager)."""

    @cached_property
    def semantic_pixels(self) -> SemanticPixels:
        """Built on first use, so stage 1 holds no second copy of the labeled frames."""
        return SemanticPixels.from_dataset(self.train_dataset, self.device)

    @cached_property
    def unlabeled_pixels(self) -> UnlabeledPixels | None:
        return UnlabeledPixels.from_dataset(self.train_dataset, self.device)

    def _appearance_rays(self) -> int:
        """Rays of a stage-2 batch for the 2D appearance targets (0 until the first 2D round has run)."""
        if not self._has_appearance_targets() or self.unlabeled_pixels is None:
            return 0
        return round(self.config.num_semantic_rays_per_batch * self.config.appearance_ray_fraction)

    def refresh_semantic_supervision(self, indices: list[int]) -> None:
        super().refresh_semantic_supervision(indices)
        self.__dict__.pop("semantic_pixels", None)  # rebuilt with the new corrections on the next stage-2 batch

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> list:
        callbacks = list(super().get_training_callbacks(training_callback_attributes))
        pipeline = training_callback_attributes.pipeline
        if pipeline is not None:
            self._has_appearance_targets = lambda: getattr(pipeline.model, "appearance_targets", None) is not None
        stage_of = getattr(pipeline.model, "in_semantic_stage", None) if pipeline is not None else None
        if stage_of is None:  # a model without stages: RGB batches (with their labels) throughout
            return callbacks

        def follow_model_stage(step: int) -> None:
            self.semantic_stage = bool(stage_of(step))

        return [TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], follow_model_stage), *callbacks]

    def next_train(self, step: int) -> tuple[RayBundle, dict]:
        if self.semantic_stage:
            self.train_count += 1
            appearance_rays = self._appearance_rays()
            batch, indices = self.semantic_pixels.sample(
                self.config.num_semantic_rays_per_batch - appearance_rays, self.config.pseudo_ray_fraction
            )
            if appearance_rays:
                extra, extra_indices = self.unlabeled_pixels.sample(appearance_rays)  # type: ignore[union-attr]
                batch = {key: torch.cat([value, extra[key].to(value)]) for key, value in batch.items()}
                indices = torch.cat([indices, extra_indices])
            batch["indices"] = indices
            ray_bundle = self.train_ray_generator(indices)
        else:
            ray_bundle, batch = super().next_train(step)
        ray_bundle.metadata[PIXEL_RGB] = batch["image"].to(ray_bundle.origins.device)
        return ray_bundle, batch

    def get_train_rays_per_batch(self) -> int:
        if self.semantic_stage:
            return self.config.num_semantic_rays_per_batch
        return super().get_train_rays_per_batch()
