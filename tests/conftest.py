"""Shared fixtures: real weights from ../shared (skipped when absent), an isolated model home,
real photos from scikit-image, and small helpers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = Path(os.environ.get("RESTOREKIT_SHARED", REPO_ROOT.parent / "shared"))
SHARED_WEIGHTS = SHARED_DIR / "weights"

WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
"""pytest-xdist's worker processes (1 without ``-n``): each gets an equal share of the cores."""
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // WORKERS)))
# Windows chosen by timing this machine would differ between machines; tests that exercise
# the measurement turn it back on (tests/test_window_cost.py).
os.environ.setdefault("RESTOREKIT_WINDOW_TUNING", "0")


def shared_weight_path(name: str) -> Path:
    """Path of ``../shared/weights/<name>.safetensors``; skips the test when it is absent."""
    path = SHARED_WEIGHTS / f"{name}.safetensors"
    if not path.is_file():
        pytest.skip(
            f"real weights {path.name} not found in {SHARED_WEIGHTS} (only developers' "
            "checkouts have ../shared); this test needs them"
        )
    return path


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    """The folder of real Real-ESRGAN safetensors weights, or skip."""
    if not SHARED_WEIGHTS.is_dir():
        pytest.skip(f"{SHARED_WEIGHTS} is absent (only developers' checkouts have ../shared)")
    return SHARED_WEIGHTS


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh, empty model home (RESTOREKIT_HOME) with every in-process cache cleared."""
    from restorekit import models
    from restorekit.registry.home import configure_home

    home = tmp_path / "home"
    monkeypatch.setenv("RESTOREKIT_HOME", str(home))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("RESTOREKIT_OFFLINE", raising=False)
    configure_home(None)
    models.clear_cache()
    yield home
    models.clear_cache()
    configure_home(None)


def _skimage(name: str) -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(getattr(data, name)())


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """skimage's astronaut: (512, 512, 3) uint8 RGB with a face."""
    return _skimage("astronaut")


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    """skimage's coffee: (400, 600, 3) uint8 RGB."""
    return _skimage("coffee")


@pytest.fixture(scope="session")
def chelsea() -> np.ndarray:
    """skimage's chelsea: (300, 451, 3) uint8 RGB."""
    return _skimage("chelsea")


@pytest.fixture(scope="session")
def camera() -> np.ndarray:
    """skimage's camera: (512, 512) uint8 gray."""
    return _skimage("camera")


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W[, C]) uint8/uint16/float array -> (1, C, H, W) float32 in [0, 1]."""
    if array.ndim == 2:
        array = array[:, :, None]
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(array.dtype, 1.0)
    tensor = torch.from_numpy(np.ascontiguousarray(array).astype(np.float32) / scale)
    return tensor.permute(2, 0, 1)[None].contiguous()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB between two tensors in [0, 1]."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return float("inf") if mse == 0 else 10.0 * float(np.log10(1.0 / mse))


def load_shared_model(name: str):
    """A spandrel descriptor (float32, CPU, eval) of ``../shared/weights/<name>``, or skip."""
    import spandrel
    from safetensors.torch import load_file

    path = shared_weight_path(name)
    return spandrel.ModelLoader().load_from_state_dict(load_file(str(path))).eval()


@pytest.fixture(scope="session")
def animevideov3():
    """realesr-animevideov3 (SRVGGNetCompact x4, receptive-field radius 18) from ../shared."""
    return load_shared_model("realesr-animevideov3")


@pytest.fixture(scope="session")
def x4plus():
    """RealESRGAN_x4plus (RRDBNet x4, 23 blocks) from ../shared."""
    return load_shared_model("RealESRGAN_x4plus")


def random_model(architecture: str, params: dict, *, seed: int = 0, std: float = 0.02):
    """A spandrel descriptor with random weights and the official keys (tiny test models)."""
    import spandrel

    from restorekit.architectures import random_state_dict

    state = random_state_dict(architecture, params, seed=seed, std=std)
    return spandrel.ModelLoader().load_from_state_dict(state).eval()
