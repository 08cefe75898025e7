"""Checkpoints: safetensors for tensors + JSON for the rest; atomic; the last K kept.

A checkpoint is a folder ``RUN_DIR/checkpoints/iter_000001000/`` holding
``state.safetensors`` (every tensor: G, G-EMA, D, optimiser moments, the pair pool, RNG
states as bytes) and ``state.json`` (iteration, config, optimiser hyperparameters, scaler,
metrics so far). It is written into a hidden temporary folder beside it and renamed into
place only when both files are complete and synced, so a crash or a full disk never leaves a
half-written checkpoint under a checkpoint's name. Nothing is pickled.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import RestoreKitError

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
_NAME = re.compile(r"^iter_(\d{9})$")


class CheckpointError(RestoreKitError):
    """A checkpoint cannot be written or read (full disk, damaged or foreign files)."""


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint on disk."""

    path: Path
    iteration: int

    def load(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors on the CPU, JSON values)."""
        try:
            tensors = load_file(str(self.path / STATE_TENSORS))
            values = json.loads((self.path / STATE_JSON).read_text(encoding="utf-8"))
        except (OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"Checkpoint {self.path} cannot be read ({exc}); delete that folder to resume from the one before."
            ) from exc
        return tensors, values


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def list_checkpoints(run_dir: Path) -> list[Checkpoint]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.match(path.name)
        if match and (path / STATE_TENSORS).is_file() and (path / STATE_JSON).is_file():
            found.append(Checkpoint(path, int(match.group(1))))
    return sorted(found, key=lambda c: c.iteration)


def latest_checkpoint(run_dir: Path) -> Checkpoint | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _describe_os_error(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full"
    return exc.strerror or str(exc)


def save_checkpoint(run_dir: Path, iteration: int, tensors: Mapping[str, torch.Tensor], values: Mapping[str, Any], *, keep_last: int) -> Checkpoint:
    """Write a checkpoint atomically, then drop all but the newest ``keep_last``.

    Raises :class:`CheckpointError` (naming the last complete checkpoint, which is intact)
    when the files cannot be written.
    """
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"iter_{iteration:09d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        save_file(cpu, str(tmp / STATE_TENSORS))
        _fsync(tmp / STATE_TENSORS)
        with open(tmp / STATE_JSON, "w", encoding="utf-8") as handle:
            json.dump(values, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except (OSError, RuntimeError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        previous = latest_checkpoint(run_dir)
        kept = f"the last complete checkpoint ({previous.path.name}) is intact" if previous else "no earlier checkpoint exists"
        reason = _describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
        raise CheckpointError(
            f"Could not save the checkpoint of iteration {iteration} in {root}: {reason}; {kept}. "
            "Free some space (or lower keep_last) and run again with --resume."
        ) from exc
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old.path, ignore_errors=True)
    with contextlib.suppress(OSError):
        for stale in root.glob(".iter_*"):
            shutil.rmtree(stale, ignore_errors=True)
    return Checkpoint(target, iteration)


# --------------------------------------------------------------------------- optimiser state


def optimizer_tensors(optimizer: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten an optimiser's state dict: tensors under ``prefix.state.<id>.<name>``, the
    rest (param groups, plain numbers) as JSON values."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for pid, entry in state["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.state.{pid}.{name}"] = value
            else:
                plain.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def load_optimizer(optimizer: torch.optim.Optimizer, prefix: str, tensors: Mapping[str, torch.Tensor], values: Mapping[str, Any]) -> None:
    """Inverse of :func:`optimizer_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    marker = f"{prefix}.state."
    for key, value in tensors.items():
        if key.startswith(marker):
            pid, name = key[len(marker) :].split(".", 1)
            state.setdefault(int(pid), {})[name] = value
    for pid, entry in values.get("plain", {}).items():
        state.setdefault(int(pid), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": values["param_groups"]})


def prefixed(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def unprefixed(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    marker = f"{prefix}."
    return {k[len(marker) :]: v for k, v in tensors.items() if k.startswith(marker)}


def rng_tensors() -> dict[str, torch.Tensor]:
    """The global RNG states as uint8 tensors (CPU, and CUDA when present)."""
    out = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, value in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{index}"] = value
    return out


def restore_rng(tensors: Mapping[str, torch.Tensor]) -> None:
    if "rng.cpu" in tensors:
        torch.set_rng_state(tensors["rng.cpu"])
    cuda = sorted((int(k.rsplit(".", 1)[1]), v) for k, v in tensors.items() if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([v for _, v in cuda])
