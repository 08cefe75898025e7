"""The torch JPEG round trip against a real codec (libjpeg-turbo through Pillow and OpenCV)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from restorekit.degrade.jpeg import (
    CHROMA_QUANT_TABLE,
    LUMA_QUANT_TABLE,
    jpeg_roundtrip,
    quantization_tables,
)
from restorekit.errors import InvalidParameterError

import degrade_reference as ref
from conftest import psnr, to_tensor

QUALITIES = [10, 30, 50, 75, 95]


def _pillow_jpeg(array: np.ndarray, quality: int) -> tuple[np.ndarray, dict[int, list[int]]]:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    with Image.open(io.BytesIO(buffer.getvalue())) as im:
        return np.array(im.convert("RGB")), {k: list(v) for k, v in im.quantization.items()}


def _to_uint8(tensor: torch.Tensor) -> np.ndarray:
    return (tensor[0].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)


@pytest.fixture(scope="module", params=["astronaut", "coffee", "chelsea"])
def photo(request) -> np.ndarray:
    """A real photo cut to an odd size (203 x 301), so edge blocks and chroma are partial."""
    array = request.getfixturevalue(request.param)
    return np.ascontiguousarray(array[:203, :301])


@pytest.mark.parametrize("quality", [1, 5, 10, 25, 49, 50, 51, 75, 90, 95, 100])
def test_quantization_tables_equal_libjpegs(quality: int) -> None:
    _, tables = _pillow_jpeg(np.zeros((16, 16, 3), np.uint8), quality)
    q = torch.tensor([quality])
    assert quantization_tables(q, LUMA_QUANT_TABLE)[0].flatten().int().tolist() == tables[0]
    assert quantization_tables(q, CHROMA_QUANT_TABLE)[0].flatten().int().tolist() == tables[1]


def _pillow_uses_libjpeg_turbo() -> bool:
    from PIL import features

    return bool(features.check_feature("libjpeg_turbo"))


@pytest.mark.parametrize("quality", [1, 10, 30, 50, 75, 95, 100])
def test_roundtrip_matches_pillow(photo: np.ndarray, quality: int) -> None:
    expected, _ = _pillow_jpeg(photo, quality)
    ours = _to_uint8(jpeg_roundtrip(to_tensor(photo), quality))
    if _pillow_uses_libjpeg_turbo():
        # the islow integer DCT, libjpeg's rounding and its fancy upsampling: bit-exact
        np.testing.assert_array_equal(ours, expected)
    else:  # another libjpeg (e.g. IJG 9 upsamples chroma differently): close, not equal
        assert psnr(torch.from_numpy(ours) / 255.0, torch.from_numpy(expected) / 255.0) > 45.0


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (16, 16), (17, 9), (33, 130)])
def test_roundtrip_matches_pillow_on_awkward_sizes(astronaut: np.ndarray, shape: tuple[int, int]) -> None:
    photo = np.ascontiguousarray(astronaut[100 : 100 + shape[0], 150 : 150 + shape[1]])
    expected, _ = _pillow_jpeg(photo, 40)
    ours = _to_uint8(jpeg_roundtrip(to_tensor(photo), 40))
    if _pillow_uses_libjpeg_turbo():
        np.testing.assert_array_equal(ours, expected)
    else:
        assert np.abs(ours.astype(int) - expected.astype(int)).mean() < 1.0


@pytest.mark.slow
def test_roundtrip_is_much_closer_to_a_real_codec_than_diffjpeg(photo: np.ndarray) -> None:
    ref.require_reference()
    diffjpeg = ref.diffjpeg().DiffJPEG(differentiable=False)
    image = to_tensor(photo)
    for quality in (10, 50, 95):
        real = torch.from_numpy(_pillow_jpeg(photo, quality)[0]).permute(2, 0, 1)[None] / 255.0
        with torch.no_grad():
            theirs = diffjpeg(image.clone(), quality=torch.tensor([float(quality)]))
        ours = jpeg_roundtrip(image, quality)
        assert psnr(ours, real) > psnr(theirs, real) + 8.0


def test_pillow_and_opencv_agree_so_either_is_the_reference(photo: np.ndarray) -> None:
    cv2 = pytest.importorskip("cv2")
    ok, encoded = cv2.imencode(".jpg", photo[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 60])
    assert ok
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[:, :, ::-1]
    np.testing.assert_array_equal(decoded, _pillow_jpeg(photo, 60)[0])


@pytest.mark.slow
def test_each_image_of_a_batch_gets_its_own_quality(photo: np.ndarray) -> None:
    image = to_tensor(photo)
    batch = torch.cat([image, image, image])
    together = jpeg_roundtrip(batch, torch.tensor([20, 60, 95]))
    for index, quality in enumerate((20, 60, 95)):
        assert torch.equal(together[index : index + 1], jpeg_roundtrip(image, quality))
    assert not torch.equal(together[0], together[2])


def test_output_is_on_8_bit_levels_and_keeps_shape_and_dtype() -> None:
    image = torch.rand(2, 3, 17, 33, dtype=torch.float64)
    out = jpeg_roundtrip(image, [40, 80])
    assert out.shape == image.shape and out.dtype == torch.float64
    levels = out * 255.0
    torch.testing.assert_close(levels, levels.round())
    assert out.min() >= 0 and out.max() <= 1


def test_channels_last_input_gives_the_same_result(photo: np.ndarray) -> None:
    image = to_tensor(photo)
    assert torch.equal(jpeg_roundtrip(image.contiguous(memory_format=torch.channels_last), 50), jpeg_roundtrip(image, 50))


@pytest.mark.parametrize("quality", [0, 101, 50.5, True])
def test_bad_quality_is_a_clear_error(quality) -> None:
    with pytest.raises(InvalidParameterError, match="JPEG quality must be a whole number from 1 to 100"):
        jpeg_roundtrip(torch.rand(1, 3, 8, 8), quality)


def test_gray_input_is_rejected_with_the_expected_shape() -> None:
    with pytest.raises(InvalidParameterError, match=r"\(B, 3, H, W\)"):
        jpeg_roundtrip(torch.rand(1, 1, 8, 8), 50)
