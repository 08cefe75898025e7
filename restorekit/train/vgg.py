"""The VGG feature network of the perceptual loss, and its ImageNet weights from the registry.

Layer names follow basicsr (``conv1_1``, ``relu1_1``, ``pool1`` ...), so ``layer_weights``
written for basicsr work unchanged; weights use torchvision's keys (``features.0.weight`` ...,
the layout of ``vgg19-dcbb9e9d.pth``). The ImageNet VGG19 weights are the registry model
``vgg19``; :func:`load_vgg_weights` resolves it, and offline without it raises one clear error
that names ``restorekit models download vgg19`` / ``restorekit models import FILE`` and the
way to train without a perceptual loss (``perceptual_weight=0``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import (
    DownloadError,
    InvalidParameterError,
    ModelIncompatibleError,
    ModelNotFoundError,
)
from ..progress import ProgressCallback

logger = logging.getLogger(__name__)

VGG_WEIGHTS_MODEL = "vgg19"
"""The registry model with torchvision's ImageNet VGG19 weights (``vgg19-dcbb9e9d.pth``)."""

CFGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
"""torchvision's layer configurations: channels of each 3x3 conv, ``M`` for a 2x2 max pool."""

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
"""ImageNet normalisation for [0, 1] RGB input."""


def layer_names(vgg_type: str = "vgg19") -> list[str]:
    """basicsr's names of ``features``' modules, in order: ``conv1_1, relu1_1, ..., pool5``
    (with ``bn{b}_{i}`` after each conv for the ``*_bn`` types)."""
    base = vgg_type.removesuffix("_bn")
    if base not in CFGS:
        raise InvalidParameterError(f"Unknown vgg_type {vgg_type!r}; known: {', '.join(CFGS)} (and *_bn).")
    names: list[str] = []
    block, index = 1, 1
    for item in CFGS[base]:
        if item == "M":
            names.append(f"pool{block}")
            block, index = block + 1, 1
            continue
        names.append(f"conv{block}_{index}")
        if vgg_type.endswith("_bn"):
            names.append(f"bn{block}_{index}")
        names.append(f"relu{block}_{index}")
        index += 1
    return names


def vgg_template(vgg_type: str = "vgg19", num_classes: int = 1000) -> list[tuple[str, tuple[int, ...]]]:
    """torchvision's VGG state-dict keys and shapes, in order (``features.*`` then
    ``classifier.*``), the layout of its ImageNet checkpoints."""
    entries: list[tuple[str, tuple[int, ...]]] = []
    c_in, position = 3, 0
    batch_norm = vgg_type.endswith("_bn")
    for item in CFGS[vgg_type.removesuffix("_bn")]:
        if item == "M":
            position += 1
            continue
        c_out = int(item)
        entries += [(f"features.{position}.weight", (c_out, c_in, 3, 3)), (f"features.{position}.bias", (c_out,))]
        position += 1
        if batch_norm:
            entries += [(f"features.{position}.{k}", (c_out,)) for k in ("weight", "bias", "running_mean", "running_var")]
            entries.append((f"features.{position}.num_batches_tracked", ()))
            position += 1
        position += 1  # ReLU
        c_in = c_out
    for index, (c_out, c_in) in ((0, (4096, 512 * 7 * 7)), (3, (4096, 4096)), (6, (num_classes, 4096))):
        entries += [(f"classifier.{index}.weight", (c_out, c_in)), (f"classifier.{index}.bias", (c_out,))]
    return entries


class VGGFeatureExtractor(nn.Module):
    """VGG features at named layers (basicsr's ``VGGFeatureExtractor``, without downloads).

    Only the layers up to the deepest requested one are built. The weights are frozen unless
    ``requires_grad``.

    Args:
        layer_name_list: layers whose outputs are returned, e.g. ``["conv5_4"]`` (a ``conv``
            name is the feature *before* its ReLU, as ESRGAN's perceptual loss uses).
        vgg_type: ``vgg19`` (the perceptual loss's) or vgg11/13/16 and ``*_bn``.
        use_input_norm: normalise [0, 1] RGB input with ImageNet's mean and std.
        range_norm: map [-1, 1] input to [0, 1] first.
        requires_grad: train the VGG weights too (never for a perceptual loss).
        remove_pooling: drop the max-pool layers.
        pooling_stride: stride of the max-pool layers (2).
        state_dict: torchvision-keyed weights (``features.N.weight``...); None resolves the
            registry model ``vgg19`` (see :func:`load_vgg_weights`).

    Forward: (B, 3, H, W) float -> ``{layer name: (B, C_l, H_l, W_l)}``.
    """

    def __init__(
        self,
        layer_name_list: Sequence[str],
        vgg_type: str = "vgg19",
        use_input_norm: bool = True,
        range_norm: bool = False,
        requires_grad: bool = False,
        remove_pooling: bool = False,
        pooling_stride: int = 2,
        *,
        state_dict: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.layer_name_list = list(layer_name_list)
        self.use_input_norm = use_input_norm
        self.range_norm = range_norm
        self.names = layer_names(vgg_type)
        unknown = [name for name in self.layer_name_list if name not in self.names]
        if unknown or not self.layer_name_list:
            raise InvalidParameterError(
                f"Unknown {vgg_type} layers {unknown or '(none given)'}; use names such as "
                "conv1_2, relu2_2, conv5_4 (conv = before activation)."
            )
        last = max(self.names.index(name) for name in self.layer_name_list)
        if state_dict is None:
            if vgg_type != "vgg19":
                raise InvalidParameterError(
                    f"Only the ImageNet vgg19 weights are in the registry; pass state_dict for {vgg_type}."
                )
            state_dict = load_vgg_weights()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c_in = 3
        for position, name in enumerate(self.names[: last + 1]):
            if name.startswith("conv"):
                conv = nn.Conv2d(c_in, _channels(vgg_type, name), 3, padding=1)
                _load_layer(conv, state_dict, position, ("weight", "bias"))
                layers[name] = conv
                c_in = conv.out_channels
            elif name.startswith("bn"):
                bn = nn.BatchNorm2d(c_in)
                _load_layer(bn, state_dict, position, ("weight", "bias", "running_mean", "running_var"))
                layers[name] = bn
            elif name.startswith("relu"):
                layers[name] = nn.ReLU(inplace=False)
            elif not remove_pooling:
                layers[name] = nn.MaxPool2d(kernel_size=2, stride=pooling_stride)
        self.vgg_net = nn.Sequential(layers)
        self.vgg_net.train(requires_grad)
        for param in self.vgg_net.parameters():
            param.requires_grad = requires_grad
        if use_input_norm:
            self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> VGGFeatureExtractor:
        """Frozen feature networks stay in eval mode (batch norm statistics never move)."""
        super().train(mode)
        if not any(p.requires_grad for p in self.vgg_net.parameters()):
            self.vgg_net.eval()
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.range_norm:
            x = (x + 1) / 2
        if self.use_input_norm:
            x = (x - self.mean) / self.std
        wanted = set(self.layer_name_list)
        output: dict[str, torch.Tensor] = {}
        for name, layer in self.vgg_net.named_children():
            x = layer(x)
            if name in wanted:
                output[name] = x
        return output


def _channels(vgg_type: str, name: str) -> int:
    block, index = (int(v) for v in name[len("conv"):].split("_"))
    convs = [c for c in _blocks(CFGS[vgg_type.removesuffix("_bn")])[block - 1]]
    return int(convs[index - 1])


def _blocks(cfg: Sequence[int | str]) -> list[list[int | str]]:
    blocks: list[list[int | str]] = [[]]
    for item in cfg:
        if item == "M":
            blocks.append([])
        else:
            blocks[-1].append(item)
    return blocks


def _load_layer(module: nn.Module, state: Mapping[str, torch.Tensor], position: int, keys: Sequence[str]) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for key in keys:
        full = f"features.{position}.{key}"
        if full not in state:
            raise ModelIncompatibleError(
                f"The VGG weights have no {full}; they are not torchvision VGG weights of this type "
                "(expected keys like features.0.weight, as in vgg19-dcbb9e9d.pth)."
            )
        tensors[key] = state[full]
    try:
        module.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:
        raise ModelIncompatibleError(f"The VGG weights do not fit layer features.{position}: {exc}") from None


def load_vgg_weights(
    name: str = VGG_WEIGHTS_MODEL,
    *,
    download: bool = True,
    progress: ProgressCallback | None = None,
) -> dict[str, torch.Tensor]:
    """The ``features.*`` tensors of the registry model ``name`` (float32, CPU).

    Downloads the model when it is missing and allowed (hash-checked, converted once to
    safetensors). Only the feature tensors are read from disk; the classifier is skipped.

    Raises:
        ModelNotFoundError: not installed and not downloadable now (offline); the message names
            ``restorekit models download``, ``restorekit models import`` and
            ``perceptual_weight=0``.
        DownloadError: every source failed (same hints).
    """
    from safetensors import safe_open

    from ..models import resolve_model
    from ..registry.convert import sniff_format

    hint = (
        " The perceptual loss needs these ImageNet VGG19 weights; to train without it, set "
        "perceptual_weight=0."
    )
    try:
        resolved = resolve_model(name, download=download, progress=progress)
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(f"{exc}{hint}") from None
    except DownloadError as exc:
        raise DownloadError(f"{exc}{hint}") from None
    if sniff_format(resolved.path) != "safetensors":
        raise ModelIncompatibleError(f"{resolved.path} is not a safetensors file; re-import it.{hint}")
    state: dict[str, Any] = {}
    with safe_open(str(resolved.path), framework="pt", device="cpu") as handle:
        names = [key for key in handle.keys() if key.startswith("features.")]  # noqa: SIM118 (no __iter__)
        for key in names:
            state[key] = handle.get_tensor(key).float()
    logger.debug("loaded %d VGG feature tensors from %s", len(state), resolved.path)
    return state
