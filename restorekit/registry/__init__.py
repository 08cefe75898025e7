"""The model registry: names, sources, verified downloads and the local model home."""

from .download import (
    InstallResult,
    VerifyResult,
    ensure_model,
    installed_path,
    remove_model,
    target_path,
    verify_model,
)
from .home import ModelHome, configure_home, get_home
from .schema import PURPOSES, ModelEntry, Registry, Source, default_model_name, load_registry

__all__ = [
    "PURPOSES",
    "InstallResult",
    "ModelEntry",
    "ModelHome",
    "Registry",
    "Source",
    "VerifyResult",
    "configure_home",
    "default_model_name",
    "ensure_model",
    "get_home",
    "installed_path",
    "load_registry",
    "remove_model",
    "target_path",
    "verify_model",
]
