"""The 2D appearance model: trains on weighted per-pixel targets of many views, predicts class probabilities."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from nerfseg_plugin.appearance.config import AppearanceConfig
from nerfseg_plugin.appearance.network import UNet


@dataclass
class AppearanceView:
    """One view as the 2D model sees it, channels first, at the 2D model's resolution."""

    inputs: Float[Tensor, "C H W"]
    """Normalised RGB (plus the normalised height channel when enabled); float16 to halve the memory of many views."""
    targets: Int[Tensor, "H W"]
    """Class per pixel, ``ignore_index`` where there is no target."""
    weights: Float[Tensor, "H W"]
    """Per-pixel weight of the target (0 where none)."""
    labeled: bool
    """A labeled view (its targets are the user's labels)."""


def fit_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """The size views are classified at: the training size, shrunk (aspect kept) so its longer side <= max_side."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


class AppearanceModel:
    """A UNet over RGB (+ height) trained with confidence-weighted cross-entropy; warm-starts across rounds."""

    def __init__(self, config: AppearanceConfig, in_channels: int, num_classes: int, ignore_index: int) -> None:
        self.config = config
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's random state
            torch.manual_seed(config.seed)
            self.network = UNet(in_channels, num_classes, config.base_channels, config.depth)
        if config.pretrained_encoder is not None:
            state = torch.load(config.pretrained_encoder, map_location="cpu", weights_only=True)
            missing, unexpected = self.network.load_state_dict(state, strict=False)
            if unexpected or len(missing) == len(self.network.state_dict()):
                raise ValueError(
                    f"{config.pretrained_encoder}: not a checkpoint of this UNet ({len(unexpected)} unknown keys, "
                    f"{len(missing)} missing)"
                )
        self.rounds_done = 0
        self.losses: list[float] = []
        self._rng = np.random.default_rng(config.seed)
        self._crop = config.crop_size

    def to(self, device: torch.device) -> AppearanceModel:
        self.network.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def fit(self, views: Sequence[AppearanceView]) -> None:
        """One round: ``steps_first_round`` steps from scratch, ``steps_later_rounds`` warm-started afterwards."""
        labeled = [v for v in views if v.labeled and bool((v.weights > 0).any())]
        others = [v for v in views if not v.labeled and bool((v.weights > 0).any())]
        if not labeled and not others:
            raise ValueError("no view has a 2D training target")
        steps = self.config.steps_first_round if self.rounds_done == 0 else self.config.steps_later_rounds
        optimizer = torch.optim.AdamW(
            self.network.parameters(), lr=self.config.learning_rate, weight_decay=self.config.weight_decay
        )
        warmup = max(1, steps // 10)  # linear warm-up, then cosine decay (one-cycle without its short-run limits)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda t: min(1.0, (t + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * t / max(steps, 1)))
        )
        class_weights = self._class_weights(views).to(self.device)
        # Crops no larger than the smallest view: padding small views up to crop_size would only cost compute.
        self._crop = min(self.config.crop_size, *(min(v.inputs.shape[1:]) for v in views))
        self.network.train()
        for _ in range(steps):
            inputs, targets, weights = self._sample_batch(labeled, others)
            logits = self.network(inputs)
            per_pixel = F.cross_entropy(
                logits, targets, weight=class_weights, ignore_index=self.ignore_index, reduction="none"
            )
            loss = (per_pixel * weights).sum() / weights.sum().clamp_min(1e-6)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            self.losses.append(float(loss.detach()))
        self.network.eval()
        self.rounds_done += 1

    def _class_weights(self, views: Sequence[AppearanceView]) -> Tensor:
        """(frequency / mean frequency) ** -class_balance over the weighted targets; classes without any target
        get the largest weight of the others (they cannot appear in a batch anyway)."""
        mass = torch.zeros(self.num_classes, dtype=torch.float64)
        for view in views:
            valid = (view.targets != self.ignore_index) & (view.weights > 0)
            mass += torch.bincount(view.targets[valid].long(), view.weights[valid].double(), self.num_classes)
        present = mass > 0
        weights = torch.ones(self.num_classes, dtype=torch.float64)
        if self.config.class_balance > 0 and bool(present.any()):
            frequency = mass[present] / mass[present].sum()
            weights[present] = (frequency * int(present.sum())) ** -self.config.class_balance
            weights[~present] = weights[present].max()
        return weights.float()

    def _sample_batch(
        self, labeled: list[AppearanceView], others: list[AppearanceView]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Random crops (padded when a view is smaller), flips and 90-degree turns: a drone image has no "up"."""
        size, rng = self._crop, self._rng
        crops, crop_targets, crop_weights = [], [], []
        for _ in range(self.config.batch_size):
            from_labeled = bool(labeled) and (not others or rng.random() < self.config.labeled_crop_fraction)
            pool = labeled if from_labeled else others
            view = pool[int(rng.integers(len(pool)))]
            inputs, targets, weights = view.inputs, view.targets, view.weights
            pad_h, pad_w = max(0, size - inputs.shape[1]), max(0, size - inputs.shape[2])
            if pad_h or pad_w:
                inputs = F.pad(inputs, (0, pad_w, 0, pad_h))
                targets = F.pad(targets, (0, pad_w, 0, pad_h), value=self.ignore_index)
                weights = F.pad(weights, (0, pad_w, 0, pad_h))
            top = int(rng.integers(0, inputs.shape[1] - size + 1))
            left = int(rng.integers(0, inputs.shape[2] - size + 1))
            window = (slice(top, top + size), slice(left, left + size))
            crop = [inputs[:, window[0], window[1]], targets[window], weights[window]]
            turns = int(rng.integers(0, 4))
            crop = [torch.rot90(crop[0], turns, (1, 2)), torch.rot90(crop[1], turns), torch.rot90(crop[2], turns)]
            if rng.random() < 0.5:
                crop = [crop[0].flip(2), crop[1].flip(1), crop[2].flip(1)]
            crops.append(crop[0])
            crop_targets.append(crop[1])
            crop_weights.append(crop[2])
        device = self.device
        return (
            torch.stack(crops).to(device, torch.float32),
            torch.stack(crop_targets).to(device),
            torch.stack(crop_weights).to(device),
        )

    @torch.no_grad()
    def predict(self, inputs: Float[Tensor, "C H W"]) -> Float[Tensor, "H W K"]:
        """Class probabilities of one view (averaged over the dihedral group with ``test_time_dihedral``)."""
        image = inputs[None].to(self.device, torch.float32)
        if not self.config.test_time_dihedral:
            return torch.softmax(self.network(image)[0], dim=0).permute(1, 2, 0)
        total = torch.zeros(self.num_classes, *image.shape[2:], device=self.device)
        for mirrored in (False, True):
            source = image.flip(3) if mirrored else image
            for turns in range(4):
                probabilities = torch.softmax(self.network(torch.rot90(source, turns, (2, 3)))[0], dim=0)
                probabilities = torch.rot90(probabilities, -turns, (1, 2))  # back to the view's orientation
                total += probabilities.flip(2) if mirrored else probabilities
        return (total / 8).permute(1, 2, 0)
