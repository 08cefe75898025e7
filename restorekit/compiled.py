"""Compiled execution: ``torch.compile`` (inductor) for repeated network calls of one shape.

Tiles of one image, the frames of a video and batches of images run one network on inputs of
one shape again and again. Compiled by inductor with static shapes and ``freezing`` (the
weights become constants: convolutions get prepacked oneDNN weights and fused activations,
element-wise work becomes generated C++ loops), those calls can run faster; the price is one
compile per input shape: a minute or more the first time on a machine (x4plus: minutes), less
once inductor's on-disk caches hold it (measured: bench/RESULTS_upscale.md).

Freezing is always asked for (``torch.compile``'s ``freezing`` option), and the FX graph
cache (with the generated kernels) serves those graphs, so a second process loads instead of
compiling; the AOT autograd cache refuses them, so tracing is repeated in every process.
A forward made with ``prepack=True`` (the face restorers) also switches inductor's global
``freezing`` setting on for its calls: only then do the weights become oneDNN-prepacked
constants and activations and additions fuse into the convolutions' loops (RestoreFormer
1.29x spandrel's eager forward instead of 1.03-1.12x on an AVX2 CPU, 1.40x with
:func:`with_aten_group_norms`; bench/RESULTS_faces.md), but such a graph holds mkldnn
tensors, which the FX graph cache cannot store ("mkldnn tensors unpickleable"): it compiles
cold in every process, and ``auto`` counts the full cold cost.

Modes (``--compile``, :attr:`restorekit.restore.RestoreSettings.compile`, the nodes' and the
app's setting), resolved once by :func:`resolve_compile` into the
:class:`~restorekit.device.ExecutionPlan`:

``off``
    eager: the network as spandrel defines it (with RestoreKit's fused forms).
``on``
    compile every input shape from its first call (at most :data:`MAX_COMPILED_SHAPES` per
    network). Needs a working C++ compiler (CPU) or Triton (CUDA); without one it is an
    :class:`~restorekit.errors.InvalidParameterError` that names the fix.
``auto``
    compile a shape only where it pays (:func:`compile_pays`); when one would pay but there is
    no working compiler, eager, with the reason logged (the compiler is checked only then).

How ``auto`` decides, per network and input shape (the first call of a shape always runs
eager: that measures it):

- *eager time*: the measured seconds of one eager call of that shape;
- *work ahead*: the larger of (calls of that shape the current job still has, as the upscale
  engine announces them through :meth:`CompiledForward.expect`) x eager time, and the eager
  seconds already spent on that shape in this process. The second term is the ski-rental
  rule for streams whose length nobody announced (frames arriving batch by batch): a stream
  that has run for T seconds is expected to run for T more, so compiling once the speed lost
  matches the compile cost never costs more than twice the best choice in hindsight;
- *gain*: the share of eager time that compiled calls save, as measured on this machine for
  the same network, precision and device (recorded after every compiled run), else the
  architecture's default (:data:`DEFAULT_GAINS`);
- *compile cost*: as measured on this machine for the same network, precision and shape (a
  compile served by the warm cache), else the last cold compile of the same network at any
  shape, else an estimate from the number of layers (:func:`estimated_cold_seconds`).

It compiles when ``work ahead x gain > compile cost``. The measurements are kept in
``costs.json`` next to inductor's caches, in ``<home>/.restorekit/compile/`` (the model home
of :mod:`restorekit.registry.home`), or in ``TORCHINDUCTOR_CACHE_DIR`` when the user set it.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import environment
from .errors import CancelledError, InvalidParameterError
from .module_views import replace_modules

logger = logging.getLogger(__name__)

COMPILE_MODES: tuple[str, ...] = ("auto", "on", "off")

MAX_COMPILED_SHAPES = 4
"""Input shapes compiled per network at most; further shapes run eager (tiles after an
out-of-memory shrink, odd edge windows of the ``official`` layout)."""

DEFAULT_GAIN = 0.1
"""Share of eager time a compiled call saves, before anything was measured on this machine
(architectures not in :data:`DEFAULT_GAINS`)."""

DEFAULT_GAINS: dict[str, float] = {
    "Compact": 0.1,
    "ESRGAN": 0.05,
    "GFPGAN": 0.17,
    "RestoreFormer": 0.07,
    "CodeFormer": 0.05,
}
"""Default gain by spandrel architecture id, from what was measured against RestoreKit's
eager path on the Zen 5 dev machine (bench/RESULTS_upscale.md, same-process ratios): SRVGG
(realesr-animevideov3) about 1.0x in bf16 and up to 1.17x in fp32; RRDB 1.04-1.12x, its
eager path being the fused trunk (:mod:`restorekit.upscale.rrdb`). On a Xeon with AMX the
plain RRDB network gained 1.32x. The face restorers (four 512x512 faces a call, fp32, an
AVX2-only Zen 3; bench/RESULTS_faces.md): GFPGAN 1.21x over its fast eager form, RestoreFormer
1.07x over theirs (:mod:`restorekit.faces.vqgan`; CodeFormer about 1.04x, from two runs),
where inductor fuses
their swish and residual additions into the convolutions' loops and their GroupNorm runs
ATen's kernel (:class:`AtenGroupNorm`). The first compile on a machine measures the real
gain, which replaces these."""

COLD_SECONDS = 20.0
SECONDS_PER_LAYER = 0.25
"""Cold compile estimate: fixed cost (tracing, C++ toolchain) plus a cost per conv/linear
layer; measured compiles replace it (see :func:`estimated_cold_seconds`)."""

WARM_FRACTION = 0.25
"""A shape compiled cold once is estimated to load from the warm cache in this share of the
cold time, until a warm load was measured."""

COSTS_FILE = "costs.json"

_lock = threading.RLock()


def parse_compile(mode: object) -> str:
    """Validate a compile mode (``auto``, ``on`` or ``off``; booleans map to on/off)."""
    if isinstance(mode, bool):
        return "on" if mode else "off"
    name = str(mode).strip().lower()
    if name not in COMPILE_MODES:
        raise InvalidParameterError(f"Unknown compile mode {mode!r}. Use one of: {', '.join(COMPILE_MODES)}.")
    return name


# --------------------------------------------------------------------------- toolchain


_TEST_PROGRAM = "extern \"C\" int restorekit_probe(int x) { return x + 1; }\n"


@functools.cache
def _cpp_compiler_problem() -> str | None:
    """Why inductor cannot build CPU kernels here, or None when its C++ compiler works.

    Asks inductor which compiler it would use (``CXX`` / ``torch._inductor.config.cpp.cxx``)
    and builds a one-line shared library with it, so that a missing compiler and a broken one
    (no headers, no linker) are both found before a job starts.
    """
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        compiler = get_cpp_compiler()
    except Exception as exc:  # InvalidCxxCompiler, or anything the lookup raises
        return f"no C++ compiler found ({str(exc).splitlines()[0][:160]})"
    path = shutil.which(compiler) or compiler
    with tempfile.TemporaryDirectory(prefix="restorekit-cxx-") as folder:
        source = Path(folder) / "probe.cpp"
        source.write_text(_TEST_PROGRAM, encoding="ascii")
        command = [path, "-shared", "-fPIC", "-O0", str(source), "-o", str(Path(folder) / "probe.so")]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"the C++ compiler {compiler!r} does not run ({exc})"
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            return f"the C++ compiler {compiler!r} failed on a test program ({detail[0][:160] if detail else done.returncode})"
    return None


def _triton_problem() -> str | None:
    try:
        from torch.utils._triton import has_triton
    except ImportError:  # pragma: no cover - very old torch
        return "Triton is not available"
    return None if has_triton() else "Triton (the GPU kernel compiler torch.compile uses) is not installed"


def compiler_problem(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot run on ``device`` here, or None when it can."""
    if device.type == "cpu":
        return _cpp_compiler_problem()
    if device.type == "cuda":
        return _triton_problem()
    return f"compiled execution is not supported on {device.type}"


_FIX = (
    "Install a C++ compiler (Debian/Ubuntu: apt install g++; Fedora: dnf install gcc-c++; "
    "conda: conda install -c conda-forge gxx; macOS: xcode-select --install; Windows: Visual "
    "Studio Build Tools) or set CXX to one, or use compile 'auto' or 'off'."
)


def resolve_compile(mode: object, device: torch.device) -> str:
    """The compile mode a plan runs under: ``off``, ``auto`` or ``on``.

    ``on`` checks the compiler now and raises :class:`InvalidParameterError` naming the fix
    when there is none. ``auto`` checks it only when a shape would pay for a compile (the
    check imports inductor, seconds that small jobs should not pay) and then runs eager with
    the reason logged when there is none.
    """
    name = parse_compile(mode)
    if name != "on":
        return name
    problem = compiler_problem(device)
    if problem is not None:
        fix = _FIX if device.type == "cpu" else "Install Triton (pip install triton) or use compile 'auto' or 'off'."
        raise InvalidParameterError(f"Compiled execution was asked for (compile on), but {problem}. {fix}")
    return name


@functools.cache
def _log_fallback(problem: str) -> None:
    logger.warning("compile auto: running eager because %s (install a C++ compiler to enable it)", problem)


# --------------------------------------------------------------------------- cache folder


_managed_dir: Path | None = None
"""The cache folder this module set in TORCHINDUCTOR_CACHE_DIR (None: not set by us)."""


def _user_cache_dir() -> Path | None:
    """``TORCHINDUCTOR_CACHE_DIR`` when the user set it: not ours, and not the default that
    inductor itself writes into the variable the first time it looks."""
    current = environment.inductor_cache_dir()
    if current is None or current == _managed_dir:
        return None
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    return None if current.resolve() == Path(default_cache_dir()).resolve() else current


def costs_dir() -> Path:
    """Where the compile cache is (or would be): the user's ``TORCHINDUCTOR_CACHE_DIR``, else
    ``<model home>/.restorekit/compile``; creates and changes nothing."""
    user = _user_cache_dir()
    if user is not None:
        return user
    from .registry.home import get_home

    return get_home().state_dir / "compile"


def cache_dir() -> Path:
    """The compile cache folder of this process (:func:`costs_dir`), made inductor's cache
    folder here."""
    global _managed_dir
    with _lock:
        user = _user_cache_dir()
        if user is not None:
            return user
        wanted = costs_dir()
        current = environment.inductor_cache_dir()
        if current != wanted:
            wanted.mkdir(parents=True, exist_ok=True)
            environment.set_inductor_cache_dir(wanted)
            if current is not None:  # another folder was in use: drop its in-memory caches
                _clear_inductor_memory_caches()
        _managed_dir = wanted
        return wanted


def _clear_inductor_memory_caches() -> None:
    try:
        from torch._inductor.utils import clear_caches

        clear_caches()
    except (ImportError, AttributeError):  # pragma: no cover - other torch versions
        pass


def compile_counters() -> dict[str, int]:
    """Process-wide counts: ``graphs`` compiled by inductor, FX graph cache ``cache_hits`` /
    ``cache_misses`` / ``cache_bypasses`` and AOT autograd cache hits."""
    from torch._dynamo.utils import counters

    inductor, aot = counters["inductor"], counters["aot_autograd"]
    hits, misses = int(inductor["fxgraph_cache_hit"]), int(inductor["fxgraph_cache_miss"])
    return {
        "graphs": hits + misses + int(inductor["fxgraph_cache_bypass"]),
        "cache_hits": hits,
        "cache_misses": misses,
        "cache_bypasses": int(inductor["fxgraph_cache_bypass"]),
        "autograd_cache_hits": int(aot["autograd_cache_hit"]),
    }


# --------------------------------------------------------------------------- cost records


_costs_memo: dict[Path, tuple[int, dict[str, Any]]] = {}


def _read_costs(folder: Path) -> dict[str, Any]:
    """The cost records in ``folder`` (re-read only when the file changed)."""
    path = folder / COSTS_FILE
    try:
        stamp = path.stat().st_mtime_ns
        memo = _costs_memo.get(path)
        if memo is not None and memo[0] == stamp:
            return json.loads(json.dumps(memo[1]))
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    _costs_memo[path] = (stamp, data)
    return json.loads(json.dumps(data))


def _update_costs(folder: Path, key: str, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``change`` to the record of ``key`` and write the file atomically."""
    with _lock:
        data = _read_costs(folder)
        entry = data.setdefault(key, {})
        change(entry)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(dir=folder, prefix=".costs-", suffix=".json")
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=1, sort_keys=True)
            os.replace(temp, folder / COSTS_FILE)
        except OSError as exc:  # a read-only home: decisions fall back to estimates
            logger.debug("could not record compile costs in %s: %s", folder, exc)


def network_key(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> str:
    """A key for a network's cost records: class, parameter shapes, device type, dtype and
    the torch version (weights do not change compile cost or gain)."""
    shapes = ",".join("x".join(map(str, p.shape)) for p in module.parameters())
    digest = functools.reduce(lambda h, c: (h * 131 + ord(c)) % (1 << 61), shapes, 7)
    params = sum(p.numel() for p in module.parameters())
    return f"{type(module).__name__}-{params}-{digest:x}|{device.type}|{str(dtype).removeprefix('torch.')}|torch-{torch.__version__}"


def count_layers(module: torch.nn.Module) -> int:
    """Convolutions and linear layers in ``module`` (the compile cost scales with them)."""
    return sum(isinstance(m, torch.nn.Conv2d | torch.nn.Linear | torch.nn.ConvTranspose2d) for m in module.modules())


def estimated_cold_seconds(layers: int) -> float:
    """A cold compile's seconds before any was measured: :data:`COLD_SECONDS` plus
    :data:`SECONDS_PER_LAYER` per conv/linear layer."""
    return COLD_SECONDS + SECONDS_PER_LAYER * layers


def shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


@dataclass(frozen=True)
class CompileEstimate:
    """What :func:`compile_pays` weighs, in seconds (``gain`` is a share of eager time)."""

    eager_seconds: float
    calls_ahead: int
    spent_seconds: float
    gain: float
    compile_seconds: float

    @property
    def work_ahead(self) -> float:
        """Eager seconds expected ahead: announced calls, or as long again as spent so far."""
        return max(self.calls_ahead * self.eager_seconds, self.spent_seconds)


def compile_pays(estimate: CompileEstimate) -> bool:
    """True when the time compiled calls would save exceeds the compile cost."""
    return estimate.work_ahead * estimate.gain > estimate.compile_seconds


# --------------------------------------------------------------------------- compile targets


@functools.cache
def _aten_group_norm_op() -> Callable[..., torch.Tensor]:
    """ATen's group norm as the custom op ``restorekit::group_norm``: inductor calls it as it
    is instead of generating its own loops (registered once per process; a second copy of the
    engine finds it registered)."""
    namespace = torch.ops.restorekit
    if hasattr(namespace, "group_norm"):
        return namespace.group_norm.default

    @torch.library.custom_op("restorekit::group_norm", mutates_args=(), tags=(torch.Tag.flexible_layout,))
    def group_norm(x: torch.Tensor, groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
        out = torch.nn.functional.group_norm(x, groups, weight, bias, eps)
        return out if out.stride() == x.stride() else torch.empty_like(x).copy_(out)  # the fake's strides

    @group_norm.register_fake
    def _(x: torch.Tensor, groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
        return torch.empty_like(x)

    return namespace.group_norm.default


class AtenGroupNorm(torch.nn.Module):
    """A :class:`torch.nn.GroupNorm` (its parameters shared, not copied) that compiles to a call
    of ATen's kernel: (N, C, H, W) -> the same shape, dtype and memory format.

    Inductor's own group norm is slow on CPU for channels_last activations with few channels
    per group: for RestoreFormer's 64-channel 512x512 maps (2 channels a group) its reduction
    reads two floats of every pixel, once per group, and ran 6x slower than ATen's
    channels-last kernel followed by the swish inductor fuses (4 maps, fp32, AVX2 Zen 3: 427
    against 69 ms; with 8-16 channels a group 1.1-1.2x). Compiled RestoreFormer and
    CodeFormer went from 1.29x to 1.40x the speed of spandrel's eager forward
    (bench/RESULTS_faces.md).

    The op is tagged ``flexible_layout``: with the default constraint inductor transposed
    every channels_last conv output to the traced NCHW strides and back around the call.
    """

    def __init__(self, norm: torch.nn.GroupNorm) -> None:
        super().__init__()
        self.num_groups, self.eps = norm.num_groups, norm.eps
        self.weight, self.bias = norm.weight, norm.bias
        self.op = _aten_group_norm_op()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x, self.num_groups, self.weight, self.bias, self.eps)


def with_aten_group_norms(module: torch.nn.Module) -> torch.nn.Module:
    """A compile target for CPU: a view of ``module`` (:func:`~restorekit.module_views.replace_modules`:
    its parameters shared, the original not changed) with every ``GroupNorm`` run as
    :class:`AtenGroupNorm`; ``module`` itself when it has none."""
    return replace_modules(module, lambda node: AtenGroupNorm(node) if isinstance(node, torch.nn.GroupNorm) else None)


# --------------------------------------------------------------------------- the forward


def _with_freezing(compiled: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``compiled`` called with inductor's ``freezing`` switched on in its global config for the
    call (and so for the compile the call triggers), not only in ``torch.compile``'s options.

    Measured (torch 2.14.1, AVX2 CPU, fp32, RestoreFormer on two 512x512 faces): with the
    option alone compiled calls took 14.6 s, with the global setting 11.3-13.0 s (eager
    15.3-17.7 s): only the global setting prepacks the weights (and the graph then bypasses
    the FX graph cache)."""
    import torch._inductor.config as inductor_config

    @functools.wraps(compiled)
    def call(x: torch.Tensor) -> torch.Tensor:
        with inductor_config.patch(freezing=True):
            return compiled(x)

    return call


@dataclass
class _ShapeState:
    calls: int = 0
    eager_seconds: float = math.inf
    spent_seconds: float = 0.0
    compiled: bool = False
    compiled_calls: int = 0
    compiled_seconds: float = math.inf


@dataclass
class CompiledForward:
    """``forward(x)`` run eagerly or compiled, per input shape, under ``mode`` (auto/on).

    Attributes:
        forward: the eager callable: (N, C, H, W) tensor -> tensor, called under no_grad.
        target: what is compiled: the same function as ``forward`` (the same values within
            float rounding), in the form the compiler optimises best.
        mode: ``auto`` or ``on``.
        key: the network's cost-record key (:func:`network_key`).
        layers: the network's conv/linear layers (for the compile cost estimate).
        label: the network's name in log messages.
        device: where it runs (timings synchronise CUDA).
        prepack: compile with inductor's global ``freezing`` on (prepacked oneDNN weights and
            fused element-wise work; not storable in the on-disk cache, see the module notes).
    """

    forward: Callable[[torch.Tensor], torch.Tensor]
    target: Callable[[torch.Tensor], torch.Tensor]
    mode: str
    key: str
    layers: int
    label: str = "network"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    prepack: bool = False
    shapes: dict[tuple[int, ...], _ShapeState] = field(default_factory=dict)
    expected: dict[tuple[int, ...], int] = field(default_factory=dict)
    failed: str | None = None
    compiles: int = 0
    """Shapes compiled by this forward."""
    _compiled: Callable[[torch.Tensor], torch.Tensor] | None = None

    # ------------------------------------------------------------------ public

    def expect(self, shape: tuple[int, ...], calls: int) -> None:
        """Announce ``calls`` more calls with inputs of ``shape`` (the current job's work)."""
        shape = tuple(shape)
        self.expected[shape] = self.expected.get(shape, 0) + max(0, int(calls))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape)
        state = self.shapes.setdefault(shape, _ShapeState())
        if shape in self.expected:
            self.expected[shape] = max(0, self.expected[shape] - 1)
        if not state.compiled and self.failed is None and self._should_compile(shape, state):
            return self._compile_call(x, shape, state)
        if not state.compiled:
            return self._eager_call(shape, state, x)
        started = time.perf_counter()
        out = self._compiled_callable()(x)
        state.calls += 1
        self._record_steady(shape, state, self._elapsed(started))
        return out

    def estimate(self, shape: tuple[int, ...]) -> CompileEstimate:
        """The numbers ``auto`` weighs for the next call of ``shape``."""
        state = self.shapes.get(tuple(shape), _ShapeState())
        record = _read_costs(costs_dir()).get(self.key, {})
        gain = float(record.get("gain", DEFAULT_GAINS.get(self.label, DEFAULT_GAIN)))
        return CompileEstimate(
            eager_seconds=0.0 if math.isinf(state.eager_seconds) else state.eager_seconds,
            calls_ahead=self.expected.get(tuple(shape), 0),
            spent_seconds=state.spent_seconds,
            gain=max(gain, 0.0),
            compile_seconds=self._compile_cost(record, shape),
        )

    # ------------------------------------------------------------------ internals

    def _eager_call(self, shape: tuple[int, ...], state: _ShapeState, x: torch.Tensor) -> torch.Tensor:
        started = time.perf_counter()
        out = self.forward(x)
        seconds = self._elapsed(started)
        state.calls += 1
        state.eager_seconds = min(state.eager_seconds, seconds)
        state.spent_seconds += seconds
        return out

    def _compile_cost(self, record: dict[str, Any], shape: tuple[int, ...]) -> float:
        measured = record.get("shapes", {}).get(shape_text(shape), {})
        if self.prepack:  # never served by the on-disk cache: every compile is cold
            return float(measured.get("cold", record.get("cold", estimated_cold_seconds(self.layers))))
        if "warm" in measured:
            return float(measured["warm"])
        if "cold" in measured:
            return float(measured["cold"]) * WARM_FRACTION
        if "cold" in record:
            return float(record["cold"])
        return estimated_cold_seconds(self.layers)

    def _should_compile(self, shape: tuple[int, ...], state: _ShapeState) -> bool:
        if self.compiles >= MAX_COMPILED_SHAPES:
            return False
        if self.mode == "on":
            return True
        if state.calls == 0:
            return False  # measure the eager call first
        estimate = self.estimate(shape)
        pays = compile_pays(estimate)
        logger.debug("compile auto for %s %s: %s -> %s", self.label, shape_text(shape), estimate, pays)
        return pays

    def _elapsed(self, started: float) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - started

    def _compiled_callable(self) -> Callable[[torch.Tensor], torch.Tensor]:
        if self._compiled is None:
            compiled = torch.compile(self.target, dynamic=False, options={"freezing": True})
            self._compiled = _with_freezing(compiled) if self.prepack else compiled
        return self._compiled

    def _compile_call(self, x: torch.Tensor, shape: tuple[int, ...], state: _ShapeState) -> torch.Tensor:
        from .device import is_out_of_memory

        problem = compiler_problem(self.device)
        if problem is not None:  # auto (on was checked when the plan was made)
            self.failed = problem
            _log_fallback(problem)
            return self._eager_call(shape, state, x)
        folder = cache_dir()
        before = compile_counters()
        logger.info("compiling %s for %s inputs (%s; cached in %s)", self.label, shape_text(shape), self.mode, folder)
        started = time.perf_counter()
        try:
            with _lock:
                out = self._compiled_callable()(x)
        except (CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:
            if is_out_of_memory(exc):
                raise
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            if self.mode == "on":
                raise InvalidParameterError(
                    f"Compiling {self.label} failed ({type(exc).__name__}: {reason}). Use compile 'auto' or 'off'."
                ) from exc
            self.failed = reason
            logger.warning("compile auto: compiling %s failed (%s); running eager", self.label, reason)
            return self._eager_call(shape, state, x)
        seconds = self._elapsed(started)
        after = compile_counters()
        state.compiled = True
        state.calls += 1
        self.compiles += 1
        warm = after["cache_hits"] > before["cache_hits"] and after["cache_misses"] == before["cache_misses"]
        logger.info("compiled %s for %s in %.1f s (%s)", self.label, shape_text(shape), seconds, "from the cache" if warm else "cold")
        name = shape_text(shape)

        def record(entry: dict[str, Any]) -> None:
            shapes = entry.setdefault("shapes", {})
            shapes.setdefault(name, {})["warm" if warm else "cold"] = round(seconds, 3)
            if not warm:
                entry["cold"] = round(seconds, 3)

        _update_costs(folder, self.key, record)
        return out

    def _record_steady(self, shape: tuple[int, ...], state: _ShapeState, seconds: float) -> None:
        state.compiled_calls += 1
        state.compiled_seconds = min(state.compiled_seconds, seconds)
        if state.compiled_calls != 1 or math.isinf(state.eager_seconds) or state.eager_seconds <= 0:
            return
        gain = 1.0 - state.compiled_seconds / state.eager_seconds

        def record(entry: dict[str, Any]) -> None:
            previous = entry.get("gain")
            entry["gain"] = round(gain if previous is None else 0.5 * (previous + gain), 4)

        _update_costs(cache_dir(), self.key, record)


_shared_lock = threading.Lock()
_shared: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], CompiledForward]] = weakref.WeakKeyDictionary()
MAX_SHARED_PER_OWNER = 4
"""Compiled forwards kept per loaded model (plans, CodeFormer fidelities), least recently
used dropped first: a compiled face graph holds its own prepacked copy of the weights."""


def shared_forward(owner: Any, key: tuple[Any, ...], build: Callable[[], CompiledForward]) -> CompiledForward:
    """The process's :class:`CompiledForward` for ``owner`` (a loaded model's descriptor) and
    ``key`` (its plan, and anything else that changes the compiled function), made by
    ``build()`` the first time.

    A network compiled once in a process (a ComfyUI server, the app, a folder run) stays
    compiled for every later job that loads the same descriptor (the model loader caches
    descriptors), and goes with the descriptor. The owner must be the descriptor, not its
    module: a compiled forward holds the module, which would keep a module key, and so every
    model the process ever used, alive. ``build`` must not refer back to ``owner``. At most
    :data:`MAX_SHARED_PER_OWNER` keys are kept per owner (a caller keeps what it was given).
    """
    with _shared_lock:
        forwards = _shared.setdefault(owner, {})
        forward = forwards.pop(key, None)
        if forward is None:
            forward = build()
        forwards[key] = forward  # the most recently used last
        while len(forwards) > MAX_SHARED_PER_OWNER:
            del forwards[next(iter(forwards))]
        return forward
