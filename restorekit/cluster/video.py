"""Videos on Ray: the video pipeline decodes, chunks, encodes and assembles on the driver (with
the audio, resumable with ``--resume`` as always) while the frame batches run on Ray workers,
several at once, each worker holding one loaded frame processor.

:class:`RayFrameProcessor` is a frame processor with ``submit``/``collect``; the pipeline keeps
``window`` batches in flight and takes the results in order, so the chunks are identical to a
single-machine run (bitwise for fp32 on the same CPU type).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import numpy as np
import torch

from ..errors import ClusterError
from .backend import ClusterOptions, _import_ray, connect

logger = logging.getLogger(__name__)


class FrameWorker:
    """A Ray actor holding one frame processor built from shipped settings."""

    def __init__(self, settings: Any, files: list[tuple[str, Any]], threads: int) -> None:
        from .. import __version__
        from ..video import make_frame_processor
        from .models import worker_home

        self.version = __version__
        self.error: str | None = None
        self.processor: Any = None
        with worker_home(files, threads):
            try:
                self.processor = make_frame_processor(settings=settings)
            except Exception as exc:  # reported once by the driver
                self.error = f"{type(exc).__name__}: {exc}"

    def ready(self) -> dict[str, Any]:
        return {"version": self.version, "pid": os.getpid(), "error": self.error}

    def process(self, frames: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) float32 [0, 1] -> (B, H', W', 3) float32, as the pipeline's channels_last views."""
        rgb = torch.from_numpy(frames).permute(0, 3, 1, 2)
        with torch.inference_mode():
            out = self.processor(rgb)
        return out.permute(0, 2, 3, 1).contiguous().numpy()


class RayFrameProcessor:
    """A frame processor whose batches run on Ray workers; use it as a context manager.

    ``local`` is the driver's own :class:`~restorekit.video.processor.RestorerFrameProcessor`
    for the same settings: it verifies the models once, and lends its fingerprint (so
    ``--resume`` works across local and cluster runs) and its alpha path.
    """

    def __init__(self, local: Any, options: ClusterOptions) -> None:
        self.local = local
        self.options = options
        self.fingerprint = local.fingerprint
        self.window = 1
        self._ray: Any = None
        self._owned = False
        self._actors: list[Any] = []
        self._args: list[Any] = []
        self._next = 0

    def describe(self) -> str:
        return f"{self.local.describe()} on Ray ({self.options.address})"

    def process_alpha(self, alpha: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.local.process_alpha(alpha, size)

    def __enter__(self) -> RayFrameProcessor:
        from .backend import RayBackend
        from .models import ship_settings

        ray = self._ray = _import_ray()
        self._owned = connect(self.options.address, timeout=self.options.connect_timeout)
        try:
            workers, cpus = RayBackend(self.options)._sizes(ray)
            files, settings = ship_settings(self.local.restorer.settings)
            refs = [(relative, ray.put(data if isinstance(data, bytes) else data.read_bytes())) for relative, data in files.items()]
            self._class = ray.remote(FrameWorker).options(num_cpus=cpus, max_restarts=2, max_task_retries=2)
            self._args = [settings, refs, cpus]
            self._actors = [self._class.remote(*self._args) for _ in range(workers)]
            self._check()
            self.window = len(self._actors) * max(1, self.options.in_flight_per_worker)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _check(self) -> None:
        from .. import __version__
        from .backend import INSTALL_HINT, _is_import_failure

        try:
            infos = self._ray.get([actor.ready.remote() for actor in self._actors])
        except Exception as exc:
            if _is_import_failure(str(exc)):
                raise ClusterError(
                    f"The Ray workers cannot import restorekit; install it on every node ({INSTALL_HINT}, version {__version__})."
                ) from exc
            raise ClusterError(f"The Ray workers could not start: {str(exc).strip().splitlines()[-1]}") from exc
        for info in infos:
            if info["error"]:
                raise ClusterError(f"The Ray workers cannot run this job: {info['error']}")

    def __exit__(self, *exc: Any) -> None:
        for actor in self._actors:
            with contextlib.suppress(Exception):
                self._ray.kill(actor)
        self._actors = []
        if self._owned and self._ray is not None:
            self._ray.shutdown()
            self._owned = False

    def submit(self, pixels: torch.Tensor) -> tuple[Any, Any, np.ndarray, int]:
        """Send a (B, 3, H, W) batch to the next worker; returns a handle for :meth:`collect`."""
        frames = pixels.permute(0, 2, 3, 1).contiguous().numpy()
        return self._send(frames, 1)

    def _send(self, frames: np.ndarray, attempt: int) -> tuple[Any, Any, np.ndarray, int]:
        if not self._actors:
            raise ClusterError("No Ray worker is left to process the frames.")
        actor = self._actors[self._next % len(self._actors)]
        self._next += 1
        return actor.process.remote(frames), actor, frames, attempt

    def collect(self, handle: tuple[Any, Any, np.ndarray, int]) -> torch.Tensor:
        """The (B, 3, H', W') result of a submitted batch (a channels_last view)."""
        from ray.exceptions import RayActorError

        ref, actor, frames, attempt = handle
        while True:
            try:
                out = self._ray.get(ref)
                break
            except RayActorError:  # restarts used up: run the batch on another worker
                if attempt >= self.options.attempts:
                    raise ClusterError(f"A batch of frames failed {attempt} times because its Ray workers died.") from None
                logger.warning("a Ray worker died; its frames run again")
                self._actors = [a for a in self._actors if a is not actor]
                ref, actor, frames, attempt = self._send(frames, attempt + 1)
        return torch.from_numpy(out).permute(0, 3, 1, 2)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.collect(self.submit(pixels))
