"""``--cluster``: the file runner's Ray backend on a real two-node Ray cluster on 127.0.0.1
(started and stopped here, see ray_cluster.py). Outputs must equal the single-machine CLI's
byte for byte (fp32), survive a killed worker, and a rerun after a killed driver must skip
what is done and finish the rest."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restorekit.cli import main

from conftest import REPO_ROOT, shared_weight_path

ray = pytest.importorskip("ray", reason="the cluster tests need Ray: pip install 'restorekit[cluster]'")

from ray_cluster import start_loopback_cluster, worker_pids  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def cluster() -> Iterator[tuple[str, dict[str, str]]]:
    """A head and a second node, one CPU each, on 127.0.0.1."""
    with start_loopback_cluster(REPO_ROOT, nodes=2, cpus=1) as running:
        yield running


@pytest.fixture(scope="module")
def model() -> str:
    return str(shared_weight_path("realesr-animevideov3"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray, coffee: np.ndarray, camera: np.ndarray) -> Path:
    """10 small real photos in two folders (RGB, gray, RGBA) and one broken file."""
    root = tmp_path_factory.mktemp("cluster-in")
    (root / "sub").mkdir()
    for index in range(10):
        y, x = 40 * (index % 8), 30 * (index // 2)
        folder = root / "sub" if index % 3 == 0 else root
        if index % 5 == 1:
            Image.fromarray(camera[y : y + 48, x : x + 64]).save(folder / f"p{index:02d}.png")
        elif index % 5 == 2:
            rgba = np.dstack([coffee[y : y + 48, x : x + 64], np.full((48, 64), 200, np.uint8)])
            Image.fromarray(rgba).save(folder / f"p{index:02d}.png")
        else:
            Image.fromarray(astronaut[y : y + 48, x : x + 64]).save(folder / f"p{index:02d}.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    return root


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "restorekit", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture(scope="module")
def local_upscale(photos: Path, model: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("local") / "out"
    assert main(["upscale", str(photos), "-o", str(out), "--model", model, "--precision", "fp32", "-q"]) == 1  # broken.png
    return _files(out)


def test_a_killed_worker_is_retried_and_outputs_equal_the_local_run(cluster, photos, model, local_upscale, tmp_path) -> None:
    address, env = cluster
    out = tmp_path / "out"
    cli = _cli(env, "upscale", str(photos), "-o", str(out), "--model", model, "--precision", "fp32", "--cluster", address)
    deadline = time.monotonic() + 120
    killed = None
    while killed is None and cli.poll() is None and time.monotonic() < deadline:
        pids = worker_pids(env)
        if len(pids) == 2 and out.exists() and any(out.rglob("*.png")):  # mid-job
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    stdout, stderr = cli.communicate(timeout=180)
    assert killed is not None, f"the job finished before a worker could be killed: {stdout} {stderr}"
    assert cli.returncode == 1, stderr  # broken.png only
    assert sum("restorekit: failed:" in line for line in stderr.splitlines()) == 1 and "broken.png" in stderr
    assert "10 upscaled, 1 failed" in stdout and "on Ray" in stdout
    assert _files(out) == local_upscale  # every output, bit for bit, and no temp or duplicate file


def test_degrade_without_a_shared_filesystem_equals_the_local_run(cluster, photos, tmp_path) -> None:
    address, env = cluster
    args = ["degrade", str(photos), "--pairs", "--seed", "7", "--preset", "light", "-q"]
    assert main([*args, "-o", str(tmp_path / "local")]) == 1
    cli = _cli(env, *args, "-o", str(tmp_path / "ray"), "--cluster", address, "--cluster-no-shared-fs")
    _, stderr = cli.communicate(timeout=180)
    assert cli.returncode == 1 and "broken.png" in stderr, stderr
    local, remote = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert local.keys() == remote.keys() and "lr/sub/p00.png" in local
    differing = [name for name in local if local[name] != remote[name] and name != "degrade_run.json"]
    assert differing == []


def test_a_rerun_after_a_killed_driver_skips_what_is_done(cluster, photos, model, local_upscale, tmp_path) -> None:
    address, env = cluster
    out = tmp_path / "out"
    args = ["upscale", str(photos), "-o", str(out), "--model", model, "--precision", "fp32", "--cluster", address]
    first = _cli(env, *args)
    deadline = time.monotonic() + 120
    while first.poll() is None and time.monotonic() < deadline and len(list(out.rglob("p*.png")) if out.exists() else []) < 2:
        time.sleep(0.05)
    first.kill()  # the driver, mid-job
    first.communicate()
    done_before = {p.relative_to(out).as_posix() for p in out.rglob("p*.png")}
    assert 0 < len(done_before) < 10
    second = _cli(env, *args)
    stdout, stderr = second.communicate(timeout=180)
    assert second.returncode == 1, stderr
    # A task already running on a worker when the driver died may still finish its (atomically
    # written) file before the rerun looks: the rerun skips every file that exists by then,
    # and upscales the rest.
    counts = re.search(r"(\d+) upscaled, (\d+) skipped", stdout)
    assert counts, stdout
    upscaled, skipped = int(counts.group(1)), int(counts.group(2))
    assert len(done_before) <= skipped < 10 and upscaled + skipped == 10, stdout
    finished = {name: data for name, data in _files(out).items() if not Path(name).name.startswith(".")}
    assert finished == local_upscale


@pytest.mark.parametrize("address", ["127.0.0.1:9", "ray://127.0.0.1:9"])
def test_an_unreachable_address_fails_within_seconds(photos, model, tmp_path, capsys, address) -> None:
    started = time.monotonic()
    code = main(["upscale", str(photos / "p01.png"), "-o", str(tmp_path / "o"), "--model", model, "--cluster", address])
    err = capsys.readouterr().err
    assert code == 1 and "Cannot reach the Ray cluster at 127.0.0.1:9" in err and "ray start --head" in err
    assert len(err.strip().splitlines()) == 1
    assert time.monotonic() - started < 15
    assert not (tmp_path / "o").exists()


def test_without_ray_the_option_names_the_extra(photos, model, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code = main(["upscale", str(photos / "p01.png"), "-o", str(tmp_path / "o"), "--model", model, "--cluster", "auto"])
    assert code == 1 and "pip install 'restorekit[cluster]'" in capsys.readouterr().err


def test_bad_addresses_are_one_line_errors(photos, model, tmp_path, capsys) -> None:
    code = main(["upscale", str(photos / "p01.png"), "-o", str(tmp_path / "o"), "--model", model, "--cluster", "nonsense"])
    assert code == 1 and "is not an address" in capsys.readouterr().err


def test_a_video_with_audio_and_a_frame_folder_equal_the_local_run(cluster, model, tmp_path) -> None:
    """Frames run on the workers; chunks, encoding and the audio stay on the driver."""
    from video_factory import audio_seconds, decode_video, make_video

    address, env = cluster
    made = make_video(tmp_path / "clip.mp4", frames=12, size=(96, 64), audio="aac")
    source = made.path
    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(6):
        Image.fromarray(made.frames[index]).save(frames / f"f{index:03d}.png")
    common = ["--model", model, "--precision", "fp32", "--chunk-frames", "4", "-b", "2", "-q"]
    for name, src, out in (("video", source, "up.mp4"), ("folder", frames, "up_frames")):
        assert main(["video", str(src), "-o", str(tmp_path / f"local-{out}"), *common]) == 0
        cli = _cli(env, "video", str(src), "-o", str(tmp_path / f"ray-{out}"), *common, "--cluster", address)
        _, stderr = cli.communicate(timeout=180)
        assert cli.returncode == 0, stderr
        local, remote = tmp_path / f"local-{out}", tmp_path / f"ray-{out}"
        if name == "video":
            ours, theirs = decode_video(remote), decode_video(local)
            assert [f.tobytes() for f in ours.frames] == [f.tobytes() for f in theirs.frames] and len(ours.frames) == 12
            assert ours.audio_packets == theirs.audio_packets and audio_seconds(remote) > 0.3
        else:
            assert _files(remote) == _files(local) and len(_files(local)) == 6
