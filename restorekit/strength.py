"""The registry's strength pairs: sharpness (RealESRNet <-> RealESRGAN) and denoise.

A registry model with ``interpolate_with`` has a partner; a strength in [0, 1] along the pair is
a blend of the two (:mod:`restorekit.interpolate`), resolved here next to model resolution.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from .errors import (
    InvalidParameterError,
    ModelNotFoundError,
)
from .interpolate import InterpolatedModel, interpolate
from .progress import CancelCheck, ProgressCallback

MEANINGS: tuple[str, ...] = ("sharpness", "denoise")
"""What the registry's interpolation pairs control (``interpolate_with.meaning``)."""

# --------------------------------------------------------------------------- registry pairs


@dataclass(frozen=True)
class StrengthPair:
    """A registry interpolation pair: ``strength`` 0 is ``low``, 1 is ``high``.

    The blend at strength ``s`` is ``(1 - s) * low + s * high``; for ``denoise`` that is the
    official ``-dn s``: ``s * realesr-general-x4v3 + (1 - s) * realesr-general-wdn-x4v3``.
    """

    meaning: str
    low: str
    high: str
    description: str


def strength_pairs(meaning: str | None = None) -> list[StrengthPair]:
    """Every registry interpolation pair (optionally only those controlling ``meaning``)."""
    from .registry.schema import load_registry

    pairs = []
    for entry in load_registry():
        if entry.pair is not None and entry.pair.role == "a" and (meaning is None or entry.pair.meaning == meaning):
            pairs.append(StrengthPair(entry.pair.meaning, entry.name, entry.pair.model, entry.pair.description))
    return pairs


def _pairs_text(meaning: str) -> str:
    pairs = strength_pairs(meaning)
    if not pairs:
        return f"no registry model has a {meaning} pair"
    return "; ".join(f"{p.high} or {p.low}" for p in pairs)


def registry_pair(model_name: str, meaning: str | None = None) -> StrengthPair:
    """The interpolation pair of registry model ``model_name`` (either end).

    Raises:
        ModelNotFoundError: not a registry model.
        InvalidParameterError: it has no pair, or its pair controls another ``meaning``;
            the message names the models that do have one.
    """
    from .registry.schema import load_registry

    if meaning is not None and meaning not in MEANINGS:
        raise InvalidParameterError(f"Unknown strength {meaning!r}; known: {', '.join(MEANINGS)}.")
    entry = load_registry().get(model_name)
    if entry.pair is None:
        wanted = f"a {meaning} strength" if meaning else "a strength"
        options = (
            f"Models with {wanted}: {_pairs_text(meaning)}." if meaning
            else "Models with one: " + "; ".join(f"{p.high} or {p.low} ({p.meaning})" for p in strength_pairs()) + "."
        )
        raise InvalidParameterError(
            f"{entry.name} has no interpolation partner in the registry, so it has no {wanted}. "
            f"{options} To blend models of your own, use `restorekit interpolate`."
        )
    if meaning is not None and entry.pair.meaning != meaning:
        raise InvalidParameterError(
            f"{entry.name} has a {entry.pair.meaning} strength, not {meaning}. "
            f"Models with a {meaning} strength: {_pairs_text(meaning)}."
        )
    low, high = (entry.name, entry.pair.model) if entry.pair.role == "a" else (entry.pair.model, entry.name)
    return StrengthPair(entry.pair.meaning, low, high, entry.pair.description)


def _check_strength(strength: float, meaning: str) -> float:
    value = float(strength)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidParameterError(f"The {meaning} strength must be between 0 and 1, got {value:g}.")
    return value


def pair_blend(
    model_name: str,
    strength: float,
    *,
    meaning: str | None = None,
    check: bool | None = None,
    download: bool = True,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
) -> InterpolatedModel:
    """Blend registry model ``model_name`` with its partner at ``strength`` in [0, 1].

    Strength means what the pair's ``meaning`` says: ``sharpness`` 0 = RealESRNet (smooth),
    1 = RealESRGAN (GAN textures); ``denoise`` d = ``d * realesr-general-x4v3 +
    (1 - d) * realesr-general-wdn-x4v3`` exactly as the official ``-dn d``. Either end of a
    pair may be named. Cached like :func:`interpolate`.
    """
    pair = registry_pair(model_name, meaning)
    value = _check_strength(strength, pair.meaning)
    return interpolate(
        [pair.low, pair.high],
        alpha=value,
        check=check,
        allow_paths=False,
        download=download,
        progress=progress,
        cancel=cancel,
    )


def resolve_with_strength(
    model_ref: str | os.PathLike[str],
    *,
    denoise: float | None = None,
    sharpness: float | None = None,
    purpose: str | None = "upscale",
    allow_paths: bool = True,
    download: bool = True,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
) -> Any:
    """The descriptor to run for ``--model M [--denoise d | --sharpness s]``.

    With neither strength this is :func:`restorekit.models.load_model`. With one, ``M`` must
    be a registry model whose pair has that meaning; strength 0 or 1 loads that end alone
    (only it is downloaded), anything between is :func:`pair_blend`'s cached blend.

    Raises:
        InvalidParameterError: both strengths, a strength out of [0, 1], or a model without
            that kind of pair (the message names the models that have one).
    """
    from .models import load_model

    given = {name: value for name, value in (("denoise", denoise), ("sharpness", sharpness)) if value is not None}
    if not given:
        return load_model(model_ref, purpose=purpose, allow_paths=allow_paths, download=download, progress=progress, cancel=cancel)
    if len(given) > 1:
        raise InvalidParameterError(
            "Give either a denoise or a sharpness strength, not both: each model pair controls only one."
        )
    (meaning, raw), = given.items()
    strength = _check_strength(raw, meaning)
    from .registry.schema import load_registry

    text = os.fspath(model_ref)
    try:
        name = load_registry().get(text).name
    except ModelNotFoundError:
        raise InvalidParameterError(
            f"The {meaning} strength needs a registry model with a {meaning} pair, and {text!r} is not one. "
            f"Models with a {meaning} strength: {_pairs_text(meaning)}."
        ) from None
    pair = registry_pair(name, meaning)
    if strength in (0.0, 1.0):
        end = pair.low if strength == 0.0 else pair.high
        return load_model(end, purpose=purpose, allow_paths=False, download=download, progress=progress, cancel=cancel)
    return pair_blend(pair.low, strength, meaning=meaning, download=download, progress=progress, cancel=cancel).descriptor
