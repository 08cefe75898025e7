"""Batch plumbing for commands that turn image files into image files.

:func:`collect_jobs` expands INPUT files and folders (recursively, keeping the folder
structure under the output folder) into input/output pairs; :func:`run_image_batch` reads
each image, runs a job on it, writes the result atomically, goes on past bad files, shows
one progress bar (input megapixels, with an ETA) and prints a summary with every failure and
its reason. Any image command (upscale, face restore, degrade...) can reuse both.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CancelledError, InvalidParameterError, RestoreKitError
from ..imageio import (
    FORMAT_EXTENSIONS,
    IMAGE_EXTENSIONS,
    DecodedImage,
    normalize_format,
    read_image,
    read_image_size,
    write_image,
)
from ..progress import CancelCheck, ProgressCallback

ImageJob = Callable[[DecodedImage, ProgressCallback, CancelCheck], DecodedImage]
"""``job(image, progress, cancel) -> image``: the work done on one decoded image."""

WRITABLE_FORMATS = ("png", "jpeg", "webp", "bmp", "tiff")


@dataclass(frozen=True)
class BatchJob:
    """One input file and where its result goes."""

    source: Path
    target: Path


@dataclass
class BatchReport:
    """What happened to a batch."""

    done: list[BatchJob] = field(default_factory=list)
    skipped: list[BatchJob] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """INPUT..., -o, --format, --quality, --suffix and --overwrite."""
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders (searched recursively)")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output folder (created if needed), or a file name when INPUT is one file",
    )
    parser.add_argument(
        "--format",
        choices=["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff"],
        help="output format (default: the input's format; PNG for formats that cannot be written)",
    )
    parser.add_argument("--quality", type=int, default=95, metavar="Q", help="JPEG/WebP quality 1-100 (default 95; WebP 100 = lossless)")
    parser.add_argument("--suffix", default="", help="appended to output file names, e.g. _x4")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (inputs are never overwritten)")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _output_format(source: Path, requested: str | None) -> str:
    if requested:
        return normalize_format(requested)
    ext = source.suffix.lower()
    fmt = {".jpg": "jpeg", ".jpeg": "jpeg", ".jfif": "jpeg", ".tif": "tiff", ".tiff": "tiff"}.get(ext, ext.lstrip("."))
    return fmt if fmt in WRITABLE_FORMATS else "png"


def collect_jobs(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    suffix: str = "",
) -> tuple[list[BatchJob], list[tuple[Path, str]]]:
    """Input/output pairs for files and folders, plus inputs that cannot be used and why.

    A folder's images are found recursively; each one's output keeps its path relative to
    that folder. A single file whose OUT has an image extension is written to OUT itself.
    Two inputs that would write the same output, or an output that is an input, are errors.
    """
    out = Path(output)
    problems: list[tuple[Path, str]] = []
    sources: list[tuple[Path, Path]] = []  # (file, path relative to the output folder)
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _is_image(p))
            if not found:
                problems.append((path, "folder has no images (" + ", ".join(sorted(IMAGE_EXTENSIONS)) + ")"))
            sources.extend((p, p.relative_to(path)) for p in found)
        elif path.is_file():
            sources.append((path, Path(path.name)))
        else:
            problems.append((path, "does not exist"))
    single_file = len(inputs) == 1 and len(sources) == 1 and Path(inputs[0]).is_file()
    if single_file and out.suffix.lower() in IMAGE_EXTENSIONS and not out.is_dir():
        targets = [(sources[0][0], out)]
    else:
        targets = []
        for source, relative in sources:
            ext = FORMAT_EXTENSIONS[_output_format(source, fmt)]
            targets.append((source, out / relative.with_name(f"{relative.stem}{suffix}{ext}")))
    input_files = {s.resolve() for s, _ in sources}
    jobs: list[BatchJob] = []
    claimed: dict[Path, Path] = {}
    for source, target in targets:
        resolved = target.resolve()
        if resolved in input_files:
            problems.append((source, f"its output {target} is an input file; choose another -o or a --suffix"))
        elif resolved in claimed:
            problems.append((source, f"its output {target} is also the output of {claimed[resolved]}; use --suffix or separate runs"))
        else:
            claimed[resolved] = source
            jobs.append(BatchJob(source, target))
    return jobs, problems


class _PixelBar:
    """One tqdm bar over all input megapixels; ``advance(fraction)`` within the current file."""

    def __init__(self, jobs: Sequence[BatchJob], *, disable: bool) -> None:
        self.sizes: dict[Path, float] = {}
        for job in jobs:
            try:
                width, height = read_image_size(job.source)
                self.sizes[job.source] = width * height / 1e6
            except (RestoreKitError, OSError):
                self.sizes[job.source] = 0.0
        self.bar: Any = None
        if not disable:
            from tqdm.auto import tqdm

            total = sum(self.sizes.values()) or None
            self.bar = tqdm(total=total, unit="Mpx", dynamic_ncols=True, file=sys.stderr)
        self.base = 0.0
        self.current = 0.0

    def start(self, job: BatchJob, index: int, count: int) -> None:
        self.current = self.sizes.get(job.source, 0.0)
        if self.bar is not None:
            self.bar.set_description(f"{index}/{count} {job.source.name[:32]}")

    def progress(self, done: int, total: int, message: str) -> None:
        if self.bar is not None and total > 0:
            self.bar.n = round(self.base + self.current * min(done / total, 1.0), 3)
            self.bar.set_postfix_str(message.split(": ", 1)[-1], refresh=False)
            self.bar.refresh()

    def finish(self) -> None:
        self.base += self.current
        if self.bar is not None:
            self.bar.n = round(self.base, 3)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_image_batch(
    args: argparse.Namespace,
    job: ImageJob,
    *,
    cancel: CancelCheck,
    describe: str = "processed",
) -> BatchReport:
    """Run ``job`` over ``args.inputs`` into ``args.output`` (see :func:`add_output_arguments`)."""
    if not 1 <= int(args.quality) <= 100:
        raise InvalidParameterError(f"--quality must be 1..100, got {args.quality}.")
    started = time.perf_counter()
    jobs, problems = collect_jobs(args.inputs, args.output, fmt=args.format, suffix=args.suffix)
    report = BatchReport(failed=list(problems))
    pending = []
    for item in jobs:
        if item.target.exists() and not args.overwrite:
            report.skipped.append(item)
        else:
            pending.append(item)
    quiet = bool(getattr(args, "quiet", False))
    bar = _PixelBar(pending, disable=quiet or not sys.stderr.isatty())
    try:
        for index, item in enumerate(pending, start=1):
            bar.start(item, index, len(pending))
            try:
                image = read_image(item.source)
                result = job(image, bar.progress, cancel)
                write_image(
                    result,
                    item.target,
                    fmt=args.format,  # else from the extension collect_jobs chose
                    quality=args.quality,
                    overwrite=True,
                )
            except CancelledError:
                raise
            except RestoreKitError as exc:
                report.failed.append((item.source, str(exc)))
            except (OSError, ValueError) as exc:  # decoder or disk errors on this one file
                report.failed.append((item.source, f"{type(exc).__name__}: {exc}"))
            else:
                report.done.append(item)
            bar.finish()
    finally:
        bar.close()
        report.seconds = time.perf_counter() - started
    print_summary(report, describe=describe, quiet=quiet)
    return report


def print_summary(report: BatchReport, *, describe: str, quiet: bool = False) -> None:
    """Outputs written, skipped and failed; each failure with its reason on stderr."""
    if not quiet:
        for item in report.done:
            print(f"{item.source} -> {item.target}")
    parts = [f"{len(report.done)} {describe}"]
    if report.skipped:
        parts.append(f"{len(report.skipped)} skipped (output exists; --overwrite to redo)")
    if report.failed:
        parts.append(f"{len(report.failed)} failed")
    print(f"{', '.join(parts)} in {report.seconds:.1f} s")
    for source, reason in report.failed:
        print(f"restorekit: failed: {source}: {reason}", file=sys.stderr)
