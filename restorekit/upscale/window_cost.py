"""A network's cost per pixel against its window size, measured once per machine.

On some CPUs a deep network's cost per pixel grows with the window: its activations stop
fitting the caches, and the memory traffic of the layers that are not convolutions (copies,
residual additions) grows with them. On the AMX Xeon of this project's machines, x4plus's
fused bf16 trunk costs 18 us a pixel in 192x192 windows and 31 us in one 512x512 window; a
512² photo runs in 7.2 s as nine 192² windows (27% more pixels for the seams) against 10.3 s
whole. On the AVX512-BF16 Zen 5 the same curve is flat within 5% from 96² to 512², and one
window is fastest (no seam work). The curve is a property of the machine, not of the model's
arithmetic, so it is measured, not guessed:

- :func:`measure_window_costs` times a probe (for RRDB: ``conv_first`` and the first RRDB of
  the real network, :meth:`~restorekit.upscale.rrdb.FusedRRDBTrunk.probe`) at each of
  :data:`CANDIDATE_SIDES`, best of :data:`REPEATS` after a warm-up: about 2 s for x4plus.
- :func:`window_costs` keeps the result in ``<model home>/.restorekit/window_costs.json``,
  keyed by the network's shapes, the CPU, the thread count, the dtype and the torch version,
  so a machine measures a network once.
- :class:`WindowCosts` gives the relative cost per pixel of any window (interpolated in the
  window's side); :func:`restorekit.upscale.tiling.choose_window` minimises
  ``windows x pixels x cost per pixel`` with it.

``RESTOREKIT_WINDOW_TUNING=0`` turns the measurement off (windows are then chosen by memory
and the fewest pixels, as before); the test suite does so, to keep its windows the same on
every machine.
"""

from __future__ import annotations

import bisect
import functools
import json
import logging
import math
import platform
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..environment import window_tuning
from ..files import atomic_write_text

logger = logging.getLogger(__name__)

CANDIDATE_SIDES = (128, 192, 256, 384, 512)
"""Square window sides the probe is timed at (input pixels)."""
REPEATS = 2
"""Timed probe calls per side after one warm-up call; the fastest counts."""
MIN_TUNED_PIXELS = 256 * 256
"""Images with fewer (padded) input pixels are not worth splitting, so they measure nothing."""
COSTS_FILE = "window_costs.json"

Probe = Callable[[int], None]
"""``probe(side)``: run the network's representative part once on a (side x side) window."""


@dataclass(frozen=True)
class WindowCosts:
    """Seconds per input pixel measured at square window sides (ascending)."""

    sides: tuple[int, ...]
    seconds_per_pixel: tuple[float, ...]

    def per_pixel(self, pixels: int) -> float:
        """Seconds per pixel of a window of ``pixels`` input pixels: linear in the window's
        side between the measured sides, the end values outside them."""
        side = max(pixels, 1) ** 0.5
        sides, costs = self.sides, self.seconds_per_pixel
        if side <= sides[0]:
            return costs[0]
        if side >= sides[-1]:
            return costs[-1]
        upper = bisect.bisect_left(sides, side)
        lower = upper - 1
        share = (side - sides[lower]) / (sides[upper] - sides[lower])
        return costs[lower] + share * (costs[upper] - costs[lower])

    def to_json(self) -> dict[str, list[float]]:
        return {"sides": list(self.sides), "seconds_per_pixel": list(self.seconds_per_pixel)}

    @classmethod
    def from_json(cls, data: object) -> WindowCosts | None:
        """The costs of a cache record, or None when it is not a valid record."""
        if not isinstance(data, dict):
            return None
        sides, costs = data.get("sides"), data.get("seconds_per_pixel")
        if not isinstance(sides, list) or not isinstance(costs, list) or len(sides) != len(costs) or not sides:
            return None
        try:
            pairs = sorted((int(s), float(c)) for s, c in zip(sides, costs, strict=True))
        except (TypeError, ValueError):
            return None
        if any(side <= 0 or not cost > 0 for side, cost in pairs):
            return None
        return cls(tuple(s for s, _ in pairs), tuple(c for _, c in pairs))


def measure_window_costs(probe: Probe, sides: Sequence[int] = CANDIDATE_SIDES, repeats: int = REPEATS) -> WindowCosts:
    """Time ``probe`` at each side: a warm-up round over every side (the largest first, so the
    process's heap grows once), then ``repeats`` timed rounds; the fastest call per side counts.
    Rounds rather than repeats per side, so a slow moment of a busy host does not fall on
    one side only."""
    ordered = sorted(set(sides), reverse=True)
    best = dict.fromkeys(ordered, float("inf"))
    for round_index in range(1 + max(1, repeats)):
        for side in ordered:
            started = time.perf_counter()
            probe(side)
            if round_index:
                best[side] = min(best[side], time.perf_counter() - started)
    ascending = sorted(ordered)
    return WindowCosts(tuple(ascending), tuple(max(best[s], 1e-9) / (s * s) for s in ascending))


@functools.cache
def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key(network_key: str) -> str:
    """A cache key for one network on this machine: the network (its shapes, device, dtype,
    torch version), the CPU and the thread count."""
    return f"{network_key}|{cpu_name()}|threads-{torch.get_num_threads()}"


def costs_path() -> Path:
    from ..registry.home import get_home

    return get_home().state_dir / COSTS_FILE


_lock = threading.Lock()
_memo: dict[tuple[Path, str], WindowCosts] = {}


def _read(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, key: str, costs: WindowCosts) -> None:
    """Add ``key`` to the cache file (atomically; a read-only home only logs)."""
    data = _read(path)
    data[key] = costs.to_json()
    try:
        atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))
    except OSError as exc:
        logger.debug("could not record window costs in %s: %s", path, exc)


def window_costs(key: str, probe: Probe, sides: Sequence[int] = CANDIDATE_SIDES) -> WindowCosts:
    """The window costs of the network ``key`` (:func:`machine_key`) on this machine: from the
    cache when it holds them for every side in ``sides``, else measured now and cached."""
    path = costs_path()
    wanted = tuple(sorted(set(sides)))
    with _lock:
        cached = _memo.get((path, key)) or WindowCosts.from_json(_read(path).get(key))
        if cached is not None and set(wanted) <= set(cached.sides):
            _memo[(path, key)] = cached
            return cached
        logger.info("measuring this network's speed against window size (once per machine)")
        costs = measure_window_costs(probe, wanted)
        logger.info(
            "window costs: %s",
            ", ".join(f"{s}²: {c * 1e6:.1f} us/px" for s, c in zip(costs.sides, costs.seconds_per_pixel, strict=True)),
        )
        _write(path, key, costs)
        _memo[(path, key)] = costs
        return costs


# --------------------------------------------------------------------------- slow widths

WIDTH_MULTIPLE = 16
"""On the CPU, split windows are a multiple of this many pixels wide, and images that run
whole at a slow width are padded to one (:func:`is_slow_width`). oneDNN's AMX bf16
convolutions slow down 2-5x at some widths: a 3x3 192->64 conv over 64 rows measured 4.8x
its median time per pixel at 363 px wide, 4.7x at 359 and 383, and more than 1.5x at 47
of the widths from 300 to 519, but at none of the multiples of 16 from 64 to 1024 (AMX
Xeon, torch 2.14.1; the height does not matter). x4plus bf16 on 1024² ran nine 363x363
windows in 112 s and runs 368 px wide ones in about a third of that."""


def round_up(value: int, multiple: int) -> int:
    """``value`` rounded up to a multiple of ``multiple`` (>= 1)."""
    return -(-value // multiple) * multiple


def width_multiple(device: torch.device, multiple_of: int = 1) -> int:
    """What window and input widths are rounded to on ``device``: :data:`WIDTH_MULTIPLE` (and
    a multiple of the model's own ``multiple_of``) on the CPU, ``multiple_of`` elsewhere."""
    return math.lcm(WIDTH_MULTIPLE, multiple_of) if device.type == "cpu" else multiple_of
SLOW_WIDTH_RATIO = 1.25
"""A width is slow when a conv costs this much more per pixel at it than at the next
multiple of :data:`WIDTH_MULTIPLE`."""
_PROBE_ROWS = 128

_slow_widths: dict[tuple[int, int, torch.dtype, int], bool] = {}


def _conv_seconds(rows: int, width: int, dtype: torch.dtype) -> float:
    """Fastest of two timed 64->64 3x3 channels_last convs over (rows, width), after a warm-up."""
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(0)
    x = torch.rand((1, 64, rows, width), generator=generator).to(dtype).contiguous(memory_format=torch.channels_last)
    weight = (torch.rand((64, 64, 3, 3), generator=generator) - 0.5).to(dtype)
    best = float("inf")
    with torch.no_grad():
        for index in range(3):
            started = time.perf_counter()
            F.conv2d(x, weight, padding=1)
            if index:
                best = min(best, time.perf_counter() - started)
    return best


def is_slow_width(height: int, width: int, dtype: torch.dtype) -> bool:
    """Whether bf16 convolutions over a (height, width) input run at least
    :data:`SLOW_WIDTH_RATIO` times slower per pixel than at the next multiple of 16 px wide.

    oneDNN's AMX bf16 convolutions do, at some widths (363 px: 3-5x; fp32 and other widths
    do not; see :data:`WIDTH_MULTIPLE`). Timed once per
    shape and process with a 64->64 conv over up to 128 rows (a few milliseconds); False for
    other dtypes, for multiples of 16 and with tuning turned off.
    """
    if dtype != torch.bfloat16 or width % WIDTH_MULTIPLE == 0 or width < WIDTH_MULTIPLE or not window_tuning():
        return False
    rows = max(1, min(height, _PROBE_ROWS))
    key = (rows, width, dtype, torch.get_num_threads())
    with _lock:
        known = _slow_widths.get(key)
    if known is not None:
        return known
    wider = round_up(width, WIDTH_MULTIPLE)
    ratio = (_conv_seconds(rows, width, dtype) / width) / (_conv_seconds(rows, wider, dtype) / wider)
    slow = ratio >= SLOW_WIDTH_RATIO
    if slow:
        logger.info("a %d px wide input runs %.1fx slower per pixel than %d px: padding it to %d", width, ratio, wider, wider)
    with _lock:
        _slow_widths[key] = slow
    return slow


__all__ = [
    "CANDIDATE_SIDES",
    "MIN_TUNED_PIXELS",
    "WIDTH_MULTIPLE",
    "WindowCosts",
    "cpu_name",
    "is_slow_width",
    "machine_key",
    "measure_window_costs",
    "round_up",
    "width_multiple",
    "window_costs",
]
