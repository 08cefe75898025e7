"""The private parts of spandrel that RestoreKit builds on, declared in one table.

spandrel's public API loads a state dict into a descriptor. A few jobs need the network
classes themselves (building an empty face network to fill, a template of its state dict),
and spandrel keeps those in private ``__arch`` modules that may move in any release. Every
such use goes through :func:`private_class`, so a spandrel that moved one fails with one
clear message naming the class and the fix, and ``tests/test_foundation.py`` checks the whole
table against the installed spandrel.
"""

from __future__ import annotations

import importlib
from importlib import metadata

from .errors import ModelIncompatibleError

SUPPORTED_SPANDREL = ">=0.4,<0.5"
"""The spandrel versions this table was written against (as pyproject.toml declares)."""

PRIVATE_CLASSES: dict[str, tuple[str, str]] = {
    "GFPGANv1Clean": ("spandrel.architectures.GFPGAN.__arch.gfpganv1_clean_arch", "GFPGANv1Clean"),
    "RestoreFormer": ("spandrel.architectures.RestoreFormer.__arch.restoreformer_arch", "RestoreFormer"),
    "CodeFormer": ("spandrel_extra_arches.architectures.CodeFormer.__arch.codeformer", "CodeFormer"),
}
"""key -> (private module, class name). CodeFormer lives in the optional
``spandrel_extra_arches``, whose presence the caller checks first."""


def _spandrel_version() -> str:
    try:
        return metadata.version("spandrel")
    except metadata.PackageNotFoundError:  # pragma: no cover - spandrel is a dependency
        return "(not installed)"


def private_class(key: str) -> type:
    """The class ``key`` of :data:`PRIVATE_CLASSES`, imported from spandrel.

    Raises:
        ModelIncompatibleError: the installed spandrel no longer has it; the message names the
            class, the installed version and the supported range.
    """
    module_name, class_name = PRIVATE_CLASSES[key]
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ModelIncompatibleError(
            f"spandrel {_spandrel_version()} no longer provides {module_name}.{class_name}, which RestoreKit "
            f"needs to build {key} networks ({exc}). Install a supported spandrel "
            f"(pip install 'spandrel{SUPPORTED_SPANDREL}') or update RestoreKit."
        ) from exc
