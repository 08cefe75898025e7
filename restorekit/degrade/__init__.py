"""Degradation synthesis: Real-ESRGAN's high-order degradation model as a seeded, batched engine.

Quick use::

    from restorekit.degrade import degrade, make_pairs

    result = degrade(hr, "realesrgan", scale=4, seed=0)  # hr: (B, 3, H, W) in [0, 1]
    result.lr            # (B, 3, H/4, W/4) in [0, 1]
    result.params[0]     # every sampled parameter of image 0, JSON-able
    result.kernel_image(0)  # (1, 3, h, w) picture of its blur kernels

    pairs = make_pairs(hr, "realesrgan", scale=4, seed=0, crop=400)  # HR/LR training pairs

Modules: :mod:`.config` (typed config, presets, ``field=value`` overrides),
:mod:`.kernels` (blur and sinc kernels), :mod:`.ops` (filtering, USM, resizing, noise),
:mod:`.jpeg` (batched JPEG round trip with libjpeg's quality semantics),
:mod:`.pipeline` (sampling and execution), :mod:`.visualize` (kernel pictures).
"""

from __future__ import annotations

from .config import (
    FIELD_NAMES,
    PRESET_DESCRIPTIONS,
    PRESETS,
    DegradeConfig,
    describe_fields,
    get_preset,
    parse_overrides,
    resolve_config,
    split_overrides,
)
from .jpeg import jpeg_roundtrip
from .kernels import KERNEL_FAMILIES, blur_kernel, sinc_kernel
from .ops import RESIZE_MODES, filter2d, matlab_resize, usm_sharpen
from .pipeline import (
    DegradationPlan,
    DegradeResult,
    PairResult,
    apply_plans,
    degrade,
    image_seed,
    make_pairs,
    replay,
    sample_plan,
    sample_plans,
    target_size,
)
from .visualize import kernel_image, kernels_image

__all__ = [
    "FIELD_NAMES",
    "KERNEL_FAMILIES",
    "PRESETS",
    "PRESET_DESCRIPTIONS",
    "RESIZE_MODES",
    "DegradationPlan",
    "DegradeConfig",
    "DegradeResult",
    "PairResult",
    "apply_plans",
    "blur_kernel",
    "degrade",
    "describe_fields",
    "filter2d",
    "get_preset",
    "image_seed",
    "jpeg_roundtrip",
    "kernel_image",
    "kernels_image",
    "make_pairs",
    "matlab_resize",
    "parse_overrides",
    "replay",
    "resolve_config",
    "sample_plan",
    "sample_plans",
    "sinc_kernel",
    "split_overrides",
    "target_size",
    "usm_sharpen",
]
