"""Numerical parity with the reference implementation (Real-ESRGAN's RealESRGANer, basicsr).

The reference packages are imported through tests/reference_shim.py (basicsr 1.4.2 needs the
removed ``torchvision.transforms.functional_tensor``); these tests skip when they are absent.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from restorekit.upscale import Upscaler, upscale_tensor

from conftest import shared_weight_path, to_tensor


def _reference_network(name: str):
    from safetensors.torch import load_file

    shim = pytest.importorskip("reference_shim")
    try:
        if name == "RealESRGAN_x4plus":
            arch = shim.import_reference("basicsr.archs.rrdbnet_arch")
            net = arch.RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=4)
        else:
            arch = shim.import_reference("realesrgan.archs.srvgg_arch")
            net = arch.SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4, act_type="prelu")
    except ImportError as exc:
        pytest.skip(f"reference implementation not importable: {exc}")
    net.load_state_dict(load_file(str(shared_weight_path(name))), strict=True)
    return shim, net.eval()


def _official(shim, net, image: np.ndarray, *, tile: int) -> torch.Tensor:
    """RealESRGANer's own pre-pad, tile and post-process steps, in float (before 8-bit)."""
    upsampler = shim.official_upsampler(net, 4, tile=tile, tile_pad=10, pre_pad=10)
    with torch.no_grad():
        upsampler.pre_process(image)
        if tile:
            upsampler.tile_process()
        else:
            upsampler.process()
        return upsampler.post_process().clamp(0, 1)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "crop", "tile"), [("realesr-animevideov3", 70, 40), ("RealESRGAN_x4plus", 36, 24)])
def test_official_numerics_same_tiles_fp32(name, crop, tile, coffee, animevideov3, x4plus, capsys):
    """Same weights, same settings (pre_pad 10, tile_pad 10, hard-pasted tiles): within 1e-5."""
    shim, net = _reference_network(name)
    photo = coffee[40 : 40 + crop, 200 : 200 + crop + 17]  # not square, not a multiple of the tile
    reference = _official(shim, net, photo.astype(np.float32) / 255.0, tile=tile)
    model = animevideov3 if name == "realesr-animevideov3" else x4plus
    ours = upscale_tensor(model, to_tensor(photo), precision="fp32", tile=tile, overlap=10, layout="official")
    assert ours.pixels.shape == reference.shape
    assert (ours.pixels - reference).abs().max().item() < 1e-5
    capsys.readouterr()  # RealESRGANer prints one line per tile


@pytest.mark.slow
def test_x4plus_golden_against_independent_whole_image_reference(astronaut):
    """Default engine settings (auto precision aside) on a real photo vs the basicsr network run
    on the whole image (no pre-pad: the feather default): equal at 8 bits within one level."""
    _shim, net = _reference_network("RealESRGAN_x4plus")
    from conftest import load_shared_model

    model = load_shared_model("RealESRGAN_x4plus")
    image = to_tensor(astronaut[60:100, 210:250])  # 40x40 around an eye
    with torch.no_grad():
        reference = net(image).clamp(0, 1)
    result = Upscaler(model, precision="fp32").upscale(image)
    assert result.pixels.shape == (1, 3, 160, 160)
    golden = (reference * 255).round()
    ours = (result.pixels * 255).round()
    assert (ours - golden).abs().max().item() <= 1.0


def test_auto_precision_stays_above_45_db_against_fp32(animevideov3, chelsea):
    image = to_tensor(chelsea[60:140, 150:250])
    fp32 = upscale_tensor(animevideov3, image, precision="fp32").pixels
    auto = upscale_tensor(animevideov3, image, precision="auto")
    from conftest import psnr

    assert psnr(auto.pixels, fp32) >= 45.0
