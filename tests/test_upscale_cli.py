"""``restorekit upscale`` end to end: folders, a corrupt file, skipping, overwriting, sizes."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from PIL import Image

from restorekit.cli import main
from restorekit.cli.batch import collect_jobs

from conftest import shared_weight_path


@pytest.fixture
def model_path(isolated_home) -> str:
    return str(shared_weight_path("realesr-animevideov3"))


@pytest.fixture
def photos(tmp_path, astronaut, camera):
    """in/a.png (RGB), in/sub/b.jpg (gray), in/sub/deeper/c.png (RGBA), in/broken.png (corrupt)."""
    root = tmp_path / "in"
    (root / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray(astronaut[100:130, 200:240]).save(root / "a.png")
    Image.fromarray(camera[100:124, 100:140]).save(root / "sub" / "b.jpg", quality=92)
    rgba = np.dstack([astronaut[:20, :20], np.tile(np.linspace(0, 255, 20, dtype=np.uint8), (20, 1))])
    Image.fromarray(rgba).save(root / "sub" / "deeper" / "c.png")
    data = (root / "a.png").read_bytes()
    (root / "broken.png").write_bytes(data[: len(data) // 2])  # truncated PNG
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.mark.slow
def test_folder_with_a_corrupt_file(photos, tmp_path, model_path, capsys):
    out = tmp_path / "out"
    code = main(["upscale", str(photos), "-o", str(out), "--model", model_path, "--outscale", "2"])
    captured = capsys.readouterr()
    assert code == 1  # one file failed
    assert "broken.png" in captured.err and "3 upscaled, 1 failed" in captured.out
    assert sum("restorekit: failed:" in line for line in captured.err.splitlines()) == 1
    with Image.open(out / "a.png") as a, Image.open(out / "sub" / "b.jpg") as b, Image.open(out / "sub" / "deeper" / "c.png") as c:
        assert (a.size, a.mode) == ((80, 60), "RGB")
        assert (b.size, b.mode) == ((80, 48), "L")
        assert (c.size, c.mode) == ((40, 40), "RGBA")
    assert not (out / "broken.png").exists() and not (out / "notes.txt").exists()
    assert not list(out.rglob(".*.tmp*")), "no temp files left behind"

    # second run: everything that exists is skipped, the broken file still fails
    before = (out / "a.png").stat().st_mtime_ns
    code = main(["upscale", str(photos), "-o", str(out), "--model", model_path, "--outscale", "2"])
    captured = capsys.readouterr()
    assert code == 1 and "0 upscaled, 3 skipped" in captured.out
    assert (out / "a.png").stat().st_mtime_ns == before

    # --overwrite redoes them; a good file alone exits 0
    code = main(["upscale", str(photos / "a.png"), "-o", str(out), "--model", model_path, "--overwrite", "--width", "50"])
    captured = capsys.readouterr()
    assert code == 0 and "1 upscaled" in captured.out
    with Image.open(out / "a.png") as a:
        assert a.size == (50, 38)


@pytest.mark.slow
def test_single_file_to_a_named_output_with_format(photos, tmp_path, model_path, capsys):
    target = tmp_path / "result.webp"
    code = main(["upscale", str(photos / "a.png"), "-o", str(target), "--model", model_path, "--quality", "80", "-q"])
    assert code == 0
    with Image.open(target) as im:
        assert im.format == "WEBP" and im.size == (160, 120)
    code = main(["upscale", str(photos / "sub"), "-o", str(tmp_path / "jpgs"), "--model", model_path, "--format", "jpg", "-q"])
    assert code == 0
    assert sorted(p.relative_to(tmp_path / "jpgs").as_posix() for p in (tmp_path / "jpgs").rglob("*.jpg")) == ["b.jpg", "deeper/c.jpg"]


def test_inputs_are_never_overwritten(photos, model_path, capsys):
    original = (photos / "a.png").read_bytes()
    code = main(["upscale", str(photos / "a.png"), "-o", str(photos), "--model", model_path, "--overwrite"])
    captured = capsys.readouterr()
    assert code == 1 and "is an input file" in captured.err
    assert (photos / "a.png").read_bytes() == original
    code = main(["upscale", str(photos / "a.png"), "-o", str(photos / "a.png"), "--model", model_path, "--overwrite"])
    assert code == 1 and (photos / "a.png").read_bytes() == original


def test_bad_arguments_are_one_line_errors(photos, tmp_path, model_path, capsys):
    code = main(["upscale", str(photos / "a.png"), "-o", str(tmp_path / "o"), "--model", model_path, "--outscale", "2", "--width", "9"])
    assert code == 1 and "not both" in capsys.readouterr().err
    code = main(["upscale", str(photos / "a.png"), "-o", str(tmp_path / "o"), "--model", str(tmp_path / "missing.safetensors")])
    assert code == 1 and "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["upscale", str(photos / "a.png"), "-o", str(tmp_path / "o"), "--tile", "4"])
    code = main(["upscale", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o"), "--model", model_path])
    assert code == 1 and "does not exist" in capsys.readouterr().err


def test_collect_jobs_detects_colliding_outputs(tmp_path):
    (tmp_path / "x").mkdir()
    for name in ("p.png", "p.jpg"):
        Image.new("RGB", (4, 4)).save(tmp_path / "x" / name)
    jobs, problems = collect_jobs([tmp_path / "x"], tmp_path / "out", fmt="png")
    assert len(jobs) == 1 and len(problems) == 1 and "also the output of" in problems[0][1]
    jobs, problems = collect_jobs([tmp_path / "x"], tmp_path / "out", suffix="_x4")
    assert sorted(j.target.name for j in jobs) == ["p_x4.jpg", "p_x4.png"] and not problems


def test_cli_parser_does_not_load_pyav():
    """Every command builds the ``video`` parser; PyAV (~25 MB resident) loads only for video."""
    import subprocess

    code = "import sys; from restorekit.cli import build_parser; build_parser(); print('av' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "False"


def test_cli_process_memory_tuning_keeps_user_settings(monkeypatch):
    from restorekit.cli.common import tune_process_memory

    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "0")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1")
    assert tune_process_memory() is False  # the user's own allocator settings win
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "0"
    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE")
    applied = tune_process_memory()
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "1"
    assert applied is sys.platform.startswith("linux")
