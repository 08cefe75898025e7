"""The face pipeline's plumbing with injected detections and cheap restorers: locality of
the paste-back, strength, batching, determinism, output scales, image kinds, no faces,
aligned mode, progress and cancel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from restorekit.errors import CancelledError, InvalidParameterError
from restorekit.faces import FaceDetection, FaceOptions, FacePipeline, FaceRestorer, restore_faces
from restorekit.faces.align import (
    alignment_matrix,
    compose,
    invert_affine,
    paste_window,
    resize_matrix,
    transform_points,
)
from restorekit.faces.background import resize_background, scaled_size
from restorekit.faces.mask import ELLIPSE_CENTRE
from restorekit.imageio import to_gray

from faces_common import astronaut_landmarks, image_tensor, small_gfpgan_descriptor


def invert(faces: torch.Tensor) -> torch.Tensor:
    """A "restorer" whose every output pixel differs from its input: shows what is pasted."""
    return 1.0 - faces


def identity(faces: torch.Tensor) -> torch.Tensor:
    return faces.clone()


@pytest.fixture(scope="module")
def image(astronaut: np.ndarray) -> torch.Tensor:
    return image_tensor(astronaut)


@pytest.fixture(scope="module")
def face() -> list[list[FaceDetection]]:
    return [[FaceDetection.from_landmarks(astronaut_landmarks())]]


@pytest.fixture(scope="module")
def small_restorer() -> FaceRestorer:
    """A real FaceRestorer (fast GFPGAN path, engine precision) on a 64-pixel GFPGAN."""
    return FaceRestorer(small_gfpgan_descriptor(seed=11), batch_size=4)


def test_only_the_masked_region_changes(image: torch.Tensor, face: list) -> None:
    result = restore_faces(image, invert, detections=face, parser="ellipse", outscale=2)
    background = resize_background(image, 2)
    changed = (result.image - background).abs().amax(dim=1, keepdim=True)
    mask = result.face_mask
    assert result.image.shape == (1, 3, 1024, 1024) and mask.shape == (1, 1, 1024, 1024)
    assert torch.equal(result.image[mask.expand_as(result.image) == 0], background[mask.expand_as(background) == 0])
    assert float(changed[mask > 0.9].min()) > 0.01  # the face is replaced...
    assert float(changed[mask == 0].max()) == 0.0  # ...and nothing else
    # the face region is where the face is: around the landmarks, scaled to the output
    ys, xs = torch.nonzero(mask[0, 0] > 0.5, as_tuple=True)
    centre = astronaut_landmarks().mean(0) * 2 + 0.5
    assert abs(float(xs.float().mean()) - float(centre[0])) < 30 and abs(float(ys.float().mean()) - float(centre[1])) < 60


def test_identity_restorer_barely_changes_the_image(image: torch.Tensor, face: list) -> None:
    result = restore_faces(image, identity, detections=face, parser="ellipse", outscale=1)
    difference = (result.image - image).abs()
    assert float(difference.mean()) < 1.0 / 255
    assert float(difference[:, :, 90:150, 195:255].mean()) < 4.0 / 255  # resampled twice, no more


@pytest.mark.slow
def test_strength_zero_is_exactly_the_background_and_skips_the_model(image: torch.Tensor, face: list) -> None:
    calls: list[int] = []

    def counting(faces: torch.Tensor) -> torch.Tensor:
        calls.append(faces.shape[0])
        return invert(faces)

    for outscale in (1, 2.5):
        result = restore_faces(image, counting, detections=face, parser="ellipse", outscale=outscale, strength=0.0)
        assert torch.equal(result.image, resize_background(image, outscale))
        assert result.face_count == 1 and float(result.face_mask.max()) > 0.99  # still located
        assert torch.equal(result.restored_faces, result.original_faces)
    assert calls == []
    # with a background function (an upscaler), strength 0 returns exactly its result
    def nearest(images: torch.Tensor, scale: float) -> torch.Tensor:
        return F.interpolate(images, scale_factor=scale, mode="nearest")

    result = restore_faces(image, counting, detections=face, parser="ellipse", outscale=3, background=nearest, strength=0.0)
    assert torch.equal(result.image, nearest(image, 3))


@pytest.mark.slow
def test_strength_blends_continuously(image: torch.Tensor, face: list) -> None:
    full = restore_faces(image, invert, detections=face, parser="ellipse", strength=1.0)
    half = restore_faces(image, invert, detections=face, parser="ellipse", strength=0.5)
    background = resize_background(image, 1)
    assert torch.allclose(half.image, (full.image + background) / 2, atol=1e-5)
    tiny = restore_faces(image, invert, detections=face, parser="ellipse", strength=1e-4)
    assert float((tiny.image - background).abs().max()) < 2e-4
    assert torch.allclose(half.restored_faces, 0.5 * invert(half.original_faces) + 0.5 * half.original_faces, atol=1e-6)


@pytest.mark.slow
def test_batch_equals_one_by_one_and_repeats_exactly(image: torch.Tensor, small_restorer: FaceRestorer) -> None:
    mirrored = image.flip(-1)
    landmarks = astronaut_landmarks()
    flipped = landmarks.clone()
    flipped[:, 0] = 511 - flipped[:, 0]
    flipped = flipped[[1, 0, 2, 4, 3]]  # left/right swap under a mirror
    detections = [[FaceDetection.from_landmarks(landmarks)], [FaceDetection.from_landmarks(flipped)]]
    pipeline = FacePipeline(small_restorer, options=FaceOptions(parser="ellipse"))
    batch = pipeline.run(torch.cat([image, mirrored]), detections=detections, outscale=1.5)
    first = pipeline.run(image, detections=detections[:1], outscale=1.5)
    second = pipeline.run(mirrored, detections=detections[1:], outscale=1.5)
    assert batch.image.shape == (2, 3, 768, 768) and batch.restored_faces.shape == (2, 3, 512, 512)
    assert float((batch.image[:1] - first.image).abs().max()) < 1e-5
    assert float((batch.image[1:] - second.image).abs().max()) < 1e-5
    assert float((batch.restored_faces[1:] - second.restored_faces).abs().max()) < 1e-5
    again = pipeline.run(torch.cat([image, mirrored]), detections=detections, outscale=1.5)
    assert torch.equal(again.image, batch.image) and torch.equal(again.restored_faces, batch.restored_faces)
    assert [info.image_index for info in batch.faces] == [0, 1]


@pytest.mark.parametrize("outscale", [1.0, 1.5, 2.37, 0.5])
def test_any_output_scale_places_the_face_consistently(image: torch.Tensor, face: list, outscale: float) -> None:
    result = restore_faces(image, invert, detections=face, parser="ellipse", outscale=outscale)
    height, width = scaled_size(512, 512, outscale)
    assert result.image.shape == (1, 3, height, width)
    mask = result.face_mask[0, 0]
    ys, xs = torch.nonzero(mask > 0.5, as_tuple=True)
    # the mask's centre, mapped back to input pixels, is the ellipse's centre in the image
    centre_x = (float(xs.float().mean()) + 0.5) / outscale - 0.5
    centre_y = (float(ys.float().mean()) + 0.5) / outscale - 0.5
    expected = transform_points(invert_affine(alignment_matrix(astronaut_landmarks())), torch.tensor([ELLIPSE_CENTRE]))[0]
    assert centre_x == pytest.approx(float(expected[0]), abs=0.75) and centre_y == pytest.approx(float(expected[1]), abs=0.75)


def test_a_face_larger_than_512_pixels_has_no_visible_box(astronaut: np.ndarray) -> None:
    """At 6x a 200-pixel crop, the face square covers about 1000 output pixels: the mask
    is zero along the whole square's edge and changes slowly, so no soft box shows."""
    crop = image_tensor(astronaut[40:240, 120:320])
    landmarks = astronaut_landmarks() - torch.tensor([120.0, 40.0], dtype=torch.float64)
    result = restore_faces(crop, invert, detections=[[FaceDetection.from_landmarks(landmarks)]], parser="ellipse", outscale=6)
    mask = result.face_mask[0, 0]
    assert mask.shape == (1200, 1200)
    ys, xs = torch.nonzero(mask > 0.01, as_tuple=True)
    assert int(ys.max() - ys.min()) > 512 and int(xs.max() - xs.min()) > 400
    step = max(float(mask.diff(dim=0).abs().max()), float(mask.diff(dim=1).abs().max()))
    assert step < 0.025  # a fade over more than 60 output pixels, no edge
    # zero all along the face square's bounding window (the square the model saw)
    to_output = compose(resize_matrix(6.0, 6.0), invert_affine(result.faces[0].affine))
    x0, y0, w, h = paste_window(to_output, 512, 1200, 1200)
    ring = torch.cat([mask[y0, x0 : x0 + w], mask[y0 + h - 1, x0 : x0 + w], mask[y0 : y0 + h, x0], mask[y0 : y0 + h, x0 + w - 1]])
    assert float(ring.max()) == 0.0
    background = resize_background(crop, 6)
    outside = mask == 0
    assert torch.equal(result.image[0][:, outside], background[0][:, outside])


@pytest.mark.slow
def test_gray_input_gives_gray_output(image: torch.Tensor, face: list) -> None:
    gray = to_gray(image)
    result = restore_faces(gray, invert, detections=face, parser="ellipse", outscale=2)
    assert result.image.shape == (1, 1, 1024, 1024)
    color = restore_faces(gray.expand(-1, 3, -1, -1), invert, detections=face, parser="ellipse", outscale=2)
    assert torch.allclose(result.image, to_gray(color.image), atol=1e-6)


@pytest.mark.slow
def test_alpha_is_carried_and_resized(image: torch.Tensor, face: list) -> None:
    alpha = torch.linspace(0, 1, 512).view(1, 1, 1, 512).expand(1, 1, 512, 512).contiguous()
    result = restore_faces(image, invert, detections=face, parser="ellipse", outscale=2, alpha=alpha)
    without = restore_faces(image, invert, detections=face, parser="ellipse", outscale=2)
    assert torch.equal(result.image, without.image)
    assert result.alpha is not None and result.alpha.shape == (1, 1, 1024, 1024)
    assert torch.allclose(result.alpha, resize_background(alpha, 2), atol=1e-6)
    assert float(result.alpha[0, 0, 500, 0]) < 0.01 and float(result.alpha[0, 0, 500, -1]) > 0.99


def test_no_face_returns_the_background_with_a_notice(image: torch.Tensor) -> None:
    result = restore_faces(image, invert, detections=[[]], parser="ellipse", outscale=2)
    assert torch.equal(result.image, resize_background(image, 2))
    assert result.face_count == 0 and result.restored_faces.shape == (0, 3, 512, 512)
    assert float(result.face_mask.abs().max()) == 0.0
    assert any("No face found" in notice for notice in result.notices)


def test_selection_applies_to_given_detections(image: torch.Tensor) -> None:
    landmarks = astronaut_landmarks()
    faces = [FaceDetection.from_landmarks(landmarks), FaceDetection.from_landmarks(landmarks * 0.5 + 300)]
    largest = restore_faces(image, invert, detections=[faces], parser="ellipse", select="largest")
    assert largest.face_count == 1 and torch.equal(largest.faces[0].detection.landmarks, landmarks)
    second = restore_faces(image, invert, detections=[faces], parser="ellipse", select=1)
    assert second.face_count == 1 and second.faces[0].detection.landmarks[0, 0] > 300
    missing = restore_faces(image, invert, detections=[faces], parser="ellipse", select=5)
    assert missing.face_count == 0 and any("only 2 face" in n for n in missing.notices)
    assert torch.equal(missing.image, resize_background(image, 1))


def test_aligned_mode_restores_whole_crops(image: torch.Tensor) -> None:
    aligned = F.interpolate(image[:, :, 40:240, 120:320], size=(512, 512), mode="bilinear", align_corners=False)
    result = restore_faces(aligned, invert, aligned=True, outscale=1)
    assert torch.allclose(result.image, 1 - aligned, atol=1e-6)
    assert result.restored_faces.shape == (1, 3, 512, 512) and float(result.face_mask.min()) == 1.0
    zero = restore_faces(aligned, invert, aligned=True, outscale=2, strength=0)
    assert torch.equal(zero.image, resize_background(aligned, 2))
    other = restore_faces(image[:, :, :300, :300], invert, aligned=True, outscale=1)
    assert other.image.shape == (1, 3, 300, 300)


def test_parser_module_gives_the_mask(image: torch.Tensor, face: list) -> None:
    """A face parser (any module named like facexlib's ParseNet) drives the paste mask."""

    class ParseNet(torch.nn.Module):
        """Class 1 (skin) where the red channel is bright, background elsewhere."""

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = torch.zeros(x.shape[0], 19, *x.shape[-2:], dtype=x.dtype)
            logits[:, 1] = x[:, 0] - 0.2  # (faces - 0.5) / 0.5 in; skin where red > 0.6
            return logits, x

    pipeline = FacePipeline(invert, parser=ParseNet())
    result = pipeline.run(image, detections=face)
    restored = result.restored_faces[0]  # the mask comes from the restored face, as in facexlib
    expected_inside = restored[0] > 0.6
    assert result.crop_masks.shape == (1, 1, 512, 512)
    assert float(result.crop_masks[0, 0][expected_inside].mean()) > float(result.crop_masks[0, 0][~expected_inside].mean()) + 0.3
    assert float(result.crop_masks[0, 0, :10].max()) == 0.0  # border zeroed
    assert float((result.image - resize_background(image, 1)).abs().max()) > 0.2


@pytest.mark.slow
def test_progress_and_cancel(image: torch.Tensor, face: list, small_restorer: FaceRestorer) -> None:
    messages: list[tuple[int, int, str]] = []
    pipeline = FacePipeline(small_restorer, options=FaceOptions(parser="ellipse"))
    pipeline.run(image, detections=face, progress=lambda d, t, m: messages.append((d, t, m)))
    assert any("restoring faces" in m for _, _, m in messages)
    assert (1, 1, "restoring faces") in messages and (1, 1, "detecting faces") in messages
    with pytest.raises(CancelledError):
        pipeline.run(image, detections=face, cancel=lambda: True)


def test_bad_arguments_are_clear(image: torch.Tensor, face: list) -> None:
    with pytest.raises(InvalidParameterError, match="strength"):
        restore_faces(image, invert, detections=face, strength=1.5)
    with pytest.raises(InvalidParameterError, match="selection"):
        restore_faces(image, invert, detections=face, select="biggest")
    with pytest.raises(InvalidParameterError, match="Images must be"):
        restore_faces(image[0], invert, detections=face)
    with pytest.raises(InvalidParameterError, match="background"):
        restore_faces(image, invert, detections=face, background=lambda x, s: x[:, :1])
    with pytest.raises(InvalidParameterError, match="output scale"):
        restore_faces(image, invert, detections=face, outscale=0)
    with pytest.raises(InvalidParameterError, match="Unknown face option"):
        restore_faces(image, invert, detections=face, colour="blue")


def test_faces_beyond_max_faces_are_dropped_with_a_notice(astronaut) -> None:
    """A detector gone wrong (or a crowd) cannot exhaust memory: only the largest
    ``max_faces`` are restored, and the user is told."""
    from restorekit.faces import FaceDetection, FaceOptions, FacePipeline

    from faces_common import astronaut_landmarks, image_tensor

    image = image_tensor(astronaut)
    big = FaceDetection.from_landmarks(astronaut_landmarks())
    small = [FaceDetection.from_landmarks(astronaut_landmarks() * 0.25 + 10 * i) for i in range(5)]
    pipeline = FacePipeline(lambda faces: faces, options=FaceOptions(parser="ellipse", max_faces=2))
    result = pipeline.run(image, detections=[[*small, big]])
    assert result.face_count == 2 and result.restored_faces.shape[0] == 2
    assert any(f.detection is big for f in result.faces)
    assert any("6 faces found; only the 2 largest" in n for n in result.notices)
