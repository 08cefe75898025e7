"""Make sure ``import restorekit`` gives this pack's engine, loaded once.

ComfyUI imports a pack from ``custom_nodes/<folder>/__init__.py`` without putting the folder
on ``sys.path``. If the engine is not imported yet, it is loaded from the pack's own
``restorekit/`` folder and registered as the top-level module ``restorekit``, so the nodes,
the CLI and tests all share one copy (and a pip-installed copy never shadows the pack's).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parent.parent


def ensure_engine() -> None:
    """Import the engine as ``restorekit`` from this pack unless it is already imported."""
    if "restorekit" in sys.modules:
        return
    package_dir = PACK_ROOT / "restorekit"
    if not (package_dir / "__init__.py").is_file():
        import restorekit  # noqa: F401  (installed as a wheel: restorekit_nodes sits beside it)

        return
    spec = importlib.util.spec_from_file_location(
        "restorekit", package_dir / "__init__.py", submodule_search_locations=[str(package_dir)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["restorekit"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["restorekit"]
        raise
