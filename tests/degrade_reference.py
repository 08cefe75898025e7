"""basicsr's degradation code loaded as plain files, for parity tests and the benchmark.

``import basicsr`` runs its package ``__init__`` (which scans and imports every arch, model
and dataset, and fails on current torchvision). The handful of files the Real-ESRGAN
degradation needs only import numpy, scipy, cv2 and torch, so they are loaded here one by
one with :mod:`importlib`, without executing the package. Two adjustments keep the test
process clean:

- ``degradations.py`` imports ``torchvision.transforms.functional_tensor``, which torchvision
  removed; ``torchvision.transforms.functional`` provides the same ``rgb_to_grayscale``.
- ``degradations.py`` calls ``np.seterr(divide='ignore', invalid='ignore')`` at import time,
  which would silence numpy for every later test; the previous settings are restored.

Reference code is used in tests and benchmarks only, never in the engine.
"""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

import numpy as np


def _basicsr_root() -> Path | None:
    spec = importlib.util.find_spec("basicsr")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def reference_available() -> bool:
    """True when basicsr's source files are installed (tests skip otherwise)."""
    root = _basicsr_root()
    return root is not None and (root / "data" / "degradations.py").is_file()


@cache
def load_basicsr_file(relative: str) -> ModuleType:
    """Load ``basicsr/<relative>`` as a stand-alone module named ``basicsr_ref.<stem>``."""
    root = _basicsr_root()
    if root is None:
        raise ModuleNotFoundError("basicsr is not installed (pip install basicsr --no-deps)")
    import torchvision.transforms.functional as tv_functional

    sys.modules.setdefault("torchvision.transforms.functional_tensor", tv_functional)
    path = root / relative
    name = "basicsr_ref." + relative.removesuffix(".py").replace("/", ".")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = np.geterr()
    try:
        spec.loader.exec_module(module)
    finally:
        np.seterr(**saved)
    return module


def degradations() -> ModuleType:
    """``basicsr/data/degradations.py`` (kernels, noise, numpy JPEG)."""
    return load_basicsr_file("data/degradations.py")


def img_process_util() -> ModuleType:
    """``basicsr/utils/img_process_util.py`` (filter2D, USMSharp)."""
    return load_basicsr_file("utils/img_process_util.py")


def diffjpeg() -> ModuleType:
    """``basicsr/utils/diffjpeg.py`` (DiffJPEG)."""
    return load_basicsr_file("utils/diffjpeg.py")


def matlab_functions() -> ModuleType:
    """``basicsr/utils/matlab_functions.py`` (MATLAB-style imresize)."""
    return load_basicsr_file("utils/matlab_functions.py")


def require_reference() -> None:
    """Skip the calling test when basicsr's files are not installed."""
    import pytest

    if not reference_available():
        pytest.skip("basicsr is not installed; parity tests need its source files")
