"""Filtering, sharpening, resizing and noise against basicsr's reference code, on real photos."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from restorekit.degrade.kernels import blur_kernel, sinc_kernel
from restorekit.degrade.ops import (
    NoiseDraw,
    filter2d,
    gaussian_noise,
    gaussian_taps,
    matlab_resize,
    poisson_noise,
    reflect_indices,
    reflect_pad,
    resize,
    separable_filter,
    usm_sharpen,
)
from restorekit.errors import InvalidParameterError

import degrade_reference as ref
from conftest import to_tensor


@pytest.fixture(scope="module")
def photos(astronaut, coffee) -> torch.Tensor:
    """Two real 192x160 RGB crops (a face, a cup)."""
    return torch.cat([to_tensor(astronaut)[..., 40:232, 180:340], to_tensor(coffee)[..., 100:292, 200:360]])


@pytest.fixture(scope="module")
def basicsr_utils():
    ref.require_reference()
    return ref.img_process_util()


def test_filter2d_matches_basicsr_with_per_image_kernels(photos, basicsr_utils) -> None:
    kernels = torch.stack(
        [blur_kernel("aniso", 13, 2.0, 0.6, 0.9, pad_to=21), sinc_kernel(1.2, 21)]
    ).float()
    expected = basicsr_utils.filter2D(photos, kernels)
    torch.testing.assert_close(filter2d(photos, kernels), expected, rtol=0, atol=2e-6)


def test_filter2d_accepts_channels_last_where_basicsr_fails(photos, basicsr_utils) -> None:
    kernels = torch.stack([blur_kernel("iso", 7, 1.0), blur_kernel("iso", 7, 2.0)]).float()
    channels_last = photos.contiguous(memory_format=torch.channels_last)
    with pytest.raises(RuntimeError):
        basicsr_utils.filter2D(channels_last, kernels)  # its view() needs contiguous memory
    torch.testing.assert_close(filter2d(channels_last, kernels), basicsr_utils.filter2D(photos, kernels), rtol=0, atol=2e-6)


def test_filter2d_works_on_images_smaller_than_the_kernel() -> None:
    tiny = torch.rand(1, 3, 5, 4)
    out = filter2d(tiny, blur_kernel("iso", 21, 3.0)[None])
    assert out.shape == tiny.shape
    assert torch.all((out >= tiny.min() - 1e-6) & (out <= tiny.max() + 1e-6))


def test_reflect_indices_mirror_without_repeating_the_edge() -> None:
    assert reflect_indices(4, 3, 3).tolist() == [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]
    assert reflect_indices(3, 5, 0).tolist() == [1, 0, 1, 2, 1, 0, 1, 2]  # ...b a b c b [a b c]
    image = torch.arange(12.0).view(1, 1, 3, 4)
    torch.testing.assert_close(reflect_pad(image, 2), F.pad(image, (2, 2, 2, 2), mode="reflect"))


def test_usm_matches_basicsr_usmsharp(photos, basicsr_utils) -> None:
    expected = basicsr_utils.USMSharp()(photos)
    ours = usm_sharpen(photos)
    # the hard threshold mask can flip where |residual| * 255 sits at 10 within float error
    assert (ours - expected).abs().max() < 1e-4
    assert (ours - expected).abs().mean() < 1e-6


def test_usm_kernel_is_opencvs_gaussian(basicsr_utils) -> None:
    outer = torch.outer(gaussian_taps(51, 8.0), gaussian_taps(51, 8.0)).float()
    torch.testing.assert_close(outer, basicsr_utils.USMSharp().kernel[0], rtol=0, atol=1e-8)


def test_separable_filter_equals_the_2d_filter_on_long_axes() -> None:
    torch.manual_seed(0)
    image = torch.rand(1, 3, 700, 90)  # 700 takes the tiled path, 90 the dense one
    taps = gaussian_taps(51, 8.0)
    expected = filter2d(image, torch.outer(taps, taps)[None])
    torch.testing.assert_close(separable_filter(image, taps), expected, rtol=0, atol=5e-6)


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 0.3])
def test_matlab_resize_matches_basicsr_imresize(photos, scale: float) -> None:
    ref.require_reference()
    imresize = ref.matlab_functions().imresize
    expected = torch.stack([imresize(image, scale) for image in photos])
    ours = matlab_resize(photos, tuple(expected.shape[-2:]), scale)
    torch.testing.assert_close(ours, expected, rtol=0, atol=5e-6)  # basicsr's weights are float32


def test_matlab_resize_to_a_size_uses_the_size_ratio(photos) -> None:
    ref.require_reference()
    expected = torch.stack([ref.matlab_functions().imresize(image, 0.25) for image in photos])
    torch.testing.assert_close(resize(photos, (48, 40), "matlab_bicubic"), expected, rtol=0, atol=2e-6)


@pytest.mark.parametrize("mode", ["area", "bilinear", "bicubic"])
def test_torch_modes_follow_realesrgans_interpolate_calls(photos, mode: str) -> None:
    # first stage: interpolate(scale_factor=s); second stage and final: interpolate(size=...)
    expected = F.interpolate(photos, scale_factor=0.63, mode=mode)
    torch.testing.assert_close(resize(photos, tuple(expected.shape[-2:]), mode, 0.63), expected)
    expected = F.interpolate(photos, size=(50, 41), mode=mode)
    torch.testing.assert_close(resize(photos, (50, 41), mode), expected)


def test_resize_errors_name_the_mode_and_the_size(photos) -> None:
    with pytest.raises(InvalidParameterError, match="Unknown resize mode 'lanczos'"):
        resize(photos, (10, 10), "lanczos")
    with pytest.raises(InvalidParameterError, match="too small"):
        resize(photos, (0, 10), "area")


# --------------------------------------------------------------------------- noise


def _flat(value: float, size: int = 256) -> torch.Tensor:
    return torch.full((1, 3, size, size), value)


@pytest.mark.parametrize("sigma", [1.0, 10.0, 30.0])
def test_gaussian_noise_std_matches_sigma_and_basicsr(sigma: float) -> None:
    ref.require_reference()
    image = _flat(0.5)
    ours = gaussian_noise(image, [NoiseDraw(sigma, False, 1)]) - image
    torch.manual_seed(1)
    theirs = ref.degradations().add_gaussian_noise_pt(image, sigma=sigma, gray_noise=0, clip=True) - image
    expected = sigma / 255.0
    assert abs(ours.std().item() / expected - 1) < 0.02
    assert abs(ours.std().item() / theirs.std().item() - 1) < 0.03
    assert abs(ours.mean().item()) < expected * 0.02


def test_gray_gaussian_noise_is_one_field_for_all_channels() -> None:
    image = _flat(0.5, 64)
    noise = gaussian_noise(image, [NoiseDraw(20.0, True, 3)]) - image
    torch.testing.assert_close(noise[:, 0], noise[:, 1])
    torch.testing.assert_close(noise[:, 1], noise[:, 2])
    colour = gaussian_noise(image, [NoiseDraw(20.0, False, 3)]) - image
    assert not torch.allclose(colour[:, 0], colour[:, 1])


def test_gray_noise_differs_between_images_of_a_batch() -> None:
    # basicsr draws a single gray field and shares it across the whole batch
    image = _flat(0.5, 64).expand(2, -1, -1, -1)
    noise = gaussian_noise(image, [NoiseDraw(20.0, True, 5), NoiseDraw(20.0, True, 6)]) - image
    correlation = torch.corrcoef(torch.stack([noise[0, 0].flatten(), noise[1, 0].flatten()]))[0, 1]
    assert abs(correlation) < 0.05
    again = gaussian_noise(image, [NoiseDraw(20.0, True, 5), NoiseDraw(20.0, True, 6)]) - image
    assert torch.equal(noise, again)


@pytest.mark.parametrize("scale", [0.05, 1.0, 3.0])
@pytest.mark.parametrize("gray", [False, True])
def test_poisson_noise_std_matches_basicsr(photos, scale: float, gray: bool) -> None:
    ref.require_reference()
    image = photos[:1]
    if gray:  # on a gray photo the clipped result is the same in every channel too
        image = photos[:1].mean(dim=1, keepdim=True).expand(1, 3, -1, -1).contiguous()
    ours = poisson_noise(image, [NoiseDraw(scale, gray, 11)]) - image
    torch.manual_seed(11)
    theirs = ref.degradations().add_poisson_noise_pt(image, scale=scale, gray_noise=float(gray), clip=True) - image
    assert abs(ours.std().item() / theirs.std().item() - 1) < 0.05
    assert ours.std().item() > 0
    if gray:
        torch.testing.assert_close(ours[:, 0], ours[:, 1], atol=1e-6, rtol=0)


def test_poisson_noise_follows_the_photon_statistics() -> None:
    # a flat image has one distinct value -> 1 level -> counts ~ Poisson(x), variance x
    value, scale = 128 / 255, 0.05
    image = _flat(value)
    noise = poisson_noise(image, [NoiseDraw(scale, False, 2)]) - image
    assert abs(noise.var().item() / (value * scale**2) - 1) < 0.05
    assert abs(noise.mean().item()) < 1e-3
