"""Face detection around facexlib's RetinaFace: priors, decoding, NMS, filters, selection,
and the whole detector against facexlib's own ``detect_faces`` on the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from restorekit.architectures import build_module
from restorekit.device import plan_execution
from restorekit.errors import InvalidParameterError
from restorekit.faces.detect import (
    DetectionSettings,
    FaceDetection,
    FaceDetector,
    decode_boxes,
    decode_landmarks,
    nms,
    parse_selection,
    prior_boxes,
    select_faces,
)

from faces_common import astronaut_landmarks, image_tensor, random_network_state


@pytest.fixture(scope="module")
def mobilenet() -> torch.nn.Module:
    """facexlib's RetinaFace (MobileNet-0.25) with seeded random weights."""
    params = {"network_name": "mobile0.25"}
    module = build_module("RetinaFace", params)
    module.load_state_dict(random_network_state("RetinaFace", params, seed=3))
    return module.eval()


@pytest.mark.parametrize("size", [(512, 512), (37, 61), (130, 97)])
def test_prior_boxes_match_facexlib(size: tuple[int, int]) -> None:
    from facexlib.detection.retinaface import generate_config
    from facexlib.detection.retinaface_utils import PriorBox

    reference = PriorBox(generate_config("mobile0.25"), image_size=size).forward()
    ours = prior_boxes(*size)
    assert ours.shape == reference.shape
    assert torch.allclose(ours, reference, atol=1e-6)


def test_decoding_matches_facexlib() -> None:
    from facexlib.detection.retinaface_utils import decode, decode_landm

    priors = prior_boxes(64, 80)
    generator = torch.Generator().manual_seed(1)
    loc = torch.randn(priors.shape[0], 4, generator=generator)
    landmarks = torch.randn(priors.shape[0], 10, generator=generator)
    assert torch.allclose(decode_boxes(loc, priors), decode(loc, priors, [0.1, 0.2]), atol=1e-6)
    assert torch.allclose(decode_landmarks(landmarks, priors).reshape(-1, 10), decode_landm(landmarks, priors, [0.1, 0.2]), atol=1e-6)


def test_nms_matches_torchvision() -> None:
    import torchvision

    generator = torch.Generator().manual_seed(2)
    corners = torch.rand(300, 2, generator=generator) * 200
    sizes = torch.rand(300, 2, generator=generator) * 60 + 5
    boxes = torch.cat([corners, corners + sizes], dim=1)
    scores = torch.rand(300, generator=generator)
    for threshold in (0.2, 0.4, 0.7):
        assert nms(boxes, scores, threshold).tolist() == torchvision.ops.nms(boxes, scores, threshold).tolist()
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.4).numel() == 0


def _separated_threshold(network: torch.nn.Module, image: np.ndarray, top: int = 40) -> float:
    """A confidence threshold in the widest gap between the top scores, so that float
    rounding cannot move a random-weight score across it."""
    from restorekit.faces.detect import retinaface_outputs

    x = torch.from_numpy(image[:, :, ::-1].astype(np.float32)).permute(2, 0, 1)[None]
    x = x - torch.tensor([104.0, 117.0, 123.0]).view(1, 3, 1, 1)
    with torch.inference_mode():
        _, logits, _ = retinaface_outputs(network, x)
    scores = torch.softmax(logits[0], dim=-1)[:, 1].sort(descending=True).values[:top]
    gaps = scores[:-1] - scores[1:]
    k = int(gaps[4:].argmax()) + 4  # keep at least 5 candidates above it
    return float(scores[k] + scores[k + 1]) / 2


@pytest.mark.slow
def test_detector_matches_facexlib_detect_faces(astronaut: np.ndarray, mobilenet: torch.nn.Module) -> None:
    """Same weights, same image: the same boxes, landmarks and scores as facexlib's own
    detection (its thresholds lowered so that random weights yield faces)."""
    image = astronaut[:256, :320]
    threshold = _separated_threshold(mobilenet, image)
    with torch.no_grad():  # as facexlib's FaceRestoreHelper calls it
        reference = mobilenet.detect_faces(image[:, :, ::-1].copy(), conf_threshold=threshold, nms_threshold=0.4)
    assert len(reference) >= 2  # the comparison must have something to compare
    settings = DetectionSettings(confidence=threshold, min_eye_distance=0.0, max_side=0)
    faces = FaceDetector(mobilenet, plan_execution("cpu", "fp32"), settings)(image_tensor(image))
    assert len(faces) == len(reference)
    ours = np.array([[*f.box, f.score, *f.landmarks.flatten().tolist()] for f in faces])
    order = np.lexsort((reference[:, 0], -reference[:, 4]))
    ours = ours[np.lexsort((ours[:, 0], -ours[:, 4]))]
    np.testing.assert_allclose(ours[:, :4], reference[order, :4], atol=2e-3)
    np.testing.assert_allclose(ours[:, 4], reference[order, 4], atol=1e-5)
    np.testing.assert_allclose(ours[:, 5:], reference[order, 5:], atol=2e-3)


@pytest.mark.slow
def test_bounded_resolution_maps_detections_back(astronaut: np.ndarray, mobilenet: torch.nn.Module) -> None:
    big = F.interpolate(image_tensor(astronaut), size=(700, 900), mode="bilinear", align_corners=False)
    plan = plan_execution("cpu", "fp32")
    small = F.interpolate(big, size=(350, 450), mode="bilinear", align_corners=False, antialias=True)
    threshold = _separated_threshold(mobilenet, (small[0].permute(1, 2, 0).numpy() * 255).astype(np.float32))
    bounded = FaceDetector(mobilenet, plan, DetectionSettings(confidence=threshold, min_eye_distance=0.0, max_side=450))(big)
    direct = FaceDetector(mobilenet, plan, DetectionSettings(confidence=threshold, min_eye_distance=0.0, max_side=0))(small)
    assert len(bounded) == len(direct) > 0
    for a, b in zip(bounded, direct, strict=True):
        assert a.box == pytest.approx((b.box[0] * 2, b.box[1] * 2, b.box[2] * 2, b.box[3] * 2), abs=1e-3)
        assert torch.allclose(a.landmarks, b.landmarks * 2, atol=1e-3)


@pytest.mark.slow
def test_filters_drop_small_faces_and_close_eyes(astronaut: np.ndarray, mobilenet: torch.nn.Module) -> None:
    plan = plan_execution("cpu", "fp32")
    image = image_tensor(astronaut[:256, :320])
    everything = FaceDetector(mobilenet, plan, DetectionSettings(confidence=0.49, min_eye_distance=0.0, max_side=0))(image)
    assert len(everything) > 10
    sizes = sorted(max(f.width, f.height) for f in everything)
    cut = sizes[len(sizes) // 2]
    big_only = FaceDetector(mobilenet, plan, DetectionSettings(confidence=0.49, min_eye_distance=0.0, min_size=cut, max_side=0))(image)
    assert 0 < len(big_only) < len(everything)
    assert all(max(f.width, f.height) >= cut for f in big_only)
    eyes = sorted(f.eye_distance for f in everything)
    wide = FaceDetector(mobilenet, plan, DetectionSettings(confidence=0.49, min_eye_distance=eyes[len(eyes) // 2], max_side=0))(image)
    assert all(f.eye_distance >= eyes[len(eyes) // 2] for f in wide) and len(wide) < len(everything)


def test_settings_are_validated() -> None:
    with pytest.raises(InvalidParameterError, match="confidence"):
        DetectionSettings(confidence=1.5)
    with pytest.raises(InvalidParameterError, match="NMS"):
        DetectionSettings(nms=0.0)
    with pytest.raises(InvalidParameterError, match="detection size"):
        DetectionSettings(max_side=10)


def _face(x: float, y: float, size: float) -> FaceDetection:
    return FaceDetection((x, y, x + size, y + size), astronaut_landmarks() * 0 + torch.tensor([x + size / 2, y + size / 2], dtype=torch.float64) + torch.arange(10, dtype=torch.float64).reshape(5, 2))


def test_selection_all_largest_center_and_index() -> None:
    faces = [_face(300, 10, 50), _face(10, 10, 80), _face(140, 140, 30)]
    ordered = select_faces(faces, "all", 320, 400)
    assert [f.box[0] for f in ordered] == [10, 140, 300]  # reading order, left to right
    assert select_faces(faces, "largest", 320, 400)[0].box[0] == 10
    assert select_faces(faces, "center", 320, 400)[0].box[0] == 140
    assert select_faces(faces, 2, 320, 400)[0].box[0] == 300
    assert select_faces(faces, "1", 320, 400)[0].box[0] == 140
    assert select_faces(faces, 5, 320, 400) == []
    # the largest face counts only its area inside the image
    partly_outside = _face(-170, 0, 180)  # 180x180, but only 10x180 inside
    assert select_faces([partly_outside, _face(100, 100, 60)], "largest", 320, 400)[0].box[0] == 100


def test_selection_values_are_validated() -> None:
    assert parse_selection("Centre") == "center"
    for bad in ("biggest", -1, "1.5", True):
        with pytest.raises(InvalidParameterError):
            parse_selection(bad)
