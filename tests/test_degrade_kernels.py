"""Blur and sinc kernels against basicsr's numpy reference (loaded as plain files)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from restorekit.degrade.kernels import (
    KERNEL_FAMILIES,
    bessel_j1,
    blur_kernel,
    kernel_family,
    pulse_kernel,
    sinc_kernel,
)
from restorekit.errors import InvalidParameterError

import degrade_reference as ref

TOLERANCE = 1e-6  # the bar; the kernels actually agree to ~1e-16

# (size, sigma_x, sigma_y, theta, beta): small/large, round/elongated, every quadrant
CASES = [
    (7, 0.2, 0.2, 0.0, 0.5),
    (7, 1.3, 2.7, 0.6, 0.7),
    (13, 3.0, 0.4, -2.1, 1.0),
    (15, 0.9, 2.2, math.pi / 2, 2.5),
    (21, 2.4, 1.1, -math.pi, 4.0),
    (21, 3.0, 3.0, 1.9, 1.5),
]


@pytest.fixture(scope="module")
def degradations():
    ref.require_reference()
    return ref.degradations()


def _reference_kernel(degradations, kind: str, size, sx, sy, theta, beta) -> np.ndarray:
    family = KERNEL_FAMILIES[kind]
    iso = family.isotropic
    if family.profile.__name__ == "_gaussian":
        return degradations.bivariate_Gaussian(size, sx, sy, theta, isotropic=iso)
    if family.beta == "betag":
        return degradations.bivariate_generalized_Gaussian(size, sx, sy, theta, beta, isotropic=iso)
    return degradations.bivariate_plateau(size, sx, sy, theta, beta, isotropic=iso)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KERNEL_FAMILIES))
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"k{c[0]}-sx{c[1]}-sy{c[2]}-t{c[3]:.2f}-b{c[4]}")
def test_every_kernel_type_matches_basicsr(degradations, kind: str, case) -> None:
    size, sx, sy, theta, beta = case
    expected = _reference_kernel(degradations, kind, size, sx, sy, theta, beta)
    ours = blur_kernel(kind, size, sx, sy, theta, beta).numpy()
    assert ours.shape == expected.shape == (size, size)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=TOLERANCE)
    assert abs(ours.sum() - 1.0) < 1e-12


@pytest.mark.parametrize("size", [7, 9, 11, 13, 17, 21])
@pytest.mark.parametrize("cutoff", [math.pi / 5, math.pi / 3, 1.7, math.pi])
def test_sinc_kernel_matches_basicsr(degradations, size: int, cutoff: float) -> None:
    with np.errstate(divide="ignore", invalid="ignore"):  # basicsr divides by r = 0 first
        expected = degradations.circular_lowpass_kernel(cutoff, size, pad_to=21)
    ours = sinc_kernel(cutoff, size, pad_to=21).numpy()
    assert ours.shape == (21, 21)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=TOLERANCE)


def test_padding_to_21_keeps_the_kernel_centred() -> None:
    kernel = blur_kernel("aniso", 9, 1.5, 0.7, 0.4, pad_to=21)
    assert kernel.shape == (21, 21)
    assert torch.count_nonzero(kernel[:6]) == 0 and torch.count_nonzero(kernel[:, 15:]) == 0
    torch.testing.assert_close(kernel[6:15, 6:15], blur_kernel("aniso", 9, 1.5, 0.7, 0.4))


def test_isotropic_kernels_ignore_sigma_y_and_rotation() -> None:
    torch.testing.assert_close(blur_kernel("iso", 11, 1.2, 3.0, 1.0), blur_kernel("iso", 11, 1.2))
    torch.testing.assert_close(
        blur_kernel("plateau_iso", 11, 1.2, 3.0, 1.0, 1.5), blur_kernel("plateau_iso", 11, 1.2, beta=1.5)
    )


def test_bessel_j1_is_accurate_to_float64() -> None:
    special = pytest.importorskip("scipy.special")
    x = torch.linspace(-60.0, 60.0, 24001, dtype=torch.float64)
    np.testing.assert_allclose(bessel_j1(x).numpy(), special.j1(x.numpy()), rtol=0, atol=1e-13)


def test_pulse_kernel_is_the_identity() -> None:
    kernel = pulse_kernel(21)
    assert kernel.sum() == 1 and kernel[10, 10] == 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: blur_kernel("gaussian", 7, 1.0), "Unknown blur kernel type 'gaussian'"),
        (lambda: blur_kernel("iso", 8, 1.0), "positive odd"),
        (lambda: blur_kernel("aniso", 7, -1.0, 1.0), "must be > 0"),
        (lambda: blur_kernel("generalized_iso", 7, 1.0, beta=0.0), "beta must be > 0"),
        (lambda: sinc_kernel(4.0, 7), "Sinc cutoff must be in (0, pi]"),
        (lambda: sinc_kernel(1.0, 7, pad_to=20), "positive odd"),
    ],
)
def test_bad_kernel_parameters_are_clear_errors(call, message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_kernel_family_lists_known_names() -> None:
    with pytest.raises(InvalidParameterError) as info:
        kernel_family("box")
    for name in KERNEL_FAMILIES:
        assert name in str(info.value)
