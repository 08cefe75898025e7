"""Shared pieces of the face tests: the hand-placed astronaut landmarks, random face
networks with official keys, and installing them into a model home under registry names."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from restorekit.architectures import build_module

DATA = Path(__file__).resolve().parent / "data"


def astronaut_landmarks() -> torch.Tensor:
    """(5, 2) float64 landmarks of the face in ``skimage.data.astronaut()``, placed by hand."""
    data = json.loads((DATA / "astronaut_landmarks.json").read_text(encoding="utf-8"))
    return torch.tensor(data["landmarks"], dtype=torch.float64)


def astronaut_box() -> tuple[float, float, float, float]:
    data = json.loads((DATA / "astronaut_landmarks.json").read_text(encoding="utf-8"))
    return tuple(data["box"])  # type: ignore[return-value]


def random_network_state(architecture: str, params: dict | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights of ``architecture`` as its own constructor initialises them (seeded), so the
    network computes meaningful, non-vanishing activations (unlike tiny-std noise).
    Architectures only spandrel builds (the upscalers) get seeded small random weights."""
    from restorekit.architectures import BUILDERS, random_state_dict

    if architecture not in BUILDERS:
        return random_state_dict(architecture, params, seed=seed)
    torch.manual_seed(seed)
    module = build_module(architecture, params or {})
    return {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}


def random_model_file(name: str, folder: Path, seed: int = 0) -> Path:
    """Random weights for registry model ``name`` saved as ``folder/<name>.safetensors``
    (with our metadata, as a download installs them); made once per folder."""
    from restorekit.registry.convert import save_state_dict
    from restorekit.registry.schema import load_registry

    entry = load_registry().get(name)
    path = folder / entry.filename
    if not path.exists():
        state = random_network_state(entry.architecture, dict(entry.params), seed)
        folder.mkdir(parents=True, exist_ok=True)
        save_state_dict(state, path, {"restorekit.name": name, "restorekit.architecture": entry.architecture})
    return path


def install_models(home: Path, cache: Path, names: list[str]) -> None:
    """Install random-weight registry models into a model home under their registry names
    (linked from ``cache``, where each is generated once), where a download would put them."""
    from restorekit.registry.download import target_path
    from restorekit.registry.home import ModelHome
    from restorekit.registry.schema import load_registry

    for name in names:
        entry = load_registry().get(name)
        target = target_path(entry, ModelHome(root=home.resolve()))
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(random_model_file(name, cache))


def image_tensor(array) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255.0


SMALL_GFPGAN = {"out_size": 64, "num_style_feat": 64, "channel_multiplier": 1, "narrow": 0.125}
"""A GFPGANv1Clean small enough for fast tests (64x64 faces); same code paths as 512."""


def small_gfpgan_descriptor(seed: int = 0):
    """A spandrel face descriptor around a small, randomly initialised GFPGANv1Clean, built
    as spandrel's own GFPGAN loader builds the 512 one."""
    from spandrel import ImageModelDescriptor, SizeRequirements
    from spandrel.architectures.GFPGAN import GFPGANArch

    torch.manual_seed(seed)
    model = build_module("GFPGANv1Clean", SMALL_GFPGAN).eval()
    return ImageModelDescriptor(
        model,
        model.state_dict(),
        architecture=GFPGANArch(),
        purpose="FaceSR",
        tags=[],
        supports_half=False,
        supports_bfloat16=True,
        scale=1,
        input_channels=3,
        output_channels=3,
        size_requirements=SizeRequirements(minimum=64),
        call_fn=lambda m, x: m(x)[0],
    )
