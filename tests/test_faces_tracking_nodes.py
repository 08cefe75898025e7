"""The Restore Faces node on a batch of video frames (tracks, smoothing, temporal blend,
colour fix, CodeFormer fidelity) and the upscale node's colour fix. The detector is scripted
(no real detector weights here); everything after detection is the engine's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nodes.restore import RestoreFaces, UpscaleImage
from restorekit.faces import FaceDetection, FacePipeline, FaceRestorer
from restorekit.faces.align import transform_points

from faces_common import astronaut_landmarks, image_tensor, small_gfpgan_descriptor


@pytest.fixture
def frames_and_faces(astronaut: np.ndarray, monkeypatch: pytest.MonkeyPatch):
    """Six 256x256 frames panning over the astronaut, and a scripted detector giving the
    true landmarks plus noise for each frame in turn."""
    photo = image_tensor(astronaut)
    frames, faces = [], []
    generator = torch.Generator().manual_seed(1)
    for t in range(6):
        x0, y0 = 120 - 2 * t, 10 + t
        frames.append(photo[:, :, y0 : y0 + 256, x0 : x0 + 256])
        shift = torch.tensor([[1.0, 0.0, -x0], [0.0, 1.0, -y0]], dtype=torch.float64)
        points = transform_points(shift, astronaut_landmarks()) + torch.randn(5, 2, generator=generator, dtype=torch.float64)
        faces.append([FaceDetection.from_landmarks(points, score=0.99)])
    calls = []

    def scripted(image, settings=None):
        calls.append(1)
        return faces[(len(calls) - 1) % len(faces)]

    monkeypatch.setattr(FacePipeline, "load", lambda self: self)
    monkeypatch.setattr(FacePipeline, "detector", property(lambda self: scripted))
    image = torch.cat(frames).permute(0, 2, 3, 1).contiguous()  # ComfyUI IMAGE
    return image, calls


def identity(faces: torch.Tensor) -> torch.Tensor:
    return faces.clone()


def run_node(image, **optional):
    return RestoreFaces().restore(image, identity, 1.0, "largest", "detection_Resnet50_Final", "ellipse", 1.0, 0.97, "fp32", **optional)


@pytest.mark.slow
def test_tracked_batch_smooths_the_pasted_faces(frames_and_faces) -> None:
    image, calls = frames_and_faces
    plain = run_node(image)
    tracked = run_node(image, track_faces=True, smoothing=0.7, temporal_blend=0.3)
    assert len(calls) == 12  # the detector ran on every frame, both times
    for out in (plain, tracked):
        assert out[0].shape == image.shape and out[2].shape == (6, 512, 512, 3)
    # the first frame starts the track: same alignment; later frames are smoothed
    assert torch.allclose(plain[3][0], tracked[3][0])
    assert not torch.allclose(plain[3][5], tracked[3][5])
    # outside the face masks both are the input itself (resize at scale 1 is exact)
    outside = (tracked[1] == 0)[..., None].expand_as(image)
    assert torch.equal(tracked[0][outside], image[outside])


def test_detect_every_k_frames_in_a_batch(frames_and_faces) -> None:
    image, calls = frames_and_faces
    run_node(image, track_faces=True, detect_every=3)
    assert len(calls) == 2


def test_face_colour_fix_and_codeformer_fidelity_inputs(frames_and_faces) -> None:
    image, _ = frames_and_faces
    out = run_node(image[:1], color_fix="wavelet", codeformer_fidelity=0.9)
    assert out[0].shape == (1, 256, 256, 3)


def test_with_fidelity_rebuilds_only_codeformer_runners() -> None:
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x, weight=0.5):
            seen.append(weight)
            return (x,)

    restorer = FaceRestorer(small_gfpgan_descriptor(seed=2))
    assert restorer.with_fidelity(0.2) is restorer  # GFPGAN has no fidelity weight
    restorer.architecture, restorer._module = "CodeFormer", Recorder()
    changed = restorer.with_fidelity(0.2)
    assert changed is not restorer and changed.fidelity == 0.2 and restorer.fidelity == 0.5
    changed._run(torch.zeros(1, 3, 8, 8))
    assert seen == [0.2]


def test_upscale_node_colour_fix(coffee: np.ndarray) -> None:
    import spandrel

    from restorekit.colorfix import color_fix

    from model_factory import tiny_state

    descriptor = spandrel.ModelLoader().load_from_state_dict(tiny_state())
    image = torch.from_numpy(coffee[:32, :48].astype(np.float32) / 255.0)[None]
    plain, _ = UpscaleImage().upscale(image, descriptor, 0.0, 0, 0, "none", "fp32", "model")
    fixed, _ = UpscaleImage().upscale(image, descriptor, 0.0, 0, 0, "none", "fp32", "model", color_fix="wavelet")
    expected = color_fix(plain.permute(0, 3, 1, 2), image.permute(0, 3, 1, 2), "wavelet").permute(0, 2, 3, 1)
    assert torch.allclose(fixed, expected, atol=1e-6)
