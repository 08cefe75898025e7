"""The fast eager form of the VQGAN-style face restorers (RestoreFormer, CodeFormer) against
spandrel's networks, and the module views it is built on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from restorekit.faces.align import alignment_matrix, crop_face
from restorekit.faces.vqgan import FastResidualBlock, with_fast_residual_blocks
from restorekit.module_views import replace_modules

from faces_common import astronaut_landmarks, image_tensor, random_network_state


def test_a_view_copies_only_the_way_to_what_it_replaces() -> None:
    """replace_modules: the replaced module runs in the view; the modules on the way to it are
    shallow copies sharing their parameters; untouched subtrees and the original stay as they
    were; nothing replaced gives the module itself."""
    torch.manual_seed(0)
    network = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()), nn.Sequential(nn.Conv2d(4, 4, 1)))
    view = replace_modules(network, lambda node: nn.Tanh() if isinstance(node, nn.ReLU) else None)
    assert isinstance(view[0][1], nn.Tanh) and isinstance(network[0][1], nn.ReLU)  # the original unchanged
    assert view is not network and view[0] is not network[0]  # the way to the replaced module: copies
    assert view[1] is network[1]  # an untouched subtree: the original
    assert view[0][0].weight is network[0][0].weight  # parameters shared, never copied
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(view(x), network[1](torch.tanh(network[0][0](x))))
    assert replace_modules(network, lambda node: None) is network


def _astronaut_faces(astronaut: np.ndarray, size: int) -> torch.Tensor:
    """Two aligned faces in [-1, 1]: the astronaut and her mirror image, (2, 3, size, size)."""
    face = crop_face(image_tensor(astronaut), alignment_matrix(astronaut_landmarks(), size=size), size=size)
    return torch.cat([face, face.flip(-1)]) * 2 - 1


def _check_fast_form(network: nn.Module, x: torch.Tensor, call, tolerance: float) -> None:
    view = with_fast_residual_blocks(network)
    blocks = [m for m in view.modules() if isinstance(m, FastResidualBlock)]
    assert blocks and not any(isinstance(m, FastResidualBlock) for m in network.modules())  # original unchanged
    assert {id(p) for p in view.parameters()} == {id(p) for p in network.parameters()}  # shared
    assert any(block.shortcut is not None for block in blocks)  # blocks that change width are covered
    channels_last = with_fast_residual_blocks(network, channels_last=True)  # as a channels_last plan runs it
    with torch.inference_mode():
        reference, fast = call(network, x), call(view, x)
        fast_channels_last = call(channels_last, x.contiguous(memory_format=torch.channels_last))
    assert float(reference.std()) > 0.05
    assert float((fast - reference).abs().max()) <= tolerance  # silu vs x * sigmoid(x): float rounding
    assert float((fast_channels_last - reference).abs().max()) <= tolerance


@pytest.mark.slow
def test_fast_restoreformer_equals_spandrels(astronaut: np.ndarray) -> None:
    """RestoreFormer (random weights, spandrel's full network) on two 128x128 faces: the fast
    residual blocks give spandrel's output within 1e-4 in fp32 (outputs in [-1, 1])."""
    import spandrel

    descriptor = spandrel.ModelLoader().load_from_state_dict(random_network_state("RestoreFormer", {}, seed=2)).eval()
    _check_fast_form(descriptor.model, _astronaut_faces(astronaut, 128), lambda net, x: net(x)[0], 1e-4)


@pytest.mark.slow
def test_fast_codeformer_equals_spandrels(astronaut: np.ndarray) -> None:
    """CodeFormer (random weights, the registry's shapes) on one 512x512 face, fidelity 0.5:
    within 5e-3, under an 8-bit level (7.8e-3 on [-1, 1]): measured 1.3e-4, and with
    channels_last maps, whose convolutions round differently, 9.5e-4 with two threads and
    2.2e-3 under the CI's two single-threaded workers (its transformer and codebook lookup
    amplify rounding)."""
    pytest.importorskip("spandrel_extra_arches", reason="CodeFormer needs the optional spandrel_extra_arches (the codeformer extra)")
    import spandrel

    from restorekit.faces.restore import install_extra_arches

    install_extra_arches()
    descriptor = spandrel.ModelLoader().load_from_state_dict(random_network_state("CodeFormer", {}, seed=3)).eval()
    _check_fast_form(descriptor.model, _astronaut_faces(astronaut, 512)[:1], lambda net, x: net(x, weight=0.5)[0], 5e-3)
