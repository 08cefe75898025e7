"""Import the reference implementations (basicsr / realesrgan) on current torchvision.

basicsr 1.4.2 imports ``torchvision.transforms.functional_tensor``, which torchvision
removed; this test-only shim aliases it to ``torchvision.transforms.functional`` before the
import. It is used by tests and benchmarks only, never by the engine.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType


def install_shim() -> None:
    """Alias the removed torchvision module (idempotent)."""
    name = "torchvision.transforms.functional_tensor"
    if name not in sys.modules:
        import torchvision.transforms.functional as functional

        sys.modules[name] = functional


install_shim()  # importing this module is enough for tests that import reference code directly


def import_reference(module: str) -> ModuleType:
    """Import a reference module (e.g. ``realesrgan.utils``) with the shim installed."""
    install_shim()
    return importlib.import_module(module)


def official_upsampler(model, scale: int, *, tile: int = 0, tile_pad: int = 10, pre_pad: int = 10):
    """A ``RealESRGANer`` around an already loaded float32 CPU network (no file loading)."""
    utils = import_reference("realesrgan.utils")
    upsampler = utils.RealESRGANer.__new__(utils.RealESRGANer)
    upsampler.scale = scale
    upsampler.tile_size = tile
    upsampler.tile_pad = tile_pad
    upsampler.pre_pad = pre_pad
    upsampler.mod_scale = None
    upsampler.half = False
    upsampler.device = __import__("torch").device("cpu")
    upsampler.model = model.eval()
    return upsampler
