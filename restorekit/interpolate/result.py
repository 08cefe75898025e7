"""A blend's result: its descriptor, parents and weights, the merge check, and saved blends."""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import (
    InvalidParameterError,
    ModelIncompatibleError,
    RestoreKitError,
)
from ..registry.convert import read_metadata, save_state_dict
from .blend import StateDict
from .cache import ParentModel
from .probe import MergeCheck, _probe_input, check_merge

logger = logging.getLogger(__name__)



METADATA_KEY = "restorekit.interpolation"
"""Safetensors metadata key holding the JSON record of a saved blend."""

METADATA_VERSION = 1

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
