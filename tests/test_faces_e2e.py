"""End to end through the real loaders: random-weight GFPGANv1.4, RetinaFace and ParseNet
saved as safetensors under their registry names in an isolated model home, loaded by
``load_model`` / ``load_aux_network`` exactly as downloaded weights would be.

GFPGAN at 512 costs about 400 GFLOP a face, so only two full passes run here: ours (engine
precision, batched path) and the official network's on the same crop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from restorekit.errors import ModelIncompatibleError
from restorekit.faces import FaceDetection, FaceOptions, FacePipeline
from restorekit.faces.background import resize_background
from restorekit.faces.mask import ellipse_mask
from restorekit.upscale import Upscaler

from conftest import psnr
from faces_common import astronaut_landmarks, image_tensor, install_models, random_network_state


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("random-face-models")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, isolated_home: Path) -> None:
    """Nothing here may download: a missing model must fail, not fetch."""
    monkeypatch.setenv("RESTOREKIT_OFFLINE", "1")


@pytest.mark.slow
def test_restoration_through_the_real_loaders_matches_the_official_network(
    isolated_home: Path, model_cache: Path, astronaut: np.ndarray
) -> None:
    install_models(isolated_home, model_cache, ["GFPGANv1.4", "parsing_parsenet", "detection_mobilenet0.25_Final"])
    options = FaceOptions(detector="detection_mobilenet0.25_Final", parser="parsing_parsenet")
    pipeline = FacePipeline("GFPGANv1.4", options=options).load()
    image = image_tensor(astronaut)
    result = pipeline.run(image, outscale=2, detections=[[FaceDetection.from_landmarks(astronaut_landmarks())]])

    assert result.face_count == 1 and result.image.shape == (1, 3, 1024, 1024)
    assert bool(torch.isfinite(result.image).all())
    # the official GFPGANv1Clean (gfpgan package), same weights, fp32, stored noise
    from face_reference import apply_basicsr_shim

    apply_basicsr_shim()
    from gfpgan.archs.gfpganv1_clean_arch import GFPGANv1Clean

    official = GFPGANv1Clean(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None, fix_decoder=False,
                             num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)  # fmt: skip
    from restorekit.registry.convert import load_safetensors_file
    from restorekit.registry.download import installed_path
    from restorekit.registry.schema import load_registry

    official.load_state_dict(load_safetensors_file(installed_path(load_registry().get("GFPGANv1.4"))))
    official.eval()
    with torch.no_grad():
        expected = official(result.original_faces * 2 - 1, return_rgb=False, randomize_noise=False)[0]
    expected = ((expected.clamp(-1, 1) + 1) / 2)
    assert float(expected.std()) > 0.05  # random weights, but a real, non-trivial output
    assert psnr(result.restored_faces, expected) > 30.0  # bf16 with channels_last vs fp32
    # the mask came from the parser (not the ellipse) and the rest is the background
    assert not torch.allclose(result.crop_masks, ellipse_mask(1))
    background = resize_background(image, 2)
    outside = (result.face_mask == 0).expand_as(background)
    assert torch.equal(result.image[outside], background[outside])


@pytest.mark.slow
def test_detector_through_the_loader(isolated_home: Path, model_cache: Path, astronaut: np.ndarray) -> None:
    """RetinaFace weights from the model home; random weights find no face at GFPGAN's
    0.97 confidence: the background comes back with a notice, not an error."""
    install_models(isolated_home, model_cache, ["GFPGANv1.4", "detection_mobilenet0.25_Final", "detection_Resnet50_Final"])
    pipeline = FacePipeline("GFPGANv1.4", options=FaceOptions(detector="detection_mobilenet0.25_Final", parser="ellipse"))
    image = image_tensor(astronaut)
    result = pipeline.run(image)
    assert result.face_count == 0 and any("No face found" in n for n in result.notices)
    assert torch.equal(result.image, resize_background(image, 1))
    from restorekit.models import load_aux_network

    resnet = load_aux_network("detection_Resnet50_Final", download=False)
    expected = random_network_state("RetinaFace", {"network_name": "resnet50"})
    assert torch.equal(resnet.state_dict()["body.conv1.weight"], expected["body.conv1.weight"])


@pytest.mark.slow
def test_wrong_model_kinds_are_refused(isolated_home: Path, model_cache: Path) -> None:
    install_models(isolated_home, model_cache, ["GFPGANv1.4", "detection_mobilenet0.25_Final"])
    with pytest.raises(ModelIncompatibleError, match="RealESRGAN_x4plus is an upscale model, not a face restoration model"):
        FacePipeline("RealESRGAN_x4plus")
    with pytest.raises(ModelIncompatibleError, match=r"GFPGANv1\.4 is a face restoration model, not an upscale model"):
        Upscaler("GFPGANv1.4")
    pipeline = FacePipeline("GFPGANv1.4", options=FaceOptions(detector="parsing_parsenet"))
    with pytest.raises(ModelIncompatibleError, match="not a face detector"):
        pipeline.load()
    pipeline = FacePipeline("GFPGANv1.4", options=FaceOptions(detector="detection_mobilenet0.25_Final", parser="GFPGANv1.4"))
    with pytest.raises(ModelIncompatibleError, match="not a face parser"):
        pipeline.load()
