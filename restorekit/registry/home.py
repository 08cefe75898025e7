"""Where models live on disk (the model home).

Resolution order:

1. ``RESTOREKIT_HOME`` if set;
2. a home configured by a front end (ComfyUI's ``models/`` folders, ``--models-dir``);
3. the user cache dir (``~/.cache/restorekit`` on Linux).

Never site-packages or the working directory. Inside the home, each purpose has a folder
named as in ComfyUI (``upscale_models``, ``facerestore_models``, ``facedetection``); extra
search folders (ComfyUI's ``extra_model_paths.yaml``) are read but never written. State that
is ours alone (manifest, locks, partial downloads) lives in ``<home>/.restorekit/``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import environment
from ..errors import InvalidParameterError
from .schema import PURPOSES

FOLDERS: tuple[str, ...] = tuple(dict.fromkeys(PURPOSES.values()))


@dataclass(frozen=True)
class ModelHome:
    """A model home: the root, the write folder per model folder, and extra search folders."""

    root: Path
    write_dirs: Mapping[str, Path] = field(default_factory=dict)
    extra_dirs: Mapping[str, tuple[Path, ...]] = field(default_factory=dict)

    def folder(self, folder: str) -> Path:
        """The folder where models of this kind are written (``upscale_models``...)."""
        if folder not in FOLDERS:
            raise InvalidParameterError(f"Unknown model folder {folder!r}; known: {', '.join(FOLDERS)}.")
        return self.write_dirs.get(folder, self.root / folder)

    def search_dirs(self, folder: str) -> list[Path]:
        """The write folder first, then extra read-only folders, without duplicates."""
        dirs = [self.folder(folder), *self.extra_dirs.get(folder, ())]
        seen: list[Path] = []
        for d in dirs:
            if d not in seen:
                seen.append(d)
        return seen

    @property
    def state_dir(self) -> Path:
        """RestoreKit's own state: manifest, locks and partial downloads."""
        return self.root / ".restorekit"

    @property
    def manifest_path(self) -> Path:
        return self.state_dir / "manifest.json"

    @property
    def staging_dir(self) -> Path:
        """Partial and cached downloads (resumable); never loaded from."""
        return self.state_dir / "downloads"

    @property
    def lock_dir(self) -> Path:
        return self.state_dir / "locks"


_lock = threading.Lock()
_configured: ModelHome | None = None


def default_root() -> Path:
    """The user cache dir for models (platformdirs), e.g. ``~/.cache/restorekit``."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("restorekit", appauthor=False))


def configure_home(
    root: str | os.PathLike[str] | None,
    *,
    write_dirs: Mapping[str, str | os.PathLike[str]] | None = None,
    extra_dirs: Mapping[str, Sequence[str | os.PathLike[str]]] | None = None,
) -> ModelHome | None:
    """Set the home used when ``RESTOREKIT_HOME`` is not set (``None`` resets it).

    Front ends call this: ComfyUI's adapter with its ``models/`` folders, the CLI and app
    with ``--models-dir``.
    """
    global _configured
    with _lock:
        if root is None:
            _configured = None
            return None
        _configured = ModelHome(
            root=Path(root).expanduser().resolve(),
            write_dirs={k: Path(v).expanduser().resolve() for k, v in (write_dirs or {}).items()},
            extra_dirs={
                k: tuple(Path(p).expanduser().resolve() for p in v)
                for k, v in (extra_dirs or {}).items()
            },
        )
        return _configured


def get_home() -> ModelHome:
    """The current model home (see the module docstring for the order)."""
    root = environment.home_override()
    if root is not None:
        configured = _configured
        if configured is not None and configured.root == root:
            return configured
        return ModelHome(root=root)
    if _configured is not None:
        return _configured
    return ModelHome(root=default_root().resolve())
