"""Windows chosen by the machine's measured cost per pixel (restorekit.upscale.window_cost).

The measured curves used here are the real ones of x4plus's fused bf16 trunk (one RRDB,
scaled to the trunk, us a pixel at 128, 192, 256, 384 and 512 px windows): the AMX Xeon's
rises with the window, the Zen 5's is flat (bench/RESULTS_upscale.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from restorekit.upscale import Upscaler, window_cost
from restorekit.upscale import engine as engine_module
from restorekit.upscale.tiling import choose_window, plan_tiles
from restorekit.upscale.window_cost import WindowCosts

SIDES = (128, 192, 256, 384, 512)
XEON_AMX = WindowCosts(SIDES, tuple(c * 1e-6 for c in (24.3, 22.1, 23.8, 28.9, 32.2)))
ZEN5 = WindowCosts(SIDES, tuple(c * 1e-6 for c in (204.0, 203.8, 204.5, 195.3, 196.8)))


def test_per_pixel_interpolates_in_the_side_and_holds_the_ends() -> None:
    assert XEON_AMX.per_pixel(64 * 64) == pytest.approx(24.3e-6)
    assert XEON_AMX.per_pixel(192 * 192) == pytest.approx(22.1e-6)
    assert XEON_AMX.per_pixel(320 * 320) == pytest.approx((23.8e-6 + 28.9e-6) / 2)
    assert XEON_AMX.per_pixel(2048 * 2048) == pytest.approx(32.2e-6)


@pytest.mark.parametrize(
    "record",
    [None, [], {"sides": [128]}, {"sides": [128, 256], "seconds_per_pixel": [1e-6]},
     {"sides": [0], "seconds_per_pixel": [1e-6]}, {"sides": [128], "seconds_per_pixel": [-1.0]},
     {"sides": ["x"], "seconds_per_pixel": [1e-6]}, {"sides": [], "seconds_per_pixel": []}],
)  # fmt: skip
def test_invalid_cache_records_are_ignored(record: object) -> None:
    assert WindowCosts.from_json(record) is None


def test_cache_records_round_trip_sorted() -> None:
    record = {"sides": [256, 128], "seconds_per_pixel": [2e-6, 1e-6]}
    assert WindowCosts.from_json(record) == WindowCosts((128, 256), (1e-6, 2e-6))
    assert WindowCosts.from_json(XEON_AMX.to_json()) == XEON_AMX


def test_rising_costs_split_a_photo_that_fits_whole() -> None:
    """On the Xeon's curve a 512² photo runs in six 192x272 windows (20% more pixels at
    23.1 us instead of 32.2): 7.2 s estimated against 8.4 s whole (end to end, four 272²
    windows measured 7.1 s against 10.3 s whole)."""
    window = choose_window(512, 512, 1 << 20, overlap=16, min_side=65, cost_per_pixel=XEON_AMX.per_pixel)
    assert window == (192, 272)
    plan = plan_tiles(512, 512, window, 16, scale=4)
    work = sum(row.length * col.length for row, col in plan)
    assert len(plan) == 6 and work == 6 * 192 * 272
    assert work * XEON_AMX.per_pixel(192 * 272) < 0.9 * 512 * 512 * XEON_AMX.per_pixel(512 * 512)


def test_flat_costs_keep_the_fewest_pixels() -> None:
    """On the Zen 5's flat curve nothing changes: whole when it fits, else the least work."""
    for height, width, budget in [(512, 512, 1 << 20), (1024, 1024, 191_664), (700, 300, 100_000)]:
        plain = choose_window(height, width, budget, overlap=16, min_side=65)
        assert choose_window(height, width, budget, overlap=16, min_side=65, cost_per_pixel=ZEN5.per_pixel) == plain


def test_measure_times_every_side_in_rounds_largest_first() -> None:
    calls: list[int] = []
    costs = window_cost.measure_window_costs(calls.append, sides=(192, 128, 192), repeats=2)
    assert calls == [192, 128] * 3  # a warm-up round, then two timed rounds
    assert costs.sides == (128, 192) and all(c > 0 for c in costs.seconds_per_pixel)


def test_costs_are_measured_once_and_cached_in_the_model_home(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(window_cost, "_memo", {})
    calls: list[int] = []
    first = window_cost.window_costs("net|cpu", calls.append, sides=(128, 192))
    assert calls and set(calls) == {128, 192}
    record = json.loads((isolated_home / ".restorekit" / "window_costs.json").read_text())
    assert WindowCosts.from_json(record["net|cpu"]) == first

    calls.clear()
    monkeypatch.setattr(window_cost, "_memo", {})  # a new process: from the file
    assert window_cost.window_costs("net|cpu", calls.append, sides=(128,)) == first
    assert calls == []
    window_cost.window_costs("net|cpu", calls.append, sides=(128, 256))  # a side it lacks
    assert set(calls) == {128, 256}


def test_a_corrupt_cache_file_is_measured_again(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(window_cost, "_memo", {})
    path = isolated_home / ".restorekit" / "window_costs.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    calls: list[int] = []
    costs = window_cost.window_costs("net|cpu", calls.append, sides=(128,))
    assert calls and WindowCosts.from_json(json.loads(path.read_text())["net|cpu"]) == costs


def _rrdb_upscaler(monkeypatch: pytest.MonkeyPatch) -> Upscaler:
    import spandrel

    from restorekit.architectures import random_state_dict

    monkeypatch.setattr(engine_module, "free_memory_bytes", lambda device: 64 << 30)
    monkeypatch.setattr(engine_module, "CPU_ACTIVATION_BUDGET", 1 << 30)  # 512² fits whole in fp32
    descriptor = spandrel.ModelLoader().load_from_state_dict(random_state_dict("RRDBNet"))
    upscaler = Upscaler(descriptor, precision="fp32", device="cpu", tile="auto")
    assert upscaler.runner.fused, "the fused RRDB trunk (which has the probe) should run on the CPU"
    return upscaler


def test_the_upscaler_splits_by_the_machine_costs(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the Xeon's curve recorded for this network and machine, a 512² photo that fits
    the memory budget whole runs as four windows, without measuring again; with the Zen 5's
    curve, or with tuning off, it runs whole; small photos never measure."""
    from restorekit.compiled import network_key

    monkeypatch.setenv("RESTOREKIT_WINDOW_TUNING", "1")
    monkeypatch.setattr(window_cost, "_memo", {})
    upscaler = _rrdb_upscaler(monkeypatch)
    runner = upscaler.runner
    key = window_cost.machine_key(network_key(runner._network, runner.plan.device, runner.plan.dtype))
    path = isolated_home / ".restorekit" / "window_costs.json"
    path.parent.mkdir(parents=True)

    def no_probe(side: int) -> None:
        raise AssertionError("the costs are cached: nothing should be measured")

    monkeypatch.setattr(type(runner._trunk), "probe", lambda self, side: no_probe(side))
    path.write_text(json.dumps({key: XEON_AMX.to_json()}))
    assert upscaler.window_for(512, 512) == (192, 272)
    assert upscaler.window_for(200, 200) == (200, 200)

    monkeypatch.setattr(window_cost, "_memo", {})
    path.write_text(json.dumps({key: ZEN5.to_json()}))
    assert upscaler.window_for(512, 512) == (512, 512)

    monkeypatch.setattr(window_cost, "_memo", {})
    path.write_text(json.dumps({key: XEON_AMX.to_json()}))
    monkeypatch.setenv("RESTOREKIT_WINDOW_TUNING", "0")
    assert upscaler.window_for(512, 512) == (512, 512)


def test_the_real_probe_measures_the_sides_that_fit(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fused trunk's probe (conv_first and one RRDB) runs at the candidate sides within
    the memory budget, once: the second request reads the cache."""
    monkeypatch.setenv("RESTOREKIT_WINDOW_TUNING", "1")
    monkeypatch.setattr(window_cost, "_memo", {})
    runner = _rrdb_upscaler(monkeypatch).runner
    trunk_type = type(runner._trunk)
    sides: list[int] = []
    real_probe = trunk_type.probe

    def counted(self: object, side: int) -> None:
        sides.append(side)
        real_probe(self, side)  # type: ignore[arg-type]

    monkeypatch.setattr(trunk_type, "probe", counted)
    costs = runner.window_costs(max_pixels=200 * 200)
    assert costs is not None and costs.sides == (128, 192) and all(c > 0 for c in costs.seconds_per_pixel)
    assert sorted(set(sides)) == [128, 192]
    sides.clear()
    assert runner.window_costs(max_pixels=200 * 200) == costs and sides == []


def test_networks_without_a_probe_and_int8_measure_nothing(animevideov3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESTOREKIT_WINDOW_TUNING", "1")
    upscaler = Upscaler(animevideov3, precision="fp32", device="cpu", tile="auto")
    assert upscaler.runner.window_costs(max_pixels=1 << 20) is None
    assert torch.get_num_threads() >= 1


def test_slow_widths_are_timed_once_per_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """A width whose conv costs 3.2x per pixel what the next multiple of 16 costs (363 px on
    the AMX Xeon) is slow; the answer is kept, fp32 and multiples of 16 are never timed."""
    monkeypatch.setenv("RESTOREKIT_WINDOW_TUNING", "1")
    monkeypatch.setattr(window_cost, "_slow_widths", {})
    timed: list[int] = []

    def fake_seconds(rows: int, width: int, dtype: torch.dtype) -> float:
        timed.append(width)
        return width * (3.2e-6 if width == 363 else 1e-6)

    monkeypatch.setattr(window_cost, "_conv_seconds", fake_seconds)
    assert window_cost.is_slow_width(300, 363, torch.bfloat16)
    assert window_cost.is_slow_width(300, 363, torch.bfloat16) and timed == [363, 368]
    assert not window_cost.is_slow_width(300, 365, torch.bfloat16) and timed[-2:] == [365, 368]
    timed.clear()
    assert not window_cost.is_slow_width(300, 363, torch.float32)
    assert not window_cost.is_slow_width(300, 368, torch.bfloat16)
    monkeypatch.setenv("RESTOREKIT_WINDOW_TUNING", "0")
    assert not window_cost.is_slow_width(300, 371, torch.bfloat16)
    assert timed == []


def test_a_slow_width_is_mirrored_to_16_and_cropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """An image that runs whole at a slow width gets mirrored columns up to the next multiple
    of 16 (what the network sees; the output keeps its size): columns further from the right
    edge than the receptive field are unchanged, the band within it changes only a little."""
    from restorekit.device import plan_execution
    from restorekit.upscale.network import NetworkRunner

    from conftest import random_model

    model = random_model("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2, "upscale": 2})
    runner = NetworkRunner(model, plan_execution("cpu", "fp32"))
    image = torch.rand(1, 3, 40, 70, generator=torch.Generator().manual_seed(0))
    seen: list[int] = []
    forward = runner._forward

    def recording(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[-1])
        return forward(x)

    runner._forward = recording
    monkeypatch.setattr("restorekit.upscale.network.is_slow_width", lambda h, w, dtype: False)
    plain = runner(image)
    monkeypatch.setattr("restorekit.upscale.network.is_slow_width", lambda h, w, dtype: True)
    padded = runner(image)
    assert seen == [70, 80] and padded.shape == plain.shape == (1, 3, 80, 140)
    radius = 4  # 4 convs of 3x3
    # unchanged in exact arithmetic; the conv kernels may block a wider row differently (AVX2
    # oneDNN does), so the far columns are compared to float rounding, not bit for bit
    far = (..., slice(0, 2 * (70 - radius)))
    assert (padded[far] - plain[far]).abs().max() < 1e-5
    assert not torch.equal(padded, plain) and (padded - plain).abs().max() < 0.2
