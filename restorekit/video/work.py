"""The work folder beside the output: finished chunks and a small JSON manifest.

A job is cut into chunks of ``chunk_frames`` frames. Each finished chunk is one file (an
encoded segment, or a list of PNG frames) whose size and SHA-256 go into ``manifest.json``,
written atomically after the chunk's file is complete and renamed into place. A crash between
the two leaves an unrecorded file that is simply made again.

``--resume`` reuses the verified finished chunks when the manifest's settings (input identity,
processor fingerprint, encoder settings, chunk size) equal the current ones; anything else is
refused with the differences named, so chunks made with different settings are never mixed.
A lock file keeps two processes off one work folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import VideoError
from ..files import atomic_write_text, sha256_file

DEFAULT_CHUNK_FRAMES = 120
"""Frames per resumable chunk (each chunk starts on a keyframe)."""

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
LOCK_NAME = "lock"
MANIFEST_VERSION = 1
_EDGE = 1 << 20


@dataclass
class ChunkRecord:
    """One finished chunk: frames ``first_frame .. first_frame + frames - 1``.

    ``files`` are relative to the work folder; ``sha256`` covers their bytes in order.
    """

    index: int
    first_frame: int
    frames: int
    files: list[str]
    bytes: int
    sha256: str
    last_pts: int | None = None


@dataclass
class Manifest:
    version: int
    settings: dict[str, Any]
    chunks: list[ChunkRecord] = field(default_factory=list)
    total_frames: int | None = None
    """Set once the end of the input was reached (all chunks done)."""

    @property
    def frames_done(self) -> int:
        return sum(chunk.frames for chunk in self.chunks)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        return cls(
            version=int(data["version"]),
            settings=dict(data["settings"]),
            chunks=[ChunkRecord(**chunk) for chunk in data.get("chunks", [])],
            total_frames=data.get("total_frames"),
        )


def default_work_dir(output: Path) -> Path:
    """``<output folder>/.<output name>.restorekit-work``."""
    return output.parent / f".{output.name}.restorekit-work"


def input_identity(path: Path) -> dict[str, Any]:
    """Cheap identity of an input: size, mtime and hashes of its first and last MiB (files),
    or a hash of every frame file's name, size and mtime (folders)."""
    path = path.resolve()
    if path.is_dir():
        digest = hashlib.sha256()
        count = 0
        for entry in sorted(path.iterdir()):
            if entry.is_file():
                stat = entry.stat()
                digest.update(f"{entry.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
                count += 1
        return {"path": str(path), "files": count, "listing_sha256": digest.hexdigest()}
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(_EDGE))
        if stat.st_size > 2 * _EDGE:
            handle.seek(-_EDGE, os.SEEK_END)
            digest.update(handle.read(_EDGE))
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "edges_sha256": digest.hexdigest()}


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    found: list[str] = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}: {a!r} then, {b!r} now")
    return found


class WorkFolder:
    """The chunks and manifest of one job (see the module docstring)."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path = path
        self.manifest = manifest
        self.reused_chunks = 0

    # ------------------------------------------------------------------ opening

    @classmethod
    @contextlib.contextmanager
    def open(
        cls, path: Path, settings: dict[str, Any], *, output: Path, resume: bool, overwrite: bool
    ) -> Iterator[WorkFolder]:
        """Lock the work folder, then continue its job (``resume``), discard it
        (``overwrite``), or refuse when unfinished work would be thrown away.

        The lock is taken before anything is read or removed, so a second process on the same
        output fails at once with :class:`VideoError` instead of deleting the first one's work.
        """
        from filelock import FileLock, Timeout

        path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path / LOCK_NAME))
        try:
            lock.acquire(timeout=0)
        except Timeout as exc:
            raise VideoError(
                f"Another RestoreKit process is working on {output} (lock in {path}); wait for it "
                "or stop it."
            ) from exc
        try:
            yield cls._prepare(path, settings, output=output, resume=resume, overwrite=overwrite)
        finally:
            lock.release()

    @classmethod
    def _prepare(
        cls, path: Path, settings: dict[str, Any], *, output: Path, resume: bool, overwrite: bool
    ) -> WorkFolder:
        settings = json.loads(json.dumps(settings))  # plain JSON types, as stored
        manifest_path = path / MANIFEST_NAME
        existing: Manifest | None = None
        if manifest_path.is_file():
            try:
                existing = Manifest.from_json(manifest_path.read_text(encoding="utf-8"))
            except (ValueError, KeyError, TypeError) as exc:
                logger.warning("the manifest in %s is unreadable (%s); starting over", path, exc)
        if existing is not None and existing.chunks and not (resume or overwrite):
            raise VideoError(
                f"Unfinished work for {output} is in {path} ({len(existing.chunks)} chunks, "
                f"{existing.frames_done} frames done). Pass --resume to continue it, or "
                "--overwrite to discard it and start over."
            )
        if resume and existing is not None:
            if existing.version != MANIFEST_VERSION:
                raise VideoError(
                    f"{path} was made by another RestoreKit version; remove it or pass --overwrite."
                )
            changes = _differences(existing.settings, settings)
            if changes:
                raise VideoError(
                    f"Cannot resume {output}: the settings differ from the interrupted run ("
                    + "; ".join(changes[:4])
                    + "). Run with the same settings, or pass --overwrite to start over."
                )
            work = cls(path, existing)
            work._verify()
            return work
        if resume:
            logger.info("nothing to resume for %s; starting from the beginning", output)
        for entry in path.iterdir():
            if entry.name == LOCK_NAME:
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        work = cls(path, Manifest(MANIFEST_VERSION, settings))
        work.save()
        return work

    def _verify(self) -> None:
        """Keep the longest prefix of recorded chunks whose files are intact."""
        kept: list[ChunkRecord] = []
        for chunk in self.manifest.chunks:
            if chunk.index != len(kept) or not self._intact(chunk):
                logger.warning("chunk %d in %s is missing or damaged; it will be made again", chunk.index, self.path)
                break
            kept.append(chunk)
        if len(kept) != len(self.manifest.chunks):
            self.manifest.chunks = kept
            self.manifest.total_frames = None
            self.save()
        self.reused_chunks = len(kept)

    def _intact(self, chunk: ChunkRecord) -> bool:
        digest = hashlib.sha256()
        size = 0
        for name in chunk.files:
            file = self.path / name
            if not file.is_file():
                return False
            if len(chunk.files) == 1:
                return file.stat().st_size == chunk.bytes and sha256_file(file) == chunk.sha256
            data = file.read_bytes()
            digest.update(data)
            size += len(data)
        return size == chunk.bytes and digest.hexdigest() == chunk.sha256

    # ------------------------------------------------------------------ progress

    @property
    def chunks(self) -> list[ChunkRecord]:
        return self.manifest.chunks

    @property
    def next_frame(self) -> int:
        """The first frame not in a finished chunk."""
        return self.manifest.frames_done

    @property
    def finished(self) -> bool:
        return self.manifest.total_frames is not None

    def add_chunk(self, chunk: ChunkRecord) -> None:
        if chunk.index != len(self.manifest.chunks) or chunk.first_frame != self.next_frame:
            raise VideoError(  # pragma: no cover - a pipeline bug, never user input
                f"chunk {chunk.index} (frame {chunk.first_frame}) does not follow "
                f"{len(self.manifest.chunks)} chunks / {self.next_frame} frames"
            )
        self.manifest.chunks.append(chunk)
        self.save()

    def mark_finished(self) -> None:
        self.manifest.total_frames = self.next_frame
        self.save()

    def save(self) -> None:
        atomic_write_text(self.path / MANIFEST_NAME, self.manifest.to_json())

    def file(self, name: str) -> Path:
        return self.path / name

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
