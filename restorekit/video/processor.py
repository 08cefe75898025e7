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

from ..errors import InvalidParameterError
from ..progress import ProgressCallback

logger = logging.getLogger(__name__)

DEFAULT_BATCH = 4
"""Frames per batch through a frame processor."""


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


class RestorerFrameProcessor:
    """Run a :class:`~restorekit.restore.Restorer` (upscale engine + optional faces) on
    batches of frames.

    ``fingerprint`` covers the settings and the weights of the upscale model, so ``--resume``
    never mixes chunks made differently. Zero-shot SR is refused: it would train a network
    per frame.
    """

    def __init__(self, restorer: Any) -> None:
        if restorer.settings.method == "zssr":
            raise InvalidParameterError(
                "Zero-shot SR trains one network per image, which is far too slow for video; "
                "use an upscale model (or 'resize') for videos."
            )
        self.restorer = restorer
        self.fingerprint = _settings_fingerprint(restorer)
        self.tracker = restorer.new_tracker()
        """Face tracks carried from batch to batch (None without tracked faces). A resumed
        run starts new tracks at its first chunk."""

    def describe(self) -> str:
        return str(self.restorer.description)

    def begin_clip(self, frame_rate: float | None) -> None:
        """A new clip starts (called by :func:`~restorekit.video.process_video`): fresh face
        tracks, timed at the clip's frame rate."""
        settings = self.restorer.settings.face_tracking
        if settings is not None and frame_rate:
            from dataclasses import replace

            self.restorer = _with_tracking(self.restorer, replace(settings, fps=float(frame_rate)))
        self.tracker = self.restorer.new_tracker()

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float32 [0, 1] -> (B, 3, H', W') float32 [0, 1] on the CPU."""
        result = self.restorer.run(pixels, tracker=self.tracker)
        # channels_last, so the pipeline's (B, H, W, C) view of the result needs no copy
        return result.pixels.contiguous(memory_format=torch.channels_last)

    def process_alpha(self, alpha: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return resize_alpha(alpha, size)


def _with_tracking(restorer: Any, tracking: Any) -> Any:
    """The restorer with other tracking settings (a shallow copy sharing the networks)."""
    import copy
    from dataclasses import replace

    clone = copy.copy(restorer)
    clone.settings = replace(restorer.settings, face_tracking=tracking)
    return clone


def _settings_fingerprint(restorer: Any) -> str:
    """Everything that changes a Restorer's output, as one string."""
    settings = restorer.settings
    parts = []
    for name in ("model", "denoise", "sharpness", "outscale", "width", "height", "tile", "overlap", "precision", "device", "face_model", "face_options", "face_batch", "color_fix", "face_tracking"):
        value = getattr(settings, name)
        if isinstance(value, torch.nn.Module) or hasattr(value, "model"):
            value = weights_fingerprint(value.model if hasattr(value, "model") else value)
        parts.append(f"{name}={value!r}")
    upscaler = getattr(restorer, "upscaler", None)
    if upscaler is not None:
        parts.append(f"weights={weights_fingerprint(upscaler.descriptor.model)} plan={upscaler.plan.describe()}")
    return " ".join(parts)


def make_frame_processor(
    model: Any = None,
    *,
    outscale: float | None = None,
    device: str = "auto",
    precision: str = "auto",
    allow_paths: bool = True,
    download: bool = True,
    progress: ProgressCallback | None = None,
    settings: Any = None,
) -> RestorerFrameProcessor:
    """Build the frame processor front ends use for ``restorekit video``.

    Either ``settings`` (a :class:`~restorekit.restore.RestoreSettings`, with face
    restoration, strengths, tiling...) or the simple arguments: ``model`` (a registry name,
    a file, a loaded descriptor or None for the default), ``outscale``, ``device`` and
    ``precision``.
    """
    from ..restore import Restorer, RestoreSettings

    if settings is None:
        settings = RestoreSettings(
            model=model, outscale=outscale, device=device, precision=precision, allow_paths=allow_paths, download=download
        )
    return RestorerFrameProcessor(Restorer(settings, progress=progress))
