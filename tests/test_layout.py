"""The engine's one statement of the image layout: (B, C, H, W) float 0..1, alpha (B, 1, H, W)."""

from __future__ import annotations

import pytest
import torch

from restorekit.errors import ImageWriteError, InvalidParameterError
from restorekit.layout import check_alpha, check_image, describe_layout


def test_check_image_accepts_gray_and_rgb_batches() -> None:
    for channels in (1, 3):
        image = torch.rand(2, channels, 5, 7)
        assert check_image(image) is image
    assert check_image(torch.rand(1, 4, 3, 3), channels=None).shape[1] == 4


@pytest.mark.parametrize(
    ("value", "kwargs", "shown"),
    [
        (torch.rand(3, 8, 8), {}, "(3, 8, 8)"),
        (torch.rand(1, 4, 8, 8), {}, "(1, 4, 8, 8)"),
        (torch.rand(0, 3, 8, 8), {}, "(0, 3, 8, 8)"),
        (torch.rand(2, 3, 8, 8), {"batch": 1}, "(2, 3, 8, 8)"),
        (torch.rand(1, 1, 8, 8), {"channels": (3,)}, "(1, 1, 8, 8)"),
        ([[0.5]], {}, "list"),
    ],
)
def test_check_image_names_expected_and_actual_layout(value: object, kwargs: dict, shown: str) -> None:
    with pytest.raises(InvalidParameterError) as error:
        check_image(value, what="The test image", hint="Do this instead.", **kwargs)
    message = str(error.value)
    assert message.startswith("The test image must be a tensor of shape (")
    assert shown in message and message.endswith("Do this instead.")


def test_check_image_raises_the_callers_error_class() -> None:
    with pytest.raises(ImageWriteError, match=r"\(1, 1 or 3, H, W\)"):
        check_image(torch.rand(2, 3, 4, 4), batch=1, error=ImageWriteError)
    assert describe_layout((3,), 1) == "(1, 3, H, W)"


def test_check_alpha_matches_the_image() -> None:
    image = torch.rand(2, 3, 6, 6)
    assert check_alpha(None, image) is None
    alpha = torch.rand(2, 1, 6, 6)
    assert check_alpha(alpha, image) is alpha
    with pytest.raises(InvalidParameterError, match=r"must match the image: \(2, 1, 6, 6\)"):
        check_alpha(torch.rand(2, 1, 5, 6), image)
    with pytest.raises(InvalidParameterError, match=r"\(B, 1, H, W\)"):
        check_alpha(torch.rand(2, 3, 6, 6), image)
