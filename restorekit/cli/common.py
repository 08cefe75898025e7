"""Shared CLI plumbing: logging, tqdm progress, Ctrl-C as cancel, one-line errors."""

from __future__ import annotations

import argparse
import ctypes
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import CancelledError, InvalidParameterError, RestoreKitError
from ..progress import NOTICE_RECORD, ProgressCallback

logger = logging.getLogger("restorekit.cli")


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

MMAP_THRESHOLD = 64 << 20
"""Blocks of at least this size get their own mapping (returned to the OS when freed): the
dense-block buffer of an x4plus tile, the canvas, whole-image maps of big inputs. What a
tile allocates hundreds of times stays in the heap and is reused: x4plus's 32-channel conv
outputs (12 MB at 363x528, 16.8 MB at 512x512) and animevideov3's 64-channel maps (33.5 MB
at 512x512). Mapped anew each time, a 512x512 window ran 8-10% slower with x4plus (16 MB
threshold) and about 35% slower with animevideov3 (32 MB). The cost is memory: a 1024² ->
4096² x4plus job peaked at 1223, 1285 and 1310 MiB with 16, 32 and 64 MB
(``bench/RESULTS_upscale.md``)."""


def tune_process_memory() -> bool:
    """Allocator settings for a CLI process that runs networks tile by tile (Linux, glibc).

    Measured on a 1024x1024 -> 4096x4096 x4plus bf16 job (``bench/RESULTS_upscale.md``):
    glibc's defaults grow one heap arena per thread, and the tiles' freed activations
    fragment them, so the process ends near 1.7-1.9 GB. Here:

    - one arena (``M_ARENA_MAX``) for all threads;
    - blocks of at least :data:`MMAP_THRESHOLD` mapped on their own, so freeing them
      returns them to the OS instead of leaving holes in the heap;
    - smaller freed memory kept (``M_TRIM_THRESHOLD``), so it is reused within a tile without
      page faults; the tiler hands it back between tiles
      (:func:`restorekit.device.release_freed_memory`);
    - PyTorch backs large tensors with huge pages (``THP_MEM_ALLOC_ENABLE``, read at its
      first allocation, so this must run before torch is imported), which makes the fresh
      mappings cheap to fault in. Measured on the AVX2 Zen 3 dev VM (animevideov3, 512²
      frames, three processes each): calls after the first 1.98 s against 2.36 s without.
      The first call paid 4.5-5.0 s against 2.7-2.9 s there: on a VM that hands free memory
      back to its host (Firecracker's free page reporting), each fresh huge page is faulted
      in from the host. A user who sets ``THP_MEM_ALLOC_ENABLE=0`` keeps it.

    Settings the user made (``GLIBC_TUNABLES``, ``THP_MEM_ALLOC_ENABLE``) are kept. Returns
    True when the allocator settings were applied.
    """
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    if not sys.platform.startswith("linux") or "GLIBC_TUNABLES" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # pragma: no cover - musl or no glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    settings = ((_M_ARENA_MAX, 1), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return all([bool(mallopt(parameter, value)) for parameter, value in settings])


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "httpcore", "urllib3", "filelock", "PIL"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def print_notices_once() -> None:
    """For a command that prints every notice its results carry (``notice: ...``): drop the
    log records that repeat them (:data:`~restorekit.progress.NOTICE_RECORD`), so the user
    reads each notice once. Other warnings are kept."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_not_a_repeated_notice)


def _not_a_repeated_notice(record: logging.LogRecord) -> bool:
    return not getattr(record, NOTICE_RECORD, False)


class CancelFlag:
    """Set by Ctrl-C (SIGINT) and SIGTERM; engine loops poll it between steps."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.on_set: Callable[[], None] | None = None
        """Also called when set (e.g. to forward the cancel to another interrupt flag)."""

    def __call__(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()
        if self.on_set is not None:
            self.on_set()


@contextmanager
def cancel_on_interrupt() -> Iterator[CancelFlag]:
    """Turn the first Ctrl-C into a clean cancel (the second one aborts at once)."""
    flag = CancelFlag()
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        if flag():
            signal.signal(signum, signal.SIG_DFL)
            raise KeyboardInterrupt
        print("\nStopping after the current step (Ctrl-C again to abort now)...", file=sys.stderr)
        flag.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class TqdmProgress:
    """A progress callback that draws one tqdm bar per message kind (quiet -> nothing)."""

    def __init__(self, *, disable: bool = False, unit: str = "it", unit_scale: bool = False) -> None:
        self.disable = disable
        self.unit = unit
        self.unit_scale = unit_scale
        self._bar: Any = None
        self._label: str | None = None

    def __call__(self, done: int, total: int, message: str) -> None:
        if self.disable:
            return
        from tqdm.auto import tqdm

        label = message.split(":")[0][:48]
        if self._bar is None or label != self._label or (total and self._bar.total != total):
            self.close()
            byte_like = "download" in label or "hashing" in label
            self._bar = tqdm(
                total=total or None,
                desc=label,
                unit="B" if byte_like else self.unit,
                unit_scale=byte_like or self.unit_scale,
                dynamic_ncols=True,
                leave=False,
                file=sys.stderr,
            )
            self._label = label
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def progress_for(args: argparse.Namespace, **kwargs: Any) -> TqdmProgress:
    return TqdmProgress(disable=bool(getattr(args, "quiet", False)) or (not sys.stderr.isatty() and not getattr(args, "progress", False)), **kwargs)


def run_guarded(function: Callable[[], int]) -> int:
    """Run a command body: RestoreKit errors become one line on stderr and exit code 1."""
    try:
        return function()
    except CancelledError as exc:
        print(f"restorekit: {exc}", file=sys.stderr)
        return 130
    except RestoreKitError as exc:
        print(f"restorekit: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("restorekit: interrupted", file=sys.stderr)
        return 130


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    parser.add_argument(
        "--models-dir",
        metavar="DIR",
        help="model home (default: $RESTOREKIT_HOME or the user cache dir)",
    )


ProgressFactory = Callable[[], ProgressCallback]


# --------------------------------------------------------------------------- option types


def number_type(
    kind: type[int] | type[float],
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
) -> Callable[[str], Any]:
    """An argparse ``type=`` for a finite whole number (``int``) or number (``float``) in range.

    ``minimum``/``maximum`` are inclusive bounds, ``above`` an exclusive lower bound. The
    message says what was expected, so every option words its range the same way.
    """
    noun = "a whole number" if kind is int else "a number"
    if minimum is not None and maximum is not None:
        wanted = f"{noun} between {minimum:g} and {maximum:g}"
    elif above is not None:
        wanted = f"{noun} > {above:g}"
    elif minimum is not None:
        wanted = f"{noun} >= {minimum:g}"
    else:
        wanted = noun

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if (
            not math.isfinite(value)
            or (minimum is not None and value < minimum)
            or (maximum is not None and value > maximum)
            or (above is not None and not value > above)
        ):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text}")
        return value

    return parse


positive_float = number_type(float, above=0)
positive_int = number_type(int, minimum=1)
non_negative_int = number_type(int, minimum=0)
strength = number_type(float, minimum=0, maximum=1)


def engine_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type=`` from an engine parser (such as
    :func:`restorekit.upscale.parse_tile`): its error message becomes argparse's."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except InvalidParameterError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert
