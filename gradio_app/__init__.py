"""RestoreKit's Gradio app: a thin adapter onto the engine (``restorekit app``).

In a checkout this package is ``gradio_app``; in the wheel it ships as
``restorekit_gradio``. Its modules import each other relatively, so both names work.
:mod:`.jobs` holds the Gradio-free logic (form values -> engine -> files), :mod:`.ui` the
Blocks, the queue and the launch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AppConfig", "build_app", "launch"]


def __getattr__(name: str) -> Any:  # Gradio is imported only when the app is used
    if name in __all__:
        from . import ui

        return getattr(ui, name)
    raise AttributeError(name)
