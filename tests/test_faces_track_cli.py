"""``restorekit faces --track``: a folder of frames restored as one clip, in natural name
order, through the same engine call and face tracker as ``restorekit video``.

The frames are a clip made from the real astronaut photo with known sub-pixel pan and zoom
(as in ``test_faces_tracking``); faces are found by the real torch BlazeFace full range +
Face Mesh (the mediapipe wheel's model files, installed as a test reference; skipped when
absent) and pasted with the mesh's face oval. The face model is a small random-weight
GFPGANv1Clean (64x64 faces, the same code paths as the 512 one) standing in for GFPGANv1.4.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restorekit.cli import main
from restorekit.faces.align import warp_affine
from restorekit.imageio import read_image

from faces_common import astronaut_landmarks, image_tensor, small_gfpgan_descriptor

FRAMES = 11
SIZE = 160
FPS = "25"
COMMON = ["--face-parser", "face_oval", "--face-select", "largest", "--outscale", "2", "--precision", "fp32", "-q"]


def motion(t: int) -> torch.Tensor:
    """(2, 3) map from astronaut pixels to frame ``t``: a sub-pixel pan and a slow zoom."""
    scale = 0.9 * (1.0 + 0.004 * t)
    centre = astronaut_landmarks().mean(0)
    shift = torch.tensor([SIZE / 2 - 8 + 0.61 * t, SIZE / 2 - 4 + 0.33 * t], dtype=torch.float64)
    linear = torch.eye(2, dtype=torch.float64) * scale
    return torch.cat([linear, (shift - linear @ centre)[:, None]], dim=1)


@pytest.fixture
def clip(tmp_path: Path, astronaut: np.ndarray) -> Path:
    """``frames/frame0.png`` ... ``frame11.png``: name order is not natural order."""
    photo = image_tensor(astronaut)
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(FRAMES):
        frame = warp_affine(photo, motion(t), (0, 0, SIZE, SIZE), mode="bicubic").clamp(0, 1)
        pixels = (frame[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"frame{t}.png")
    return folder


@pytest.fixture
def home(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The real BlazeFace full range and Face Mesh installed (``auto`` picks them), and
    GFPGANv1.4 loading a small random GFPGAN."""
    from test_faces_mediapipe import _install_converted

    import restorekit.faces.restore as restore_module

    monkeypatch.setenv("RESTOREKIT_OFFLINE", "1")
    _install_converted(isolated_home, ["blazeface_full_range", "face_mesh"])
    small = small_gfpgan_descriptor(seed=3)
    real_load = restore_module.load_face_model
    monkeypatch.setattr(restore_module, "load_face_model", lambda ref, **kw: small if ref == "GFPGANv1.4" else real_load(ref, **kw))
    return isolated_home


def frames_of(folder: Path) -> dict[str, torch.Tensor]:
    return {p.stem: read_image(p).pixels for p in sorted(folder.glob("*.png"))}


@pytest.mark.slow
def test_track_runs_the_frames_in_natural_order_and_equals_the_video_path(
    home: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tracked = tmp_path / "tracked"
    code = main(["faces", "--track", "--fps", FPS, str(clip), "-o", str(tracked), "--bg-model", "resize", *COMMON[:-1]])
    out = capsys.readouterr().out
    assert code == 0
    lines = [line for line in out.splitlines() if " -> " in line]
    assert [re.search(r"frame(\d+)\.png ->", line).group(1) for line in lines] == [str(t) for t in range(FRAMES)]  # natural order
    assert all("1 face, track 0" in line for line in lines)

    video = tmp_path / "video_frames"
    code = main(["video", str(clip), "-o", str(video), "--fps", FPS, "--model", "resize", "--face-restore", "GFPGANv1.4", "--batch", "4", *COMMON])
    assert code == 0
    ours, theirs = frames_of(tracked), frames_of(video)
    assert sorted(ours) == sorted(theirs) == sorted(f"frame{t}" for t in range(FRAMES))
    for name in ours:
        assert ours[name].shape == (1, 3, 2 * SIZE, 2 * SIZE)
        # the video path restores 4 frames' faces per forward, faces --track one: float rounding only
        assert float((ours[name] - theirs[name]).abs().max()) <= 1.5 / 255, name

    # the tracks do something: without --track each frame's landmarks are used as detected
    plain = tmp_path / "plain"
    assert main(["faces", str(clip), "-o", str(plain), "--bg-model", "resize", *COMMON]) == 0
    untracked = frames_of(plain)
    assert torch.equal(untracked["frame0"], ours["frame0"])  # a track starts where its first detection is
    assert any(float((untracked[n] - ours[n]).abs().max()) > 2 / 255 for n in ours if n != "frame0")


def test_track_refuses_a_cluster_and_aligned_faces(home: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["faces", "--track", str(clip), "-o", str(out), "--cluster", "auto", "-q"]) != 0
    assert "--track runs the frames in order on this machine" in capsys.readouterr().err
    assert main(["faces", "--track", "--aligned", str(clip), "-o", str(out), "-q"]) != 0
    assert "drop --aligned" in capsys.readouterr().err
    assert not out.exists()
