"""Fast execution paths equal the eager network on real weights.

- :class:`restorekit.upscale.rrdb.FusedRRDBTrunk` (RRDBNet without concatenations, oneDNN
  fused LeakyReLU and residuals): within 1e-5 of spandrel's module in fp32, and within the
  bf16 bar (>= 45 dB against fp32) in bf16.
"""

from __future__ import annotations

import pytest
import torch

from restorekit.device import plan_execution
from restorekit.upscale import Upscaler
from restorekit.upscale.network import NetworkRunner
from restorekit.upscale.rrdb import FusedRRDBTrunk, _plain_conv_add_into, _plain_conv_leaky

from conftest import load_shared_model, psnr, to_tensor

FP32_TOLERANCE = 1e-5


def _crop(photo, top: int, left: int, size: int) -> torch.Tensor:
    return to_tensor(photo[top : top + size, left : left + size])


def _runner(descriptor, precision: str, *, fused: bool) -> NetworkRunner:
    return NetworkRunner(descriptor, plan_execution("cpu", precision, fused=fused))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["RealESRGAN_x4plus", "RealESRGAN_x4plus_anime_6B"])
def test_fused_rrdb_equals_spandrel_in_fp32(name, astronaut):
    descriptor = load_shared_model(name)
    image = _crop(astronaut, 70, 190, 24)  # the face: edges, skin, hair
    fused = _runner(descriptor, "fp32", fused=True)
    eager = _runner(descriptor, "fp32", fused=False)
    assert fused.fused and not eager.fused
    with torch.no_grad():
        reference = descriptor.model(image).clamp(0, 1)  # spandrel's module, as loaded
    out = fused(image)
    assert out.shape == reference.shape == (1, 3, 96, 96)
    assert (out - reference).abs().max().item() <= FP32_TOLERANCE
    assert (eager(image) - reference).abs().max().item() <= FP32_TOLERANCE


@pytest.mark.slow
def test_fused_rrdb_plain_ops_equal_spandrel(x4plus, coffee):
    """The schedule other devices (CUDA, MPS) use: F.conv2d instead of oneDNN's fused ops."""
    network = x4plus.model
    trunk = FusedRRDBTrunk.of(network)
    assert trunk is not None
    trunk.conv_leaky, trunk.conv_add_into = _plain_conv_leaky, _plain_conv_add_into
    x = _crop(coffee, 100, 200, 16)
    with torch.no_grad():
        expected = network.model[1](network.model[0](x))
        got = trunk(x)
    assert (got - expected).abs().max().item() <= FP32_TOLERANCE * float(expected.abs().max())


@pytest.mark.slow
def test_fused_rrdb_bf16_keeps_quality(x4plus, chelsea):
    image = _crop(chelsea, 80, 160, 28)
    fp32 = _runner(x4plus, "fp32", fused=False)(image)
    fused = _runner(x4plus, "bf16", fused=True)
    assert fused.fused
    assert psnr(fused(image), fp32) >= 45.0


def test_bf16_trunk_uses_plain_convs_where_onednn_has_no_bf16(monkeypatch):
    """oneDNN's fused bf16 conv raises on AVX2-only CPUs ("bf16 path needs the cpu support
    avx_ne_convert or avx512bw..."): there the trunk runs PyTorch's own bf16 convs, and fp32
    keeps the fused ops."""
    from spandrel.architectures.ESRGAN.__arch.RRDB import RRDBNet

    import restorekit.upscale.rrdb as rrdb

    monkeypatch.setattr(rrdb, "cpu_has_fast_bf16", lambda: False)
    network = RRDBNet(num_blocks=1, scale=2).eval()
    assert FusedRRDBTrunk.of(network).fused
    trunk = FusedRRDBTrunk.of(network.to(torch.bfloat16))
    assert not trunk.fused and trunk.conv_leaky is _plain_conv_leaky
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    with torch.no_grad():
        expected = network.model[1](network.model[0](x)).float()
        got = trunk(x).float()
    assert (got - expected).abs().max().item() <= 0.02 * float(expected.abs().max())


@pytest.mark.slow
def test_fused_rrdb_upscaler_tiled_equals_eager(coffee):
    """Through the whole engine (pre-pad, tiles, strip tail): fused == eager in fp32."""
    anime = load_shared_model("RealESRGAN_x4plus_anime_6B")
    image = _crop(coffee, 150, 300, 36)
    results = []
    for fused in (True, False):
        upscaler = Upscaler(anime, precision="fp32", device="cpu", tile=32, overlap=8)
        upscaler.runner = _runner(anime, "fp32", fused=fused)
        results.append(upscaler.upscale(image).pixels)
    assert (results[0] - results[1]).abs().max().item() <= FP32_TOLERANCE


def test_other_rrdb_forms_run_as_spandrel_defines_them():
    """ESRGAN+ ('plus' dense blocks, no released weights here: random weights) is not fused."""
    from spandrel.architectures.ESRGAN.__arch.RRDB import RRDBNet

    module = RRDBNet(num_blocks=1, plus=True, scale=2).eval()
    assert FusedRRDBTrunk.of(module) is None
    plain = RRDBNet(num_blocks=1, scale=2).eval()
    assert FusedRRDBTrunk.of(plain) is not None


def test_fp32_cpu_runs_the_loaded_weights_without_a_channels_last_copy(x4plus, astronaut):
    """A CPU plan in the module's own dtype runs the module itself: oneDNN picks channels_last
    kernels from the activations, so a channels_last copy of the weights gives the same bits
    and only holds a second set of weights (67 MB for x4plus in fp32, for the whole job)."""
    import copy

    from restorekit.models import _to_channels_last

    runner = _runner(x4plus, "fp32", fused=True)
    assert runner.plan.channels_last and runner._network is x4plus.model
    assert x4plus.model.model[0].weight.is_contiguous()  # the shared module is not modified
    channels_last = copy.deepcopy(x4plus)
    _to_channels_last(channels_last.model)
    assert channels_last.model.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    image = _crop(astronaut, 70, 190, 24)
    assert torch.equal(runner(image), _runner(channels_last, "fp32", fused=True)(image))
    assert torch.equal(_runner(x4plus, "fp32", fused=False)(image), _runner(channels_last, "fp32", fused=False)(image))
