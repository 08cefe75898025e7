"""Paste-back masks: facexlib's parsing-mask recipe and the feathered ellipse."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from restorekit.architectures import build_module
from restorekit.errors import ModelIncompatibleError
from restorekit.faces.align import alignment_matrix, crop_face
from restorekit.faces.mask import (
    CELEBAMASK_HQ_LABELS,
    EXCLUDED_CLASSES,
    FACE_PARSING_PYTORCH_LABELS,
    PARSERS,
    ellipse_extent,
    ellipse_mask,
    gaussian_blur,
    inference_parser,
    labels_mask,
    parse_labels,
    parser_spec,
    smooth_mask,
)

from faces_common import astronaut_landmarks, image_tensor, random_network_state

FACEXLIB_COLORMAP = [0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 0, 255, 0, 0, 0]
"""``MASK_COLORMAP`` of facexlib's paste_faces_to_input_image (ParseNet class indices)."""


def test_parsenet_classes_match_facexlib_colormap() -> None:
    keep = PARSERS["ParseNet"].keep
    assert keep.tolist() == [c / 255 for c in FACEXLIB_COLORMAP]
    excluded = {CELEBAMASK_HQ_LABELS[i] for i, c in enumerate(FACEXLIB_COLORMAP) if c == 0}
    assert excluded == set(EXCLUDED_CLASSES) == {"background", "hat", "neck_l", "neck", "cloth"}


def test_bisenet_excludes_the_same_classes_by_name() -> None:
    keep = PARSERS["BiSeNet"].keep
    excluded = {FACE_PARSING_PYTORCH_LABELS[i] for i in range(19) if keep[i] == 0}
    assert excluded == set(EXCLUDED_CLASSES)
    assert sorted(FACE_PARSING_PYTORCH_LABELS) == sorted(CELEBAMASK_HQ_LABELS)


@pytest.mark.parametrize("shape", [(2, 1, 64, 80), (1, 3, 40, 40)])
def test_gaussian_blur_matches_opencv(shape: tuple[int, ...]) -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(shape, generator=generator)
    ours = gaussian_blur(images, 15, 3.0)
    for n in range(shape[0]):
        for c in range(shape[1]):
            reference = cv2.GaussianBlur(images[n, c].numpy(), (15, 15), 3.0)
            np.testing.assert_allclose(ours[n, c].numpy(), reference, atol=1e-5)


def test_smooth_mask_matches_facexlib_recipe() -> None:
    """Blur twice (101, sigma 11), zero a 10-px border: facexlib's numbers."""
    hard = np.zeros((512, 512), np.float64)
    cv2.ellipse(hard, (256, 290), (150, 190), 0, 0, 360, 255, -1)
    hard[400:, 200:300] = 0  # a notch, like an excluded neck
    reference = cv2.GaussianBlur(hard, (101, 101), 11)
    reference = cv2.GaussianBlur(reference, (101, 101), 11)
    reference[:10, :] = 0
    reference[-10:, :] = 0
    reference[:, :10] = 0
    reference[:, -10:] = 0
    reference = reference / 255.0
    ours = smooth_mask(torch.from_numpy(hard / 255.0).float()[None, None])[0, 0].numpy()
    np.testing.assert_allclose(ours, reference, atol=2e-5)


def _small_parsenet(seed: int) -> torch.nn.Module:
    """facexlib's ParseNet (a 64-pixel one, to keep tests fast) with random weights and
    random BatchNorm statistics, so that folding them is really exercised."""
    params = {"in_size": 64, "out_size": 64, "parsing_ch": 19}
    parser = build_module("ParseNet", params)
    state = random_network_state("ParseNet", params, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    for key, value in state.items():
        if key.endswith(("running_mean", "norm.norm.bias")):
            value.copy_(torch.randn(value.shape, generator=generator) * 0.1)
        elif key.endswith(("running_var", "norm.norm.weight")):
            value.copy_(torch.rand(value.shape, generator=generator) + 0.5)
    state["out_mask_conv.conv2d.bias"].zero_()  # so that random labels vary over the face
    parser.load_state_dict(state)
    return parser.eval()


@pytest.mark.slow
def test_inference_parsenet_computes_the_modules_logits(astronaut: np.ndarray) -> None:
    """BatchNorm folded, no-op layers dropped, image head skipped: the same logits as the
    module's own forward, and the labels facexlib's paste-back takes (argmax of the first
    output on faces normalised to [-1, 1])."""
    parser = _small_parsenet(seed=2)
    faces = crop_face(image_tensor(astronaut), alignment_matrix(astronaut_landmarks(), size=64), size=64)
    network, spec = inference_parser(parser)
    assert inference_parser(parser)[0] is network  # made once per module
    with torch.no_grad():
        reference = parser((faces - 0.5) / 0.5)[0]
        ours = network((faces - 0.5) / 0.5)
    assert float((ours - reference).abs().max()) < 1e-4 * float(reference.abs().max())
    labels = parse_labels(network, spec, faces)
    top2 = reference.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-3
    assert torch.equal(labels[clear], reference.argmax(dim=1)[clear])
    assert len(torch.unique(labels)) >= 2
    # the original module is untouched
    assert any(type(m).__name__ == "BatchNorm2d" for m in parser.modules())
    assert not any(type(m).__name__ == "BatchNorm2d" for m in network.modules())


def test_labels_mask_matches_facexlib_recipe() -> None:
    """Labels of every class in patches: the mask facexlib's paste-back computes from them
    (MASK_COLORMAP, two 101-tap Gaussian blurs, 10-px border zeroed)."""
    generator = torch.Generator().manual_seed(5)
    patches = torch.randint(0, 19, (1, 16, 16), generator=generator)
    labels = patches.repeat_interleave(32, dim=1).repeat_interleave(32, dim=2)
    labels_np = labels[0].numpy()
    mask = np.zeros(labels_np.shape)
    for index, color in enumerate(FACEXLIB_COLORMAP):
        mask[labels_np == index] = color
    mask = cv2.GaussianBlur(mask, (101, 101), 11)
    mask = cv2.GaussianBlur(mask, (101, 101), 11)
    mask[:10, :] = 0
    mask[-10:, :] = 0
    mask[:, :10] = 0
    mask[:, -10:] = 0
    reference = mask / 255.0
    ours = labels_mask(labels, PARSERS["ParseNet"])
    assert ours.shape == (1, 1, 512, 512) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours[0, 0].numpy(), reference, atol=2e-5)


def test_unknown_parser_is_refused() -> None:
    with pytest.raises(ModelIncompatibleError, match="face parser"):
        parser_spec(torch.nn.Conv2d(3, 3, 1))


def test_ellipse_mask_is_soft_inside_the_crop_and_zero_at_its_border() -> None:
    mask = ellipse_mask(3)
    assert mask.shape == (3, 1, 512, 512)
    assert torch.equal(mask[0], mask[2])
    m = mask[0, 0]
    assert float(m[288, 256]) == 1.0  # centre of the face
    left, top, right, bottom = ellipse_extent()
    assert left > 0 and top > 0 and right < 511 and bottom < 511
    border = torch.cat([m[:16].flatten(), m[-16:].flatten(), m[:, :16].flatten(), m[:, -16:].flatten()])
    assert float(border.max()) == 0.0
    # the eyes, nose and mouth of the FFHQ template are fully inside
    for x, y in [(193, 240), (319, 240), (257, 314), (201, 371), (313, 371)]:
        assert float(m[y, x]) == 1.0
    # smooth: no step larger than a few percent between neighbours
    assert float(m.diff(dim=0).abs().max()) < 0.04 and float(m.diff(dim=1).abs().max()) < 0.04
    half = ellipse_mask(1, 256)[0, 0]
    assert float((half - torch.nn.functional.interpolate(m[None, None], size=(256, 256), mode="area")[0, 0]).abs().max()) < 0.02
