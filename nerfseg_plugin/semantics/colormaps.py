"""Float images for the viewer and renders: label colours, confidence/entropy maps and a fixed PCA of features."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int, Shaped
from torch import Tensor, nn


def colors_to_float(colors: Shaped[Tensor, "K 3"] | Shaped[np.ndarray, "K 3"]) -> Float[Tensor, "K 3"]:
    """Class colours as float RGB in [0, 1]; 8-bit colours (``LabelSpace.colors_uint8``) are divided by 255."""
    tensor = torch.as_tensor(colors)
    if tensor.is_floating_point():
        return tensor.float()
    return tensor.float() / 255.0


def label_colormap(
    labels: Int[Tensor, "*batch"],
    colors: Shaped[Tensor, "K 3"] | Shaped[np.ndarray, "K 3"],
    ignore_index: int,
    ignore_color: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> Float[Tensor, "*batch 3"]:
    """RGB image in [0, 1] of a label map. ``colors`` may be float in [0, 1] or 8-bit; ``ignore_color`` is float
    RGB in [0, 1].

    Pixels labelled ``ignore_index``, and any other label outside ``[0, K)``, take ``ignore_color``: this only
    draws, and a display path should not crash on a stray value (the metrics reject those instead).
    """
    colors = colors_to_float(colors).to(labels.device)
    num_classes = colors.shape[0]
    palette = torch.cat([colors, torch.tensor([ignore_color], dtype=colors.dtype, device=colors.device)], dim=0)
    labels = labels.long()
    lookup = torch.where((labels >= 0) & (labels < num_classes), labels, torch.full_like(labels, num_classes))
    return palette[lookup]


def probabilities_confidence_entropy(
    logits: Float[Tensor, "*batch K"],
) -> tuple[Float[Tensor, "*batch K"], Float[Tensor, "*batch 1"], Float[Tensor, "*batch 1"]]:
    """Softmax probabilities, the top-class probability, and the entropy normalised by ``log K`` into [0, 1].

    Normalising makes the entropy map comparable across scenes with different class counts: 0 is a one-hot
    prediction, 1 the uniform one. Entropy uses log-softmax, so saturated logits give 0 rather than NaN.
    """
    log_probs = F.log_softmax(logits.float(), dim=-1)
    probs = log_probs.exp()
    confidence = probs.max(dim=-1, keepdim=True).values
    num_classes = logits.shape[-1]
    # 0 * log 0 = 0: a -inf logit (an exactly impossible class) must not turn the entropy into NaN.
    entropy = -torch.where(probs > 0, probs * log_probs, torch.zeros_like(probs)).sum(dim=-1, keepdim=True)
    if num_classes > 1:
        entropy = (entropy / math.log(num_classes)).clamp(0.0, 1.0)
    else:
        entropy = torch.zeros_like(entropy)
    return probs, confidence, entropy


class FixedPCAProjection(nn.Module):
    """Projects C-channel features onto 3 principal components, scaled to [0, 1] for display as RGB.

    The basis is fitted once (explicit :meth:`fit`, or on the first call) and then frozen: refitting per frame
    makes colours flicker and flip sign as the camera moves. Mean, components and the per-component
    low/high percentiles (robust scaling: a few outlier features do not wash out the image) are buffers, so they
    are saved in checkpoints and a reloaded model draws the same colours.
    """

    mean: Tensor
    components: Tensor
    low: Tensor
    high: Tensor
    fitted: Tensor

    def __init__(
        self,
        in_dim: int,
        low_percentile: float = 1.0,
        high_percentile: float = 99.0,
        max_fit_samples: int = 1 << 16,
    ) -> None:
        super().__init__()
        if not 0.0 <= low_percentile < high_percentile <= 100.0:
            raise ValueError(f"need 0 <= low < high <= 100, got {low_percentile}, {high_percentile}")
        self.in_dim = in_dim
        self.low_percentile = low_percentile
        self.high_percentile = high_percentile
        self.max_fit_samples = max_fit_samples
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("components", torch.zeros(in_dim, 3))
        self.register_buffer("low", torch.zeros(3))
        self.register_buffer("high", torch.ones(3))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, features: Float[Tensor, "*batch C"]) -> FixedPCAProjection:
        """Fit the basis and the display range on ``features`` (at most ``max_fit_samples`` rows, evenly strided
        so that the fit is deterministic and needs no random state)."""
        self._check_dim(features)
        sample = features.detach().reshape(-1, self.in_dim).float()
        if sample.shape[0] == 0:
            raise ValueError("cannot fit a PCA projection on zero features")
        if sample.shape[0] > self.max_fit_samples:
            index = torch.linspace(0, sample.shape[0] - 1, self.max_fit_samples, device=sample.device).long()
            sample = sample[index]
        mean = sample.mean(dim=0)
        centred = sample - mean
        # Rows of vh are the principal directions, by decreasing variance; C < 3 leaves zero (grey) channels.
        vh = torch.linalg.svd(centred, full_matrices=False).Vh
        components = torch.zeros(self.in_dim, 3, device=sample.device)
        num = min(3, vh.shape[0])
        components[:, :num] = vh[:num].T
        # SVD signs are arbitrary; make each component's largest loading positive so a refit keeps its colours.
        largest = components.abs().argmax(dim=0)
        signs = torch.sign(components[largest, torch.arange(3, device=sample.device)])
        components = components * torch.where(signs == 0, torch.ones_like(signs), signs)
        projected = centred @ components
        low = torch.quantile(projected, self.low_percentile / 100.0, dim=0)
        high = torch.quantile(projected, self.high_percentile / 100.0, dim=0)
        self.mean.copy_(mean)
        self.components.copy_(components)
        self.low.copy_(low)
        self.high.copy_(torch.maximum(high, low + 1e-6))
        self.fitted.fill_(True)
        return self

    def refit(self, features: Float[Tensor, "*batch C"]) -> FixedPCAProjection:
        """Discard the frozen basis and fit a new one (e.g. after the features changed a lot during training)."""
        return self.fit(features)

    def _check_dim(self, features: Tensor) -> None:
        if features.shape[-1] != self.in_dim:
            raise ValueError(f"expected {self.in_dim}-channel features, got shape {tuple(features.shape)}")

    def forward(self, features: Float[Tensor, "*batch C"]) -> Float[Tensor, "*batch 3"]:
        """Display colours; detached, since nothing should be optimised through a visualisation."""
        self._check_dim(features)
        if not bool(self.fitted):
            self.fit(features)
        projected = (features.detach().float() - self.mean) @ self.components
        return ((projected - self.low) / (self.high - self.low)).clamp(0.0, 1.0)
