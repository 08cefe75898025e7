"""RestoreKit's ComfyUI nodes (classic ``NODE_CLASS_MAPPINGS`` API): thin adapters onto the
engine. Importable without ComfyUI, so tests and the headless runner can use them."""

from __future__ import annotations

from ._engine import ensure_engine

ensure_engine()

from . import comfy  # noqa: E402  (the engine must be importable first)
from .models import LoadFaceModel, LoadUpscaleModel  # noqa: E402
from .restore import RestoreFaces, UpscaleImage  # noqa: E402
from .synthesis import (  # noqa: E402
    CompareImages,
    DegradeImage,
    InterpolateModels,
    ModelStrength,
    ZeroShotUpscale,
)

NODES: dict[str, tuple[type, str]] = {
    "RestoreKitLoadUpscaleModel": (LoadUpscaleModel, "Load Upscale Model (RestoreKit)"),
    "RestoreKitLoadFaceModel": (LoadFaceModel, "Load Face Model (RestoreKit)"),
    "RestoreKitUpscaleImage": (UpscaleImage, "Upscale Image (RestoreKit)"),
    "RestoreKitRestoreFaces": (RestoreFaces, "Restore Faces (RestoreKit)"),
    "RestoreKitDegradeImage": (DegradeImage, "Degrade Image (RestoreKit)"),
    "RestoreKitInterpolateModels": (InterpolateModels, "Interpolate Models (RestoreKit)"),
    "RestoreKitModelStrength": (ModelStrength, "Model Pair Strength (RestoreKit)"),
    "RestoreKitZeroShotUpscale": (ZeroShotUpscale, "Zero-Shot Upscale (RestoreKit)"),
    "RestoreKitCompareImages": (CompareImages, "Compare Images (RestoreKit)"),
}
"""Node id (as saved in workflows; never rename) -> (class, display name)."""

NODE_CLASS_MAPPINGS: dict[str, type] = {key: cls for key, (cls, _) in NODES.items()}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {key: name for key, (_, name) in NODES.items()}

comfy.register_model_folders()  # inside ComfyUI: its models/ folders become our model home

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
