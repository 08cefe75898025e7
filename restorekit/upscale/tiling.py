"""Tile planning and blending: run a network window by window into a CPU canvas.

A *layout* splits each axis into windows and gives every output pixel of every window a
weight; the weights of all windows sum to one at every output pixel, and the 2-D weight of a
window is the product of its row and column weights, so the canvas is a plain weighted sum
(no normalisation pass, no weight canvas).

``feather`` (the default)
    Windows of one fixed shape (fixed shapes keep allocator and kernel caches warm), spread
    evenly so that neighbours share a band of at least ``2 * overlap`` input pixels, and
    aligned to the model's ``multiple_of`` (so pixel-unshuffle grids line up). Each window
    gets ``overlap`` pixels of real context beyond the seam.

    - When the model's receptive-field radius ``r`` is known and ``overlap >= r``, weights are
      non-zero only where a window has at least ``r`` pixels of context on its interior
      sides, so every blended pixel is *exact*: the tiled result equals the whole-image result
      (up to float rounding).
    - Otherwise (deep RRDB networks: ``r`` is about 348 px, or unknown architectures) the
      seam is cross-faded linearly over the whole shared band. Values near a window's edge
      are not exact, but the cross-fade hides the seam; more overlap costs more compute and
      gets closer to the whole-image result.

``official``
    RealESRGANer's grid: cores of ``tile`` pixels from the origin, each run with ``overlap``
    pixels of context (its ``tile_pad``), pasted hard. Kept to reproduce the reference
    implementation exactly; it leaves visible seams on deep networks.

Out-of-memory errors (CUDA OOM or a failed CPU allocation) first halve the batch, then run
the failing window itself as tiles of half its size, and keep that smaller size for the rest
of the job. Only windows that finished are in the canvas, so nothing stale is ever blended.

The canvas is float32, or float16 for half-precision networks (:func:`canvas_dtype`): their
outputs carry 8 (bfloat16) or 11 (float16) bits of mantissa, so a float16 sum of at most four
weighted windows adds no more than the network's own rounding, and it halves the largest
allocation of a big job (192 MiB -> 96 MiB for a 4096x4096 result). The canvas is converted
to float32 once, after the last window, when the network's activations are gone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from ..device import empty_cache, is_out_of_memory, release_freed_memory
from ..errors import InsufficientMemoryError, InvalidParameterError
from .network import Forward
from .window_cost import round_up

logger = logging.getLogger(__name__)

MIN_TILE = 16
"""No window is made smaller than this many pixels per side when shrinking after an OOM."""


@dataclass(frozen=True)
class AxisWindow:
    """One window along one axis.

    Attributes:
        start: first input pixel of the window.
        length: window length in input pixels.
        out_start: first output pixel (absolute) where this window's weight is non-zero.
        weights: float32 (K,) weights of output pixels ``[out_start, out_start + K)``.
    """

    start: int
    length: int
    out_start: int
    weights: torch.Tensor

    @property
    def out_stop(self) -> int:
        return self.out_start + int(self.weights.numel())


AxisLayout = Callable[..., list[AxisWindow]]


def _whole_axis(length: int, scale: int) -> list[AxisWindow]:
    return [AxisWindow(0, length, 0, torch.ones(length * scale))]


def _normalised(profiles: torch.Tensor, starts: Sequence[int], size: int, scale: int) -> list[AxisWindow]:
    """Turn raw (n, L_out) weight profiles into windows whose weights sum to one."""
    total = profiles.sum(dim=0, keepdim=True)
    if bool((total <= 0).any()):  # pragma: no cover - guaranteed by the layouts
        raise AssertionError("tile layout leaves output pixels uncovered")
    weights = profiles / total
    windows = []
    for row, start in zip(weights, starts, strict=True):
        nonzero = torch.nonzero(row > 0).flatten()
        first, last = int(nonzero[0]), int(nonzero[-1]) + 1
        windows.append(AxisWindow(start, size, first, row[first:last].clone()))
    return windows


def shared_band(overlap: int, align: int) -> int:
    """Input pixels two neighbouring ``feather`` windows share: ``2 * overlap``, aligned up."""
    return -(-2 * overlap // align) * align


def window_length(length: int, count: int, band: int, align: int) -> int:
    """Length of each of ``count`` equal windows that cover ``length`` pixels with ``band``
    pixels shared between neighbours, rounded up to ``align`` (``length`` for one window)."""
    if count <= 1:
        return length
    return min(length, -(-(math.ceil((length - band) / count) + band) // align) * align)


def choose_window(
    height: int,
    width: int,
    max_pixels: int,
    *,
    overlap: int,
    align: int = 1,
    min_side: int = 1,
    cost_per_pixel: Callable[[int], float] | None = None,
    width_multiple: int = 1,
) -> tuple[int, int]:
    """The ``feather`` window (height, width) that computes the fewest pixels in all, or
    with ``cost_per_pixel`` the one that takes the least time.

    Windows may hold at most ``max_pixels`` input pixels each (the memory budget) and are
    not made narrower than ``min_side``. Every window of a row-by-column split has the same
    shape, so the work is ``rows * cols * h * w``: the split with the least work wins, and
    windows need not be square (a 532x532 image under a 242k pixel budget runs as two
    532x282 windows, 6% more pixels than the image, where 491 px squares made four windows
    of 282x282, 12% more). Among equal work, fewer windows win.

    ``cost_per_pixel(window pixels)`` (seconds per pixel measured on this machine,
    :class:`~restorekit.upscale.window_cost.WindowCosts`) weighs each split's pixels by what
    a pixel costs in windows of that size, so smaller windows win where they are enough
    faster per pixel to pay for their seams, even on an image that fits whole.
    ``width_multiple``: split windows are made this much wider, as :func:`feather_axis` makes
    them (see :data:`restorekit.upscale.window_cost.WIDTH_MULTIPLE`).

    Returns:
        (height, width) window limits for :func:`plan_tiles`; the image's own size when it
        fits ``max_pixels`` whole.
    """
    if height * width <= max_pixels and cost_per_pixel is None:
        return height, width
    band = shared_band(overlap, align)
    best: tuple[int, int, int, int] | None = None  # (work, windows, h, w)
    for rows in range(1, max(1, height // max(min_side, 1)) + 1):
        h = window_length(height, rows, band, align)
        if rows > 1 and (h - band < align or h < min_side):
            break
        for cols in range(1, max(1, width // max(min_side, 1)) + 1):
            w = window_length(width, cols, band, align)
            if cols > 1:
                w = min(round_up(w, width_multiple), width)
            if cols > 1 and (w - band < align or w < min_side):
                break
            if h * w <= max_pixels:
                work = rows * cols * h * w
                if cost_per_pixel is not None:
                    work = round(work * cost_per_pixel(h * w) * 1e9)  # nanoseconds
                candidate = (work, rows * cols, h, w)
                best = candidate if best is None else min(best, candidate)
                if cost_per_pixel is None:
                    break  # more columns only add overlap
    if best is None:  # not even min_side windows fit: the smallest square the caller allows
        side = max(align, min_side // align * align)
        return min(side, height), min(side, width)
    return best[2], best[3]


def feather_axis(
    length: int,
    tile: int,
    overlap: int,
    *,
    scale: int = 1,
    align: int = 1,
    radius: int | None = None,
    multiple: int = 1,
) -> list[AxisWindow]:
    """Evenly spread windows of one size with feathered (or exact) seams; see the module doc.

    ``length`` and ``tile`` must be multiples of ``align`` (the caller pads the image). When
    the axis is split, the windows' size is rounded up to a multiple of ``multiple`` (within
    ``tile``): neighbours then share a few more pixels.
    """
    if length <= tile:
        return _whole_axis(length, scale)
    band = shared_band(overlap, align)
    if tile - band < align:
        raise InvalidParameterError(
            f"Tile size {tile} is too small for an overlap of {overlap} px (the tile must be "
            f"larger than twice the overlap). Use a larger tile or a smaller overlap."
        )
    count = math.ceil((length - band) / (tile - band))
    size = min(round_up(window_length(length, count, band, align), multiple), tile, length)
    steps = (length - size) // align
    starts = [align * math.floor(i * steps / (count - 1) + 0.5) for i in range(count)]
    starts[-1] = length - size  # differs from the aligned grid only for unaligned lengths
    exact = radius is not None and band >= 2 * radius
    margin = radius if exact and radius is not None else 0
    ramp = max(float((band - 2 * margin) * scale), 1.0)
    centers = torch.arange(length * scale, dtype=torch.float64) + 0.5
    profiles = torch.zeros(count, length * scale, dtype=torch.float64)
    for i, start in enumerate(starts):
        lo, hi = start * scale, (start + size) * scale
        profile = torch.zeros(length * scale, dtype=torch.float64)
        profile[lo:hi] = 1.0
        if i > 0:
            rise = ((centers - (start + margin) * scale) / ramp).clamp(0.0, 1.0)
            profile = torch.minimum(profile, rise)
        if i < count - 1:
            fall = (((start + size - margin) * scale - centers) / ramp).clamp(0.0, 1.0)
            profile = torch.minimum(profile, fall)
        profiles[i] = profile
    windows = _normalised(profiles, starts, size, scale)
    return [AxisWindow(w.start, w.length, w.out_start, w.weights.float()) for w in windows]


def official_axis(
    length: int,
    tile: int,
    overlap: int,
    *,
    scale: int = 1,
    align: int = 1,
    radius: int | None = None,
    multiple: int = 1,
) -> list[AxisWindow]:
    """RealESRGANer's grid: cores of ``tile`` px, ``overlap`` px of context, hard paste
    (``multiple`` is ignored: the grid is RealESRGANer's)."""
    if length <= tile:
        return _whole_axis(length, scale)
    windows = []
    for core_start in range(0, length, tile):
        core_stop = min(core_start + tile, length)
        start = max(core_start - overlap, 0)
        stop = min(core_stop + overlap, length)
        weights = torch.ones((core_stop - core_start) * scale)
        windows.append(AxisWindow(start, stop - start, core_start * scale, weights))
    return windows


LAYOUTS: dict[str, AxisLayout] = {"feather": feather_axis, "official": official_axis}
"""Tile layouts by name."""


@dataclass(frozen=True)
class TilePlan:
    """Windows over an image: every (row window, column window) pair, in raster order."""

    rows: list[AxisWindow]
    cols: list[AxisWindow]
    scale: int

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def __iter__(self) -> Iterator[tuple[AxisWindow, AxisWindow]]:
        for row in self.rows:
            for col in self.cols:
                yield row, col

    @property
    def window_shape(self) -> tuple[int, int]:
        """The largest window (height, width) in input pixels."""
        return max(r.length for r in self.rows), max(c.length for c in self.cols)


def plan_tiles(
    height: int,
    width: int,
    tile: tuple[int, int],
    overlap: int,
    *,
    scale: int,
    align: int = 1,
    radius: int | None = None,
    layout: str = "feather",
    width_multiple: int = 1,
) -> TilePlan:
    """Plan the windows for a (height, width) image with windows of at most ``tile`` (h, w);
    split columns are ``width_multiple`` wide (``feather`` layout)."""
    try:
        axis = LAYOUTS[layout]
    except KeyError:
        raise InvalidParameterError(
            f"Unknown tile layout {layout!r}; use one of: {', '.join(LAYOUTS)}."
        ) from None
    rows = axis(height, tile[0], overlap, scale=scale, align=align, radius=radius)
    cols = axis(width, tile[1], overlap, scale=scale, align=align, radius=radius, multiple=width_multiple)
    return TilePlan(rows, cols, scale)


def canvas_dtype(network_dtype: torch.dtype) -> torch.dtype:
    """The canvas dtype for a network running in ``network_dtype``: float16 for half
    precision (bfloat16, float16), float32 otherwise."""
    return torch.float16 if network_dtype in (torch.float16, torch.bfloat16) else torch.float32


@dataclass
class Tiler:
    """Runs a :data:`~restorekit.upscale.network.Forward` over an image tile by tile.

    Attributes:
        forward: the network runner.
        scale: the network's scale.
        overlap: context pixels each window gets beyond a seam.
        align: window sizes and positions are multiples of this (the model's multiple_of).
        radius: the model's receptive-field radius (None: unknown).
        layout: ``feather`` or ``official``.
        batch_size: windows of one shape run together (halved on OOM).
        device: where the network runs (its cache is emptied after an OOM).
        check: raises :class:`~restorekit.errors.CancelledError` when the user cancels.
        on_windows: called with the number of windows finished after each batch.
    """

    forward: Forward
    scale: int
    overlap: int
    align: int = 1
    radius: int | None = None
    layout: str = "feather"
    batch_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    check: Callable[[], None] = lambda: None
    on_windows: Callable[[int], None] = lambda count: None
    limit: int | None = None
    """Largest window side known to fit after an OOM (None: no OOM so far)."""
    largest: tuple[int, int] = (0, 0)
    """Largest window (height, width) the network has run."""
    canvas_dtype: torch.dtype = torch.float32
    """Accumulation dtype of the output canvas (see :func:`canvas_dtype`); results are float32."""
    width_multiple: int = 1
    """Split windows' width is a multiple of this (see :func:`feather_axis`)."""

    def plan(self, height: int, width: int, tile: tuple[int, int], layout: str | None = None) -> TilePlan:
        if self.limit is not None:
            tile = (min(tile[0], self.limit), min(tile[1], self.limit))
        return plan_tiles(
            height,
            width,
            tile,
            self.overlap,
            scale=self.scale,
            align=self.align,
            radius=self.radius,
            layout=layout or self.layout,
            width_multiple=self.width_multiple,
        )

    def run(self, image: torch.Tensor, plan: TilePlan) -> torch.Tensor:
        """Run ``plan`` over (B, C, H, W) float32 ``image``; returns the (B, 3, sH, sW) canvas."""
        return self._run(image, plan, report=True)

    # ------------------------------------------------------------------ internals

    def _run(self, image: torch.Tensor, plan: TilePlan, *, report: bool) -> torch.Tensor:
        batch, _, height, width = image.shape
        s = plan.scale
        if len(plan) == 1 and batch == 1:
            out = self._forward_batch([image])[0]
            if report:
                self.on_windows(1)
            return out
        canvas = torch.empty(
            (batch, 3, height * s, width * s), dtype=self.canvas_dtype, memory_format=torch.channels_last
        )
        canvas.zero_()
        jobs = [(b, row, col) for b in range(batch) for row, col in plan]
        index = 0
        while index < len(jobs):
            self.check()
            group = [jobs[index]]
            shape = (jobs[index][1].length, jobs[index][2].length)
            while (
                len(group) < self.batch_size
                and index + len(group) < len(jobs)
                and (jobs[index + len(group)][1].length, jobs[index + len(group)][2].length) == shape
            ):
                group.append(jobs[index + len(group)])
            crops = [
                image[b : b + 1, :, row.start : row.start + row.length, col.start : col.start + col.length]
                for b, row, col in group
            ]
            outputs = self._forward_batch(crops)
            for (b, row, col), out in zip(group, outputs, strict=True):
                self._accumulate(canvas, b, out, row, col, s)
            if self.device.type == "cpu":  # the window's freed activations, before the next one
                del outputs, out
                release_freed_memory()
            index += len(group)
            if report:
                self.on_windows(len(group))
        canvas.clamp_(0.0, 1.0)  # weights sum to one only up to float rounding
        return canvas if canvas.dtype == torch.float32 else canvas.float()

    @staticmethod
    def _accumulate(
        canvas: torch.Tensor, b: int, out: torch.Tensor, row: AxisWindow, col: AxisWindow, s: int
    ) -> None:
        y0, x0 = row.out_start - row.start * s, col.out_start - col.start * s
        src = out[0, :, y0 : y0 + row.weights.numel(), x0 : x0 + col.weights.numel()]
        dst = canvas[b, :, row.out_start : row.out_stop, col.out_start : col.out_stop]
        dst.addcmul_(src, row.weights[:, None] * col.weights[None, :])

    def _call(self, batch: torch.Tensor) -> torch.Tensor:
        h, w = batch.shape[-2:]
        out = self.forward(batch)
        self.largest = (max(self.largest[0], h), max(self.largest[1], w))
        return out

    def _forward_batch(self, crops: list[torch.Tensor]) -> list[torch.Tensor]:
        """Outputs (1, 3, sh, sw) for same-shaped (1, C, h, w) crops, shrinking on OOM."""
        if len(crops) == 1:
            return [self._forward_window(crops[0])]
        try:
            out = self._call(torch.cat(crops, dim=0))
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            del exc
            empty_cache(self.device)
            self.batch_size = max(1, len(crops) // 2)
            logger.info("out of memory with %d windows per batch; trying %d", len(crops), self.batch_size)
            half = len(crops) // 2
            return self._forward_batch(crops[:half]) + self._forward_batch(crops[half:])
        return list(out.split(1, dim=0))

    def _forward_window(self, crop: torch.Tensor) -> torch.Tensor:
        h, w = crop.shape[-2:]
        if self.limit is not None and max(h, w) > self.limit:
            return self._subtile(crop)
        try:
            return self._call(crop)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            reason = str(exc).splitlines()[0][:200]
            del exc
            empty_cache(self.device)
        new_limit = max(self.align, (max(h, w) // 2) // self.align * self.align)
        self.limit = new_limit if self.limit is None else min(self.limit, new_limit)
        logger.warning("out of memory on a %dx%d window (%s); continuing with %d px tiles", w, h, reason, self.limit)
        return self._subtile(crop)

    def _subtile(self, crop: torch.Tensor) -> torch.Tensor:
        h, w = crop.shape[-2:]
        assert self.limit is not None
        smallest = max(MIN_TILE, 2 * self.overlap + 2 * self.align)
        if self.limit < smallest:
            raise InsufficientMemoryError(
                f"Out of memory even with {self.limit} px tiles on {self.device}. Close other "
                "programs, lower --tile, use a smaller overlap, or run on another device."
            )
        plan = self.plan(h, w, (self.limit, self.limit), layout="feather")
        return self._run(crop, plan, report=False)
