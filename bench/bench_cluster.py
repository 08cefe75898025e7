"""Ray scale-out benchmark: ``restorekit upscale --cluster`` with 1 and 2 workers against the
plain CLI on the same files, and Ray's overhead per 256x256 x4 image.

Everything runs on this machine: a loopback Ray cluster on 127.0.0.1 (tests/ray_cluster.py,
own temp dir and HOME) is started per configuration and stopped after it:

- ``local``: the plain CLI's backend (all CPUs, this process);
- ``ray-1``: one node with all CPUs, one worker using them;
- ``ray-2``: two nodes splitting the CPUs, one worker each.

All three run the CLI's own work and backends in this process (the ``upscale`` job,
``LocalBackend`` and ``RayBackend``). The steady time runs from the first task sent to the last
result, so start-up (Ray connection, workers, model load) is left out; Ray's overhead per
image is the one-worker steady time against the compute time that worker measured for the
same images in the same run, so a busy host slows both alike.

    python bench/bench_cluster.py --images 12 --weights ../shared/weights
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from machine import conv_peak, describe_cpu  # noqa: E402
from ray_cluster import start_loopback_cluster  # noqa: E402

DEFAULT_WEIGHTS = Path(os.environ.get("RESTOREKIT_SHARED", REPO.parent / "shared")) / "weights"


def model_gflop(weights: Path, size: int) -> float:
    """GFLOP of one size x size input through the model's convolutions."""
    import spandrel
    import torch
    from safetensors.torch import load_file

    descriptor = spandrel.ModelLoader().load_from_state_dict(load_file(str(weights))).eval()
    total = 0

    def hook(module: Any, inputs: Any, output: Any) -> None:
        nonlocal total
        total += output.numel() * (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1] * 2

    handles = [m.register_forward_hook(hook) for m in descriptor.model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        descriptor.model(torch.zeros(1, 3, 64, 64))
    for handle in handles:
        handle.remove()
    return total * (size / 64) ** 2 / 1e9


def make_inputs(folder: Path, count: int, size: int) -> None:
    from PIL import Image
    from skimage import data

    sources = [data.astronaut(), data.coffee(), data.chelsea()]
    folder.mkdir(parents=True)
    for index in range(count):
        image = sources[index % 3]
        y = (index * 37) % (image.shape[0] - size)
        x = (index * 53) % (image.shape[1] - size)
        Image.fromarray(image[y : y + size, x : x + size]).save(folder / f"img{index:03d}.png")


class Recorder:
    """The bench's :class:`~restorekit.batch.BatchEvents`: when each job was sent and finished,
    and the compute time the worker measured for it."""

    def __init__(self) -> None:
        self.sent: list[float] = []
        self.done: list[float] = []
        self.compute: list[float] = []
        self.failures: list[str] = []

    def started(self, job: Any) -> None:
        self.sent.append(time.perf_counter())

    def progress(self, done: int, total: int, message: str) -> None:
        return None

    def finished(self, job: Any, outcome: Any) -> None:
        self.done.append(time.perf_counter())
        self.compute.append(outcome.seconds)

    def failed(self, job: Any, reason: str) -> None:
        self.failures.append(reason)


def run_backend(name: str, backend: Any, work: Any, inputs: Path, output: Path) -> dict[str, Any]:
    from restorekit.cli.batch import collect_jobs

    jobs, problems = collect_jobs([inputs], output)
    assert not problems, problems
    events = Recorder()
    began = time.perf_counter()
    backend.run(work, jobs, events, lambda: False)
    total = time.perf_counter() - began
    if events.failures:
        raise SystemExit(f"{name}: {events.failures}")
    steady = max(events.done) - min(events.sent)  # first task sent .. last result: no start-up
    compute = sum(events.compute)
    row = {
        "config": name,
        "images": len(jobs),
        "total_s": total,
        "steady_s": steady,
        "compute_s": compute,
        "images_per_s": len(jobs) / steady,
        "overhead": steady / compute - 1 if name == "ray-1" else None,
    }
    print(
        f"{name:6} {len(jobs)} images: {total:6.1f} s with start-up, {steady:6.1f} s steady "
        f"({len(jobs) / steady:.3f} images/s), worker compute {compute:6.1f} s",
        flush=True,
    )
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=12, help="images per configuration (default 12)")
    parser.add_argument("--size", type=int, default=256, help="input side in pixels (default 256)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    weights = args.weights / "realesr-animevideov3.safetensors"
    if not weights.is_file():
        sys.exit(f"{weights} not found (set RESTOREKIT_SHARED or --weights)")
    cpus = os.cpu_count() or 1
    print(f"{describe_cpu()}; host shared with other jobs: check the load average: {os.getloadavg()}")
    import torch

    torch.set_num_threads(cpus)
    peak = conv_peak("fp32")
    gflop = model_gflop(weights, args.size)
    print(f"conv peak fp32 ({cpus} threads): {peak:.0f} GFLOP/s; realesr-animevideov3 {args.size}x{args.size} x4: {gflop:.1f} GFLOP/image")
    root = Path(tempfile.mkdtemp(prefix="rkbench"))
    rows = []
    try:
        inputs = root / "in"
        make_inputs(inputs, args.images, args.size)
        from restorekit.batch import LocalBackend
        from restorekit.cli.upscale import RestoreWork
        from restorekit.cluster import ClusterOptions, RayBackend
        from restorekit.restore import RestoreSettings

        work = RestoreWork(RestoreSettings(model=str(weights), precision="fp32"))
        work.prepare()
        rows.append(run_backend("local", LocalBackend(), work, inputs, root / "out-local"))
        configs = (("ray-1", 1, cpus, 1), ("ray-2", 2, max(1, cpus // 2), None))
        for name, nodes, node_cpus, workers in configs:
            with start_loopback_cluster(REPO, nodes=nodes, cpus=node_cpus) as (address, env):
                os.environ.update({k: env[k] for k in ("HOME", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_TMPDIR", "PYTHONPATH")})
                backend = RayBackend(ClusterOptions(address=address, workers=workers))
                rows.append(run_backend(name, backend, work, inputs, root / f"out-{name}"))
        for name in ("ray-1", "ray-2"):
            same = all((root / f"out-{name}" / p.name).read_bytes() == p.read_bytes() for p in (root / "out-local").iterdir())
            print(f"{name}: outputs identical to the local run's: {same}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    local = rows[0]["images_per_s"]
    print("\n| config | images | steady s | images/s | vs plain CLI | share of fp32 conv peak |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        rate = row["images_per_s"]
        print(f"| {row['config']} | {row['images']} | {row['steady_s']:.1f} | {rate:.3f} | {rate / local:.2f}x | {gflop * rate / peak:.0%} |")
    overhead = rows[1]["overhead"]
    print(
        f"\nRay overhead per {args.size}x{args.size} x4 image (1 worker: first task sent .. last result, "
        f"against the compute the worker measured in the same run): {overhead:+.1%}"
    )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "gflop": gflop, "peak": peak, "overhead": overhead}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
