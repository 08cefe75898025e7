"""Tile planning, seamless tiling on real weights, OOM recovery, cancel and progress."""

from __future__ import annotations

import itertools

import pytest
import torch

from restorekit.errors import CancelledError, InsufficientMemoryError, InvalidParameterError
from restorekit.upscale import Upscaler, upscale_tensor
from restorekit.upscale import engine as engine_module
from restorekit.upscale.tiling import (
    canvas_dtype,
    choose_window,
    feather_axis,
    official_axis,
    plan_tiles,
)

from conftest import psnr, random_model, to_tensor


def _coverage(windows, length: int, scale: int) -> torch.Tensor:
    total = torch.zeros(length * scale, dtype=torch.float64)
    for window in windows:
        total[window.out_start : window.out_stop] += window.weights.double()
    return total


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "align", "radius", "scale"),
    [
        (100, 40, 8, 1, None, 4),
        (1044, 370, 16, 1, 349, 4),  # deep model: cross-fade
        (500, 128, 18, 1, 18, 4),  # exact: overlap == radius
        (501, 97, 20, 1, 18, 2),  # exact with room for a ramp
        (236, 64, 10, 4, 8, 2),  # pixel-unshuffle alignment
        (64, 63, 0, 1, None, 1),  # no overlap: hard seams
    ],
)
def test_feather_weights_partition_unity_with_fixed_aligned_windows(length, tile, overlap, align, radius, scale):
    windows = feather_axis(length, tile, overlap, scale=scale, align=align, radius=radius)
    assert len(windows) > 1
    assert torch.allclose(_coverage(windows, length, scale), torch.ones(length * scale, dtype=torch.float64), atol=1e-6)
    assert len({w.length for w in windows}) == 1, "all windows share one shape"
    assert windows[0].length <= tile and windows[0].length % align == 0
    assert all(w.start % align == 0 for w in windows)
    assert windows[0].start == 0 and windows[-1].start + windows[-1].length == length
    for left, right in itertools.pairwise(windows):
        assert left.start + left.length - right.start >= 2 * overlap, "neighbours share 2 x overlap"
    assert all(bool((w.weights > 0).all()) for w in windows)


@pytest.mark.parametrize(("length", "tile", "multiple"), [(1024, 368, 16), (1000, 400, 16), (700, 300, 16), (236, 128, 16), (1024, 363, 16)])
def test_split_windows_are_a_multiple_wide_within_the_tile(length, tile, multiple):
    """CPU windows are made a multiple of 16 px wide (oneDNN's AMX convs run 2-5x slower at
    some other widths): the seams still partition unity and neighbours share more, never
    less; a tile that is not a multiple itself stays the limit."""
    plain = feather_axis(length, tile, 16, scale=4)
    windows = feather_axis(length, tile, 16, scale=4, multiple=multiple)
    size = windows[0].length
    assert len(windows) == len(plain) and size >= plain[0].length and size <= tile
    assert size % multiple == 0 or size == tile
    assert torch.allclose(_coverage(windows, length, 4), torch.ones(length * 4, dtype=torch.float64), atol=1e-6)
    assert windows[0].start == 0 and windows[-1].start + size == length


def test_choose_window_costs_the_widths_the_axis_will_use():
    """Nine 363x363 windows ran x4plus bf16 on 1024² in 112 s on the AMX Xeon; with widths
    rounded to 16 the chooser and the plan agree on 368 px wide windows."""
    window = choose_window(1024, 1024, 363 * 368, overlap=16, min_side=65, width_multiple=16)
    assert window[1] % 16 == 0
    plan = plan_tiles(1024, 1024, window, 16, scale=4, width_multiple=16)
    assert {col.length for col in plan.cols} == {window[1]} and plan.window_shape[0] * plan.window_shape[1] <= 363 * 368


def test_the_cpu_upscaler_runs_windows_16_wide():
    """A 700 px wide image under a 200 px tile runs in windows 192 px wide (not 190), and the
    result still matches the untiled one where the overlap covers the receptive field."""
    model = random_model("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2, "upscale": 2})
    upscaler = Upscaler(model, precision="fp32", device="cpu", tile=200, overlap=8)
    widths: list[int] = []
    runner = upscaler.runner

    def recording(batch: torch.Tensor) -> torch.Tensor:
        widths.append(batch.shape[-1])
        return runner(batch)

    upscaler.runner = recording  # type: ignore[assignment]
    image = torch.rand(1, 3, 96, 700, generator=torch.Generator().manual_seed(0))
    tiled = upscaler.upscale(image).pixels
    assert widths and all(width % 16 == 0 for width in widths) and max(widths) <= 200
    whole = Upscaler(model, precision="fp32", device="cpu", tile=0).upscale(image).pixels
    assert torch.allclose(tiled, whole, atol=1e-5)


def test_exact_layout_only_uses_pixels_with_full_context():
    radius, scale = 18, 4
    windows = feather_axis(300, 100, 20, scale=scale, radius=radius)
    for i, window in enumerate(windows):
        first_input = window.out_start // scale
        last_input = (window.out_stop - 1) // scale
        if i > 0:
            assert first_input - window.start >= radius
        if i < len(windows) - 1:
            assert window.start + window.length - 1 - last_input >= radius


def test_official_axis_is_realesrganer_grid():
    windows = official_axis(90, 40, 10, scale=4)
    assert [(w.start, w.length) for w in windows] == [(0, 50), (30, 60), (70, 20)]
    assert [(w.out_start, w.out_stop) for w in windows] == [(0, 160), (160, 320), (320, 360)]
    assert all(bool((w.weights == 1).all()) for w in windows)


def test_tile_smaller_than_two_overlaps_is_refused():
    with pytest.raises(InvalidParameterError, match="twice the overlap"):
        plan_tiles(200, 200, (32, 32), 16, scale=4)


def test_plan_is_whole_image_when_it_fits():
    plan = plan_tiles(120, 80, (128, 128), 16, scale=4)
    assert len(plan) == 1 and plan.window_shape == (120, 80)


def _work(plan) -> int:
    return len(plan) * plan.window_shape[0] * plan.window_shape[1]


@pytest.mark.parametrize(
    ("height", "width", "budget", "align"),
    [(532, 532, 242_000, 1), (1024, 1024, 242_000, 1), (800, 1100, 242_000, 1), (700, 300, 50_000, 4), (532, 532, 30_000, 1)],
)
def test_choose_window_fits_the_budget_with_the_least_work(height, width, budget, align):
    """Windows hold at most the budget, and no split with fitting windows (square or not)
    computes fewer pixels: checked against every row x column split."""
    window = choose_window(height, width, budget, overlap=16, align=align, min_side=65)
    plan = plan_tiles(height, width, window, 16, scale=4, align=align)
    assert plan.window_shape[0] * plan.window_shape[1] <= budget

    def splits(length: int) -> set[tuple[int, int]]:  # (windows, window length) per tile side
        return {
            (len(axis), axis[0].length)
            for side in range(-(-65 // align) * align, length + 1, 5 * align)  # sides are aligned
            for axis in [feather_axis(length, side, 16, scale=1, align=align)]
        }

    best = min(
        rows * cols * h * w
        for rows, h in splits(height)
        for cols, w in splits(width)
        if h * w <= budget
    )
    assert _work(plan) <= best


def test_choose_window_beats_the_square_window_of_the_same_budget():
    """A 532 px image under a 242k px budget: two 532x282 windows (6% extra pixels) instead
    of four 282x282 squares (12%)."""
    window = choose_window(532, 532, 242_000, overlap=16, min_side=65)
    assert window == (282, 532)
    squares = plan_tiles(532, 532, (491, 491), 16, scale=4)
    assert _work(plan_tiles(532, 532, window, 16, scale=4)) < _work(squares)
    assert choose_window(300, 200, 60_000, overlap=16) == (300, 200)


def test_feather_default_pre_pads_nothing_and_official_keeps_realesrganer_pad():
    model = random_model("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2, "upscale": 2})
    assert Upscaler(model, tile=0).pre_pad == 0
    assert Upscaler(model, tile=0, layout="official").pre_pad == 10
    assert Upscaler(model, tile=0, pre_pad=6).pre_pad == 6


# ----------------------------------------------------------------------------- real weights


@pytest.mark.slow
def test_tiled_equals_whole_for_animevideov3_when_overlap_covers_radius(animevideov3, coffee, chelsea):
    upscaler_whole = Upscaler(animevideov3, precision="fp32", tile=0)
    assert upscaler_whole.traits.radius == 18
    for photo, crop in ((coffee, (slice(60, 140), slice(150, 260))), (chelsea, (slice(40, 117), slice(100, 193)))):
        image = to_tensor(photo[crop])
        whole = upscaler_whole.upscale(image).pixels
        for tile, overlap in ((64, 18), (84, 24)):
            tiled = upscale_tensor(animevideov3, image, precision="fp32", tile=tile, overlap=overlap)
            assert tiled.tile[0] <= tile and tiled.tile[1] <= tile
            assert (tiled.pixels - whole).abs().max().item() < 1e-4


@pytest.mark.slow
def test_overlap_below_radius_is_blended_not_exact(animevideov3, coffee):
    image = to_tensor(coffee[60:160, 150:290])
    whole = upscale_tensor(animevideov3, image, precision="fp32", tile=0).pixels
    blended = upscale_tensor(animevideov3, image, precision="fp32", tile=48, overlap=6).pixels
    hard = upscale_tensor(animevideov3, image, precision="fp32", tile=36, overlap=6, layout="official").pixels
    assert (blended - whole).abs().max().item() > 1e-3  # the guarantee really needs overlap >= radius
    # feathering hides what hard pasting (the reference's tiles) shows as seams
    assert (blended - whole).abs().max() < (hard - whole).abs().max() / 3
    assert psnr(blended, whole) > psnr(hard, whole) + 3.0 > 45.0


@pytest.mark.slow
def test_tiled_rrdb_cross_fade_stays_close_to_whole_image(x4plus, astronaut):
    """Deep RRDB (radius ~349 px): tiles cannot be exact; the 32 px cross-fade keeps them close."""
    image = to_tensor(astronaut[60:92, 200:232])  # 32x32 (an eye), pre-padded to 52x52
    whole = upscale_tensor(x4plus, image, precision="fp32", tile=0).pixels
    tiled = upscale_tensor(x4plus, image, precision="fp32", tile=40)  # 3x3 windows of 39
    assert tiled.tile[0] <= 40 and tiled.tile[1] <= 40
    assert psnr(tiled.pixels, whole) > 35.0
    assert (tiled.pixels - whole).abs().mean().item() < 2.0 / 255


@pytest.mark.slow
def test_runs_are_deterministic(animevideov3, chelsea):
    image = to_tensor(chelsea[:70, :90])
    first = upscale_tensor(animevideov3, image, tile=48, overlap=8).pixels
    second = upscale_tensor(animevideov3, image, tile=48, overlap=8).pixels
    assert torch.equal(first, second)


def test_canvas_is_float16_only_for_half_precision_networks():
    assert canvas_dtype(torch.bfloat16) == canvas_dtype(torch.float16) == torch.float16
    assert canvas_dtype(torch.float32) == torch.float32


@pytest.mark.slow
def test_half_precision_canvas_adds_less_than_the_networks_rounding(animevideov3, chelsea, monkeypatch):
    """A bf16 job blends into a float16 canvas (half the memory); against a float32 canvas it
    moves no pixel by more than 1/1000 and returns float32, while bf16 itself is ~1/100 off fp32."""
    image = to_tensor(chelsea[:90, :120])
    half_canvas = upscale_tensor(animevideov3, image, precision="bf16", tile=48, overlap=8).pixels
    fp32 = upscale_tensor(animevideov3, image, precision="fp32", tile=48, overlap=8).pixels
    monkeypatch.setattr(engine_module, "canvas_dtype", lambda dtype: torch.float32)
    full_canvas = upscale_tensor(animevideov3, image, precision="bf16", tile=48, overlap=8).pixels
    assert half_canvas.dtype == full_canvas.dtype == torch.float32
    canvas_error = (half_canvas - full_canvas).abs().max().item()
    assert 0 < canvas_error < 1e-3
    assert canvas_error < (full_canvas - fp32).abs().max().item() / 5
    assert psnr(half_canvas, full_canvas) > 65.0


def test_cpu_tiles_hand_freed_memory_back_after_every_window(monkeypatch):
    """Each CPU window's freed activations go back to the OS before the next window runs."""
    from restorekit.upscale import tiling

    trims: list[int] = []
    windows: list[int] = []
    monkeypatch.setattr(tiling, "release_freed_memory", lambda: trims.append(len(windows)))
    model = random_model("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2, "upscale": 2})
    image = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    upscale_tensor(model, image, precision="fp32", tile=48, overlap=8, progress=lambda d, t, m: windows.append(d))
    assert len(windows) > 1 and trims == list(range(len(windows)))


# ----------------------------------------------------------------------------- OOM, cancel, progress


class _AllocationFailure:
    """Wraps a runner: windows larger than ``max_side`` fail like a CPU allocation does."""

    def __init__(self, runner, max_side: int) -> None:
        self.runner = runner
        self.max_side = max_side
        self.failures = 0
        self.fallbacks = 0
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(batch.shape))
        if max(batch.shape[-2:]) > self.max_side or batch.shape[0] > 1:
            self.failures += 1
            raise RuntimeError(
                "[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: not enough memory: "
                "you tried to allocate 9663676416 bytes."
            )
        return self.runner(batch)


@pytest.mark.slow
def test_out_of_memory_halves_the_tile_and_resumes(animevideov3, coffee):
    image = to_tensor(coffee[100:196, 200:328])
    whole = upscale_tensor(animevideov3, image, precision="fp32", tile=0).pixels
    upscaler = Upscaler(animevideov3, precision="fp32", tile=160, batch=2)
    failing = _AllocationFailure(upscaler.runner, max_side=100)
    upscaler.runner = failing
    result = upscaler.upscale(image)
    assert failing.failures >= 1
    assert result.tile[0] <= 100 and result.tile[1] <= 100
    # every finished window came from a successful call; the result is still exact
    assert (result.pixels - whole).abs().max().item() < 1e-4


def test_out_of_memory_at_the_smallest_tile_is_a_clear_error(animevideov3, coffee):
    upscaler = Upscaler(animevideov3, precision="fp32", tile=96)
    upscaler.runner = _AllocationFailure(upscaler.runner, max_side=8)
    with pytest.raises(InsufficientMemoryError, match="Out of memory"):
        upscaler.upscale(to_tensor(coffee[:80, :80]))


def test_other_runtime_errors_are_not_swallowed(animevideov3, coffee):
    upscaler = Upscaler(animevideov3, precision="fp32", tile=64)

    def broken(batch):
        raise RuntimeError("shape mismatch in some layer")

    upscaler.runner = broken
    with pytest.raises(RuntimeError, match="shape mismatch"):
        upscaler.upscale(to_tensor(coffee[:80, :80]))


@pytest.mark.slow
def test_progress_reports_every_tile_and_cancel_stops(animevideov3, coffee):
    image = to_tensor(coffee[:120, :120])
    seen: list[tuple[int, int]] = []
    upscale_tensor(animevideov3, image, tile=64, overlap=8, progress=lambda d, t, m: seen.append((d, t)))
    total = seen[-1][1]
    assert total > 1 and seen == [(i, total) for i in range(1, total + 1)]

    calls = 0

    def cancel() -> bool:
        return calls >= 2

    def progress(done: int, total: int, message: str) -> None:
        nonlocal calls
        calls += 1

    with pytest.raises(CancelledError):
        upscale_tensor(animevideov3, image, tile=64, overlap=8, progress=progress, cancel=cancel)
    assert calls == 2


@pytest.mark.slow
def test_pixel_unshuffle_model_tiles_exactly_with_aligned_windows():
    model = random_model("RRDBNet", {"num_feat": 8, "num_block": 1, "num_grow_ch": 32, "scale": 2}, std=0.1)
    upscaler = Upscaler(model, precision="fp32", tile=0)
    assert upscaler.traits.multiple_of == 4
    radius = upscaler.traits.radius
    image = torch.rand(1, 3, 61, 75, generator=torch.Generator().manual_seed(1))
    whole = upscaler.upscale(image).pixels
    tiled = upscale_tensor(model, image, precision="fp32", tile=2 * radius + 24, overlap=radius)
    assert tiled.pixels.shape == (1, 3, 122, 150)
    assert whole.std() > 1e-3
    assert (tiled.pixels - whole).abs().max().item() < 1e-4
