"""Network interpolation (ESRGAN's DNI): blend the weights of compatible models.

ESRGAN's network interpolation blends networks of one lineage parameter by parameter,
``(1 - alpha) * A + alpha * B``; with N models, ``sum(w_i * M_i)`` with weights that sum to 1.
Between a PSNR-oriented network and its GAN fine-tune it trades smoothness for texture with
no retraining; Real-ESRGAN uses the same trick for realesr-general-x4v3's denoise strength
(``-dn d`` = ``d * general-x4v3 + (1 - d) * general-wdn-x4v3``).

Layers, from pure to convenient:

- :func:`blend_state_dicts`: the arithmetic on state dicts, after :func:`check_compatible`
  (one spandrel architecture, the same keys, the same shapes). Float tensors are blended in
  float32 (float64 if a parent is float64) and cast back to the first model's dtype;
  non-float tensors are copied from the first model.
- :func:`interpolate`: model references (registry names, names in the model home, paths) to
  an :class:`InterpolatedModel`, whose ``descriptor`` is a float32 CPU spandrel
  ``ImageModelDescriptor`` usable anywhere an upscale model is (ComfyUI's core upscale node
  included) and which :meth:`~InterpolatedModel.save` writes as safetensors with the
  parents' SHA-256 and weights in its metadata. Results are LRU-cached by (the parents' file
  identities, the weights), so a slider does not recompute.
- :func:`pair_blend` and :func:`resolve_with_strength`: the registry's interpolation pairs,
  whose ``meaning`` (``sharpness``, ``denoise``) says what alpha controls.
- :func:`blend_descriptors`: the same for already-loaded spandrel descriptors (ComfyUI's
  ``UPSCALE_MODEL`` inputs).

Every blend of models that are not a registry pair is checked for being broken (see
:func:`check_merge`): networks trained independently share a layout but not the meaning of
their channels, and their blend is garbage even though each parent is fine.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import (
    InvalidParameterError,
    ModelIncompatibleError,
    ModelNotFoundError,
    RestoreKitError,
)
from .files import sha256_file
from .progress import CancelCheck, ProgressCallback, Reporter
from .registry.convert import load_safetensors_file, read_metadata, save_state_dict

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]

METADATA_KEY = "restorekit.interpolation"
"""Safetensors metadata key holding the JSON record of a saved blend."""

METADATA_VERSION = 1
WEIGHT_SUM_TOLERANCE = 1e-6
"""How far the weights may sum from 1 (rounding of typed decimals such as 0.1,0.2,0.7)."""

MEANINGS: tuple[str, ...] = ("sharpness", "denoise")
"""What the registry's interpolation pairs control (``interpolate_with.meaning``)."""

_RESULT_CACHE_SIZE = 4
_PARENT_CACHE_SIZE = 4
_PROBE_CACHE_SIZE = 16
_MISMATCHES_SHOWN = 3


# --------------------------------------------------------------------------- small LRU


class _LRU:
    """A small thread-safe LRU cache; values are computed by the caller, outside the lock."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, key: Hashable) -> Any:
        """The value under ``key`` (now the most recently used), or None."""
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def store(self, key: Hashable, value: Any) -> Any:
        """Keep ``value`` under ``key`` unless another thread stored one first; return the kept one."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            return value

    def forget(self) -> None:
        with self._lock:
            self._items.clear()


_results = _LRU(_RESULT_CACHE_SIZE)
_parent_states = _LRU(_PARENT_CACHE_SIZE)
_parent_probes = _LRU(_PROBE_CACHE_SIZE)


def clear_cache() -> None:
    """Forget cached blends, parents' weights and parents' probe outputs."""
    for cache in (_results, _parent_states, _parent_probes):
        cache.forget()
    _sha256_of.cache_clear()


# --------------------------------------------------------------------------- parents


FileIdentity = tuple[str, int, int]
"""(resolved path, mtime in ns, size): changes whenever the file is replaced or edited."""


def _identity(path: Path) -> FileIdentity:
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _sha256_of(identity: FileIdentity) -> str:
    path = Path(identity[0])
    if not path.is_file() or _identity(path) != identity:
        raise ModelIncompatibleError(
            f"{path.name} was changed or removed after it was blended, so the blend's record of its "
            "parents would be wrong; blend again."
        )
    digest = sha256_file(path)
    if _identity(path) != identity:
        raise ModelIncompatibleError(f"{path.name} changed while it was being hashed; blend again.")
    return digest


@dataclass(frozen=True)
class ParentModel:
    """One model that went into a blend.

    ``path`` and ``identity`` are None for in-memory parents (:func:`blend_descriptors`).
    """

    name: str
    path: Path | None = None
    identity: FileIdentity | None = None

    @property
    def sha256(self) -> str | None:
        """The SHA-256 of the parent's safetensors file (computed once, on first use)."""
        return _sha256_of(self.identity) if self.identity is not None else None


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
    from .architectures import get_architecture
    from .registry.schema import load_registry

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


# --------------------------------------------------------------------------- broken-merge check


PROBE_SIZE = 8
"""Side of the probe images (pixels). Small: the check must cost little next to the blend."""

PROBE_NAMES: tuple[str, ...] = ("flat gray", "white", "pattern")

MERGE_ABS_TOLERANCE = 0.03
"""Mean absolute deviation (0..1 scale) a blend may always have from its parents' mix."""

MERGE_REL_TOLERANCE = 0.5
"""Extra allowed deviation, as a fraction of how much the parents disagree on that probe."""

_MAX_PROBE_SIDE = 64


def probe_images(size: int = PROBE_SIZE, channels: int = 3) -> torch.Tensor:
    """The probes of :func:`check_merge`: (3, C, size, size) float32 in [0, 1].

    A flat mid-gray, a flat white (chaiNNer's test), and a colour pattern (a sine grating
    with a saturated square), which catches broken blends of networks with an image-level
    skip connection (SRVGGNetCompact) that pass flat images through almost unchanged.
    """
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    pattern = torch.stack([0.5 + 0.35 * torch.sin(xx * 1.3 + c) * torch.cos(yy * 0.9 - c) for c in (0.0, 2.0, 4.0)])
    pattern[:, size // 4 : size // 2, size // 3 : 2 * size // 3] = torch.tensor([0.9, 0.2, 0.1])[:, None, None]
    batch = torch.stack([torch.full((3, size, size), 0.5), torch.ones(3, size, size), pattern])
    if channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (batch * weights).sum(dim=1, keepdim=True)
    if channels == 3:
        return batch
    raise InvalidParameterError(f"No probe images for {channels}-channel models.")


@dataclass(frozen=True)
class MergeCheck:
    """The verdict of :func:`check_merge`.

    Attributes:
        status: ``ok``, ``broken``, or ``skipped`` (with the reason in ``detail``).
        score: the largest deviation divided by what is allowed on that probe; above 1 is
            broken (``inf`` for non-finite output, ``nan`` when skipped).
        deviation: the largest mean absolute difference (0..1 scale) between the blend's
            output and the weighted mix of its parents' outputs.
        probe: the probe image where that happened.
        detail: a sentence for logs and front ends.
    """

    status: str
    score: float
    deviation: float
    probe: str
    detail: str

    @property
    def ok(self) -> bool:
        """False only when the blend was found broken."""
        return self.status != "broken"


def _probe_input(descriptor: Any) -> torch.Tensor | str:
    """The probe batch for ``descriptor``, or why it cannot be probed cheaply."""
    requirements = descriptor.size_requirements
    side = max(PROBE_SIZE, int(requirements.minimum))
    side = -(-side // int(requirements.multiple_of)) * int(requirements.multiple_of)
    if side > _MAX_PROBE_SIDE:
        return f"{descriptor.architecture.name} needs inputs of at least {side} px, too large for a quick check"
    if descriptor.input_channels not in (1, 3):
        return f"no probe images for {descriptor.input_channels}-channel models"
    return probe_images(side, descriptor.input_channels)


def _run_probe(descriptor: Any, probes: torch.Tensor) -> torch.Tensor:
    parameter = next(iter(descriptor.model.parameters()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    with torch.inference_mode():
        output = descriptor(probes.to(device=device, dtype=dtype))
    return output.detach().to(device="cpu", dtype=torch.float32)


def check_merge(
    blend: Any,
    parents: Sequence[Any],
    weights: Sequence[float],
    *,
    parent_outputs: Sequence[torch.Tensor] | None = None,
) -> MergeCheck:
    """Judge whether a blend is broken by comparing it with its parents on probe images.

    A blend of related networks behaves like the blend of their outputs on simple inputs;
    one of unrelated networks (trained independently, so their channels mean different
    things) does not. The blend and each parent run on :func:`probe_images`; on each probe
    the blend's mean absolute deviation from ``sum(w_i * parent_i)`` may be at most
    ``MERGE_ABS_TOLERANCE + MERGE_REL_TOLERANCE * (largest disagreement between parents)``.

    Args:
        blend: the blended descriptor.
        parents: the parents' descriptors (only used where ``parent_outputs`` is None).
        weights: the blend weights.
        parent_outputs: the parents' outputs on the probes, if already known (cached).
    """
    probes = _probe_input(blend)
    if isinstance(probes, str):
        return MergeCheck("skipped", math.nan, math.nan, "", f"merge check skipped: {probes}")
    outputs = list(parent_outputs) if parent_outputs is not None else [_run_probe(p, probes) for p in parents]
    result = _run_probe(blend, probes)
    mix = sum(w * out for w, out in zip(weights, outputs, strict=True))
    assert isinstance(mix, torch.Tensor)
    if not torch.isfinite(result).all():
        return MergeCheck(
            "broken", math.inf, math.inf, "any",
            "the blend outputs NaN or infinite values: the models are not of one lineage",
        )
    worst = (0.0, 0.0, "")
    for index, probe in enumerate(PROBE_NAMES):
        deviation = (result[index] - mix[index]).abs().mean().item()
        disagreement = max(
            (a[index] - b[index]).abs().mean().item() for i, a in enumerate(outputs) for b in outputs[i + 1 :]
        )
        score = deviation / (MERGE_ABS_TOLERANCE + MERGE_REL_TOLERANCE * disagreement)
        if score > worst[0]:
            worst = (score, deviation, probe)
    score, deviation, probe = worst
    if score > 1.0:
        return MergeCheck(
            "broken", score, deviation, probe,
            f"on a {probe} test image the blend is {deviation:.3f} away from the mix of its parents' "
            f"outputs ({score:.1f}x the allowed deviation): the models are probably not of one lineage "
            "(trained independently), and their blend will produce artefacts",
        )
    return MergeCheck(
        "ok", score, deviation, probe,
        f"the blend behaves like the mix of its parents (worst on the {probe or 'flat gray'} probe: "
        f"{deviation:.4f}, {score:.2f}x the allowed deviation)",
    )


# --------------------------------------------------------------------------- result


class InterpolatedModel:
    """A blend of two or more models.

    Attributes:
        descriptor: a float32 CPU, eval-mode spandrel ``ImageModelDescriptor``; use it
            wherever an upscale model is accepted. Treat it as read-only (it may be cached
            and shared).
        state_dict: the blended weights, with the first parent's keys and dtypes (what
            :meth:`save` writes).
        parents: the models that went in, in order.
        weights: one weight per parent, summing to 1.
        architecture: spandrel's architecture id (``ESRGAN``, ``Compact``...).
    """

    def __init__(
        self,
        descriptor: Any,
        state_dict: StateDict,
        parents: Sequence[ParentModel],
        weights: Sequence[float],
        architecture: str,
        parent_probe: Callable[[int], torch.Tensor] | None = None,
    ) -> None:
        self.descriptor = descriptor
        self.state_dict = state_dict
        self.parents = tuple(parents)
        self.weights = tuple(float(w) for w in weights)
        self.architecture = architecture
        self._parent_probe = parent_probe
        self._check: MergeCheck | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"InterpolatedModel({self.formula}, {self.architecture} x{self.descriptor.scale})"

    @property
    def formula(self) -> str:
        """``0.3 × RealESRNet_x4plus + 0.7 × RealESRGAN_x4plus``."""
        return " + ".join(f"{w:g} × {p.name}" for p, w in zip(self.parents, self.weights, strict=True))

    @property
    def single_parent(self) -> ParentModel | None:
        """The parent this blend is identical to (its weight is 1), if any."""
        nonzero = [p for p, w in zip(self.parents, self.weights, strict=True) if w != 0.0]
        return nonzero[0] if len(nonzero) == 1 else None

    @property
    def check(self) -> MergeCheck | None:
        """The broken-merge verdict, if :meth:`run_check` ran (``interpolate`` runs it)."""
        return self._check

    @property
    def broken(self) -> bool:
        """True when the broken-merge check ran and found the blend broken."""
        return self._check is not None and not self._check.ok

    def run_check(self) -> MergeCheck:
        """Run the broken-merge check once (later calls return the same verdict) and log a
        warning when the blend is broken."""
        with self._lock:
            if self._check is not None:
                return self._check
            if self.single_parent is not None:
                verdict = MergeCheck("ok", 0.0, 0.0, "", f"the blend is {self.single_parent.name} itself")
            elif self._parent_probe is None:
                verdict = MergeCheck("skipped", math.nan, math.nan, "", "merge check skipped: the parents are not available")
            elif isinstance(reason := _probe_input(self.descriptor), str):
                verdict = MergeCheck("skipped", math.nan, math.nan, "", f"merge check skipped: {reason}")
            else:
                try:
                    outputs = [self._parent_probe(i) for i in range(len(self.parents))]
                except RestoreKitError as exc:
                    verdict = MergeCheck("skipped", math.nan, math.nan, "", f"merge check skipped: {exc}")
                else:
                    verdict = check_merge(self.descriptor, [], self.weights, parent_outputs=outputs)
            if verdict.status == "broken":
                logger.warning("The blend %s looks broken: %s.", self.formula, verdict.detail)
            else:
                logger.info("blend %s: %s", self.formula, verdict.detail)
            self._check = verdict
            return verdict

    def metadata(self) -> dict[str, str]:
        """The safetensors metadata :meth:`save` writes (parents' SHA-256 are computed here)."""
        record = {
            "version": METADATA_VERSION,
            "architecture": self.architecture,
            "formula": self.formula,
            "parents": [
                {"name": p.name, "sha256": p.sha256, "weight": w} for p, w in zip(self.parents, self.weights, strict=True)
            ],
        }
        if self._check is not None and self._check.status != "skipped":
            record["check"] = {"status": self._check.status, "score": round(self._check.score, 6)}
        return {
            METADATA_KEY: json.dumps(record, sort_keys=True),
            "restorekit.kind": "interpolation",
        }

    def save(self, target: str | os.PathLike[str], *, overwrite: bool = False) -> str:
        """Write the blend as safetensors (atomically) with :meth:`metadata`; return its SHA-256.

        Raises:
            InvalidParameterError: not a ``.safetensors`` path, the file exists (and
                ``overwrite`` is False), or it is one of the parents.
        """
        path = Path(target).expanduser()
        if path.suffix.lower() != ".safetensors":
            raise InvalidParameterError(
                f"{path.name}: blends are saved as safetensors; give a path ending in .safetensors."
            )
        resolved = path.resolve()
        for parent in self.parents:
            if parent.path is not None and parent.path.resolve() == resolved:
                raise InvalidParameterError(
                    f"{path} is one of the models being blended ({parent.name}); inputs are never "
                    "overwritten. Choose another output path."
                )
        if path.exists() and not overwrite:
            raise InvalidParameterError(f"{path} exists; pass overwrite (--overwrite) to replace it or choose another path.")
        return save_state_dict(self.state_dict, path, self.metadata())


@dataclass(frozen=True)
class InterpolationRecord:
    """What a saved blend's metadata says about how it was made."""

    architecture: str
    parents: tuple[tuple[str, str | None, float], ...]
    """``(name, sha256, weight)`` per parent, in blend order."""
    formula: str
    check: Mapping[str, Any] | None = None


def read_interpolation_metadata(path: str | os.PathLike[str]) -> InterpolationRecord | None:
    """The :class:`InterpolationRecord` in a saved blend's metadata, or None for other files."""
    raw = read_metadata(path).get(METADATA_KEY)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        parents = tuple((str(p["name"]), p.get("sha256"), float(p["weight"])) for p in data["parents"])
        return InterpolationRecord(str(data["architecture"]), parents, str(data.get("formula", "")), data.get("check"))
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelIncompatibleError(f"{Path(path).name} has a malformed {METADATA_KEY} record ({exc}).") from exc


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
    from .models import load_model

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
    from .models import MODEL_EXTENSIONS

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
    from .models import resolve_model

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
