"""``restorekit video``: restore every frame of a video or a folder of frames, keeping the
timing, the audio, the bit depth and alpha; resumable with ``--resume``.

Two option groups keep this easy to extend: :func:`add_processing_options` (what runs on each
frame; :func:`build_processor` turns them into a frame processor) and
:func:`add_video_options` (decoding, encoding, chunks; :func:`video_options`).
"""

from __future__ import annotations

import argparse
import contextlib
from typing import TYPE_CHECKING, Any

from ..errors import InvalidParameterError
from ..video import DEFAULT_BATCH, DEFAULT_CHUNK_FRAMES
from .common import cancel_on_interrupt, progress_for

if TYPE_CHECKING:
    from ..video import FrameProcessor, VideoOptions


def register(subparsers: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "video",
        parents=[common],
        help="restore/upscale every frame of a video or frame folder, keeping timing and audio",
        description="Run the restoration engine on every frame of a video (or a folder of frames) "
        "and write a video with the same timestamps and audio, or a folder of PNG frames. "
        "Work is chunked: after Ctrl-C or a crash, run the same command with --resume.",
    )
    parser.add_argument("input", help="video file (mp4, mkv, mov, webm...) or folder of frames")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help="output video (.mp4, .mkv, .mov, .webm) or folder name (no extension) for PNG frames",
    )
    add_processing_options(parser)
    add_video_options(parser)
    from .batch import add_cluster_arguments

    add_cluster_arguments(parser)
    parser.set_defaults(handler=cmd_video)
    return parser


def add_processing_options(parser: argparse.ArgumentParser) -> None:
    """What runs on each frame: the upscale options of ``restorekit upscale`` (model, size,
    tiling, precision), the pair strengths and face restoration (``--face-restore``)."""
    from .faces import add_face_arguments, add_tracking_arguments
    from .upscale import add_strength_arguments, add_upscale_arguments

    add_upscale_arguments(parser)
    add_strength_arguments(parser)
    add_face_arguments(parser, model_flag="--face-restore", restore_by_default=False)
    add_tracking_arguments(parser, default_on=True)


def build_processor(args: argparse.Namespace) -> FrameProcessor:
    """The frame processor for ``args`` (the one place a CLI command builds it)."""
    from ..video import make_frame_processor
    from .upscale import settings_from_args

    if args.outscale is not None and (args.width is not None or args.height is not None):
        raise InvalidParameterError("Give --outscale or --width/--height, not both.")
    return make_frame_processor(settings=settings_from_args(args))


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def add_video_options(parser: argparse.ArgumentParser) -> None:
    """Decoding, encoding, audio, chunking and resume options."""
    group = parser.add_argument_group("video")
    group.add_argument("-b", "--batch", type=int, default=DEFAULT_BATCH, help=f"frames per batch (default: {DEFAULT_BATCH})")
    group.add_argument(
        "-c", "--codec", help="video encoder: libx264, libx265, libvpx-vp9, libsvtav1, ffv1, png, qtrle, prores_ks "
        "(default: libx264; libvpx-vp9 for .webm)"
    )
    group.add_argument("--crf", type=int, help="quality for x264/x265/VP9/AV1, lower is better (default: 18/20/30/32)")
    group.add_argument("--preset", help="encoder speed preset (x264/x265: medium, slow...; VP9: cpu-used 0-8)")
    group.add_argument("--pix-fmt", help="force a pixel format (default: keep the input's bit depth, chroma and alpha)")
    group.add_argument(
        "--encoder-option", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
        help="extra FFmpeg encoder option (repeatable), e.g. tune=film",
    )
    group.add_argument("--fps", help="frame rate of a frame-folder input, e.g. 25 or 30000/1001")
    audio = group.add_mutually_exclusive_group()
    audio.add_argument("--audio", metavar="FILE", help="take the audio from FILE instead of the input")
    audio.add_argument("--no-audio", action="store_true", help="write no audio")
    group.add_argument("--no-alpha", action="store_true", help="drop the alpha channel")
    group.add_argument(
        "--chunk-frames", type=int, default=DEFAULT_CHUNK_FRAMES,
        help=f"frames per resumable chunk, each starting on a keyframe (default: {DEFAULT_CHUNK_FRAMES})",
    )
    group.add_argument("--work-dir", help="folder for chunks (default: .<output>.restorekit-work beside the output)")
    group.add_argument("--resume", action="store_true", help="continue an interrupted run (same settings)")
    group.add_argument("--overwrite", action="store_true", help="replace the output and discard unfinished work")
    group.add_argument("--progress", action="store_true", help="show progress even when stderr is not a terminal")


def video_options(args: argparse.Namespace) -> VideoOptions:
    from ..video import VideoOptions

    if args.batch < 1:
        raise InvalidParameterError("--batch must be at least 1.")
    return VideoOptions(
        batch_size=args.batch,
        chunk_frames=args.chunk_frames,
        codec=args.codec,
        crf=args.crf,
        preset=args.preset,
        pix_fmt=args.pix_fmt,
        encoder_options=dict(args.encoder_option),
        fps=args.fps,
        audio=not args.no_audio,
        audio_file=args.audio,
        keep_alpha=not args.no_alpha,
        resume=args.resume,
        overwrite=args.overwrite,
        work_dir=args.work_dir,
    )


def cmd_video(args: argparse.Namespace) -> int:
    from ..video import process_video

    options = video_options(args)
    with cancel_on_interrupt() as cancel:
        processor = build_processor(args)
        with contextlib.ExitStack() as stack:
            if args.cluster:  # frames run on Ray; decoding, chunks, encoding and audio stay here
                from ..cluster import ClusterOptions
                from ..cluster.video import RayFrameProcessor

                cluster = ClusterOptions(address=args.cluster, workers=args.cluster_workers, cpus_per_worker=args.cluster_cpus)
                processor = stack.enter_context(RayFrameProcessor(processor, cluster))
            bar = progress_for(args, unit="frame")
            try:
                result = process_video(args.input, args.output, processor, options, progress=bar, cancel=cancel)
            finally:
                bar.close()
    print(result.summary())
    return 0
