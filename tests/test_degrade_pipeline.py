"""The seeded, batched degradation pipeline: sizes, determinism, independence, parity, pairs."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from restorekit.degrade import (
    DegradationPlan,
    apply_plans,
    degrade,
    get_preset,
    kernels_image,
    make_pairs,
    replay,
    sample_plan,
    sample_plans,
    usm_sharpen,
)
from restorekit.degrade.kernels import blur_kernel, sinc_kernel
from restorekit.degrade.pipeline import BlurPlan, FinalPlan, ResizePlan, SharpenPlan, StagePlan
from restorekit.errors import CancelledError, InvalidParameterError

import degrade_reference as ref
from conftest import to_tensor


@pytest.fixture(scope="module")
def crops(astronaut, coffee, chelsea) -> torch.Tensor:
    """Three real 128x128 crops (face, cup, cat)."""
    return torch.cat(
        [
            to_tensor(astronaut)[..., 60:188, 190:318],
            to_tensor(coffee)[..., 150:278, 220:348],
            to_tensor(chelsea)[..., 60:188, 150:278],
        ]
    )


# --------------------------------------------------------------------------- sizes


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["realesrgan", "classic", "bicubic", "light"])
@pytest.mark.parametrize(("height", "width", "scale"), [(128, 128, 4), (97, 130, 4), (64, 48, 2), (90, 75, 3), (50, 40, 1), (101, 77, 2.5)])
def test_output_size_is_input_size_divided_by_scale(crops, preset: str, height: int, width: int, scale: float) -> None:
    images = crops[:2, :, :height, :width]
    result = degrade(images, preset, scale=scale, seed=3)
    assert result.lr.shape == (2, 3, int(height // scale), int(width // scale))
    assert result.lr.dtype == torch.float32
    assert result.lr.min() >= 0.0 and result.lr.max() <= 1.0
    levels = result.lr * 255.0
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)  # 8-bit levels


# --------------------------------------------------------------------------- seeds


@pytest.mark.slow
def test_same_seed_and_input_give_bitwise_the_same_output(crops) -> None:
    first = degrade(crops, "realesrgan", seed=1234)
    second = degrade(crops, "realesrgan", seed=1234)
    assert torch.equal(first.lr, second.lr)
    assert first.params == second.params


@pytest.mark.slow
def test_different_seeds_give_different_outputs(crops) -> None:
    outputs = [degrade(crops, "realesrgan", seed=seed) for seed in (1, 2, 3)]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not torch.equal(outputs[a].lr, outputs[b].lr)
            assert outputs[a].params != outputs[b].params


def test_a_generator_or_no_seed_still_records_a_reproducible_seed(crops) -> None:
    generator = torch.Generator().manual_seed(5)
    result = degrade(crops[:1], "light", generator=generator)
    again = replay(crops[:1], result.params)
    assert torch.equal(result.lr, again.lr)
    assert isinstance(degrade(crops[:1], "bicubic").params[0]["seed"], int)


def test_each_image_of_a_batch_gets_its_own_draws(crops) -> None:
    same = crops[:1].expand(4, -1, -1, -1)  # four copies of one image
    result = degrade(same, "realesrgan", seed=9)
    seeds = {p["seed"] for p in result.params}
    assert len(seeds) == 4
    assert len({json.dumps(p, sort_keys=True) for p in result.params}) == 4
    for a in range(4):
        for b in range(a + 1, 4):
            assert not torch.equal(result.lr[a], result.lr[b])
    noise_seeds = [p["stage1"]["noise"]["seed"] for p in result.params if p["stage1"]["noise"]]
    assert len(noise_seeds) == len(set(noise_seeds))


@pytest.mark.slow
def test_an_images_draws_do_not_depend_on_the_batch(crops) -> None:
    batch = degrade(crops, "realesrgan", seed=42)
    for index in range(3):
        alone = degrade(crops[index : index + 1], "realesrgan", seed=42, first_index=index)
        assert alone.params[0] == batch.params[index]
        difference = (alone.lr[0] - batch.lr[index]).abs()
        # batched and single convolutions may round differently by an ulp, rarely a level
        assert difference.max() <= 1.5 / 255 and (difference > 0).float().mean() < 0.01


def test_plans_depend_only_on_config_seed_and_scale() -> None:
    config = get_preset("realesrgan")
    assert sample_plan(config, 77, 4) == sample_plan(config, 77, 4)
    assert sample_plan(config, 77, 4) != sample_plan(config, 78, 4)
    plans = sample_plans("realesrgan", 3, seed=5, first_index=2)
    assert plans[0] == sample_plans("realesrgan", 1, seed=5, first_index=2)[0]


# --------------------------------------------------------------------------- replay


@pytest.mark.slow
def test_replay_from_json_reproduces_the_output_bit_for_bit(crops) -> None:
    result = degrade(crops, "realesrgan", seed=11)
    params = json.loads(json.dumps(result.params))
    assert torch.equal(replay(crops, params).lr, result.lr)
    plans = [DegradationPlan.from_dict(p) for p in params]
    assert plans == result.plans


def test_one_record_applies_the_same_degradation_to_other_images(crops) -> None:
    result = degrade(crops[:1], "realesrgan", seed=13)
    others = replay(crops[1:], result.params[0])
    assert others.lr.shape == (2, 3, 32, 32)
    assert others.params == [result.params[0]] * 2


def test_params_json_is_the_list_of_records(crops) -> None:
    result = degrade(crops[:2], "light", seed=3, overrides="noise_range=1,2")
    records = json.loads(result.params_json())
    assert records == result.params and len(records) == 2
    assert torch.equal(replay(crops[:2], records).lr, result.lr)


def test_replay_rejects_records_that_are_not_plans(crops) -> None:
    with pytest.raises(InvalidParameterError, match="Not a valid degradation record"):
        replay(crops[:1], {"seed": 1})


# --------------------------------------------------------------------------- parity


def _fixed_plan(scale: float = 4) -> DegradationPlan:
    """Every deterministic step of the official pipeline, without noise or JPEG."""
    return DegradationPlan(
        seed=0,
        scale=scale,
        sharpen=SharpenPlan(8.0, 51, 0.5, 10.0),
        stage1=StagePlan(
            blur=BlurPlan("generalized_aniso", 15, sigma_x=2.1, sigma_y=0.8, rotation=0.7, beta=0.8),
            resize=ResizePlan("down", 0.6, "bicubic", "current"),
        ),
        stage2=StagePlan(
            blur=BlurPlan("sinc", 11, cutoff=1.3),
            resize=ResizePlan("up", 1.1, "area", "target"),
        ),
        final=FinalPlan("bilinear", sinc=BlurPlan("sinc", 9, cutoff=2.0)),
    )


def _pad21(kernel: torch.Tensor) -> torch.Tensor:
    pad = (21 - kernel.shape[-1]) // 2
    return F.pad(kernel, (pad, pad, pad, pad)).float()[None]


def test_pipeline_matches_realesrgans_feed_data_steps(crops) -> None:
    ref.require_reference()
    ipu = ref.img_process_util()
    image = crops[:1]
    ours = apply_plans(image, [_fixed_plan()]).lr
    # the same steps as RealESRGANModel.feed_data, with basicsr's own functions
    out = ipu.USMSharp()(image)
    out = ipu.filter2D(out, _pad21(blur_kernel("generalized_aniso", 15, 2.1, 0.8, 0.7, 0.8)))
    out = F.interpolate(out, scale_factor=0.6, mode="bicubic")
    out = ipu.filter2D(out.contiguous(), _pad21(sinc_kernel(1.3, 11)))
    out = F.interpolate(out, size=(int(128 / 4 * 1.1), int(128 / 4 * 1.1)), mode="area")
    out = F.interpolate(out, size=(32, 32), mode="bilinear")
    out = ipu.filter2D(out, _pad21(sinc_kernel(2.0, 9)))
    expected = torch.clamp((out * 255.0).round(), 0, 255) / 255.0
    difference = (ours - expected).abs()
    assert difference.max() <= 1.0 / 255 + 1e-6  # a level where float rounding sits at .5
    assert (difference > 0).float().mean() < 0.005


def test_bicubic_preset_is_matlab_imresize_rounded_to_8_bits(crops) -> None:
    ref.require_reference()
    imresize = ref.matlab_functions().imresize
    result = degrade(crops, "bicubic", scale=4, seed=0)
    expected = torch.stack([imresize(image, 0.25) for image in crops])
    expected = torch.clamp((expected * 255.0).round(), 0, 255) / 255.0
    difference = (result.lr - expected).abs()
    assert difference.max() <= 1.0 / 255 + 1e-6
    assert (difference > 0).float().mean() < 0.001
    plan = result.params[0]
    assert plan["stage1"]["blur"] is None and plan["stage2"] is None and plan["final"]["sinc"] is None


def test_classic_preset_is_first_order_only(crops) -> None:
    result = degrade(crops, "classic", seed=21)
    for plan in result.params:
        assert plan["stage2"] is None and plan["final"]["sinc"] is None and plan["final"]["jpeg_quality"] is None
        assert plan["stage1"]["blur"]["kernel"] in ("iso", "aniso")
        assert plan["stage1"]["resize"] == {"direction": "keep", "factor": 1.0, "mode": "bicubic", "reference": "target"}
        assert plan["stage1"]["noise"]["kind"] == "gaussian" and 30 <= plan["stage1"]["jpeg_quality"] <= 95


@pytest.mark.slow
def test_channels_last_and_float64_inputs_work(crops) -> None:
    expected = degrade(crops, "realesrgan", seed=4).lr
    channels_last = degrade(crops.contiguous(memory_format=torch.channels_last), "realesrgan", seed=4).lr
    assert (channels_last - expected).abs().max() <= 1.5 / 255
    as_double = degrade(crops.double(), "realesrgan", seed=4).lr
    assert as_double.dtype == torch.float64 and (as_double.float() - expected).abs().max() <= 1.5 / 255


# --------------------------------------------------------------------------- sampling statistics


def test_sampled_parameters_follow_the_official_distributions() -> None:
    config = get_preset("realesrgan")
    plans = [sample_plan(config, seed, 4) for seed in range(3000)]
    n = len(plans)
    kinds = Counter(p.stage1.blur.kernel for p in plans)
    assert abs(kinds["sinc"] / n - 0.1) < 0.02
    non_sinc = n - kinds["sinc"]
    for kind, probability in zip(config.kernel_list, config.kernel_prob, strict=True):
        assert abs(kinds[kind] / non_sinc - probability) < 0.03, kind
    directions = Counter(p.stage1.resize.direction for p in plans)
    for direction, probability in zip(("up", "down", "keep"), config.resize_prob, strict=True):
        assert abs(directions[direction] / n - probability) < 0.03
    assert abs(sum(p.stage2.blur is not None for p in plans) / n - 0.8) < 0.03
    assert abs(sum(p.final.sinc is not None for p in plans) / n - 0.8) < 0.03
    assert abs(sum(p.final.jpeg_first for p in plans) / n - 0.5) < 0.03
    noises = [p.stage1.noise for p in plans]
    assert abs(sum(x.kind == "gaussian" for x in noises) / n - 0.5) < 0.03
    assert abs(sum(x.gray for x in noises) / n - 0.4) < 0.03
    qualities = [p.stage1.jpeg_quality for p in plans] + [p.final.jpeg_quality for p in plans]
    assert min(qualities) == 30 and max(qualities) == 95 and all(isinstance(q, int) for q in qualities)
    for plan in plans:
        blur = plan.stage1.blur
        assert blur.size % 2 == 1 and 7 <= blur.size <= 21
        if blur.kernel == "sinc":
            low = math.pi / 3 if blur.size < 13 else math.pi / 5
            assert low <= blur.cutoff <= math.pi
        else:
            assert 0.2 <= blur.sigma_x <= 3.0
        if plan.stage2.blur is not None and plan.stage2.blur.kernel != "sinc":
            assert 0.2 <= plan.stage2.blur.sigma_x <= 1.5
        assert 0.15 <= plan.stage1.resize.factor <= 1.5 and 0.3 <= plan.stage2.resize.factor <= 1.2
    generalized = [p.stage1.blur.beta for p in plans if p.stage1.blur.kernel.startswith("generalized")]
    assert 0.35 < sum(b < 1 for b in generalized) / len(generalized) < 0.65
    plateau = [p.stage1.blur.beta for p in plans if p.stage1.blur.kernel.startswith("plateau")]
    assert all(1.0 <= b <= 2.0 for b in plateau)


def test_zero_probability_choices_are_never_drawn() -> None:
    config = get_preset("realesrgan").replace(kernel_prob=(0, 1, 0, 0, 0, 0), sinc_prob=0, resize_prob=(0, 0, 1))
    plans = [sample_plan(config, seed, 4) for seed in range(300)]
    assert {p.stage1.blur.kernel for p in plans} == {"aniso"}
    assert {p.stage1.resize.direction for p in plans} == {"keep"}


# --------------------------------------------------------------------------- kernels, progress, errors


def test_result_kernels_are_the_applied_ones(crops) -> None:
    result = degrade(crops[:1], "realesrgan", seed=8)
    plan = result.plans[0]
    kernels = result.kernels[0]
    if plan.stage1.blur is not None:
        torch.testing.assert_close(kernels["blur1"], plan.stage1.blur.build().float())
    if plan.final.sinc is not None:
        torch.testing.assert_close(kernels["final_sinc"], plan.final.sinc.build().float())
    picture = result.kernel_image(0)
    assert picture.ndim == 4 and picture.shape[:2] == (1, 3)
    assert picture.min() >= 0.0 and picture.max() <= 1.0


def test_kernel_pictures_show_negative_lobes_in_red() -> None:
    picture = kernels_image([sinc_kernel(2.5, 21)], cell=2, gap=0)
    red, green = picture[0, 0], picture[0, 1]
    assert (red > green + 0.1).any()  # ringing lobes
    assert kernels_image({}).shape[-1] > 0  # nothing blurred: an identity kernel


def test_progress_is_reported_and_cancel_stops(crops) -> None:
    calls = []
    degrade(crops[:1], "light", seed=0, progress=lambda done, total, message: calls.append((done, total, message)))
    assert [c[0] for c in calls] == [0, 1, 2, 3, 4] and all(c[1] == 4 for c in calls)
    assert calls[-1][2] == "degrade: done"
    with pytest.raises(CancelledError):
        degrade(crops[:1], "light", seed=0, cancel=lambda: True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scale": 0}, r"Scale must be positive, got 0"),
        ({"scale": -2}, r"Scale must be positive"),
        ({"scale": 0.5}, r"use a scale >= 1"),
        ({"scale": float("nan")}, r"Scale must be a number"),
        ({"seed": -1}, r"Seed must be a whole number"),
        ({"overrides": ["blur_sigma=-1,2"]}, r"negative sigma"),
        ({"config": "nope"}, r"Unknown degradation preset 'nope'"),
    ],
)
def test_bad_arguments_are_clear_errors(crops, kwargs: dict, message: str) -> None:
    kwargs = {"config": "realesrgan", **kwargs}
    config = kwargs.pop("config")
    with pytest.raises(InvalidParameterError, match=message):
        degrade(crops[:1], config, **kwargs)


def test_bad_images_are_clear_errors(crops) -> None:
    with pytest.raises(InvalidParameterError, match=r"\(B, 3, H, W\)"):
        degrade(crops[:, :1], "bicubic")
    with pytest.raises(InvalidParameterError, match="float images"):
        degrade((crops * 255).to(torch.uint8), "bicubic")
    with pytest.raises(InvalidParameterError, match="too small for scale 4"):
        degrade(crops[:1, :, :3, :3], "bicubic", scale=4)


# --------------------------------------------------------------------------- pairs


def test_pairs_are_aligned_crops_with_a_sharpened_hr(crops) -> None:
    pairs = make_pairs(crops, "realesrgan", scale=4, seed=1, crop=96)
    assert pairs.hr.shape == (3, 3, 96, 96) and pairs.lr.shape == (3, 3, 24, 24)
    for index, params in enumerate(pairs.params):
        crop = params["crop"]
        assert crop["size"] == 96 and not crop["padded"]
        window = crops[index : index + 1, :, crop["top"] : crop["top"] + 96, crop["left"] : crop["left"] + 96]
        torch.testing.assert_close(pairs.hr[index : index + 1], usm_sharpen(window))
    again = make_pairs(crops, "realesrgan", scale=4, seed=1, crop=96)
    assert torch.equal(again.lr, pairs.lr) and torch.equal(again.hr, pairs.hr)


def test_pairs_without_sharpening_keep_the_crop_and_small_images_are_padded(crops) -> None:
    pairs = make_pairs(crops[:1, :, :50, :60], "classic", scale=2, seed=2, crop=64)
    assert pairs.hr.shape == (1, 3, 64, 64) and pairs.lr.shape == (1, 3, 32, 32)
    assert pairs.params[0]["crop"]["padded"]
    torch.testing.assert_close(pairs.hr[..., :50, :60], crops[:1, :, :50, :60])


def test_pairs_without_crop_trim_to_a_multiple_of_the_scale(crops) -> None:
    pairs = make_pairs(crops[:, :, :101, :99], "bicubic", scale=4, seed=0)
    assert pairs.hr.shape == (3, 3, 100, 96) and pairs.lr.shape == (3, 3, 25, 24)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"crop": 3}, r"Crop size 3 is smaller than the scale 4"),
        ({"crop": 98}, r"Crop size 98 is not a multiple of the scale 4; use 96 or 100"),
        ({"scale": 2.5, "crop": 100}, r"need a whole-number scale"),
    ],
)
def test_bad_pair_arguments_are_clear_errors(crops, kwargs: dict, message: str) -> None:
    kwargs = {"scale": 4, **kwargs}
    with pytest.raises(InvalidParameterError, match=message):
        make_pairs(crops[:1], "realesrgan", seed=0, **kwargs)
