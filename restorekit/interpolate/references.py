"""Blends of models given by reference (registry names, model-home names, paths) or descriptor."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import (
    ModelIncompatibleError,
)
from ..progress import CancelCheck, ProgressCallback, Reporter
from ..registry.convert import load_safetensors_file
from .blend import (
    StateDict,
    _descriptor_from_state,
    blend_state_dicts,
    check_compatible,
    normalize_weights,
)
from .cache import FileIdentity, ParentModel, _identity, _parent_probes, _parent_states, _results
from .probe import _probe_input, _run_probe
from .result import InterpolatedModel

logger = logging.getLogger(__name__)



# --------------------------------------------------------------------------- from references


def _load_parent_state(identity: FileIdentity) -> StateDict:
    cached = _parent_states.lookup(identity)
    if cached is not None:
        return cached
    return _parent_states.store(identity, load_safetensors_file(identity[0]))


def _parent_probe_output(identity: FileIdentity) -> torch.Tensor:
    """A parent's output on the probes (cached: it does not change with the weights)."""
    cached = _parent_probes.lookup(identity)
    if cached is not None:
        return cached
    from ..models import load_model

    path = Path(identity[0])
    if not path.is_file() or _identity(path) != identity:
        raise ModelIncompatibleError(f"{path.name} was changed or removed after it was blended")
    descriptor = load_model(path)
    probes = _probe_input(descriptor)
    if isinstance(probes, str):  # pragma: no cover - the blend was probeable, so is its parent
        raise ModelIncompatibleError(probes)
    return _parent_probes.store(identity, _run_probe(descriptor, probes))


def _display_name(resolved: Any) -> str:
    """The registry name, or the file name as the user gave it, without the extension (a
    converted ``.pth`` lives under a hashed name that means nothing to the user)."""
    from ..models import MODEL_EXTENSIONS

    if resolved.entry is not None:
        return str(resolved.entry.name)
    name = Path(resolved.reference).name
    for extension in MODEL_EXTENSIONS:
        if name.lower().endswith(extension):
            return name[: -len(extension)]
    return name


def _is_registry_pair(entries: Sequence[Any]) -> bool:
    if len(entries) != 2 or any(e is None for e in entries):
        return False
    a, b = entries
    return a.pair is not None and a.pair.model == b.name


def interpolate(
    models: Sequence[str | os.PathLike[str]],
    weights: Sequence[float] | None = None,
    *,
    alpha: float | None = None,
    check: bool | None = None,
    allow_paths: bool = True,
    download: bool = True,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
) -> InterpolatedModel:
    """Blend two or more models given by reference; cached by (parents, weights).

    Args:
        models: registry names, names in the model home, or (if ``allow_paths``) paths.
            Weights are read from safetensors only (pickles given by path are converted once,
            safely, by :func:`restorekit.models.resolve_model`).
        weights: one weight per model, each in [0, 1], summing to 1.
        alpha: for two models instead of ``weights``: ``(1 - alpha) * A + alpha * B``.
        check: run the broken-merge check (:func:`check_merge`). None (default) runs it
            unless the models are a registry interpolation pair, which is known to blend.
        allow_paths, download: as for :func:`restorekit.models.resolve_model`.

    Returns:
        An :class:`InterpolatedModel`. The same (parents, weights) returns the same object
        while it is cached (the parents are identified by path, modification time and size).

    Raises:
        InvalidParameterError: bad weights.
        ModelNotFoundError: a reference that does not resolve.
        ModelIncompatibleError: models that cannot be blended (with the first mismatches).
    """
    from ..models import resolve_model

    reporter = Reporter.of(progress, cancel)
    refs = [os.fspath(m) for m in models]
    blend_weights = normalize_weights(len(refs), weights, alpha)
    resolved = []
    for index, ref in enumerate(refs):
        reporter.step(index, len(refs) + 2, f"interpolating: finding {ref}")
        resolved.append(
            resolve_model(
                ref,
                allow_paths=allow_paths,
                download=download,
                progress=reporter.stage(index, len(refs) + 2).progress,
                cancel=cancel,
            )
        )
    identities = [_identity(r.path) for r in resolved]
    parents = [ParentModel(_display_name(r), r.path, ident) for r, ident in zip(resolved, identities, strict=True)]
    run_check = check if check is not None else not _is_registry_pair([r.entry for r in resolved])
    key = (tuple(identities), blend_weights)
    result: InterpolatedModel | None = _results.lookup(key)
    if result is None:
        started = time.perf_counter()
        reporter.step(len(refs), len(refs) + 2, "interpolating: blending weights")
        states = [_load_parent_state(ident) for ident in identities]
        architecture = check_compatible(states, [p.name for p in parents])
        blended = blend_state_dicts(states, blend_weights, names=[p.name for p in parents], check=False)
        label = " + ".join(f"{w:g} × {p.name}" for p, w in zip(parents, blend_weights, strict=True))
        descriptor = _descriptor_from_state(blended, label)
        result = InterpolatedModel(
            descriptor,
            blended,
            parents,
            blend_weights,
            architecture,
            parent_probe=lambda i: _parent_probe_output(identities[i]),
        )
        logger.info("blended %s in %.2f s", label, time.perf_counter() - started)
        result = _results.store(key, result)
    if run_check:
        reporter.step(len(refs) + 1, len(refs) + 2, "interpolating: checking the blend")
        result.run_check()
    reporter.step(len(refs) + 2, len(refs) + 2, "interpolating: done")
    return result


def blend_descriptors(
    descriptors: Sequence[Any],
    weights: Sequence[float] | None = None,
    *,
    alpha: float | None = None,
    names: Sequence[str] | None = None,
    check: bool = True,
) -> InterpolatedModel:
    """Blend already-loaded spandrel descriptors (e.g. ComfyUI ``UPSCALE_MODEL`` inputs).

    Not cached (front ends that pass descriptors cache node outputs themselves); the parents
    have no file, so a saved blend records their names without hashes.
    """
    blend_weights = normalize_weights(len(descriptors), weights, alpha)
    labels = list(names) if names is not None else [
        f"{d.architecture.name} #{i + 1}" for i, d in enumerate(descriptors)
    ]
    states = [{k: v.detach().to("cpu") for k, v in d.model.state_dict().items()} for d in descriptors]
    architecture = check_compatible(states, labels)
    blended = blend_state_dicts(states, blend_weights, names=labels, check=False)
    parents = [ParentModel(name) for name in labels]
    label = " + ".join(f"{w:g} × {n}" for n, w in zip(labels, blend_weights, strict=True))
    descriptor = _descriptor_from_state(blended, label)
    probe_cache: dict[int, torch.Tensor] = {}

    def parent_probe(index: int) -> torch.Tensor:
        if index not in probe_cache:
            probes = _probe_input(descriptor)
            assert isinstance(probes, torch.Tensor)
            probe_cache[index] = _run_probe(descriptors[index], probes)
        return probe_cache[index]

    result = InterpolatedModel(descriptor, blended, parents, blend_weights, architecture, parent_probe)
    if check:
        result.run_check()
    return result
