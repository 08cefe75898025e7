"""Caches of blends and their parents, and the parents' file identities.

Blends are cached by (the parents' file identities, the weights), parents' weights and probe
outputs by identity, so that a strength slider does not recompute.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import (
    ModelIncompatibleError,
)
from ..files import sha256_file

_RESULT_CACHE_SIZE = 4
_PARENT_CACHE_SIZE = 4
_PROBE_CACHE_SIZE = 16


# --------------------------------------------------------------------------- small LRU


class _LRU:
    """A small thread-safe LRU cache; values are computed by the caller, outside the lock."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, key: Hashable) -> Any:
        """The value under ``key`` (now the most recently used), or None."""
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def store(self, key: Hashable, value: Any) -> Any:
        """Keep ``value`` under ``key`` unless another thread stored one first; return the kept one."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            return value

    def forget(self) -> None:
        with self._lock:
            self._items.clear()


_results = _LRU(_RESULT_CACHE_SIZE)
_parent_states = _LRU(_PARENT_CACHE_SIZE)
_parent_probes = _LRU(_PROBE_CACHE_SIZE)


def clear_cache() -> None:
    """Forget cached blends, parents' weights and parents' probe outputs."""
    for cache in (_results, _parent_states, _parent_probes):
        cache.forget()
    _sha256_of.cache_clear()


# --------------------------------------------------------------------------- parents


FileIdentity = tuple[str, int, int]
"""(resolved path, mtime in ns, size): changes whenever the file is replaced or edited."""


def _identity(path: Path) -> FileIdentity:
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _sha256_of(identity: FileIdentity) -> str:
    path = Path(identity[0])
    if not path.is_file() or _identity(path) != identity:
        raise ModelIncompatibleError(
            f"{path.name} was changed or removed after it was blended, so the blend's record of its "
            "parents would be wrong; blend again."
        )
    digest = sha256_file(path)
    if _identity(path) != identity:
        raise ModelIncompatibleError(f"{path.name} changed while it was being hashed; blend again.")
    return digest


@dataclass(frozen=True)
class ParentModel:
    """One model that went into a blend.

    ``path`` and ``identity`` are None for in-memory parents (:func:`blend_descriptors`).
    """

    name: str
    path: Path | None = None
    identity: FileIdentity | None = None

    @property
    def sha256(self) -> str | None:
        """The SHA-256 of the parent's safetensors file (computed once, on first use)."""
        return _sha256_of(self.identity) if self.identity is not None else None
