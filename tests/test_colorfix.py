"""Colour fix (wavelet and AdaIN): exact algebra, and on real photos the mean low-pass Lab
colour difference between the input and the result is at most 1 after a wavelet fix (real
RealESRGAN_x4plus weights; a random-weight face model for faces), reported before/after."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.color import rgb2lab

from restorekit.colorfix import adain_color_fix, color_fix, parse_color_fix, wavelet_split
from restorekit.errors import InvalidParameterError
from restorekit.faces import FaceOptions, FacePipeline

from faces_common import astronaut_landmarks, image_tensor


def lowpass_lab_difference(result: torch.Tensor, reference: torch.Tensor, sigma: float = 3.0) -> float:
    """Mean CIE76 difference of the Lab colours of both images at the reference's size,
    low-passed by a Gaussian of ``sigma`` reference pixels."""
    small = F.interpolate(result.float(), size=reference.shape[-2:], mode="area") if result.shape[-2:] != reference.shape[-2:] else result

    def low(image: torch.Tensor) -> np.ndarray:
        radius = int(3 * sigma)
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        taps = torch.exp(-(x**2) / (2 * sigma**2))
        taps /= taps.sum()
        c = image.shape[1]
        padded = F.pad(image.float(), (radius, radius, radius, radius), mode="replicate")
        out = F.conv2d(padded, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), groups=c)
        out = F.conv2d(out, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), groups=c)
        return rgb2lab(out[0].permute(1, 2, 0).clamp(0, 1).numpy())

    return float(np.linalg.norm(low(small) - low(reference), axis=-1).mean())


def test_wavelet_split_is_exact_and_the_fix_takes_low_frequencies_from_the_reference(coffee) -> None:
    image = image_tensor(coffee[:96, :128])
    high, low = wavelet_split(image)
    assert torch.allclose(high + low, image, atol=1e-6)
    tinted = (image * torch.tensor([1.2, 0.9, 0.8]).view(1, 3, 1, 1) + 0.05).clamp(0, 1)
    fixed = color_fix(tinted, image, "wavelet")
    _, fixed_low = wavelet_split(fixed)
    assert (fixed_low - low).abs().mean() < (wavelet_split(tinted)[1] - low).abs().mean() * 0.05


def test_adain_matches_channel_statistics(chelsea) -> None:
    image = image_tensor(chelsea[:80, :80])
    tinted = image * 0.7 + 0.2
    fixed = adain_color_fix(tinted, image)
    assert torch.allclose(fixed.mean((-1, -2)), image.mean((-1, -2)), atol=1e-5)
    assert torch.allclose(fixed.std((-1, -2)), image.std((-1, -2)), atol=1e-4)


def test_methods_are_parsed() -> None:
    assert parse_color_fix(None) == "none" and parse_color_fix("Wavelet") == "wavelet"
    with pytest.raises(InvalidParameterError, match="wavelet, adain"):
        parse_color_fix("histogram")
    image = torch.rand(1, 3, 8, 8)
    assert color_fix(image, image, "none") is image
    with pytest.raises(InvalidParameterError, match="same channels"):
        color_fix(image, torch.rand(1, 1, 8, 8))


@pytest.mark.slow
def test_upscale_colour_difference_is_at_most_1_after_wavelet_fix(x4plus, astronaut, coffee, chelsea) -> None:
    from restorekit.restore import Restorer, RestoreSettings

    crops = {"astronaut": astronaut[40:104, 176:240], "coffee": coffee[120:184, 320:384], "chelsea": chelsea[70:134, 110:174]}
    images = torch.cat([image_tensor(crop) for crop in crops.values()])
    base = Restorer(RestoreSettings(model=x4plus, tile=None)).run(images).pixels
    for index, name in enumerate(crops):
        image, result = images[index : index + 1], base[index : index + 1]
        before = lowpass_lab_difference(result, image)
        after = {m: lowpass_lab_difference(color_fix(result, image, m), image) for m in ("wavelet", "adain")}
        print(f"{name}: low-pass Lab difference {before:.2f} before, wavelet {after['wavelet']:.2f}, adain {after['adain']:.2f}")
        assert after["wavelet"] <= 1.0
        assert after["wavelet"] <= before


def test_restorer_applies_the_colour_fix_to_its_base_result(coffee) -> None:
    from restorekit.restore import Restorer, RestoreSettings

    image = image_tensor(coffee[:64, :96])
    plain = Restorer(RestoreSettings(model="resize", outscale=2)).run(image).pixels
    for method in ("wavelet", "adain"):
        restorer = Restorer(RestoreSettings(model="resize", outscale=2, color_fix=method))
        assert method in restorer.description
        assert torch.equal(restorer.run(image).pixels, color_fix(plain, image, method))


def test_face_colour_fix_brings_restored_faces_to_the_input_colours(astronaut) -> None:
    from restorekit.faces import FaceDetection

    image = image_tensor(astronaut)
    face = [[FaceDetection.from_landmarks(astronaut_landmarks())]]
    generator = torch.Generator().manual_seed(0)

    def warm_cast(faces: torch.Tensor) -> torch.Tensor:
        """A face model's typical failure: a colour cast over sharpened detail."""
        detail = 0.03 * torch.randn(faces.shape, generator=generator)
        return (faces * torch.tensor([1.12, 0.97, 0.82]).view(1, 3, 1, 1) + 0.04 + detail).clamp(0, 1)

    results = {}
    for method in ("none", "wavelet", "adain"):
        pipeline = FacePipeline(warm_cast, options=FaceOptions(parser="ellipse", color_fix=method))
        result = pipeline.run(image, detections=face)
        # compared at the face's size in the photo (about 128 px), as for upscales
        original = F.interpolate(result.original_faces, size=(128, 128), mode="area")
        results[method] = lowpass_lab_difference(result.restored_faces, original)
    print(f"aligned face low-pass Lab difference: {results}")
    assert results["wavelet"] <= 1.0 < results["none"]
    assert results["adain"] < results["none"]
