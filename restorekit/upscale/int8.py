"""int8 execution of upscale networks: static post-training quantisation with a quality gate.

``--precision int8`` runs a network's convolutions as int8 x int8 -> int32 through PyTorch's
x86 quantized engine (fbgemm/oneDNN: AVX512-VNNI or AMX-INT8 where the CPU has them). It is
offered for a model only when the quantized network holds quality on real photos.

How it is built (:data:`RECIPE`):

- FX graph mode quantisation (``torch.ao.quantization.quantize_fx``: ``prepare_fx`` /
  ``convert_fx``). The PT2E flow (``prepare_pt2e``) has moved out of PyTorch into torchao;
  torchao is not installed here and would add a heavy, version-coupled dependency for the same
  x86 kernels, so the FX path that ships with torch is used.
- Weights: int8, symmetric, one scale per output channel. Activations: uint8, one scale per
  tensor from a histogram observer (the range that minimises the quantisation error, not the
  raw min/max); the full 8-bit range where the CPU has VNNI/AMX (no 16-bit saturation),
  else the 7-bit range PyTorch's x86 default uses.
- Mixed int8: the first and the last convolution, residual additions and scalings stay in
  float, and RRDB's upsampling tail (7% of the work) runs in the float precision ``auto``
  picks (bf16 on AVX512-BF16/AMX CPUs), in strips, as the float path does.
- Calibration on two bundled photos (``assets/int8_calibration_*.png``: crops of scikit-
  image's coffee and chelsea, CC0), the gate on two others (rocket, NASA, and the astronaut
  sample, public domain).

The gate (:func:`gate_for`): the int8 network against the float32 one on the gate photos,
at least :data:`MIN_PSNR_DB` dB PSNR and a mean low-pass Lab difference (colour shift,
:func:`restorekit.compare.lowpass_lab_difference`) of at most :data:`MAX_LAB_DIFFERENCE`.
It is measured once per model and machine and cached in the model home
(``.restorekit/int8/``), keyed by the SHA-256 of the weights, the torch version and the
recipe, together with the calibration statistics, so later runs build the int8 network
without calibrating again. A model that fails gets a :class:`ModelIncompatibleError` that
states the measured numbers and says to use bf16.

``auto`` never picks int8: it is asked for explicitly (see the README's precision section
for the measured speed).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import operator
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..compare import lowpass_lab_difference, psnr
from ..device import ExecutionPlan, resolve_dtype
from ..errors import ModelIncompatibleError

logger = logging.getLogger(__name__)

RECIPE = "fx-x86-hist-perchannel-v1"
"""Changes to how the int8 network is built change this, so cached gates are redone."""
MIN_PSNR_DB = 40.0
"""The gate: int8 output against float32 output, PSNR in dB, at least this."""
MAX_LAB_DIFFERENCE = 0.5
"""The gate: mean low-pass Lab difference (ΔE) of int8 against float32, at most this."""

_ASSETS = Path(__file__).resolve().parent.parent / "assets"
CALIBRATION_IMAGES = ("int8_calibration_coffee.png", "int8_calibration_chelsea.png")
GATE_IMAGES = ("int8_gate_rocket.png", "sample.png")
_SIDE = 64
"""Calibration and gate windows are ``_SIDE`` px squares (the network's input size)."""


# --------------------------------------------------------------------------- photos


def _photo(name: str, side: int = _SIDE) -> torch.Tensor:
    """A bundled photo's centre ``side`` px square: (1, 3, side, side) float32 [0, 1]."""
    from PIL import Image

    with Image.open(_ASSETS / name) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    h, w = tensor.shape[-2:]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return tensor[:, :, top : top + side, left : left + side].contiguous()


def calibration_photos() -> list[torch.Tensor]:
    return [_photo(name) for name in CALIBRATION_IMAGES]


def gate_photos() -> list[torch.Tensor]:
    return [_photo(name) for name in GATE_IMAGES]


# --------------------------------------------------------------------------- keys and cache


_hashes: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def weights_sha256(module: nn.Module) -> str:
    """SHA-256 of a network's weights (names, dtypes, shapes and bytes of its state dict,
    in name order): the same for the same weights however they were loaded."""
    with _lock:
        if module in _hashes:
            return _hashes[module]
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    result = digest.hexdigest()
    with _lock:
        _hashes[module] = result
    return result


def cache_dir() -> Path:
    """Where gate results and calibration statistics are kept: ``<model home>/.restorekit/int8``."""
    from ..registry.home import get_home

    return get_home().state_dir / "int8"


def _cache_stem(sha256: str) -> str:
    version = torch.__version__.split("+")[0]
    return f"{sha256[:32]}-torch{version}-{RECIPE}"


@dataclass(frozen=True)
class GateResult:
    """The int8 quality gate of one model on this machine's torch.

    Attributes:
        psnr_db: int8 against float32 output on the gate photos (the worst photo).
        lab_difference: mean low-pass Lab difference (ΔE) of int8 against float32 (the worst).
        passed: both within :data:`MIN_PSNR_DB` and :data:`MAX_LAB_DIFFERENCE`.
        weights_sha256, torch_version, recipe: what the result is keyed by.
        seconds: how long calibrating and measuring took.
    """

    psnr_db: float
    lab_difference: float
    passed: bool
    weights_sha256: str
    torch_version: str
    recipe: str
    seconds: float

    def describe(self) -> str:
        return f"{self.psnr_db:.1f} dB PSNR and a colour shift of {self.lab_difference:.2f} ΔE against fp32"


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temp)
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()


def load_cached_gate(sha256: str, directory: Path | None = None) -> tuple[GateResult, dict[str, torch.Tensor]] | None:
    """The cached gate result and calibration statistics for these weights, or None."""
    directory = directory or cache_dir()
    stem = _cache_stem(sha256)
    json_path, stats_path = directory / f"{stem}.json", directory / f"{stem}.safetensors"
    if not json_path.is_file() or not stats_path.is_file():
        return None
    try:
        from safetensors.torch import load_file

        result = GateResult(**json.loads(json_path.read_text(encoding="utf-8")))
        stats = load_file(str(stats_path))
    except (OSError, ValueError, TypeError) as exc:
        logger.warning("ignoring an unreadable int8 gate cache %s: %s", json_path, exc)
        return None
    if result.weights_sha256 != sha256 or result.recipe != RECIPE:
        return None
    return result, stats


def save_gate(result: GateResult, stats: dict[str, torch.Tensor], directory: Path | None = None) -> None:
    """Cache a gate result with its calibration statistics (written atomically)."""
    from safetensors.torch import save_file

    directory = directory or cache_dir()
    stem = _cache_stem(result.weights_sha256)
    _write_atomic(directory / f"{stem}.safetensors", lambda p: save_file({k: v.contiguous() for k, v in stats.items()}, str(p)))
    _write_atomic(directory / f"{stem}.json", lambda p: p.write_text(json.dumps(asdict(result), indent=1), encoding="utf-8"))


# --------------------------------------------------------------------------- quantisation


def _fast_int8() -> bool:
    """True when the CPU multiplies int8 without 16-bit saturation (AVX512-VNNI, AVX-VNNI, AMX)."""
    try:
        return bool(torch.cpu._is_vnni_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # pragma: no cover - older torch
        return False


def _qconfig_mapping(float_modules: list[str]) -> Any:
    from torch.ao.quantization import (
        HistogramObserver,
        PerChannelMinMaxObserver,
        QConfig,
        QConfigMapping,
    )

    activation = HistogramObserver.with_args(dtype=torch.quint8, reduce_range=not _fast_int8())
    per_channel = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    mapping = QConfigMapping().set_global(QConfig(activation=activation, weight=per_channel))
    for op in (operator.add, operator.iadd, operator.mul, operator.imul, torch.add, torch.mul, F.interpolate, F.pixel_unshuffle, nn.PixelShuffle):
        mapping.set_object_type(op, None)  # the residual stream and the output stay float
    for name in float_modules:
        mapping.set_module_name(name, None)
    return mapping


class _FloatPReLU(nn.PReLU):
    """A PReLU that quantisation leaves in float. PyTorch's quantized PReLU was wrong by up
    to half the activation range (torch 2.14, on a crafted Compact network: 17 dB), and
    FX lowers any PReLU between quantized convs into it, whatever its qconfig says."""


def _float_prelus(module: nn.Module) -> None:
    """Swap every ``nn.PReLU`` of ``module`` (in place) for :class:`_FloatPReLU`."""
    for name, child in list(module.named_children()):
        if type(child) is nn.PReLU:
            replacement = _FloatPReLU(child.num_parameters)
            replacement.weight = child.weight
            setattr(module, name, replacement)
        else:
            _float_prelus(child)


def _edge_convs(module: nn.Module) -> list[str]:
    """Names of the first and the last Conv2d of ``module`` (in definition order)."""
    names = [name for name, sub in module.named_modules() if isinstance(sub, nn.Conv2d)]
    return sorted({names[0], names[-1]}) if names else []


@dataclass
class _Quantizable:
    """The part of a network that is quantized, and how the rest runs around it."""

    module: nn.Module
    float_modules: list[str]
    finish: Callable[[nn.Module], Callable[[torch.Tensor], torch.Tensor]]
    """Given the converted module, the whole network's forward: (N, C, h, w) float32 ->
    output float."""


class _RRDBHead(nn.Sequential):
    """RRDBNet's ``conv_first`` and trunk (children ``0`` and ``1``), after the pixel
    unshuffle of its x2/x1 forms: (N, 3, h, w) -> (N, nf, h / shuffle, w / shuffle)."""

    def __init__(self, conv_first: nn.Module, trunk: nn.Module, shuffle: int) -> None:
        super().__init__(conv_first, trunk)
        self.shuffle = shuffle

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shuffle > 1:
            x = F.pixel_unshuffle(x, self.shuffle)
        for module in self:
            x = module(x)
        return x


def _rrdb_quantizable(network: nn.Module, plan: ExecutionPlan) -> _Quantizable | None:
    """ESRGAN/RRDBNet: conv_first + the RRDB trunk quantized (conv_first in float), the
    upsampling tail in ``auto``'s float precision, in strips (:class:`StripTailForward`)."""
    from .network import StripTailForward

    body = getattr(network, "model", None)
    if type(network).__name__ != "RRDBNet" or not isinstance(body, nn.Sequential):
        return None
    tail_dtype = resolve_dtype("auto", plan.device)
    float_plan = ExecutionPlan(device=plan.device, dtype=tail_dtype, channels_last=True, fused=False)
    from ..models import prepared_network

    float_network = prepared_network(network, float_plan)
    strips = StripTailForward.of(float_network, fused=False)
    if strips is None:
        return None
    head = _RRDBHead(copy.deepcopy(body[0]), copy.deepcopy(body[1]), shuffle=strips.shuffle).float().eval()

    def finish(quantized: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        strips.head = [lambda x: quantized(x.float()).to(tail_dtype)]
        strips.shuffle = 1  # the head unshuffles
        return strips

    return _Quantizable(head, ["0"], finish)


Call = Callable[[nn.Module, torch.Tensor], torch.Tensor]
"""``call(network, x)``: how a spandrel descriptor calls its network (its ``_call_fn``)."""


def _plain_call(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return network(x)


def _generic_quantizable(network: nn.Module, plan: ExecutionPlan, call: Call) -> _Quantizable:
    """Any FX-traceable network: everything but its first and last conv quantized."""
    module = copy.deepcopy(network).float().eval()
    return _Quantizable(module, _edge_convs(module), lambda quantized: lambda x: call(quantized, x))


def _quantizable(network: nn.Module, plan: ExecutionPlan, call: Call) -> _Quantizable:
    return _rrdb_quantizable(network, plan) or _generic_quantizable(network, plan, call)


def _prepare(part: _Quantizable, example: torch.Tensor) -> nn.Module:
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.quantize_fx import prepare_fx

    _float_prelus(part.module)
    custom = PrepareCustomConfig().set_non_traceable_module_classes([_FloatPReLU])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return prepare_fx(
                part.module, _qconfig_mapping(part.float_modules), example_inputs=(example,), prepare_custom_config=custom
            )
        except Exception as exc:  # FX tracing fails on data-dependent control flow
            raise ModelIncompatibleError(
                f"int8 is not available for this network ({type(part.module).__name__}: it cannot be "
                f"traced for quantisation: {type(exc).__name__}). Use bf16 (or auto)."
            ) from exc


ENGINES = ("fbgemm", "x86", "onednn")
"""Quantized engines in order of preference on CPUs without AMX. The weights are packed for
the engine current at conversion, and run with it whatever the global setting later is.
fbgemm (AVX512-VNNI kernels) is preferred there; ``bench/bench_upscale.py --configs
...,ours-int8`` prints the int8 conv peak of fbgemm and oneDNN on the machine at hand."""

AMX_ENGINES = ("onednn", "x86", "fbgemm")
"""The order on CPUs with AMX-INT8, which only oneDNN uses: on the 2-core AMX Xeon a quantized
64->64 conv ran at 4246 GOP/s with oneDNN and 692 with fbgemm, and x4plus int8 at 0.92x
bf16's speed with oneDNN against 0.36x with fbgemm (192² window, ``bench/bench_int8.py
--engines``)."""


def preferred_engines() -> tuple[str, ...]:
    """:data:`AMX_ENGINES` where the CPU has AMX tiles, else :data:`ENGINES`."""
    try:
        amx = bool(torch.cpu._is_amx_tile_supported())
    except AttributeError:  # pragma: no cover - older torch
        amx = False
    return AMX_ENGINES if amx else ENGINES


@contextlib.contextmanager
def quantized_engine() -> Iterator[str]:
    """Set PyTorch's quantized engine to the first of :func:`preferred_engines` it supports,
    then restore it."""
    supported = torch.backends.quantized.supported_engines
    engine = next((name for name in preferred_engines() if name in supported), None)
    if engine is None:
        raise ModelIncompatibleError("This PyTorch has no x86 quantized engine, so int8 is not available. Use bf16 (or auto).")
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield engine
    finally:
        torch.backends.quantized.engine = previous


def _convert(prepared: nn.Module) -> nn.Module:
    from torch.ao.quantization.quantize_fx import convert_fx

    with warnings.catch_warnings(), quantized_engine():
        warnings.simplefilter("ignore")
        return convert_fx(prepared).eval()


def _observer_stats(prepared: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in prepared.state_dict().items() if "activation_post_process" in k}


def _quantized_forward(
    network: nn.Module, plan: ExecutionPlan, stats: dict[str, torch.Tensor] | None, call: Call = _plain_call
) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, torch.Tensor]]:
    """Build the int8 forward of ``network``: calibrated on the bundled photos, or from cached
    observer statistics ``stats``. Returns (forward, statistics)."""
    part = _quantizable(network, plan, call)
    photos = calibration_photos()
    prepared = _prepare(part, photos[0].contiguous(memory_format=torch.channels_last))
    if stats is None:
        with torch.no_grad():
            for photo in photos:
                prepared(photo.contiguous(memory_format=torch.channels_last))
        stats = _observer_stats(prepared)
    else:
        missing = set(_observer_stats(prepared)) - set(stats)
        if missing:
            raise ValueError(f"cached int8 statistics do not match the network ({len(missing)} missing)")
        prepared.load_state_dict(stats, strict=False)
    return part.finish(_convert(prepared)), stats


def measure_gate(
    network: nn.Module,
    int8_forward: Callable[[torch.Tensor], torch.Tensor],
    sha256: str,
    started: float,
    call: Call = _plain_call,
) -> GateResult:
    """int8 against float32 on the gate photos: the worst PSNR and colour shift."""
    worst_psnr, worst_lab = math.inf, 0.0
    reference = network.eval()
    with torch.no_grad():
        for photo in gate_photos():
            x = photo.contiguous(memory_format=torch.channels_last)
            expected = call(reference, x).float().clamp(0, 1)
            got = int8_forward(x).float().clamp(0, 1)
            worst_psnr = min(worst_psnr, psnr(expected, got))
            worst_lab = max(worst_lab, lowpass_lab_difference(got, expected))
    passed = worst_psnr >= MIN_PSNR_DB and worst_lab <= MAX_LAB_DIFFERENCE
    return GateResult(
        psnr_db=round(worst_psnr, 3),
        lab_difference=round(worst_lab, 4),
        passed=passed,
        weights_sha256=sha256,
        torch_version=torch.__version__,
        recipe=RECIPE,
        seconds=round(time.perf_counter() - started, 2),
    )


def gate_error(name: str, gate: GateResult) -> ModelIncompatibleError:
    return ModelIncompatibleError(
        f"int8 is not offered for {name}: its int8 network gives {gate.describe()} on real photos "
        f"(the bar is at least {MIN_PSNR_DB:g} dB and at most {MAX_LAB_DIFFERENCE:g} ΔE). "
        "Use --precision bf16 (or auto) for this model."
    )


_built: weakref.WeakKeyDictionary[nn.Module, dict[str, tuple[GateResult, Callable[[torch.Tensor], torch.Tensor]]]] = (
    weakref.WeakKeyDictionary()
)
_build_lock = threading.Lock()


def gate_for(
    network: nn.Module, plan: ExecutionPlan, call: Call = _plain_call, *, enforce: bool = True
) -> tuple[GateResult, Callable[[torch.Tensor], torch.Tensor] | None]:
    """The gate result of ``network`` (float32, as loaded) and, when it passed, its int8
    forward ``(N, C, h, w) float32 -> output``.

    Uses the on-disk cache (calibration statistics included) when it has these weights;
    otherwise calibrates, measures and caches (once per model and machine: seconds to
    minutes on a CPU). Networks that cannot be quantized raise :class:`ModelIncompatibleError`.
    ``enforce=False`` returns the int8 forward even when the gate failed (benchmarks only).
    """
    sha256 = weights_sha256(network)
    key = str(plan.device)
    with _build_lock:
        done = _built.get(network, {}).get(key)
        if done is not None:
            return done[0], done[1] if done[0].passed or not enforce else None
        cached = load_cached_gate(sha256)
        if cached is not None:
            gate, stats = cached
            if not gate.passed and enforce:
                return gate, None
            try:
                forward, _ = _quantized_forward(network, plan, stats, call)
            except ValueError as exc:
                logger.warning("rebuilding the int8 calibration: %s", exc)
            else:
                _built.setdefault(network, {})[key] = (gate, forward)
                return gate, forward
        logger.info("calibrating and measuring int8 for this model (once per model and machine)")
        started = time.perf_counter()
        forward, stats = _quantized_forward(network, plan, None, call)
        gate = measure_gate(network, forward, sha256, started, call)
        logger.info("int8 gate: %s (%s)", gate.describe(), "passed" if gate.passed else "failed")
        try:
            save_gate(gate, stats)
        except OSError as exc:
            logger.warning("could not cache the int8 gate result: %s", exc)
        _built.setdefault(network, {})[key] = (gate, forward)
        return gate, forward if gate.passed or not enforce else None


def int8_forward(
    network: nn.Module, plan: ExecutionPlan, name: str = "this model", call: Call = _plain_call, *, enforce: bool = True
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The int8 forward of ``network`` for the runner, or the gate's
    :class:`ModelIncompatibleError` (measured numbers and the fix) when it failed
    (``enforce=False``: the forward anyway, for benchmarks)."""
    gate, forward = gate_for(network, plan, call, enforce=enforce)
    if forward is None:
        raise gate_error(name, gate)
    return forward


__all__ = [
    "MAX_LAB_DIFFERENCE",
    "MIN_PSNR_DB",
    "RECIPE",
    "GateResult",
    "cache_dir",
    "gate_for",
    "int8_forward",
    "load_cached_gate",
    "weights_sha256",
]
