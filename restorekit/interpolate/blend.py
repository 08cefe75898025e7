"""The arithmetic of network interpolation: weights, compatibility checks, state-dict blends.

Everything here works on in-memory state dicts (``{key: tensor}``) and spandrel descriptors;
nothing reads files or caches.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import (
    InvalidParameterError,
    ModelIncompatibleError,
)

StateDict = dict[str, torch.Tensor]


WEIGHT_SUM_TOLERANCE = 1e-6
"""How far the weights may sum from 1 (rounding of typed decimals such as 0.1,0.2,0.7)."""
_MISMATCHES_SHOWN = 3


# --------------------------------------------------------------------------- weights


def normalize_weights(
    count: int,
    weights: Sequence[float] | None = None,
    alpha: float | None = None,
) -> tuple[float, ...]:
    """The blend weights for ``count`` models, from ``alpha`` (two models) or ``weights``.

    ``alpha`` gives ``(1 - alpha, alpha)``. Weights must be finite, between 0 and 1 and sum
    to 1 (extrapolation beyond the parents is refused: it is where blends break).

    Raises:
        InvalidParameterError: with what is wrong and what to pass instead.
    """
    if count < 2:
        raise InvalidParameterError(
            f"Interpolation needs at least two models, got {count}; name two or more compatible models."
        )
    if (weights is None) == (alpha is None):
        raise InvalidParameterError(
            "Give either alpha (two models: (1 - alpha) * A + alpha * B) or one weight per "
            "model (summing to 1), not both and not neither."
        )
    if alpha is not None:
        if count != 2:
            raise InvalidParameterError(
                f"alpha blends exactly two models, but {count} were given; pass one weight per "
                f"model instead (e.g. {', '.join(['%.3g' % (1 / count)] * count)} for an even mix)."
            )
        alpha = float(alpha)
        if not math.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
            raise InvalidParameterError(f"alpha must be between 0 and 1, got {alpha:g}.")
        return (1.0 - alpha, alpha)
    values = tuple(float(w) for w in weights or ())
    if len(values) != count:
        raise InvalidParameterError(
            f"{len(values)} weights were given for {count} models; give exactly one weight per model."
        )
    bad = [w for w in values if not math.isfinite(w) or not 0.0 <= w <= 1.0]
    if bad:
        raise InvalidParameterError(
            f"Weights must be between 0 and 1, got {', '.join(f'{w:g}' for w in bad)} "
            "(extrapolating beyond the parents is not supported)."
        )
    total = math.fsum(values)
    if abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
        suggestion = ", ".join(f"{w / total:.4g}" for w in values) if total > 0 else "1, 0"
        raise InvalidParameterError(
            f"The weights sum to {total:.6g}; they must sum to 1 (these proportions would be {suggestion})."
        )
    return values


# --------------------------------------------------------------------------- compatibility


def detect_architecture(state: Mapping[str, torch.Tensor]) -> Any | None:
    """spandrel's architecture for ``state`` (its ``id`` and ``name``), or None if unknown.

    Detection only inspects keys and shapes; nothing is built.
    """
    import spandrel

    canonical = spandrel.canonicalize_state_dict(dict(state))
    for support in spandrel.MAIN_REGISTRY.architectures("detection"):
        try:
            if support.detect(canonical):
                return support.architecture
        except Exception:  # a detector tripping over an unusual dict is a "no"
            continue
    return None


def _layout(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape) or "scalar"


def compatible_registry_models(state: Mapping[str, torch.Tensor], architecture_id: str | None = None) -> list[str]:
    """Registry models whose weights have exactly ``state``'s keys and shapes."""
    from ..architectures import get_architecture
    from ..registry.schema import load_registry

    layout = _layout(state)
    names = []
    for entry in load_registry():
        spec = get_architecture(entry.architecture)
        if spec.family != "spandrel" or (architecture_id and spec.spandrel_id != architecture_id):
            continue
        try:
            template = dict(spec.template(spec.params(entry.params)))
        except Exception:  # pragma: no cover - a template that cannot be built matches nothing
            continue
        if template == layout:
            names.append(entry.name)
    return names


def _compatibility_hint(state: Mapping[str, torch.Tensor], name: str, architecture_id: str | None) -> str:
    hint = (
        " Only models of one architecture with the same hyperparameters can be blended, "
        "typically a network and its fine-tune"
    )
    from ..strength import strength_pairs

    try:
        pairs = ", ".join(f"{p.low} + {p.high}" for p in strength_pairs())
        matches = [m for m in compatible_registry_models(state, architecture_id) if m != name]
    except Exception:  # pragma: no cover - the hint must never hide the real error
        pairs, matches = "", []
    hint += f" (such as the registry pairs {pairs})." if pairs else "."
    if matches:
        hint += f" Registry models with the layout of {name}: {', '.join(matches)}."
    return hint


def check_compatible(states: Sequence[Mapping[str, torch.Tensor]], names: Sequence[str]) -> str:
    """Check that ``states`` can be blended; return their spandrel architecture id.

    Compatible means: spandrel detects one architecture for all of them, and they have the
    same keys, the same shapes, and floating-point tensors under the same keys.

    Raises:
        ModelIncompatibleError: listing the first mismatches and what would be compatible.
    """
    if len(states) != len(names):
        raise InvalidParameterError("check_compatible needs one name per state dict.")
    architectures = [detect_architecture(s) for s in states]
    for arch, name in zip(architectures, names, strict=True):
        if arch is None:
            raise ModelIncompatibleError(
                f"{name} is not an architecture spandrel knows, so it cannot be interpolated; "
                "only spandrel-loadable image models can be blended."
            )
    first, first_name, first_arch = states[0], names[0], architectures[0]
    kinds = {str(a.id) for a in architectures}
    if len(kinds) > 1:
        listing = ", ".join(f"{n} is {a.name}" for n, a in zip(names, architectures, strict=True))
        raise ModelIncompatibleError(
            f"Cannot blend models of different architectures: {listing}."
            + _compatibility_hint(first, first_name, str(first_arch.id))
        )
    for state, name in zip(states[1:], names[1:], strict=True):
        problems: list[str] = []
        missing = sorted((k for k in first if k not in state), key=_natural)
        extra = sorted((k for k in state if k not in first), key=_natural)
        if missing:
            problems.append(_listing(f"missing from {name}", missing))
        if extra:
            problems.append(_listing(f"only in {name}", extra))
        common = sorted((k for k in first if k in state), key=_natural)
        shapes = [
            f"{k} is {_shape_text(tuple(first[k].shape))} in {first_name} but "
            f"{_shape_text(tuple(state[k].shape))} in {name}"
            for k in common
            if tuple(first[k].shape) != tuple(state[k].shape)
        ]
        if shapes:
            problems.append(_listing("different shapes", shapes))
        kinds_differ = [
            f"{k} ({first[k].dtype} vs {state[k].dtype})"
            for k in common
            if first[k].is_floating_point() != state[k].is_floating_point()
        ]
        if kinds_differ:
            problems.append(_listing("float and integer tensors mixed", kinds_differ))
        if problems:
            sizes = ""
            first_size, other_size = _hyperparameters(first), _hyperparameters(state)
            if first_size and other_size and first_size != other_size:
                sizes = f"{first_name}: {first_size} vs {name}: {other_size}; "
            raise ModelIncompatibleError(
                f"Cannot blend {first_name} and {name}: both are {first_arch.name} but of different "
                f"sizes ({sizes}{'; '.join(problems)})."
                + _compatibility_hint(first, first_name, str(first_arch.id))
            )
    return str(first_arch.id)


def _natural(key: str) -> tuple[tuple[int, str], ...]:
    """Sort key putting ``body.2`` before ``body.10``."""
    return tuple((int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"(\d+)", key) if part)


def _hyperparameters(state: Mapping[str, torch.Tensor]) -> str:
    """spandrel's short description of a model's size (``64nf 23nb x4``), or ``""``."""
    import spandrel

    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(dict(state))
    except Exception:  # only used to explain an error; never hide that error
        return ""
    return " ".join([*(str(t) for t in descriptor.tags), f"x{descriptor.scale}"])


def _listing(label: str, items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MISMATCHES_SHOWN])
    more = f" and {len(items) - _MISMATCHES_SHOWN} more" if len(items) > _MISMATCHES_SHOWN else ""
    return f"{label}: {shown}{more}"


# --------------------------------------------------------------------------- blending


def blend_state_dicts(
    states: Sequence[Mapping[str, torch.Tensor]],
    weights: Sequence[float],
    *,
    names: Sequence[str] | None = None,
    check: bool = True,
) -> StateDict:
    """``sum(w_i * states[i])`` key by key, in the first state dict's key order.

    Args:
        states: two or more state dicts of one architecture (CPU tensors).
        weights: one weight per state dict, each in [0, 1], summing to 1.
        names: display names for error messages (default ``model 1``, ``model 2``...).
        check: run :func:`check_compatible` first (callers that already did pass False).

    Returns:
        A new state dict. Float tensors are computed in float32 (float64 when any parent has
        any float64 tensor) as ``w_1 * t_1 + w_2 * t_2 + ...``, the official DNI formula,
        skipping zero weights, so a weight of 1 reproduces that parent bit for bit; they are
        cast back to the first model's dtype. Non-float tensors (counters, indices) are
        copied from the first model.
    """
    names = list(names) if names is not None else [f"model {i + 1}" for i in range(len(states))]
    weights = normalize_weights(len(states), weights=weights)
    if check:
        check_compatible(states, names)
    active = [(state, w) for state, w in zip(states, weights, strict=True) if w != 0.0]
    (first_state, first_weight), rest = active[0], active[1:]
    compute = (
        torch.float64
        if any(t.dtype == torch.float64 for state in states for t in state.values())
        else torch.float32
    )
    # One reused buffer for the product terms: a fresh allocation per term costs page faults,
    # which would dominate the arithmetic.
    scratch = torch.empty(max(t.numel() for t in states[0].values()) if rest else 0, dtype=compute)

    def as_compute(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach() if tensor.dtype == compute else tensor.detach().to(compute)

    blended: StateDict = {}
    for key, reference in states[0].items():
        if not reference.is_floating_point():
            blended[key] = reference.detach().clone()
            continue
        accumulator = torch.mul(as_compute(first_state[key]), first_weight)
        for state, weight in rest:
            tensor = as_compute(state[key])
            accumulator.add_(torch.mul(tensor, weight, out=scratch[: tensor.numel()].view(tensor.shape)))
        blended[key] = accumulator if accumulator.dtype == reference.dtype else accumulator.to(reference.dtype)
    return blended


def _descriptor_from_state(state: Mapping[str, torch.Tensor], label: str) -> Any:
    """A float32 CPU, eval-mode spandrel ImageModelDescriptor for ``state``."""
    import spandrel

    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(dict(state))
    except Exception as exc:
        raise ModelIncompatibleError(f"The blend {label} could not be loaded by spandrel: {exc}") from exc
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ModelIncompatibleError(
            f"{label} is a {descriptor.purpose} model; only image-to-image models can be interpolated."
        )
    # spandrel builds float32 CPU modules and copies the weights in (fp16 parents included),
    # exactly like ComfyUI's core loader and restorekit.models.load_model.
    return descriptor.eval()
