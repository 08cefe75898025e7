"""``restorekit models``: list, inspect, download, verify, locate and import models."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import RestoreKitError
from ..registry import download as dl
from ..registry.home import get_home
from ..registry.schema import PURPOSES, SOURCE_KINDS, ModelEntry, load_registry
from .common import cancel_on_interrupt, progress_for


def register(subparsers: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("models", help="list, download, verify and import models")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    p = actions.add_parser("list", parents=[common], help="every registry model with its status")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--purpose", choices=list(PURPOSES))
    p.set_defaults(handler=cmd_list)

    p = actions.add_parser("info", parents=[common], help="everything the registry knows about one model")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_info)

    p = actions.add_parser("download", parents=[common], help="download, verify and install models")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--source", choices=SOURCE_KINDS, action="append", help="only this source kind (repeatable)")
    p.add_argument("--force", action="store_true", help="download again even if installed")
    p.set_defaults(handler=cmd_download)

    p = actions.add_parser("verify", parents=[common], help="re-hash installed models against the manifest")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.set_defaults(handler=cmd_verify)

    p = actions.add_parser("path", parents=[common], help="print where a model is installed")
    p.add_argument("name")
    p.set_defaults(handler=cmd_path)

    p = actions.add_parser("import", parents=[common], help="add your own .pth/.safetensors model (converted safely)")
    p.add_argument("file")
    p.add_argument("--name", help="model name (default: the file name without extension)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(handler=cmd_import)

    p = actions.add_parser("remove", parents=[common], help="delete an installed registry model")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(handler=cmd_remove)
    return parser


def _status(entry: ModelEntry) -> dict[str, Any]:
    path = dl.installed_path(entry)
    return {
        "name": entry.name,
        "purpose": entry.purpose,
        "architecture": entry.architecture,
        "scale": entry.scale,
        "size": entry.size,
        "license": entry.license,
        "installed": path is not None,
        "path": str(path) if path else None,
        "pair": {"model": entry.pair.model, "meaning": entry.pair.meaning, "role": entry.pair.role} if entry.pair else None,
        "sources": [s.kind for s in entry.sources],
        "default": entry.default,
        "description": entry.description,
    }


def _human_size(size: int | None) -> str:
    if not size:
        return "?"
    return f"{size / 1e6:.1f} MB"


def cmd_list(args: argparse.Namespace) -> int:
    registry = load_registry()
    rows = [_status(e) for e in registry if args.purpose is None or e.purpose == args.purpose]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':32} {'purpose':13} {'scale':>5} {'size':>9} {'license':16} status")
    for row in rows:
        status = "installed" if row["installed"] else "-"
        mark = "*" if row["default"] else " "
        print(
            f"{row['name']:31}{mark} {row['purpose']:13} {'x' + str(row['scale']):>5} "
            f"{_human_size(row['size']):>9} {row['license']:16} {status}"
        )
    print(f"\nmodel home: {get_home().root}   (* = default for its purpose)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    entry = load_registry().get(args.name)
    status = _status(entry)
    info = {
        **status,
        "params": dict(entry.params),
        "license_url": entry.license_url,
        "notes": entry.notes,
        "sources": [
            {k: v for k, v in vars(s).items() if v is not None} for s in entry.sources
        ],
    }
    if entry.pair:
        info["pair"]["description"] = entry.pair.description
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{entry.name}  ({entry.purpose}, {entry.architecture}, x{entry.scale})")
    print(f"  {entry.description}")
    print(f"  hyperparameters: {dict(entry.params)}")
    print(f"  license: {entry.license}  {entry.license_url or ''}")
    if entry.notes:
        print(f"  notes: {entry.notes.strip()}")
    if entry.pair:
        print(f"  interpolates with {entry.pair.model} ({entry.pair.meaning}): {entry.pair.description.strip()}")
    print(f"  installed: {status['path'] or 'no'}")
    print("  sources (in order):")
    for source in entry.sources:
        print(f"    - {source.describe()}  sha256 {source.sha256[:16]}...  {_human_size(source.size)}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    registry = load_registry()
    entries = [registry.get(n) for n in args.names]
    failures = 0
    with cancel_on_interrupt() as cancel:
        for entry in entries:
            bar = progress_for(args)
            try:
                result = dl.ensure_model(entry, sources=args.source, force=args.force, progress=bar, cancel=cancel)
            except RestoreKitError as exc:
                bar.close()
                failures += 1
                print(f"restorekit: error: {exc}", file=sys.stderr)
                continue
            bar.close()
            if result.downloaded:
                print(f"{entry.name}: downloaded from {result.source} in {result.seconds:.1f} s -> {result.path}")
            else:
                print(f"{entry.name}: already installed at {result.path}")
    return 1 if failures else 0


def cmd_verify(args: argparse.Namespace) -> int:
    registry = load_registry()
    entries = [registry.get(n) for n in args.names] if args.names else list(registry)
    bad = 0
    checked = 0
    for entry in entries:
        result = dl.verify_model(entry)
        if result.status == "not installed":
            if args.names:
                print(f"{entry.name}: not installed")
            continue
        checked += 1
        if not result.ok:
            bad += 1
        print(f"{entry.name}: {result.status}" + (f" ({result.detail})" if result.detail else ""))
    if not args.names and checked == 0:
        print("no models are installed yet")
    return 1 if bad else 0


def cmd_path(args: argparse.Namespace) -> int:
    entry = load_registry().get(args.name)
    path = dl.installed_path(entry)
    if path is None:
        print(
            f"restorekit: {entry.name} is not installed (it would go to {dl.target_path(entry)}); "
            f"run `restorekit models download {entry.name}`",
            file=sys.stderr,
        )
        return 1
    print(path)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from ..models import import_model

    result = import_model(args.file, name=args.name, overwrite=args.overwrite)
    print(f"imported {args.file} as {result.name} -> {result.path}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    registry = load_registry()
    for name in args.names:
        entry = registry.get(name)
        removed = dl.remove_model(entry)
        print(f"{entry.name}: {'removed ' + str(removed) if removed else 'was not installed'}")
    return 0
