"""The broken-merge check: a blend of unrelated networks shares their layout, not their meaning."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import (
    InvalidParameterError,
)

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
