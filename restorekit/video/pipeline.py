"""The video job: decode -> process -> encode, overlapped, chunked and resumable.

Three stages run at once, joined by bounded queues (so memory stays bounded however long the
video is):

1. a reader thread decodes frames and groups them into batches (never across a chunk end);
2. the calling thread runs the frame processor on each batch (torch uses its own threads);
3. a writer thread quantizes the results and encodes them into the current chunk's segment
   (or PNG frames), then records the finished chunk in the work folder's manifest.

At the end the chunks are assembled into the output (with the audio) atomically and the work
folder is removed. See :mod:`restorekit.video.work` for resuming.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from ..device import is_out_of_memory
from ..errors import CancelledError, InvalidParameterError, RestoreKitError, VideoError
from ..progress import CancelCheck, ProgressCallback, Reporter
from .audio import AudioTrack, plan_audio
from .formats import (
    EncoderSettings,
    choose_encoder_format,
    container_for,
    encoder_options,
    normalize_codec,
)
from .processor import DEFAULT_BATCH, AlphaPath, FrameProcessor, resize_alpha
from .sink import (
    FrameChunkWriter,
    OutputFrame,
    SegmentWriter,
    assemble_video,
    even_size,
    output_color,
)
from .source import FrameSource, SourceFrame, VideoInfo, open_source
from .work import DEFAULT_CHUNK_FRAMES, WorkFolder, default_work_dir, input_identity

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoOptions:
    """How to run a video job (every field has a sensible default).

    Attributes:
        batch_size: frames per processor call.
        chunk_frames: frames per resumable chunk; each chunk starts on a keyframe.
        codec: video encoder (``libx264``, ``libx265``, ``libvpx-vp9``, ``ffv1``, ``png``,
            ``qtrle``, ``prores_ks``, ``libsvtav1``...); None: the container's default.
        crf: quality for encoders that have one (lower is better); None: codec default.
        preset: encoder speed preset (x264/x265/SVT-AV1 ``preset``, VP9 ``cpu-used``).
        pix_fmt: force a pixel format; None keeps the source's depth, chroma and alpha
            where the encoder allows.
        encoder_options: extra FFmpeg encoder options.
        fps: frame rate of a folder of frames (required to write a video from one).
        audio: write audio (copied, or re-encoded if the container cannot hold it).
        audio_file: take the audio from this file instead of the input.
        keep_alpha: keep an alpha channel when the output can hold it.
        resume: continue the unfinished job in the work folder.
        overwrite: replace an existing output and discard unfinished work.
        work_dir: where chunks go (default: ``.<output name>.restorekit-work`` beside it).
        max_pixels: cap on input frame pixels (default: ``RESTOREKIT_MAX_PIXELS``).
        queue_batches: batches each queue may hold (memory vs. smoothing).
    """

    batch_size: int = DEFAULT_BATCH
    chunk_frames: int = DEFAULT_CHUNK_FRAMES
    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    encoder_options: Mapping[str, str] = field(default_factory=dict)
    fps: Fraction | float | str | None = None
    audio: bool = True
    audio_file: Path | str | None = None
    keep_alpha: bool = True
    resume: bool = False
    overwrite: bool = False
    work_dir: Path | str | None = None
    max_pixels: int | None = None
    queue_batches: int = 2


@dataclass
class VideoResult:
    """What a video job wrote."""

    output: Path
    is_folder: bool
    frames: int
    width: int
    height: int
    frame_rate: Fraction | None
    duration: float | None
    codec: str | None
    pix_fmt: str | None
    audio: list[str]
    notes: list[str]
    reused_chunks: int
    chunks: int
    processed_frames: int
    seconds: float

    def summary(self) -> str:
        """One line for the user."""
        if self.is_folder:
            what = f"{self.frames} PNG frames of {self.width}x{self.height}"
        else:
            rate = f" at {float(self.frame_rate):.3g} fps" if self.frame_rate else ""
            length = f", {self.duration:.2f} s" if self.duration else ""
            what = f"{self.frames} frames of {self.width}x{self.height}{rate}{length}, {self.codec} {self.pix_fmt}"
        parts = [f"{self.output}: {what}"]
        if self.reused_chunks:
            parts.append(f"{self.reused_chunks} of {self.chunks} chunks reused from the interrupted run")
        parts += self.audio + self.notes
        return "; ".join(parts)


# --------------------------------------------------------------------------- planning


@dataclass
class _Target:
    """Where frames go: an encoded video (``settings``) or a folder of PNGs."""

    output: Path
    is_folder: bool
    suffix: str = ""
    settings: EncoderSettings | None = None
    container_options: dict[str, str] = field(default_factory=dict)
    audio: list[AudioTrack] = field(default_factory=list)
    keep_alpha: bool = False
    sample_dtype: np.dtype = field(default_factory=lambda: np.dtype(np.uint8))
    notes: list[str] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)


def _is_folder_output(output: Path) -> bool:
    return output.is_dir() or output.suffix == ""


def _plan_target(output: Path, info: VideoInfo, options: VideoOptions) -> _Target:
    if _is_folder_output(output):
        target = _Target(output=output, is_folder=True, keep_alpha=info.layout.alpha and options.keep_alpha)
        target.sample_dtype = info.sample_dtype
        if info.names and len(set(info.names)) == len(info.names):
            target.names = dict(enumerate(info.names))
        if options.audio and (options.audio_file or info.audio_streams):
            target.notes.append("frame folders hold no audio: the audio was not written")
        return target
    spec = container_for(output)
    if info.frame_rate is None and info.is_folder:
        raise InvalidParameterError(
            f"{info.path} is a folder of frames, which has no frame rate: pass --fps (for example --fps 25)."
        )
    codec = normalize_codec(options.codec or spec.video_codec)
    with av.open(io.BytesIO(), "w", format=spec.muxer) as probe:
        if codec not in probe.supported_codecs:
            raise InvalidParameterError(
                f"{output.suffix} files cannot hold {codec} video. Use .mkv or .mov, or another --codec."
            )
    base = EncoderSettings(
        muxer=spec.muxer,
        codec=codec,
        pix_fmt="",
        options=encoder_options(codec, crf=options.crf, preset=options.preset, extra=options.encoder_options),
        time_base=info.time_base,
        frame_rate=info.frame_rate,
    )
    settings, notes = choose_encoder_format(
        base,
        info.layout,
        keep_alpha=options.keep_alpha,
        forced_pix_fmt=options.pix_fmt,
        crf=options.crf,
        preset=options.preset,
        extra=options.encoder_options,
    )
    layout = settings.layout
    target = _Target(
        output=output,
        is_folder=False,
        suffix=output.suffix.lower(),
        settings=settings,
        container_options=dict(spec.options),
        keep_alpha=layout.alpha and info.layout.alpha and options.keep_alpha,
        sample_dtype=np.dtype(np.uint16 if layout.bits > 8 or info.layout.bits > 8 else np.uint8),
        notes=notes,
    )
    if options.audio:
        audio_source = Path(options.audio_file) if options.audio_file else (None if info.is_folder else info.path)
        if audio_source is not None:
            target.audio = plan_audio(audio_source, spec.muxer, spec.audio_codec)
    return target


def _settings_record(info: VideoInfo, target: _Target, processor: Any, chunk_frames: int) -> dict[str, Any]:
    """Everything that changes the chunks' bytes, for the manifest."""
    fingerprint = getattr(processor, "fingerprint", None)
    if fingerprint is None:
        fingerprint = f"{type(processor).__module__}.{type(processor).__qualname__} (no fingerprint)"
    record: dict[str, Any] = {
        "input": input_identity(info.path),
        "processor": str(fingerprint),
        "chunk_frames": chunk_frames,
        "alpha": target.keep_alpha,
        "output": {"kind": "folder" if target.is_folder else "video", "samples": str(target.sample_dtype)},
    }
    if target.settings is not None:
        settings = target.settings
        record["output"].update(
            muxer=settings.muxer,
            codec=settings.codec,
            pix_fmt=settings.pix_fmt,
            options=dict(settings.options),
            time_base=str(settings.time_base),
            frame_rate=str(settings.frame_rate),
        )
    return record


# --------------------------------------------------------------------------- threads


class _StoppedError(Exception):
    """Raised inside a stage when the job is stopping (cancel, error elsewhere)."""


class _State:
    def __init__(self) -> None:
        self.stop = threading.Event()
        self.failure: BaseException | None = None
        self._lock = threading.Lock()

    def fail(self, error: BaseException) -> None:
        with self._lock:
            if self.failure is None:
                self.failure = error
        self.stop.set()


class _Channel:
    """A bounded queue whose ``put``/``get`` give up when the job stops."""

    def __init__(self, size: int, state: _State) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, size))
        self._state = state

    def put(self, item: Any) -> None:
        while True:
            if self._state.stop.is_set():
                raise _StoppedError
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def get(self) -> Any:
        while True:
            try:
                return self._queue.get(timeout=0.05)
            except queue.Empty:
                if self._state.stop.is_set():
                    raise _StoppedError from None


_END = object()


@dataclass
class _Batch:
    frames: list[SourceFrame]
    closes_chunk: bool


@dataclass
class _Processed:
    frames: list[SourceFrame]
    closes_chunk: bool
    pixels: torch.Tensor
    alpha: torch.Tensor | None


def _quantize(batch: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """(B, C, H, W) float [0, 1] -> (B, H, W, C) uint8/uint16, rounding half up."""
    maximum = 255.0 if dtype == np.uint8 else 65535.0
    scaled = batch.detach().to("cpu", torch.float32).mul(maximum).add_(0.5).clamp_(0.0, maximum)
    integers = scaled.to(torch.uint8 if dtype == np.uint8 else torch.int32)
    array = integers.permute(0, 2, 3, 1).contiguous().numpy()  # free for channels_last input
    return array if array.dtype == dtype else array.astype(dtype)


class _Job:
    """One run of the three stages over the unfinished part of a work folder."""

    def __init__(
        self,
        source: FrameSource,
        processor: FrameProcessor,
        alpha_path: AlphaPath,
        target: _Target,
        work: WorkFolder,
        options: VideoOptions,
        reporter: Reporter,
    ) -> None:
        self.source = source
        self.info = source.info
        self.processor = processor
        self.alpha_path = alpha_path
        self.target = target
        self.work = work
        self.options = options
        self.reporter = reporter
        self.state = _State()
        self.decoded = _Channel(options.queue_batches, self.state)
        self.processed = _Channel(options.queue_batches, self.state)
        self.output_size: tuple[int, int] | None = None
        self.encode_size: tuple[int, int] | None = None
        self.processed_frames = 0

    # ------------------------------------------------------------------ reader

    def _read(self, start: int) -> None:
        chunk, size = self.options.chunk_frames, self.options.batch_size
        try:
            batch: list[SourceFrame] = []
            for frame in self.source.frames(start):
                batch.append(frame)
                closes = (frame.index + 1) % chunk == 0
                if closes or len(batch) == size:
                    self.decoded.put(_Batch(batch, closes))
                    batch = []
            if batch:
                self.decoded.put(_Batch(batch, True))
            self.decoded.put(_END)
        except _StoppedError:
            pass
        except BaseException as exc:  # delivered to the calling thread
            self.state.fail(exc)

    # ------------------------------------------------------------------ compute

    def _inputs(self, batch: _Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rgb, planes)``: the batch as (B, 3, H, W) float32 [0, 1] (a channels_last view)
        and all its planes (alpha included)."""
        arrays = np.stack([frame.pixels for frame in batch.frames])
        scale = 255.0 if arrays.dtype == np.uint8 else 65535.0
        samples = torch.from_numpy(np.divide(arrays, scale, dtype=np.float32))
        planes = samples.permute(0, 3, 1, 2)  # a channels_last view, no copy
        rgb = planes if planes.shape[1] == 3 else planes[:, :3].contiguous(memory_format=torch.channels_last)
        return rgb, planes

    def _compute(self, batch: _Batch) -> _Processed:
        rgb, planes = self._inputs(batch)
        return self._processed(batch, planes, lambda: self.processor(rgb))

    def _processed(self, batch: _Batch, planes: torch.Tensor, run: Callable[[], Any]) -> _Processed:
        count = len(batch.frames)
        try:
            with torch.inference_mode():
                output = run()
        except RestoreKitError:
            raise
        except Exception as exc:
            if is_out_of_memory(exc):
                raise VideoError(
                    f"Out of memory processing {count} frames of {self.info.width}x{self.info.height} "
                    f"(from frame {batch.frames[0].index}). Use a smaller --batch; finished chunks "
                    "are kept, so rerun with --resume."
                ) from exc
            raise
        output = self._check_output(output, count)
        alpha = None
        if self.target.keep_alpha and planes.shape[1] == 4:
            with torch.inference_mode():
                alpha = self.alpha_path(planes[:, 3:].contiguous(), tuple(output.shape[-2:]))
        return _Processed(batch.frames, batch.closes_chunk, output, alpha)

    def _check_output(self, output: Any, count: int) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.ndim != 4 or output.shape[:2] != (count, 3):
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise VideoError(f"The frame processor returned {shape}; expected ({count}, 3, H, W).")
        size = (int(output.shape[-1]), int(output.shape[-2]))
        if self.output_size is None:
            self.output_size = size
        elif size != self.output_size:
            raise VideoError(
                f"The frame processor changed the frame size from {self.output_size[0]}x"
                f"{self.output_size[1]} to {size[0]}x{size[1]}; a video needs one size."
            )
        return output.float()

    # ------------------------------------------------------------------ writer

    def _open_chunk(self, index: int, first_frame: int, width: int, height: int) -> Any:
        target = self.target
        if target.is_folder:
            return FrameChunkWriter(self.work, index, first_frame, gray=self.info.layout.gray, names=target.names)
        assert target.settings is not None
        layout = target.settings.layout
        if self.encode_size is None:
            self.encode_size = even_size(width, height, layout)
            if self.encode_size != (width, height):
                target.notes.append(
                    f"frames padded from {width}x{height} to {self.encode_size[0]}x{self.encode_size[1]} "
                    f"(edge pixels repeated): {target.settings.pix_fmt} needs even sizes"
                )
        color = output_color(self.info.color, self.info.layout, layout)
        return SegmentWriter(
            self.work,
            index,
            first_frame,
            target.settings,
            target.suffix,
            self.encode_size,
            color,
            rotation=self.info.rotation,
            sample_aspect_ratio=self.info.sample_aspect_ratio,
        )

    def _frames_out(self, item: _Processed) -> list[OutputFrame]:
        planes = item.pixels if item.alpha is None else torch.cat([item.pixels, item.alpha], dim=1)
        arrays = _quantize(planes, self.target.sample_dtype)
        return [
            OutputFrame(frame.index, frame.pts, frame.duration, arrays[i], frame.name)
            for i, frame in enumerate(item.frames)
        ]

    def _write(self) -> None:
        current: Any = None
        index = len(self.work.chunks)
        try:
            while True:
                item = self.processed.get()
                if item is _END:
                    if current is not None:
                        self.work.add_chunk(current.finish())
                        current = None
                    self.work.mark_finished()
                    return
                frames = self._frames_out(item)
                if current is None:
                    height, width = frames[0].pixels.shape[:2]
                    current = self._open_chunk(index, item.frames[0].index, width, height)
                for frame in frames:
                    current.write(frame)
                if item.closes_chunk:
                    record = current.finish()
                    current = None
                    self.work.add_chunk(record)
                    index += 1
        except _StoppedError:
            pass
        except BaseException as exc:
            self.state.fail(exc)
        finally:
            if current is not None:
                current.abort()

    # ------------------------------------------------------------------ run

    def run(self) -> None:
        start = self.work.next_frame
        total = self.info.estimated_frames
        reader = threading.Thread(target=self._read, args=(start,), name="restorekit-video-read", daemon=True)
        writer = threading.Thread(target=self._write, name="restorekit-video-write", daemon=True)
        began = time.perf_counter()
        done = start
        self.reporter.step(done, total or 0, _progress_message(done, total, 0, 0.0))
        reader.start()
        writer.start()
        # A processor with ``submit``/``collect`` (the Ray one) runs up to ``window`` batches
        # at once; results are taken in order, so the chunks are the same either way.
        submit = getattr(self.processor, "submit", None)
        window = max(1, int(getattr(self.processor, "window", 1)))
        pending: deque[tuple[_Batch, torch.Tensor, Any]] = deque()

        def deliver(processed: _Processed) -> None:
            nonlocal done, total
            self.processed.put(processed)
            done += len(processed.frames)
            self.processed_frames += len(processed.frames)
            total = max(total or 0, done) if total else None
            self.reporter.step(
                done, total or 0, _progress_message(done, total, self.processed_frames, time.perf_counter() - began)
            )

        def deliver_oldest() -> None:
            batch, planes, handle = pending.popleft()
            deliver(self._processed(batch, planes, lambda: self.processor.collect(handle)))  # type: ignore[attr-defined]

        try:
            while True:
                item = self.decoded.get()
                if item is _END:
                    while pending:
                        deliver_oldest()
                    self.processed.put(_END)
                    break
                if submit is None:
                    deliver(self._compute(item))
                    continue
                rgb, planes = self._inputs(item)
                pending.append((item, planes, submit(rgb)))
                while len(pending) >= window:
                    deliver_oldest()
            while writer.is_alive():
                writer.join(timeout=0.05)
                self.reporter.check()
        except _StoppedError:
            pass
        except BaseException:
            self.state.stop.set()
            raise
        finally:
            if self.state.failure is None and not self.work.finished:
                self.state.stop.set()
            for thread in (reader, writer):
                thread.join()
        if self.state.failure is not None:
            raise self.state.failure


def _progress_message(done: int, total: int | None, processed: int, seconds: float) -> str:
    rate = processed / seconds if seconds > 0 and processed else 0.0
    count = f"{done}/{total}" if total else f"{done}"
    if not rate:
        return f"frames: {count}"
    eta = ""
    if total and total > done:
        remaining = int((total - done) / rate)
        eta = f", ETA {remaining // 3600:d}:{remaining // 60 % 60:02d}:{remaining % 60:02d}"
    return f"frames: {count} at {rate:.2f} frames/s{eta}"


# --------------------------------------------------------------------------- the job


def _check_paths(source: Path, output: Path, options: VideoOptions) -> None:
    if source.resolve() == output.resolve():
        raise InvalidParameterError(f"The output {output} is the input; choose another output path.")
    if output.exists() and not options.overwrite:
        raise InvalidParameterError(f"{output} exists; pass --overwrite to replace it.")
    if _is_folder_output(output) and output.exists() and not output.is_dir():
        raise InvalidParameterError(f"{output} is a file; a folder output needs a folder name.")


def _finish_folder(staging: Path, output: Path) -> None:
    """Move the finished frames folder onto ``output`` (replacing an old one) by renames, so
    the output folder appears complete or not at all."""
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        ready = staging
        if staging.stat().st_dev != output.parent.stat().st_dev:  # --work-dir on another disk
            ready = output.with_name(f".{output.name}.incoming-{os.getpid()}")
            shutil.copytree(staging, ready)
        old = None
        if output.exists():
            old = output.with_name(f".{output.name}.old-{os.getpid()}")
            os.replace(output, old)
        os.replace(ready, output)
    except OSError as exc:
        raise VideoError(f"Cannot move the finished frames into {output}: {exc.strerror or exc}.") from exc
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def process_video(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    processor: FrameProcessor | Callable[[torch.Tensor], torch.Tensor],
    options: VideoOptions | None = None,
    *,
    alpha_path: AlphaPath | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
) -> VideoResult:
    """Run ``processor`` on every frame of a video (or frame folder) and write the result.

    Args:
        source: a video file, or a folder of frames (naturally sorted; see ``options.fps``).
        output: a video file (``.mp4``, ``.mkv``, ``.mov``, ``.webm``), or a folder name
            (no extension) for PNG frames.
        processor: ``(B, 3, H, W) float32 [0, 1] -> (B, 3, H', W')``; see
            :mod:`restorekit.video.processor` (``make_frame_processor`` builds the usual one).
        options: see :class:`VideoOptions`.
        alpha_path: how alpha is scaled (default: the processor's ``process_alpha``, else
            bicubic :func:`~restorekit.video.processor.resize_alpha`).
        progress: ``(frames done, total frames or 0, message)`` after every batch.
        cancel: checked after every batch; cancelling keeps finished chunks for ``resume``.

    Returns:
        a :class:`VideoResult`.

    Raises:
        VideoError: unreadable input, no video stream, undecodable codec, encoder failure.
        InvalidParameterError: bad options, existing output without ``overwrite``.
        CancelledError: ``cancel()`` became true; rerun with ``resume=True`` to continue.
    """
    options = options or VideoOptions()
    if options.batch_size < 1 or options.chunk_frames < 1:
        raise InvalidParameterError("--batch and --chunk-frames must be at least 1.")
    options = _with(options, batch_size=min(options.batch_size, options.chunk_frames))
    began = time.perf_counter()
    source_path, output_path = Path(source), Path(output)
    reporter = Reporter.of(progress, cancel)
    _check_paths(source_path, output_path, options)
    alpha = alpha_path or getattr(processor, "process_alpha", None) or resize_alpha
    with open_source(source_path, fps=options.fps, max_pixels=options.max_pixels) as frames:
        info = frames.info
        target = _plan_target(output_path, info, options)
        work_dir = Path(options.work_dir) if options.work_dir else default_work_dir(output_path)
        settings = _settings_record(info, target, processor, options.chunk_frames)
        with WorkFolder.open(
            work_dir, settings, output=output_path, resume=options.resume, overwrite=options.overwrite
        ) as work:
            reused = work.reused_chunks
            begin_clip = getattr(processor, "begin_clip", None)
            if begin_clip is not None:  # stateful processors (face tracks) start afresh
                begin_clip(float(info.frame_rate) if info.frame_rate else None)
            job = _Job(frames, processor, alpha, target, work, options, reporter)
            if not work.finished:
                _run_keeping_work(job, work)
            total = work.manifest.total_frames or 0
            reporter.step(total, total, "assembling: writing the output")
            width, height = _output_size(work, job)
            if target.is_folder:
                _finish_folder(work.file("frames"), output_path)
            else:
                assert target.settings is not None
                assemble_video(output_path, work, target.settings.muxer, target.container_options, target.audio, total)
            chunks = len(work.chunks)
            work.remove()
    duration = None
    if info.frame_rate and not target.is_folder:
        duration = _duration_of(output_path)
    return VideoResult(
        output=output_path,
        is_folder=target.is_folder,
        frames=total,
        width=width,
        height=height,
        frame_rate=info.frame_rate,
        duration=duration,
        codec=target.settings.codec if target.settings else "png",
        pix_fmt=target.settings.pix_fmt if target.settings else None,
        audio=[track.note for track in target.audio],
        notes=target.notes,
        reused_chunks=reused,
        chunks=chunks,
        processed_frames=job.processed_frames,
        seconds=time.perf_counter() - began,
    )


def _run_keeping_work(job: _Job, work: WorkFolder) -> None:
    """Run the job; on a cancel or a failure, say what was kept and how to continue (or
    remove the work folder when nothing was finished)."""
    try:
        job.run()
    except BaseException as exc:
        if not work.chunks:
            work.remove()
            raise
        kept = (
            f"{work.next_frame} frames in {len(work.chunks)} finished chunks are kept in {work.path}; "
            "run again with resume (--resume) to continue"
        )
        if isinstance(exc, CancelledError):
            raise CancelledError(f"Cancelled: {kept}.") from exc
        if not isinstance(exc, RestoreKitError):
            logger.error("the video job failed; %s", kept)
        raise


def _with(options: VideoOptions, **changes: Any) -> VideoOptions:
    from dataclasses import replace

    return replace(options, **changes)


def _output_size(work: WorkFolder, job: _Job) -> tuple[int, int]:
    if job.encode_size is not None:
        return job.encode_size
    if job.output_size is not None:
        return job.output_size
    first = work.file(work.chunks[0].files[0])
    if first.suffix == ".png":
        from ..imageio import read_image_size

        return read_image_size(first)
    with av.open(str(first)) as container:
        context = container.streams.video[0].codec_context
        return context.width, context.height


def _duration_of(path: Path) -> float | None:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
        if container.duration:
            return container.duration / av.time_base
    return None


__all__ = ["DEFAULT_BATCH", "DEFAULT_CHUNK_FRAMES", "VideoOptions", "VideoResult", "process_video"]
