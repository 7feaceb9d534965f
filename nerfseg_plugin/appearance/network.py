"""The 2D appearance network: a compact UNet (Ronneberger et al., 2015) sized for a CPU.

torchvision ships no UNet (and a pretrained backbone would need a weight download unless one is given as a local
checkpoint), so this is the classic encoder-decoder with skip connections: ``base_channels`` doubling per level,
batch norm, transposed-convolution upsampling. The 2D baseline (``rsseg-baseline --method unet``) and the methods'
appearance model share it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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
