"""Per-view 2D predictions kept for the 3D loss: a class (uint8) and a weight (float16) per pixel, 3 B/px."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor


class AppearanceTargets:
    """The 2D model's arg-max class and confidence weight per pixel of every training view, at the 2D resolution.

    ``weights`` are 0 where the 2D model is not confident enough and on the user's labeled pixels (real labels
    win there). Lookups resize to the caller's resolution (nearest), so a model rendering at a downscale (splatfacto's
    schedule) or a NeRF's ray batch (pixel indices at the training resolution) reads the same store.
    """

    def __init__(
        self,
        labels: list[Int[Tensor, "h w"]],
        weights: list[Float[Tensor, "h w"]],
        training_sizes: list[tuple[int, int]],
        ignore_index: int,
    ) -> None:
        if not len(labels) == len(weights) == len(training_sizes):
            raise ValueError("one label map, weight map and training size per view")
        self.labels = [label.to(torch.uint8) for label in labels]
        self.weights = [weight.to(torch.float16) for weight in weights]
        self.training_sizes = training_sizes
        self.ignore_index = ignore_index

    def __len__(self) -> int:
        return len(self.labels)

    def for_image(self, index: int, height: int, width: int) -> tuple[Int[Tensor, "H W"], Float[Tensor, "H W"]]:
        """Classes (int64) and weights (float32) of view ``index`` at ``height`` x ``width``."""
        labels, weights = self.labels[index], self.weights[index]
        if labels.shape != (height, width):
            labels = F.interpolate(labels[None, None].float(), size=(height, width), mode="nearest")[0, 0]
            weights = F.interpolate(weights[None, None].float(), size=(height, width), mode="nearest")[0, 0]
        return labels.long(), weights.float()

    def for_rays(self, indices: Int[Tensor, "R 3"]) -> tuple[Int[Tensor, " R"], Float[Tensor, " R"]]:
        """Classes and weights of rays given as nerfstudio's ``(camera index, row, column)`` at training size."""
        indices = indices.long().cpu()
        labels = torch.full((indices.shape[0],), self.ignore_index, dtype=torch.long)
        weights = torch.zeros(indices.shape[0], dtype=torch.float32)
        for view in torch.unique(indices[:, 0]).tolist():
            rows = indices[:, 0] == view
            height, width = self.labels[view].shape
            train_height, train_width = self.training_sizes[view]
            y = (indices[rows, 1] * height // train_height).clamp(max=height - 1)
            x = (indices[rows, 2] * width // train_width).clamp(max=width - 1)
            labels[rows] = self.labels[view][y, x].long()
            weights[rows] = self.weights[view][y, x].float()
        return labels, weights

    def nbytes(self) -> int:
        return sum(label.numel() * label.element_size() for label in self.labels) + sum(
            weight.numel() * weight.element_size() for weight in self.weights
        )
