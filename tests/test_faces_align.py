"""Face geometry: similarity estimation, warps, round trips, and the reference (facexlib)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from restorekit.errors import InvalidParameterError
from restorekit.faces.align import (
    FFHQ_TEMPLATE_512,
    alignment_matrix,
    compose,
    crop_face,
    estimate_similarity,
    invert_affine,
    linear_scale,
    paste_window,
    resize_matrix,
    transform_points,
    warp_affine,
)

from conftest import psnr
from faces_common import astronaut_landmarks, image_tensor


def similarity(angle: float, scale: float, tx: float, ty: float) -> torch.Tensor:
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return torch.tensor([[c, -s, tx], [s, c, ty]], dtype=torch.float64)


def test_similarity_recovers_a_known_transform_exactly() -> None:
    truth = similarity(0.3, 2.7, -40.0, 12.5)
    points = FFHQ_TEMPLATE_512 / 3.0 + 17.0
    estimated = estimate_similarity(points, transform_points(truth, points))
    assert torch.allclose(estimated, truth, atol=1e-10)
    assert linear_scale(estimated) == pytest.approx(2.7)


def test_similarity_is_least_squares_and_never_reflects() -> None:
    generator = torch.Generator().manual_seed(0)
    source = torch.rand(5, 2, generator=generator, dtype=torch.float64) * 100
    mirrored = source * torch.tensor([-1.0, 1.0], dtype=torch.float64)
    matrix = estimate_similarity(source, mirrored)
    assert torch.linalg.det(matrix[:, :2]) >= 0  # a rotation-scale, not a mirror
    # perturbing the optimum never lowers the squared error
    def error(m: torch.Tensor) -> float:
        return float(((transform_points(m, source) - mirrored) ** 2).sum())

    best = error(matrix)
    for delta in (1e-3, -1e-3):
        for i in range(2):
            for j in range(3):
                moved = matrix.clone()
                moved[i, j] += delta
                if j < 2:  # keep it a similarity: move the paired entry too
                    moved[1 - i, 1 - j] += delta if i == j else -delta
                assert error(moved) >= best - 1e-9


def test_degenerate_landmarks_are_refused() -> None:
    with pytest.raises(InvalidParameterError, match="one point"):
        alignment_matrix(torch.ones(5, 2))
    with pytest.raises(InvalidParameterError, match="NaN"):
        alignment_matrix(torch.full((5, 2), float("nan")))


def test_affine_helpers_compose_and_invert() -> None:
    a, b = similarity(0.2, 1.5, 3.0, -2.0), similarity(-1.1, 0.4, 10.0, 5.0)
    points = torch.rand(7, 2, dtype=torch.float64) * 50
    assert torch.allclose(transform_points(compose(a, b), points), transform_points(a, transform_points(b, points)))
    assert torch.allclose(transform_points(compose(invert_affine(a), a), points), points)
    # resizing by 2 maps pixel edges onto pixel edges: -0.5 -> -0.5, 9.5 -> 19.5
    edges = torch.tensor([[-0.5, -0.5], [9.5, 9.5]], dtype=torch.float64)
    assert torch.allclose(transform_points(resize_matrix(2.0, 2.0), edges), torch.tensor([[-0.5, -0.5], [19.5, 19.5]], dtype=torch.float64))


def test_warp_identity_and_integer_shift_are_exact(astronaut: np.ndarray) -> None:
    image = image_tensor(astronaut)[:, :, :64, :80]
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(warp_affine(image, identity, (0, 0, 80, 64)), image, atol=1e-6)
    shift = torch.tensor([[1.0, 0.0, 5.0], [0.0, 1.0, -3.0]], dtype=torch.float64)
    out = warp_affine(image, shift, (5, 0, 75, 61))
    assert torch.allclose(out, image[:, :, 3:64, 0:75], atol=1e-6)


def test_warp_border_value_fills_outside(astronaut: np.ndarray) -> None:
    image = image_tensor(astronaut)[:, :, :32, :32]
    shift = torch.tensor([[1.0, 0.0, 100.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    out = warp_affine(image, shift, (0, 0, 16, 16), border=(0.25, 0.5, 0.75))
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([0.25, 0.5, 0.75]))


def test_shrinking_warp_is_antialiased(astronaut: np.ndarray) -> None:
    """A 1-pixel checkerboard shrunk 4x must come out flat gray, not aliased stripes."""
    board = ((torch.arange(256)[:, None] + torch.arange(256)[None, :]) % 2).float()[None, None]
    quarter = torch.tensor([[0.25, 0.0, 0.0], [0.0, 0.25, 0.0]], dtype=torch.float64)
    out = warp_affine(board, quarter, (4, 4, 56, 56))
    assert float((out - 0.5).abs().max()) < 0.02
    aliased = warp_affine(board, quarter, (4, 4, 56, 56), antialias=False)
    assert float((aliased - 0.5).abs().max()) > 0.4


def test_astronaut_crop_is_aligned_to_the_template(astronaut: np.ndarray) -> None:
    landmarks = astronaut_landmarks()
    matrix = alignment_matrix(landmarks)
    mapped = transform_points(matrix, landmarks)
    # hand-placed landmarks fit the template within a few aligned pixels
    assert float((mapped - FFHQ_TEMPLATE_512).norm(dim=1).max()) < 12.0
    crop = crop_face(image_tensor(astronaut), matrix)
    assert crop.shape == (1, 3, 512, 512)
    # eyes are dark, the skin between them is bright
    left_eye = crop[0, :, 236:244, 189:197].mean()
    between = crop[0, :, 236:244, 252:260].mean()
    assert float(between - left_eye) > 0.2


def test_alignment_round_trip_inside_the_face(astronaut: np.ndarray) -> None:
    """Warp to the aligned crop (3x larger) and back, inside the face (eyes to mouth):
    point-sampled back, only interpolation error remains (> 45 dB); with the antialias
    filter that paste-back uses, the band near the input's Nyquist limit is filtered too
    (> 34 dB)."""
    image = image_tensor(astronaut)
    matrix = alignment_matrix(astronaut_landmarks())
    crop = crop_face(image, matrix)
    face = (slice(None), slice(None), slice(85, 160), slice(185, 265))
    sampled = warp_affine(crop, invert_affine(matrix), (0, 0, 512, 512), mode="bicubic", antialias=False)
    assert psnr(sampled[face], image[face]) > 45.0
    assert float((sampled[face] - image[face]).abs().mean()) < 1.0 / 255
    filtered = warp_affine(crop, invert_affine(matrix), (0, 0, 512, 512), mode="bicubic")
    assert psnr(filtered[face], image[face]) > 34.0


def test_paste_window_covers_the_mapped_square() -> None:
    matrix = similarity(0.4, 0.5, 100.0, 50.0)
    window = paste_window(matrix, 512, 1000, 1000)
    assert window is not None
    x0, y0, w, h = window
    corners = transform_points(matrix, torch.tensor([[-0.5, -0.5], [511.5, -0.5], [-0.5, 511.5], [511.5, 511.5]], dtype=torch.float64))
    assert x0 <= corners[:, 0].min() and x0 + w >= corners[:, 0].max()
    assert y0 <= corners[:, 1].min() and y0 + h >= corners[:, 1].max()
    assert paste_window(similarity(0.0, 1.0, 5000.0, 0.0), 512, 100, 100) is None


# --------------------------------------------------------------------------- reference


def test_alignment_matches_facexlib(astronaut: np.ndarray) -> None:
    """facexlib's FaceRestoreHelper (LMEDS estimate, cv2.warpAffine) on the same landmarks:
    the same matrix to 1e-4 px and the same crop up to its uint8 rounding."""
    from face_reference import face_helper

    landmarks = astronaut_landmarks()
    helper = face_helper(2)
    helper.read_image(astronaut[:, :, ::-1].copy())
    helper.all_landmarks_5 = [landmarks.numpy().copy()]
    helper.align_warp_face()
    ours = alignment_matrix(landmarks)
    theirs = torch.from_numpy(helper.affine_matrices[0])
    points = transform_points(ours, landmarks) - transform_points(theirs, landmarks)
    assert float(points.norm(dim=1).max()) < 1e-4
    reference = torch.from_numpy(helper.cropped_faces[0][:, :, ::-1].astype(np.float32)).permute(2, 0, 1)[None]
    crop = crop_face(image_tensor(astronaut), ours) * 255.0
    assert float((crop - reference).abs().max()) <= 0.51  # facexlib rounds to uint8
    assert float((crop - reference).abs().mean()) < 0.3


@pytest.mark.slow
@pytest.mark.parametrize("scale", [1, 2, 3])
def test_paste_back_geometry_matches_facexlib(astronaut: np.ndarray, scale: int) -> None:
    """Paste a coordinate ramp back with facexlib and with us; decode where each output
    pixel came from in the aligned face. facexlib's inverse affine adds 0.5*s instead of
    the exact 0.5*(s-1) that lines pixel edges up, so it sits half an output pixel right of
    and below ours for s > 1; apart from that the geometry agrees to 0.02 output pixels."""
    from restorekit.faces import FaceDetection, restore_faces

    from face_reference import face_helper

    landmarks = astronaut_landmarks()
    axis = torch.arange(512, dtype=torch.float32) / 511.0
    ramp = torch.stack([axis[None, :].expand(512, 512), axis[:, None].expand(512, 512), torch.full((512, 512), 0.5)])[None]

    helper = face_helper(scale, use_parse=False)
    helper.read_image(astronaut[:, :, ::-1].copy())
    helper.all_landmarks_5 = [landmarks.numpy().copy()]
    helper.align_warp_face()
    helper.get_inverse_affine()
    helper.add_restored_face((ramp[0].permute(1, 2, 0).numpy()[:, :, ::-1] * 65535.0).astype(np.float32))
    size = 512 * scale
    background = np.full((size, size, 3), 300.0, dtype=np.float32)  # > 256: facexlib keeps 16 bits
    reference = helper.paste_faces_to_input_image(upsample_img=background)[:, :, ::-1].astype(np.float64) / 65535.0

    result = restore_faces(
        image_tensor(astronaut),
        lambda faces: ramp.expand(faces.shape[0], -1, -1, -1),
        outscale=scale,
        detections=[[FaceDetection.from_landmarks(landmarks)]],
        parser="ellipse",
    )
    ours = result.image[0].permute(1, 2, 0).double().numpy()
    inside = result.face_mask[0, 0].numpy() > 0.999
    assert inside.sum() > 2000 * scale * scale
    # output pixels -> aligned pixels is linear; facexlib's picture is ours moved by +0.5 px
    # in x and y, so at one output pixel it shows the aligned point 0.5 px up-left of ours
    to_aligned = alignment_matrix(landmarks)[:, :2].numpy() / scale
    aligned_per_output = linear_scale(alignment_matrix(landmarks)) / scale
    shift = 0.5 if scale > 1 else 0.0
    for channel in (0, 1):
        ours_coord = ours[:, :, channel][inside] * 511.0
        ref_coord = reference[:, :, channel][inside] * 511.0
        expected = -shift * (to_aligned[channel, 0] + to_aligned[channel, 1])
        error_px = (ref_coord - ours_coord - expected) / aligned_per_output
        assert abs(float(np.median(error_px))) < 0.02, channel
        assert float(np.percentile(np.abs(error_px), 99)) < 0.1, channel
