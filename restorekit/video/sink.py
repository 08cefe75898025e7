"""Frames out: encoded chunk segments, PNG frame chunks, and the final assembly.

Video output is made of one encoded segment per chunk, each opened with identical encoder
settings and starting on a keyframe. At the end the segments' packets are copied, unchanged,
into the final container beside the audio (copied, or re-encoded when the container cannot
hold it), into a temp file renamed onto the output. Because a segment only depends on its own
frames, a resumed job produces the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from ..errors import VideoError
from ..files import atomic_path, atomic_write_bytes
from ..imageio import encode_image, image_from_array
from .formats import EncoderSettings, PixelLayout, open_encoder_stream
from .source import ColorTags, packed_rgb_format
from .work import ChunkRecord, WorkFolder

logger = logging.getLogger(__name__)

AVCOL_SPC_RGB = 0
AVCOL_SPC_BT709 = 1
AVCOL_SPC_SMPTE170M = 6
AVCOL_RANGE_MPEG = 1

_SWS_COLORSPACE = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "SMPTE170M", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}
"""AVColorSpace -> swscale matrix name (anything else: BT.601, swscale's default)."""


@dataclass
class OutputFrame:
    """A processed frame on its way out: (H, W, 3|4) uint8/uint16 RGB(A) samples."""

    index: int
    pts: int
    duration: int
    pixels: np.ndarray
    name: str | None = None


def output_color(source: ColorTags, source_layout: PixelLayout, target: PixelLayout) -> ColorTags:
    """Color tags for the output, and so the matrix RGB is converted to YUV with.

    YUV sources keep their tags; an untagged one is tagged with what decoding assumed (BT.601,
    limited range), so players do not guess BT.709 for the now larger frames. RGB sources
    (frame folders, PNG video) become BT.709 limited range. RGB outputs are tagged RGB.
    """
    if target.rgb:
        return ColorTags(AVCOL_SPC_RGB, 2, source.color_primaries, source.color_trc)
    if source_layout.rgb:
        return ColorTags(AVCOL_SPC_BT709, AVCOL_RANGE_MPEG, 1, 1)
    colorspace = source.colorspace if source.colorspace not in (2, 3) else AVCOL_SPC_SMPTE170M
    color_range = source.color_range or AVCOL_RANGE_MPEG
    return ColorTags(colorspace, color_range, source.color_primaries, source.color_trc)


def even_size(width: int, height: int, layout: PixelLayout) -> tuple[int, int]:
    """The frame size the encoder needs: multiples of the chroma subsampling."""
    step_w, step_h = 1 << layout.chroma[0], 1 << layout.chroma[1]
    return -(-width // step_w) * step_w, -(-height // step_h) * step_h


def pad_to(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pad an (H, W, C) array on the right/bottom by repeating the edge."""
    pad_h, pad_w = height - pixels.shape[0], width - pixels.shape[1]
    if pad_h <= 0 and pad_w <= 0:
        return pixels
    return np.pad(pixels, ((0, max(pad_h, 0)), (0, max(pad_w, 0)), (0, 0)), mode="edge")


def _hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


class SegmentWriter:
    """Encode one chunk into ``chunk-NNNNN<ext>`` in the work folder.

    Frames are written to a ``.part`` file, renamed into place by :meth:`finish`;
    :meth:`abort` deletes it.
    """

    def __init__(
        self,
        work: WorkFolder,
        index: int,
        first_frame: int,
        settings: EncoderSettings,
        suffix: str,
        size: tuple[int, int],
        color: ColorTags,
        rotation: int = 0,
        sample_aspect_ratio: Fraction | None = None,
    ) -> None:

        self.work = work
        self.index = index
        self.first_frame = first_frame
        self.name = f"chunk-{index:05d}{suffix}"
        self.final = work.file(self.name)
        self.partial = work.file(f"chunk-{index:05d}.part{suffix}")
        self.settings = settings
        self.width, self.height = size
        self.layout = settings.layout
        self.frames = 0
        self.last_pts: int | None = None
        self._reformatter = VideoReformatter()
        self._flags = Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INP
        self._sws_colorspace = _SWS_COLORSPACE.get(color.colorspace, "DEFAULT")
        self._color = color
        try:
            self.container = av.open(
                str(self.partial), "w", format=settings.muxer, container_options={"fflags": "+bitexact"}
            )
            self.stream = open_encoder_stream(self.container, settings, self.width, self.height)
            context = self.stream.codec_context
            if not self.layout.rgb:
                context.colorspace = color.colorspace
                context.color_range = color.color_range
            context.color_primaries = color.color_primaries
            context.color_trc = color.color_trc
            if sample_aspect_ratio:
                context.sample_aspect_ratio = sample_aspect_ratio
            if rotation:
                self.stream.set_display_rotation(rotation)
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            self.abort()
            raise VideoError(f"Cannot start encoding chunk {index} with {settings.codec}: {exc}") from exc

    def _frame(self, pixels: np.ndarray) -> Any:
        fmt = packed_rgb_format(pixels.dtype == np.uint16, pixels.shape[2] == 4)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format=fmt)
        if self.layout.rgb:
            return self._reformatter.reformat(frame, format=self.settings.pix_fmt, interpolation=self._flags)
        return self._reformatter.reformat(
            frame,
            format=self.settings.pix_fmt,
            dst_colorspace=self._sws_colorspace,
            dst_color_range=self._color.color_range,
            interpolation=self._flags,
        )

    def write(self, frame: OutputFrame) -> None:
        """Encode one frame (padded to the encoder's size if needed)."""
        pixels = pad_to(frame.pixels, self.width, self.height)
        if pixels.shape[2] == 4 and not self.layout.alpha:
            pixels = pixels[:, :, :3]
        video_frame = self._frame(pixels)
        video_frame.pts = frame.pts
        video_frame.time_base = self.settings.time_base
        video_frame.duration = frame.duration
        try:
            self.container.mux(self.stream.encode(video_frame))
        except av.error.FFmpegError as exc:
            raise VideoError(f"{self.settings.codec} failed on frame {frame.index}: {exc}") from exc
        self.frames += 1
        self.last_pts = frame.pts

    def finish(self) -> ChunkRecord:
        """Flush the encoder, close the segment, rename it into place and describe it."""
        try:
            self.container.mux(self.stream.encode(None))
            self.container.close()
        except av.error.FFmpegError as exc:
            self.abort()
            raise VideoError(f"Cannot finish chunk {self.index}: {exc}") from exc
        with open(self.partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(self.partial, self.final)
        size, digest = _hash_file(self.final)
        return ChunkRecord(self.index, self.first_frame, self.frames, [self.name], size, digest, self.last_pts)

    def abort(self) -> None:
        """Drop the unfinished segment."""
        container = getattr(self, "container", None)
        if container is not None:
            try:
                container.close()
            except Exception:  # closing a broken encoder must not mask the cause
                logger.debug("closing an aborted segment failed", exc_info=True)
        with contextlib.suppress(OSError):
            self.partial.unlink()


class FrameChunkWriter:
    """Write one chunk of frames as PNG files into ``frames/`` in the work folder.

    Each frame is written atomically; 16-bit sources give 16-bit PNGs, gray stays gray and
    alpha is kept.
    """

    def __init__(self, work: WorkFolder, index: int, first_frame: int, *, gray: bool, names: dict[int, str]) -> None:
        self.work = work
        self.index = index
        self.first_frame = first_frame
        self.gray = gray
        self.names = names
        self.files: list[str] = []
        self.digest = hashlib.sha256()
        self.bytes = 0
        self.last_pts: int | None = None
        (work.path / "frames").mkdir(exist_ok=True)

    def write(self, frame: OutputFrame) -> None:
        name = f"frames/{self.names.get(frame.index, f'{frame.index:06d}')}.png"
        data = encode_image(image_from_array(frame.pixels, was_gray=self.gray), "png")
        atomic_write_bytes(self.work.file(name), data)
        self.digest.update(data)
        self.bytes += len(data)
        self.files.append(name)
        self.last_pts = frame.pts

    def finish(self) -> ChunkRecord:
        return ChunkRecord(
            self.index, self.first_frame, len(self.files), self.files, self.bytes, self.digest.hexdigest(), self.last_pts
        )

    def abort(self) -> None:
        """Frames already written are overwritten when the chunk is made again."""


# --------------------------------------------------------------------------- assembly


def _packet_key(packet: Any) -> Fraction:
    stamp = packet.dts if packet.dts is not None else packet.pts
    return Fraction(stamp or 0) * Fraction(packet.time_base)


def _rescale(value: int | None, source: Fraction, target: Fraction) -> int | None:
    if value is None:
        return None
    exact = Fraction(value) * source / target
    return int(exact) if exact.denominator == 1 else round(exact)


def segment_packets(work: WorkFolder, out_stream: Any) -> Iterator[Any]:
    """Video packets of every chunk in order, rebased to ``out_stream``'s time base.

    Decode timestamps are made strictly increasing across segment joins (and filled in where
    a container, like Matroska, does not store them), never beyond the packet's pts: each
    segment's encoder starts its dts before its first pts to make room for B-frames.
    """
    target = Fraction(out_stream.time_base)
    last_dts: int | None = None
    for chunk in work.chunks:
        with av.open(str(work.file(chunk.files[0]))) as container:
            stream = container.streams.video[0]
            source = Fraction(stream.time_base)
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                pts = _rescale(packet.pts, source, target)
                dts = _rescale(packet.dts, source, target)
                if dts is None:
                    dts = pts if last_dts is None else last_dts + 1
                if last_dts is not None and dts <= last_dts:
                    dts = last_dts + 1
                if pts is not None and dts > pts:
                    raise VideoError(  # pragma: no cover - would need a broken encoder
                        f"chunk {chunk.index}: cannot join segments (dts {dts} > pts {pts})."
                    )
                last_dts = dts
                packet.pts, packet.dts = pts, dts
                packet.duration = _rescale(packet.duration, source, target) or 0
                packet.time_base = target
                packet.stream = out_stream
                yield packet


def assemble_video(
    output: Path,
    work: WorkFolder,
    muxer: str,
    container_options: dict[str, str],
    audio_tracks: list[Any],
    expected_frames: int,
) -> None:
    """Join the chunk segments and the audio tracks into ``output`` atomically.

    The video packets are copied unchanged (only their timestamps are rebased); the audio is
    copied or re-encoded as each track's plan says. Nothing appears under ``output`` unless
    every frame was written.
    """
    from .audio import AudioFeed

    first_segment = work.file(work.chunks[0].files[0])
    feeds: list[AudioFeed] = []
    with atomic_path(output) as temp:
        try:
            with av.open(str(first_segment)) as template_file, av.open(
                str(temp), "w", format=muxer, container_options={"fflags": "+bitexact", **container_options}
            ) as container:
                template = template_file.streams.video[0]
                video = container.add_stream_from_template(template)
                if template.metadata.get("alpha_mode") == "1":
                    # VP8/VP9 alpha travels beside the frames; the muxer flags it from the
                    # pixel format, which the demuxer reports without alpha.
                    video.codec_context.pix_fmt = "yuva420p"
                for track in audio_tracks:
                    feeds.append(AudioFeed(container, track))
                container.start_encoding()
                counts = mux_interleaved(container, [segment_packets(work, video), *(f.packets() for f in feeds)])
        except av.error.FFmpegError as exc:
            raise VideoError(f"Cannot write {output.name}: {exc}") from exc
        finally:
            for feed in feeds:
                feed.close()
        if counts[0] != expected_frames:
            raise VideoError(  # pragma: no cover - a pipeline bug
                f"{output.name}: {counts[0]} frames were assembled but {expected_frames} were processed."
            )


def _keyed(packets: Iterator[Any], order: int) -> Iterator[tuple[Fraction, int, int, Any]]:
    for serial, packet in enumerate(packets):
        yield _packet_key(packet), order, serial, packet


def mux_interleaved(container: Any, streams: list[Iterator[Any]]) -> list[int]:
    """Mux packets from several sorted packet iterators in timestamp order; returns how many
    packets each iterator gave."""
    counts = [0] * len(streams)
    merged = heapq.merge(*(_keyed(packets, order) for order, packets in enumerate(streams)))
    for _key, order, _serial, packet in merged:
        container.mux_one(packet)
        counts[order] += 1
    return counts
