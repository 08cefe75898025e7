"""Video and frame-folder post-processing: every frame through a frame processor (an upscale
model, a face pipeline), keeping timing, audio, bit depth and alpha; chunked and resumable.

Quick use::

    from restorekit.video import VideoOptions, make_frame_processor, process_video

    processor = make_frame_processor("realesr-animevideov3", outscale=2)
    result = process_video("talk.mp4", "talk_x2.mp4", processor, VideoOptions(resume=True))
    print(result.summary())

Modules: :mod:`.pipeline` (the job), :mod:`.source` (decoding, frame folders), :mod:`.sink`
(segments, PNG chunks, assembly), :mod:`.audio`, :mod:`.formats` (codecs, pixel formats),
:mod:`.work` (manifest, resume), :mod:`.processor` (frame processors).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .processor import (
    DEFAULT_BATCH,
    AlphaPath,
    FrameProcessor,
    RestorerFrameProcessor,
    make_frame_processor,
    resize_alpha,
)
from .work import DEFAULT_CHUNK_FRAMES

if TYPE_CHECKING:
    from .pipeline import VideoOptions, VideoResult, process_video
    from .source import VideoInfo

_LAZY: dict[str, str] = {
    "VideoOptions": ".pipeline",
    "VideoResult": ".pipeline",
    "process_video": ".pipeline",
    "VideoInfo": ".source",
}
"""Names whose modules import PyAV (FFmpeg's libraries, ~25 MB resident), loaded on first
use so that ``import restorekit.video`` (every CLI run builds the ``video`` parser) stays light."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def probe_video(path: str, *, fps: float | str | None = None) -> VideoInfo:
    """What :func:`process_video` would read from ``path`` (a video file or frame folder)."""
    from .source import open_source

    with open_source(path, fps=fps) as source:
        return source.info


__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_CHUNK_FRAMES",
    "AlphaPath",
    "FrameProcessor",
    "RestorerFrameProcessor",
    "VideoInfo",
    "VideoOptions",
    "VideoResult",
    "make_frame_processor",
    "probe_video",
    "process_video",
    "resize_alpha",
]
