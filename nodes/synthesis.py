"""Degradation, network interpolation, zero-shot SR and comparison nodes."""

from __future__ import annotations

from typing import Any

import torch

from restorekit.device import PRECISIONS
from restorekit.zssr.config import KERNEL_CHOICES

from . import comfy
from .base import RestoreKitNode
from .convert import (
    CATEGORY,
    NodeInputError,
    engine_call,
    engine_progress,
    image_to_pixels,
    pixels_to_image,
)

SEED_MAX = 2**63 - 1
ZSSR_KERNELS = KERNEL_CHOICES
"""Zero-shot kernel choices: bicubic, estimated per image (across-scale consistency fit), or named."""


class DegradeImage(RestoreKitNode):
    """Real-ESRGAN's second-order degradation (blur, resize, noise, JPEG, sinc), seeded."""

    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("low_quality", "parameters")
    OUTPUT_TOOLTIPS = (
        "The degraded images at 1/scale of the input size.",
        "Every sampled parameter of every image as JSON (replayable).",
    )
    FUNCTION = "degrade"
    CATEGORY = f"{CATEGORY}/degrade"
    DESCRIPTION = "Makes realistic low-quality versions of images (training pairs, stress tests) with Real-ESRGAN's pipeline."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        from restorekit.degrade import PRESETS

        presets = list(PRESETS)
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "High-quality images."}),
                "preset": (presets, {"default": "realesrgan", "tooltip": "realesrgan: the x4plus training settings; classic, light, bicubic: milder."}),
                "scale": ("FLOAT", {"default": 4.0, "min": 1.0, "max": 16.0, "step": 0.5, "tooltip": "Output size = input size / scale."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True, "tooltip": "Same seed, same degradation."}),
                "overrides": ("STRING", {"default": "", "multiline": True, "tooltip": "field=value per line or separated by ';', e.g. jpeg_range=30,60 (see 'restorekit degrade --list-fields')."}),
            }
        }  # fmt: skip

    @classmethod
    def check_inputs(cls, overrides: Any = None, preset: Any = None, **_: Any) -> str | None:
        if not isinstance(overrides, str) or not overrides.strip():
            return None
        from restorekit.degrade import resolve_config, split_overrides
        from restorekit.errors import RestoreKitError

        try:
            resolve_config(preset if isinstance(preset, str) else "realesrgan", split_overrides(overrides))
        except RestoreKitError as exc:
            return f"overrides: {exc}"
        return None

    def degrade(self, image: torch.Tensor, preset: str, scale: float, seed: int, overrides: str) -> tuple[torch.Tensor, str]:
        from restorekit.degrade import degrade, split_overrides

        pixels, _ = image_to_pixels(image)
        with engine_call():
            result = degrade(
                pixels, preset, scale=scale, seed=seed, overrides=split_overrides(overrides) or None,
                progress=engine_progress(), cancel=comfy.interrupted,
            )  # fmt: skip
        return pixels_to_image(result.lr), result.params_json()


class InterpolateModels(RestoreKitNode):
    """Blend two compatible upscale models: (1 - alpha) x A + alpha x B."""

    RETURN_TYPES = ("UPSCALE_MODEL",)
    RETURN_NAMES = ("upscale_model",)
    OUTPUT_TOOLTIPS = ("The blended model (use it like any upscale model).",)
    FUNCTION = "blend"
    CATEGORY = f"{CATEGORY}/models"
    DESCRIPTION = "Network interpolation: blends the weights of two models of the same architecture (e.g. a PSNR and a GAN model)."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        return {
            "required": {
                "model_a": ("UPSCALE_MODEL", {"tooltip": "Model at alpha = 0."}),
                "model_b": ("UPSCALE_MODEL", {"tooltip": "Model at alpha = 1 (same architecture and sizes as A)."}),
                "alpha": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "0 = A, 1 = B, between = a weight blend."}),
            }
        }  # fmt: skip

    def blend(self, model_a: Any, model_b: Any, alpha: float) -> tuple[Any]:
        from restorekit.interpolate import blend_descriptors

        with engine_call():
            return (blend_descriptors([model_a, model_b], alpha=alpha).descriptor,)


def _pair_label(pair: Any) -> str:
    """The dropdown label of a :class:`restorekit.strength.StrengthPair`."""
    return f"{pair.meaning}: {pair.low} -> {pair.high}"


class ModelStrength(RestoreKitNode):
    """A registry pair at a denoise strength or sharpness (e.g. realesr-general-x4v3's
    ``-dn``), loaded and blended on demand."""

    RETURN_TYPES = ("UPSCALE_MODEL", "STRING")
    RETURN_NAMES = ("upscale_model", "description")
    OUTPUT_TOOLTIPS = ("The model at that strength.", "Which models were blended, and how.")
    FUNCTION = "load"
    CATEGORY = f"{CATEGORY}/models"
    DESCRIPTION = "Denoise strength / sharpness for the registry's model pairs (network interpolation of the pair)."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        from restorekit.strength import strength_pairs

        labels = [_pair_label(pair) for pair in strength_pairs()]
        return {
            "required": {
                "pair": (labels, {"default": labels[0], "tooltip": "Registry pair: strength 0 is the first model, 1 the second (both downloaded on first use)."}),
                "strength": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "denoise: 1 removes the most noise (official -dn); sharpness: 1 is the GAN model's full detail."}),
            }
        }  # fmt: skip

    def load(self, pair: str, strength: float) -> tuple[Any, str]:
        from restorekit.strength import resolve_with_strength, strength_pairs

        chosen = next((p for p in strength_pairs() if _pair_label(p) == pair), None)
        if chosen is None:
            raise NodeInputError(f"Unknown model pair {pair!r}; pick one from the list.")
        with engine_call():
            descriptor = resolve_with_strength(
                chosen.high, allow_paths=False, progress=engine_progress(), cancel=comfy.interrupted,
                **{chosen.meaning: strength},
            )  # fmt: skip
        text = f"{chosen.meaning} {strength:g}: {(1 - strength):g} x {chosen.low} + {strength:g} x {chosen.high}"
        return descriptor, text


class ZeroShotUpscale(RestoreKitNode):
    """Zero-shot super-resolution (ZSSR): a small network learned from the image itself; no
    downloaded weights. The downscaling kernel is bicubic or estimated per image (across-scale consistency fit)."""

    RETURN_TYPES = ("IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("image", "kernel", "notice")
    OUTPUT_TOOLTIPS = (
        "The upscaled images.",
        "A picture of each image's estimated x2 kernel (kernel auto); black with bicubic.",
        "What the guards did: empty when every network passed (kernel check, transfer check one scale down, held-out strip).",
    )
    FUNCTION = "upscale"
    CATEGORY = f"{CATEGORY}/upscale"
    DESCRIPTION = (
        "Upscales by training a network on the image alone (ZSSR, CVPR 2018): works offline, with no model "
        "files. kernel 'auto' first estimates how the image was downscaled (across-scale consistency fit), for photos "
        "not made by an antialiased bicubic resize. Guards fall back to bicubic when a network trained one scale "
        "down does not beat it on the image itself, or the network does not beat it on a held-out strip of the image."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Images to upscale (each learns its own network)."}),
                "scale": ("FLOAT", {"default": 2.0, "min": 1.1, "max": 8.0, "step": 0.1, "tooltip": "Upscale factor; above 2 runs in equal steps of at most x2."}),
                "iterations": ("INT", {"default": 600, "min": 10, "max": 20000, "step": 10, "tooltip": "Training iterations per step (deterministic budget)."}),
                "seconds": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 3600.0, "step": 5.0, "tooltip": "Wall-clock budget for the whole job instead of iterations; 0 = use iterations."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "control_after_generate": True, "tooltip": "Same seed, same result (with iterations)."}),
                "precision": (list(PRECISIONS), {"default": "auto", "tooltip": "auto: bf16 training where it is fast, else fp32."}),
            },
            "optional": {
                "kernel": (list(ZSSR_KERNELS), {"default": ZSSR_KERNELS[0], "tooltip": "bicubic: the image was made by an antialiased bicubic resize. auto: estimate the kernel from each image (a Gaussian blur where one clearly fits, else the widest common resizer that is not too wide for the image: area, then opencv-cubic; scales 2, 4 and 8; a second). area: the image was halved by an area or bilinear resize (OpenCV's default). opencv-cubic: the image was made by OpenCV's cubic resize without antialiasing (integer scales). The guard also refuses a kernel clearly too wide for the image."}),
                "guard": ("BOOLEAN", {"default": True, "tooltip": "Fall back to bicubic where a network trained one scale down does not beat it on the image itself (transfer check), or the network does not beat it on a held-out strip of the image."}),
                "transfer_check": ("BOOLEAN", {"default": True, "tooltip": "With the guard on: off skips the transfer check alone (its one training one scale down can refuse a network that would have gained); the kernel check and the held-out strip still guard. Saves about a third of the time."}),
            },
        }  # fmt: skip

    def upscale(
        self, image: torch.Tensor, scale: float, iterations: int, seconds: float, seed: int, precision: str,
        kernel: str = "bicubic", guard: bool = True, transfer_check: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, str]:
        from restorekit.zssr import ZSSRConfig, kernel_picture, zssr_upscale_with_report
        from restorekit.zssr.config import kernel_setting

        if kernel not in ZSSR_KERNELS:
            raise NodeInputError(f"kernel must be one of {', '.join(ZSSR_KERNELS)}, got {kernel!r}.")
        pixels, _ = image_to_pixels(image)
        outputs, pictures, notices = [], [], []
        with engine_call():
            config = ZSSRConfig(
                iterations=iterations, time_budget_s=seconds or None, seed=seed,
                device=comfy.torch_device(), precision=precision,
                kernel=kernel_setting(kernel), bicubic_fallback=bool(guard), transfer_check=bool(transfer_check),
            )  # fmt: skip
            for index in range(pixels.shape[0]):  # one network per image
                result = zssr_upscale_with_report(pixels[index : index + 1], scale, config, progress=engine_progress(), cancel=comfy.interrupted)
                outputs.append(result.output)
                pictures.append(kernel_picture(result.kernels[0].kernel) if result.kernels else torch.zeros(1, 3, 256, 256))
                notices.extend(f"image {index + 1}: {notice}" if pixels.shape[0] > 1 else notice for notice in result.notices)
        return pixels_to_image(torch.cat(outputs)), pixels_to_image(torch.cat(pictures)), "\n".join(notices)


class CompareImages(RestoreKitNode):
    """Compare two images: side by side, an amplified difference, or a half/half split; with
    PSNR. Image B is resized to A's size when they differ."""

    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("comparison", "report")
    OUTPUT_TOOLTIPS = ("The comparison picture.", "PSNR of B against A per image (after resizing B to A's size).")
    FUNCTION = "compare"
    CATEGORY = f"{CATEGORY}/utils"
    DESCRIPTION = "Side-by-side, difference or split view of two images (e.g. original vs restored), with PSNR."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        from restorekit.compare import COMPARE_MODES

        return {
            "required": {
                "image_a": ("IMAGE", {"tooltip": "Reference (its size is kept)."}),
                "image_b": ("IMAGE", {"tooltip": "Compared image (resized to A's size when different)."}),
                "mode": (list(COMPARE_MODES), {"default": "side_by_side", "tooltip": "side_by_side: A | B; difference: |A - B| x gain; split: left half A, right half B."}),
                "gain": ("FLOAT", {"default": 4.0, "min": 1.0, "max": 64.0, "step": 0.5, "tooltip": "Amplification of the difference view."}),
            }
        }  # fmt: skip

    def compare(self, image_a: torch.Tensor, image_b: torch.Tensor, mode: str, gain: float) -> tuple[torch.Tensor, str]:
        from restorekit.compare import comparison_image

        with engine_call():
            picture, values = comparison_image(image_to_pixels(image_a)[0], image_to_pixels(image_b)[0], mode, gain)
        report = "; ".join(f"image {i}: PSNR {value:.2f} dB" for i, value in enumerate(values))
        return pixels_to_image(picture), report


__all__ = [
    "CompareImages",
    "DegradeImage",
    "InterpolateModels",
    "ModelStrength",
    "ZeroShotUpscale",
]
