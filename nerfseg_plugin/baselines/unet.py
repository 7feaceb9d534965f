"""A compact UNet trained from scratch on the labeled views only: the 2D segmentation baseline.

torchvision ships no UNet (and any pretrained backbone would need a weight download), so this is the classic
encoder-decoder with skip connections (Ronneberger et al., 2015), sized for a CPU: ``base_channels`` doubling per
level, batch norm, transposed-convolution upsampling. Training samples random crops with flips and 90-degree
rotations (a drone image has no canonical "up"), and cross-entropy skips the ignore label.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


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


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """UNet with ``depth`` levels; any input size (padded internally), logits at the input resolution."""

    def __init__(self, in_channels: int, num_classes: int, base_channels: int = 16, depth: int = 3) -> None:
        super().__init__()
        channels = [base_channels * 2**level for level in range(depth + 1)]
        self.depth = depth
        self.encoders = nn.ModuleList(
            [_double_conv(in_channels, channels[0])]
            + [_double_conv(channels[i], channels[i + 1]) for i in range(depth)]
        )
        self.upsamplers = nn.ModuleList(
            [nn.ConvTranspose2d(channels[i + 1], channels[i], 2, stride=2) for i in reversed(range(depth))]
        )
        self.decoders = nn.ModuleList([_double_conv(2 * channels[i], channels[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(channels[0], num_classes, 1)

    def forward(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        multiple = 2**self.depth
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        x = F.pad(images, (0, pad_w, 0, pad_h), mode="reflect" if min(height, width) > 1 else "replicate")
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x if level == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for upsample, decoder in zip(self.upsamplers, self.decoders, strict=True):
            x = decoder(torch.cat([skips.pop(), upsample(x)], dim=1))
        return self.head(x)[..., :height, :width]


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
