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
folded into the bias step. Bilinear upsampling is linear per channel, so the input scaling
happens before it, on four times fewer pixels. The scales and demodulations of all 23
modulated layers come from two batched matrix products in float32, instead of a hundred
small operations.

The stored noise buffers are used (``randomize_noise=False``), so results are deterministic
and a face gives the same result alone or in a batch. The output equals spandrel's
``model(x, return_rgb=False, randomize_noise=False)[0]`` up to float rounding (tested).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SQRT2 = math.sqrt(2.0)


class _ModConv:
    """One ``ModulatedConv2d``: its shared weight in the network's dtype and layout, and
    where its scale and demodulation sit in the batched style tensors."""

    def __init__(self, module: nn.Module, index: int, latent: int, memory_format: torch.memory_format) -> None:
        self.index = index
        self.latent = latent
        self.weight = module.weight[0].contiguous(memory_format=memory_format)  # (c_out, c_in, k, k)
        self.out_channels, self.in_channels = self.weight.shape[:2]
        self.padding = int(module.padding)
        self.demodulate = bool(module.demodulate)
        self.upsample = module.sample_mode == "upsample"
        if module.sample_mode == "downsample":  # pragma: no cover - not used by GFPGANv1Clean
            raise NotImplementedError("downsampling modulated convolutions are not used by GFPGANv1Clean")

    def conv(self, x: Tensor, scale: Tensor) -> Tensor:
        """conv(x * s, W) for the whole batch; ``scale`` is (B, c_in) float32."""
        x = x * scale[:, : self.in_channels, None, None].to(x.dtype)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return F.conv2d(x, self.weight, padding=self.padding)


class FastGFPGAN(nn.Module):
    """Wraps a (prepared) spandrel ``GFPGANv1Clean``; ``forward(x)`` takes faces in [-1, 1],
    shape (B, 3, S, S) with S the model's ``out_size``, in the model's dtype, and returns
    the restored faces in about [-1, 1].

    The wrapped module's parameters are used as they are (any dtype/device/layout); only
    derived tensors (float32 modulation matrices, squared-weight sums) are made once here.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        decoder = model.stylegan_decoder
        channels_last = model.final_conv.weight.is_contiguous(memory_format=torch.channels_last)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

        # modulated layers in forward order, with the latent row each one reads
        order: list[tuple[nn.Module, int]] = [(decoder.style_conv1.modulated_conv, 0), (decoder.to_rgb1.modulated_conv, 1)]
        for level in range(len(decoder.to_rgbs)):
            i = 1 + 2 * level
            order += [
                (decoder.style_convs[2 * level].modulated_conv, i),
                (decoder.style_convs[2 * level + 1].modulated_conv, i + 1),
                (decoder.to_rgbs[level].modulated_conv, i + 2),
            ]
        self._layers = [_ModConv(module, k, latent, self.memory_format) for k, (module, latent) in enumerate(order)]
        self._latent_index = torch.tensor([latent for _, latent in order], device=model.final_conv.weight.device)

        # every layer's modulation (c_in x style) and squared-weight sums (c_in x c_out),
        # zero-padded to common sizes, for two batched products per forward pass
        device = model.final_conv.weight.device
        width = max(m.modulation.weight.shape[0] for m, _ in order)
        style_dim = order[0][0].modulation.weight.shape[1]
        out_width = max(layer.out_channels for layer in self._layers)
        self._modulation = torch.zeros(len(order), style_dim, width, device=device)
        self._modulation_bias = torch.zeros(len(order), 1, width, device=device)
        self._weight_sq = torch.zeros(len(order), width, out_width, device=device)
        self._eps = torch.zeros(len(order), 1, out_width, device=device)
        for k, (module, _) in enumerate(order):
            c_in = module.modulation.weight.shape[0]
            self._modulation[k, :, :c_in] = module.modulation.weight.detach().float().t()
            self._modulation_bias[k, 0, :c_in] = module.modulation.bias.detach().float()
            if module.demodulate:
                squares = module.weight[0].detach().float().pow(2).sum(dim=(2, 3))  # (c_out, c_in)
                self._weight_sq[k, :c_in, : squares.shape[0]] = squares.t()
                self._eps[k] = float(module.eps)
        self._noise = [getattr(decoder.noises, f"noise{i}") for i in range(decoder.num_layers)]

    def styles(self, latent: Tensor) -> tuple[Tensor, Tensor]:
        """(K, B, width) input scales and (K, B, out_width) demodulations (times sqrt 2,
        StyleConv's gain) for all K modulated layers, float32."""
        rows = latent.float()[:, self._latent_index].transpose(0, 1)  # (K, B, style)
        scales = torch.baddbmm(self._modulation_bias, rows, self._modulation)
        demods = torch.rsqrt(torch.bmm(scales.square(), self._weight_sq) + self._eps) * SQRT2
        return scales, demods

    # ------------------------------------------------------------------ decoder steps

    def _style_conv(self, layer: nn.Module, pieces: _ModConv, x: Tensor, scales: Tensor, demods: Tensor, noise: Tensor) -> Tensor:
        out = pieces.conv(x, scales[pieces.index])
        demod = demods[pieces.index, :, : pieces.out_channels, None, None].to(out.dtype)
        out = torch.addcmul(layer.bias.to(out.dtype), out, demod)
        out = out.add_((layer.weight * noise).to(out.dtype))
        return F.leaky_relu_(out, 0.2)

    def _to_rgb(self, layer: nn.Module, pieces: _ModConv, x: Tensor, scales: Tensor, skip: Tensor | None) -> Tensor:
        out = pieces.conv(x, scales[pieces.index]).add_(layer.bias.to(x.dtype))
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
        scales, demods = self.styles(latent)
        layers = iter(self._layers)
        out = decoder.constant_input.weight.expand(latent.shape[0], -1, -1, -1).contiguous(memory_format=self.memory_format)
        out = self._style_conv(decoder.style_conv1, next(layers), out, scales, demods, self._noise[0])
        skip = self._to_rgb(decoder.to_rgb1, next(layers), out, scales, None)
        for level in range(len(decoder.to_rgbs)):
            conv1, conv2 = decoder.style_convs[2 * level], decoder.style_convs[2 * level + 1]
            out = self._style_conv(conv1, next(layers), out, scales, demods, self._noise[1 + 2 * level])
            i = 1 + 2 * level
            if i < len(conditions):
                scale, shift = conditions[i - 1], conditions[i]
                if decoder.sft_half:
                    half = out.shape[1] // 2
                    out[:, half:].mul_(scale).add_(shift)  # out is this pass's own tensor
                else:
                    out.mul_(scale).add_(shift)
            out = self._style_conv(conv2, next(layers), out, scales, demods, self._noise[2 + 2 * level])
            skip = self._to_rgb(decoder.to_rgbs[level], next(layers), out, scales, skip)
        return skip
