"""Where a file job's outputs go: straight to disk, or collected as bytes to be written
elsewhere (a cluster worker without a shared filesystem sends them back to the driver).

Both writers encode exactly the same bytes, so a file written through either is identical.
Every write to disk is atomic (a temp file in the same folder, then a rename).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from .errors import ImageWriteError
from .files import atomic_write_bytes


class OutputWriter(Protocol):
    """What a file job writes its results through."""

    def image(self, image: Any, path: Path, **encode: Any) -> None:
        """Encode a :class:`~restorekit.imageio.DecodedImage` to ``path`` (``fmt``,
        ``quality``, ``bit_depth``, ``keep_gray`` as :func:`~restorekit.imageio.write_image`)."""

    def text(self, path: Path, text: str) -> None:
        """Write UTF-8 ``text`` to ``path``."""


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """``data`` to ``path`` atomically; an OS error becomes :class:`ImageWriteError`."""
    try:
        return atomic_write_bytes(path, data)
    except OSError as exc:
        raise ImageWriteError(f"Cannot write {path}: {exc.strerror or exc}.") from exc


def _encode(image: Any, path: Path, encode: dict[str, Any]) -> bytes:
    from .imageio import encode_image, format_from_path, normalize_format

    fmt = encode.pop("fmt", None)
    fmt = normalize_format(fmt) if fmt else format_from_path(path)
    return encode_image(image, fmt, **encode)


class DiskWriter:
    """Writes each output atomically to its path."""

    def image(self, image: Any, path: Path, **encode: Any) -> None:
        write_bytes(path, _encode(image, Path(path), dict(encode)))

    def text(self, path: Path, text: str) -> None:
        write_bytes(path, text.encode("utf-8"))


class CollectingWriter:
    """Keeps each output's bytes in :attr:`files` (path -> bytes) instead of writing them."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def image(self, image: Any, path: Path, **encode: Any) -> None:
        self.files[os.fspath(path)] = _encode(image, Path(path), dict(encode))

    def text(self, path: Path, text: str) -> None:
        self.files[os.fspath(path)] = text.encode("utf-8")
