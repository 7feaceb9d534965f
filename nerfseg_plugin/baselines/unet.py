"""A compact UNet trained from scratch on the labeled views only: the 2D segmentation baseline.

The network is the one the methods' 2D appearance model uses (``nerfseg_plugin.appearance.network``). Training
samples random crops with flips and 90-degree rotations (a drone image has no canonical "up"), and cross-entropy
skips the ignore label.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nerfseg_plugin.appearance.network import UNet


@dataclass
class UNetConfig:
    """Architecture and training settings of the UNet baseline."""

    base_channels: int = 16
    """Channels of the first level; each deeper level doubles them."""
    depth: int = 3
    """Down-sampling steps (the input is padded to a multiple of 2**depth)."""
    steps: int = 400
    """Optimisation steps."""
    batch_size: int = 8
    """Crops per step."""
    crop_size: int = 96
    """Side of the square training crops, in pixels."""
    learning_rate: float = 3e-3
    """Peak AdamW learning rate (one-cycle schedule)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    seed: int = 0
    """Seed of the weights and of the crop sampling."""
    num_threads: int = 0
    """CPU threads for training and inference (0: torch's default). On a CPU shared with other jobs, 1 avoids
    thread oversubscription, which slows small convolutions several-fold."""


@contextmanager
def _threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    if count > 0:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class UNetSegmenter:
    """Trains a :class:`UNet` on ``(image, labels)`` views and labels whole images."""

    def __init__(self, config: UNetConfig, num_classes: int, ignore_index: int) -> None:
        self.config = config
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's random state
            torch.manual_seed(config.seed)
            self.network = UNet(3, num_classes, config.base_channels, config.depth)
        self.mean = torch.zeros(3, 1, 1)
        self.std = torch.ones(3, 1, 1)
        self.losses: list[float] = []

    def _normalise(self, images: Tensor) -> Tensor:
        return (images.float() / 255.0 - self.mean) / self.std

    def _sample_batch(
        self, images: list[Tensor], labels: list[Tensor], weights: np.ndarray, rng: np.random.Generator
    ) -> tuple[Tensor, Tensor]:
        """Random crops (zero-padded / ignore-padded when the view is smaller), flips and 90-degree turns."""
        size = self.config.crop_size
        crops, targets = [], []
        for view in rng.choice(len(images), size=self.config.batch_size, p=weights):
            image, label = images[view], labels[view]
            pad_h, pad_w = max(0, size - image.shape[1]), max(0, size - image.shape[2])
            if pad_h or pad_w:
                image = F.pad(image, (0, pad_w, 0, pad_h))
                label = F.pad(label, (0, pad_w, 0, pad_h), value=self.ignore_index)
            top = int(rng.integers(0, image.shape[1] - size + 1))
            left = int(rng.integers(0, image.shape[2] - size + 1))
            image, label = image[:, top : top + size, left : left + size], label[top : top + size, left : left + size]
            turns = int(rng.integers(0, 4))
            image, label = torch.rot90(image, turns, (1, 2)), torch.rot90(label, turns, (0, 1))
            if rng.random() < 0.5:
                image, label = image.flip(2), label.flip(1)
            crops.append(image)
            targets.append(label)
        return torch.stack(crops), torch.stack(targets)

    def fit(self, views: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
        """Train on ``(image [H, W, 3] uint8, labels [H, W])`` pairs; returns the training time in seconds.
        Views are drawn in proportion to their labeled pixels, so sparse label maps are not over-sampled."""
        if not views:
            raise ValueError("no labeled view to train on")
        started = time.perf_counter()
        images = [torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1) for image, _ in views]
        labels = [torch.from_numpy(label.astype(np.int64)) for _, label in views]
        labeled = np.array([float((label != self.ignore_index).sum()) for label in labels])
        if labeled.sum() == 0:
            raise ValueError("the training views have no labeled pixel")
        pixels = torch.cat([image.reshape(3, -1) for image in images], dim=1).float() / 255.0
        self.mean, self.std = pixels.mean(dim=1).view(3, 1, 1), pixels.std(dim=1).clamp(min=1e-3).view(3, 1, 1)
        rng = np.random.default_rng(self.config.seed)
        optimizer = torch.optim.AdamW(
            self.network.parameters(), lr=self.config.learning_rate, weight_decay=self.config.weight_decay
        )
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.config.learning_rate, total_steps=self.config.steps, pct_start=0.1
        )
        self.network.train()
        self.losses = []
        with _threads(self.config.num_threads):
            self._train_loop(images, labels, labeled / labeled.sum(), rng, optimizer, schedule)
        self.network.eval()
        return time.perf_counter() - started

    def _train_loop(
        self,
        images: list[Tensor],
        labels: list[Tensor],
        weights: np.ndarray,
        rng: np.random.Generator,
        optimizer: torch.optim.Optimizer,
        schedule: torch.optim.lr_scheduler.LRScheduler,
    ) -> None:
        for _ in range(self.config.steps):
            crops, targets = self._sample_batch(images, labels, weights, rng)
            logits = self.network(self._normalise(crops))
            if bool((targets != self.ignore_index).any()):
                loss = F.cross_entropy(logits, targets, ignore_index=self.ignore_index)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                self.losses.append(loss.item())

    @torch.no_grad()
    def predict(self, image: np.ndarray) -> np.ndarray:
        """``[H, W]`` uint8 class indices for one ``[H, W, 3]`` uint8 image."""
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
        with _threads(self.config.num_threads):
            return self.network(self._normalise(tensor)).argmax(dim=1)[0].to(torch.uint8).numpy()
