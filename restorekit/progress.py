"""Progress reporting and cancellation for long-running engine work.

Engine functions that take time accept two optional callables:

- ``progress(done, total, message)``: called at natural steps (tiles, faces, frames,
  iterations, files, bytes);
- ``cancel()``: returns True when the user asked to stop.

Front ends map these onto ComfyUI's ProgressBar and interrupt, Gradio's Progress, and tqdm.
Inside the engine, wrap them once in a :class:`Reporter`, which also raises
:class:`~restorekit.errors.CancelledError` at each step when cancellation was asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from .errors import CancelledError

ProgressCallback = Callable[[int, int, str], None]
"""``progress(done, total, message)``: ``done`` of ``total`` steps are finished."""

CancelCheck = Callable[[], bool]
"""``cancel()``: True when the running job should stop as soon as possible."""

logger = logging.getLogger(__name__)

NOTICE_RECORD = "restorekit_notice"
"""Attribute of a log record that repeats a notice the result also carries (logged with
``extra={NOTICE_RECORD: True}``, e.g. a ZSSR guard's fallback, also in
``ZSSRResult.notices``). Front ends that print the result's notices themselves drop these
records (:func:`restorekit.cli.common.print_notices_once`), so the user reads each once;
library users and the ComfyUI console still get the log line."""


@dataclass(frozen=True)
class Reporter:
    """A progress callback and a cancel check, either of which may be absent.

    ``reporter.step(done, total, message)`` reports progress and then raises
    :class:`CancelledError` if cancellation was requested. ``reporter.check()`` only checks.
    ``reporter.stage(index, count)`` maps a sub-job's own ``(done, total)`` onto slot
    ``index`` of ``count`` equal slots, so nested jobs report one monotonic progress.
    """

    progress: ProgressCallback | None = None
    cancel: CancelCheck | None = None

    @classmethod
    def of(
        cls,
        progress: ProgressCallback | Reporter | None = None,
        cancel: CancelCheck | None = None,
    ) -> Reporter:
        """Build a reporter from optional callables (or pass an existing one through)."""
        if isinstance(progress, Reporter):
            if cancel is None:
                return progress
            return cls(progress.progress, cancel)
        return cls(progress, cancel)

    def check(self) -> None:
        """Raise :class:`CancelledError` if cancellation was requested."""
        if self.cancel is not None and self.cancel():
            raise CancelledError()

    def step(self, done: int, total: int, message: str = "") -> None:
        """Report ``done`` of ``total`` steps, then check for cancellation."""
        if self.progress is not None:
            try:
                self.progress(int(done), int(total), message)
            except CancelledError:
                raise
            except Exception:  # a broken progress display must never break the job
                logger.exception("progress callback failed; continuing without it")
        self.check()

    def stage(self, index: int, count: int, resolution: int = 1000) -> Reporter:
        """A reporter for the ``index``-th of ``count`` equal sub-jobs of this job."""
        if self.progress is None:
            return self
        outer = self.progress
        span = resolution

        def mapped(done: int, total: int, message: str) -> None:
            fraction = 0.0 if total <= 0 else min(max(done / total, 0.0), 1.0)
            outer(int((index + fraction) * span), count * span, message)

        return Reporter(mapped, self.cancel)


NULL_REPORTER = Reporter()
"""A reporter that reports nothing and never cancels."""
