"""The upscale engine's behaviour: sizes and scales, alpha, gray, bit depth, precision guard,
errors. Real weights (animevideov3) on real photos where it matters; tiny random models for
shape-only checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from restorekit.errors import ImageTooLargeError, InvalidParameterError, ModelIncompatibleError
from restorekit.imageio import (
    decode_image,
    encode_image,
    image_from_array,
    read_image,
    to_gray,
    write_image,
)
from restorekit.upscale import (
    Upscaler,
    fill_transparent,
    plan_steps,
    resize,
    target_size,
    upscale_image,
    upscale_tensor,
)

from conftest import psnr, random_model, to_tensor


@pytest.fixture(scope="module")
def tiny_x2():
    """SRVGGNetCompact x2 with 8 features and 2 convs: fast, shape-faithful."""
    return random_model("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2, "upscale": 2}, std=0.2)


# ----------------------------------------------------------------------------- sizes and steps


@pytest.mark.parametrize(
    ("size", "outscale", "expected"),
    [((37, 53), 2.5, (92, 132)), ((37, 53), 0.5, (18, 26)), ((10, 10), 3.3, (33, 33)), ((1, 1), 0.2, (1, 1))],
)
def test_target_size_rounds_to_exact_dimensions(size, outscale, expected):
    assert target_size(*size, scale=4, outscale=outscale) == expected


def test_target_size_width_or_height_keeps_aspect():
    assert target_size(100, 200, scale=4, out_width=300) == (150, 300)
    assert target_size(100, 200, scale=4, out_height=33) == (33, 66)
    assert target_size(100, 200, scale=4, out_width=7, out_height=5) == (5, 7)
    with pytest.raises(InvalidParameterError, match="either outscale"):
        target_size(100, 200, scale=4, outscale=2, out_width=3)
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(InvalidParameterError):
            target_size(10, 10, scale=4, outscale=bad)


def test_plan_steps_extra_passes_and_single_remainder_resize():
    assert [s.kind for s in plan_steps(10, 10, (40, 40), 4)] == ["model"]
    assert [(s.kind, s.size) for s in plan_steps(10, 10, (25, 25), 4)] == [("model", (40, 40)), ("resize", (25, 25))]
    # x8 with an x4 model: pass, shrink the intermediate to target/4, pass again
    assert [(s.kind, s.size) for s in plan_steps(10, 10, (80, 80), 4)] == [
        ("model", (40, 40)),
        ("resize", (20, 20)),
        ("model", (80, 80)),
    ]
    assert [(s.kind, s.size) for s in plan_steps(10, 10, (161, 161), 4)] == [
        ("model", (40, 40)),
        ("model", (160, 160)),
        ("resize", (41, 41)),
        ("model", (164, 164)),
        ("resize", (161, 161)),
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("shape", "kwargs", "expected"),
    [
        ((37, 53), {"outscale": 2.5}, (92, 132)),
        ((37, 53), {"outscale": 0.75}, (28, 40)),
        ((37, 53), {"outscale": 5.0}, (185, 265)),
        ((37, 53), {"width": 101, "height": 29}, (29, 101)),
        ((1, 1), {}, (2, 2)),
        ((3, 500), {}, (6, 1000)),
        ((1, 1), {"outscale": 7}, (7, 7)),
    ],
)
def test_exact_output_dimensions(tiny_x2, shape, kwargs, expected):
    image = torch.rand(1, 3, *shape, generator=torch.Generator().manual_seed(0))
    result = upscale_tensor(tiny_x2, image, tile=32, overlap=4, **kwargs)
    assert tuple(result.pixels.shape) == (1, 3, *expected)
    assert result.pixels.dtype == torch.float32 and result.pixels.device.type == "cpu"
    assert result.pixels.min() >= 0.0 and result.pixels.max() <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(1, 1), (3, 500), (500, 3), (2, 2), (7, 13)])
def test_tiny_and_odd_sizes_with_real_weights(animevideov3, shape):
    image = torch.rand(1, 3, *shape, generator=torch.Generator().manual_seed(2))
    result = upscale_tensor(animevideov3, image, precision="fp32", tile=128)
    assert tuple(result.pixels.shape) == (1, 3, 4 * shape[0], 4 * shape[1])
    assert torch.isfinite(result.pixels).all()


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (3, 33)])
def test_tiny_and_odd_sizes_with_pixel_unshuffle_models(shape):
    for scale in (2, 1):
        model = random_model("RRDBNet", {"num_feat": 8, "num_block": 1, "num_grow_ch": 32, "scale": scale})
        result = upscale_tensor(model, torch.rand(1, 3, *shape), tile=16, overlap=2)
        assert tuple(result.pixels.shape) == (1, 3, scale * shape[0], scale * shape[1])


def test_remainder_resize_matches_pillow_lanczos():
    rng = np.random.default_rng(0)
    array = rng.random((31, 47)).astype(np.float32)
    for width, height in ((80, 61), (20, 11), (47, 100)):
        expected = np.asarray(Image.fromarray(array, mode="F").resize((width, height), Image.LANCZOS))
        ours = resize(torch.from_numpy(array)[None, None], (height, width), clamp=False)[0, 0].numpy()
        assert np.abs(ours - expected).max() < 1e-5


def test_fractional_scale_is_model_then_resize(animevideov3, chelsea):
    image = to_tensor(chelsea[100:150, 200:260])
    full = upscale_tensor(animevideov3, image, precision="fp32").pixels
    partial = upscale_tensor(animevideov3, image, precision="fp32", outscale=2.5).pixels
    assert partial.shape[-2:] == (125, 150)
    assert torch.allclose(partial, resize(full, (125, 150)), atol=1e-6)


def test_extra_passes_for_factors_above_the_model_scale(tiny_x2):
    image = torch.rand(1, 3, 9, 11, generator=torch.Generator().manual_seed(3))
    result = upscale_tensor(tiny_x2, image, outscale=5)
    assert result.passes == 3 and result.pixels.shape[-2:] == (45, 55)


def test_output_pixel_cap(tiny_x2, monkeypatch):
    monkeypatch.setenv("RESTOREKIT_MAX_PIXELS", "1000")
    with pytest.raises(ImageTooLargeError, match="RESTOREKIT_MAX_PIXELS"):
        upscale_tensor(tiny_x2, torch.rand(1, 3, 20, 20))


# ----------------------------------------------------------------------------- alpha


def _sprite(background: tuple[int, int, int]) -> np.ndarray:
    """A red disc with a soft edge on a fully transparent background of another colour."""
    yy, xx = np.mgrid[0:48, 0:56]
    distance = np.hypot(yy - 24, xx - 28)
    alpha = np.clip((16.0 - distance) / 2.0, 0.0, 1.0)
    rgba = np.zeros((48, 56, 4), np.uint8)
    rgba[..., :3] = background
    rgba[alpha > 0, :3] = (220, 30, 20)
    rgba[..., 3] = np.round(alpha * 255).astype(np.uint8)
    return rgba


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["model", "resize"])
def test_no_colour_bleed_from_fully_transparent_pixels(animevideov3, mode):
    green = image_from_array(_sprite((0, 255, 0)))
    black = image_from_array(_sprite((0, 0, 0)))
    out_green = upscale_image(animevideov3, green, alpha_mode=mode, precision="fp32")
    out_black = upscale_image(animevideov3, black, alpha_mode=mode, precision="fp32")
    visible = out_green.alpha[0, 0] > 0.02
    assert visible.sum() > 1000
    # the hidden colour does not matter at all: same output whatever it was
    assert torch.equal(out_green.pixels, out_black.pixels)
    assert out_green.pixels[0, 1][visible].max().item() < 0.25  # no green fringe
    assert out_green.pixels[0, 0][visible].min().item() > 0.6  # no dark fringe
    assert out_green.alpha.shape == (1, 1, 192, 224)


@pytest.mark.slow
def test_alpha_model_mode_runs_alpha_through_the_network(animevideov3):
    image = image_from_array(_sprite((0, 0, 0)))
    by_model = upscale_image(animevideov3, image, alpha_mode="model", precision="fp32").alpha
    by_resize = upscale_image(animevideov3, image, alpha_mode="resize", precision="fp32").alpha
    assert not torch.allclose(by_model, by_resize, atol=1e-3)
    assert psnr(by_model, by_resize) > 25.0


@pytest.mark.slow
def test_opaque_rgba_equals_rgb_path(animevideov3, coffee):
    rgb = coffee[50:100, 300:370]
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    for mode in ("model", "resize"):
        out_rgba = upscale_image(animevideov3, image_from_array(rgba), alpha_mode=mode)
        out_rgb = upscale_image(animevideov3, image_from_array(rgb))
        assert torch.equal(out_rgba.pixels, out_rgb.pixels)
        assert bool((out_rgba.alpha == 1).all())


def test_fill_transparent_keeps_visible_pixels_exactly():
    generator = torch.Generator().manual_seed(5)
    pixels = torch.rand(1, 3, 21, 17, generator=generator)
    alpha = (torch.rand(1, 1, 21, 17, generator=generator) > 0.6).float() * torch.rand(1, 1, 21, 17, generator=generator)
    filled = fill_transparent(pixels, alpha)
    visible = (alpha > 0).expand_as(pixels)
    assert torch.equal(filled[visible], pixels[visible])
    assert torch.isfinite(filled).all() and not torch.equal(filled, pixels)
    nothing = torch.zeros(1, 1, 21, 17)
    assert torch.equal(fill_transparent(pixels, nothing), pixels)


# ----------------------------------------------------------------------------- gray, bit depth


@pytest.mark.slow
def test_gray_runs_as_rgb_and_returns_gray(animevideov3, camera, tmp_path):
    gray = torch.from_numpy(camera[200:240, 200:250].astype(np.float32) / 255)[None, None]
    result = upscale_tensor(animevideov3, gray, precision="fp32")
    assert result.pixels.shape == (1, 1, 160, 200)
    rgb = upscale_tensor(animevideov3, gray.expand(-1, 3, -1, -1), precision="fp32").pixels
    assert torch.allclose(result.pixels, to_gray(rgb), atol=1e-6)  # RGB path, then BT.601 luma

    Image.fromarray(camera[200:240, 200:250]).save(tmp_path / "g.png")
    Image.fromarray(camera[200:240, 200:250]).convert("LA").save(tmp_path / "ga.png")
    for name, mode in (("g.png", "L"), ("ga.png", "LA")):
        image = read_image(tmp_path / name)
        write_image(upscale_image(animevideov3, image), tmp_path / f"out_{name}")
        with Image.open(tmp_path / f"out_{name}") as written:
            assert written.mode == mode and written.size == (200, 160)


def test_sixteen_bit_round_trip_keeps_depth_even_when_dark(animevideov3, chelsea, tmp_path):
    import cv2

    dark = (chelsea[100:140, 200:250].astype(np.uint16) * 20)  # max ~5100 of 65535: "looks 8-bit"
    cv2.imwrite(str(tmp_path / "dark16.png"), dark[:, :, ::-1])
    image = read_image(tmp_path / "dark16.png")
    assert image.bit_depth == 16
    out = upscale_image(animevideov3, image, precision="fp32")
    write_image(out, tmp_path / "up16.png")
    written = cv2.imread(str(tmp_path / "up16.png"), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint16 and written.shape == (160, 200, 3)
    assert written.max() < 8000  # still dark: values were not rescaled to 8 bits
    expected = np.round(out.pixels[0].permute(1, 2, 0).numpy() * 65535).astype(np.uint16)[:, :, ::-1]
    assert np.abs(written.astype(int) - expected.astype(int)).max() <= 1
    # and 16-bit precision survives: more than 256 distinct levels in a dark image
    assert len(np.unique(written)) > 256


def test_metadata_and_format_survive(animevideov3, tmp_path):
    rgb = np.zeros((20, 24, 3), np.uint8)
    rgb[:, :12] = 200
    data = encode_image(image_from_array(rgb), "jpeg", quality=90)
    image = decode_image(data)
    out = upscale_image(animevideov3, image)
    assert out.format == "jpeg" and out.bit_depth == 8 and out.pixels.shape[-2:] == (80, 96)


# ----------------------------------------------------------------------------- precision and errors


def test_nan_in_reduced_precision_is_redone_in_fp32(tiny_x2):
    upscaler = Upscaler(tiny_x2, precision="bf16", tile=0)
    original = upscaler.runner._run
    calls = []

    def poisoned(batch):
        out = original(batch)
        calls.append(out.dtype)
        if out.dtype == torch.bfloat16:
            out = out.clone()
            out[:, :, 0, 0] = float("nan")
        return out

    upscaler.runner._run = poisoned
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    result = upscaler.upscale(image)
    reference = upscale_tensor(tiny_x2, image, precision="fp32", tile=0).pixels
    assert calls == [torch.bfloat16]  # the fp32 redo uses its own runner
    assert result.fp32_fallbacks == 1
    assert torch.isfinite(result.pixels).all()
    assert torch.allclose(result.pixels, reference)


def test_black_output_from_a_lit_window_is_redone_in_fp32(tiny_x2):
    upscaler = Upscaler(tiny_x2, precision="bf16", tile=0)
    original = upscaler.runner._run
    upscaler.runner._run = lambda batch: original(batch) * 0
    result = upscaler.upscale(torch.full((1, 3, 8, 8), 0.5))
    assert result.fp32_fallbacks == 1 and result.pixels.max() > 0


def test_descriptor_is_never_modified(animevideov3):
    before = {k: v.clone() for k, v in animevideov3.model.state_dict().items()}
    upscale_tensor(animevideov3, torch.rand(1, 3, 8, 8), precision="bf16")
    after = animevideov3.model.state_dict()
    assert all(after[k].dtype == torch.float32 and torch.equal(after[k], v) for k, v in before.items())
    assert next(animevideov3.model.parameters()).is_contiguous()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"precision": "fp16"}, "fp16 is not supported on the CPU"),
        ({"precision": "fp64"}, "Unknown precision"),
        ({"device": "tpu"}, "Unknown device"),
        ({"tile": 8}, "too small"),
        ({"tile": "big"}, "Tile must be"),
        ({"overlap": -1}, "Overlap"),
        ({"layout": "grid"}, "Unknown tile layout"),
        ({"alpha_mode": "straight"}, "Unknown alpha mode"),
        ({"outscale": 0}, "outscale"),
        ({"batch": 0}, "Batch"),
    ],
)
def test_bad_parameters_raise_clear_errors(tiny_x2, kwargs, match):
    with pytest.raises(InvalidParameterError, match=match):
        upscale_tensor(tiny_x2, torch.rand(1, 3, 8, 8), **kwargs)


@pytest.mark.parametrize(
    "pixels",
    [torch.rand(3, 8, 8), torch.rand(1, 4, 8, 8), torch.zeros(1, 3, 0, 8), torch.zeros(1, 3, 8, 8, dtype=torch.uint8)],
)
def test_bad_pixels_raise_clear_errors(tiny_x2, pixels):
    with pytest.raises(InvalidParameterError):
        upscale_tensor(tiny_x2, pixels)


def test_alpha_shape_is_checked(tiny_x2):
    with pytest.raises(InvalidParameterError, match="alpha has shape"):
        upscale_tensor(tiny_x2, torch.rand(1, 3, 8, 8), alpha=torch.rand(1, 1, 8, 9))


def test_non_image_models_are_refused(tiny_x2):
    from types import SimpleNamespace

    face = SimpleNamespace(purpose="FaceSR", architecture=SimpleNamespace(name="GFPGAN"), model=torch.nn.Identity())
    with pytest.raises(ModelIncompatibleError, match="face restoration"):
        Upscaler(face)
    inpaint = SimpleNamespace(purpose="Inpainting", architecture=SimpleNamespace(name="LaMa"), model=torch.nn.Identity())
    with pytest.raises(ModelIncompatibleError, match="not an image-to-image model"):
        Upscaler(inpaint)


@pytest.mark.parametrize("scale", [4, 2, 1])
def test_rrdb_tail_in_strips_equals_the_plain_network(scale, monkeypatch):
    from restorekit.upscale import network

    model = random_model("RRDBNet", {"num_feat": 8, "num_block": 1, "num_grow_ch": 32, "scale": scale}, std=0.1)
    strips = network.StripTailForward.of(model.model)
    assert strips is not None and strips.shuffle == {4: 1, 2: 2, 1: 4}[scale]
    monkeypatch.setattr(network, "TAIL_STRIP_BYTES", 64 << 10)  # force many strips
    x = torch.rand(1, 3, 36, 44, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert torch.allclose(strips(x), model.model(x), atol=1e-6)
    assert network.StripTailForward.of(torch.nn.Conv2d(3, 3, 3)) is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [("auto", "auto"), ("", "auto"), (" AUTO ", "auto"), ("none", None), ("off", None), (0, None), ("0", None),
     (None, None), (256, 256), ("256", 256), (256.0, 256), ("384.0", 384), (16, 16)],
)
def test_parse_tile_is_the_one_reading_of_a_tile_setting(given: object, expected: object) -> None:
    from restorekit.upscale import parse_tile

    assert parse_tile(given) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("given", ["big", 8, "15", 100.5, True, [256]])
def test_parse_tile_refuses_with_the_accepted_forms(given: object) -> None:
    from restorekit.upscale import parse_tile

    with pytest.raises(InvalidParameterError, match=r"auto|16 px"):
        parse_tile(given)  # type: ignore[arg-type]


def test_auto_windows_for_x4plus_bf16_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU budget and the ESRGAN activation estimate (max(600, 64 + 9 s²) values a pixel,
    measured 606) run a 512² photo as one window, and split 1024² into six 363x528 windows
    that keep the 1024² -> 4096² job under 1.5 GB (bench/RESULTS_upscale.md)."""
    import spandrel

    import restorekit.upscale.engine as engine
    from restorekit.architectures import random_state_dict

    monkeypatch.setattr(engine, "free_memory_bytes", lambda device: 64 << 30)  # the budget, not the host, decides
    descriptor = spandrel.ModelLoader().load_from_state_dict(random_state_dict("RRDBNet"))
    upscaler = Upscaler(descriptor, precision="bf16", device="cpu", tile="auto")
    if upscaler.plan.dtype != torch.bfloat16:
        pytest.skip(f"this CPU runs bf16 as {upscaler.plan.dtype}")
    assert upscaler.traits.architecture == "ESRGAN" and upscaler.scale == 4
    assert upscaler._tile_side(512, 512) == (512, 512)
    assert upscaler._tile_side(1024, 1024) == (363, 528)


def test_auto_windows_for_x4plus_fp32_leave_room_for_the_float32_canvas(monkeypatch: pytest.MonkeyPatch) -> None:
    """An fp32 job blends into a float32 canvas, twice the bytes of a half-precision job's
    float16 one: the excess (96 MiB for a 4096² result) comes out of the CPU budget, so the
    1024² -> 4096² job needs what the bf16 one does (with the whole budget it peaked at
    1460-1490 MiB, bench/RESULTS_upscale.md). 512² keeps its windows, and a huge canvas never
    takes the budget below half."""
    import dataclasses

    import spandrel

    import restorekit.upscale.engine as engine
    from restorekit.architectures import random_state_dict

    monkeypatch.setattr(engine, "free_memory_bytes", lambda device: 64 << 30)  # the budget, not the host, decides
    descriptor = spandrel.ModelLoader().load_from_state_dict(random_state_dict("RRDBNet"))
    upscaler = Upscaler(descriptor, precision="fp32", device="cpu", tile="auto")
    assert upscaler.plan.dtype == torch.float32 and upscaler.scale == 4
    excess = upscaler._canvas_excess(1024, 1024)
    assert excess == 3 * 4096 * 4096 * 2
    height, width = upscaler._tile_side(1024, 1024)
    assert upscaler.traits.activation_bytes(height * width, torch.float32) <= engine.CPU_ACTIVATION_BUDGET - excess
    assert (height, width) == (231, 368)
    assert upscaler._tile_side(512, 512) == (192, 512)
    assert upscaler._activation_budget(canvas_excess=1 << 40) == engine.MIN_CPU_ACTIVATION_BUDGET
    whole = Upscaler(descriptor, precision="fp32", device="cpu", tile="auto")
    monkeypatch.setattr(whole, "_canvas_excess", lambda height, width: 0)  # the rule before
    assert whole._tile_side(1024, 1024) == (231, 528) and whole._tile_side(512, 512) == (192, 512)
    half = Upscaler(descriptor, precision="fp32", device="cpu", tile="auto")
    half.plan = dataclasses.replace(half.plan, dtype=torch.bfloat16)  # a float16 canvas
    assert half._canvas_excess(1024, 1024) == 0
