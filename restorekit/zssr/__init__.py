"""Zero-shot super-resolution (ZSSR): upscaling learned from the image itself.

"Zero-Shot" Super-Resolution using Deep Internal Learning (Shocher, Cohen and Irani, CVPR
2018) trains a small CNN at test time on the input image alone, from pairs made by
downscaling the image itself. It needs no downloaded weights, adapts to the image's own
content and degradation (a blur kernel can be given), and works on unusual domains.

- :func:`zssr_upscale`: tensors (B, C, H, W) in [0, 1] -> upscaled tensors;
- :func:`zssr_upscale_image`: a :class:`~restorekit.imageio.DecodedImage` -> the upscaled
  image, keeping its bit depth, gray/alpha form and metadata;
- :class:`ZSSRConfig`: every setting, with CPU-friendly defaults;
- :func:`estimate_kernel`: the image's own x2 downscaling kernel, estimated with KernelGAN
  (Bell-Kligler, Shocher and Irani, NeurIPS 2019), for ``ZSSRConfig(kernel="auto")``.
"""

from __future__ import annotations

from .config import ZSSRConfig
from .engine import (
    StagePlan,
    StageReport,
    TransferCheck,
    ZSSRResult,
    plan_stages,
    zssr_upscale,
    zssr_upscale_image,
    zssr_upscale_image_with_report,
    zssr_upscale_with_report,
)
from .kernelgan import (
    KernelEstimate,
    KernelGANConfig,
    estimate_kernel,
    kernel_for_factor,
    kernel_picture,
)
from .resize import load_kernel, normalize_kernel

__all__ = [
    "KernelEstimate",
    "KernelGANConfig",
    "StagePlan",
    "StageReport",
    "TransferCheck",
    "ZSSRConfig",
    "ZSSRResult",
    "estimate_kernel",
    "kernel_for_factor",
    "kernel_picture",
    "load_kernel",
    "normalize_kernel",
    "plan_stages",
    "zssr_upscale",
    "zssr_upscale_image",
    "zssr_upscale_image_with_report",
    "zssr_upscale_with_report",
]
