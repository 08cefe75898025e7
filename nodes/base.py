"""The base of RestoreKit's nodes: validation against the node's own input spec.

ComfyUI skips its own range and list checks for inputs a node's ``VALIDATE_INPUTS`` takes,
so :meth:`RestoreKitNode.VALIDATE_INPUTS` takes them all (``**inputs``) and checks every
constant against ``INPUT_TYPES`` (numbers against min/max, choices against the list), then
the node's own cross-input rules (:meth:`RestoreKitNode.check_inputs`). The headless runner
calls the same method, so a workflow fails the same way in both, before anything runs.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .convert import CATEGORY


def _spec_options(spec: tuple[Any, ...]) -> dict[str, Any]:
    return dict(spec[1]) if len(spec) > 1 and isinstance(spec[1], dict) else {}


def check_value(name: str, spec: tuple[Any, ...], value: Any) -> str | None:
    """A message when ``value`` does not fit input ``name``'s spec, else None."""
    kind, options = spec[0], _spec_options(spec)
    if isinstance(kind, list | tuple):
        if value not in kind:
            shown = ", ".join(map(str, kind[:12])) + (", ..." if len(kind) > 12 else "")
            return f"{name}: {value!r} is not one of the choices ({shown})."
        return None
    if kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{name} must be a number, got {value!r}."
        if kind == "INT" and float(value) != int(value):
            return f"{name} must be a whole number, got {value!r}."
        low, high = options.get("min"), options.get("max")
        if low is not None and value < low:
            return f"{name} is {value:g}, below its minimum {low:g}."
        if high is not None and value > high:
            return f"{name} is {value:g}, above its maximum {high:g}."
        return None
    if kind == "STRING" and not isinstance(value, str):
        return f"{name} must be text, got {type(value).__name__}."
    if kind == "BOOLEAN" and not isinstance(value, bool):
        return f"{name} must be true or false, got {value!r}."
    return None


def input_specs(node_class: type) -> dict[str, tuple[Any, ...]]:
    """Every input of a node class (required, then optional) -> its spec tuple."""
    types = node_class.INPUT_TYPES()
    specs: dict[str, tuple[Any, ...]] = {}
    for section in ("required", "optional"):
        specs.update(types.get(section, {}))
    return specs


class RestoreKitNode:
    """Base of every RestoreKit node (classic ComfyUI node API)."""

    CATEGORY: ClassVar[str] = CATEGORY
    DESCRIPTION: ClassVar[str] = ""

    @classmethod
    def check_inputs(cls, **inputs: Any) -> str | None:
        """Rules across inputs (only the constant ones are given); a message or None."""
        return None

    @classmethod
    def VALIDATE_INPUTS(cls, **inputs: Any) -> bool | str:  # noqa: N802 - ComfyUI's name
        """True, or a message naming the bad input and what it accepts."""
        specs = input_specs(cls)
        for name, value in inputs.items():
            if name in specs and value is not None:
                message = check_value(name, specs[name], value)
                if message:
                    return message
        return cls.check_inputs(**inputs) or True
