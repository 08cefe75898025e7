"""Upscale and face restoration nodes: thin adapters onto :mod:`restorekit.restore`."""

from __future__ import annotations

from typing import Any

import torch

from restorekit.compiled import COMPILE_MODES
from restorekit.device import PRECISIONS, UPSCALE_PRECISIONS
from restorekit.upscale import ALPHA_MODES, parse_tile

from . import comfy
from .base import RestoreKitNode
from .convert import (
    CATEGORY,
    alpha_to_mask,
    engine_call,
    engine_progress,
    image_to_pixels,
    mask_from_engine,
    mask_to_alpha,
    pixels_to_image,
)
from .models import FACE_MODEL

TILE_CHOICES = ["auto", "none", "128", "192", "256", "384", "512", "768", "1024"]
"""``auto`` picks the tile from free memory; ``none`` runs the whole image at once."""
FACE_SELECTIONS = ["all", "largest", "center", "0", "1", "2", "3"]
"""Which faces to restore: all, the largest, the one nearest the centre, or an index (0 = leftmost);
with tracked frames: the largest or most central track, or a track id."""
COLOR_FIXES = ["none", "wavelet", "adain"]
COMPILE_INPUT: tuple[Any, ...] = (
    list(COMPILE_MODES),
    {
        "default": "auto",
        "tooltip": "Compiled execution (torch.compile) of the upscale model and the face restorer for repeated tile, frame "
        "and face-batch shapes: auto compiles where the job's work pays for the compile (kept for later runs while the "
        "model is loaded; upscale models also cached on disk), on always, off never. Needs a C++ compiler.",
    },
)
COLOR_FIX_TOOLTIP = "Correct the result's colours towards the input's: wavelet (low frequencies, the usual choice) or adain (channel mean and spread)."


def _size(outscale: float, width: int, height: int) -> dict[str, Any]:
    """The engine's size arguments: an exact width/height when given (0 = not given), else
    the scale (0 = the model's own)."""
    if width or height:
        return {"width": width or None, "height": height or None}
    return {"outscale": outscale or None}


SIZE_INPUTS: dict[str, tuple[Any, ...]] = {
    "outscale": (
        "FLOAT",
        {
            "default": 0.0, "min": 0.0, "max": 16.0, "step": 0.05,
            "tooltip": "Output size over input size (any factor); 0 = the model's own scale. Ignored when width or height is set.",
        },
    ),
    "width": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 1, "tooltip": "Exact output width; 0 = from the scale (or from height, keeping the aspect ratio)."}),
    "height": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 1, "tooltip": "Exact output height; 0 = from the scale (or from width, keeping the aspect ratio)."}),
}  # fmt: skip

EXECUTION_INPUTS: dict[str, tuple[Any, ...]] = {
    "tile": (TILE_CHOICES, {"default": "auto", "tooltip": "Tile size in input pixels: auto (from free memory), none (whole image), or a size. Tiles are cross-faded, so there are no seams."}),
    "precision": (list(UPSCALE_PRECISIONS), {"default": "auto", "tooltip": "auto: bf16 where it is fast and >= 45 dB from fp32 (modern CPUs, GPUs), else fp32. int8 (CPU): only for models that pass its quality gate (>= 40 dB, no colour shift)."}),
}  # fmt: skip


class UpscaleImage(RestoreKitNode):
    """Upscale with any UPSCALE_MODEL (ours or core's loader): seamless tiles, alpha, any
    output scale or exact size."""

    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "mask")
    OUTPUT_TOOLTIPS = ("The upscaled images.", "The upscaled mask (1 = transparent), zeros when no mask was given.")
    FUNCTION = "upscale"
    CATEGORY = f"{CATEGORY}/upscale"
    DESCRIPTION = "Upscales images with a spandrel model through RestoreKit's tiled engine (feathered tiles, OOM recovery, alpha, any scale)."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Images to upscale (a batch works frame by frame with the same settings)."}),
                "upscale_model": ("UPSCALE_MODEL", {"tooltip": "From Load Upscale Model (RestoreKit or core)."}),
                **SIZE_INPUTS,
                **EXECUTION_INPUTS,
                "alpha_mode": (list(ALPHA_MODES), {"default": "model", "tooltip": "With a mask: 'model' upscales alpha with the network (sharp), 'resize' with Lanczos (fast)."}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Transparency as LoadImage gives it (1 = transparent); colours under it never bleed into edges."}),
                "color_fix": (COLOR_FIXES, {"default": "none", "tooltip": COLOR_FIX_TOOLTIP}),
                "compile": COMPILE_INPUT,
            },
        }  # fmt: skip

    def upscale(
        self,
        image: torch.Tensor,
        upscale_model: Any,
        outscale: float,
        width: int,
        height: int,
        tile: str,
        precision: str,
        alpha_mode: str,
        mask: torch.Tensor | None = None,
        color_fix: str = "none",
        compile: str = "auto",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from restorekit.restore import Restorer, RestoreSettings

        pixels, alpha = image_to_pixels(image)
        if mask is not None:
            alpha = mask_to_alpha(mask, *pixels.shape[:1], *pixels.shape[-2:])
        with engine_call():
            settings = RestoreSettings(
                model=upscale_model, tile=parse_tile(tile), precision=precision, device=comfy.torch_device(),
                alpha_mode=alpha_mode, allow_paths=False, color_fix=color_fix, compile=compile, **_size(outscale, width, height),
            )  # fmt: skip
            result = Restorer(settings).run(pixels, alpha=alpha, progress=engine_progress(), cancel=comfy.interrupted)
        out = result.pixels
        return pixels_to_image(out), alpha_to_mask(result.alpha, out.shape[0], *out.shape[-2:])


class RestoreFaces(RestoreKitNode):
    """Detect, align, restore and paste back faces, with a strength blend and an optional
    upscale model for the background."""

    RETURN_TYPES = ("IMAGE", "MASK", "IMAGE", "IMAGE")
    RETURN_NAMES = ("image", "face_mask", "restored_faces", "original_faces")
    OUTPUT_TOOLTIPS = (
        "The images with restored faces, at the output scale.",
        "Where faces were pasted (soft, 1 = face), at the output size.",
        "The restored aligned 512x512 faces (one black image when none was found).",
        "The aligned 512x512 crops of the input faces (one black image when none was found).",
    )
    FUNCTION = "restore"
    CATEGORY = f"{CATEGORY}/faces"
    DESCRIPTION = "Restores faces (GFPGAN, RestoreFormer) and pastes them back through a face-parsing mask."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        from restorekit.registry import load_registry

        registry = load_registry()
        detectors = ["auto", *registry.names("face_detect")]
        parsers = ["auto", *registry.names("face_parse"), "face_oval", "ellipse"]
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Images with faces (e.g. frames of a talking-head video)."}),
                "face_model": (FACE_MODEL, {"tooltip": "From Load Face Model."}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "How much of the restored face replaces the original: 0 = background only, 1 = fully restored."}),
                "select": (FACE_SELECTIONS, {"default": "all", "tooltip": "Which faces: all, the largest, the one nearest the centre, or an index (0 = leftmost)."}),
                "detector": (detectors, {"default": detectors[0], "tooltip": "Face detector (downloaded on first use). auto: RetinaFace-ResNet50 when installed, else MediaPipe BlazeFace full range with Face Mesh landmarks."}),
                "mask_model": (parsers, {"default": parsers[0], "tooltip": "Face parser for the paste-back mask, face_oval (the Face Mesh's face oval, Apache-2.0), or a feathered ellipse (no download). auto: parsing_parsenet when installed (non-commercial weights), else face_oval."}),
                "outscale": ("FLOAT", {"default": 1.0, "min": 0.25, "max": 8.0, "step": 0.05, "tooltip": "Output size over input size; the background is upscaled with background_model (or resized)."}),
                "confidence": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Detection confidence threshold; 0 = the detector's own (RetinaFace 0.97, BlazeFace 0.5)."}),
                "precision": (list(PRECISIONS), {"default": "auto", "tooltip": "Precision of the detector, parser and background model."}),
            },
            "optional": {
                "background_model": ("UPSCALE_MODEL", {"tooltip": "Upscale model for everything but the faces; without it the background is resized."}),
                "codeformer_fidelity": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "CodeFormer's fidelity weight w: 0 = best quality, 1 = most faithful to the input (other models ignore it)."}),
                "color_fix": (COLOR_FIXES, {"default": "none", "tooltip": "Correct restored faces' colours towards the original faces: " + COLOR_FIX_TOOLTIP}),
                "track_faces": ("BOOLEAN", {"default": False, "tooltip": "The batch is consecutive video frames: link faces into tracks (select then picks a track), smooth their landmarks so the pasted face does not jitter."}),
                "smoothing": ("FLOAT", {"default": 0.7, "min": 0.0, "max": 30.0, "step": 0.05, "tooltip": "Tracked frames: One Euro filter cutoff in Hz at rest (lower = smoother; 0 = no smoothing). Frames are taken as 30 fps."}),
                "detect_every": ("INT", {"default": 1, "min": 1, "max": 60, "step": 1, "tooltip": "Tracked frames: run the detector every k frames; in between faces are refined or predicted."}),
                "temporal_blend": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 0.95, "step": 0.05, "tooltip": "Tracked frames: blend each restored face with its track's previous one (against flicker); 0 = off."}),
                "compile": COMPILE_INPUT,
            },
        }  # fmt: skip

    def restore(
        self,
        image: torch.Tensor,
        face_model: Any,
        strength: float,
        select: str,
        detector: str,
        mask_model: str,
        outscale: float,
        confidence: float,
        precision: str,
        background_model: Any = None,
        codeformer_fidelity: float = 0.5,
        color_fix: str = "none",
        track_faces: bool = False,
        smoothing: float = 0.7,
        detect_every: int = 1,
        temporal_blend: float = 0.0,
        compile: str = "auto",
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        from restorekit.faces import FaceOptions
        from restorekit.faces.tracking import SmoothingSettings, TrackingSettings
        from restorekit.restore import RESIZE, Restorer, RestoreSettings

        pixels, alpha = image_to_pixels(image)
        with engine_call():
            options = FaceOptions(
                strength=strength, select=int(select) if select.isdigit() else select, detector=detector,
                parser=None if mask_model == "ellipse" else mask_model, confidence=confidence or None,
                fidelity=codeformer_fidelity, color_fix=color_fix,
            )  # fmt: skip
            tracking = None
            if track_faces:
                tracking = TrackingSettings(
                    detect_every=int(detect_every), face_blend=float(temporal_blend),
                    smoothing=SmoothingSettings(min_cutoff=float(smoothing)) if smoothing > 0 else None,
                )  # fmt: skip
            if hasattr(face_model, "with_fidelity"):
                face_model = face_model.with_fidelity(codeformer_fidelity)
            settings = RestoreSettings(
                model=background_model if background_model is not None else RESIZE,
                outscale=outscale, precision=precision, device=comfy.torch_device(),
                face_model=face_model, face_options=options, allow_paths=False, face_tracking=tracking,
                compile=compile,
            )  # fmt: skip
            result = Restorer(settings, progress=engine_progress(), cancel=comfy.interrupted).run(
                pixels, alpha=alpha, progress=engine_progress(), cancel=comfy.interrupted
            )
        faces = result.faces
        for notice in result.notices:
            comfy.logger.info(notice)
        out = pixels_to_image(result.pixels)
        return out, mask_from_engine(faces.face_mask), _faces_image(faces.restored_faces), _faces_image(faces.original_faces)


def _faces_image(faces: torch.Tensor) -> torch.Tensor:
    """(N, 3, 512, 512) faces -> IMAGE; one black 512x512 image when N = 0 (ComfyUI cannot
    pass an empty batch)."""
    if faces.shape[0] == 0:
        return torch.zeros(1, 512, 512, 3)
    return pixels_to_image(faces)
