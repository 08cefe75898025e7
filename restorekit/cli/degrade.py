"""``restorekit degrade``: synthesise degraded LR images, or HR/LR training pairs.

Layout of the output folder:

- LR only: ``OUT/<name>.png`` and a JSON sidecar ``OUT/<name>.json`` with every sampled
  parameter;
- ``--pairs``: ``OUT/hr/<name>.png``, ``OUT/lr/<name>.png``, ``OUT/params/<name>.json`` and
  ``OUT/meta_info.txt`` (``hr/<name>.png, lr/<name>.png`` per line, the format of
  Real-ESRGAN's paired dataset with ``dataroot_gt`` = ``dataroot_lq`` = OUT);
- always ``OUT/degrade_run.json``: the config, scale, seed and failures of the run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CancelledError, ImageWriteError, InvalidParameterError, RestoreKitError
from ..files import atomic_write_text
from ..imageio import IMAGE_EXTENSIONS, DecodedImage, read_image, write_image
from ..progress import Reporter
from .common import cancel_on_interrupt, progress_for

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
    parser.add_argument("--recursive", action="store_true", help="look for images in sub-folders of INPUT folders too")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    parser.add_argument("--list-fields", action="store_true", help="list every setting with its type and default, and exit")
    parser.add_argument("--show-config", action="store_true", help="print the resolved settings as JSON and exit")
    parser.set_defaults(handler=cmd_degrade)
    return parser


# --------------------------------------------------------------------------- inputs


@dataclass
class Job:
    """One input image and where its outputs go."""

    index: int
    source: Path
    name: str


@dataclass
class Failure:
    source: str
    reason: str


@dataclass
class RunState:
    done: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def expand_inputs(inputs: Iterable[str], recursive: bool = False) -> tuple[list[Path], list[Failure]]:
    """Files as given and the images inside folders (sorted); missing paths become failures."""
    files: list[Path] = []
    failures: list[Failure] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            pattern = path.rglob("*") if recursive else path.iterdir()
            found = sorted(p for p in pattern if _is_image(p))
            if not found:
                failures.append(Failure(str(path), "folder contains no images (.png, .jpg, .webp, .bmp, .tif)"))
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            failures.append(Failure(str(path), "does not exist"))
    return files, failures


def assign_names(files: list[Path]) -> list[Job]:
    """Output names from file stems, made unique with ``_2``, ``_3``... on collisions."""
    jobs: list[Job] = []
    used: set[str] = set()
    for index, path in enumerate(files):
        stem = path.stem or "image"
        name, counter = stem, 1
        while name.lower() in used:
            counter += 1
            name = f"{stem}_{counter}"
        used.add(name.lower())
        jobs.append(Job(index, path, name))
    return jobs


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


def _check_target(path: Path, inputs: set[Path], overwrite: bool) -> None:
    resolved = path.resolve()
    if resolved in inputs:
        raise ImageWriteError(f"Refusing to overwrite the input {path}; choose another output folder.")
    if path.exists() and not overwrite:
        raise ImageWriteError(f"{path} exists; pass --overwrite to replace it.")


def _write_png(pixels: Any, path: Path, source: DecodedImage, bit_depth: int) -> None:
    image = DecodedImage(
        pixels=pixels.detach().cpu().float(),
        bit_depth=bit_depth,
        was_gray=False,
        format="png",
        metadata={k: v for k, v in source.metadata.items() if k == "icc_profile"},
        source=source.source,
    )
    write_image(image, path, fmt="png", keep_gray=False)


def _process(job: Job, args: argparse.Namespace, config: Any, seed: int, device: Any, out: Path, inputs: set[Path], reporter: Reporter) -> dict[str, Any]:
    from ..degrade import degrade, kernels_image, make_pairs

    image = _flatten_alpha(read_image(job.source))
    pixels = image.pixels.to(device)
    if args.pairs:
        lr_path, hr_path = out / "lr" / f"{job.name}.png", out / "hr" / f"{job.name}.png"
        json_path = out / "params" / f"{job.name}.json"
        for path in (lr_path, hr_path, json_path):
            _check_target(path, inputs, args.overwrite)
        pair = make_pairs(pixels, config, scale=_pair_scale(args.scale), seed=seed, crop=args.crop, first_index=job.index, cancel=reporter.cancel)
        _write_png(pair.hr[:1], hr_path, image, max(8, image.bit_depth if image.bit_depth != 32 else 16))
        _write_png(pair.lr[:1], lr_path, image, 8)
        params, kernels, lr_shape = pair.params[0], pair.kernels[0], pair.lr.shape
        record = {"source": str(job.source), "hr": f"hr/{job.name}.png", "lr": f"lr/{job.name}.png"}
    else:
        lr_path, json_path = out / f"{job.name}.png", out / f"{job.name}.json"
        for path in (lr_path, json_path):
            _check_target(path, inputs, args.overwrite)
        if args.crop is not None:
            raise InvalidParameterError("--crop needs --pairs (it cuts training crops).")
        result = degrade(pixels, config, scale=args.scale, seed=seed, first_index=job.index, cancel=reporter.cancel)
        _write_png(result.lr[:1], lr_path, image, 8)
        params, kernels, lr_shape = result.params[0], result.kernels[0], result.lr.shape
        record = {"source": str(job.source), "lr": f"{job.name}.png"}
    if args.save_kernels:
        kernel_path = out / "kernels" / f"{job.name}.png"
        _check_target(kernel_path, inputs, args.overwrite)
        _write_png(kernels_image(kernels), kernel_path, DecodedImage(pixels=pixels[:1]), 8)
    record.update(
        {
            "image_index": job.index,
            "run_seed": seed,
            "preset": args.preset,
            "lr_size": [int(lr_shape[-1]), int(lr_shape[-2])],
            "params": params,
        }
    )
    try:
        atomic_write_text(json_path, json.dumps(record, indent=2) + "\n")
    except OSError as exc:
        raise ImageWriteError(f"Cannot write {json_path}: {exc.strerror or exc}.") from exc
    return record


def _pair_scale(scale: float) -> int:
    if not float(scale).is_integer():
        raise InvalidParameterError(f"--pairs needs a whole-number --scale, got {scale:g}.")
    return int(scale)


def _write_meta_info(out: Path, records: list[dict[str, Any]]) -> None:
    lines = "".join(f"{r['hr']}, {r['lr']}\n" for r in records)
    atomic_write_text(out / "meta_info.txt", lines)


def _write_run_record(out: Path, args: argparse.Namespace, config: Any, seed: int, state: RunState) -> None:
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
        "written": len(state.done),
        "failures": [{"source": f.source, "reason": f.reason} for f in state.failures],
    }
    atomic_write_text(out / "degrade_run.json", json.dumps(record, indent=2) + "\n")


def cmd_degrade(args: argparse.Namespace) -> int:
    from ..degrade.pipeline import check_scale, resolve_seed
    from ..device import resolve_device

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
    device = resolve_device(args.device)
    seed = resolve_seed(args.seed)
    out = Path(args.output)
    files, failures = expand_inputs(args.inputs, args.recursive)
    state = RunState(failures=list(failures))
    jobs = assign_names(files)
    inputs = {job.source.resolve() for job in jobs}
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageWriteError(f"Cannot create the output folder {out}: {exc.strerror or exc}.") from exc

    cancelled = False
    with cancel_on_interrupt() as cancel:
        bar = progress_for(args, unit="img")
        reporter = Reporter.of(bar, cancel)
        try:
            for done, job in enumerate(jobs):
                reporter.step(done, len(jobs), "degrade")
                try:
                    state.done.append(_process(job, args, config, seed, device, out, inputs, reporter))
                except CancelledError:
                    raise
                except RestoreKitError as exc:
                    state.failures.append(Failure(str(job.source), str(exc)))
                except OSError as exc:
                    state.failures.append(Failure(str(job.source), exc.strerror or str(exc)))
            reporter.step(len(jobs), len(jobs), "degrade")
        except CancelledError:
            cancelled = True
        finally:
            bar.close()
    if args.pairs:
        _write_meta_info(out, state.done)
    _write_run_record(out, args, config, seed, state)

    print(
        f"degrade: wrote {len(state.done)} of {len(jobs)} image{'s' if len(jobs) != 1 else ''} to {out} "
        f"(preset {args.preset}, scale {args.scale:g}, seed {seed})",
        file=sys.stderr if args.quiet else sys.stdout,
    )
    for failure in state.failures:
        print(f"restorekit: failed: {failure.source}: {failure.reason}", file=sys.stderr)
    if cancelled:
        print("restorekit: cancelled; the files written so far are complete", file=sys.stderr)
        return 130
    if state.failures:
        print(f"restorekit: {len(state.failures)} input{'s' if len(state.failures) != 1 else ''} failed", file=sys.stderr)
        return 1
    return 0

