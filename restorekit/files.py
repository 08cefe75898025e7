"""File helpers: atomic writes, hashing and safe names.

Outputs are written atomically (a temp file in the same folder, then a rename), so a crash or
an interrupt never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import InvalidParameterError

_CHUNK = 1 << 20
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    The temp file keeps ``target``'s suffix (or ``suffix``) so that writers which pick a
    format from the extension work. On any exception the temp file is removed and
    ``target`` is left untouched. A process killed mid-write (SIGKILL, a lost cluster worker)
    cannot remove its temp file; the next successful write of the same target removes such
    leftovers (temp files of that target older than its own).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    ext = target.suffix if suffix is None else suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{ext}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    started = tmp.stat().st_mtime
    mode = 0o666 & ~_current_umask()
    try:
        yield tmp
        os.chmod(tmp, mode)  # mkstemp (and some writers) create 0600; outputs follow the umask
        os.replace(tmp, target)
        _remove_leftover_temps(target, ext, started)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _remove_leftover_temps(target: Path, ext: str, before: float) -> None:
    """Remove ``atomic_path`` temp files of ``target`` last written before ``before``."""
    for leftover in target.parent.glob(f".{glob.escape(target.stem)}.*.tmp{glob.escape(ext)}"):
        with contextlib.suppress(OSError):
            if leftover.stat().st_mtime < before:
                leftover.unlink()


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically and return the target path."""
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(target)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``target`` atomically and return the target path."""
    return atomic_write_bytes(target, text.encode("utf-8"))


def sha256_file(
    path: str | os.PathLike[str],
    progress: Callable[[int, int, str], None] | None = None,
) -> str:
    """The SHA-256 of a file as 64 lower-case hex digits."""
    digest = hashlib.sha256()
    total = os.path.getsize(path)
    done = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total, "hashing")
    return digest.hexdigest()


def check_safe_name(name: str, *, what: str = "name") -> str:
    """Return ``name`` if it is a plain file-system-safe name, else raise.

    A safe name has letters, digits, ``.``, ``_``, ``+`` and ``-`` only, starts with a letter
    or digit, and so cannot contain ``/``, ``\\``, ``..`` segments or absolute paths.
    """
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
        raise InvalidParameterError(
            f"Invalid {what} {name!r}: use letters, digits, '.', '_', '+' and '-' only "
            "(no folders, no '..', no absolute paths)."
        )
    return name


def resolve_inside(base: str | os.PathLike[str], relative: str) -> Path:
    """Join ``relative`` onto ``base`` and refuse any result outside ``base``.

    Rejects absolute paths, ``..`` escapes and symlinks that lead outside ``base``.
    """
    base_path = Path(base).resolve()
    candidate = Path(relative)
    if candidate.is_absolute() or candidate.drive:
        raise InvalidParameterError(
            f"{relative!r} is an absolute path; give a name inside {base_path} instead."
        )
    resolved = (base_path / candidate).resolve()
    if resolved != base_path and base_path not in resolved.parents:
        raise InvalidParameterError(
            f"{relative!r} points outside {base_path}; path tricks such as '..' are refused."
        )
    return resolved
