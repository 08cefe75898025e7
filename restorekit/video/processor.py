"""Frame processors: what the video pipeline runs on each batch of frames.

A frame processor is any callable ``processor(pixels) -> pixels`` taking a float32 CPU batch
(B, 3, H, W) in [0, 1] and returning float32 (B, 3, H', W') in [0, 1] (on any device; the
pipeline moves it to the CPU). Every batch of one video must come out the same size.

Optional attributes a processor may have:

- ``fingerprint`` (str): identifies everything that changes its output (weights, scale,
  precision...). ``--resume`` refuses to mix chunks made with different fingerprints.
- ``process_alpha(alpha, size)``: upscale a (B, 1, H, W) alpha to ``size`` = (H', W').
  Without it, alpha is resized with :func:`resize_alpha`.

:func:`make_frame_processor` is the one place that builds the processor the CLI and other
front ends use; swapping in another engine (tiling, face restoration) means changing it only.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from ..device import ExecutionPlan, plan_for_model
from ..errors import InvalidParameterError, ModelIncompatibleError
from ..progress import ProgressCallback

logger = logging.getLogger(__name__)


@runtime_checkable
class FrameProcessor(Protocol):
    """``(B, 3, H, W) float32 [0, 1] -> (B, 3, H', W') float32 [0, 1]``."""

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor: ...


AlphaPath = Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]
"""``alpha_path(alpha (B, 1, H, W), (H', W')) -> (B, 1, H', W')``, values in [0, 1]."""


def resize_alpha(alpha: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a (B, 1, H, W) alpha to ``size`` = (H', W') with bicubic interpolation
    (antialiased when shrinking), clamped to [0, 1]."""
    if tuple(alpha.shape[-2:]) == tuple(size):
        return alpha
    shrinking = size[0] < alpha.shape[-2] or size[1] < alpha.shape[-1]
    resized = F.interpolate(alpha, size=size, mode="bicubic", align_corners=False, antialias=shrinking)
    return resized.clamp_(0.0, 1.0)


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(H, W) times ``scale``, rounded, at least 1."""
    return max(1, round(height * scale)), max(1, round(width * scale))


_fingerprints: weakref.WeakKeyDictionary[torch.nn.Module, str] = weakref.WeakKeyDictionary()


def weights_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of a module's class, parameter names, shapes and bytes."""
    cached = _fingerprints.get(module)
    if cached is not None:
        return cached
    digest = hashlib.sha256(type(module).__name__.encode())
    for name, tensor in module.state_dict().items():
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    value = digest.hexdigest()[:16]
    _fingerprints[module] = value
    return value


class ModelFrameProcessor:
    """Run a spandrel image model on whole frames (no tiling), in batches.

    Args:
        model: a spandrel ``ImageModelDescriptor`` (e.g. from :func:`restorekit.models.load_model`).
        outscale: final scale relative to the input; the model's output is resized to it
            (bicubic, antialiased when shrinking) when it differs from the model's scale.
            None keeps the model's scale.
        device, precision: see :mod:`restorekit.device` (``auto`` = bf16 channels_last on
            CPUs with AVX512-BF16).

    The network runs on ``plan.device`` in ``plan.dtype``; frames that do not meet the model's
    size requirements are padded (reflect, then replicate) and the padding is cropped off.
    """

    def __init__(
        self,
        model: Any,
        *,
        outscale: float | None = None,
        device: str = "auto",
        precision: str = "auto",
    ) -> None:
        from ..models import prepared_network

        if getattr(model, "input_channels", 3) != 3 or getattr(model, "output_channels", 3) != 3:
            raise ModelIncompatibleError(
                f"{type(model.model).__name__} takes {model.input_channels} and gives "
                f"{model.output_channels} channels; video frames need an RGB-to-RGB model."
            )
        if outscale is not None and not 0.05 <= float(outscale) <= 16:
            raise InvalidParameterError(f"outscale must be between 0.05 and 16, got {outscale}.")
        self.descriptor = model
        self.scale = int(getattr(model, "scale", 1))
        self.outscale = float(outscale) if outscale is not None else float(self.scale)
        self.plan: ExecutionPlan = plan_for_model(model, device, precision)
        self.network = prepared_network(model.model, self.plan)
        self._call = getattr(model, "_call_fn", None) or (lambda net, x: net(x))
        self.fingerprint = (
            f"model={type(model.model).__name__}:{weights_fingerprint(model.model)} "
            f"scale={self.scale} outscale={self.outscale:g} "
            f"precision={self.plan.precision} device={self.plan.device.type}"
        )

    def describe(self) -> str:
        name = getattr(getattr(self.descriptor, "architecture", None), "name", type(self.descriptor.model).__name__)
        return f"{name} x{self.scale} -> x{self.outscale:g} on {self.plan.describe()}"

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float32 [0, 1] -> (B, 3, round(H*outscale), round(W*outscale)) on the CPU."""
        _, _, height, width = pixels.shape
        with torch.inference_mode():
            batch = self.plan.prepare_input(pixels)
            pad_w, pad_h = self.descriptor.size_requirements.get_padding(width, height)
            if pad_w or pad_h:
                batch = _pad(batch, pad_w, pad_h)
            output = self._call(self.network, batch)
            if pad_w or pad_h:
                output = output[..., : height * self.scale, : width * self.scale]
            # channels_last, so the pipeline's (B, H, W, C) view of the result needs no copy
            output = output.to(device="cpu", dtype=torch.float32, memory_format=torch.channels_last)
            if self.outscale != self.scale:
                size = scaled_size(height, width, self.outscale)
                shrinking = size[0] < output.shape[-2]
                output = F.interpolate(output, size=size, mode="bicubic", align_corners=False, antialias=shrinking)
            return output.clamp_(0.0, 1.0)


def _pad(batch: torch.Tensor, pad_w: int, pad_h: int) -> torch.Tensor:
    """Pad right/bottom: reflect as far as the image allows, then replicate."""
    height, width = batch.shape[-2:]
    reflect_w, reflect_h = min(pad_w, width - 1), min(pad_h, height - 1)
    if reflect_w or reflect_h:
        batch = F.pad(batch, (0, reflect_w, 0, reflect_h), mode="reflect")
    if pad_w - reflect_w or pad_h - reflect_h:
        batch = F.pad(batch, (0, pad_w - reflect_w, 0, pad_h - reflect_h), mode="replicate")
    return batch


def make_frame_processor(
    model: Any = None,
    *,
    outscale: float | None = None,
    device: str = "auto",
    precision: str = "auto",
    allow_paths: bool = True,
    download: bool = True,
    progress: ProgressCallback | None = None,
) -> ModelFrameProcessor:
    """Build the frame processor front ends use for ``restorekit video``.

    ``model`` is a registry name, a file path, a loaded spandrel descriptor, or None for the
    registry's default upscale model. This is the seam where the tiled upscale engine and the
    face pipeline plug in: front ends call only this function.
    """
    if model is None or isinstance(model, str):
        from ..models import load_model
        from ..registry import load_registry

        reference = model or load_registry().default_model("upscale").name
        model = load_model(
            reference, purpose="upscale", allow_paths=allow_paths, download=download, progress=progress
        )
    return ModelFrameProcessor(model, outscale=outscale, device=device, precision=precision)
