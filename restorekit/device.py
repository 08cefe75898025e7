"""The one place that decides devices, precisions and memory layout.

``device`` is one of ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; ``precision`` is one of
``auto``, ``fp32``, ``fp16`` or ``bf16``, and for upscale networks also ``int8``
(:data:`UPSCALE_PRECISIONS`: static post-training quantisation on the CPU, offered for a model
only when it passes a quality gate; see :mod:`restorekit.upscale.int8`). :func:`plan_execution` turns them, plus what a model
supports, into an :class:`ExecutionPlan`. Nothing else in the engine hard-codes a dtype or a
device.

``auto`` picks the fastest combination that keeps quality (>= 45 dB PSNR against fp32 on the
Real-ESRGAN family):

- CUDA: bf16 where the GPU supports it (no fp16 overflow, so no black tiles), else fp16;
- CPU with AVX512-BF16 or AMX: bf16 with channels_last (2.6-3.8x the official fp32 path on
  the dev machine, 53.5 dB from fp32);
- any other CPU: fp32 with channels_last.

``auto`` never picks ``int8`` (see :mod:`restorekit.upscale.int8` for why); it is asked for
explicitly, and refused for a model that fails its quality gate.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch

from .errors import InvalidParameterError

logger = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "fp16", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")
INT8 = "int8"
UPSCALE_PRECISIONS: tuple[str, ...] = (*PRECISIONS, INT8)
"""The precisions of upscale networks: :data:`PRECISIONS` plus ``int8``."""
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")

_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
_NAMES: dict[torch.dtype, str] = {v: k for k, v in _DTYPES.items()}
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class ExecutionPlan:
    """How to run a network: where, in which dtype, and in which memory layout.

    ``dtype`` is the dtype of the weights and of the network's input; images stay float32
    outside the network. ``fused``: run a network through its fused execution form where one
    exists (:mod:`restorekit.upscale.rrdb` for RRDBNet: the same function without copies,
    equal within float rounding); False runs the module exactly as spandrel defines it.
    ``compile``: ``off``, ``auto`` or ``on`` (``on`` already checked against this machine's
    compiler, :func:`restorekit.compiled.resolve_compile`); the network runner compiles
    repeated input shapes under it.
    ``int8``: run the network's convolutions in int8 (:mod:`restorekit.upscale.int8`); its
    input and output stay ``dtype`` (float32).
    """

    device: torch.device
    dtype: torch.dtype
    channels_last: bool = True
    fused: bool = True
    compile: str = "off"
    int8: bool = False

    @property
    def precision(self) -> str:
        """The precision name (``fp32``, ``fp16``, ``bf16`` or ``int8``)."""
        return INT8 if self.int8 else _NAMES[self.dtype]

    @property
    def memory_format(self) -> torch.memory_format:
        """The memory format for 4-D tensors under this plan."""
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def prepare_input(self, batch: torch.Tensor) -> torch.Tensor:
        """Move a (B, C, H, W) float tensor to this plan's device, dtype and layout."""
        return batch.to(device=self.device, dtype=self.dtype, memory_format=self.memory_format)

    def describe(self) -> str:
        layout = "channels_last" if self.channels_last else "NCHW"
        compiled = f", compile {self.compile}" if self.compile != "off" else ""
        return f"{self.device} {self.precision} {layout}{compiled}"


def float_precision(precision: str) -> str:
    """The precision for the float networks of a job whose upscale network runs ``precision``:
    ``auto`` for ``int8`` (face models, ZSSR and training have no int8 path), else as given."""
    return "auto" if str(precision).strip().lower() == INT8 else precision


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N``/``mps`` into a usable :class:`torch.device`.

    Raises :class:`InvalidParameterError` for unknown names or devices that are not present.
    """
    if isinstance(device, torch.device):
        return device
    name = str(device).strip().lower()
    if not _DEVICE_PATTERN.match(name):
        raise InvalidParameterError(
            f"Unknown device {device!r}. Use one of: auto, cpu, cuda, cuda:N."
        )
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InvalidParameterError(
                f"Device {device!r} was asked for, but no CUDA GPU is available to this "
                "PyTorch. Use --device cpu (or auto)."
            )
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise InvalidParameterError(
                f"Device {device!r} does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)."
            )
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise InvalidParameterError("Device 'mps' was asked for but is not available.")
    return torch.device(name)


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when this CPU runs bf16 convolutions natively (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return False


def _cuda_has_bf16(device: torch.device) -> bool:
    try:
        return bool(torch.cuda.is_bf16_supported())
    except (AssertionError, RuntimeError):  # pragma: no cover - no CUDA
        return False


def parse_precision(precision: str, *, allow_int8: bool = False) -> str:
    """Validate a precision name and return it lower-cased (``int8`` only where
    ``allow_int8``: upscale networks)."""
    name = str(precision).strip().lower()
    if name == INT8 and not allow_int8:
        raise InvalidParameterError(
            "int8 is offered for upscale networks only. Use bf16 (or auto) here."
        )
    if name not in (UPSCALE_PRECISIONS if allow_int8 else PRECISIONS):
        raise InvalidParameterError(
            f"Unknown precision {precision!r}. Use one of: {', '.join(UPSCALE_PRECISIONS if allow_int8 else PRECISIONS)}."
        )
    return name


def resolve_dtype(
    precision: str,
    device: torch.device,
    *,
    supports_half: bool = True,
    supports_bfloat16: bool = True,
) -> torch.dtype:
    """Pick the network dtype for ``precision`` on ``device``.

    An explicit precision the model or device cannot run raises
    :class:`InvalidParameterError` that says which precision to use instead; ``auto``
    silently falls back to what works.
    """
    name = parse_precision(precision)
    if name == "auto":
        if device.type == "cuda":
            if supports_bfloat16 and _cuda_has_bf16(device):
                return torch.bfloat16
            if supports_half:
                return torch.float16
            return torch.float32
        if device.type == "cpu" and supports_bfloat16 and cpu_has_fast_bf16():
            return torch.bfloat16
        return torch.float32
    dtype = _DTYPES[name]
    if dtype == torch.float16:
        if not supports_half:
            raise InvalidParameterError(
                "This model does not support fp16 (its outputs break in half precision). "
                "Use precision fp32 or auto."
            )
        if device.type == "cpu":
            raise InvalidParameterError(
                "fp16 is not supported on the CPU (it is slow and inaccurate there). "
                "Use bf16 or fp32, or auto to pick the fastest that keeps quality."
            )
    if dtype == torch.bfloat16 and not supports_bfloat16:
        raise InvalidParameterError(
            "This model does not support bf16. Use precision fp32 or auto."
        )
    if dtype == torch.bfloat16 and device.type == "cpu" and not cpu_has_fast_bf16():
        _warn_emulated_bf16()
    return dtype


@functools.cache
def _warn_emulated_bf16() -> None:
    """Once a process: bf16 asked for on a CPU that has no bf16 convolutions."""
    logger.warning(
        "bf16 was asked for, but this CPU has no bf16 convolutions (no AVX512 or AMX): PyTorch "
        "emulates them, about 7x slower than fp32 (x4plus on an AVX2 AMD EPYC). The result is "
        "correct; use precision auto (fp32 here) or fp32 for speed."
    )


def plan_execution(
    device: str | torch.device = "auto",
    precision: str = "auto",
    *,
    supports_half: bool = True,
    supports_bfloat16: bool = True,
    fused: bool = True,
    compile: str = "off",
    allow_int8: bool = False,
) -> ExecutionPlan:
    """Resolve a device and a precision into an :class:`ExecutionPlan`.

    channels_last is always used for 4-D activations: it is the single biggest speed-up for
    convolutions on CPU and is neutral to positive on CUDA. ``fused`` (see
    :class:`ExecutionPlan`) is on unless asked otherwise. ``compile`` (``auto``, ``on`` or
    ``off``, see :mod:`restorekit.compiled`) is checked here: ``on`` without a working
    compiler raises :class:`InvalidParameterError`.
    ``int8`` is accepted only with
    ``allow_int8`` (upscale networks) and only on the CPU (PyTorch's x86 quantized kernels).
    """
    torch_device = resolve_device(device)
    if parse_precision(precision, allow_int8=allow_int8) == INT8:
        if torch_device.type != "cpu":
            raise InvalidParameterError(
                f"int8 runs on the CPU only (PyTorch's x86 quantized kernels), not on {torch_device}. "
                "Use bf16 or auto on a GPU, or --device cpu."
            )
        return ExecutionPlan(device=torch_device, dtype=torch.float32, channels_last=True, fused=fused, int8=True)
    dtype = resolve_dtype(
        precision,
        torch_device,
        supports_half=supports_half,
        supports_bfloat16=supports_bfloat16,
    )
    from .compiled import resolve_compile

    mode = resolve_compile(compile, torch_device)
    return ExecutionPlan(device=torch_device, dtype=dtype, channels_last=True, fused=fused, compile=mode)


def plan_for_model(
    model: object,
    device: str | torch.device = "auto",
    precision: str = "auto",
    *,
    compile: str = "off",
    allow_int8: bool = False,
) -> ExecutionPlan:
    """:func:`plan_execution` honouring a spandrel descriptor's ``supports_half`` and
    ``supports_bfloat16`` flags (objects without them are assumed to support both)."""
    return plan_execution(
        device,
        precision,
        supports_half=bool(getattr(model, "supports_half", True)),
        supports_bfloat16=bool(getattr(model, "supports_bfloat16", True)),
        compile=compile,
        allow_int8=allow_int8,
    )


def free_memory_bytes(device: torch.device) -> int:
    """Free memory available to tensors on ``device``, in bytes (best effort)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:  # pragma: no cover - non-Linux fallback
        import os

        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 4 << 30


def is_out_of_memory(error: BaseException) -> bool:
    """True for a CUDA OOM and for a CPU allocation failure (a plain RuntimeError)."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    if isinstance(error, MemoryError):
        return True
    if isinstance(error, RuntimeError):
        text = str(error).lower()
        return (
            "out of memory" in text
            or "can't allocate memory" in text
            or "cannot allocate memory" in text
            or "failed to allocate" in text
            or "defaultcpuallocator" in text
        )
    return False


@contextlib.contextmanager
def cpu_threads(count: int, device: torch.device | None = None) -> Iterator[None]:
    """Run the block with ``count`` intra-op CPU threads (then the previous number again).

    For tiny networks (MediaPipe's BlazeFace and Face Mesh: 0.1-0.3 GFLOP of depthwise and
    1x1 convolutions on 128-192 px): their time is per-operator overhead, and with two
    threads every small operator also waits for the other thread, which on a busy host
    costs 5-10x (BlazeFace full range + Face Mesh on a 160 px frame, load 9 on 2 cores:
    0.43 s with 2 threads, 0.093 s with 1; a mesh refine 0.22 s vs 0.02 s). No effect on
    other devices."""
    previous = torch.get_num_threads()
    if (device is not None and device.type != "cpu") or previous == count:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def empty_cache(device: torch.device) -> None:
    """Give cached allocator memory back after an out-of-memory error."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def release_freed_memory() -> None:
    """Hand the memory the process freed back to the OS (glibc ``malloc_trim``).

    Called by the tiler after every CPU window and by the CLI between the network and the
    encoder. The CLI keeps small freed blocks in the process so that a window reuses them
    without page faults (:func:`restorekit.cli.common.tune_process_memory`); between windows
    that memory is only weight, and the next window's, the float32 result, the integer image
    and the encoder's buffers would come on top of it. Trimming after each window brought a
    1024x1024 -> 4096x4096 x4plus bf16 job from 1554 to 1451 MiB peak RSS at the same speed
    (``bench/RESULTS_upscale.md``). A no-op off glibc.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # pragma: no cover - musl or no glibc
        return None
