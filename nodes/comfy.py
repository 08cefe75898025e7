"""The one adapter between RestoreKit's nodes and ComfyUI's runtime services.

Only public ComfyUI modules are touched, and only here: ``folder_paths`` (model folders,
input/output folders), ``comfy.utils.ProgressBar`` and ``comfy.model_management`` (device,
interrupts). When ComfyUI is absent (tests, ``restorekit run``), every service falls back to
our own: progress goes to a callback or the log, interrupts to :func:`request_interrupt`, and
the device to the engine's ``auto``.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from restorekit.errors import CancelledError
from restorekit.registry.home import FOLDERS, configure_home

logger = logging.getLogger("restorekit.nodes")

T = TypeVar("T")


@functools.cache
def _module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except Exception:  # ComfyUI absent (ImportError) or half-initialised
        return None


def comfy_available() -> bool:
    """True when running inside ComfyUI (its ``folder_paths`` and ``comfy`` import)."""
    return _module("folder_paths") is not None and _module("comfy.model_management") is not None


def _service(name: str) -> ModuleType | None:
    """A ComfyUI module, only when ComfyUI itself is running (a stray ``comfy`` folder on
    ``sys.path`` is not ComfyUI)."""
    return _module(name) if comfy_available() else None


# --------------------------------------------------------------------------- folders


_fallback_dirs: dict[str, Path] = {}


def set_fallback_directories(*, input_dir: str | os.PathLike[str] | None = None, output_dir: str | os.PathLike[str] | None = None) -> None:
    """Input/output folders used when ComfyUI is absent (the headless runner sets them)."""
    if input_dir is not None:
        _fallback_dirs["input"] = Path(input_dir)
    if output_dir is not None:
        _fallback_dirs["output"] = Path(output_dir)


def input_directory() -> Path:
    folder_paths = _service("folder_paths")
    if folder_paths is not None:
        return Path(folder_paths.get_input_directory())
    return _fallback_dirs.get("input", Path.cwd() / "input")


def output_directory() -> Path:
    folder_paths = _service("folder_paths")
    if folder_paths is not None:
        return Path(folder_paths.get_output_directory())
    return _fallback_dirs.get("output", Path.cwd() / "output")


def register_model_folders() -> None:
    """Make ComfyUI's model folders our model home (keeping ``extra_model_paths.yaml``).

    Our folders (``upscale_models``, ``facerestore_models``, ``facedetection``) are added to
    ``folder_paths`` as *non-default* paths, so folders the user configured stay first and
    remain the download target. Without ComfyUI this does nothing: the engine's own home
    resolution applies.
    """
    folder_paths = _service("folder_paths")
    if folder_paths is None:
        return
    models_dir = Path(folder_paths.models_dir)
    write_dirs: dict[str, Path] = {}
    extra_dirs: dict[str, list[Path]] = {}
    for folder in FOLDERS:
        folder_paths.add_model_folder_path(folder, str(models_dir / folder))
        paths = [Path(p) for p in folder_paths.get_folder_paths(folder)]
        write_dirs[folder] = paths[0]
        extra_dirs[folder] = paths[1:]
    configure_home(models_dir, write_dirs=write_dirs, extra_dirs=extra_dirs)


def model_files(folder: str) -> list[str]:
    """Model files ComfyUI lists in ``folder`` (empty without ComfyUI)."""
    folder_paths = _service("folder_paths")
    if folder_paths is None:
        return []
    try:
        return list(folder_paths.get_filename_list(folder))
    except KeyError:
        return []


def model_file_path(folder: str, name: str) -> str | None:
    """Full path of a file ComfyUI lists in ``folder`` (None without ComfyUI)."""
    folder_paths = _service("folder_paths")
    if folder_paths is None:
        return None
    return folder_paths.get_full_path(folder, name)


# --------------------------------------------------------------------------- device


def torch_device() -> str:
    """ComfyUI's device (honours ``--cpu`` and friends), else the engine's ``auto``."""
    mm = _service("comfy.model_management")
    if mm is None:
        return "auto"
    return str(mm.get_torch_device())


# --------------------------------------------------------------------------- interrupts


_interrupt = threading.Event()


def request_interrupt() -> None:
    """Ask running nodes to stop (the fallback of ComfyUI's interrupt button)."""
    mm = _service("comfy.model_management")
    if mm is not None:
        mm.interrupt_current_processing(True)
    _interrupt.set()


def clear_interrupt() -> None:
    _interrupt.clear()


def interrupted() -> bool:
    """The engine's cancel check: ComfyUI's interrupt flag, or our own."""
    mm = _service("comfy.model_management")
    if mm is not None and mm.processing_interrupted():
        return True
    return _interrupt.is_set()


@contextmanager
def interruptible() -> Iterator[None]:
    """Turn the engine's CancelledError into ComfyUI's own interrupt exception, so ComfyUI
    treats it as a user interrupt rather than a node error."""
    try:
        yield
    except CancelledError:
        mm = _service("comfy.model_management")
        if mm is not None:
            mm.throw_exception_if_processing_interrupted()
        raise


# --------------------------------------------------------------------------- progress


class NodeProgress:
    """A ``progress(done, total, message)`` callback drawing ComfyUI's progress bar.

    Without ComfyUI it forwards to ``sink`` (the headless runner's tqdm) or logs every 10%.
    """

    def __init__(self, sink: Callable[[int, int, str], None] | None = None) -> None:
        self._sink = sink if sink is not None else _default_sink
        self._bar: Any = None
        self._total = 0

    def __call__(self, done: int, total: int, message: str) -> None:
        utils = _service("comfy.utils")
        if utils is not None:
            if self._bar is None or total != self._total:
                self._bar = utils.ProgressBar(max(total, 1))
                self._total = total
            self._bar.update_absolute(min(done, total), total)
            return
        if self._sink is not None:
            self._sink(done, total, message)


_default_sink: Callable[[int, int, str], None] | None = None


def set_progress_sink(sink: Callable[[int, int, str], None] | None) -> None:
    """Where progress goes without ComfyUI (the headless runner installs a tqdm sink)."""
    global _default_sink
    _default_sink = sink
