"""The app's Video tab: ``jobs.restore_video`` (no Gradio) and the served ``/restore_video``
endpoint: the clip's frames restored by the engine, its timing and audio kept, progress,
cancel, clear errors. Random-weight face models in an offline model home."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

gr = pytest.importorskip("gradio", reason="the app tests need gradio (pip install 'restorekit[app]')")
pytest.importorskip("gradio_client", reason="the app tests need gradio_client")

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from gradio_app import jobs  # noqa: E402

from faces_common import install_models  # noqa: E402
from video_factory import audio_seconds, decode_video, make_video  # noqa: E402

FAST_FACES = {"face_detector": "detection_mobilenet0.25_Final"}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=8, fps=25, size=(64, 48), audio="aac").path


@pytest.fixture
def home(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RESTOREKIT_OFFLINE", "1")
    return isolated_home


@pytest.fixture
def face_home(home: Path, tmp_path: Path) -> Path:
    install_models(home, tmp_path / "cache", ["GFPGANv1.4", "detection_mobilenet0.25_Final", "parsing_parsenet"])
    return home


def test_restore_video_keeps_frames_timing_and_audio(home: Path, clip: Path, tmp_path: Path) -> None:
    seen = []
    options = jobs.VideoJobOptions(jobs.RestoreOptions(model="resize", outscale=2, color_fix="wavelet"))
    result = jobs.restore_video(clip, options, progress=lambda d, t, m: seen.append((d, t, m)), workdir=tmp_path / "w")
    decoded = decode_video(result.output)
    assert len(decoded.frames) == 8 and decoded.frames[0].shape == (96, 128, 3)
    assert audio_seconds(result.output) == pytest.approx(audio_seconds(clip), abs=0.05)
    assert "wavelet colour fix" in result.description and result.frames == 8
    assert seen and seen[-1][0] == seen[-1][1] == 8


@pytest.mark.slow
def test_restore_video_with_tracked_faces(face_home: Path, clip: Path, tmp_path: Path) -> None:
    restore = jobs.RestoreOptions(
        model="resize", outscale=1, face_restore=True, face_strength=0.0, face_fidelity=0.7, face_select="largest", **FAST_FACES
    )
    settings = jobs.video_settings(jobs.VideoJobOptions(restore, smoothing=0.5, face_blend=0.2, detect_every=2))
    assert settings.face_tracking.detect_every == 2 and settings.face_tracking.smoothing.min_cutoff == 0.5
    assert settings.face_options.fidelity == 0.7
    assert jobs.video_settings(jobs.VideoJobOptions(restore, face_track=False)).face_tracking is None
    assert jobs.video_settings(jobs.VideoJobOptions(restore, smoothing=0)).face_tracking.smoothing is None
    result = jobs.restore_video(clip, jobs.VideoJobOptions(restore), workdir=tmp_path / "w")
    assert "tracked" in result.description and len(decode_video(result.output).frames) == 8


def test_restore_video_errors_and_cancel(home: Path, clip: Path, tmp_path: Path) -> None:
    from gradio_app.ui import user_errors

    with pytest.raises(gr.Error, match="Zero-shot SR"), user_errors():
        jobs.restore_video(clip, jobs.VideoJobOptions(jobs.RestoreOptions(model="zssr")), workdir=tmp_path / "a")
    with pytest.raises(gr.Error, match="frames, over this app's limit"), user_errors():
        jobs.restore_video(clip, jobs.VideoJobOptions(), max_frames=4, workdir=tmp_path / "b")
    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    with pytest.raises(gr.Error, match="not a video"), user_errors():
        jobs.restore_video(text, jobs.VideoJobOptions(), workdir=tmp_path / "c")
    with pytest.raises(gr.Error, match="Cancelled"), user_errors():
        jobs.restore_video(clip, jobs.VideoJobOptions(), cancel=lambda: True, workdir=tmp_path / "d")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_served_restore_video_endpoint(home: Path, clip: Path) -> None:
    from gradio_app.ui import AppConfig, launch

    demo, url = launch(AppConfig(port=free_port()), prevent_thread_lock=True, quiet=True)
    try:
        client = Client(url, verbose=False)
        assert "/restore_video" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        video, download, report = client.predict(
            handle_file(clip), model="resize", outscale=2, face_restore=False, color_fix="adain", api_name="/restore_video"
        )
        path = Path(video["video"] if isinstance(video, dict) else video)
        assert len(decode_video(path).frames) == 8 and "adain" in report
        assert Path(download).stat().st_size == path.stat().st_size
        with pytest.raises(AppError, match="Zero-shot"):
            client.predict(handle_file(clip), model="zssr", api_name="/restore_video")
    finally:
        demo.close()
    assert np.isfinite(path.stat().st_size)
