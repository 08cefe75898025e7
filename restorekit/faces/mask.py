"""Paste-back masks in aligned-face space: a face-parsing mask or a feathered ellipse.

Both are (N, 1, S, S) float32 in [0, 1] for aligned faces of side S (512), zero along the
crop's border, so a face pasted back through them never shows the square crop's edge,
however large the face is in the output.

The parsing mask follows facexlib's ``FaceRestoreHelper.paste_faces_to_input_image``: parse
the *restored* face, keep every class except background, hat, necklace, neck and cloth,
blur twice with a 101-tap Gaussian (sigma 11), and zero a 10-pixel border.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ModelIncompatibleError

CELEBAMASK_HQ_LABELS = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)  # fmt: skip
"""Class order of ParseNet (PSFRGAN, CelebAMask-HQ's own order)."""

FACE_PARSING_PYTORCH_LABELS = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
    "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)  # fmt: skip
"""Class order of BiSeNet (face-parsing.PyTorch)."""

EXCLUDED_CLASSES = frozenset({"background", "hat", "neck_l", "neck", "cloth"})
"""Classes left out of the paste-back mask: background, hat, necklace, neck and cloth."""

BLUR_KERNEL = 101
BLUR_SIGMA = 11.0
BLUR_PASSES = 2
BORDER_PIXELS = 10
"""facexlib's mask smoothing at 512: two 101-tap Gaussian blurs (sigma 11), 10-px border zeroed."""

ELLIPSE_CENTRE = (256.0, 288.0)
ELLIPSE_RADII = (152.0, 192.0)
ELLIPSE_INNER = 0.7
"""The fallback ellipse at 512: centred between the eyes and the chin of the FFHQ template,
fully opaque inside 70% of its radii, fading to zero at its edge."""


class ParseNetLogits(nn.Module):
    """facexlib's ``ParseNet`` for inference, computing only the parsing logits.

    A copy of the network with its BatchNorms folded into the convolutions and its no-op
    layers (``x * 1.0`` for "no norm" and "no activation") removed; the image head
    (``out_img_conv``) is skipped. About 15% less work than the module's own forward, with
    the same logits up to float rounding (tested)."""

    def __init__(self, parsenet: nn.Module) -> None:
        super().__init__()
        self.net = fold_parsenet(parsenet)

    def forward(self, x: Tensor) -> Tensor:
        net = self.net
        feat = net.encoder(x)
        return net.out_mask_conv(net.decoder(feat + net.body(feat)))


class FirstOutput(nn.Module):
    """Wraps a parser whose forward returns a tuple; returns its first element (logits)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.net = module

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)[0]


def fold_parsenet(module: nn.Module) -> nn.Module:
    """An inference copy of facexlib's ``ParseNet``: every ``ConvLayer``'s BatchNorm folded
    into its convolution, and the ``x * 1.0`` stand-ins for "none" norms and activations
    replaced by identities. The original module is not touched."""
    import copy

    clone = copy.deepcopy(module).eval()
    for layer in clone.modules():
        if type(layer).__name__ != "ConvLayer":
            continue
        norm = layer.norm
        if norm.norm_type == "bn":
            bn, conv = norm.norm, layer.conv2d
            with torch.no_grad():
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                shift = bn.bias - bn.running_mean * scale
                if conv.bias is not None:
                    shift = shift + conv.bias * scale
                conv.weight.mul_(scale[:, None, None, None])
                conv.bias = nn.Parameter(shift)
            norm.norm = nn.Identity()
        elif norm.norm_type == "none":
            norm.norm = nn.Identity()
        if not isinstance(layer.relu.func, nn.Module):  # ReluLayer("none"): lambda x: x * 1.0
            layer.relu.func = nn.Identity()
    return clone


def _parsenet_logits(module: nn.Module) -> nn.Module:
    if all(hasattr(module, name) for name in ("encoder", "body", "decoder", "out_mask_conv")):
        return ParseNetLogits(module)
    return FirstOutput(module)


@dataclass(frozen=True)
class ParserSpec:
    """How to run one face-parsing architecture: its input normalisation (mean, std on
    [0, 1] RGB), how to make an inference network returning (N, classes, H, W) logits from
    the module, and its class names."""

    labels: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    inference: Callable[[nn.Module], nn.Module]

    @functools.cached_property
    def keep(self) -> Tensor:
        """(classes,) float32: 1 for classes inside the mask, 0 for excluded ones."""
        return torch.tensor([0.0 if name in EXCLUDED_CLASSES else 1.0 for name in self.labels])


PARSERS: Mapping[str, ParserSpec] = {
    "ParseNet": ParserSpec(CELEBAMASK_HQ_LABELS, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), _parsenet_logits),
    "BiSeNet": ParserSpec(FACE_PARSING_PYTORCH_LABELS, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), FirstOutput),
}
"""Parser architectures by class name (facexlib's ``ParseNet`` and ``BiSeNet``)."""

_INFERENCE: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()


def inference_parser(module: nn.Module) -> tuple[nn.Module, ParserSpec]:
    """The logits network for a facexlib parser (made once per module) and its spec."""
    spec = parser_spec(module)
    network = _INFERENCE.get(module)
    if network is None:
        network = spec.inference(module).eval()
        _INFERENCE[module] = network
    return network, spec


def parser_spec(module: nn.Module) -> ParserSpec:
    """The :class:`ParserSpec` for a facexlib parsing network instance."""
    name = type(module).__name__
    try:
        return PARSERS[name]
    except KeyError:
        raise ModelIncompatibleError(
            f"{name} is not a face parser RestoreKit knows; use parsing_parsenet or parsing_bisenet, or the ellipse mask."
        ) from None


@functools.lru_cache(maxsize=8)
def gaussian_kernel(size: int, sigma: float) -> Tensor:
    """A normalised 1-D Gaussian of ``size`` taps (``cv2.getGaussianKernel``), float64."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    kernel = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return kernel / kernel.sum()


def gaussian_blur(images: Tensor, size: int = BLUR_KERNEL, sigma: float = BLUR_SIGMA) -> Tensor:
    """Separable Gaussian blur of (N, C, H, W) with mirrored borders (OpenCV's default
    ``BORDER_REFLECT_101``), like ``cv2.GaussianBlur(image, (size, size), sigma)``."""
    n, c, h, w = images.shape
    radius = size // 2
    kernel = gaussian_kernel(size, float(sigma)).to(device=images.device, dtype=images.dtype)
    flat = images.reshape(n * c, 1, h, w)
    if radius >= h or radius >= w:  # reflect padding needs radius < side; replicate beyond
        flat = F.pad(flat, (radius, radius, radius, radius), mode="replicate")
    else:
        flat = F.pad(flat, (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel.view(1, 1, 1, size))
    flat = F.conv2d(flat, kernel.view(1, 1, size, 1))
    return flat.reshape(n, c, h, w)


def smooth_mask(mask: Tensor) -> Tensor:
    """facexlib's smoothing of a hard (N, 1, S, S) mask: blur twice, zero the border.

    The blur and border scale with ``S`` (they are facexlib's values at S = 512)."""
    side = int(mask.shape[-1])
    factor = side / 512.0
    kernel = max(3, round(BLUR_KERNEL * factor) | 1)
    sigma = BLUR_SIGMA * factor
    out = mask
    for _ in range(BLUR_PASSES):
        out = gaussian_blur(out, kernel, sigma)
    border = max(1, round(BORDER_PIXELS * factor))
    out = out.clone()
    out[..., :border, :] = 0
    out[..., -border:, :] = 0
    out[..., :, :border] = 0
    out[..., :, -border:] = 0
    return out.clamp_(0.0, 1.0)


def parse_labels(parser: Callable[[Tensor], Tensor], spec: ParserSpec, faces: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Per-pixel class indices of aligned faces.

    Args:
        parser: the logits network (:func:`inference_parser`; on the faces' device, in
            ``dtype``).
        spec: its :class:`ParserSpec`.
        faces: (N, 3, S, S) faces in [0, 1], float32.
        dtype: the network's input dtype (default: the faces' dtype).

    Returns:
        (N, S, S) int64 labels (indices into ``spec.labels``).
    """
    mean = torch.tensor(spec.mean, device=faces.device, dtype=faces.dtype).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=faces.device, dtype=faces.dtype).view(1, 3, 1, 1)
    x = (faces - mean) / std
    if dtype is not None:
        x = x.to(dtype)
    with torch.inference_mode():
        logits = parser(x).float()
    if logits.shape[-2:] != faces.shape[-2:]:
        logits = F.interpolate(logits, size=faces.shape[-2:], mode="bilinear", align_corners=False)
    return logits.argmax(dim=1)


def labels_mask(labels: Tensor, spec: ParserSpec) -> Tensor:
    """(N, S, S) labels -> (N, 1, S, S) float32 soft paste-back mask (:func:`smooth_mask`
    of the classes the mask keeps)."""
    keep = spec.keep.to(labels.device)
    return smooth_mask(keep[labels][:, None].to(torch.float32))


def parsing_mask(parser: Callable[[Tensor], Tensor], spec: ParserSpec, faces: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """The paste-back mask of aligned (restored) faces from a face parser: (N, 3, S, S)
    in [0, 1] -> (N, 1, S, S) float32 in [0, 1]. See :func:`parse_labels`."""
    return labels_mask(parse_labels(parser, spec, faces, dtype), spec)


@functools.lru_cache(maxsize=4)
def _ellipse(size: int) -> Tensor:
    """(1, 1, S, S) feathered ellipse over the face of an FFHQ-aligned crop."""
    # pixel centres of the S-sized crop, in the 512 template's pixel coordinates
    coords = (torch.arange(size, dtype=torch.float64) + 0.5) * (512.0 / size) - 0.5
    ys, xs = coords[:, None], coords[None, :]
    (centre_x, centre_y), (radius_x, radius_y) = ELLIPSE_CENTRE, ELLIPSE_RADII
    distance = torch.sqrt(((xs - centre_x) / radius_x) ** 2 + ((ys - centre_y) / radius_y) ** 2)
    inner, outer = ELLIPSE_INNER, 1.0
    t = ((outer - distance) / (outer - inner)).clamp(0.0, 1.0)
    mask = t * t * (3.0 - 2.0 * t)  # smoothstep: 1 inside, 0 from the ellipse's edge outwards
    return mask.to(torch.float32)[None, None]


def ellipse_mask(count: int, size: int = 512, *, device: torch.device | str = "cpu") -> Tensor:
    """(count, 1, size, size) feathered ellipse masks in aligned-face space.

    Covers forehead to chin and cheek to cheek of an FFHQ-aligned face, fades smoothly to
    zero over the outer 30% of the radius, and is zero well inside the crop's border.
    """
    return _ellipse(int(size)).to(device).expand(int(count), 1, size, size).clone()


def ellipse_extent(size: int = 512) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the ellipse's support, in aligned pixels (for tests)."""
    s = size / 512.0
    (cx, cy), (rx, ry) = ELLIPSE_CENTRE, ELLIPSE_RADII
    return ((cx - rx) * s, (cy - ry) * s, (cx + rx) * s, (cy + ry) * s)


__all__ = [
    "CELEBAMASK_HQ_LABELS",
    "EXCLUDED_CLASSES",
    "FACE_PARSING_PYTORCH_LABELS",
    "PARSERS",
    "ParserSpec",
    "ellipse_extent",
    "ellipse_mask",
    "fold_parsenet",
    "gaussian_blur",
    "inference_parser",
    "labels_mask",
    "parse_labels",
    "parser_spec",
    "parsing_mask",
    "smooth_mask",
]
