"""Views of a network with some of its layers run another way, its weights shared.

The engine never changes a loaded network (ComfyUI may share it with other nodes); where a
faster execution form of a layer exists (:mod:`restorekit.faces.vqgan`) or a compiler needs a
layer in another form (:func:`restorekit.compiled.with_aten_group_norms`), it runs a view:
a structural copy of the module tree whose parameters and buffers are the original tensors.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import nn

Replacement = Callable[[nn.Module], nn.Module | None]
"""Given a submodule, the module to run in its place, or None to keep it (and look inside)."""


def replace_modules(module: nn.Module, replacement: Replacement) -> nn.Module:
    """A view of ``module`` with each submodule for which ``replacement`` returns a module run
    as that module (its children are not visited); ``module`` itself when nothing is replaced.

    Only the modules on the way to a replaced one are copied, shallowly (a copy shares its
    parameter and buffer dicts with the original); subtrees without a replacement are the
    original modules. The original tree is not changed.
    """
    new = replacement(module)
    if new is not None:
        return new
    children = {name: None if child is None else replace_modules(child, replacement) for name, child in module._modules.items()}
    if all(children[name] is child for name, child in module._modules.items()):
        return module
    clone = copy.copy(module)
    clone.__dict__["_modules"] = children
    return clone
