"""int8 execution (restorekit.upscale.int8): the quality gate refuses a model that fails it,
with the measured numbers; the gate result and calibration are cached on disk and reused; on
real RealESRGAN_x4plus weights the int8 network is within its gate of fp32 on real photos.

The crafted models are tiny SRVGGNetCompact networks (x2, 8 features, 2 body convs) built
through spandrel: one well-behaved, one with a single 300x louder feature channel, the
textbook case that per-tensor 8-bit activations cannot hold (the photo's own channels fall
below one quantisation step).
"""

from __future__ import annotations

import pytest
import torch
from skimage.color import rgb2lab

from restorekit.compare import lowpass_lab_difference, rgb_to_lab
from restorekit.device import INT8, PRECISIONS, UPSCALE_PRECISIONS, plan_execution
from restorekit.errors import InvalidParameterError, ModelIncompatibleError
from restorekit.upscale import Upscaler
from restorekit.upscale import int8 as int8_module

from conftest import load_shared_model, psnr, to_tensor

FEATURES = 8


def _crafted_compact(outlier_gain: float = 0.0):
    """A spandrel descriptor of SRVGGNetCompact(3 -> 3, 8 features, 2 body convs, x2).

    Channels 0-2 carry the image through every conv (centre taps of 1), the others small
    fixed noise; the last conv adds 0.1 x the carried image to the nearest-upsampled base.
    ``outlier_gain`` > 0 adds a feature channel with ``gain`` x the image's sum.
    """
    import spandrel

    generator = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {}
    first = torch.randn(FEATURES, 3, 3, 3, generator=generator) * 0.02
    for c in range(3):
        first[c, c, 1, 1] = 1.0
    if outlier_gain:
        first[3, :, 1, 1] = outlier_gain
    state["body.0.weight"], state["body.0.bias"] = first, torch.zeros(FEATURES)
    for index in (2, 4):
        weight = torch.randn(FEATURES, FEATURES, 3, 3, generator=generator) * 0.02
        for c in range(FEATURES):
            weight[c, c, 1, 1] = 1.0
        state[f"body.{index}.weight"], state[f"body.{index}.bias"] = weight, torch.zeros(FEATURES)
    for index in (1, 3, 5):
        state[f"body.{index}.weight"] = torch.full((FEATURES,), 0.25)
    last = torch.zeros(12, FEATURES, 3, 3)
    for out_channel in range(12):
        last[out_channel, out_channel // 4, 1, 1] = 0.1
    state["body.6.weight"], state["body.6.bias"] = last, torch.zeros(12)
    descriptor = spandrel.ModelLoader().load_from_state_dict(state).eval()
    assert descriptor.scale == 2 and descriptor.architecture.id == "Compact"
    return descriptor


@pytest.fixture
def fresh_int8(isolated_home, monkeypatch):
    """An empty model home, and no int8 networks built in this process."""
    monkeypatch.setattr(int8_module, "_built", type(int8_module._built)())
    return isolated_home


def test_lab_matches_scikit_image(chelsea):
    image = to_tensor(chelsea[:64, :96])
    ours = rgb_to_lab(image)[0].permute(1, 2, 0).numpy()
    assert abs(ours - rgb2lab(chelsea[:64, :96])).max() < 2e-3
    shifted = (image + torch.tensor([0.03, 0.0, -0.03]).view(1, 3, 1, 1)).clamp(0, 1)
    assert lowpass_lab_difference(image, image) == 0.0
    assert 1.0 < lowpass_lab_difference(shifted, image) < 10.0


def test_int8_is_an_upscale_precision_on_the_cpu_only():
    assert INT8 in UPSCALE_PRECISIONS and INT8 not in PRECISIONS
    plan = plan_execution("cpu", "int8", allow_int8=True)
    assert plan.int8 and plan.precision == "int8" and plan.dtype == torch.float32
    with pytest.raises(InvalidParameterError, match="upscale networks only"):
        plan_execution("cpu", "int8")  # faces, ZSSR, training: no int8
    assert not plan_execution("cpu", "auto", allow_int8=True).int8  # auto never picks int8
    if not torch.cuda.is_available():
        with pytest.raises(InvalidParameterError):
            plan_execution("cuda", "int8", allow_int8=True)


@pytest.mark.slow  # FX prepare/convert and calibration: a few seconds of CPU
def test_int8_refuses_a_model_that_fails_the_gate_and_says_why(fresh_int8):
    descriptor = _crafted_compact(outlier_gain=300.0)
    with pytest.raises(ModelIncompatibleError) as error:
        Upscaler(descriptor, precision="int8", device="cpu")
    message = str(error.value)
    assert "int8 is not offered" in message and "dB PSNR" in message and "ΔE" in message
    assert "bf16" in message
    gate, forward = int8_module.gate_for(descriptor.model, plan_execution("cpu", "int8", allow_int8=True))
    assert forward is None and not gate.passed and gate.psnr_db < int8_module.MIN_PSNR_DB
    assert f"{gate.psnr_db:.1f} dB" in message
    # the same model runs in bf16 and fp32 as before
    assert Upscaler(descriptor, precision="fp32", device="cpu").plan.precision == "fp32"


@pytest.mark.slow  # FX prepare/convert and calibration: a few seconds of CPU
def test_gate_result_and_calibration_are_cached_and_reused(fresh_int8, monkeypatch, coffee):
    plan = plan_execution("cpu", "int8", allow_int8=True)
    good, bad = _crafted_compact(), _crafted_compact(outlier_gain=300.0)
    good_gate, good_forward = int8_module.gate_for(good.model, plan)
    bad_gate, _ = int8_module.gate_for(bad.model, plan)
    assert good_gate.passed and good_forward is not None and not bad_gate.passed
    cached = sorted(p.name for p in int8_module.cache_dir().iterdir())
    assert len(cached) == 4 and all(torch.__version__.split("+")[0] in name for name in cached)
    assert any(name.startswith(good_gate.weights_sha256[:32]) and name.endswith(".safetensors") for name in cached)

    image = to_tensor(coffee[100:140, 200:248])
    with torch.no_grad():
        first = good_forward(image)

    # a new process: nothing built in memory; measuring or calibrating again would fail
    monkeypatch.setattr(int8_module, "_built", type(int8_module._built)())

    def no_measuring(*args, **kwargs):
        raise AssertionError("the gate was measured again instead of read from the cache")

    monkeypatch.setattr(int8_module, "measure_gate", no_measuring)
    monkeypatch.setattr(int8_module, "calibration_photos", lambda: [int8_module._photo(int8_module.CALIBRATION_IMAGES[0])])
    again, forward = int8_module.gate_for(good.model, plan)
    assert again == good_gate and forward is not None
    with torch.no_grad():
        assert torch.equal(forward(image), first)  # the cached calibration, not a new one
    with pytest.raises(ModelIncompatibleError, match=f"{bad_gate.psnr_db:.1f} dB"):
        Upscaler(bad, precision="int8", device="cpu")

    # other weights are another key: a different torch version or recipe is never reused
    assert int8_module.load_cached_gate("0" * 64) is None


@pytest.mark.slow  # FX prepare/convert and calibration: a few seconds of CPU
def test_cli_int8_one_line_refusal_and_a_passing_model_runs(fresh_int8, tmp_path, capsys, coffee):
    from PIL import Image
    from safetensors.torch import save_file

    from restorekit.cli import main

    photo = tmp_path / "in.png"
    Image.fromarray(coffee[100:132, 200:240]).save(photo)
    models = {}
    for name, gain in (("good", 0.0), ("bad", 300.0)):
        models[name] = tmp_path / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in _crafted_compact(gain).model.state_dict().items()}, str(models[name]))
    code = main(["upscale", str(photo), "-o", str(tmp_path / "bad.png"), "--model", str(models["bad"]), "--precision", "int8"])
    err = capsys.readouterr().err
    assert code == 1 and "int8 is not offered" in err and "bf16" in err
    assert not (tmp_path / "bad.png").exists()
    code = main(["upscale", str(photo), "-o", str(tmp_path / "good.png"), "--model", str(models["good"]), "--precision", "int8", "-q"])
    assert code == 0 and Image.open(tmp_path / "good.png").size == (80, 64)


UNGATED_MIN_PSNR_DB = 36.0
"""realesr-animevideov3's int8 network against fp32 on an unseen photo (measured 40.3 dB and
0.92 ΔE on the gate photos, so it is refused); a broken int8 path (the quantized-PReLU
defect this module works around gave 17 dB) falls far below this."""


@pytest.mark.slow
def test_real_weights_int8_is_measured_refused_with_its_numbers_and_within_tolerance(fresh_int8, astronaut):
    """realesr-animevideov3 (real weights): the gate measures it below the colour-shift bar,
    so int8 is refused with those numbers; the int8 network itself (ungated, as the benchmark
    runs it) stays within its stated tolerance of fp32 on an unseen photo."""
    from restorekit.upscale.network import NetworkRunner

    descriptor = load_shared_model("realesr-animevideov3")
    plan = plan_execution("cpu", "int8", allow_int8=True)
    gate, forward = int8_module.gate_for(descriptor.model, plan)
    print(f"animevideov3 int8 gate: {gate}")
    assert gate.psnr_db >= UNGATED_MIN_PSNR_DB
    assert gate.passed == (gate.psnr_db >= int8_module.MIN_PSNR_DB and gate.lab_difference <= int8_module.MAX_LAB_DIFFERENCE)
    if not gate.passed:
        assert forward is None
        with pytest.raises(ModelIncompatibleError, match=f"{gate.psnr_db:.1f} dB PSNR and a colour shift of {gate.lab_difference:.2f}"):
            Upscaler(descriptor, precision="int8", device="cpu")
    image = to_tensor(astronaut[40:88, 180:228])  # the face: not a calibration or gate photo
    runner = NetworkRunner(descriptor, plan, int8_gate=False)
    fp32 = NetworkRunner(descriptor, plan_execution("cpu", "fp32"))
    got, expected = runner(image), fp32(image)
    assert got.shape == expected.shape == (1, 3, 192, 192)
    quality = psnr(expected, got)
    print(f"animevideov3 int8 on an unseen photo: {quality:.2f} dB, {lowpass_lab_difference(got, expected):.3f} ΔE against fp32")
    assert quality >= UNGATED_MIN_PSNR_DB


@pytest.mark.parametrize(("amx", "first"), [(True, "onednn"), (False, "fbgemm")])
def test_the_quantized_engine_follows_the_cpu(monkeypatch, amx, first):
    """AMX-INT8 is used only by oneDNN (fbgemm ran x4plus int8 at 0.36x bf16 on the AMX Xeon,
    oneDNN at 0.92x), so AMX CPUs prefer it; others keep fbgemm's VNNI kernels first."""
    from restorekit.upscale import int8

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert int8.preferred_engines()[0] == first
    before = torch.backends.quantized.engine
    if first in torch.backends.quantized.supported_engines:
        with int8.quantized_engine() as engine:
            assert engine == first == torch.backends.quantized.engine
    assert torch.backends.quantized.engine == before
