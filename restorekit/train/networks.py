"""Generators to train: RRDBNet (ESRGAN / Real-ESRGAN) and SRVGGNetCompact.

Parameter names and forward passes are basicsr's / Real-ESRGAN's, so a trained state dict
loads with spandrel (and therefore in ``restorekit upscale``, the nodes and the app) and
official checkpoints load here. RRDBNet x2 and x1 see a pixel-unshuffled input, as
Real-ESRGAN's x2plus does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelIncompatibleError
from .config import TrainConfig

logger = logging.getLogger(__name__)


def _small_init(modules: list[nn.Module], scale: float) -> None:
    """ESRGAN's initialisation: Kaiming normal scaled by ``scale``, zero bias (basicsr's
    ``default_init_weights``)."""
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                m.weight.data.mul_(scale)
                if m.bias is not None:
                    m.bias.data.fill_(0.0)


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; output ``x + 0.2 * conv5`` (residual scaling)."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        _small_init([self.conv1, self.conv2, self.conv3, self.conv4, self.conv5], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual in residual dense block: three RDBs, ``x + 0.2 * rdb3(rdb2(rdb1(x)))``."""

    def __init__(self, num_feat: int, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN's generator: (B, 3, h, w) in [0, 1] -> (B, 3, scale*h, scale*w).

    ``scale`` 1 or 2 pixel-unshuffles the input by 4 or 2 first (h, w must be divisible).
    """

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, scale: int = 4, num_feat: int = 64, num_block: int = 23, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.scale = scale
        unshuffle = {1: 4, 2: 2, 4: 1}
        if scale not in unshuffle:
            raise ModelIncompatibleError(f"RRDBNet trains x1, x2 or x4, not x{scale}.")
        self.unshuffle = unshuffle[scale]
        self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = F.pixel_unshuffle(x, self.unshuffle) if self.unshuffle > 1 else x
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


def _activation(act_type: str, num_feat: int) -> nn.Module:
    return {
        "relu": lambda: nn.ReLU(inplace=True),
        "prelu": lambda: nn.PReLU(num_parameters=num_feat),
        "leakyrelu": lambda: nn.LeakyReLU(negative_slope=0.1, inplace=True),
    }[act_type]()


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's compact net: convs at LR, one pixel shuffle, plus a nearest-upsampled
    input. (B, 3, h, w) in [0, 1] -> (B, 3, upscale*h, upscale*w)."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_conv: int = 16, upscale: int = 4, act_type: str = "prelu") -> None:
        super().__init__()
        self.upscale = upscale
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), _activation(act_type, num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), _activation(act_type, num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(upscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        return self.upsampler(out) + F.interpolate(x, scale_factor=self.upscale, mode="nearest")


def build_generator(config: TrainConfig) -> nn.Module:
    """A generator with fresh weights (ESRGAN's small init for RRDBNet)."""
    if config.generator == "RRDBNet":
        return RRDBNet(3, 3, config.scale, config.num_feat, config.num_block, config.num_grow_ch)
    return SRVGGNetCompact(3, 3, config.num_feat, config.num_conv, config.scale, config.act_type)


def generator_hyperparameters(state: Mapping[str, torch.Tensor]) -> dict[str, object]:
    """Read a generator's hyperparameters from its basicsr-named state dict."""
    if "conv_first.weight" in state:
        num_feat, in_ch = state["conv_first.weight"].shape[:2]
        blocks = {int(k.split(".")[1]) for k in state if k.startswith("body.")}
        scale = {3: 4, 12: 2, 48: 1}.get(int(in_ch))
        if scale is None:
            raise ModelIncompatibleError(f"RRDBNet with {in_ch} input channels is not an RGB x1/x2/x4 model.")
        return {
            "generator": "RRDBNet",
            "num_feat": int(num_feat),
            "num_block": len(blocks),
            "num_grow_ch": int(state["body.0.rdb1.conv1.weight"].shape[0]),
            "scale": scale,
        }
    if "body.0.weight" in state and state["body.0.weight"].dim() == 4:
        convs = sorted(int(k.split(".")[1]) for k, v in state.items() if k.startswith("body.") and v.dim() == 4 and k.endswith(".weight"))
        has_prelu = any(v.dim() == 1 and k.endswith(".weight") for k, v in state.items())
        last = state[f"body.{convs[-1]}.weight"]
        upscale = round(math.sqrt(last.shape[0] / 3))
        return {
            "generator": "SRVGGNetCompact",
            "num_feat": int(state["body.0.weight"].shape[0]),
            "num_conv": len(convs) - 2,
            "scale": upscale,
            "act_type": "prelu" if has_prelu else "relu",
        }
    raise ModelIncompatibleError(
        "The initial weights are neither an RRDBNet (ESRGAN/Real-ESRGAN) nor an SRVGGNetCompact; "
        "only these generators can be trained. Pick one of those models or train from scratch (pretrained='')."
    )


def load_generator_weights(network: nn.Module, state: Mapping[str, torch.Tensor], config: TrainConfig, source: str) -> None:
    """Copy ``state`` into ``network``; a mismatch is a clear :class:`ModelIncompatibleError`."""
    state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
    found = generator_hyperparameters(state)
    wanted = {k: getattr(config, k) for k in found}
    if found["generator"] == "SRVGGNetCompact":
        wanted["act_type"] = config.act_type if config.act_type == "prelu" else "relu"
    if found != wanted:
        changes = " ".join(f"{k}={v}" for k, v in found.items() if wanted.get(k) != v)
        raise ModelIncompatibleError(
            f"{source} is a {found['generator']} with {found}, but the run builds {wanted}. "
            f"Add --set {changes} (or pick another preset) to fine-tune it."
        )
    own = network.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ModelIncompatibleError(f"{source} lacks generator weights {missing[:3]}; it is not a {found['generator']} checkpoint.")
    network.load_state_dict({k: state[k] for k in own}, strict=True)
