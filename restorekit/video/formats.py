"""What this FFmpeg build can write, and the choices made for an output video.

- :data:`CONTAINERS`: output file extensions and their muxer, default encoder and the audio
  encoder used when an audio stream cannot be copied into that container.
- :data:`CODECS`: per-encoder knowledge (quality option and default, presets, alpha).
  Encoders not listed still work with ``--encoder-option``; only ``--crf`` needs an entry.
- :func:`pixel_layout` / :func:`choose_pixel_format`: keep the source's bit depth, chroma
  subsampling and alpha where the encoder allows, and say what is not kept.
- :func:`check_encoder`: open the encoder and write a container header in memory, so a bad
  codec, option or pixel format fails in a second, before any frame is processed.
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import av

from ..errors import InvalidParameterError, VideoError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContainerSpec:
    """An output container: FFmpeg muxer name, default encoder, fallback audio encoder."""

    muxer: str
    video_codec: str
    audio_codec: str
    options: Mapping[str, str] = field(default_factory=dict)


CONTAINERS: dict[str, ContainerSpec] = {
    ".mp4": ContainerSpec("mp4", "libx264", "aac", {"movflags": "+faststart"}),
    ".m4v": ContainerSpec("mp4", "libx264", "aac", {"movflags": "+faststart"}),
    ".mov": ContainerSpec("mov", "libx264", "aac", {"movflags": "+faststart"}),
    ".mkv": ContainerSpec("matroska", "libx264", "aac"),
    ".webm": ContainerSpec("webm", "libvpx-vp9", "libopus"),
}
"""Output extensions. Matroska holds almost any audio codec, so audio is nearly always copied."""


@dataclass(frozen=True)
class CodecSpec:
    """What RestoreKit knows about one encoder.

    Attributes:
        quality_option: the encoder option ``--crf`` sets (None: no quality knob).
        default_quality: the value used when ``--crf`` is not given.
        quality_range: the valid ``--crf`` range.
        preset_option: the encoder option ``--preset`` sets.
        options: options always passed to the encoder.
        alpha: the encoder stores alpha in this FFmpeg build (with a pixel format that has it).
        lossless: the encoder is lossless, so RGB sources are kept in RGB.
    """

    quality_option: str | None = None
    default_quality: int | None = None
    quality_range: tuple[int, int] | None = None
    preset_option: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    alpha: bool = False
    lossless: bool = False


CODECS: dict[str, CodecSpec] = {
    "libx264": CodecSpec("crf", 18, (0, 51), "preset"),
    "libx265": CodecSpec("crf", 20, (0, 51), "preset", {"x265-params": "log-level=error"}),
    "libvpx-vp9": CodecSpec("crf", 30, (0, 63), "cpu-used", {"b": "0", "row-mt": "1"}, alpha=True),
    "libsvtav1": CodecSpec("crf", 32, (0, 63), "preset"),
    "ffv1": CodecSpec(alpha=True, lossless=True),
    "png": CodecSpec(alpha=True, lossless=True),
    "qtrle": CodecSpec(alpha=True, lossless=True),
    "prores_ks": CodecSpec("qscale", None, (1, 32), None, alpha=True),
}
"""Encoders with known options. libx265 advertises yuva420p but this build's x265 refuses it,
so alpha is not claimed for it."""

CODEC_ALIASES: dict[str, str] = {
    "h264": "libx264",
    "x264": "libx264",
    "avc": "libx264",
    "hevc": "libx265",
    "h265": "libx265",
    "x265": "libx265",
    "vp9": "libvpx-vp9",
    "av1": "libsvtav1",
    "prores": "prores_ks",
}

ALPHA_HINT = "use ffv1 (.mkv), png, qtrle or prores_ks (.mov), or libvpx-vp9 (.webm) to keep it"


def container_for(path: str | Path) -> ContainerSpec:
    """The :class:`ContainerSpec` for an output file name, or a clear error."""
    suffix = Path(path).suffix.lower()
    spec = CONTAINERS.get(suffix)
    if spec is None:
        raise InvalidParameterError(
            f"Cannot write a video with extension {suffix or '(none)'!r}: use one of "
            f"{', '.join(sorted(CONTAINERS))}, or give a folder name (no extension) for PNG frames."
        )
    return spec


def normalize_codec(name: str) -> str:
    """Canonical encoder name (``h264`` -> ``libx264``), checked against this FFmpeg build."""
    key = name.strip().lower()
    codec = CODEC_ALIASES.get(key, key)
    try:
        found = av.codec.Codec(codec, "w")
    except Exception as exc:
        raise InvalidParameterError(
            f"Unknown or unavailable video encoder {name!r} in this FFmpeg build "
            f"(PyAV {av.__version__}). Use one of: {', '.join(sorted(CODECS))}."
        ) from exc
    if found.type != "video":
        raise InvalidParameterError(f"{name!r} is an {found.type} encoder, not a video encoder.")
    return codec


def codec_spec(codec: str) -> CodecSpec:
    """Known facts about an encoder (an empty spec for encoders not in :data:`CODECS`)."""
    return CODECS.get(codec, CodecSpec())


# --------------------------------------------------------------------------- pixel formats


@dataclass(frozen=True)
class PixelLayout:
    """The parts of a pixel format that matter for keeping quality.

    Attributes:
        name: FFmpeg pixel format name.
        bits: bits per color sample (8, 10, 12, 16).
        alpha: has an alpha plane.
        rgb: stores RGB (or GBR) rather than YUV or gray.
        gray: luma only.
        chroma: log2 chroma subsampling (horizontal, vertical): (1, 1) is 4:2:0,
            (1, 0) is 4:2:2 and (0, 0) is 4:4:4 (RGB and gray too).
    """

    name: str
    bits: int
    alpha: bool
    rgb: bool
    gray: bool
    chroma: tuple[int, int]

    @property
    def chroma_name(self) -> str:
        if self.rgb:
            return "RGB"
        if self.gray:
            return "gray"
        return {(1, 1): "4:2:0", (1, 0): "4:2:2", (0, 0): "4:4:4", (0, 1): "4:4:0"}.get(
            self.chroma, f"subsampled {self.chroma}"
        )

    def describe(self) -> str:
        return f"{self.bits}-bit {self.chroma_name}{' + alpha' if self.alpha else ''}"


def pixel_layout(name: str) -> PixelLayout:
    """Describe an FFmpeg pixel format (raises :class:`VideoError` for unknown names)."""
    try:
        fmt = av.VideoFormat(name, 64, 64)
    except (ValueError, av.error.FFmpegError) as exc:
        raise VideoError(f"Unknown pixel format {name!r}.") from exc
    components = fmt.components
    color = [c for c in components if not c.is_alpha]
    bits = max((c.bits for c in color), default=8)
    alpha = any(c.is_alpha for c in components)
    rgb = bool(fmt.is_rgb)
    gray = not rgb and len(color) == 1 and not fmt.has_palette
    chroma_w = fmt.chroma_width(64) if not (rgb or gray) else 64
    chroma_h = fmt.chroma_height(64) if not (rgb or gray) else 64
    chroma = ((64 // max(chroma_w, 1)).bit_length() - 1, (64 // max(chroma_h, 1)).bit_length() - 1)
    return PixelLayout(name=name, bits=bits, alpha=alpha, rgb=rgb, gray=gray, chroma=chroma)


def _usable(name: str) -> bool:
    """Pixel formats worth choosing automatically (no palettes, bitstreams, hardware, 1-bit,
    legacy full-range yuvj*, semi-planar nv*)."""
    if name.startswith(("yuvj", "nv", "pal", "mono", "bayer")):
        return False
    try:
        fmt = av.VideoFormat(name, 64, 64)
    except (ValueError, av.error.FFmpegError):
        return False
    return not (fmt.has_palette or fmt.is_bit_stream or fmt.is_bayer)


def candidate_pixel_formats(
    codec: str, source: PixelLayout, *, keep_alpha: bool = True
) -> list[PixelLayout]:
    """The encoder's pixel formats, best first for ``source``.

    Order of preference: alpha kept (when the source has it and ``keep_alpha``), gray for gray
    sources, at least the source's bit depth and then the closest depth, the source's chroma
    subsampling (RGB sources become 4:2:0 with lossy encoders, for playability, and stay RGB
    with lossless ones), then the encoder's own order.
    """
    spec = codec_spec(codec)
    formats = [f.name for f in (av.codec.Codec(codec, "w").video_formats or [])]
    layouts = [pixel_layout(name) for name in formats if _usable(name)]
    if not layouts:
        raise VideoError(f"Encoder {codec} lists no pixel format RestoreKit can feed it.")
    want_alpha = source.alpha and keep_alpha
    want_rgb = source.rgb and spec.lossless
    want_chroma = source.chroma if not source.rgb else ((0, 0) if spec.lossless else (1, 1))

    def rank(item: tuple[int, PixelLayout]) -> tuple[int | bool, ...]:
        index, layout = item
        enough = layout.bits >= source.bits
        distance = layout.bits - source.bits if enough else source.bits - layout.bits
        return (
            layout.alpha != want_alpha,
            layout.gray != source.gray,
            not enough,
            distance,
            layout.chroma != want_chroma,
            layout.rgb != want_rgb,
            index,
        )

    return [layout for _, layout in sorted(enumerate(layouts), key=rank)]


def format_notes(codec: str, source: PixelLayout, chosen: PixelLayout, keep_alpha: bool) -> list[str]:
    """Sentences saying what the chosen pixel format does not keep from the source."""
    notes: list[str] = []
    if source.bits > 8 and chosen.bits < source.bits:
        notes.append(
            f"{source.bits}-bit input written at {chosen.bits} bits: {codec} in this FFmpeg build "
            "has no deeper pixel format; libx265, libx264, ffv1 or prores_ks keep 10 bits"
        )
    if source.alpha and keep_alpha and not chosen.alpha:
        notes.append(f"alpha dropped: {codec} cannot store transparency here; {ALPHA_HINT}")
    return notes


# --------------------------------------------------------------------------- encoder setup


@dataclass(frozen=True)
class EncoderSettings:
    """Everything needed to open the video encoder of every segment identically."""

    muxer: str
    codec: str
    pix_fmt: str
    options: Mapping[str, str]
    time_base: Fraction
    frame_rate: Fraction | None

    @property
    def layout(self) -> PixelLayout:
        return pixel_layout(self.pix_fmt)


@functools.cache
def _cpu_has_avx512() -> bool:
    """True when the CPU has AVX-512 (x264 uses it whatever PyTorch is told to use)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return "avx512bw" in line.split()
    except OSError:
        pass
    import torch  # other systems: PyTorch's own detection

    try:
        return torch.backends.cpu.get_cpu_capability() == "AVX512"
    except (AttributeError, RuntimeError):  # pragma: no cover - old torch
        return False


def reproducible_options(codec: str, options: Mapping[str, str]) -> dict[str, str]:
    """Options that make the encoder give the same bytes for the same frames on every run,
    which resumed jobs rely on.

    x264 (core 165, in PyAV 18's FFmpeg) gives run-to-run different output with CRF on
    AVX-512 CPUs: its AVX-512 macroblock-tree code is not deterministic (measured on Zen 5;
    ``mbtree=0`` or ``asm=avx2`` both cure it). On such CPUs x264 is capped at AVX2, which
    costs little since most of x264's assembly is AVX2. 10-bit x264, x265, libvpx-vp9,
    SVT-AV1, ProRes and the lossless encoders were found deterministic as they are.
    """
    result = dict(options)
    if codec == "libx264" and _cpu_has_avx512():
        params = result.get("x264-params", "")
        if "asm=" not in params and "no-asm" not in params:
            result["x264-params"] = f"{params}:asm=avx2" if params else "asm=avx2"
    return result


def encoder_options(
    codec: str,
    *,
    crf: int | None = None,
    preset: str | None = None,
    extra: Mapping[str, str] | None = None,
    pix_fmt: str | None = None,
) -> dict[str, str]:
    """The option dictionary for ``codec``: its fixed options, quality, preset and extras."""
    spec = codec_spec(codec)
    options = dict(spec.options)
    if crf is not None:
        if spec.quality_option is None:
            raise InvalidParameterError(
                f"--crf does not apply to {codec}"
                + (" (it is lossless)" if spec.lossless else "")
                + "; pass encoder options with --encoder-option KEY=VALUE instead."
            )
        low, high = spec.quality_range or (0, 63)
        if not low <= int(crf) <= high:
            raise InvalidParameterError(f"--crf for {codec} must be {low}..{high}, got {crf}.")
        options[spec.quality_option] = str(int(crf))
    elif spec.quality_option and spec.default_quality is not None:
        options[spec.quality_option] = str(spec.default_quality)
    if preset is not None:
        if spec.preset_option is None:
            raise InvalidParameterError(
                f"--preset does not apply to {codec}; use --encoder-option KEY=VALUE."
            )
        options[spec.preset_option] = str(preset)
    if codec == "prores_ks" and pix_fmt is not None:
        options.setdefault("profile", "4" if pixel_layout(pix_fmt).chroma == (0, 0) else "3")
    options.update(extra or {})
    return reproducible_options(codec, options)


def open_encoder_stream(container: object, settings: EncoderSettings, width: int, height: int) -> object:
    """Add a configured video stream for ``settings`` to an open output container."""
    stream = container.add_stream(settings.codec, rate=settings.frame_rate or None)  # type: ignore[attr-defined]
    stream.width = width
    stream.height = height
    stream.pix_fmt = settings.pix_fmt
    stream.time_base = settings.time_base
    context = stream.codec_context
    context.time_base = settings.time_base
    if settings.frame_rate:
        context.framerate = settings.frame_rate
    stream.options = dict(settings.options)
    return stream


def check_encoder(settings: EncoderSettings, width: int = 64, height: int = 64) -> None:
    """Open ``settings``' encoder and write a container header in memory, or raise
    :class:`VideoError` naming the codec, pixel format and options that failed."""
    buffer = io.BytesIO()
    try:
        with av.open(buffer, "w", format=settings.muxer) as container:
            stream = open_encoder_stream(container, settings, width, height)
            stream.codec_context.open()
            container.start_encoding()
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise VideoError(
            f"The encoder {settings.codec} cannot write {settings.pix_fmt} into "
            f"{settings.muxer} with options {dict(settings.options)}: {exc}. Choose another "
            "--codec, --pix-fmt or --encoder-option."
        ) from exc


def choose_encoder_format(
    settings: EncoderSettings,
    source: PixelLayout,
    *,
    keep_alpha: bool = True,
    forced_pix_fmt: str | None = None,
    preset: str | None = None,
    crf: int | None = None,
    extra: Mapping[str, str] | None = None,
) -> tuple[EncoderSettings, list[str]]:
    """Pick the best pixel format the encoder accepts in practice, and say what is lost.

    Candidates are tried best first (:func:`candidate_pixel_formats`); a format the encoder
    lists but refuses to open (x265's yuva420p here) is skipped.
    """
    if forced_pix_fmt:
        layout = pixel_layout(forced_pix_fmt)
        chosen = _with_format(settings, layout.name, crf=crf, preset=preset, extra=extra)
        check_encoder(chosen)
        return chosen, format_notes(settings.codec, source, layout, keep_alpha)
    errors: list[str] = []
    for layout in candidate_pixel_formats(settings.codec, source, keep_alpha=keep_alpha)[:4]:
        chosen = _with_format(settings, layout.name, crf=crf, preset=preset, extra=extra)
        try:
            check_encoder(chosen)
        except VideoError as exc:
            logger.debug("pixel format %s refused: %s", layout.name, exc)
            errors.append(str(exc))
            continue
        return chosen, format_notes(settings.codec, source, layout, keep_alpha)
    raise VideoError(errors[-1] if errors else f"{settings.codec} cannot be opened.")


def _with_format(
    settings: EncoderSettings,
    pix_fmt: str,
    *,
    crf: int | None,
    preset: str | None,
    extra: Mapping[str, str] | None,
) -> EncoderSettings:
    options = encoder_options(settings.codec, crf=crf, preset=preset, extra=extra, pix_fmt=pix_fmt)
    return replace(settings, pix_fmt=pix_fmt, options=options)
