"""``restorekit degrade``: folders with a corrupt file, pairs, sidecars, reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restorekit.cli import main
from restorekit.degrade import replay
from restorekit.imageio import read_image


@pytest.fixture
def photo_folder(tmp_path: Path, astronaut, coffee, camera) -> Path:
    """Three real photos (RGB PNG, JPEG, gray PNG) and one corrupt PNG."""
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(astronaut[100:260, 150:310]).save(folder / "astronaut.png")
    Image.fromarray(coffee[100:244, 200:380]).save(folder / "coffee.jpg", quality=95)
    Image.fromarray(camera[50:178, 50:178]).save(folder / "camera.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated, not an image")
    return folder


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.slow
def test_lr_images_with_sidecars_and_the_corrupt_file_listed(photo_folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["degrade", str(photo_folder), "-o", str(out), "--seed", "3", "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    assert f"failed: {photo_folder / 'broken.png'}: " in captured.err
    assert "not a readable image" in captured.err
    assert "1 input failed" in captured.err
    for name, size in (("astronaut", (40, 40)), ("coffee", (45, 36)), ("camera", (32, 32))):
        assert Image.open(out / f"{name}.png").size == size
        sidecar = json.loads((out / f"{name}.json").read_text())
        assert sidecar["run_seed"] == 3 and sidecar["preset"] == "realesrgan"
        assert sidecar["params"]["scale"] == 4.0 and "stage1" in sidecar["params"]
    assert not (out / "broken.png").exists()
    run = json.loads((out / "degrade_run.json").read_text())
    assert run["written"] == 3 and run["seed"] == 3
    assert run["failures"][0]["source"].endswith("broken.png")


@pytest.mark.slow
def test_pairs_meta_info_and_replay_from_the_sidecar(photo_folder: Path, tmp_path: Path) -> None:
    (photo_folder / "broken.png").unlink()
    out = tmp_path / "pairs"
    code = main(["degrade", str(photo_folder / "astronaut.png"), str(photo_folder / "coffee.jpg"), "-o", str(out),
                 "--pairs", "--crop", "96", "--seed", "5", "--save-kernels", "-q"])
    assert code == 0
    lines = (out / "meta_info.txt").read_text().splitlines()
    assert lines == ["hr/astronaut.png, lr/astronaut.png", "hr/coffee.png, lr/coffee.png"]
    for name in ("astronaut", "coffee"):
        assert Image.open(out / "hr" / f"{name}.png").size == (96, 96)
        assert Image.open(out / "lr" / f"{name}.png").size == (24, 24)
        assert (out / "kernels" / f"{name}.png").is_file()
        record = json.loads((out / "params" / f"{name}.json").read_text())
        assert record["hr"] == f"hr/{name}.png" and record["params"]["crop"]["size"] == 96
    # the sidecar reproduces the LR from the source image
    record = json.loads((out / "params" / "astronaut.json").read_text())
    crop = record["params"]["crop"]
    source = read_image(photo_folder / "astronaut.png").pixels
    window = source[..., crop["top"] : crop["top"] + 96, crop["left"] : crop["left"] + 96]
    again = replay(window, record["params"]).lr
    written = torch.from_numpy(_png(out / "lr" / "astronaut.png").copy()).permute(2, 0, 1)[None] / 255.0
    torch.testing.assert_close(again, written, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_same_seed_writes_identical_files(photo_folder: Path, tmp_path: Path) -> None:
    (photo_folder / "broken.png").unlink()
    for run in ("a", "b"):
        assert main(["degrade", str(photo_folder), "-o", str(tmp_path / run), "--seed", "9", "--preset", "light", "-q"]) == 0
    for name in ("astronaut", "coffee", "camera"):
        assert np.array_equal(_png(tmp_path / "a" / f"{name}.png"), _png(tmp_path / "b" / f"{name}.png"))


def test_overrides_presets_and_scale_reach_the_engine(photo_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "bicubic"
    code = main(["degrade", str(photo_folder / "camera.png"), "-o", str(out), "--preset", "bicubic", "--scale", "2",
                 "--set", "quantize=false", "--seed", "1", "-q"])
    assert code == 0
    assert Image.open(out / "camera.png").size == (64, 64)
    record = json.loads((out / "camera.json").read_text())
    assert record["params"]["final"]["resize_mode"] == "matlab_bicubic"
    assert record["params"]["quantize"] is False
    assert json.loads((out / "degrade_run.json").read_text())["config"]["quantize"] is False


def test_inputs_are_never_overwritten(photo_folder: Path, capsys) -> None:
    before = (photo_folder / "astronaut.png").read_bytes()
    code = main(["degrade", str(photo_folder / "astronaut.png"), "-o", str(photo_folder), "--seed", "1", "-q"])
    assert code == 1
    assert "Refusing to overwrite the input" in capsys.readouterr().err
    assert (photo_folder / "astronaut.png").read_bytes() == before


@pytest.mark.slow
def test_existing_outputs_are_skipped_unless_overwrite(photo_folder: Path, tmp_path: Path, capsys) -> None:
    """The file runner's one skip rule (as ``upscale``): a rerun skips inputs whose outputs
    all exist and leaves them untouched; ``--overwrite`` redoes them."""
    args = ["degrade", str(photo_folder / "camera.png"), "-o", str(tmp_path / "o"), "--seed", "1", "-q"]
    assert main(args) == 0
    before = (tmp_path / "o" / "camera.png").stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 0
    assert "0 degraded, 1 skipped (output exists; --overwrite to redo)" in capsys.readouterr().out
    assert (tmp_path / "o" / "camera.png").stat().st_mtime_ns == before
    (tmp_path / "o" / "camera.json").unlink()  # an unfinished input is redone
    assert main(args) == 0
    assert "1 degraded" in capsys.readouterr().out and (tmp_path / "o" / "camera.json").is_file()
    assert main([*args, "--overwrite"]) == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "blur_sigma=-1,3"], "blur_sigma: values must be above 0.0, got -1.0"),
        (["--set", "sinc_prob=2"], "sinc_prob: a probability must be between 0 and 1"),
        (["--set", "resize_prob=0.5,0.5,0.5"], "resize_prob: probabilities must sum to 1"),
        (["--set", "nonsense=1"], "Unknown degradation setting 'nonsense'"),
        (["--scale", "0"], "Scale must be positive, got 0"),
        (["--pairs", "--crop", "2"], "--crop 2 must be a multiple of the scale 4 and at least as large"),
        (["--crop", "400"], "--crop needs --pairs"),
        (["--pairs", "--scale", "2.5"], "--pairs needs a whole-number --scale"),
    ],
)
def test_bad_parameters_are_one_line_errors(photo_folder: Path, tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    code = main(["degrade", str(photo_folder / "camera.png"), "-o", str(tmp_path / "x"), *extra])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("restorekit: error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_listing_and_showing_the_config(capsys) -> None:
    assert main(["degrade", "--list-presets"]) == 0
    listed = capsys.readouterr().out
    for name in ("realesrgan", "classic", "bicubic", "light"):
        assert name in listed
    assert main(["degrade", "--list-fields"]) == 0
    assert "final_sinc_prob" in capsys.readouterr().out
    assert main(["degrade", "--preset", "light", "--set", "sinc_prob=0", "--show-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["preset"] == "light" and shown["sinc_prob"] == 0.0


def test_a_config_file_applies_over_the_preset(tmp_path: Path, capsys) -> None:
    config = tmp_path / "mild.yaml"
    config.write_text("noise_range: [1, 5]\njpeg_range: [80, 95]\n")
    assert main(["degrade", "--config", str(config), "--show-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["noise_range"] == [1.0, 5.0] and shown["jpeg_range"] == [80, 95]
