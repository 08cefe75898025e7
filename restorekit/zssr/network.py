"""The small image-specific network of ZSSR.

A plain stack of ``depth`` 3x3 convolutions (``width`` channels, ReLU between them). Its
input is the low-resolution image already interpolated to the output size; it predicts the
residual that is added back to that input (global skip connection).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ZSSRNet(nn.Module):
    """(B, C, H, W) interpolated image -> (B, C, H, W) super-resolved image.

    Every layer keeps the spatial size (zero padding), so any input size works. Each output
    pixel depends on a (2 * depth + 1)^2 window of the input (:attr:`receptive_radius`),
    which makes tiled inference with that much overlap exact.
    """

    def __init__(self, channels: int = 3, width: int = 64, depth: int = 8) -> None:
        super().__init__()
        self.channels = channels
        self.depth = depth
        layers: list[nn.Module] = []
        in_channels = channels
        for _ in range(depth - 1):
            layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            in_channels = width
        layers.append(nn.Conv2d(in_channels, channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    @property
    def receptive_radius(self) -> int:
        """Pixels of context each output pixel sees on every side."""
        return self.depth

    def reset_parameters(
        self,
        generator: torch.Generator,
        init_variance: float = 2.0,
        output_init_variance: float = 1e-3,
    ) -> None:
        """Seeded initialization: weights ~ N(0, variance / fan_in), zero biases.

        ``init_variance`` is for the hidden layers (2 is He's ReLU initialization) and
        ``output_init_variance`` for the last layer. A near-zero last layer makes the
        untrained network almost the identity, so training starts from the interpolated
        input, while well-scaled hidden layers let it learn at once. (The ZSSR reference
        uses 0.1 everywhere, which shrinks the signal layer by layer and stalls the first
        few hundred iterations.)
        """
        convs = [m for m in self.body if isinstance(m, nn.Conv2d)]
        with torch.no_grad():
            for index, module in enumerate(convs):
                variance = output_init_variance if index == len(convs) - 1 else init_variance
                fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
                weight = torch.empty(module.weight.shape, dtype=torch.float32)
                weight.normal_(0.0, math.sqrt(variance / fan_in), generator=generator)
                module.weight.copy_(weight)
                if module.bias is not None:
                    module.bias.zero_()

    def forward(self, interpolated: torch.Tensor) -> torch.Tensor:
        residual = self.body(interpolated)
        return interpolated + residual.to(interpolated.dtype)
