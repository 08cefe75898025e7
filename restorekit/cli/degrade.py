"""``restorekit degrade``: synthesise degraded LR images, or HR/LR training pairs.

Layout of the output folder:

- LR only: ``OUT/<name>.png`` and a JSON sidecar ``OUT/<name>.json`` with every sampled
  parameter;
- ``--pairs``: ``OUT/hr/<name>.png``, ``OUT/lr/<name>.png``, ``OUT/params/<name>.json`` and
  ``OUT/meta_info.txt`` (``hr/<name>.png, lr/<name>.png`` per line, the format of
  Real-ESRGAN's paired dataset with ``dataroot_gt`` = ``dataroot_lq`` = OUT);
- always ``OUT/degrade_run.json``: the config, scale, seed and failures of the run.

Inputs run through the CLI's one file runner (:mod:`restorekit.cli.batch`): folders are
searched recursively and their structure is kept under OUT (``OUT/lr/sub/name.png``...), an
input whose outputs all exist is skipped unless ``--overwrite``, and ``--cluster`` runs the
images on Ray with identical results (image ``i`` always draws from stream ``i`` of the seed).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ..batch import BatchJob, JobOutcome, read_source
from ..errors import CancelledError, ImageWriteError, InvalidParameterError
from ..files import atomic_write_text
from ..imageio import DecodedImage
from ..outputs import OutputWriter
from ..progress import CancelCheck, ProgressCallback
from .batch import Placement, add_cluster_arguments, collect_jobs, print_summary, run_file_batch
from .common import cancel_on_interrupt

logger = logging.getLogger("restorekit.cli.degrade")


def register(subparsers: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from ..degrade.config import PRESETS

    parser = subparsers.add_parser(
        "degrade",
        parents=[common],
        help="synthesise degraded LR images or HR/LR training pairs (Real-ESRGAN's pipeline)",
        description="Apply Real-ESRGAN's high-order degradation (blur, resize, noise, JPEG, "
        "twice, then a sinc filter) to images, writing LR images or HR/LR training pairs with "
        "the sampled parameters as JSON.",
    )
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="image files or folders of images")
    parser.add_argument("-o", "--output", metavar="OUT", help="output folder")
    parser.add_argument("--preset", default="realesrgan", choices=sorted(PRESETS), help="degradation preset (default: realesrgan)")
    parser.add_argument("--config", metavar="FILE", help="JSON or YAML file of settings applied over the preset")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change one setting, e.g. --set blur_sigma=0.2,2 --set sinc_prob=0 (repeatable; see --list-fields)",
    )
    parser.add_argument("--scale", type=float, default=4, help="LR size = input size / scale (default: 4)")
    parser.add_argument("--seed", type=int, help="random seed for reproducible output (default: a fresh one, recorded in the JSON)")
    parser.add_argument("--pairs", action="store_true", help="write HR/LR pairs (hr/, lr/, params/, meta_info.txt)")
    parser.add_argument("--crop", type=int, metavar="SIZE", help="cut a random SIZE x SIZE window from each input first (Real-ESRGAN uses 400)")
    parser.add_argument("--save-kernels", action="store_true", help="also write a picture of each image's blur kernels to kernels/")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--recursive", action="store_true", help=argparse.SUPPRESS)  # folders are always searched recursively now
    parser.add_argument("--overwrite", action="store_true", help="redo inputs whose outputs all exist (default: skip them)")
    parser.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    parser.add_argument("--list-fields", action="store_true", help="list every setting with its type and default, and exit")
    parser.add_argument("--show-config", action="store_true", help="print the resolved settings as JSON and exit")
    add_cluster_arguments(parser)
    parser.set_defaults(handler=cmd_degrade)
    return parser


# --------------------------------------------------------------------------- config


def _load_config_file(path: str) -> dict[str, Any]:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidParameterError(f"Cannot read config file {file}: {exc.strerror or exc}.") from exc
    try:
        if file.suffix.lower() in (".yml", ".yaml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:
        raise InvalidParameterError(f"Config file {file} is not valid JSON/YAML: {exc}.") from exc
    if not isinstance(data, dict):
        raise InvalidParameterError(f"Config file {file} must hold a mapping of setting names to values.")
    return data


def resolve_cli_config(args: argparse.Namespace) -> Any:
    from ..degrade.config import get_preset, parse_overrides

    config = get_preset(args.preset)
    if args.config:
        config = config.with_overrides(_load_config_file(args.config))
    return config.with_overrides(parse_overrides(args.overrides))


def _print_presets() -> None:
    from ..degrade.config import PRESET_DESCRIPTIONS

    for name, description in PRESET_DESCRIPTIONS.items():
        print(f"{name:12} {description}")


def _print_fields() -> None:
    from ..degrade.config import describe_fields

    print(f"{'field':26} {'type':18} default (realesrgan)")
    for name, kind, default in describe_fields():
        shown = ",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in default) if isinstance(default, list) else default
        print(f"{name:26} {kind:18} {shown}")


# --------------------------------------------------------------------------- running


def _flatten_alpha(image: DecodedImage) -> DecodedImage:
    if image.alpha is None:
        return image
    logger.info("%s: transparency is flattened onto white", image.source)
    pixels = image.pixels * image.alpha + (1.0 - image.alpha)
    return image.replace(pixels=pixels, alpha=None)


def _png(pixels: Any, source: DecodedImage, bit_depth: int) -> DecodedImage:
    return DecodedImage(
        pixels=pixels.detach().cpu().float(),
        bit_depth=bit_depth,
        was_gray=False,
        format="png",
        metadata={k: v for k, v in source.metadata.items() if k == "icc_profile"},
    )


def _pair_scale(scale: float) -> int:
    if not float(scale).is_integer():
        raise InvalidParameterError(f"--pairs needs a whole-number --scale, got {scale:g}.")
    return int(scale)


def placement(out: Path, *, pairs: bool, save_kernels: bool) -> Placement:
    """Every output of one input whose name (relative to OUT, ``.png``) is ``relative``:
    the LR image first, then HR, the parameters and the kernel picture."""

    def place(relative: Path) -> tuple[Path, ...]:
        json_name = relative.with_suffix(".json")
        if pairs:
            outputs = [out / "lr" / relative, out / "hr" / relative, out / "params" / json_name]
        else:
            outputs = [out / relative, out / json_name]
        if save_kernels:
            outputs.append(out / "kernels" / relative)
        return tuple(outputs)

    return place


class DegradeWork:
    """The :class:`~restorekit.batch.FileWork` of ``restorekit degrade``: one image in, the
    LR image (and with ``pairs`` the HR crop), the parameters as JSON and optionally the
    kernel picture out. Image ``job.index`` of the run draws from its own random stream of
    ``seed``, so the result does not depend on which jobs run where or in which order."""

    def __init__(self, config: Any, *, scale: float, seed: int, preset: str, pairs: bool, crop: int | None, device: str, out: Path) -> None:
        self.config = config
        self.scale = scale
        self.seed = seed
        self.preset = preset
        self.pairs = pairs
        self.crop = crop
        self.device = device
        self.out = out
        self.notices: list[str] = []

    def prepare(self, progress: ProgressCallback | None = None, cancel: CancelCheck | None = None) -> None:
        from ..device import resolve_device

        resolve_device(self.device)

    def remote(self) -> tuple[dict[str, Path], DegradeWork]:
        return {}, self

    def _relative(self, path: Path) -> str:
        base = self.out / "lr" if self.pairs else self.out
        return path.relative_to(base).as_posix()

    def process(self, job: BatchJob, writer: OutputWriter, progress: ProgressCallback, cancel: CancelCheck) -> JobOutcome:
        from ..degrade import degrade, kernels_image, make_pairs
        from ..device import resolve_device

        image = _flatten_alpha(read_source(job))
        pixels = image.pixels.to(resolve_device(self.device))
        lr_path, *rest = job.outputs
        if self.pairs:
            hr_path, json_path, *kernel_path = rest
            pair = make_pairs(pixels, self.config, scale=_pair_scale(self.scale), seed=self.seed, crop=self.crop, first_index=job.index, cancel=cancel)
            writer.image(_png(pair.hr[:1], image, max(8, image.bit_depth if image.bit_depth != 32 else 16)), hr_path, fmt="png", keep_gray=False)
            writer.image(_png(pair.lr[:1], image, 8), lr_path, fmt="png", keep_gray=False)
            params, kernels, lr_shape = pair.params[0], pair.kernels[0], pair.lr.shape
            name = self._relative(lr_path)
            record = {"source": str(job.source), "hr": f"hr/{name}", "lr": f"lr/{name}"}
        else:
            json_path, *kernel_path = rest
            result = degrade(pixels, self.config, scale=self.scale, seed=self.seed, first_index=job.index, cancel=cancel)
            writer.image(_png(result.lr[:1], image, 8), lr_path, fmt="png", keep_gray=False)
            params, kernels, lr_shape = result.params[0], result.kernels[0], result.lr.shape
            record = {"source": str(job.source), "lr": self._relative(lr_path)}
        if kernel_path:
            writer.image(_png(kernels_image(kernels), DecodedImage(pixels=pixels[:1]), 8), kernel_path[0], fmt="png", keep_gray=False)
        record.update(
            {
                "image_index": job.index,
                "run_seed": self.seed,
                "preset": self.preset,
                "lr_size": [int(lr_shape[-1]), int(lr_shape[-2])],
                "params": params,
            }
        )
        writer.text(json_path, json.dumps(record, indent=2) + "\n")
        return JobOutcome(record=record)


def _read_record(job: BatchJob, pairs: bool) -> dict[str, Any] | None:
    """The record a skipped job wrote in an earlier run (for meta_info.txt)."""
    path = job.outputs[2] if pairs else job.outputs[1]
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_meta_info(out: Path, records: list[dict[str, Any]]) -> None:
    lines = "".join(f"{r['hr']}, {r['lr']}\n" for r in records)
    atomic_write_text(out / "meta_info.txt", lines)


def _write_run_record(out: Path, args: argparse.Namespace, config: Any, seed: int, written: int, failures: list[tuple[Path, str]]) -> None:
    from .. import __version__

    record = {
        "restorekit": __version__,
        "preset": args.preset,
        "overrides": list(args.overrides),
        "config_file": args.config,
        "scale": args.scale,
        "seed": seed,
        "pairs": bool(args.pairs),
        "crop": args.crop,
        "config": config.to_dict(),
        "written": written,
        "failures": [{"source": str(source), "reason": reason} for source, reason in failures],
    }
    atomic_write_text(out / "degrade_run.json", json.dumps(record, indent=2) + "\n")


def cmd_degrade(args: argparse.Namespace) -> int:
    from ..degrade.pipeline import check_scale, resolve_seed

    if args.list_presets:
        _print_presets()
        return 0
    if args.list_fields:
        _print_fields()
        return 0
    config = resolve_cli_config(args)
    if args.show_config:
        print(json.dumps({"preset": args.preset, **config.to_dict()}, indent=2))
        return 0
    if not args.inputs:
        raise InvalidParameterError("Give at least one INPUT image or folder.")
    if not args.output:
        raise InvalidParameterError("Give an output folder with -o OUT.")
    check_scale(args.scale)
    if args.pairs:
        _pair_scale(args.scale)
    if args.crop is not None and not args.pairs:
        raise InvalidParameterError("--crop needs --pairs (it cuts training crops).")
    if args.crop is not None and (args.crop < args.scale or args.crop % int(args.scale)):
        raise InvalidParameterError(
            f"--crop {args.crop} must be a multiple of the scale {args.scale:g} and at least as large (e.g. 400)."
        )
    seed = resolve_seed(args.seed)
    out = Path(args.output)
    work = DegradeWork(
        config, scale=args.scale, seed=seed, preset=args.preset, pairs=args.pairs, crop=args.crop, device=args.device, out=out
    )
    work.prepare()
    jobs = collect_jobs(
        args.inputs,
        out,
        fmt="png",
        place=placement(out, pairs=args.pairs, save_kernels=args.save_kernels),
        file_output=False,
        number_collisions=True,
    )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageWriteError(f"Cannot create the output folder {out}: {exc.strerror or exc}.") from exc

    cancelled = False
    with cancel_on_interrupt() as cancel:
        try:
            report = run_file_batch(args, work, cancel=cancel, describe="degraded", jobs=jobs, summary=False)
        except CancelledError:
            cancelled = True
            report = None
    records: list[dict[str, Any]] = []
    if report is not None:
        finished = {job: report.outcomes[job].record for job in report.done}
        finished.update({job: _read_record(job, args.pairs) for job in report.skipped})
        records = [record for _, record in sorted(finished.items(), key=lambda item: item[0].index) if record]
        if args.pairs:
            _write_meta_info(out, records)
        _write_run_record(out, args, config, seed, len(report.done), report.failed)
        print_summary(report, describe="degraded", quiet=True)
    print(
        f"degrade: {len(records)} of {len(jobs[0])} image{'s' if len(jobs[0]) != 1 else ''} done in {out} "
        f"(preset {args.preset}, scale {args.scale:g}, seed {seed})",
        file=sys.stderr if args.quiet else sys.stdout,
    )
    if cancelled:
        print("restorekit: cancelled; the files written so far are complete", file=sys.stderr)
        return 130
    return 1 if report is not None and report.failed else 0
