"""Model distribution: the driver resolves and verifies every model of a job once, and the
workers get the files through Ray's object store into a private model home of their own, so
they need neither network nor a shared model folder.

:func:`ship_settings` turns :class:`~restorekit.restore.RestoreSettings` into the files to
ship (path inside a model home -> bytes or a file here) and settings whose model references
are names inside that home (downloads off).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SHIPPED_PREFIX = "restorekit-shipped-"


def _registry_file(name: str, files: dict[str, Path | bytes]) -> str:
    """Ship registry model ``name`` under its registry folder and file name; keep the name."""
    from ..models import resolve_model
    from ..registry.schema import load_registry

    entry = load_registry().get(name)
    files[f"{entry.folder}/{entry.filename}"] = resolve_model(entry.name).path
    return entry.name


def _shipped_file(data: bytes, folder: str, files: dict[str, Path | bytes]) -> str:
    """Ship safetensors ``data`` as a home model named by its hash; returns that name."""
    name = SHIPPED_PREFIX + hashlib.sha256(data).hexdigest()[:16]
    files[f"{folder}/{name}.safetensors"] = data
    return name


def _model_reference(reference: Any, purpose: str, files: dict[str, Path | bytes]) -> str:
    from ..models import resolve_model
    from ..registry.schema import PURPOSES, load_registry

    text = os.fspath(reference).strip()
    registry = load_registry()
    if text in registry or text.lower() in {n.lower() for n in registry.names()}:
        return _registry_file(text, files)
    return _shipped_file(resolve_model(text, purpose=purpose).path.read_bytes(), PURPOSES[purpose], files)


def _descriptor_bytes(descriptor: Any) -> bytes:
    from safetensors.torch import save

    state = {key: value.detach().cpu().contiguous() for key, value in descriptor.model.state_dict().items()}
    return save(state)


def ship_settings(settings: Any) -> tuple[dict[str, Path | bytes], Any]:
    """``(files, worker settings)`` for :class:`~restorekit.restore.RestoreSettings`.

    Registry models keep their names (their files go where the registry puts them); model
    files, loaded descriptors and denoise/sharpness blends go as ``restorekit-shipped-<hash>``
    safetensors (a blend is computed here once, so every worker runs the same weights).
    """
    from ..registry.schema import PURPOSES, load_registry

    files: dict[str, Path | bytes] = {}
    changes: dict[str, Any] = {"download": False, "allow_paths": False}
    if settings.method == "model":
        model = settings.model if settings.model is not None else load_registry().default_model("upscale").name
        if settings.denoise is not None or settings.sharpness is not None or not isinstance(model, str | os.PathLike):
            if isinstance(model, str | os.PathLike):
                from ..interpolate import resolve_with_strength

                descriptor = resolve_with_strength(model, denoise=settings.denoise, sharpness=settings.sharpness)
            else:
                descriptor = model
            changes["model"] = _shipped_file(_descriptor_bytes(descriptor), PURPOSES["upscale"], files)
            changes["denoise"] = changes["sharpness"] = None
        else:
            changes["model"] = _model_reference(model, "upscale", files)
    if settings.face_model is not None:
        face = settings.face_model
        if isinstance(face, str | os.PathLike):
            changes["face_model"] = _model_reference(face, "face_restore", files)
        else:
            changes["face_model"] = _shipped_file(_descriptor_bytes(face), PURPOSES["face_restore"], files)
        from ..faces import FaceOptions
        from ..faces.pipeline import detector_name, face_network_names

        options = settings.face_options or FaceOptions()
        for name in face_network_names(options):  # detector, landmarks, parser, 'auto' resolved here
            _registry_file(name, files)
        if not options.aligned:
            # The head's choices, so every worker uses the same detector and mask.
            changes["face_options"] = dataclasses.replace(
                options, detector=detector_name(options.detector), parser=options.resolved_parser
            )
    return files, dataclasses.replace(settings, **changes)


def install_files(home: Path, files: dict[str, bytes]) -> None:
    """Write shipped model files into a worker's private model home."""
    from ..files import atomic_write_bytes, resolve_inside

    for relative, data in files.items():
        atomic_write_bytes(resolve_inside(home, relative), data)


@contextlib.contextmanager
def worker_home(files: list[tuple[str, Any]], threads: int) -> Iterator[Path]:
    """Set up a worker process for loading its job: a private model home filled with the
    shipped files (object references), downloads off, caches cleared, ``threads`` torch
    threads. The home is deleted when the block ends: load every model inside it (a loaded
    job keeps its networks in memory; a restarted worker gets a fresh home)."""
    import shutil
    import tempfile

    import ray
    import torch

    from .. import models
    from ..environment import use_private_home
    from ..registry.home import configure_home

    home = Path(tempfile.mkdtemp(prefix="restorekit-worker-home-"))
    try:
        install_files(home, {relative: ray.get(ref) for relative, ref in files})
        use_private_home(home)
        configure_home(None)
        models.clear_cache()
        torch.set_num_threads(max(1, threads))
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)
