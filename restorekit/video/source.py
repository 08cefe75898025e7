"""Frames in: video files through PyAV, and folders of image frames.

A source yields :class:`SourceFrame` values in presentation order: the frame's index, its
timestamp (``pts`` in the source's time base, strictly increasing), its duration, and its
pixels as an (H, W, 3 or 4) uint8 or uint16 RGB(A) array. Sources with more than 8 bits per
sample (10-bit video, 16-bit PNG) decode to uint16, so no precision is lost on the way in.

Decoding converts YUV to RGB with the matrix and range the stream is tagged with (BT.601 when
untagged); the encoder uses the same ones on the way out, so colors do not drift.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from ..errors import ImageReadError, InvalidParameterError, VideoError
from ..imageio import IMAGE_EXTENSIONS, check_pixel_count, read_image
from .formats import PixelLayout, pixel_layout

logger = logging.getLogger(__name__)

AVCOL_SPC_UNSPECIFIED = 2
AVCOL_PRI_UNSPECIFIED = 2
AVCOL_TRC_UNSPECIFIED = 2
AVCOL_RANGE_UNSPECIFIED = 0

_ALPHA_DECODERS = {"vp8": "libvpx", "vp9": "libvpx-vp9"}
"""FFmpeg's native VP8/VP9 decoders ignore WebM's alpha side data; libvpx's read it."""


@dataclass(frozen=True)
class ColorTags:
    """FFmpeg's color description of a stream (AVColorSpace, AVColorRange, AVColorPrimaries,
    AVColorTransferCharacteristic values); carried from input to output unchanged."""

    colorspace: int = AVCOL_SPC_UNSPECIFIED
    color_range: int = AVCOL_RANGE_UNSPECIFIED
    color_primaries: int = AVCOL_PRI_UNSPECIFIED
    color_trc: int = AVCOL_TRC_UNSPECIFIED


@dataclass(frozen=True)
class VideoInfo:
    """What a source holds, from its header and first frame.

    Attributes:
        path: the file or folder.
        is_folder: a folder of image frames.
        width, height: frame size in pixels (as stored; see ``rotation``).
        layout: the source pixel format (bit depth, chroma subsampling, alpha).
        time_base: unit of ``pts`` and ``duration`` (seconds per tick).
        frame_rate: the average frame rate, or None when unknown (frame folders without --fps).
        frame_count: the exact number of frames when the container says so (else None).
        duration: seconds, when known.
        codec: the video codec name (``png`` etc. for folders).
        audio_streams: how many audio streams the file has.
        color: color tags to carry to the output.
        rotation: display rotation in degrees (kept as output metadata).
        sample_aspect_ratio: pixel aspect ratio of anamorphic video (kept), else None.
        names: frame file names for folders (None for video files).
    """

    path: Path
    is_folder: bool
    width: int
    height: int
    layout: PixelLayout
    time_base: Fraction
    frame_rate: Fraction | None
    frame_count: int | None
    duration: float | None
    codec: str
    audio_streams: int = 0
    color: ColorTags = field(default_factory=ColorTags)
    rotation: int = 0
    sample_aspect_ratio: Fraction | None = None
    names: tuple[str, ...] | None = None

    @property
    def estimated_frames(self) -> int | None:
        """``frame_count``, or an estimate from duration x frame rate (None if neither)."""
        if self.frame_count:
            return self.frame_count
        if self.duration and self.frame_rate:
            return max(1, round(self.duration * float(self.frame_rate)))
        return None

    @property
    def sample_dtype(self) -> np.dtype:
        """uint8 for 8-bit sources, uint16 for deeper ones."""
        return np.dtype(np.uint8) if self.layout.bits <= 8 else np.dtype(np.uint16)


@dataclass
class SourceFrame:
    """One decoded frame.

    Attributes:
        index: position in presentation order, from 0.
        pts: timestamp in ``VideoInfo.time_base`` units (strictly increasing).
        duration: display duration in the same units.
        pixels: (H, W, 3) RGB or (H, W, 4) RGBA, uint8 or uint16.
        name: the file stem, for frame folders.
    """

    index: int
    pts: int
    duration: int
    pixels: np.ndarray
    name: str | None = None


def natural_key(name: str) -> list[Any]:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def open_source(
    path: str | Path, *, fps: Fraction | float | str | None = None, max_pixels: int | None = None
) -> FrameSource:
    """Open a video file or a folder of frames for reading.

    Raises :class:`VideoError` for a missing or unreadable file, a file without a video
    stream (an audio file), a codec this FFmpeg build cannot decode, or an empty folder.
    """
    path = Path(path)
    if path.is_dir():
        return FolderSource(path, fps=fps, max_pixels=max_pixels)
    return ContainerSource(path, fps=fps, max_pixels=max_pixels)


def parse_fps(value: Fraction | float | str | None) -> Fraction | None:
    """``25``, ``29.97``, ``30000/1001`` -> Fraction; None stays None."""
    if value is None:
        return None
    try:
        rate = Fraction(str(value).strip()) if not isinstance(value, Fraction) else value
    except (ValueError, ZeroDivisionError) as exc:
        raise VideoError(f"Frame rate {value!r} is not a number such as 25, 29.97 or 30000/1001.") from exc
    if rate <= 0 or rate > 1000:
        raise VideoError(f"Frame rate {value!r} must be between 0 and 1000 frames per second.")
    return rate.limit_denominator(1_000_000)


class FrameSource:
    """Base class: ``info`` plus ``frames(start)``; use as a context manager."""

    info: VideoInfo

    def frames(self, start: int = 0) -> Iterator[SourceFrame]:
        """Frames from index ``start`` on (earlier frames are decoded but not converted)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (iterators close their own files)."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- video files


def _open_container(path: Path) -> Any:
    try:
        return av.open(str(path), metadata_errors="replace")
    except FileNotFoundError as exc:
        raise VideoError(f"{path} does not exist.") from exc
    except PermissionError as exc:
        raise VideoError(f"{path} cannot be read: permission denied.") from exc
    except IsADirectoryError as exc:  # pragma: no cover - folders are handled before
        raise VideoError(f"{path} is a folder.") from exc
    except (av.error.FFmpegError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise VideoError(
            f"{path} is not a readable video ({reason}). Check that the file is complete "
            "(not truncated or still downloading) and is a video such as MP4, MKV, MOV or WebM."
        ) from exc


def _video_stream(container: Any, path: Path) -> Any:
    streams = container.streams.video
    if not streams:
        kinds: dict[str, int] = {}
        for stream in container.streams:
            kinds[stream.type] = kinds.get(stream.type, 0) + 1
        found = ", ".join(f"{n} {kind} stream{'s' if n > 1 else ''}" for kind, n in kinds.items())
        hint = " To put this audio under a video, pass it with --audio." if "audio" in kinds else ""
        raise VideoError(
            f"{path} has no video stream (it has {found or 'no streams'}). Give a video file or a "
            f"folder of frames.{hint}"
        )
    stream = streams[0]
    if stream.codec_context is None:
        raise VideoError(
            f"{path}: its video codec cannot be decoded by this FFmpeg build (PyAV {av.__version__}). "
            "Convert it to a common codec (H.264, HEVC, VP9, ProRes, FFV1) first."
        )
    return stream


def _alpha_decoder(stream: Any) -> Any | None:
    """A libvpx decoder context for WebM VP8/VP9 with alpha (else None: use the stream's)."""
    name = stream.codec_context.name
    if name not in _ALPHA_DECODERS or str(stream.metadata.get("alpha_mode", "0")) != "1":
        return None
    try:
        context = av.CodecContext.create(_ALPHA_DECODERS[name], "r")
    except Exception:  # pragma: no cover - builds without libvpx
        logger.warning("this FFmpeg build has no libvpx decoder; the alpha channel of %s is ignored", name)
        return None
    if stream.codec_context.extradata:
        context.extradata = stream.codec_context.extradata
    return context


def _rgb_format(layout: PixelLayout) -> str:
    """The packed RGB(A) format frames are converted to for the engine."""
    return packed_rgb_format(layout.bits > 8, layout.alpha)


def packed_rgb_format(deep: bool, alpha: bool) -> str:
    """``rgb24``/``rgba`` for 8-bit samples, ``rgb48le``/``rgba64le`` for 16-bit ones."""
    return {(False, False): "rgb24", (False, True): "rgba", (True, False): "rgb48le", (True, True): "rgba64le"}[
        (deep, alpha)
    ]


class ContainerSource(FrameSource):
    """Frames of the first video stream of a file, through PyAV."""

    def __init__(
        self, path: Path, *, fps: Fraction | float | str | None = None, max_pixels: int | None = None
    ) -> None:
        self.path = path
        if fps is not None:
            raise InvalidParameterError(
                "--fps is only for folders of frames: a video file keeps its own timestamps."
            )
        self.info = self._probe(max_pixels)

    def _probe(self, max_pixels: int | None) -> VideoInfo:
        with _open_container(self.path) as container:
            stream = _video_stream(container, self.path)
            context = stream.codec_context
            check_pixel_count(context.width, context.height, max_pixels, f"{self.path} (video frames)")
            first = self._first_frame(container, stream)
            layout = pixel_layout(first.format.name)
            time_base = stream.time_base or Fraction(1, 90000)
            rate = stream.average_rate or stream.guessed_rate
            duration = None
            if stream.duration and stream.time_base:
                duration = float(stream.duration * stream.time_base)
            elif container.duration:
                duration = container.duration / av.time_base
            color = ColorTags(
                colorspace=int(first.colorspace),
                color_range=int(first.color_range),
                color_primaries=int(first.color_primaries),
                color_trc=int(first.color_trc),
            )
            return VideoInfo(
                path=self.path,
                is_folder=False,
                width=first.width,
                height=first.height,
                layout=layout,
                time_base=Fraction(time_base),
                frame_rate=Fraction(rate) if rate else None,
                frame_count=int(stream.frames) or None,
                duration=duration,
                codec=context.name,
                audio_streams=len(container.streams.audio),
                color=color,
                rotation=int(first.rotation or 0),
                sample_aspect_ratio=_aspect(stream),
            )

    def _first_frame(self, container: Any, stream: Any) -> Any:
        decoder = _alpha_decoder(stream) or stream.codec_context
        last_error: Exception | None = None
        for packet in container.demux(stream):
            try:
                frames = decoder.decode(packet)
            except av.error.FFmpegError as exc:
                last_error = exc
                continue
            if frames:
                return frames[0]
        reason = f" ({last_error})" if last_error else ""
        raise VideoError(
            f"{self.path}: no frame of its {stream.codec_context.name} video stream could be "
            f"decoded{reason}. The file is corrupt or truncated."
        )

    def frames(self, start: int = 0) -> Iterator[SourceFrame]:

        info = self.info
        target = _rgb_format(info.layout)
        flags = Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
        reformatter = VideoReformatter()
        step = _default_step(info)
        index = 0
        last_pts: int | None = None
        repaired = corrupt = 0
        with _open_container(self.path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            decoder = _alpha_decoder(stream) or stream.codec_context
            for packet in container.demux(stream):
                try:
                    decoded = decoder.decode(packet)
                except av.error.FFmpegError as exc:
                    corrupt += 1
                    logger.warning("%s: skipped a packet that does not decode (%s)", self.path.name, exc)
                    continue
                for frame in decoded:
                    pts = frame.pts
                    if pts is None:
                        pts = 0 if last_pts is None else last_pts + step
                    if last_pts is not None and pts <= last_pts:
                        pts = last_pts + 1
                        repaired += 1
                    last_pts = pts
                    if index >= start:
                        if frame.width != info.width or frame.height != info.height:
                            raise VideoError(
                                f"{self.path}: frame {index} is {frame.width}x{frame.height} but the "
                                f"video started at {info.width}x{info.height}; streams that change "
                                "size mid-way are not supported."
                            )
                        rgb = reformatter.reformat(frame, format=target, interpolation=flags)
                        duration = int(frame.duration) if frame.duration else step
                        yield SourceFrame(index, int(pts), duration, rgb.to_ndarray())
                    index += 1
        if repaired:
            logger.warning(
                "%s: %d frame timestamps were missing or out of order and were made increasing",
                self.path.name,
                repaired,
            )
        if corrupt:
            logger.warning("%s: %d corrupt packets were skipped", self.path.name, corrupt)
        if index == 0:
            raise VideoError(f"{self.path}: no frame could be decoded; the file is corrupt.")


def _aspect(stream: Any) -> Fraction | None:
    """The stream's sample aspect ratio when it is not square (None for square pixels)."""
    ratio = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    if not ratio or ratio == 1:
        return None
    return Fraction(ratio)


def _default_step(info: VideoInfo) -> int:
    """One frame's duration in time-base ticks (1 when the rate is unknown)."""
    if not info.frame_rate:
        return 1
    return max(1, round(1 / (info.frame_rate * info.time_base)))


# --------------------------------------------------------------------------- frame folders


def list_frames(folder: Path) -> list[Path]:
    """Image files in ``folder`` (not hidden, not recursive), naturally sorted."""
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    return sorted(files, key=lambda p: natural_key(p.name))


def _to_samples(pixels: Any, alpha: Any, dtype: np.dtype) -> np.ndarray:
    """(1, 3, H, W) float pixels (+ alpha) -> (H, W, C) integer samples (exact for 8/16-bit)."""
    scale = 255.0 if dtype == np.uint8 else 65535.0
    planes = pixels[0] if alpha is None else np.concatenate([pixels[0], alpha[0]], axis=0)
    array = np.clip(planes.transpose(1, 2, 0), 0.0, 1.0) * scale + 0.5
    return array.astype(dtype)


class FolderSource(FrameSource):
    """Frames from a folder of images (PNG, JPEG, WebP, TIFF...), naturally sorted.

    The first frame fixes the size, bit depth (16-bit PNG/TIFF stay 16-bit) and whether there
    is alpha; a frame of another size raises :class:`VideoError`. Folders carry no timing:
    frame ``i`` has ``pts = i`` in a time base of ``1/fps``.
    """

    def __init__(
        self, path: Path, *, fps: Fraction | float | str | None = None, max_pixels: int | None = None
    ) -> None:
        self.path = path
        self.files = list_frames(path)
        self.max_pixels = max_pixels
        if not self.files:
            raise VideoError(
                f"{path} contains no image frames ({', '.join(sorted(IMAGE_EXTENSIONS))})."
            )
        try:
            first = read_image(self.files[0], max_pixels=max_pixels)
        except ImageReadError as exc:
            raise VideoError(f"First frame of {path}: {exc}") from exc
        rate = parse_fps(fps)
        bits = 8 if first.bit_depth <= 8 else 16
        layout = PixelLayout(
            name=packed_rgb_format(bits > 8, first.has_alpha),
            bits=bits,
            alpha=first.has_alpha,
            rgb=True,
            gray=first.was_gray,
            chroma=(0, 0),
        )
        self.info = VideoInfo(
            path=path,
            is_folder=True,
            width=first.width,
            height=first.height,
            layout=layout,
            time_base=1 / rate if rate else Fraction(1),
            frame_rate=rate,
            frame_count=len(self.files),
            duration=float(len(self.files) / rate) if rate else None,
            codec=first.format or "image",
            names=tuple(p.stem for p in self.files),
        )

    def frames(self, start: int = 0) -> Iterator[SourceFrame]:
        info = self.info
        dtype = info.sample_dtype
        for index, file in enumerate(self.files):
            if index < start:
                continue
            try:
                image = read_image(file, max_pixels=self.max_pixels)
            except ImageReadError as exc:
                raise VideoError(f"Frame {index} of {self.path}: {exc}") from exc
            if (image.width, image.height) != (info.width, info.height):
                raise VideoError(
                    f"{file} is {image.width}x{image.height} but the first frame is "
                    f"{info.width}x{info.height}; every frame of a video must have the same size "
                    "(for images of mixed sizes, upscale the folder as images instead)."
                )
            alpha = None
            if info.layout.alpha:
                alpha = image.alpha.numpy() if image.alpha is not None else np.ones((1, 1, info.height, info.width), np.float32)
            elif image.alpha is not None:
                logger.warning("%s has alpha but the first frame has none; its alpha is ignored", file.name)
            pixels = _to_samples(image.pixels.numpy(), alpha, dtype)
            yield SourceFrame(index, index, 1, pixels, name=file.stem)
