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

from .pipeline import DEFAULT_BATCH, DEFAULT_CHUNK_FRAMES, VideoOptions, VideoResult, process_video
from .processor import (
    AlphaPath,
    FrameProcessor,
    RestorerFrameProcessor,
    make_frame_processor,
    resize_alpha,
)
from .source import VideoInfo, open_source


def probe_video(path: str, *, fps: float | str | None = None) -> VideoInfo:
    """What :func:`process_video` would read from ``path`` (a video file or frame folder)."""
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
