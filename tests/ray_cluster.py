"""A loopback Ray cluster for tests and benchmarks: a head and ``--nodes - 1`` more nodes, all
on 127.0.0.1, started with Ray's own multi-node testing utility. Prints the GCS address on
one line, then runs until its stdin closes, and stops every process it started.

Run it with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` and a private ``HOME`` in the
environment (see :func:`start_loopback_cluster`): that keeps Ray on 127.0.0.1 and away from
any other Ray instance's ``~/.ray`` state on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("temp_dir")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=1, help="CPUs per node")
    args = parser.parse_args()
    from ray.cluster_utils import Cluster

    common = {"num_cpus": args.cpus, "node_ip_address": "127.0.0.1", "object_store_memory": 200 << 20}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={**common, "temp_dir": args.temp_dir, "include_dashboard": False},
        shutdown_at_exit=True,
    )
    try:
        for _ in range(args.nodes - 1):
            cluster.add_node(**common)
        cluster.wait_for_nodes()
        print(cluster.address, flush=True)
        sys.stdin.read()
    finally:
        cluster.shutdown()


def loopback_env(root: Path, repo: Path) -> dict[str, str]:
    """The environment for the cluster, its drivers and workers: loopback only, a private
    home (no stale ``~/.ray/auth_token``), this checkout first on the path."""
    env = dict(os.environ)
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "HOME": str(home),
            "PYTHONPATH": os.pathsep.join([str(repo), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_TMPDIR": str(root),  # Ray's own temp files (e.g. ray_current_cluster) stay ours
        }
    )
    env.pop("RAY_ADDRESS", None)
    return env


@contextlib.contextmanager
def start_loopback_cluster(repo: Path, *, nodes: int = 2, cpus: int = 1) -> Iterator[tuple[str, dict[str, str]]]:
    """``(address, environment)`` of a loopback cluster that lives for the ``with`` block."""
    root = Path(tempfile.mkdtemp(prefix="rkray"))  # short: Ray's socket paths have a length limit
    env = loopback_env(root, repo)
    (root / "ray").mkdir()
    process = subprocess.Popen(
        [sys.executable, __file__, str(root / "ray"), "--nodes", str(nodes), "--cpus", str(cpus)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
        start_new_session=True,  # its own process group: everything it starts, and only that
    )
    try:
        assert process.stdout is not None
        address = process.stdout.readline().strip()
        if not address:
            raise RuntimeError("the loopback Ray cluster did not start")
        env["RAY_TEST_CLUSTER_ROOT"] = str(root)
        yield address, env
    finally:
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # anything of ours left behind
        process.wait()
        shutil.rmtree(root, ignore_errors=True)


def worker_pids(env: dict[str, str], name: str = "ray::FileWorker") -> list[int]:
    """Process ids of this cluster's Ray worker processes called ``name`` (found by the
    cluster's private HOME in their environment, so never another user's processes)."""
    found = []
    marker = f"HOME={env['HOME']}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if not cmdline.startswith(name.encode()):
                continue
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


if __name__ == "__main__":
    main()
