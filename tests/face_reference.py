"""The reference face pipeline (facexlib's FaceRestoreHelper, GFPGAN's GFPGANer), built
without letting either download anything: their networks are given to them.

Used only by tests and benchmarks, never by the engine.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

FFHQ_TEMPLATE = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935], [201.26117, 371.41043], [313.08905, 371.15118]]
)


def apply_basicsr_shim() -> None:
    """basicsr imports ``torchvision.transforms.functional_tensor``, gone from torchvision."""
    import torchvision.transforms.functional as functional

    sys.modules.setdefault("torchvision.transforms.functional_tensor", functional)


def face_helper(upscale: float, *, detector: Any = None, parser: Any = None, use_parse: bool = True, device: str = "cpu") -> Any:
    """A facexlib ``FaceRestoreHelper`` as GFPGANer builds it, minus its downloading
    ``__init__``: same template, crop size and settings, with our networks plugged in."""
    import torch
    from facexlib.utils.face_restoration_helper import FaceRestoreHelper

    helper = object.__new__(FaceRestoreHelper)
    helper.template_3points = False
    helper.upscale_factor = upscale
    helper.crop_ratio = (1, 1)
    helper.face_size = (512, 512)
    helper.face_template = FFHQ_TEMPLATE.copy()
    helper.save_ext = "png"
    helper.pad_blur = False
    helper.all_landmarks_5 = []
    helper.det_faces = []
    helper.affine_matrices = []
    helper.inverse_affine_matrices = []
    helper.cropped_faces = []
    helper.restored_faces = []
    helper.pad_input_imgs = []
    helper.device = torch.device(device)
    helper.face_det = detector
    helper.use_parse = use_parse
    helper.face_parse = parser
    return helper


def reference_network(architecture: str, state: dict[str, Any]) -> Any:
    """The reference implementation of a face restorer holding ``state``, in eval mode:
    gfpgan's own ``GFPGANv1Clean`` (as ``GFPGANer(arch="clean")`` builds it) and
    ``RestoreFormer`` (``arch="RestoreFormer"``). CodeFormer has no installable reference
    package (its code lives in sczhou's repository), so it is spandrel's module, which
    ComfyUI's face-restore packs drive through this same facexlib loop."""
    apply_basicsr_shim()
    if architecture == "GFPGANv1Clean":
        from gfpgan.archs.gfpganv1_clean_arch import GFPGANv1Clean

        network = GFPGANv1Clean(
            out_size=512,
            num_style_feat=512,
            channel_multiplier=2,
            decoder_load_path=None,
            fix_decoder=False,
            num_mlp=8,
            input_is_latent=True,
            different_w=True,
            narrow=1,
            sft_half=True,
        )
    elif architecture == "RestoreFormer":
        from gfpgan.archs.restoreformer_arch import RestoreFormer

        network = RestoreFormer()
    elif architecture == "CodeFormer":
        from restorekit.architectures import build_module

        network = build_module("CodeFormer", {})
    else:
        raise ValueError(f"no reference face restorer for {architecture}")
    network.load_state_dict(state, strict=True)
    return network.eval()


def gfpganer(
    gfpgan_state: dict[str, Any],
    upscale: float,
    *,
    detector: Any = None,
    parser: Any = None,
    bg_upsampler: Any = None,
    architecture: str = "GFPGANv1Clean",
) -> Any:
    """GFPGAN's ``GFPGANer`` holding the reference ``architecture`` (:func:`reference_network`)
    with ``gfpgan_state`` and a helper from :func:`face_helper` (what ``GFPGANer.__init__``
    builds, without downloads)."""
    import torch

    apply_basicsr_shim()
    from gfpgan.utils import GFPGANer

    restorer = object.__new__(GFPGANer)
    restorer.upscale = upscale
    restorer.bg_upsampler = bg_upsampler
    restorer.device = torch.device("cpu")
    restorer.gfpgan = reference_network(architecture, gfpgan_state)
    restorer.face_helper = face_helper(upscale, detector=detector, parser=parser, use_parse=True)
    return restorer
