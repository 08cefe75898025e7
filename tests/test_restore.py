"""The shared restoration job: base method (model, resize) plus optional face restoration."""

from __future__ import annotations

import pytest
import torch

from restorekit.errors import InvalidParameterError
from restorekit.faces import FaceOptions
from restorekit.imageio import image_from_array
from restorekit.restore import Restorer, RestoreSettings, restore
from restorekit.upscale import Upscaler, resize

from conftest import random_model, to_tensor

TINY = {"num_feat": 8, "num_conv": 2, "upscale": 2}


@pytest.fixture(scope="module")
def tiny():
    return random_model("SRVGGNetCompact", TINY, seed=3, std=0.1)


def test_model_base_equals_the_upscale_engine(tiny, astronaut) -> None:
    pixels = to_tensor(astronaut[100:140, 200:248])
    ours = restore(pixels, model=tiny, precision="fp32", outscale=3)
    direct = Upscaler(tiny, precision="fp32").upscale(pixels, outscale=3)
    assert torch.equal(ours.pixels, direct.pixels)
    assert ours.pixels.shape == (1, 3, 120, 144) and ours.faces is None


def test_resize_base_gives_exact_sizes_and_keeps_alpha(astronaut) -> None:
    pixels = to_tensor(astronaut[:30, :50])
    alpha = torch.linspace(0, 1, 50).expand(1, 1, 30, 50).contiguous()
    result = restore(pixels, alpha=alpha, model="resize", width=77)
    assert result.pixels.shape == (1, 3, 46, 77) and result.alpha.shape == (1, 1, 46, 77)
    assert torch.equal(result.pixels, resize(pixels, (46, 77)))


def test_aligned_faces_with_a_restorer_function(tiny, astronaut) -> None:
    """The face stage runs on the base result; strength 0 leaves the base untouched."""
    face = to_tensor(astronaut[0:256, 128:384])

    def brighten(faces: torch.Tensor) -> torch.Tensor:
        return (faces + 0.2).clamp(0, 1)

    base = restore(face, model=tiny, precision="fp32").pixels
    full = Restorer(
        RestoreSettings(model=tiny, precision="fp32", face_model=brighten, face_options=FaceOptions(aligned=True))
    ).run(face)
    zero = Restorer(
        RestoreSettings(model=tiny, precision="fp32", face_model=brighten, face_options=FaceOptions(aligned=True, strength=0.0))
    ).run(face)
    assert torch.equal(zero.pixels, base)
    assert full.faces is not None and full.faces.face_count == 1
    assert (full.pixels - base).mean() > 0.1


def test_gray_images_stay_gray_through_faces(tiny, camera) -> None:
    image = image_from_array(camera[:64, :64])
    settings = RestoreSettings(model=tiny, precision="fp32", face_model=lambda f: f, face_options=FaceOptions(aligned=True))
    out, _ = Restorer(settings).run_image(image)
    assert out.was_gray and out.pixels.shape == (1, 3, 128, 128)
    assert torch.equal(out.pixels[:, 0], out.pixels[:, 1])


def test_progress_spans_both_stages_and_cancel_stops(tiny, astronaut) -> None:
    seen: list[tuple[int, int]] = []
    settings = RestoreSettings(model=tiny, precision="fp32", tile=32, face_model=lambda f: f, face_options=FaceOptions(aligned=True))
    Restorer(settings).run(to_tensor(astronaut[:96, :96]), progress=lambda d, t, m: seen.append((d, t)))
    fractions = [d / t for d, t in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and min(fractions) < 0.5
    from restorekit.errors import CancelledError

    with pytest.raises(CancelledError):
        Restorer(settings).run(to_tensor(astronaut[:96, :96]), cancel=lambda: True)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"outscale": 2, "width": 10}, "not both"),
        ({"outscale": -1}, "must be a number > 0"),
        ({"denoise": 0.5, "sharpness": 0.5}, "not both"),
    ],
)
def test_bad_settings(changes, message) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        RestoreSettings(**changes)


def test_strength_needs_a_registry_pair(tiny) -> None:
    with pytest.raises(InvalidParameterError, match="registry model name"):
        Restorer(RestoreSettings(model=tiny, denoise=0.5))
    with pytest.raises(InvalidParameterError, match="Models with a denoise strength: realesr-general"):
        Restorer(RestoreSettings(model="RealESRGAN_x4plus_anime_6B", denoise=0.5, download=False))


def test_output_size_is_known_before_running(tiny, astronaut) -> None:
    pixels = to_tensor(astronaut[:30, :50])
    for settings in (RestoreSettings(model=tiny, precision="fp32"), RestoreSettings(model=tiny, precision="fp32", outscale=1.5),
                     RestoreSettings(model="resize", width=77), RestoreSettings(model="resize", outscale=3)):  # fmt: skip
        restorer = Restorer(settings)
        assert restorer.output_size(30, 50) == tuple(restorer.run(pixels).pixels.shape[-2:])
    assert Restorer(RestoreSettings(model="zssr")).output_size(30, 50) == (60, 100)
    assert Restorer(RestoreSettings(model="zssr", height=45)).output_size(30, 50) == (45, 75)


@pytest.mark.slow
def test_later_jobs_share_the_face_networks_compiled_forward(tiny, isolated_home, tmp_path, monkeypatch) -> None:
    """The app builds a Restorer per job: with the same face model (loaded once, cached) and
    settings, each job's face restorer runs the same compiled forward, so shapes compiled for
    one job stay compiled for the next; another plan gets its own."""
    from faces_common import install_models

    monkeypatch.setenv("RESTOREKIT_OFFLINE", "1")
    install_models(isolated_home, tmp_path / "cache", ["GFPGANv1.4"])

    def job(precision: str = "fp32", fidelity: float = 0.5) -> Restorer:
        options = FaceOptions(aligned=True, fidelity=fidelity)
        return Restorer(RestoreSettings(model=tiny, precision=precision, face_model="GFPGANv1.4", face_options=options))

    first, second = job(), job()  # compile auto, the default
    assert first.faces.restorer is not second.faces.restorer
    assert first.faces.restorer.compiled is not None
    assert second.faces.restorer.compiled is first.faces.restorer.compiled
    assert job(fidelity=0.9).faces.restorer.compiled is first.faces.restorer.compiled  # CodeFormer's weight only
    assert job("bf16").faces.restorer.compiled is not first.faces.restorer.compiled  # another plan
