"""The Ray backend: connection, worker actors, task groups, retries, results."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import socket
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..batch import BatchEvents, BatchJob, FileWork
from ..errors import CancelledError, ClusterError, RestoreKitError
from ..outputs import write_bytes
from ..progress import CancelCheck

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'restorekit[cluster]'"


@dataclass(frozen=True)
class ClusterOptions:
    """How to run on Ray.

    Attributes:
        address: ``auto`` (the cluster this machine belongs to, or ``RAY_ADDRESS``),
            ``HOST:PORT`` (the head's GCS address), ``ray://HOST:PORT`` (Ray Client), or
            ``ray`` (``RAY_ADDRESS``, else a Ray instance on this machine only).
        shared_fs: workers read inputs and write outputs at the same paths as the driver;
            False sends inputs to the workers and the results back to the driver.
        workers: worker actors (default: one per alive node).
        cpus_per_worker: CPUs each worker reserves and uses for torch (default: the smallest
            node's CPU count, so one worker fills a node).
        task_megapixels: input megapixels grouped into one task (small images travel together).
        max_task_images: at most this many images in one task.
        in_flight_per_worker: tasks queued per worker (bounds driver and object-store memory).
        attempts: how often a task whose worker died is tried in all.
        connect_timeout: seconds to wait for the address to answer.
    """

    address: str = "auto"
    shared_fs: bool = True
    workers: int | None = None
    cpus_per_worker: int | None = None
    task_megapixels: float = 4.0
    max_task_images: int = 16
    in_flight_per_worker: int = 2
    attempts: int = 3
    connect_timeout: float = 5.0


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ClusterError(f"--cluster needs Ray, which is not installed: {INSTALL_HINT}.") from exc
    return ray


def parse_address(address: str) -> tuple[str | None, tuple[str, int] | None]:
    """``(address for ray.init, (host, port) to probe first or None)``."""
    text = address.strip()
    if text.lower() == "auto":
        return "auto", None
    if text.lower() == "ray":
        return None, None
    rest = text[len("ray://") :] if text.lower().startswith("ray://") else text
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(
            f"--cluster {address!r} is not an address: use auto, ray, HOST:PORT (the head's GCS port, "
            "usually 6379) or ray://HOST:PORT (Ray Client, usually 10001)."
        )
    return text, (host.strip("[]"), int(port))


def _probe(host: str, port: int, timeout: float) -> None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise ClusterError(
            f"Cannot reach the Ray cluster at {host}:{port} ({exc.strerror or exc}). Start it there with "
            "'ray start --head', or check the address and the firewall."
        ) from exc


def connect(address: str, *, timeout: float = 5.0) -> bool:
    """Connect this process to Ray; returns True when it did (and so must disconnect).

    An address that does not answer fails within ``timeout`` seconds."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    init_address, probe = parse_address(address)
    if probe is not None:
        _probe(*probe, timeout)
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if init_address is None:
        kwargs["include_dashboard"] = False
    try:
        ray.init(address=init_address, **kwargs)
    except ImportError as exc:  # ray:// needs Ray Client's extra packages
        raise ClusterError(f"Connecting to {address} needs Ray Client: pip install 'ray[client]' ({exc}).") from exc
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = "on this machine or in RAY_ADDRESS" if init_address == "auto" else f"at {address}"
        raise ClusterError(f"Cannot connect to a Ray cluster {where}: {str(exc).splitlines()[0]}") from exc
    return True


# --------------------------------------------------------------------------- worker side


class FileWorker:
    """A Ray actor holding one prepared :class:`~restorekit.batch.FileWork`."""

    def __init__(self, work: FileWork, files: list[tuple[str, Any]], threads: int) -> None:
        from .. import __version__
        from .models import worker_home

        self.version = __version__
        self.error: str | None = None
        self.work = work
        with worker_home(files, threads):
            try:
                work.prepare()
            except Exception as exc:  # reported once by the driver, not per task
                self.error = f"{type(exc).__name__}: {exc}"

    def ready(self) -> dict[str, Any]:
        import ray

        return {"version": self.version, "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(), "error": self.error}

    def run(self, jobs: list[BatchJob], collect: bool) -> list[tuple[int, Any, str | None, dict[str, bytes]]]:
        """``(index, outcome, failure reason, collected files)`` for each job."""
        from ..batch import run_job
        from ..outputs import CollectingWriter, DiskWriter

        results = []
        for job in jobs:
            writer = CollectingWriter() if collect else DiskWriter()
            outcome, reason = run_job(self.work, job, writer, _no_progress, _never)
            files = writer.files if isinstance(writer, CollectingWriter) and outcome is not None else {}
            results.append((job.index, outcome, reason, files))
        return results


def _no_progress(done: int, total: int, message: str) -> None:
    return None


def _never() -> bool:
    return False


# --------------------------------------------------------------------------- driver side


def _megapixels(job: BatchJob) -> float:
    from ..imageio import read_image_size

    try:
        width, height = read_image_size(job.source)
    except Exception:
        return 0.0
    return width * height / 1e6


def make_groups(jobs: Sequence[BatchJob], workers: int, options: ClusterOptions) -> list[list[BatchJob]]:
    """Consecutive jobs grouped into tasks of about ``task_megapixels`` input (at most
    ``max_task_images``, and small enough that every worker gets several tasks)."""
    per_task = max(1, min(options.max_task_images, math.ceil(len(jobs) / max(1, workers * 4))))
    groups: list[list[BatchJob]] = []
    current: list[BatchJob] = []
    size = 0.0
    for job in jobs:
        current.append(job)
        size += _megapixels(job)
        if len(current) >= per_task or size >= options.task_megapixels:
            groups.append(current)
            current, size = [], 0.0
    if current:
        groups.append(current)
    return groups


def _is_import_failure(text: str) -> bool:
    return "No module named 'restorekit" in text or ("ModuleNotFoundError" in text and "restorekit" in text)


class RayBackend:
    """A :class:`restorekit.batch.Backend` that runs the jobs on a Ray cluster."""

    def __init__(self, options: ClusterOptions | None = None) -> None:
        self.options = options or ClusterOptions()
        self.name = f"Ray ({self.options.address})"

    # ------------------------------------------------------------------ setup

    def _sizes(self, ray: Any) -> tuple[int, int]:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        cpus = [int(n.get("Resources", {}).get("CPU", 0)) for n in nodes]
        cpus = [c for c in cpus if c > 0] or [1]
        per_worker = self.options.cpus_per_worker or min(cpus)
        workers = self.options.workers or max(1, sum(c // per_worker for c in cpus) if self.options.cpus_per_worker else len(cpus))
        return workers, per_worker

    def _start_workers(self, ray: Any, work: FileWork, count: int, cpus: int) -> tuple[list[Any], Any, list[tuple[str, Any]]]:
        files, remote_work = work.remote()
        refs = [(relative, ray.put(data if isinstance(data, bytes) else Path(data).read_bytes())) for relative, data in files.items()]
        actor_class = ray.remote(FileWorker).options(num_cpus=cpus, max_restarts=2, max_task_retries=2)
        actors = [actor_class.remote(remote_work, refs, cpus) for _ in range(count)]
        self._check_workers(ray, actors)
        return actors, actor_class, [remote_work, refs, cpus]

    def _check_workers(self, ray: Any, actors: list[Any]) -> None:
        from .. import __version__

        try:
            infos = ray.get([actor.ready.remote() for actor in actors])
        except Exception as exc:
            text = str(exc)
            if _is_import_failure(text):
                raise ClusterError(
                    f"The Ray workers cannot import restorekit; install it on every node ({INSTALL_HINT}, version {__version__})."
                ) from exc
            raise ClusterError(f"The Ray workers could not start: {text.strip().splitlines()[-1]}") from exc
        for info in infos:
            if info["error"]:
                raise ClusterError(f"The Ray workers cannot run this job: {info['error']}")
        versions = {info["version"] for info in infos}
        if versions != {__version__}:
            raise ClusterError(
                f"The Ray workers run restorekit {', '.join(sorted(versions))}, this machine {__version__}; install the same version everywhere."
            )

    # ------------------------------------------------------------------ run

    def run(self, work: FileWork, jobs: Sequence[BatchJob], events: BatchEvents, cancel: CancelCheck) -> None:
        ray = _import_ray()
        owned = connect(self.options.address, timeout=self.options.connect_timeout)
        actors: list[Any] = []
        try:
            workers, cpus = self._sizes(ray)
            workers = min(workers, max(1, len(jobs)))
            logger.info("ray: %d workers x %d CPUs", workers, cpus)
            actors, actor_class, args = self._start_workers(ray, work, workers, cpus)
            self._schedule(ray, actors, actor_class, args, make_groups(jobs, len(actors), self.options), events, cancel)
        finally:
            for actor in actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor)
            if owned:
                ray.shutdown()

    def _submit(self, actor: Any, group: list[BatchJob]) -> Any:
        collect = not self.options.shared_fs
        if collect:
            group = [dataclasses.replace(job, data=job.source.read_bytes()) for job in group]
        else:
            group = [dataclasses.replace(job, source=job.source.resolve(), target=job.target.resolve(),
                                         extra=tuple(p.resolve() for p in job.extra)) for job in group]
        return actor.run.remote(group, collect)

    def _schedule(
        self,
        ray: Any,
        actors: list[Any],
        actor_class: Any,
        args: list[Any],
        groups: list[list[BatchJob]],
        events: BatchEvents,
        cancel: CancelCheck,
    ) -> None:
        from ray.exceptions import RayActorError, RayTaskError

        by_index = {job.index: job for group in groups for job in group}
        queue: deque[tuple[list[BatchJob], int]] = deque((group, 1) for group in groups)
        in_flight: dict[Any, tuple[Any, list[BatchJob], int]] = {}
        load = {id(actor): 0 for actor in actors}
        replacements = len(actors)
        while queue or in_flight:
            if cancel():
                for ref in in_flight:
                    with contextlib.suppress(Exception):
                        ray.cancel(ref, force=True)
                raise CancelledError()
            for actor in list(actors):
                while queue and load[id(actor)] < self.options.in_flight_per_worker:
                    group, attempt = queue.popleft()
                    ref = self._submit(actor, group)
                    in_flight[ref] = (actor, group, attempt)
                    load[id(actor)] += 1
                    if attempt == 1:
                        for job in group:
                            events.started(job)
            if not in_flight:
                raise ClusterError("No Ray worker is left to run the remaining images.")
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
            for ref in ready:
                actor, group, attempt = in_flight.pop(ref)
                load[id(actor)] -= 1
                try:
                    results = ray.get(ref)
                except RayActorError as exc:  # the worker died for good (restarts used up)
                    logger.warning("a Ray worker died (%s); its %d images run again", type(exc).__name__, len(group))
                    if actor in actors:
                        actors.remove(actor)
                        if replacements > 0:
                            replacements -= 1
                            fresh = actor_class.remote(*args)
                            actors.append(fresh)
                            load[id(fresh)] = 0
                    if attempt >= self.options.attempts:
                        for job in group:
                            events.failed(job, f"its Ray worker died {attempt} times ({type(exc).__name__})")
                    else:
                        queue.appendleft((group, attempt + 1))
                    continue
                except RayTaskError as exc:  # a bug on the worker: show it, do not retry
                    cause = str(exc).strip().splitlines()[-1]
                    for job in group:
                        events.failed(job, f"worker error: {cause}")
                    continue
                for index, outcome, reason, files in results:
                    job = by_index[index]
                    if outcome is None:
                        events.failed(job, reason or "failed")
                        continue
                    try:
                        for path, data in files.items():
                            write_bytes(path, data)
                    except RestoreKitError as exc:
                        events.failed(job, str(exc))
                        continue
                    events.finished(job, outcome)
