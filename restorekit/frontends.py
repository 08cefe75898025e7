"""The one place the command line reaches the other front ends (the node pack and the app).

The engine never imports a front end. The CLI (``restorekit/cli``) is itself a front end that
happens to ship inside the engine's package, and two of its commands drive the others:
``restorekit run`` (the node pack's headless workflow runner) and ``restorekit app`` (the
Gradio app). Those edges are declared here, in :data:`FRONT_ENDS`, and nowhere else; the
import guard (``tests/test_foundation.py``) reads every engine module's AST and allows a
front-end package name only in this module.

A front end is found under its wheel name (``restorekit_nodes``, ``restorekit_gradio``; the
wheel ships the folders under those names so they never clash with another top-level
``nodes`` module, ComfyUI has one) or, in a checkout, loaded from its folder beside the
engine under that same wheel name.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from .errors import InvalidParameterError

CHECKOUT_ROOT = Path(__file__).resolve().parent.parent
"""The folder holding ``restorekit/`` (a checkout, a ComfyUI pack, or site-packages)."""


@dataclass(frozen=True)
class FrontEnd:
    """A front-end package shipped beside the engine.

    Attributes:
        installed: its top-level name in the wheel (a checkout's folder is loaded under it).
        folder: its folder in a checkout.
        also_importable_as: other top-level names that already hold it (the checkout folder's
            own name, where that name is safe: ComfyUI owns a top-level ``nodes``).
        requires: third-party packages it needs, with the pip command that installs them.
    """

    installed: str
    folder: str
    also_importable_as: tuple[str, ...] = ()
    requires: tuple[tuple[str, str], ...] = ()


FRONT_ENDS: dict[str, FrontEnd] = {
    "nodes": FrontEnd("restorekit_nodes", "nodes"),
    "app": FrontEnd(
        "restorekit_gradio",
        "gradio_app",
        also_importable_as=("gradio_app",),
        requires=(("gradio", "pip install 'restorekit[app]'"),),
    ),
}
"""Every front end the CLI may load, by key."""


def _check_requirements(key: str, front_end: FrontEnd) -> None:
    for package, install in front_end.requires:
        if importlib.util.find_spec(package) is None:
            raise InvalidParameterError(f"The {key} needs {package}: {install} (or pip install {package}).")


def _load_from_checkout(front_end: FrontEnd) -> None:
    package_dir = CHECKOUT_ROOT / front_end.folder
    if not (package_dir / "__init__.py").is_file():
        raise InvalidParameterError(
            f"The {front_end.folder} package is missing (neither {front_end.installed} nor ./{front_end.folder}); "
            "reinstall restorekit."
        )
    spec = importlib.util.spec_from_file_location(
        front_end.installed, package_dir / "__init__.py", submodule_search_locations=[str(package_dir)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[front_end.installed] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[front_end.installed]
        raise


def load_front_end(key: str, submodule: str) -> ModuleType:
    """``<front end>.<submodule>`` of the front end ``key`` in :data:`FRONT_ENDS`.

    Raises:
        InvalidParameterError: an unknown key, a missing third-party requirement (the message
            names the pip command), or a front end that is neither installed nor in the checkout.
    """
    if key not in FRONT_ENDS:
        raise InvalidParameterError(f"Unknown front end {key!r}; known: {', '.join(FRONT_ENDS)}.")
    front_end = FRONT_ENDS[key]
    _check_requirements(key, front_end)
    for package in (front_end.installed, *front_end.also_importable_as):
        name = f"{package}.{submodule}"
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name not in (package, name):
                raise
    if front_end.installed not in sys.modules:
        _load_from_checkout(front_end)
    return importlib.import_module(f"{front_end.installed}.{submodule}")
