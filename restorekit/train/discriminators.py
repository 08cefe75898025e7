"""Discriminators for GAN training: Real-ESRGAN's U-Net with spectral norm, ESRGAN's VGG style.

Both follow basicsr 1.4.2 / realesrgan 0.3.0 layer for layer, with the same parameter and
buffer names, so their state dicts load into each other and option files written for
basicsr (``network_d: {type: UNetDiscriminatorSN, num_in_ch: 3, num_feat: 64}``) build the
same network through :func:`build_discriminator`.

Inputs are (B, C, H, W) float images in [0, 1] (the generator's output or the ground truth);
outputs are unbounded logits: per pixel (B, 1, H, W) for the U-Net, per image (B, 1) for the
VGG-style network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm

from ..errors import InvalidParameterError

__all__ = ["DISCRIMINATORS", "UNetDiscriminatorSN", "VGGStyleDiscriminator", "build_discriminator"]


class UNetDiscriminatorSN(nn.Module):
    """Real-ESRGAN's U-Net discriminator with spectral normalisation (SN).

    Three stride-2 convolutions down, three bilinear x2 upsamplings back, skip connections
    between matching resolutions, two extra convolutions, and a per-pixel realness logit.
    Every convolution except the first and the last is spectrally normalised (one power
    iteration per training-mode forward, state in ``*.weight_u`` / ``*.weight_v``).

    Args:
        num_in_ch: input channels (3 for RGB).
        num_feat: base feature channels (64 in Real-ESRGAN).
        skip_connection: add the encoder features to the decoder's (True in Real-ESRGAN).

    Input: (B, num_in_ch, H, W), H and W multiples of 8. Output: (B, 1, H, W) logits.
    """

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, skip_connection: bool = True) -> None:
        super().__init__()
        self.skip_connection = skip_connection
        self.conv0 = nn.Conv2d(num_in_ch, num_feat, kernel_size=3, stride=1, padding=1)
        # downsample
        self.conv1 = spectral_norm(nn.Conv2d(num_feat, num_feat * 2, 4, 2, 1, bias=False))
        self.conv2 = spectral_norm(nn.Conv2d(num_feat * 2, num_feat * 4, 4, 2, 1, bias=False))
        self.conv3 = spectral_norm(nn.Conv2d(num_feat * 4, num_feat * 8, 4, 2, 1, bias=False))
        # upsample
        self.conv4 = spectral_norm(nn.Conv2d(num_feat * 8, num_feat * 4, 3, 1, 1, bias=False))
        self.conv5 = spectral_norm(nn.Conv2d(num_feat * 4, num_feat * 2, 3, 1, 1, bias=False))
        self.conv6 = spectral_norm(nn.Conv2d(num_feat * 2, num_feat, 3, 1, 1, bias=False))
        # extra convolutions
        self.conv7 = spectral_norm(nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=False))
        self.conv8 = spectral_norm(nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(num_feat, 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-2] % 8 or x.shape[-1] % 8:
            raise InvalidParameterError(
                f"The U-Net discriminator needs (B, C, H, W) images with H and W multiples of 8, "
                f"got {tuple(x.shape)}; use a crop size (gt_size) that is a multiple of 8."
            )
        x0 = F.leaky_relu(self.conv0(x), negative_slope=0.2, inplace=True)
        x1 = F.leaky_relu(self.conv1(x0), negative_slope=0.2, inplace=True)
        x2 = F.leaky_relu(self.conv2(x1), negative_slope=0.2, inplace=True)
        x3 = F.leaky_relu(self.conv3(x2), negative_slope=0.2, inplace=True)

        x3 = F.interpolate(x3, scale_factor=2, mode="bilinear", align_corners=False)
        x4 = F.leaky_relu(self.conv4(x3), negative_slope=0.2, inplace=True)
        if self.skip_connection:
            x4 = x4 + x2
        x4 = F.interpolate(x4, scale_factor=2, mode="bilinear", align_corners=False)
        x5 = F.leaky_relu(self.conv5(x4), negative_slope=0.2, inplace=True)
        if self.skip_connection:
            x5 = x5 + x1
        x5 = F.interpolate(x5, scale_factor=2, mode="bilinear", align_corners=False)
        x6 = F.leaky_relu(self.conv6(x5), negative_slope=0.2, inplace=True)
        if self.skip_connection:
            x6 = x6 + x0

        out = F.leaky_relu(self.conv7(x6), negative_slope=0.2, inplace=True)
        out = F.leaky_relu(self.conv8(out), negative_slope=0.2, inplace=True)
        return self.conv9(out)


class VGGStyleDiscriminator(nn.Module):
    """ESRGAN's (and SRGAN's) VGG-style discriminator for 128x128 or 256x256 inputs.

    Pairs of 3x3 and stride-2 4x4 convolutions with batch norm and LeakyReLU(0.2) down to a
    4x4 map, then two linear layers to one realness logit per image.

    Args:
        num_in_ch: input channels (3 for RGB).
        num_feat: base feature channels (64 in ESRGAN).
        input_size: 128 (ESRGAN's crop) or 256; the input must have exactly this size.

    Input: (B, num_in_ch, input_size, input_size). Output: (B, 1) logits.
    """

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, input_size: int = 128) -> None:
        super().__init__()
        if input_size not in (128, 256):
            raise InvalidParameterError(
                f"VGGStyleDiscriminator input_size must be 128 or 256, got {input_size!r}; "
                "train with gt_size 128 (ESRGAN) or 256."
            )
        self.input_size = input_size
        nf = num_feat
        stages = [(num_in_ch, nf), (nf, nf * 2), (nf * 2, nf * 4), (nf * 4, nf * 8), (nf * 8, nf * 8)]
        if input_size == 256:
            stages.append((nf * 8, nf * 8))
        for index, (c_in, c_out) in enumerate(stages):
            # conv{i}_0: 3x3 stride 1 (with bias and no norm for the very first), conv{i}_1: 4x4 stride 2
            first = index == 0
            setattr(self, f"conv{index}_0", nn.Conv2d(c_in, c_out, 3, 1, 1, bias=first))
            if not first:
                setattr(self, f"bn{index}_0", nn.BatchNorm2d(c_out, affine=True))
            setattr(self, f"conv{index}_1", nn.Conv2d(c_out, c_out, 4, 2, 1, bias=False))
            setattr(self, f"bn{index}_1", nn.BatchNorm2d(c_out, affine=True))
        self.num_stages = len(stages)
        self.linear1 = nn.Linear(nf * 8 * 4 * 4, 100)
        self.linear2 = nn.Linear(100, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-2] != self.input_size or x.shape[-1] != self.input_size:
            raise InvalidParameterError(
                f"VGGStyleDiscriminator was built for {self.input_size}x{self.input_size} inputs, "
                f"got {tuple(x.shape)}; set gt_size to {self.input_size} or build it with "
                "input_size equal to the crop size (128 or 256)."
            )
        feat = x
        for index in range(self.num_stages):
            feat = getattr(self, f"conv{index}_0")(feat)
            if index:
                feat = getattr(self, f"bn{index}_0")(feat)
            feat = self.lrelu(feat)
            feat = self.lrelu(getattr(self, f"bn{index}_1")(getattr(self, f"conv{index}_1")(feat)))
        feat = feat.reshape(feat.size(0), -1)
        feat = self.lrelu(self.linear1(feat))
        return self.linear2(feat)


DISCRIMINATORS: dict[str, Callable[..., nn.Module]] = {
    "UNetDiscriminatorSN": UNetDiscriminatorSN,
    "VGGStyleDiscriminator": VGGStyleDiscriminator,
}
"""basicsr ``network_d.type`` -> class."""


def build_discriminator(options: Mapping[str, Any]) -> nn.Module:
    """Build a discriminator from a basicsr-style option mapping (``{"type": ..., **params}``).

    Raises :class:`InvalidParameterError` naming the type or parameter that is wrong.
    """
    params = dict(options)
    kind = params.pop("type", None)
    if kind not in DISCRIMINATORS:
        raise InvalidParameterError(
            f"Unknown discriminator type {kind!r}; known: {', '.join(sorted(DISCRIMINATORS))}."
        )
    try:
        return DISCRIMINATORS[kind](**params)
    except TypeError as exc:
        raise InvalidParameterError(f"Bad parameters for {kind}: {exc}.") from None
