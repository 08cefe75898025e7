"""File jobs and the backends that run them.

The CLI's file runner (:mod:`restorekit.cli.batch`) turns INPUT files and folders into a
list of :class:`BatchJob` (one input file and every output it makes), drops the jobs whose
outputs already exist, and hands the rest to a :class:`Backend`: :class:`LocalBackend` runs
them here, one after another; :class:`restorekit.cluster.RayBackend` spreads them over a Ray
cluster. Both run the same :class:`FileWork` (what to do with one file: upscale, restore
faces, degrade) and report each job back through :class:`BatchEvents`, so the job list, the
skip rule and the failure report are the runner's, whichever backend ran the work.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import CancelledError, RestoreKitError
from .outputs import DiskWriter, OutputWriter
from .progress import CancelCheck, ProgressCallback


@dataclass(frozen=True)
class BatchJob:
    """One input file and where its results go.

    Attributes:
        source: the input file.
        target: the main output file.
        index: the job's place in the full job list of the run (skipped jobs included), so
            per-image random streams do not depend on which jobs were left to do.
        extra: further outputs the job writes (sidecars, HR copies...); a job is done when
            ``target`` and every ``extra`` file exist.
        data: the input file's bytes when they travel with the job (cluster workers without
            a shared filesystem); None: read ``source``.
    """

    source: Path
    target: Path
    index: int = 0
    extra: tuple[Path, ...] = ()
    data: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def outputs(self) -> tuple[Path, ...]:
        return (self.target, *self.extra)


@dataclass
class JobOutcome:
    """What one finished job reports: notices for the user, a short note for its line in
    the summary (``2 faces``), and a record the command keeps (degrade's parameters)."""

    notices: list[str] = field(default_factory=list)
    note: str = ""
    record: dict[str, Any] | None = None
    seconds: float = 0.0
    """Wall time of the job where it ran (reading, work, encoding, writing)."""


class FileWork(Protocol):
    """What a command does to one file. Instances are pickled to cluster workers, so they
    hold settings only; :meth:`prepare` loads networks in the process that runs the jobs."""

    notices: list[str]
    """Notices of the whole run (licences...), shown once rather than per file."""

    def prepare(self, progress: ProgressCallback | None = None, cancel: CancelCheck | None = None) -> None:
        """Load what the jobs need (models); called once per process before any job."""

    def process(self, job: BatchJob, writer: OutputWriter, progress: ProgressCallback, cancel: CancelCheck) -> JobOutcome:
        """Read ``job.source``, do the work, write every output through ``writer``."""

    def remote(self) -> tuple[dict[str, Path], FileWork]:
        """Model files to ship to workers (path inside a model home -> file here) and the
        work the workers run (its model references pointing into that home)."""


class BatchEvents(Protocol):
    """How a backend reports jobs to the runner (the runner keeps the report and the bar)."""

    def started(self, job: BatchJob) -> None: ...

    def progress(self, done: int, total: int, message: str) -> None: ...

    def finished(self, job: BatchJob, outcome: JobOutcome) -> None: ...

    def failed(self, job: BatchJob, reason: str) -> None: ...


class Backend(Protocol):
    """Runs prepared :class:`FileWork` over jobs, reporting each through ``events``."""

    name: str

    def run(self, work: FileWork, jobs: Sequence[BatchJob], events: BatchEvents, cancel: CancelCheck) -> None: ...


def read_source(job: BatchJob) -> Any:
    """The job's input as a :class:`~restorekit.imageio.DecodedImage` (from ``job.data``
    when the bytes travel with the job)."""
    from .imageio import decode_image, read_image

    if job.data is None:
        return read_image(job.source)
    image = decode_image(job.data, name=str(job.source))
    image.source = str(job.source)
    return image


def failure_reason(exc: BaseException) -> str | None:
    """The one-line reason a job failed, or None when ``exc`` is not a per-file failure
    (a cancel, or a bug, which must propagate)."""
    if isinstance(exc, CancelledError):
        return None
    if isinstance(exc, RestoreKitError):
        return str(exc)
    if isinstance(exc, OSError | ValueError):  # decoder or disk errors on this one file
        return f"{type(exc).__name__}: {exc}"
    return None


def run_job(
    work: FileWork, job: BatchJob, writer: OutputWriter, progress: ProgressCallback, cancel: CancelCheck
) -> tuple[JobOutcome | None, str | None]:
    """``(outcome, None)`` or ``(None, reason)`` for one job; cancels and bugs propagate."""
    started = time.perf_counter()
    try:
        outcome = work.process(job, writer, progress, cancel)
        outcome.seconds = time.perf_counter() - started
        return outcome, None
    except Exception as exc:
        reason = failure_reason(exc)
        if reason is None:
            raise
        return None, reason


class LocalBackend:
    """Runs the jobs in this process, one after another, writing outputs directly."""

    name = "local"

    def run(self, work: FileWork, jobs: Sequence[BatchJob], events: BatchEvents, cancel: CancelCheck) -> None:
        writer = DiskWriter()
        for job in jobs:
            events.started(job)
            outcome, reason = run_job(work, job, writer, events.progress, cancel)
            if outcome is None:
                events.failed(job, reason or "failed")
            else:
                events.finished(job, outcome)
