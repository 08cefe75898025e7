"""Compiled execution (:mod:`restorekit.compiled`): modes, the compiler check, ``auto``'s cost
model, the settings' plumbing, and, on real weights, compiled == eager with the compile cache
used by a second process.

The compiling tests are slow (a cold inductor compile takes tens of seconds on 2 cores) and
run ``realesr-animevideov3`` from ../shared (skipped without it).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from restorekit import compiled
from restorekit.compiled import (
    CompiledForward,
    CompileEstimate,
    compile_pays,
    parse_compile,
    resolve_compile,
)
from restorekit.device import plan_execution
from restorekit.errors import InvalidParameterError

from conftest import REPO_ROOT, SHARED_WEIGHTS, random_model

CPU = torch.device("cpu")


@pytest.fixture
def compiler_check():
    """Inductor's C++ compiler setting, faked per test; the memoised check is reset around it."""
    import contextlib

    import torch._inductor.config as inductor_config

    compiled._cpp_compiler_problem.cache_clear()
    compiled._log_fallback.cache_clear()
    with contextlib.ExitStack() as stack:

        def use(compiler: str) -> None:
            stack.enter_context(inductor_config.patch({"cpp.cxx": (compiler,)}))
            compiled._cpp_compiler_problem.cache_clear()

        yield use
    compiled._cpp_compiler_problem.cache_clear()
    compiled._log_fallback.cache_clear()


@pytest.fixture
def own_cache(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The compile cache of a fresh model home (TORCHINDUCTOR_CACHE_DIR restored afterwards)."""
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    return compiled.cache_dir()


# --------------------------------------------------------------------------- modes and compiler


def test_compile_modes_are_parsed_once_for_every_front_end():
    assert [parse_compile(m) for m in ("auto", " ON ", "off", True, False)] == ["auto", "on", "off", "on", "off"]
    with pytest.raises(InvalidParameterError, match="auto, on, off"):
        parse_compile("fast")
    from restorekit.restore import RestoreSettings

    assert RestoreSettings().compile == "auto"
    with pytest.raises(InvalidParameterError, match="compile mode"):
        RestoreSettings(compile="yes please")


def test_on_without_a_compiler_names_the_fix(compiler_check):
    compiler_check("/nonexistent/bin/g++")
    with pytest.raises(InvalidParameterError, match=r"no C\+\+ compiler found.*apt install g\+\+.*'auto' or 'off'"):
        resolve_compile("on", CPU)
    with pytest.raises(InvalidParameterError, match="apt install g"):
        plan_execution("cpu", "fp32", compile="on")


def test_auto_without_a_compiler_runs_eager_and_logs_why(compiler_check, own_cache, monkeypatch, caplog):
    compiler_check("/nonexistent/bin/g++")
    assert plan_execution("cpu", "fp32", compile="auto").compile == "auto"  # checked only when it would pay
    _write_costs(own_cache, {"gain": 0.5, "shapes": {"1x3x8x8": {"warm": 1e-9}}})
    forward, calls = _fake_forward(monkeypatch, "auto")
    forward.expect((1, 3, 8, 8), 3)
    with caplog.at_level(logging.WARNING, logger="restorekit.compiled"):
        outputs = [forward(torch.ones(1, 3, 8, 8)) for _ in range(3)]
    assert [kind for kind, _ in calls] == ["eager"] * 3 and all(bool((o == 2).all()) for o in outputs)
    assert forward.compiles == 0 and "no C++ compiler found" in (forward.failed or "")
    assert "running eager because no C++ compiler found" in caplog.text


def test_a_broken_compiler_is_found_before_a_job(compiler_check, tmp_path: Path):
    """A compiler that answers --version but cannot build (missing headers, no linker)."""
    fake = tmp_path / "g++"
    fake.write_text('#!/bin/sh\n[ "$1" = "--version" ] && { echo "g++ 12"; exit 0; }\necho "fatal error: no linker" >&2\nexit 1\n')
    fake.chmod(0o755)
    compiler_check(str(fake))
    problem = compiled.compiler_problem(CPU)
    assert problem is not None and "failed on a test program" in problem and "no linker" in problem
    with pytest.raises(InvalidParameterError, match="failed on a test program"):
        resolve_compile("on", CPU)
    assert resolve_compile("off", CPU) == "off"


def test_other_devices_are_not_compiled():
    assert compiled.compiler_problem(torch.device("mps")) is not None


# --------------------------------------------------------------------------- auto's cost model


def test_compile_pays_weighs_announced_and_streamed_work():
    # 100 windows of 0.5 s ahead at a 20% gain save 10 s: more than an 8 s compile, less than 12 s
    assert compile_pays(CompileEstimate(0.5, 100, 0.0, 0.2, 8.0))
    assert not compile_pays(CompileEstimate(0.5, 100, 0.0, 0.2, 12.0))
    # nothing announced (frames arriving batch by batch): as long again as already spent
    assert not compile_pays(CompileEstimate(0.5, 0, 30.0, 0.2, 8.0))
    assert compile_pays(CompileEstimate(0.5, 0, 50.0, 0.2, 8.0))
    assert not compile_pays(CompileEstimate(0.5, 1000, 0.0, 0.0, 1.0))  # measured: no gain here


def _fake_forward(monkeypatch: pytest.MonkeyPatch, mode: str, *, label: str = "Compact") -> tuple[CompiledForward, list]:
    """A CompiledForward whose compile is a recorded stand-in (the policy without inductor)."""
    calls: list[tuple[str, tuple[int, ...]]] = []

    def eager(x: torch.Tensor) -> torch.Tensor:
        calls.append(("eager", tuple(x.shape)))
        return x * 2

    def fake_compiled(x: torch.Tensor) -> torch.Tensor:
        calls.append(("compiled", tuple(x.shape)))
        return x * 2

    forward = CompiledForward(forward=eager, target=eager, mode=mode, key="Fake|cpu|float32", layers=3, label=label)
    monkeypatch.setattr(forward, "_compiled_callable", lambda: fake_compiled)
    return forward, calls


def _write_costs(folder: Path, record: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / compiled.COSTS_FILE).write_text(json.dumps({"Fake|cpu|float32": record}))


def test_auto_measures_eager_first_then_compiles_when_the_job_pays(own_cache, monkeypatch):
    _write_costs(own_cache, {"gain": 0.5, "shapes": {"1x3x8x8": {"warm": 1e-9}}})
    forward, calls = _fake_forward(monkeypatch, "auto")
    x = torch.ones(1, 3, 8, 8)
    forward.expect((1, 3, 8, 8), 4)
    for _ in range(4):
        forward(x)
    assert [kind for kind, _ in calls] == ["eager", "compiled", "compiled", "compiled"]
    assert forward.compiles == 1
    record = json.loads((own_cache / compiled.COSTS_FILE).read_text())["Fake|cpu|float32"]
    assert "warm" in record["shapes"]["1x3x8x8"]  # the compile was measured and recorded


def test_auto_leaves_one_off_shapes_and_costly_compiles_eager(own_cache, monkeypatch):
    _write_costs(own_cache, {"gain": 0.2, "cold": 1e6})  # a cold compile costs more than any job
    forward, calls = _fake_forward(monkeypatch, "auto")
    forward.expect((1, 3, 8, 8), 50)
    for _ in range(50):
        forward(torch.ones(1, 3, 8, 8))
    forward(torch.ones(1, 3, 5, 8))  # an edge window of another shape
    assert {kind for kind, _ in calls} == {"eager"} and forward.compiles == 0
    estimate = forward.estimate((1, 3, 8, 8))
    assert estimate.compile_seconds == 1e6 and estimate.gain == 0.2 and estimate.spent_seconds > 0


def test_auto_estimates_before_anything_was_measured(own_cache, monkeypatch):
    forward, _ = _fake_forward(monkeypatch, "auto", label="ESRGAN")
    estimate = forward.estimate((1, 3, 64, 64))
    assert estimate.gain == compiled.DEFAULT_GAINS["ESRGAN"]
    assert estimate.compile_seconds == compiled.estimated_cold_seconds(3)
    _write_costs(own_cache, {"cold": 40.0, "shapes": {"1x3x64x64": {"cold": 40.0}}})
    assert forward.estimate((1, 3, 64, 64)).compile_seconds == 40.0 * compiled.WARM_FRACTION  # cached since
    assert forward.estimate((1, 3, 32, 32)).compile_seconds == 40.0  # a new shape compiles cold


def test_on_compiles_every_shape_up_to_the_limit(own_cache, monkeypatch):
    forward, calls = _fake_forward(monkeypatch, "on")
    for side in range(8, 8 + compiled.MAX_COMPILED_SHAPES + 2):
        forward(torch.ones(1, 3, side, side))
    kinds = [kind for kind, _ in calls]
    assert kinds == ["compiled"] * compiled.MAX_COMPILED_SHAPES + ["eager", "eager"]


def test_upscaler_announces_its_windows(monkeypatch, compiler_check):
    """The engine tells auto how many windows of which network input shape a job runs."""
    from restorekit.upscale import Upscaler

    monkeypatch.setattr(compiled, "compiler_problem", lambda device: None)
    model = random_model("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2, "upscale": 2})
    upscaler = Upscaler(model, device="cpu", precision="fp32", tile=32, compile="auto")
    forward = upscaler.runner.compiled
    assert forward is not None and forward.mode == "auto"
    seen: dict = {}
    monkeypatch.setattr(forward, "expect", lambda shape, calls: seen.__setitem__(shape, seen.get(shape, 0) + calls))
    monkeypatch.setattr(forward, "_should_compile", lambda shape, state: False)
    result = upscaler.upscale(torch.rand(1, 3, 60, 70))
    windows = sum(state.calls for state in forward.shapes.values())
    assert sum(seen.values()) == windows and set(seen) == set(forward.shapes)
    assert result.pixels.shape == (1, 3, 120, 140)


def test_cli_and_front_ends_carry_the_setting():
    from restorekit.cli import build_parser
    from restorekit.cli.faces import settings_from_face_args
    from restorekit.cli.upscale import settings_from_args

    parser = build_parser()
    args = parser.parse_args(["upscale", "in.png", "-o", "out", "--compile", "off"])
    assert settings_from_args(args).compile == "off"
    assert settings_from_args(parser.parse_args(["upscale", "in.png", "-o", "out"])).compile == "auto"
    faces = parser.parse_args(["faces", "in.png", "-o", "out", "--compile", "on", "--bg-model", "realesr-animevideov3"])
    assert settings_from_face_args(faces).compile == "on"
    video = parser.parse_args(["video", "in.mp4", "-o", "out.mp4", "--compile", "off"])
    assert video.compile == "off"
    with pytest.raises(SystemExit):
        parser.parse_args(["upscale", "in.png", "-o", "out", "--compile", "sometimes"])
    from nodes.restore import RestoreFaces, UpscaleImage

    for node in (UpscaleImage, RestoreFaces):
        choices, options = node.INPUT_TYPES()["optional"]["compile"]
        assert choices == ["auto", "on", "off"] and options["default"] == "auto"


# --------------------------------------------------------------------------- real compiles


SCRIPT = textwrap.dedent(
    """
    import json, math, sys, torch
    torch.set_num_threads(2)
    sys.path.insert(0, {tests!r})
    from conftest import load_shared_model
    from restorekit.compiled import compile_counters, cache_dir
    from restorekit.upscale import Upscaler

    model = load_shared_model("realesr-animevideov3")
    from skimage import data
    photo = torch.from_numpy(data.astronaut()[150:214, 180:250].copy()).permute(2, 0, 1)[None].float() / 255
    report = {{"cache": str(cache_dir())}}
    reference = Upscaler(model, device="cpu", precision="fp32", tile=48, compile="off").upscale(photo).pixels
    for precision in sys.argv[1].split(","):
        eager = Upscaler(model, device="cpu", precision=precision, tile=48, compile="off").upscale(photo).pixels
        upscaler = Upscaler(model, device="cpu", precision=precision, tile=48, compile="on")
        before = compile_counters()
        out = upscaler.upscale(photo)
        after = compile_counters()
        mse = torch.mean((out.pixels.double() - reference.double()) ** 2).item()
        report[precision] = {{
            "max_diff_vs_eager": (out.pixels - eager).abs().max().item(),
            "psnr_vs_fp32": 99.0 if mse == 0 else -10 * math.log10(mse),
            "windows": sum(s.calls for s in upscaler.runner.compiled.shapes.values()),
            "shapes": len(upscaler.runner.compiled.shapes),
            "compiled_shapes": upscaler.runner.compiled.compiles,
            **{{k: after[k] - before[k] for k in after}},
        }}
    print("REPORT " + json.dumps(report))
    """
)


def _run_script(home: Path, precisions: str) -> dict:
    env = {"RESTOREKIT_HOME": str(home), "PYTHONPATH": str(REPO_ROOT), "RESTOREKIT_SHARED": str(SHARED_WEIGHTS.parent)}
    env = {**{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TORCHINDUCTOR_CACHE_DIR")}, **env}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(tests=str(REPO_ROOT / "tests")), precisions],
        capture_output=True, text=True, env=env, timeout=1200, check=False,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1][len("REPORT ") :])


@pytest.mark.slow
def test_compiled_equals_eager_compiles_once_and_reuses_the_cache(tmp_path: Path):
    """Two processes on one model home: the first compiles cold (cache misses), the second
    loads the same graphs from the on-disk cache (hits, no misses). Tiles of one shape compile
    once; fp32 matches eager tightly, bf16 within the bf16 bar."""
    if not (SHARED_WEIGHTS / "realesr-animevideov3.safetensors").is_file():
        pytest.skip(f"realesr-animevideov3.safetensors not found in {SHARED_WEIGHTS} (only developers' checkouts have ../shared)")
    if compiled.compiler_problem(CPU) is not None:
        pytest.skip(f"no working C++ compiler here: {compiled.compiler_problem(CPU)}")
    home = tmp_path / "home"
    first = _run_script(home, "fp32,bf16")
    assert Path(first["cache"]) == home / ".restorekit" / "compile"
    for precision in ("fp32", "bf16"):
        run = first[precision]
        assert run["windows"] > 1 and run["shapes"] == 1  # feathered tiles: one window shape
        assert run["compiled_shapes"] == 1 and run["graphs"] == 1  # so one compile for all of them
        assert run["cache_misses"] == 1 and run["cache_hits"] == 0
    assert first["fp32"]["max_diff_vs_eager"] <= 1e-5
    assert first["bf16"]["max_diff_vs_eager"] <= 4 / 255 and first["bf16"]["psnr_vs_fp32"] >= 45.0
    assert (home / ".restorekit" / "compile" / compiled.COSTS_FILE).is_file()

    second = _run_script(home, "bf16")  # the default precision on this CPU class; fp32 works alike
    assert second["bf16"]["cache_hits"] == 1 and second["bf16"]["cache_misses"] == 0
    assert second["bf16"]["compiled_shapes"] == 1
    assert second["bf16"]["max_diff_vs_eager"] == pytest.approx(first["bf16"]["max_diff_vs_eager"], abs=1e-6)


def test_prepacked_forwards_compile_with_inductor_freezing_and_count_cold_costs(monkeypatch, own_cache):
    """torch.compile's ``options={"freezing": True}`` alone left compiled face restorers
    1.0-1.1x eager on an AVX2 CPU; with inductor's global ``freezing`` on during the call (and
    so during the compile it triggers) they ran 1.3-1.4x, but such graphs bypass the on-disk
    cache. A ``prepack`` forward sees the setting on in each compiled call (restored after),
    a plain one does not; ``auto`` counts a prepacked compile at its full cold cost."""
    import torch._inductor.config as inductor_config

    seen: list[bool] = []

    def fake_compile(target, **kwargs):
        assert kwargs.get("options", {}).get("freezing") is True and kwargs.get("dynamic") is False

        def run(x):
            seen.append(bool(inductor_config.freezing))
            return target(x)

        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(compiled, "compiler_problem", lambda device: None)
    before = inductor_config.freezing
    for prepack in (True, False):
        seen.clear()
        forward = CompiledForward(
            forward=lambda x: x + 1, target=lambda x: x + 1, mode="on", key="Fake|cpu|float32", layers=1, prepack=prepack
        )
        for _ in range(2):
            assert torch.equal(forward(torch.zeros(2)), torch.ones(2))
        assert seen == [prepack, prepack] and forward.compiles == 1
        assert inductor_config.freezing == before
    _write_costs(own_cache, {"cold": 100.0, "shapes": {"2": {"cold": 100.0}}})
    prepacked = CompiledForward(forward=lambda x: x, target=lambda x: x, mode="auto", key="Fake|cpu|float32", layers=1, prepack=True)
    plain = CompiledForward(forward=lambda x: x, target=lambda x: x, mode="auto", key="Fake|cpu|float32", layers=1)
    assert prepacked.estimate((2,)).compile_seconds == 100.0  # never served by the cache
    assert plain.estimate((2,)).compile_seconds == 100.0 * compiled.WARM_FRACTION


def test_a_dropped_model_is_freed_after_a_compiled_auto_job():
    """The process keeps compiled forwards per loaded model, and drops them with it: an fp32
    CPU plan runs the module as loaded, so a cache keyed by the module kept every model a
    server had ever used alive."""
    import gc
    import weakref

    from restorekit.upscale import Upscaler

    model = random_model("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2, "upscale": 2})
    module = weakref.ref(model.model)
    upscaler = Upscaler(model, device="cpu", precision="fp32", tile=32, compile="auto")
    assert upscaler.runner.compiled is not None
    assert Upscaler(model, device="cpu", precision="fp32", tile=32, compile="auto").runner.compiled is upscaler.runner.compiled
    upscaler.upscale(torch.rand(1, 3, 20, 20))
    del model, upscaler
    gc.collect()
    assert module() is None


def test_shared_forwards_are_built_once_per_owner_and_key_and_go_with_the_owner():
    """:func:`compiled.shared_forward` builds a forward once per (owner, key), a new one for
    another key or owner, and forgets an owner's forwards when the owner is gone."""
    import gc
    import weakref

    class Owner:  # a descriptor's stand-in: weak-referenceable
        pass

    built: list[str] = []

    def build(label: str):
        def make() -> CompiledForward:
            built.append(label)
            return CompiledForward(forward=torch.neg, target=torch.neg, mode="auto", key=label, layers=1, label=label)

        return make

    first, second = Owner(), Owner()
    forward = compiled.shared_forward(first, ("cpu", "fp32"), build("a"))
    assert compiled.shared_forward(first, ("cpu", "fp32"), build("b")) is forward
    assert compiled.shared_forward(first, ("cpu", "bf16"), build("c")) is not forward
    assert compiled.shared_forward(second, ("cpu", "fp32"), build("d")) is not forward
    assert built == ["a", "c", "d"]
    # at most MAX_SHARED_PER_OWNER keys per owner: the least recently used goes first
    assert compiled.MAX_SHARED_PER_OWNER == 4
    for precision in ("fp16", "int8"):
        compiled.shared_forward(first, ("cpu", precision), build(precision))
    assert compiled.shared_forward(first, ("cpu", "fp32"), build("fp32 again")) is forward  # used: kept
    compiled.shared_forward(first, ("cpu", "fp8"), build("fp8"))  # a fifth key: bf16 goes
    assert compiled.shared_forward(first, ("cpu", "fp32"), build("fp32 again")) is forward
    compiled.shared_forward(first, ("cpu", "bf16"), build("bf16 again"))
    assert built == ["a", "c", "d", "fp16", "int8", "fp8", "bf16 again"]
    forward_ref = weakref.ref(forward)
    del first, forward
    gc.collect()
    assert forward_ref() is None


@pytest.mark.slow
def test_group_norms_compile_to_atens_kernel_on_cpu(own_cache):
    """The face restorers' CPU compile target (:func:`compiled.with_aten_group_norms`) shares
    the network's parameters and leaves it unchanged; compiled with prepacked weights, as the
    face restorers compile, it calls ATen's group norm (not inductor's slow channels_last
    loops) and equals the eager network within 1e-5 in fp32."""
    if compiled.compiler_problem(CPU) is not None:
        pytest.skip(f"no working C++ compiler here: {compiled.compiler_problem(CPU)}")
    from torch import nn

    torch.manual_seed(0)
    network = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(8, 16), nn.SiLU(),
        nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.GroupNorm(4, 16, affine=False)),
    ).eval()
    target = compiled.with_aten_group_norms(network)
    assert isinstance(network[1], nn.GroupNorm) and isinstance(network[3][1], nn.GroupNorm)  # unchanged
    assert isinstance(target[1], compiled.AtenGroupNorm) and isinstance(target[3][1], compiled.AtenGroupNorm)
    assert [id(p) for p in target.parameters()] == [id(p) for p in network.parameters()]  # shared, not copied
    plain = nn.Sequential(nn.Conv2d(3, 4, 1))
    assert compiled.with_aten_group_norms(plain) is plain

    x = torch.rand(2, 3, 24, 24).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        eager = network(x)
        assert torch.equal(target(x), eager)
        forward = CompiledForward(forward=network, target=target, mode="on", key="group-norm-test", layers=2, prepack=True)
        forward(x)  # compiles
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            out = forward(x)
    assert forward.compiles == 1
    assert "restorekit::group_norm" in {event.name for event in profile.events()}
    assert float((out - eager).abs().max()) <= 1e-5
