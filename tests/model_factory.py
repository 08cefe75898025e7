"""Tiny generated models and registries for tests where no real weights exist.

The weights are random but have the exact official key layout (from
:func:`restorekit.architectures.random_state_dict`), so every loader runs its real code path.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import save as save_safetensors_bytes

from restorekit.architectures import random_state_dict

TINY_PARAMS = {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 8, "num_conv": 2, "upscale": 2, "act_type": "prelu"}


def tiny_state(seed: int = 0, **overrides: Any) -> dict[str, torch.Tensor]:
    """A tiny SRVGGNetCompact x2 (about 2k parameters) with official basicsr keys."""
    params = {**TINY_PARAMS, **overrides}
    return random_state_dict("SRVGGNetCompact", params, seed=seed, std=0.1)


def pth_bytes(state: dict[str, torch.Tensor], key: str | None = "params_ema") -> bytes:
    """The bytes of ``torch.save({key: state})`` (zip format), as official checkpoints are."""
    buffer = io.BytesIO()
    torch.save({key: state} if key else state, buffer)
    return buffer.getvalue()


def safetensors_bytes(state: dict[str, torch.Tensor]) -> bytes:
    return save_safetensors_bytes({k: v.contiguous() for k, v in state.items()})


class _Evil:
    """Pickles to a call of os.system: what a malicious checkpoint looks like."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return (os.system, ("echo this-should-never-run",))


def evil_pth_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save({"params": state, "payload": _Evil()}, buffer, pickle_protocol=2)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def srvgg_ncnn(state: dict[str, torch.Tensor], params: dict[str, Any] | None = None, *, fp16: bool = True) -> tuple[str, bytes]:
    """An ncnn ``.param`` text and ``.bin`` bytes for an SRVGGNetCompact state dict, laid out
    the way ncnn's converter writes Real-ESRGAN's compact models."""
    p = {**TINY_PARAMS, **(params or {})}
    nf, n_conv, scale = p["num_feat"], p["num_conv"], p["upscale"]
    lines = ["Input input 0 1 data", "Split split 1 2 data a b"]
    blob = b""
    index = 0
    previous = "a"

    def conv(name: str, key: str, c_out: int) -> None:
        nonlocal blob, previous
        weight = state[f"{key}.weight"].numpy()
        bias = state[f"{key}.bias"].numpy()
        lines.append(f"Convolution {name} 1 1 {previous} {name}_o 0={c_out} 1=3 4=1 5=1 6={weight.size}")
        previous = f"{name}_o"
        if fp16:
            data = weight.astype("<f2").tobytes()
            data += b"\x00" * ((-len(data)) % 4)
            blob += np.array([0x01306B47], "<u4").tobytes() + data
        else:
            blob += np.array([0], "<u4").tobytes() + weight.astype("<f4").tobytes()
        blob += bias.astype("<f4").tobytes()

    def prelu(name: str, key: str) -> None:
        nonlocal blob, previous
        slope = state[f"{key}.weight"].numpy()
        lines.append(f"PReLU {name} 1 1 {previous} {name}_o 0={slope.size}")
        previous = f"{name}_o"
        blob += slope.astype("<f4").tobytes()

    conv("conv0", f"body.{index}", nf)
    index += 1
    prelu("prelu0", f"body.{index}")
    index += 1
    for i in range(n_conv):
        conv(f"conv{i + 1}", f"body.{index}", nf)
        index += 1
        prelu(f"prelu{i + 1}", f"body.{index}")
        index += 1
    conv("conv_last", f"body.{index}", 3 * scale * scale)
    lines.append(f"PixelShuffle ps 1 1 {previous} up 0={scale}")
    lines.append(f"Interp interp 1 1 b base 0=1 1={scale}.0 2={scale}.0")
    lines.append("BinaryOp add 2 1 up base output")
    text = "7767517\n" + f"{len(lines)} {len(lines) + 2}\n" + "\n".join(lines) + "\n"
    return text, blob


def wheel_bytes(package: str, version: str, members: dict[str, bytes]) -> tuple[str, bytes]:
    """A minimal valid py3-none-any wheel containing ``members``; returns (filename, bytes)."""
    dist = package.replace("-", "_")
    filename = f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        archive.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return filename, buffer.getvalue()


def tiny_entry(sources: list[dict[str, Any]], *, purpose: str = "upscale", pair: dict[str, Any] | None = None, **params: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "purpose": purpose,
        "description": "a tiny generated test model",
        "architecture": {"name": "SRVGGNetCompact", "params": {**TINY_PARAMS, **params}},
        "scale": int({**TINY_PARAMS, **params}["upscale"]),
        "license": {"id": "MIT"},
        "sources": sources,
    }
    if pair:
        entry["interpolate_with"] = pair
    return entry


def write_registry(path: Path, models: dict[str, dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"version": 1, "models": models}, sort_keys=False), encoding="utf-8")
    return path
