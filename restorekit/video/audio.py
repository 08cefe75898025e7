"""Audio: copy every audio stream into the output without re-encoding where the container can
hold its codec, else re-encode it to the container's usual audio codec (AAC; Opus for WebM),
and say which happened.

Copied packets keep their bytes and timestamps, so the audio stays in sync with the video,
whose timestamps are kept too.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from ..errors import VideoError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AudioTrack:
    """One audio stream of ``path`` and how it goes into the output.

    Attributes:
        path: the file holding it (the input video, or a separate audio file).
        stream: its index among that file's audio streams.
        codec: its codec name.
        copy: True to copy the packets, False to re-encode with ``encoder``.
        encoder: the encoder used when not copying.
        note: a sentence for the user (``copied (aac)``, ``re-encoded to aac because ...``).
    """

    path: Path
    stream: int
    codec: str
    copy: bool
    encoder: str | None
    note: str


def _can_copy(muxer: str, stream: Any) -> str | None:
    """None if ``stream`` can be copied into ``muxer``, else the reason it cannot."""
    codec = stream.codec_context.name if stream.codec_context is not None else "unknown"
    try:
        with av.open(io.BytesIO(), "w", format=muxer) as probe:
            if codec not in probe.supported_codecs:
                return f"{muxer} cannot hold {codec}"
            probe.add_stream_from_template(stream)
            probe.start_encoding()
    except (av.error.FFmpegError, ValueError) as exc:
        logger.debug("copying %s into %s failed: %s", codec, muxer, exc)
        return f"{muxer} cannot hold {codec}"
    return None


def plan_audio(path: Path, muxer: str, fallback_encoder: str) -> list[AudioTrack]:
    """How each audio stream of ``path`` goes into a ``muxer`` file (empty if it has none)."""
    try:
        container = av.open(str(path), metadata_errors="replace")
    except FileNotFoundError as exc:
        raise VideoError(f"Audio file {path} does not exist.") from exc
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoError(f"Audio file {path} cannot be read ({exc}).") from exc
    tracks: list[AudioTrack] = []
    with container:
        for number, stream in enumerate(container.streams.audio):
            if stream.codec_context is None:
                logger.warning("%s: audio stream %d has a codec this FFmpeg cannot decode; skipped", path.name, number)
                continue
            codec = stream.codec_context.name
            reason = _can_copy(muxer, stream)
            if reason is None:
                tracks.append(AudioTrack(path, number, codec, True, None, f"audio copied without re-encoding ({codec})"))
                continue
            _check_encoder(fallback_encoder)
            note = f"audio re-encoded to {fallback_encoder}: {reason}"
            logger.warning("%s", note)
            tracks.append(AudioTrack(path, number, codec, False, fallback_encoder, note))
    return tracks


def _check_encoder(name: str) -> None:
    try:
        av.codec.Codec(name, "w")
    except Exception as exc:
        raise VideoError(f"This FFmpeg build has no {name} encoder to re-encode the audio.") from exc


class AudioFeed:
    """One audio track's output stream and the packets to mux into it.

    Created before the output header is written (it adds the stream); :meth:`packets` is
    iterated afterwards; :meth:`close` releases the source file.
    """

    def __init__(self, container: Any, track: AudioTrack) -> None:
        self.track = track
        self.source = av.open(str(track.path), metadata_errors="replace")
        self.in_stream = self.source.streams.audio[track.stream]
        if track.copy:
            self.out_stream = container.add_stream_from_template(self.in_stream)
            return
        context = self.in_stream.codec_context
        codec = av.codec.Codec(track.encoder, "w")
        rates = list(codec.audio_rates or [])
        self.rate = context.sample_rate if not rates or context.sample_rate in rates else 48000
        self.layout = context.layout.name if context.layout.nb_channels <= 2 else "stereo"
        self.sample_format = codec.audio_formats[0].name if codec.audio_formats else "fltp"
        self.out_stream = container.add_stream(track.encoder, rate=self.rate, layout=self.layout)

    def packets(self) -> Iterator[Any]:
        if self.track.copy:
            return _copied(self.source, self.in_stream, self.out_stream)
        return _encoded(self.source, self.in_stream, self.out_stream, self.rate, self.layout, self.sample_format)

    def close(self) -> None:
        self.source.close()


def _copied(source: Any, in_stream: Any, out_stream: Any) -> Iterator[Any]:
    for packet in source.demux(in_stream):
        if packet.size == 0 or (packet.dts is None and packet.pts is None):
            continue
        packet.stream = out_stream
        yield packet


def _encoded(source: Any, in_stream: Any, out_stream: Any, rate: int, layout: str, sample_format: str) -> Iterator[Any]:
    resampler = av.AudioResampler(format=sample_format, layout=layout, rate=rate)
    time_base = Fraction(1, rate)
    next_pts: int | None = None

    def stamp(frames: list[Any]) -> Iterator[Any]:
        nonlocal next_pts
        for frame in frames:
            frame.pts, frame.time_base = next_pts, time_base
            next_pts = (next_pts or 0) + frame.samples
            yield from out_stream.encode(frame)

    for packet in source.demux(in_stream):
        try:
            decoded = packet.decode()
        except av.error.FFmpegError as exc:
            logger.warning("skipped an audio packet that does not decode (%s)", exc)
            continue
        for frame in decoded:
            if next_pts is None:
                next_pts = round((frame.time or 0.0) * rate)
            yield from stamp(resampler.resample(frame))
    yield from stamp(resampler.resample(None))
    yield from out_stream.encode(None)
