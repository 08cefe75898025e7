"""The CLI's one file runner: every command that turns image files into files uses it.

:func:`collect_jobs` expands INPUT files and folders (folders recursively, keeping their
structure under the output folder) into :class:`~restorekit.batch.BatchJob` s; the skip rule
(:func:`split_done`) leaves out jobs whose outputs all exist unless ``--overwrite``;
:func:`run_file_batch` hands the rest to a backend (this process, or a Ray cluster with
``--cluster``), shows one progress bar (input megapixels, with an ETA), goes on past bad
files and prints a summary with every failure and its reason. ``upscale``, ``faces`` and
``degrade`` all run through it; what they do to one file is a
:class:`~restorekit.batch.FileWork`.
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

from ..batch import Backend, BatchJob, FileWork, JobOutcome, LocalBackend
from ..errors import InvalidParameterError, RestoreKitError
from ..imageio import (
    FORMAT_EXTENSIONS,
    IMAGE_EXTENSIONS,
    normalize_format,
    read_image_size,
)
from ..progress import CancelCheck

__all__ = [
    "BatchJob",
    "BatchReport",
    "add_cluster_arguments",
    "add_output_arguments",
    "backend_from_args",
    "collect_jobs",
    "print_summary",
    "run_file_batch",
    "split_done",
]

Placement = Callable[[Path], tuple[Path, ...]]
"""``place(relative) -> (target, *extra)``: every output of the input whose output name,
relative to the output folder, is ``relative`` (e.g. ``sub/photo_x4.png``)."""

WRITABLE_FORMATS = ("png", "jpeg", "webp", "bmp", "tiff")


@dataclass
class BatchReport:
    """What happened to a batch."""

    done: list[BatchJob] = field(default_factory=list)
    skipped: list[BatchJob] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    outcomes: dict[BatchJob, JobOutcome] = field(default_factory=dict)
    seconds: float = 0.0
    backend: str = "local"


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
    place: Placement | None = None,
    file_output: bool = True,
    number_collisions: bool = False,
) -> tuple[list[BatchJob], list[tuple[Path, str]]]:
    """Jobs for files and folders, plus inputs that cannot be used and why.

    A folder's images are found recursively; each one's output keeps its path relative to
    that folder. A single file whose OUT has an image extension is written to OUT itself
    (unless ``file_output`` is False: OUT is always a folder). ``place`` maps an output name
    to all of a job's outputs (default: the name inside OUT). Two inputs that would write the
    same output are an error, or with ``number_collisions`` the later one is named
    ``<name>_2``, ``<name>_3``...; an output that is an input is always an error.
    """
    out = Path(output)
    place = place or (lambda relative: (out / relative,))
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
    single_file = file_output and len(inputs) == 1 and len(sources) == 1 and Path(inputs[0]).is_file()
    planned: list[tuple[Path, Path | None, Path]] = []  # (source, fixed target or None, name)
    if single_file and out.suffix.lower() in IMAGE_EXTENSIONS and not out.is_dir():
        planned.append((sources[0][0], out, Path(out.name)))
    else:
        for source, relative in sources:
            ext = FORMAT_EXTENSIONS[_output_format(source, fmt)]
            planned.append((source, None, relative.with_name(f"{relative.stem}{suffix}{ext}")))
    input_files = {s.resolve() for s, _ in sources}
    jobs: list[BatchJob] = []
    claimed: dict[Path, Path] = {}
    for source, fixed, name in planned:
        outputs = (fixed,) if fixed is not None else place(name)
        counter = 1
        while number_collisions and fixed is None and any(p.resolve() in claimed for p in outputs):
            counter += 1
            outputs = place(name.with_name(f"{name.stem}_{counter}{name.suffix}"))
        resolved = [p.resolve() for p in outputs]
        clash = next((p for p, r in zip(outputs, resolved, strict=True) if r in input_files), None)
        taken = next((r for r in resolved if r in claimed), None)
        if clash is not None:
            problems.append(
                (source, f"Refusing to overwrite the input: its output {clash} is an input file; choose another -o or a --suffix")
            )
        elif taken is not None:
            problems.append((source, f"its output {taken} is also the output of {claimed[taken]}; use --suffix or separate runs"))
        else:
            claimed.update(dict.fromkeys(resolved, source))
            jobs.append(BatchJob(source, outputs[0], len(jobs), tuple(outputs[1:])))
    return jobs, problems


def split_done(jobs: Sequence[BatchJob], *, overwrite: bool) -> tuple[list[BatchJob], list[BatchJob]]:
    """The skip rule: ``(to do, skipped)``; a job is skipped when every one of its outputs
    exists, unless ``overwrite``. Interrupted runs write nothing partial (outputs are
    atomic), so running the same command again finishes exactly the missing work."""
    if overwrite:
        return list(jobs), []
    todo: list[BatchJob] = []
    skipped: list[BatchJob] = []
    for job in jobs:
        (skipped if all(p.exists() for p in job.outputs) else todo).append(job)
    return todo, skipped


class _PixelBar:
    """One tqdm bar over all input megapixels (throughput and ETA in Mpx), with the files done
    and the file at work; ``progress`` moves it within the current file (local runs)."""

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
        self.count = len(jobs)
        self.finished = 0

    def start(self, job: BatchJob, index: int, count: int) -> None:
        self.current = self.sizes.get(job.source, 0.0)
        if self.bar is not None:
            self.bar.set_description(f"{index}/{count} {job.source.name[:32]}")

    def progress(self, done: int, total: int, message: str) -> None:
        if self.bar is not None and total > 0:
            self.bar.n = round(self.base + self.current * min(done / total, 1.0), 3)
            self.bar.set_postfix_str(message.split(": ", 1)[-1], refresh=False)
            self.bar.refresh()

    def finish(self, job: BatchJob) -> None:
        self.base += self.sizes.get(job.source, 0.0)
        self.finished += 1
        if self.bar is not None:
            self.bar.n = round(self.base, 3)
            self.bar.set_postfix_str(f"{self.finished}/{self.count} files", refresh=False)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Tracker:
    """The runner's side of :class:`~restorekit.batch.BatchEvents`: report, bar, notices."""

    def __init__(self, report: BatchReport, bar: _PixelBar, count: int, work: FileWork, quiet: bool) -> None:
        self.report = report
        self.bar = bar
        self.count = count
        self.started_count = 0
        self.shared_notices = set(getattr(work, "notices", []))
        self.quiet = quiet

    def started(self, job: BatchJob) -> None:
        self.started_count += 1
        self.bar.start(job, self.started_count, self.count)

    def progress(self, done: int, total: int, message: str) -> None:
        self.bar.progress(done, total, message)

    def finished(self, job: BatchJob, outcome: JobOutcome) -> None:
        self.report.done.append(job)
        self.report.outcomes[job] = outcome
        for notice in outcome.notices:
            if notice not in self.shared_notices:
                print(f"restorekit: note: {job.source.name}: {notice}", file=sys.stderr)
        self.bar.finish(job)

    def failed(self, job: BatchJob, reason: str) -> None:
        self.report.failed.append((job.source, reason))
        self.bar.finish(job)


def run_file_batch(
    args: argparse.Namespace,
    work: FileWork,
    *,
    cancel: CancelCheck,
    describe: str = "processed",
    jobs: tuple[list[BatchJob], list[tuple[Path, str]]] | None = None,
    summary: bool = True,
) -> BatchReport:
    """Run prepared ``work`` over ``args.inputs`` into ``args.output`` (see
    :func:`add_output_arguments`) on the backend ``args`` asks for (:func:`backend_from_args`).

    ``jobs`` replaces :func:`collect_jobs`' list (commands with their own output layout).
    Per-file failures are collected in the report; a cancel propagates."""
    quality = getattr(args, "quality", 95)
    if not 1 <= int(quality) <= 100:
        raise InvalidParameterError(f"--quality must be 1..100, got {quality}.")
    started = time.perf_counter()
    if jobs is None:
        jobs = collect_jobs(args.inputs, args.output, fmt=getattr(args, "format", None), suffix=getattr(args, "suffix", ""))
    all_jobs, problems = jobs
    pending, skipped = split_done(all_jobs, overwrite=bool(getattr(args, "overwrite", False)))
    report = BatchReport(skipped=skipped, failed=list(problems))
    quiet = bool(getattr(args, "quiet", False))
    backend = backend_from_args(args)
    report.backend = backend.name
    bar = _PixelBar(pending, disable=quiet or (not sys.stderr.isatty() and not getattr(args, "progress", False)))
    try:
        if pending:
            backend.run(work, pending, _Tracker(report, bar, len(pending), work, quiet), cancel)
    finally:
        bar.close()
        report.seconds = time.perf_counter() - started
    order = {job: job.index for job in all_jobs}
    report.done.sort(key=lambda job: order.get(job, 0))
    if summary:
        print_summary(report, describe=describe, quiet=quiet)
    return report


# --------------------------------------------------------------------------- cluster options


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """``--cluster`` and its options: run the jobs on a Ray cluster (``restorekit[cluster]``)."""
    group = parser.add_argument_group("many machines (Ray; pip install 'restorekit[cluster]')")
    group.add_argument(
        "--cluster",
        metavar="ray[://HOST:PORT]|HOST:PORT|auto",
        help="run on a Ray cluster: 'auto' (the cluster this machine belongs to, or RAY_ADDRESS), "
        "HOST:PORT (the head's GCS address), ray://HOST:PORT (Ray Client), or 'ray' (RAY_ADDRESS "
        "or a Ray instance on this machine only)",
    )
    group.add_argument(
        "--cluster-no-shared-fs",
        action="store_true",
        help="the workers cannot see INPUT and OUT: send inputs to them and results back to this machine",
    )
    group.add_argument(
        "--cluster-workers", type=int, default=None, metavar="N", help="worker processes, each with one loaded model (default: one per node)"
    )
    group.add_argument(
        "--cluster-cpus", type=int, default=None, metavar="C", help="CPUs per worker (default: a whole node's CPUs)"
    )


def backend_from_args(args: argparse.Namespace) -> Backend:
    """The backend ``--cluster`` asks for (this process when absent)."""
    address = getattr(args, "cluster", None)
    if not address:
        return LocalBackend()
    from ..cluster import ClusterOptions, RayBackend

    return RayBackend(
        ClusterOptions(
            address=address,
            shared_fs=not getattr(args, "cluster_no_shared_fs", False),
            workers=getattr(args, "cluster_workers", None),
            cpus_per_worker=getattr(args, "cluster_cpus", None),
        )
    )



def print_summary(report: BatchReport, *, describe: str, quiet: bool = False) -> None:
    """Outputs written, skipped and failed; each failure with its reason on stderr."""
    if not quiet:
        for item in report.done:
            outcome = report.outcomes.get(item)
            note = f" ({outcome.note})" if outcome is not None and outcome.note else ""
            print(f"{item.source} -> {item.target}{note}")
    parts = [f"{len(report.done)} {describe}"]
    if report.skipped:
        parts.append(f"{len(report.skipped)} skipped (output exists; --overwrite to redo)")
    if report.failed:
        parts.append(f"{len(report.failed)} failed")
    where = "" if report.backend == "local" else f" on {report.backend}"
    print(f"{', '.join(parts)} in {report.seconds:.1f} s{where}")
    for source, reason in report.failed:
        print(f"restorekit: failed: {source}: {reason}", file=sys.stderr)
    if report.failed:
        count = len(report.failed)
        print(f"restorekit: {count} input{'s' if count != 1 else ''} failed, {len(report.done)} written", file=sys.stderr)
