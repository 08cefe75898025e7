"""Resolve model references and load them as spandrel descriptors (safetensors only).

A model reference is a registry name (``RealESRGAN_x4plus``), the name of a model in the
model home (``4x-UltraSharp``, imported earlier), or, where the front end allows it, a file
path. Registry models are downloaded on demand (:func:`restorekit.registry.ensure_model`).

Loading is safetensors only. A PyTorch pickle given by path is converted once, without
executing pickled code, into ``<home>/.restorekit/converted/`` and loaded from there;
``restorekit models import`` does the same under a name of the user's choice.

Loaded descriptors are float32 on the CPU, exactly like ComfyUI's core loader produces, and
cached in-process. Engines cast a working copy to the device and dtype of their
:class:`~restorekit.device.ExecutionPlan` where those differ (see :func:`prepared_network`).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .architectures import EXTRA_SPANDREL_IDS, build_module, check_state_dict, get_architecture
from .device import ExecutionPlan
from .errors import InvalidParameterError, ModelIncompatibleError, ModelNotFoundError
from .files import check_safe_name, resolve_inside, sha256_file
from .progress import CancelCheck, ProgressCallback
from .registry import manifest
from .registry.convert import (
    load_any_state_dict,
    load_safetensors_file,
    read_metadata,
    save_state_dict,
    sniff_format,
)
from .registry.download import check_architecture, ensure_model, installed_path
from .registry.home import FOLDERS, ModelHome, get_home
from .registry.schema import PURPOSES, ModelEntry, load_registry

logger = logging.getLogger(__name__)

MODEL_EXTENSIONS = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
_CACHE_SIZE = 4


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model reference points: a safetensors file, and its registry entry if any."""

    reference: str
    path: Path
    entry: ModelEntry | None = None

    @property
    def name(self) -> str:
        return self.entry.name if self.entry else self.path.stem


def _looks_like_path(reference: str) -> bool:
    return (
        os.sep in reference
        or "/" in reference
        or (os.altsep is not None and os.altsep in reference)
        or reference.lower().endswith(MODEL_EXTENSIONS)
        or reference.startswith(".")
    )


def _find_in_home(name: str, home: ModelHome, folders: tuple[str, ...]) -> Path | None:
    """A model called ``name`` (with or without extension) inside the home's folders."""
    for folder in folders:
        for base in home.search_dirs(folder):
            for candidate_name in (name, f"{name}.safetensors"):
                candidate = resolve_inside(base, candidate_name)  # refuses '..' and absolute names
                if candidate.is_file():
                    return candidate
    return None


def converted_cache_path(source: Path, home: ModelHome | None = None) -> Path:
    """Where a pickle given by path is converted to (keyed by its SHA-256)."""
    home = home or get_home()
    digest = sha256_file(source)
    return home.state_dir / "converted" / f"{source.stem}-{digest[:16]}.safetensors"


def _safetensors_for_path(path: Path, home: ModelHome) -> Path:
    fmt = sniff_format(path)
    if fmt == "safetensors":
        return path
    if fmt not in ("torch-zip", "torch-pickle"):
        raise ModelIncompatibleError(
            f"{path.name} is not a model file RestoreKit can read (neither safetensors nor a PyTorch checkpoint)."
        )
    target = converted_cache_path(path, home)
    if not target.exists():
        logger.info("converting %s to safetensors (once, without running pickled code)", path.name)
        state, detected = load_any_state_dict(path)
        save_state_dict(state, target, {"restorekit.converted_from": detected, "restorekit.original": path.name})
    return target


def resolve_model(
    reference: str | os.PathLike[str],
    *,
    purpose: str | None = None,
    allow_paths: bool = True,
    download: bool = True,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
) -> ResolvedModel:
    """Turn a model reference into a safetensors file on disk.

    Args:
        reference: a registry name, a model name in the model home, or a file path.
        purpose: restricts the registry/home lookup to one purpose's folder.
        allow_paths: accept file paths. Front ends that take names from remote users (the
            app, node inputs) pass False, so nothing typed can reach outside the model home.
        download: fetch registry models that are not installed yet.

    Raises:
        ModelNotFoundError: unknown name, missing file, or not downloaded while offline.
        InvalidParameterError: a path given where only names are allowed, or a path trick.
    """
    text = os.fspath(reference).strip()
    if not text:
        raise InvalidParameterError("No model was given; pick a registry model or a model file.")
    home = get_home()
    registry = load_registry()
    if text in registry or (not _looks_like_path(text) and text.lower() in {n.lower() for n in registry.names()}):
        entry = registry.get(text)
        if purpose is not None and entry.purpose != purpose:
            raise ModelIncompatibleError(
                f"{entry.name} is {describe_purpose(entry.purpose)}, not {describe_purpose(purpose)}. "
                f"Pick one of: {', '.join(registry.names(purpose))}."
            )
        if download:
            result = ensure_model(entry, progress=progress, cancel=cancel, home=home)
            return ResolvedModel(text, result.path, entry)
        path = installed_path(entry, home)
        if path is None:
            from .registry.download import missing_model_error

            raise missing_model_error(entry, "downloads are disabled here")
        return ResolvedModel(text, path, entry)
    folders = (PURPOSES[purpose],) if purpose else FOLDERS
    if not _looks_like_path(text) or not allow_paths:
        name = text
        if not allow_paths and (Path(text).is_absolute() or ".." in Path(text).parts):
            raise InvalidParameterError(
                f"{text!r} is a path; only model names from the list are accepted here."
            )
        found = _find_in_home(name, home, folders)
        if found is not None:
            return ResolvedModel(text, _safetensors_for_path(found, home))
        if not allow_paths or not Path(text).exists():
            raise registry.missing(text)
    path = Path(text).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(f"Model file {path} does not exist.")
    return ResolvedModel(text, _safetensors_for_path(path.resolve(), home))


_KINDS = {
    "upscale": "an upscale model",
    "face_restore": "a face restoration model",
    "face_detect": "a face detector",
    "face_parse": "a face parser",
    "perceptual": "a perceptual-loss network",
    "face_landmark": "a face landmark model",
}


def describe_purpose(purpose: str) -> str:
    """``face_restore`` -> "a face restoration model" (for messages)."""
    return _KINDS.get(purpose, f"a {purpose.replace('_', ' ')} model")



# --------------------------------------------------------------------------- loading


_lock = threading.Lock()
_descriptors: OrderedDict[tuple[str, float, int], Any] = OrderedDict()


def _load_descriptor_uncached(path: Path, entry: ModelEntry | None) -> Any:
    import spandrel

    state = load_safetensors_file(path)
    if entry is not None:
        spec = get_architecture(entry.architecture)
        if spec.family != "spandrel":
            where = "the training losses" if entry.purpose == "perceptual" else "the face pipeline"
            raise ModelIncompatibleError(
                f"{entry.name} is a {entry.purpose.replace('_', ' ')} network used inside {where}, "
                "not an image model; choose an upscale or face restoration model."
            )
        if spec.spandrel_id in EXTRA_SPANDREL_IDS:
            from .faces.restore import codeformer_missing_error, install_extra_arches

            if not install_extra_arches():
                raise codeformer_missing_error(entry.name)
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError as exc:
        raise ModelIncompatibleError(
            f"{path.name} is not an architecture spandrel knows, so it cannot be used as an image model."
        ) from exc
    except Exception as exc:
        raise ModelIncompatibleError(f"{path.name} could not be loaded: {exc}") from exc
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ModelIncompatibleError(
            f"{path.name} is a {descriptor.purpose} model ({descriptor.architecture.name}); "
            "RestoreKit needs an image-to-image model."
        )
    return descriptor.eval()


def load_model(
    reference: str | os.PathLike[str],
    *,
    purpose: str | None = None,
    allow_paths: bool = True,
    download: bool = True,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
) -> Any:
    """Load a model reference as a float32 CPU spandrel ``ImageModelDescriptor`` (cached).

    Raises :class:`ModelIncompatibleError` when the file is not an image model (or is a face
    detector/parser), and the errors of :func:`resolve_model`.
    """
    resolved = resolve_model(
        reference, purpose=purpose, allow_paths=allow_paths, download=download, progress=progress, cancel=cancel
    )
    stat = resolved.path.stat()
    key = (str(resolved.path), stat.st_mtime, stat.st_size)
    with _lock:
        if key in _descriptors:
            _descriptors.move_to_end(key)
            return _descriptors[key]
    descriptor = _load_descriptor_uncached(resolved.path, resolved.entry)
    if resolved.entry is not None and purpose is None:
        expected = "FaceSR" if resolved.entry.purpose == "face_restore" else None
        if expected and descriptor.purpose != expected:  # pragma: no cover - registry checked at install
            raise ModelIncompatibleError(f"{resolved.name} did not load as a face model.")
    if purpose == "face_restore" and descriptor.purpose != "FaceSR":
        raise ModelIncompatibleError(
            f"{resolved.name} is an upscale model ({descriptor.architecture.name}), not a face "
            "restoration model. Choose GFPGAN or RestoreFormer for faces."
        )
    if purpose == "upscale" and descriptor.purpose == "FaceSR":
        raise ModelIncompatibleError(
            f"{resolved.name} is a face restoration model ({descriptor.architecture.name}); "
            "use it as the face model, and an upscale model for the image."
        )
    with _lock:
        _descriptors[key] = descriptor
        while len(_descriptors) > _CACHE_SIZE:
            _descriptors.popitem(last=False)
    return descriptor


def load_aux_network(reference: str, *, download: bool = True, progress: ProgressCallback | None = None) -> nn.Module:
    """Load a face detector or parser from the registry as an eval-mode float32 CPU module.

    facexlib's classes are built here and given our safetensors weights, so facexlib never
    downloads anything itself.
    """
    registry = load_registry()
    entry = registry.get(reference)
    if entry.purpose not in ("face_detect", "face_parse", "face_landmark"):
        raise ModelIncompatibleError(
            f"{entry.name} is a {entry.purpose.replace('_', ' ')} model, not a face detector or parser."
        )
    resolved = resolve_model(entry.name, download=download, progress=progress)
    state = load_safetensors_file(resolved.path)
    if get_architecture(entry.architecture).family == "tflite":
        from .faces.graphnet import GraphNet

        check_state_dict(entry.architecture, entry.params, state)
        return GraphNet.from_state_dict(state)
    module = build_module(entry.architecture, entry.params)
    module.load_state_dict(state, strict=True)
    return module.eval()


def clear_cache() -> None:
    """Forget every cached descriptor and prepared network."""
    with _lock:
        _descriptors.clear()
    _prepared.clear()


# --------------------------------------------------------------------------- prepared copies


_prepared: weakref.WeakKeyDictionary[nn.Module, dict[tuple[str, str, bool], nn.Module]] = weakref.WeakKeyDictionary()


def prepared_network(module: nn.Module, plan: ExecutionPlan) -> nn.Module:
    """``module`` on ``plan``'s device, dtype and memory format, in eval mode (cached).

    The original module is never modified (ComfyUI may share it); a converted copy is made
    once per (device, dtype, layout) and kept as long as the original lives.

    A CPU plan in the module's own dtype returns the module itself (put into eval mode), even
    for a channels_last plan: oneDNN picks its channels_last kernels from the activations'
    layout and reorders the weights itself, so channels_last weights gave bit-identical
    outputs at the same speed, and the copy only held a second set of weights (67 MB for
    x4plus in fp32, kept for the whole job; ``bench/RESULTS_upscale.md``).
    """
    first = next(iter(module.parameters()), None)
    if first is None:
        return module.eval()
    if (
        first.device == plan.device
        and first.dtype == plan.dtype
        and (plan.device.type == "cpu" or not plan.channels_last)
    ):
        return module.eval()
    key = (str(plan.device), str(plan.dtype), plan.channels_last)
    with _lock:
        cache = _prepared.setdefault(module, {})
        if key in cache:
            return cache[key]
    import copy

    clone = copy.deepcopy(module)
    clone = clone.to(device=plan.device, dtype=plan.dtype)
    if plan.channels_last:
        _to_channels_last(clone)
    clone.eval()
    for parameter in clone.parameters():
        parameter.requires_grad_(False)
    with _lock:
        _prepared.setdefault(module, {})[key] = clone
    return clone


def _to_channels_last(module: nn.Module) -> None:
    """Put every 4-D parameter and buffer of ``module`` in channels_last, in place.

    ``Module.to(memory_format=...)`` refuses networks with 5-D weights (StyleGAN2's
    modulated convolutions), so the layout is changed tensor by tensor.
    """
    for sub in module.modules():
        for parameter in sub.parameters(recurse=False):
            if parameter.dim() == 4:
                parameter.data = parameter.data.contiguous(memory_format=torch.channels_last)
        for name, buffer in sub.named_buffers(recurse=False):
            if buffer is not None and buffer.dim() == 4:
                sub._buffers[name] = buffer.contiguous(memory_format=torch.channels_last)


# --------------------------------------------------------------------------- import


def import_model(
    file: str | os.PathLike[str],
    *,
    name: str | None = None,
    purpose: str | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> ResolvedModel:
    """Register a user's own model file in the model home as ``<name>.safetensors``.

    The file is read by content (never trusting its extension), pickles without executing
    code; it must load in spandrel (or, for a registry name of a face detector/parser, match
    that architecture exactly). The result's SHA-256 goes into the manifest.
    """
    source = Path(file).expanduser()
    if not source.is_file():
        raise ModelNotFoundError(f"{source} does not exist or is not a file.")
    registry = load_registry()
    model_name = check_safe_name(name or source.stem, what="model name")
    entry = registry.models.get(model_name)
    state, detected = load_any_state_dict(source)
    home = get_home()
    if entry is not None:
        check_architecture(entry, state)
        folder = entry.folder
    else:
        import spandrel

        try:
            descriptor = spandrel.ModelLoader().load_from_state_dict(state)
        except Exception as exc:
            raise ModelIncompatibleError(
                f"{source.name} is not a model spandrel can load ({type(exc).__name__}: {exc}); "
                "only spandrel-supported image models can be imported."
            ) from exc
        detected_purpose = "face_restore" if descriptor.purpose == "FaceSR" else "upscale"
        if purpose is not None and purpose != detected_purpose:
            raise ModelIncompatibleError(
                f"{source.name} is a {detected_purpose.replace('_', ' ')} model, not {purpose.replace('_', ' ')}."
            )
        folder = PURPOSES[detected_purpose]
    target = home.folder(folder) / f"{model_name}.safetensors"
    if target.exists() and not overwrite:
        raise InvalidParameterError(f"{target} exists; pass --overwrite to replace it or choose another --name.")
    source_sha = sha256_file(source, progress)
    metadata = {"restorekit.name": model_name, "restorekit.imported_from": source.name, "restorekit.source_sha256": source_sha}
    if entry is not None:
        metadata["restorekit.architecture"] = entry.architecture
    digest = save_state_dict(state, target, metadata)
    manifest.record(
        home,
        manifest.new_record(
            home,
            name=model_name,
            path=target,
            sha256=digest,
            source=f"import:{source.name}",
            source_sha256=source_sha,
            converted_from=detected,
        ),
    )
    return ResolvedModel(model_name, target, entry)


def model_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The safetensors metadata of an installed model (restorekit.* keys and others)."""
    return read_metadata(path)
