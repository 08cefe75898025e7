"""Short test videos made with PyAV: constant or variable frame rate, AAC/PCM/Opus audio,
10-bit, alpha, color tags. Each returns what was written so tests can compare against it."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


@dataclass
class MadeVideo:
    path: Path
    frames: list[np.ndarray]
    """The RGB(A) frames given to the encoder, uint8 or uint16."""
    times: list[float]
    """Presentation time of each frame in seconds."""
    audio_seconds: float | None


def pattern(index: int, width: int, height: int, *, alpha: bool = False, deep: bool = False) -> np.ndarray:
    """A deterministic frame: a color gradient, a moving square and a moving stripe."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    red = (x / max(width - 1, 1)) * 0.8 + 0.1
    green = (y / max(height - 1, 1)) * 0.6 + 0.2
    blue = np.full_like(x, 0.3 + 0.02 * (index % 20))
    image = np.stack([red, green, blue], axis=-1)
    left = (index * 3) % max(width - 16, 1)
    image[8:24, left : left + 16] = (0.95, 0.9, 0.1)
    image[:, (index * 5) % width] = (0.05, 0.05, 0.6)
    if alpha:
        opacity = np.clip(x / max(width - 1, 1), 0.0, 1.0)[..., None]
        image = np.concatenate([image, opacity], axis=-1)
    if deep:
        return (image * 65535.0 + 0.5).astype(np.uint16)
    return (image * 255.0 + 0.5).astype(np.uint8)


def _add_audio(container: av.container.OutputContainer, codec: str, rate: int = 48000) -> av.AudioStream:
    return container.add_stream(codec, rate=rate, layout="mono")


def _write_audio(container: av.container.OutputContainer, stream: av.AudioStream, seconds: float) -> None:
    rate = stream.codec_context.sample_rate
    context = stream.codec_context
    formats = [f.name for f in (context.codec.audio_formats or [])]
    fmt = formats[0] if formats else "s16"
    frame_size = context.frame_size or 1024
    total = round(seconds * rate)
    done = 0
    while done < total:
        count = min(frame_size, total - done)
        t = np.arange(done, done + count) / rate
        wave = 0.3 * np.sin(2 * np.pi * 440.0 * t)
        samples = wave.astype(np.float32) if fmt.startswith("flt") else (wave * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples[None], format=fmt, layout="mono")
        frame.sample_rate = rate
        frame.pts = done
        frame.time_base = Fraction(1, rate)
        container.mux(stream.encode(frame))
        done += count
    container.mux(stream.encode(None))


def make_video(
    path: Path,
    *,
    frames: int = 24,
    fps: int = 25,
    size: tuple[int, int] = (96, 64),
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    gaps_ms: list[int] | None = None,
    audio: str | None = "aac",
    alpha: bool = False,
    colorspace: str | None = None,
    options: dict[str, str] | None = None,
) -> MadeVideo:
    """Write a test video; ``gaps_ms`` makes it variable-frame-rate (frame durations cycle
    through the list, in a 1/1000 time base)."""
    width, height = size
    deep = "10" in pix_fmt or "12" in pix_fmt or "16" in pix_fmt
    made: list[np.ndarray] = []
    times: list[float] = []
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        audio_stream = _add_audio(container, audio) if audio else None
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = {"x265-params": "log-level=error"} if codec == "libx265" else dict(options or {})
        time_base = Fraction(1, 1000) if gaps_ms else Fraction(1, fps)
        stream.codec_context.time_base = time_base
        if gaps_ms:
            stream.time_base = time_base
        if colorspace:
            stream.codec_context.colorspace = {"bt709": 1, "bt601": 6}[colorspace]
            stream.codec_context.color_range = 1
        pts = 0
        for index in range(frames):
            rgb = pattern(index, width, height, alpha=alpha, deep=deep)
            fmt = ("rgba64le" if alpha else "rgb48le") if deep else ("rgba" if alpha else "rgb24")
            frame = av.VideoFrame.from_ndarray(rgb, format=fmt)
            if colorspace:
                frame = frame.reformat(
                    format=pix_fmt, dst_colorspace={"bt709": "ITU709", "bt601": "SMPTE170M"}[colorspace], dst_color_range=1
                )
            else:
                frame = frame.reformat(format=pix_fmt)
            frame.pts = pts
            frame.time_base = time_base
            container.mux(stream.encode(frame))
            made.append(rgb)
            times.append(float(pts * time_base))
            pts += gaps_ms[index % len(gaps_ms)] if gaps_ms else 1
        container.mux(stream.encode(None))
        audio_seconds = None
        if audio_stream is not None:
            audio_seconds = float(pts * time_base)
            _write_audio(container, audio_stream, audio_seconds)
    return MadeVideo(path, made, times, audio_seconds)


def make_audio_file(path: Path, seconds: float = 1.0, codec: str = "aac") -> Path:
    """An audio-only file (no video stream)."""
    with av.open(str(path), "w") as container:
        _write_audio(container, _add_audio(container, codec), seconds)
    return path


def make_undecodable(path: Path) -> Path:
    """A NUT file whose video stream uses a codec with no decoder in this FFmpeg build."""
    with av.open(str(path), "w", format="nut") as container:
        stream = container.add_mux_stream("avs2", rate=25, width=64, height=64)
        container.start_encoding()
        for index in range(3):
            packet = av.Packet(bytes(64))
            packet.pts = packet.dts = index
            packet.time_base = Fraction(1, 25)
            packet.stream = stream
            container.mux(packet)
    return path


def audio_seconds(path: Path) -> float:
    """Decoded duration of the first audio stream (samples / rate)."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.codec_context.sample_rate


@dataclass
class Decoded:
    frames: list[np.ndarray]
    times: list[float]
    pix_fmt: str
    codec: str
    width: int
    height: int
    average_rate: Fraction | None
    video_duration: float | None
    audio_codec: str | None
    audio_seconds: float | None
    audio_packets: list[bytes]


def decode_video(path: Path, *, rgb_format: str = "rgb24") -> Decoded:
    """Every frame as RGB arrays with its time, plus the audio stream's codec, duration
    (from decoded samples) and packet bytes."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoder = stream.codec_context
        if stream.metadata.get("alpha_mode") == "1":
            decoder = av.CodecContext.create("libvpx-vp9", "r")
        frames: list[np.ndarray] = []
        times: list[float] = []
        for packet in container.demux(stream):
            for frame in decoder.decode(packet):
                frames.append(frame.to_ndarray(format=rgb_format))
                times.append(float(frame.pts * stream.time_base))
        pix_fmt = frame.format.name
        duration = float(stream.duration * stream.time_base) if stream.duration else None
        result = Decoded(
            frames, times, pix_fmt, stream.codec_context.name, stream.width, stream.height,
            stream.average_rate, duration, None, None, []
        )
    with av.open(str(path)) as container:
        if container.streams.audio:
            audio = container.streams.audio[0]
            result.audio_codec = audio.codec_context.name
            samples = 0
            rate = audio.codec_context.sample_rate
            for packet in container.demux(audio):
                if packet.size:
                    result.audio_packets.append(bytes(packet))
                for frame in packet.decode():
                    samples += frame.samples
            result.audio_seconds = samples / rate
    return result
