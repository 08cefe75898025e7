"""ComfyUI node contracts, conversions, validation and interop with core's UPSCALE_MODEL."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from nodes.base import input_specs
from nodes.convert import (
    NodeInputError,
    alpha_to_mask,
    image_to_pixels,
    mask_to_alpha,
    pixels_to_image,
)
from nodes.models import DOWNLOAD_MARK, canonical_choice, choice_name, model_choices
from nodes.restore import RestoreFaces, UpscaleImage
from nodes.synthesis import CompareImages, DegradeImage, InterpolateModels, ZeroShotUpscale

ROOT = Path(__file__).resolve().parent.parent
NUMBER_TYPES = ("INT", "FLOAT")


@pytest.mark.parametrize("key", sorted(NODE_CLASS_MAPPINGS))
def test_node_contract(key: str) -> None:
    cls = NODE_CLASS_MAPPINGS[key]
    assert key in NODE_DISPLAY_NAME_MAPPINGS
    assert cls.CATEGORY.startswith("RestoreKit/")
    assert callable(getattr(cls, cls.FUNCTION))
    assert cls.DESCRIPTION
    assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)
    types = cls.INPUT_TYPES()
    assert set(types) <= {"required", "optional"} and types["required"]
    for name, spec in input_specs(cls).items():
        options = spec[1]
        assert options.get("tooltip"), f"{key}.{name} has no tooltip"
        if spec[0] in NUMBER_TYPES:
            for field in ("min", "max", "step") if name != "seed" else ("min", "max"):
                assert field in options, f"{key}.{name} has no {field}"
            assert options["min"] <= options["default"] <= options["max"]
            below = options["min"] - (1 if spec[0] == "INT" else 0.5)
            message = cls.VALIDATE_INPUTS(**{name: below})
            assert isinstance(message, str) and name in message and "minimum" in message
        if isinstance(spec[0], list):
            assert options.get("default", spec[0][0]) in spec[0]
            message = cls.VALIDATE_INPUTS(**{name: "no such choice"})
            assert isinstance(message, str) and "not one of the choices" in message
    defaults = {n: s[1]["default"] for n, s in input_specs(cls).items() if "default" in s[1]}
    assert cls.VALIDATE_INPUTS(**defaults) is True


def test_pack_imports_the_way_comfyui_loads_it() -> None:
    """ComfyUI imports custom_nodes/<folder>/__init__.py under the folder's name, which need
    not be an identifier, without the folder on sys.path and without ComfyUI here."""
    name = "RestoreKit-main"
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        assert set(module.NODE_CLASS_MAPPINGS) == set(NODE_CLASS_MAPPINGS)
        assert module.NODE_DISPLAY_NAME_MAPPINGS["RestoreKitUpscaleImage"] == "Upscale Image (RestoreKit)"
        assert "folder_paths" not in sys.modules
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]


def test_image_conversions_round_trip_and_never_touch_the_input() -> None:
    image = torch.rand(2, 5, 7, 4)
    before = image.clone()
    pixels, alpha = image_to_pixels(image)
    assert pixels.shape == (2, 3, 5, 7) and alpha.shape == (2, 1, 5, 7)
    assert torch.equal(pixels_to_image(pixels), image[..., :3])
    assert torch.equal(image, before)
    gray = torch.rand(1, 4, 4, 1)
    assert torch.equal(image_to_pixels(gray)[0], gray.permute(0, 3, 1, 2).expand(-1, 3, -1, -1))
    with pytest.raises(NodeInputError, match="batch, height, width"):
        image_to_pixels(torch.rand(4, 4, 3))


def test_masks_follow_loadimage_convention() -> None:
    mask = torch.zeros(1, 6, 8)
    mask[:, :, :4] = 1.0  # left half transparent, as LoadImage gives 1 - alpha
    alpha = mask_to_alpha(mask, 1, 6, 8)
    assert torch.equal(alpha[0, 0], 1.0 - mask[0])
    assert torch.equal(alpha_to_mask(alpha, 1, 6, 8), mask)
    assert mask_to_alpha(torch.zeros(1, 64, 64), 1, 6, 8) is None  # LoadImage's "no alpha" placeholder
    with pytest.raises(NodeInputError, match="connect the mask"):
        mask_to_alpha(torch.ones(1, 5, 5), 1, 6, 8)


def test_model_dropdown_marks_missing_registry_models(isolated_home: Path, shared_weights: Path) -> None:
    from restorekit.registry.download import target_path
    from restorekit.registry.schema import load_registry

    assert "RealESRGAN_x4plus" + DOWNLOAD_MARK in model_choices("upscale")
    target = target_path(load_registry().get("RealESRGAN_x4plus"))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(shared_weights / "RealESRGAN_x4plus.safetensors")
    choices = model_choices("upscale")
    assert "RealESRGAN_x4plus" in choices and "realesr-animevideov3" + DOWNLOAD_MARK in choices
    # saved workflows hold either form; both validate and name the same model
    assert canonical_choice("realesr-animevideov3", "upscale") == "realesr-animevideov3" + DOWNLOAD_MARK
    assert choice_name("realesr-animevideov3" + DOWNLOAD_MARK) == "realesr-animevideov3"
    loader = NODE_CLASS_MAPPINGS["RestoreKitLoadUpscaleModel"]
    assert loader.VALIDATE_INPUTS(model_name="RealESRGAN_x4plus" + DOWNLOAD_MARK) is True
    assert loader.VALIDATE_INPUTS(model_name="realesr-animevideov3") is True
    assert "not one of the choices" in loader.VALIDATE_INPUTS(model_name="NoSuchModel")


def test_degrade_validation_names_bad_overrides() -> None:
    message = DegradeImage.VALIDATE_INPUTS(overrides="no_such_field=3")
    assert isinstance(message, str) and message.startswith("overrides:") and "no_such_field" in message
    assert DegradeImage.VALIDATE_INPUTS(overrides="jpeg_range=30,60") is True


def test_degrade_node_is_seeded_and_matches_the_engine(astronaut: np.ndarray) -> None:
    from restorekit.degrade import degrade

    image = torch.from_numpy(astronaut[:64, :96].astype(np.float32) / 255.0)[None]
    before = image.clone()
    lr, params = DegradeImage().degrade(image, "realesrgan", 4.0, 7, "jpeg_range=40,40")
    assert lr.shape == (1, 16, 24, 3) and torch.equal(image, before)
    reference = degrade(image.permute(0, 3, 1, 2), "realesrgan", scale=4, seed=7, overrides=["jpeg_range=40,40"])
    assert torch.equal(lr, reference.lr.permute(0, 2, 3, 1))
    assert '"seed"' in params and params == reference.params_json()


def _animevideov3(shared_weights: Path):
    from spandrel import ModelLoader

    return ModelLoader().load_from_file(str(shared_weights / "realesr-animevideov3.safetensors")).eval()


def test_plain_spandrel_descriptor_runs_through_our_upscale_node(shared_weights: Path, coffee: np.ndarray) -> None:
    """What ComfyUI's core loader outputs (a spandrel descriptor) works in our node, with
    exact tiling for this compact model and exact output sizes."""
    descriptor = _animevideov3(shared_weights)
    image = torch.from_numpy(coffee[100:160, 200:280].astype(np.float32) / 255.0)[None]
    node = UpscaleImage()
    whole, mask = node.upscale(image, descriptor, 0.0, 0, 0, "none", "fp32", "model")
    tiled, _ = node.upscale(image, descriptor, 0.0, 0, 0, "128", "fp32", "model")
    assert whole.shape == (1, 240, 320, 3) and mask.shape == (1, 240, 320) and not mask.any()
    assert (whole - tiled).abs().max() < 1e-4
    sized, _ = node.upscale(image, descriptor, 0.0, 101, 0, "auto", "fp32", "model")
    assert sized.shape == (1, 76, 101, 3)  # width only: aspect kept (60 * 101 / 80 = 75.75)


def test_our_upscale_model_runs_through_core_usage_pattern(shared_weights: Path, coffee: np.ndarray, isolated_home: Path) -> None:
    """Core's ImageUpscaleWithModel: model.to(device), IMAGE.movedim(-1, -3), call the
    descriptor on (B, C, H, W), movedim back. Our loader's output must behave as core's."""
    from restorekit.registry.download import target_path
    from restorekit.registry.schema import load_registry

    target = target_path(load_registry().get("realesr-animevideov3"))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(shared_weights / "realesr-animevideov3.safetensors")
    (ours,) = NODE_CLASS_MAPPINGS["RestoreKitLoadUpscaleModel"]().load("realesr-animevideov3")
    image = torch.from_numpy(coffee[100:164, 200:264].astype(np.float32) / 255.0)[None]
    ours.to("cpu")
    with torch.inference_mode():
        core = torch.clamp(ours(image.movedim(-1, -3)).movedim(-3, -1), 0, 1)
    assert ours.scale == 4 and core.shape == (1, 256, 256, 3)
    node_out, _ = UpscaleImage().upscale(image, ours, 0.0, 0, 0, "none", "fp32", "model")
    # our engine reflect-pads the border (core sees zero padding there): compare the interior
    inner = (slice(None), slice(80, -80), slice(80, -80))
    assert (node_out[inner] - core[inner]).abs().max() < 1e-4
    reference = _animevideov3(shared_weights)
    with torch.inference_mode():
        assert torch.allclose(reference(image.movedim(-1, -3)), ours(image.movedim(-1, -3)), atol=1e-6)


def test_upscale_node_keeps_alpha_from_loadimage_mask(shared_weights: Path) -> None:
    descriptor = _animevideov3(shared_weights)
    image = torch.rand(1, 24, 20, 3, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 24, 20)
    mask[:, :, 10:] = 1.0
    out, out_mask = UpscaleImage().upscale(image, descriptor, 2.0, 0, 0, "auto", "fp32", "resize", mask=mask)
    assert out.shape == (1, 48, 40, 3) and out_mask.shape == (1, 48, 40)
    assert out_mask[:, :, :16].max() < 0.05 and out_mask[:, :, 24:].min() > 0.95


def test_interpolate_node_blends_weights(shared_weights: Path) -> None:
    a = _animevideov3(shared_weights)
    b = _animevideov3(shared_weights)
    with torch.no_grad():
        for parameter in b.model.parameters():
            parameter.mul_(0.5)
    (blend,) = InterpolateModels().blend(a, b, 0.5)
    key = next(iter(a.model.state_dict()))
    expected = 0.75 * a.model.state_dict()[key]
    assert torch.allclose(blend.model.state_dict()[key], expected, atol=1e-6)
    assert blend.scale == 4


def test_compare_node_modes() -> None:
    a = torch.full((1, 8, 10, 3), 0.5)
    b = torch.full((1, 4, 5, 3), 0.25)
    side, report = CompareImages().compare(a, b, "side_by_side", 4.0)
    assert side.shape == (1, 8, 20, 3) and torch.allclose(side[:, :, 10:], torch.full((1, 8, 10, 3), 0.25))
    diff, _ = CompareImages().compare(a, b, "difference", 2.0)
    assert torch.allclose(diff, torch.full_like(a, 0.5))
    split, _ = CompareImages().compare(a, b, "split", 1.0)
    assert torch.allclose(split[:, :, :5], a[:, :, :5]) and torch.allclose(split[:, :, 5:], torch.full((1, 8, 5, 3), 0.25))
    assert "PSNR 12.04 dB" in report


def test_zero_shot_node_matches_the_engine(coffee: np.ndarray) -> None:
    from restorekit.zssr import ZSSRConfig, zssr_upscale

    image = torch.from_numpy(coffee[200:232, 300:340].astype(np.float32) / 255.0)[None]
    out, kernel, notice = ZeroShotUpscale().upscale(image, 2.0, 20, 0.0, 3, "fp32")
    reference = zssr_upscale(image.permute(0, 3, 1, 2), 2.0, ZSSRConfig(iterations=20, seed=3, precision="fp32"))
    assert out.shape == (1, 64, 80, 3)
    assert torch.allclose(out, reference.permute(0, 2, 3, 1), atol=1e-6)
    assert kernel.shape == (1, 256, 256, 3) and float(kernel.max()) == 0.0  # bicubic: no estimated kernel
    assert isinstance(notice, str)


def test_engine_errors_reach_the_node_as_clear_messages(shared_weights: Path) -> None:
    descriptor = _animevideov3(shared_weights)
    with pytest.raises(NodeInputError, match="Tile size 7 is too small"):
        UpscaleImage().upscale(torch.rand(1, 8, 8, 3), descriptor, 0.0, 0, 0, "7", "fp32", "model")
    message = RestoreFaces.VALIDATE_INPUTS(strength=1.5)
    assert isinstance(message, str) and "strength" in message and "maximum" in message


def test_interrupt_stops_a_node_as_a_cancel_not_an_input_error(shared_weights: Path) -> None:
    """ComfyUI's interrupt (here the adapter's fallback flag) stops the engine between
    tiles and surfaces as a cancel, which ComfyUI treats as a user interrupt."""
    from nodes import comfy
    from restorekit.errors import CancelledError

    descriptor = _animevideov3(shared_weights)
    comfy.request_interrupt()
    try:
        with pytest.raises(CancelledError):
            UpscaleImage().upscale(torch.rand(1, 64, 64, 3), descriptor, 0.0, 0, 0, "32", "fp32", "model")
    finally:
        comfy.clear_interrupt()
