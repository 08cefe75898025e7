"""Face tracks from the command line: ``restorekit video --face-restore`` (tracks on by default) with smoothing, blending and
colour fix options. Random-weight registry models in an isolated home (strength 0 keeps the
face model's forward out of it; the tracking and paste-back paths run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from restorekit.cli import build_parser, main
from restorekit.cli.video import build_processor
from restorekit.faces.tracking import TrackingSettings

from faces_common import install_models
from video_factory import make_video

FAST = ["--face-detector", "detection_mobilenet0.25_Final", "--face-parser", "ellipse", "-q"]


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("random-face-models")


@pytest.fixture
def home(isolated_home: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RESTOREKIT_OFFLINE", "1")
    install_models(isolated_home, model_cache, ["GFPGANv1.4", "detection_mobilenet0.25_Final"])
    return isolated_home


@pytest.mark.slow
def test_video_tracking_options_reach_the_engine(home: Path, tmp_path: Path) -> None:
    parser = build_parser()
    base = ["video", "in.mp4", "-o", "out.mp4", "--model", "resize", "--face-restore", "GFPGANv1.4", *FAST]
    args = parser.parse_args([*base, "--face-detect-every", "3", "--face-min-cutoff", "0.5", "--face-blend", "0.4", "--color-fix", "adain", "--fidelity", "0.8"])
    processor = build_processor(args)
    tracking = processor.restorer.settings.face_tracking
    assert isinstance(tracking, TrackingSettings)
    assert (tracking.detect_every, tracking.smoothing.min_cutoff, tracking.face_blend) == (3, 0.5, 0.4)
    assert processor.restorer.settings.color_fix == "adain"
    assert processor.restorer.settings.face_options.fidelity == 0.8
    assert processor.tracker is not None and "tracked" in processor.describe()
    processor.begin_clip(24.0)
    assert processor.tracker.settings.fps == 24.0
    off = build_processor(parser.parse_args([*base, "--no-face-track"]))
    assert off.restorer.settings.face_tracking is None and off.tracker is None
    raw = build_processor(parser.parse_args([*base, "--no-face-smoothing"]))
    assert raw.restorer.settings.face_tracking.smoothing is None


@pytest.mark.slow
def test_video_with_tracked_faces_end_to_end(home: Path, tmp_path: Path) -> None:
    source = make_video(tmp_path / "in.mp4", frames=6, size=(96, 64), audio="aac").path
    out = tmp_path / "out.mp4"
    args = ["video", str(source), "-o", str(out), "--model", "resize", "--outscale", "2", "--face-restore", "GFPGANv1.4"]
    assert main([*args, "--face-confidence", "0.3", "--face-strength", "0", "--batch", "4", *FAST]) == 0
    assert out.stat().st_size > 0
