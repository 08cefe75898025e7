"""Model loader nodes: registry models (downloaded on demand, verified) and local files.

The upscale loader outputs ComfyUI's own ``UPSCALE_MODEL`` type, a spandrel
``ImageModelDescriptor``, so core's *Upscale Image (using Model)* takes it, and our nodes
take core's. The face loader outputs ``RESTOREKIT_FACE_MODEL``: a loaded
:class:`restorekit.faces.FaceRestorer`.
"""

from __future__ import annotations

from typing import Any

from restorekit.device import PRECISIONS

from . import comfy
from .base import RestoreKitNode
from .convert import CATEGORY, NodeInputError, engine_call, engine_progress

FACE_MODEL = "RESTOREKIT_FACE_MODEL"
"""The face model type: a :class:`restorekit.faces.FaceRestorer`."""
DOWNLOAD_MARK = " (download)"
"""Appended to registry models not downloaded yet; loading one downloads it."""
FOLDER_OF_PURPOSE = {"upscale": "upscale_models", "face_restore": "facerestore_models"}


def _registry_names(purpose: str) -> list[str]:
    from restorekit.registry import load_registry

    return load_registry().names(purpose)


def model_choices(purpose: str) -> list[str]:
    """Registry models (marked when not downloaded yet), then ComfyUI's model files."""
    from restorekit.registry import installed_path, load_registry

    registry = load_registry()
    choices = []
    for name in registry.names(purpose):
        installed = installed_path(registry.get(name)) is not None
        choices.append(name if installed else name + DOWNLOAD_MARK)
    names = set(registry.names(purpose))
    for file_name in comfy.model_files(FOLDER_OF_PURPOSE[purpose]):
        stem = file_name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        if stem not in names:
            choices.append(file_name)
    return choices


def choice_name(choice: str) -> str:
    """The model a dropdown value stands for (the download mark removed)."""
    return choice[: -len(DOWNLOAD_MARK)] if choice.endswith(DOWNLOAD_MARK) else choice


def canonical_choice(choice: Any, purpose: str) -> Any:
    """The dropdown value for ``choice`` in the current list: a saved workflow may hold a
    registry name with or without the download mark, whichever was current when saved."""
    if not isinstance(choice, str):
        return choice
    name = choice_name(choice)
    for option in model_choices(purpose):
        if choice_name(option) == name:
            return option
    return choice


def load_choice(choice: str, purpose: str) -> Any:
    """Load a dropdown value as a float32 CPU spandrel descriptor (downloading registry
    models with a progress bar)."""
    from restorekit.models import load_model

    name = choice_name(choice)
    if name in _registry_names(purpose):
        reference: str = name
    else:
        path = comfy.model_file_path(FOLDER_OF_PURPOSE[purpose], name)
        if path is None:
            raise NodeInputError(
                f"Model {name!r} is neither a registry model nor a file in ComfyUI's "
                f"{FOLDER_OF_PURPOSE[purpose]} folder; pick one from the list."
            )
        reference = path
    with engine_call():
        return load_model(reference, purpose=purpose, progress=engine_progress(), cancel=comfy.interrupted)


class _ModelLoader(RestoreKitNode):
    PURPOSE = "upscale"

    @classmethod
    def VALIDATE_INPUTS(cls, **inputs: Any) -> bool | str:  # noqa: N802 - ComfyUI's name
        if "model_name" in inputs:
            inputs = {**inputs, "model_name": canonical_choice(inputs["model_name"], cls.PURPOSE)}
        return super().VALIDATE_INPUTS(**inputs)

    @classmethod
    def IS_CHANGED(cls, model_name: str, **_: Any) -> str:  # noqa: N802 - ComfyUI's name
        return choice_name(model_name)


class LoadUpscaleModel(_ModelLoader):
    """Load an upscale model: any registry model (downloaded and verified on first use) or a
    file from ComfyUI's ``upscale_models`` folder."""

    PURPOSE = "upscale"
    RETURN_TYPES = ("UPSCALE_MODEL",)
    RETURN_NAMES = ("upscale_model",)
    OUTPUT_TOOLTIPS = ("A spandrel model: works with core's Upscale Image (using Model) too.",)
    FUNCTION = "load"
    CATEGORY = f"{CATEGORY}/loaders"
    DESCRIPTION = "Loads an upscale model from the RestoreKit registry (downloads verify a pinned SHA-256) or a local file."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        choices = model_choices("upscale")
        return {
            "required": {
                "model_name": (
                    choices,
                    {
                        "default": choices[0],
                        "tooltip": "Registry models marked '(download)' are fetched and verified on first use; "
                        "files come from models/upscale_models.",
                    },
                ),
            }
        }

    def load(self, model_name: str) -> tuple[Any]:
        return (load_choice(model_name, "upscale"),)


class LoadFaceModel(_ModelLoader):
    """Load a face restoration model (GFPGAN, RestoreFormer...) ready to run."""

    PURPOSE = "face_restore"
    RETURN_TYPES = (FACE_MODEL,)
    RETURN_NAMES = ("face_model",)
    OUTPUT_TOOLTIPS = ("A loaded face restorer for Restore Faces.",)
    FUNCTION = "load"
    CATEGORY = f"{CATEGORY}/loaders"
    DESCRIPTION = "Loads a face restoration model from the registry (downloaded on first use) or models/facerestore_models."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        choices = model_choices("face_restore")
        return {
            "required": {
                "model_name": (
                    choices,
                    {"default": choices[0], "tooltip": "Face model; '(download)' ones are fetched and verified on first use."},
                ),
                "precision": (
                    list(PRECISIONS),
                    {"default": "auto", "tooltip": "auto: bf16 where the hardware runs it fast, else fp32."},
                ),
            }
        }

    def load(self, model_name: str, precision: str) -> tuple[Any]:
        from restorekit.faces import FaceRestorer

        descriptor = load_choice(model_name, "face_restore")
        with engine_call():
            return (FaceRestorer(descriptor, device=comfy.torch_device(), precision=precision),)
