"""Every environment variable the engine reads, in one place.

Values are read when asked for (not at import), so a process may change them, and tests set
them per test. Front ends take the same settings as options (``--models-dir``,
``--max-pixels``...); an option given explicitly wins over the variable.

========================  ==================================================================
``RESTOREKIT_HOME``       the model home (default: ComfyUI's models folders, else the user
                          cache dir)
``RESTOREKIT_REGISTRY``   another ``model_registry.yaml`` (tests, private registries)
``RESTOREKIT_OFFLINE``    ``1``: no network at all (as ``HF_HUB_OFFLINE``)
``HF_HUB_OFFLINE``        Hugging Face's own offline switch, honoured the same way
``HF_ENDPOINT``           a Hugging Face Hub mirror, e.g. ``https://hf-mirror.com``
``RESTOREKIT_URL_MIRROR`` a prefix for GitHub release URLs (GitHub proxies)
``RESTOREKIT_MAX_PIXELS`` the decoded-image pixel cap (decompression bombs)
``WORLD_SIZE``            set by ``torchrun``: the number of data-parallel training processes
========================  ==================================================================

``RESTOREKIT_WINDOW_TUNING=0`` chooses ``tile='auto'`` windows without measuring the machine's
cost per pixel (:mod:`restorekit.upscale.window_cost`); the test suite sets it.

PyTorch's own ``TORCHINDUCTOR_CACHE_DIR`` (the compile cache folder) is read and set here too:
compiled execution (:mod:`restorekit.compiled`) uses the user's folder when one is set, else
``<home>/.restorekit/compile``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InvalidParameterError

DEFAULT_HF_ENDPOINT = "https://huggingface.co"
_TRUE = ("1", "true", "yes", "on")


def _text(name: str) -> str:
    return os.environ.get(name, "").strip()


def _flag(name: str) -> bool:
    return _text(name).lower() in _TRUE


def window_tuning() -> bool:
    """False when ``RESTOREKIT_WINDOW_TUNING`` is ``0``, ``off``, ``false`` or ``no``."""
    return _text("RESTOREKIT_WINDOW_TUNING").lower() not in ("0", "off", "false", "no")


def home_override() -> Path | None:
    """``RESTOREKIT_HOME``, expanded and absolute, or None."""
    raw = _text("RESTOREKIT_HOME")
    return Path(raw).expanduser().resolve() if raw else None


def registry_override() -> Path | None:
    """``RESTOREKIT_REGISTRY`` as a path, or None."""
    raw = _text("RESTOREKIT_REGISTRY")
    return Path(raw) if raw else None


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``RESTOREKIT_OFFLINE`` asks for no network at all."""
    return _flag("HF_HUB_OFFLINE") or _flag("RESTOREKIT_OFFLINE")


def hf_endpoint() -> str:
    """The Hub (or mirror) base URL, without a trailing slash."""
    return (_text("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT).rstrip("/")


def url_mirror() -> str:
    """The prefix for GitHub release URLs (``RESTOREKIT_URL_MIRROR``), or ``""``."""
    return _text("RESTOREKIT_URL_MIRROR")


def max_pixels() -> int | None:
    """``RESTOREKIT_MAX_PIXELS`` as a pixel count (at least 1), or None when unset.

    Raises:
        InvalidParameterError: the variable is not a number.
    """
    raw = _text("RESTOREKIT_MAX_PIXELS")
    if not raw:
        return None
    try:
        value = int(float(raw))
    except ValueError as exc:
        raise InvalidParameterError(f"RESTOREKIT_MAX_PIXELS={raw!r} is not a number of pixels.") from exc
    return max(value, 1)


def use_private_home(path: Path) -> None:
    """Make ``path`` this process's model home with the network off (a cluster worker's
    private home, filled from the driver's shipped models; inherited settings lose)."""
    os.environ["RESTOREKIT_HOME"] = str(path)
    os.environ["RESTOREKIT_OFFLINE"] = "1"


def distributed_world_size() -> int:
    """``WORLD_SIZE`` as ``torchrun`` sets it (1 when not launched by it).

    Raises:
        InvalidParameterError: the variable is not a whole number.
    """
    raw = _text("WORLD_SIZE") or "1"
    try:
        return max(int(raw), 1)
    except ValueError as exc:
        raise InvalidParameterError(f"WORLD_SIZE={raw!r} is not a whole number of processes.") from exc


def inductor_cache_dir() -> Path | None:
    """``TORCHINDUCTOR_CACHE_DIR`` (PyTorch inductor's on-disk compile cache), or None."""
    raw = _text("TORCHINDUCTOR_CACHE_DIR")
    return Path(raw).expanduser() if raw else None


def set_inductor_cache_dir(path: Path) -> None:
    """Point PyTorch inductor's compile caches (FX graph and AOT autograd caches, generated
    kernels) at ``path`` for this process; inductor reads the variable at each cache access."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
