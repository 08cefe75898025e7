"""Scale-out on Ray: the second backend of the CLI's file runner (``--cluster``).

The driver (the machine running ``restorekit ... --cluster ADDRESS``) builds the job list,
applies the skip rule and keeps the failure report exactly as a local run does
(:mod:`restorekit.cli.batch`); :class:`RayBackend` only runs the remaining jobs:

- **workers**: one Ray actor per node by default, each holding one loaded job (one
  :class:`~restorekit.restore.Restorer`: a model loads once per worker, not per task);
- **models**: resolved and verified once on the driver and shipped through the object store
  into each worker's private model home (:mod:`restorekit.cluster.models`);
- **tasks**: images grouped so that small images are not one task each, a bounded number in
  flight per worker (the driver never holds all inputs at once);
- **outputs**: written atomically by the workers to the shared output path, or with
  ``shared_fs=False`` inputs travel to the workers and results come back to the driver,
  which writes them; either way the bytes equal a local run's on the same CPU type;
- **faults**: a killed worker restarts and its tasks run again (outputs are atomic, so
  nothing partial or doubled is left); a rerun of the driver skips what is done.

Python API::

    from restorekit.cluster import ClusterOptions, RayBackend
    backend = RayBackend(ClusterOptions(address="10.0.0.1:6379"))
    backend.run(work, jobs, events, cancel)   # a restorekit.batch.Backend

Ray is an optional dependency: ``pip install 'restorekit[cluster]'``.
"""

from __future__ import annotations

from .backend import ClusterError, ClusterOptions, RayBackend, connect, parse_address

__all__ = ["ClusterError", "ClusterOptions", "RayBackend", "connect", "parse_address"]
