"""A batched, deterministic forward pass for GFPGANv1Clean (spandrel's ``GFPGAN``).

The official StyleGAN2 decoder runs each modulated convolution as a *grouped* convolution
with one weight copy per sample (``groups=batch``). oneDNN handles grouped convolutions
poorly, so batching faces made the official network slower per face, and every call
modulates and re-lays-out the whole weight tensor.

Here the modulation is moved onto the activations instead, which is the same arithmetic:

    conv(x, W * s) * d  ==  conv(x * s, W) * d,   d = rsqrt(sum_{i,k} (W[o,i,k] s[i])^2 + eps)
                                                  = rsqrt((s * s) @ sum_k W[o,:,k]^2 + eps)

so every layer becomes one ordinary convolution over the whole batch with the shared weight
(channels_last and bf16 friendly), and the demodulation is a per-(sample, channel) scale
folded into the noise/bias/activation step. Bilinear upsampling is linear per channel, so
the input scaling can happen before it, on four times fewer pixels.

The stored noise buffers are used (``randomize_noise=False``), so results are deterministic
and a face gives the same result alone or in a batch. The output equals spandrel's
``model(x, return_rgb=False, randomize_noise=False)[0]`` up to float rounding (tested).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SQRT2 = math.sqrt(2.0)


class _ModConv:
    """Precomputed pieces of one ``ModulatedConv2d``: the shared weight (in the network's
    dtype and layout) and the per-(out, in) sums of squared weights for demodulation."""

    def __init__(self, module: nn.Module, memory_format: torch.memory_format) -> None:
        self.module = module
        weight = module.weight[0]  # (c_out, c_in, k, k)
        self.weight = weight.contiguous(memory_format=memory_format)
        self.padding = int(module.padding)
        self.demodulate = bool(module.demodulate)
        self.upsample = module.sample_mode == "upsample"
        if module.sample_mode == "downsample":  # pragma: no cover - not used by GFPGANv1Clean
            raise NotImplementedError("downsampling modulated convs are not used by GFPGANv1Clean")
        self.eps = float(module.eps)
        self.weight_sq = weight.float().pow(2).sum(dim=(2, 3)).t().contiguous() if self.demodulate else None

    def styles(self, latent: Tensor) -> tuple[Tensor, Tensor | None]:
        """(B, c_in) input scales in float32 and (B, c_out) demodulation factors (or None)."""
        modulation = self.module.modulation
        scale = F.linear(latent.float(), modulation.weight.float(), modulation.bias.float())
        if self.weight_sq is None:
            return scale, None
        demod = torch.rsqrt(scale.square() @ self.weight_sq + self.eps)
        return scale, demod

    def conv(self, x: Tensor, scale: Tensor) -> Tensor:
        """Modulated convolution on the activations: conv(x * s, W) for the whole batch."""
        x = x * scale.to(x.dtype)[:, :, None, None]
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return F.conv2d(x, self.weight, padding=self.padding)


class FastGFPGAN(nn.Module):
    """Wraps a (prepared) spandrel ``GFPGANv1Clean``; ``forward(x)`` takes faces in [-1, 1],
    shape (B, 3, 512, 512), and returns the restored faces in about [-1, 1].

    The wrapped module's parameters are used as they are (any dtype/device/layout); only
    derived tensors are computed once here.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        decoder = model.stylegan_decoder
        channels_last = model.final_conv.weight.is_contiguous(memory_format=torch.channels_last)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._style_convs = [_ModConv(decoder.style_conv1.modulated_conv, self.memory_format)] + [
            _ModConv(conv.modulated_conv, self.memory_format) for conv in decoder.style_convs
        ]
        self._to_rgbs = [_ModConv(decoder.to_rgb1.modulated_conv, self.memory_format)] + [
            _ModConv(rgb.modulated_conv, self.memory_format) for rgb in decoder.to_rgbs
        ]
        self._noise = [getattr(decoder.noises, f"noise{i}") for i in range(decoder.num_layers)]

    # ------------------------------------------------------------------ decoder steps

    def _style_conv(self, layer: nn.Module, pieces: _ModConv, x: Tensor, latent: Tensor, noise: Tensor) -> Tensor:
        scale, demod = pieces.styles(latent)
        assert demod is not None
        noise_term = (layer.weight * noise).to(x.dtype)
        out = pieces.conv(x, scale)
        out = torch.addcmul(layer.bias.to(x.dtype), out, (demod * SQRT2).to(x.dtype)[:, :, None, None])
        out = out.add_(noise_term)
        return F.leaky_relu_(out, 0.2)

    def _to_rgb(self, layer: nn.Module, pieces: _ModConv, x: Tensor, latent: Tensor, skip: Tensor | None) -> Tensor:
        scale, _ = pieces.styles(latent)
        bias = layer.bias.to(x.dtype)
        out = pieces.conv(x, scale).add_(bias)
        if skip is not None:
            if layer.upsample:
                skip = F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
            out = out.add_(skip)
        return out

    def forward(self, x: Tensor) -> Tensor:
        model = self.model
        # encoder (the U-Net half): the network's own modules
        feat = F.leaky_relu_(model.conv_body_first(x), negative_slope=0.2)
        skips: list[Tensor] = []
        for block in model.conv_body_down:
            feat = block(feat)
            skips.insert(0, feat)
        feat = F.leaky_relu_(model.final_conv(feat), negative_slope=0.2)
        style_code = model.final_linear(feat.reshape(feat.shape[0], -1))
        latent = style_code.view(style_code.shape[0], -1, model.num_style_feat)
        conditions: list[Tensor] = []
        for i in range(model.log_size - 2):
            feat = feat + skips[i]
            feat = model.conv_body_up[i](feat)
            conditions.append(model.condition_scale[i](feat))
            conditions.append(model.condition_shift[i](feat))

        # decoder: StyleGAN2 with SFT, modulation on the activations
        decoder = model.stylegan_decoder
        out = decoder.constant_input.weight.expand(latent.shape[0], -1, -1, -1)
        out = out.contiguous(memory_format=self.memory_format)
        out = self._style_conv(decoder.style_conv1, self._style_convs[0], out, latent[:, 0], self._noise[0])
        skip = self._to_rgb(decoder.to_rgb1, self._to_rgbs[0], out, latent[:, 1], None)
        i = 1
        for level in range(len(decoder.to_rgbs)):
            conv1, conv2 = decoder.style_convs[2 * level], decoder.style_convs[2 * level + 1]
            out = self._style_conv(conv1, self._style_convs[1 + 2 * level], out, latent[:, i], self._noise[1 + 2 * level])
            if i < len(conditions):
                scale, shift = conditions[i - 1], conditions[i]
                if decoder.sft_half:
                    half = out.shape[1] // 2
                    out[:, half:].mul_(scale).add_(shift)  # out is this pass's own tensor
                else:
                    out.mul_(scale).add_(shift)
            out = self._style_conv(conv2, self._style_convs[2 + 2 * level], out, latent[:, i + 1], self._noise[2 + 2 * level])
            skip = self._to_rgb(decoder.to_rgbs[level], self._to_rgbs[1 + level], out, latent[:, i + 2], skip)
            i += 2
        return skip


def fast_gfpgan(model: Any) -> FastGFPGAN:
    """A :class:`FastGFPGAN` around a spandrel ``GFPGANv1Clean`` module."""
    return FastGFPGAN(model)
