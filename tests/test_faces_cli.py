"""``restorekit faces``: files and folders, image kinds, failures, overwriting rules, model
kinds, background model, saved crops. Models are random-weight registry models in an
isolated home; the GFPGAN forward itself is covered by test_faces_e2e (strength 0 here)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from restorekit.cli import main
from restorekit.faces.background import resize_background
from restorekit.imageio import read_image

from faces_common import install_models
from model_factory import safetensors_bytes, tiny_state

FAST = ["--face-detector", "detection_mobilenet0.25_Final", "--face-parser", "ellipse", "-q"]


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("random-face-models")


@pytest.fixture
def home(isolated_home: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RESTOREKIT_OFFLINE", "1")
    install_models(isolated_home, model_cache, ["GFPGANv1.4", "detection_mobilenet0.25_Final"])
    return isolated_home


@pytest.fixture
def photos(tmp_path: Path, astronaut: np.ndarray) -> Path:
    """A folder with an 8-bit RGB, a 16-bit RGB, an RGBA and a gray image, and a broken one."""
    folder = tmp_path / "in"
    folder.mkdir()
    small = astronaut[::4, ::4]  # 128x128
    Image.fromarray(small).save(folder / "rgb.png")
    cv2.imwrite(str(folder / "deep.png"), (small[:, :, ::-1].astype(np.uint16) * 257 + 7))
    rgba = np.dstack([small, np.linspace(0, 255, 128, dtype=np.uint8)[None, :].repeat(128, 0)])
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    Image.fromarray(small[:, :, 1]).save(folder / "gray.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    return folder


@pytest.mark.slow
def test_folder_of_image_kinds_with_a_broken_file(home: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["faces", str(photos), "-o", str(out), "--outscale", "2", "--face-strength", "0", *FAST])
    err = capsys.readouterr().err
    assert code == 1
    assert "broken.png" in err and "1 input failed, 4 written" in err
    assert sorted(p.name for p in out.iterdir()) == ["alpha.png", "deep.png", "gray.png", "rgb.png"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # atomic writes leave no temp files
    deep = read_image(out / "deep.png")
    assert deep.bit_depth == 16 and deep.pixels.shape == (1, 3, 256, 256)
    source = read_image(photos / "deep.png")
    assert torch.allclose(deep.pixels, resize_background(source.pixels, 2), atol=1.0 / 65535)  # strength 0: the background, in 16 bits
    alpha = read_image(out / "alpha.png")
    assert alpha.alpha is not None and alpha.alpha.shape == (1, 1, 256, 256)
    assert float(alpha.alpha[0, 0, 100, 0]) < 0.02 and float(alpha.alpha[0, 0, 100, -1]) > 0.98
    gray = read_image(out / "gray.png")
    assert gray.was_gray and Image.open(out / "gray.png").mode == "L"
    assert "no face" in err.lower() or "No face found" in err


@pytest.mark.slow
def test_inputs_are_never_overwritten_and_outputs_skipped_unless_overwrite(home: Path, photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (photos / "rgb.png").read_bytes()
    code = main(["faces", str(photos / "rgb.png"), "-o", str(photos), "--face-strength", "0", *FAST])
    assert code == 1 and "is an input" in capsys.readouterr().err
    assert (photos / "rgb.png").read_bytes() == before
    out = photos.parent / "single.png"
    assert main(["faces", str(photos / "rgb.png"), "-o", str(out), "--face-strength", "0", *FAST]) == 0
    capsys.readouterr()
    assert main(["faces", str(photos / "rgb.png"), "-o", str(out), "--face-strength", "0", *FAST]) == 0  # the runner's skip rule
    assert "1 skipped (output exists; --overwrite to redo)" in capsys.readouterr().out
    assert main(["faces", str(photos / "rgb.png"), "-o", str(out), "--face-strength", "0", "--overwrite", *FAST]) == 0
    assert main(["faces", str(photos / "rgb.png"), "-o", str(photos), "--suffix", "_faces", "--format", "jpg", "--face-strength", "0", *FAST]) == 0
    assert (photos / "rgb_faces.jpg").is_file()


@pytest.mark.slow
def test_wrong_model_kinds_fail_with_one_clear_line(home: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["faces", str(photos / "rgb.png"), "-o", str(tmp_path / "o1"), "--face-model", "RealESRGAN_x4plus", *FAST])
    err = capsys.readouterr().err
    assert code == 1 and "RealESRGAN_x4plus is an upscale model, not a face restoration model" in err
    assert "Traceback" not in err
    code = main(["faces", str(photos / "rgb.png"), "-o", str(tmp_path / "o2"), "--bg-model", "GFPGANv1.4", *FAST])
    assert code == 1 and "GFPGANv1.4 is a face restoration model, not an upscale model" in capsys.readouterr().err
    code = main(["faces", str(photos / "rgb.png"), "-o", str(tmp_path / "o3"), "--face-detector", "GFPGANv1.4", "-q"])
    assert code == 1 and "not a face detector" in capsys.readouterr().err


@pytest.mark.slow
def test_background_model_sets_the_default_scale(home: Path, photos: Path, tmp_path: Path) -> None:
    model = tmp_path / "tiny-x2.safetensors"
    model.write_bytes(safetensors_bytes(tiny_state()))
    out = tmp_path / "bg"
    assert main(["faces", str(photos / "rgb.png"), "-o", str(out), "--bg-model", str(model), "--face-strength", "0", *FAST]) == 0
    assert read_image(out / "rgb.png").pixels.shape == (1, 3, 256, 256)
    assert main(["faces", str(photos / "rgb.png"), "-o", str(out / "x3.png"), "--bg-model", str(model), "--outscale", "3", "--face-strength", "0", *FAST]) == 0
    assert read_image(out / "x3.png").pixels.shape == (1, 3, 384, 384)


@pytest.mark.slow
def test_aligned_mode_and_saved_faces(home: Path, astronaut: np.ndarray, tmp_path: Path) -> None:
    aligned = tmp_path / "aligned.png"
    Image.fromarray(astronaut).save(aligned)
    out = tmp_path / "al"
    assert main(["faces", str(aligned), "-o", str(out), "--aligned", "--face-strength", "0", "--save-faces", *FAST]) == 0
    assert sorted(p.name for p in (out / "faces").iterdir()) == ["aligned_00_original.png", "aligned_00_restored.png", "aligned_mask.png"]
    assert torch.equal(read_image(out / "aligned.png").pixels, read_image(aligned).pixels)


@pytest.mark.slow
def test_detected_faces_are_saved(home: Path, photos: Path, tmp_path: Path) -> None:
    """A random detector at a low threshold finds "faces"; the largest one is cropped."""
    out = tmp_path / "det"
    args = ["faces", str(photos / "rgb.png"), "-o", str(out), "--face-confidence", "0.3", "--face-select", "largest"]
    assert main([*args, "--face-strength", "0", "--save-faces", *FAST]) == 0
    saved = sorted(p.name for p in (out / "faces").iterdir())
    assert saved == ["rgb_00_original.png", "rgb_00_restored.png", "rgb_mask.png"]
    assert Image.open(out / "faces" / "rgb_00_original.png").size == (512, 512)


@pytest.mark.slow
def test_folders_are_searched_recursively_like_upscale(home: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The file runner's folder rule: sub-folders are searched and their structure is kept."""
    (photos / "broken.png").unlink()
    (photos / "sub").mkdir()
    (photos / "rgb.png").rename(photos / "sub" / "rgb.png")
    out = tmp_path / "tree"
    assert main(["faces", str(photos), "-o", str(out), "--face-strength", "0", *FAST]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["alpha.png", "deep.png", "gray.png", "sub/rgb.png"]
    assert "4 restored" in capsys.readouterr().out
