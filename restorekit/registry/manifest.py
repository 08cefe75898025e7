"""The local manifest: what RestoreKit installed, where from, and each file's SHA-256.

``<home>/.restorekit/manifest.json`` maps each installed file (path relative to the home
root when inside it, absolute otherwise) to a record: model name, the SHA-256 and size of the
safetensors file as written, the source that served it and that source's pinned SHA-256.
``restorekit models verify`` re-hashes every file against this record.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from ..files import atomic_write_text
from .home import ModelHome

logger = logging.getLogger(__name__)
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class InstalledFile:
    """One installed safetensors file as recorded in the manifest.

    ``path`` is relative to the home root when the file is inside it (so a moved home keeps
    its manifest valid), absolute otherwise.
    """

    name: str
    path: str
    sha256: str
    size: int
    source: str
    source_sha256: str | None
    converted_from: str
    installed_at: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InstalledFile:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})  # type: ignore[arg-type]


def _key(home: ModelHome, path: Path) -> str:
    path = path.resolve()
    try:
        return path.relative_to(home.root).as_posix()
    except ValueError:
        return str(path)


def _read(home: ModelHome) -> dict[str, Any]:
    try:
        data = json.loads(home.manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"version": MANIFEST_VERSION, "files": {}}
    except (OSError, json.JSONDecodeError) as exc:
        logger.warning("manifest %s is unreadable (%s); starting a new one", home.manifest_path, exc)
        return {"version": MANIFEST_VERSION, "files": {}}
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        return {"version": MANIFEST_VERSION, "files": {}}
    return data


@contextmanager
def _locked(home: ModelHome) -> Iterator[None]:
    home.state_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(home.state_dir / "manifest.lock"), timeout=60):
        yield


def record(home: ModelHome, item: InstalledFile) -> None:
    """Add or replace the record for ``item.path`` (atomic, under a lock)."""
    with _locked(home):
        data = _read(home)
        data["files"][item.path] = asdict(item)
        atomic_write_text(home.manifest_path, json.dumps(data, indent=2, sort_keys=True))


def forget(home: ModelHome, path: Path) -> None:
    """Drop the record for ``path`` if there is one."""
    with _locked(home):
        data = _read(home)
        if data["files"].pop(_key(home, path), None) is not None:
            atomic_write_text(home.manifest_path, json.dumps(data, indent=2, sort_keys=True))


def lookup(home: ModelHome, path: Path) -> InstalledFile | None:
    """The record for ``path``, or None."""
    raw = _read(home)["files"].get(_key(home, path))
    return InstalledFile.from_json(raw) if raw else None


def resolve_path(home: ModelHome, item: InstalledFile) -> Path:
    """The absolute path of a recorded file."""
    path = Path(item.path)
    return path if path.is_absolute() else home.root / path


def entries(home: ModelHome) -> list[InstalledFile]:
    """Every recorded file."""
    return [InstalledFile.from_json(v) for v in _read(home)["files"].values()]


def new_record(
    home: ModelHome,
    *,
    name: str,
    path: Path,
    sha256: str,
    source: str,
    source_sha256: str | None,
    converted_from: str,
) -> InstalledFile:
    """Build an :class:`InstalledFile` for a file just written."""
    return InstalledFile(
        name=name,
        path=_key(home, path),
        sha256=sha256,
        size=path.stat().st_size,
        source=source,
        source_sha256=source_sha256,
        converted_from=converted_from,
        installed_at=time.time(),
    )
