"""Test images for the MediaPipe ports, built from scikit-image photos with plain numpy
(so that the reference venv, with MediaPipe and numpy 1.x, and the test venv build the very
same pixels). Imported by ``tests/mediapipe_reference.py`` and the tests."""

from __future__ import annotations

import numpy as np


def _astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def _two_faces() -> np.ndarray:
    """A 480x640 canvas with the astronaut at full size and mirrored at half size."""
    big = _astronaut()[:400, 80:400]
    small = np.ascontiguousarray(_astronaut()[::2, ::-2][:200, 40:200])
    canvas = np.full((480, 640, 3), 96, dtype=np.uint8)
    canvas[40:440, 20:340] = big
    canvas[100:300, 400:560] = small
    return canvas


def _camera() -> np.ndarray:
    from skimage import data

    gray = np.ascontiguousarray(data.camera())
    return np.repeat(gray[:, :, None], 3, axis=2)


def _astronaut_wide() -> np.ndarray:
    """The astronaut's upper half padded to a 2:1 landscape frame (letterboxing)."""
    crop = _astronaut()[:256]
    return np.ascontiguousarray(np.pad(crop, ((0, 0), (128, 128), (0, 0)), mode="edge"))


def _astronaut_transposed() -> np.ndarray:
    """The astronaut lying on her side (a 90 degree turn): the mesh ROI rotates."""
    return np.ascontiguousarray(np.rot90(_astronaut(), 1))


CASES = {
    "astronaut": _astronaut,
    "two_faces": _two_faces,
    "camera": _camera,
    "astronaut_wide": _astronaut_wide,
    "astronaut_rot90": _astronaut_transposed,
}
"""Case name -> function returning an (H, W, 3) uint8 RGB image."""
