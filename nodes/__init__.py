"""RestoreKit's ComfyUI nodes (classic ``NODE_CLASS_MAPPINGS`` API): thin adapters onto the
engine. Importable without ComfyUI, so tests and the headless runner can use them."""

from __future__ import annotations

from ._engine import ensure_engine

ensure_engine()

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
