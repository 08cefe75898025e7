"""The Gradio app end to end: served on loopback inside the test, called through
``gradio_client`` with real images, real weights (realesr-animevideov3 from ../shared, random
weights under the same name when absent) and random-weight face and imported models."""

from __future__ import annotations

import io
import itertools
import json
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

gr = pytest.importorskip("gradio", reason="the app tests need gradio (pip install 'restorekit[app]')")
gradio_client = pytest.importorskip("gradio_client", reason="the app tests need gradio_client")

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from PIL import Image  # noqa: E402

from conftest import SHARED_WEIGHTS  # noqa: E402
from faces_common import install_models, random_model_file  # noqa: E402

MODEL = "realesr-animevideov3"
MAX_PIXELS = 300_000
MAX_FILE_SIZE = 2_000_000
MAX_OUTPUT_PIXELS = 1_000_000
MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff", "webp": b"RIFF"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def save_png(array: np.ndarray, path: Path) -> Path:
    Image.fromarray(array).save(path)
    return path


def image_size(path: str | Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def format_of(path: str | Path) -> str:
    head = Path(path).read_bytes()[:12]
    for name, magic in MAGIC.items():
        if head.startswith(magic) and (name != "webp" or head[8:12] == b"WEBP"):
            return name
    raise AssertionError(f"{path} is not PNG, JPEG or WebP: {head!r}")


@dataclass
class Served:
    url: str
    client: Client
    app: object
    home: Path
    images: Path
    real_weights: bool


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Iterator[Served]:
    """The app on a free loopback port over an offline model home holding the x4 video model
    and random-weight face models (the detector finds no face at GFPGAN's confidence)."""
    from restorekit import models
    from restorekit.registry.download import target_path
    from restorekit.registry.home import ModelHome, configure_home
    from restorekit.registry.schema import load_registry

    home = tmp_path_factory.mktemp("app-home")
    cache = tmp_path_factory.mktemp("app-random-models")
    images = tmp_path_factory.mktemp("app-images")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESTOREKIT_HOME", str(home))
        mp.setenv("RESTOREKIT_OFFLINE", "1")
        mp.delenv("HF_HUB_OFFLINE", raising=False)
        configure_home(None)
        models.clear_cache()
        target = target_path(load_registry().get(MODEL), ModelHome(root=home.resolve()))
        target.parent.mkdir(parents=True, exist_ok=True)
        real = (SHARED_WEIGHTS / f"{MODEL}.safetensors").is_file()
        target.symlink_to(SHARED_WEIGHTS / f"{MODEL}.safetensors" if real else random_model_file(MODEL, cache))
        install_models(home, cache, ["GFPGANv1.4", "detection_mobilenet0.25_Final", "parsing_parsenet"])
        for index, (top, left) in enumerate([(100, 200), (0, 0), (300, 300), (200, 40), (64, 128), (400, 400), (250, 150), (30, 330)]):
            save_png(astronaut[top : top + 64, left : left + 64], images / f"crop{index}.png")

        from gradio_app.ui import AppConfig, launch

        config = AppConfig(port=free_port(), max_pixels=MAX_PIXELS, max_output_pixels=MAX_OUTPUT_PIXELS, max_file_size=MAX_FILE_SIZE)
        demo, url = launch(config, prevent_thread_lock=True, quiet=True)
        try:
            yield Served(url, Client(url, verbose=False), demo.restorekit, home, images, real)  # type: ignore[attr-defined]
        finally:
            demo.close()
            models.clear_cache()
            configure_home(None)


def engine_reference(path: Path, **settings) -> np.ndarray:
    """The engine's own result for ``path`` (what the app must return), as 8-bit RGB."""
    from restorekit.imageio import encode_image, read_image
    from restorekit.restore import Restorer, RestoreSettings

    out, _ = Restorer(RestoreSettings(allow_paths=False, **settings)).run_image(read_image(path))
    return pixels(io.BytesIO(encode_image(out, "png")))


def pixels(path: str | Path | io.BytesIO) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# --------------------------------------------------------------------------- restore


@pytest.mark.slow
@pytest.mark.parametrize(("out_format", "fmt"), [("PNG", "png"), ("JPEG", "jpeg"), ("WebP", "webp")])
def test_restore_endpoint_formats_and_sizes(served: Served, out_format: str, fmt: str) -> None:
    source = served.images / "crop0.png"
    (before, after), download, report = served.client.predict(
        handle_file(source), model=MODEL, out_format=out_format, quality=90, api_name="/restore"
    )
    assert format_of(download) == fmt and Path(download).suffix in (".png", ".jpg", ".webp")
    assert image_size(download) == (256, 256) and image_size(before) == (256, 256)
    assert format_of(before) == "png" and format_of(after) == fmt
    assert MODEL in report and "crop0_restored" in report
    if fmt == "png":  # lossless: exactly the engine's result
        assert np.array_equal(pixels(download), engine_reference(source, model=MODEL))


@pytest.mark.slow
def test_restore_sizes_resize_and_zero_shot(served: Served) -> None:
    source = handle_file(served.images / "crop1.png")
    _, download, _ = served.client.predict(source, model="resize", size_mode="size", width=100, api_name="/restore")
    assert image_size(download) == (100, 100)
    _, download, _ = served.client.predict(source, model=MODEL, outscale=2.5, tile="48", precision="fp32", api_name="/restore")
    assert image_size(download) == (160, 160)
    _, download, report = served.client.predict(source, model="zssr", zssr_iterations=4, api_name="/restore")
    assert image_size(download) == (128, 128) and "zero-shot" in report.lower()
    assert "held-out strip" in report  # 4 iterations learn too little: the guard's bicubic, with a note
    _, unguarded, report = served.client.predict(source, model="zssr", zssr_iterations=4, zssr_guards="off", api_name="/restore")
    assert "guards off" in report and "note:" not in report and not np.array_equal(np.asarray(Image.open(unguarded)), np.asarray(Image.open(download)))  # the network's own result


@pytest.mark.slow
def test_restore_with_face_options(served: Served) -> None:
    """Face restoration runs with the chosen model and detector; the random detector finds no
    face, which is a notice in the report, not an error."""
    _, download, report = served.client.predict(
        handle_file(served.images / "crop4.png"), model="resize", outscale=2, face_restore=True, face_model="GFPGANv1.4",
        face_strength=0.5, face_select="largest", face_detector="detection_mobilenet0.25_Final", api_name="/restore",
    )  # fmt: skip
    assert image_size(download) == (128, 128)
    assert "GFPGANv1.4" in report and "face" in report.lower()
    with pytest.raises(AppError, match=r"GFPGANv1\.3 is not downloaded and the network is switched off"):
        served.client.predict(handle_file(served.images / "crop4.png"), model="resize", face_restore=True, face_model="GFPGANv1.3", api_name="/restore")


@pytest.mark.slow
def test_restore_batch_gallery_zip_and_failures(served: Served, tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    files = [handle_file(served.images / "crop2.png"), handle_file(bad), handle_file(served.images / "crop3.png")]
    _slider, first, gallery, archive, report = served.client.predict(
        files, model=MODEL, out_format="JPEG", api_name="/restore_batch"
    )
    assert len(gallery) == 2 and all(image_size(item["image"]) == (256, 256) for item in gallery)
    assert image_size(first) == (256, 256) and format_of(first) == "jpeg"
    with zipfile.ZipFile(archive) as zf:
        names = sorted(zf.namelist())
        assert names == ["crop2_restored.jpg", "crop3_restored.jpg"]
        assert Image.open(io.BytesIO(zf.read(names[0]))).size == (256, 256)
    assert "broken.png" in report and "1 file(s) failed" in report


# --------------------------------------------------------------------------- serving


@pytest.mark.slow
def test_eight_concurrent_requests_run_one_at_a_time(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    from restorekit.restore import Restorer

    spans: list[tuple[float, float]] = []
    lock = threading.Lock()
    original = Restorer.run_image

    def recorded(self, image, **kwargs):
        start = time.perf_counter()
        try:
            return original(self, image, **kwargs)
        finally:
            with lock:
                spans.append((start, time.perf_counter()))

    monkeypatch.setattr(Restorer, "run_image", recorded)
    sources = [served.images / f"crop{i}.png" for i in range(8)]
    jobs = [
        Client(served.url, verbose=False).submit(handle_file(path), model=MODEL, outscale=2 + (i % 2), api_name="/restore")
        for i, path in enumerate(sources)
    ]
    results = [job.result(timeout=120) for job in jobs]
    monkeypatch.undo()  # the reference runs below are not the server's
    for i, (path, (_, download, _)) in enumerate(zip(sources, results, strict=True)):
        scale = 2 + (i % 2)
        assert image_size(download) == (64 * scale, 64 * scale)
        diff = np.abs(pixels(download).astype(int) - engine_reference(path, model=MODEL, outscale=scale))
        assert diff.max() <= 0, (i, diff.max(), (diff > 0).mean())
    assert len(spans) == 8
    spans.sort()
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(spans)), spans


@pytest.mark.slow
def test_bad_inputs_are_clear_errors_and_the_app_keeps_serving(served: Served, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(AppError, match=r"corrupt\.jpg is not a readable image"):
        served.client.predict(handle_file(corrupt), model="resize", api_name="/restore")

    huge = save_png(np.zeros((600, 600, 3), np.uint8), tmp_path / "huge.png")  # 360,000 px, a tiny file
    with pytest.raises(AppError, match=r"huge\.png is 600x600 = 360,000 pixels, over this app's limit of 300,000"):
        served.client.predict(handle_file(huge), model="resize", api_name="/restore")

    heavy = tmp_path / "heavy.png"  # over max_file_size: rejected at upload
    heavy.write_bytes(pixels(served.images / "crop0.png").tobytes() * 200)
    with pytest.raises(ValueError, match=r"exceeds the maximum file size of 2000000 bytes"):
        served.client.predict(handle_file(heavy), model="resize", api_name="/restore")  # the client checks first
    import httpx

    response = httpx.post(served.url + "gradio_api/upload", files={"files": ("heavy.png", heavy.read_bytes())})
    assert response.status_code == 413 and "maximum allowed size of 2000000 bytes" in response.text

    with pytest.raises(AppError, match=r"The result for crop0\.png would be 1280x1280 = 1,638,400 pixels, over this app's output limit of 1,000,000"):
        served.client.predict(handle_file(served.images / "crop0.png"), model=MODEL, outscale=20, api_name="/restore")

    with pytest.raises(AppError, match="is a path; only model names from the list are accepted"):  # no files of the server's
        served.client.predict(handle_file(served.images / "crop0.png"), model=str(served.home / "upscale_models" / f"{MODEL}.safetensors"), api_name="/restore")

    with pytest.raises(AppError, match="not a registry model"):
        served.client.predict(handle_file(served.images / "crop0.png"), model="no-such-model", api_name="/restore")

    _, download, _ = served.client.predict(handle_file(served.images / "crop0.png"), model="resize", outscale=2, api_name="/restore")
    assert image_size(download) == (128, 128)


def test_cancel_stops_the_engine_job(served: Served) -> None:
    """The Cancel button's flag reaches the engine's cancel check, and shows as gr.Error."""
    from gradio_app import jobs
    from gradio_app.ui import user_errors

    with pytest.raises(gr.Error, match="Cancelled"), user_errors():
        jobs.restore_files([served.images / "crop0.png"], jobs.RestoreOptions(model=MODEL), cancel=lambda: True)


# --------------------------------------------------------------------------- degrade


def test_degrade_endpoint_previews_parameters_and_kernel(served: Served) -> None:
    source = handle_file(served.images / "crop5.png")
    hr, lr, params, kernel, download = served.client.predict(
        source, preset="light", seed=7, overrides="jpeg_range2=40,60; final_jpeg_prob=1", scale=2, api_name="/degrade"
    )
    assert image_size(hr) == (64, 64) and image_size(lr) == (64, 64)  # the LR shown enlarged, next to the HR
    assert image_size(download) == (32, 32) and format_of(download) == "png"
    assert np.array_equal(pixels(lr)[::2, ::2], pixels(download))  # nearest: the LR's own pixels
    record = json.loads(params)
    assert record["scale"] == 2.0 and 40 <= record["final"]["jpeg_quality"] <= 60
    assert image_size(kernel)[0] > 8
    _, lr_again, params_again, _, _ = served.client.predict(source, preset="light", seed=7, overrides="jpeg_range2=40,60; final_jpeg_prob=1", scale=2, api_name="/degrade")
    assert np.array_equal(pixels(lr), pixels(lr_again)) and params == params_again  # the seed decides
    with pytest.raises(AppError, match="no_such_field"):
        served.client.predict(source, preset="light", seed=7, overrides="no_such_field=1", scale=2, api_name="/degrade")


# --------------------------------------------------------------------------- models


@pytest.mark.slow
def test_models_download_verify_and_import(served: Served, tmp_path: Path) -> None:
    from restorekit.architectures import random_state_dict
    from restorekit.registry.convert import save_state_dict

    table = served.client.predict(api_name="/models")
    rows = {row[0]: dict(zip(table["headers"], row, strict=True)) for row in table["data"]}
    assert rows[MODEL]["downloaded"] == "yes" and rows["RealESRGAN_x4plus"]["downloaded"] == "no"
    assert rows[MODEL]["licence"] == "BSD-3-Clause" and rows[MODEL]["size"].endswith("MB")

    _, message, *_ = served.client.predict(MODEL, api_name="/download_model")
    assert "already installed" in message
    with pytest.raises(AppError, match=r"RealESRGAN_x2plus is not downloaded and the network is switched off"):
        served.client.predict("RealESRGAN_x2plus", api_name="/download_model")

    table, message = served.client.predict(MODEL, api_name="/verify_model")
    assert message.startswith(f"{MODEL}: unrecorded")  # linked in by hand, not downloaded

    own = tmp_path / "tiny_x2.safetensors"
    save_state_dict(random_state_dict("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2, "upscale": 2}, seed=1), own)
    table, message, *_ = served.client.predict(handle_file(own), "", api_name="/import_model")
    assert "tiny_x2" in message and any(row[0] == "tiny_x2" for row in table["data"])
    table, message = served.client.predict("", api_name="/verify_model")
    _, download, report = served.client.predict(handle_file(served.images / "crop6.png"), model="tiny_x2", api_name="/restore")
    assert image_size(download) == (128, 128) and "tiny_x2" in report


def test_zero_shot_is_the_default_without_pretrained_models(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gradio_app import jobs
    from gradio_app.ui import RestoreKitApp

    monkeypatch.setenv("RESTOREKIT_OFFLINE", "1")
    choices = jobs.upscale_choices()
    assert not jobs.pretrained_available(choices) and jobs.default_upscale_choice(choices) == "zssr"
    assert "Zero-shot SR" in RestoreKitApp.notice_text(False)
    with RestoreKitApp().build() as demo:
        pass
    dropdown = next(b for b in demo.blocks.values() if isinstance(b, gr.Dropdown) and b.label == "Upscaler")
    assert dropdown.value == "zssr"


# --------------------------------------------------------------------------- CLI


def test_cli_app_options(capsys: pytest.CaptureFixture[str]) -> None:
    from restorekit.cli import build_parser
    from restorekit.cli.app import load_app_package, parse_auth
    from restorekit.errors import InvalidParameterError

    args = build_parser().parse_args(["app", "--port", "7999", "--share", "--auth", "ann:pw:x"])
    assert args.port == 7999 and args.share and parse_auth(args.auth) == ("ann", "pw:x")
    with pytest.raises(InvalidParameterError, match="USER:PASS"):
        parse_auth("nobody")
    assert hasattr(load_app_package(), "launch")


def test_share_without_auth_warns(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """``--share`` without ``--auth`` warns before serving (Gradio's own launch is stubbed:
    a share link needs the internet)."""
    from restorekit.cli import main

    launches: list[dict] = []

    def fake_launch(self, **kwargs):
        launches.append(kwargs)
        return None, "http://127.0.0.1:1/", None

    monkeypatch.setattr(gr.Blocks, "launch", fake_launch)
    monkeypatch.setattr(gr.Blocks, "block_thread", lambda self: None)
    monkeypatch.setattr(gr.Blocks, "close", lambda self, verbose=True: None)
    with caplog.at_level("WARNING"):
        assert main(["app", "--share", "--port", "1"]) == 0
    assert "--share without --auth" in caplog.text and launches[-1]["share"] and launches[-1]["auth"] is None
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert main(["app", "--share", "--auth", "ann:pw", "--max-file-size", "3mb"]) == 0
    assert "--share without --auth" not in caplog.text
    assert launches[-1]["auth"] == ("ann", "pw") and launches[-1]["max_file_size"] == "3mb"
    assert launches[-1]["server_name"] == "127.0.0.1" and launches[-1]["ssr_mode"] is False


@pytest.mark.slow
def test_the_command_serves_the_page(tmp_path: Path) -> None:
    """``restorekit app`` from the checkout (the app package found beside the engine)."""
    import os
    import subprocess
    import sys

    import httpx

    from conftest import REPO_ROOT

    port = free_port()
    env = {**os.environ, "RESTOREKIT_HOME": str(tmp_path / "home"), "RESTOREKIT_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "restorekit", "app", "--port", str(port), "-q"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "RestoreKit app on" not in line and time.monotonic() < deadline and process.poll() is None:
            line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line, line
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert page.status_code == 200 and "<html" in page.text
        assert httpx.get(f"http://127.0.0.1:{port}/config", timeout=10).json()["title"] == "RestoreKit"
        info = httpx.get(f"http://127.0.0.1:{port}/gradio_api/info", timeout=10).json()
        assert {"/restore", "/restore_batch", "/degrade", "/models", "/download_model", "/verify_model", "/import_model"} <= set(info["named_endpoints"])
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.mark.parametrize(
    ("model", "strength", "expected"),
    [
        ("RealESRGAN_x4plus", 1.0, (None, None)),  # the model's own end: no blend, no partner
        ("RealESRGAN_x4plus", 0.3, (None, 0.3)),
        ("RealESRNet_x4plus", 0.0, (None, None)),
        ("RealESRNet_x4plus", 1.0, (None, 1.0)),
        ("realesr-general-x4v3", 0.5, (0.5, None)),
        ("realesr-animevideov3", 0.5, (None, None)),  # no pair: the slider is hidden and ignored
    ],
)
def test_strength_slider_maps_onto_the_registry_pair(model: str, strength: float, expected: tuple) -> None:
    from gradio_app import jobs

    settings = jobs.restore_settings(jobs.RestoreOptions(model=model, strength=strength))
    assert (settings.denoise, settings.sharpness) == expected
    assert settings.allow_paths is False and settings.download is True


def test_on_demand_download_with_progress(isolated_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, astronaut: np.ndarray) -> None:
    """A registry model that is not installed downloads (verified, from a loopback Hub) when
    first used, with its progress going to the page; then it is listed as downloaded."""
    import gradio_app.ui as ui

    from hub_server import HubServer
    from model_factory import pth_bytes, sha256, tiny_entry, tiny_state, write_registry

    data = pth_bytes(tiny_state(seed=2))
    entry = tiny_entry([{"kind": "hf", "repo_id": "tester/tiny", "filename": "tiny.pth", "size": len(data), "sha256": sha256(data), "format": "pth"}])
    monkeypatch.setenv("RESTOREKIT_REGISTRY", str(write_registry(tmp_path / "registry.yaml", {"tiny": {**entry, "default": True}})))
    reports: list[tuple[int, int, str]] = []
    original = ui.engine_progress

    def recorded(progress):
        forward = original(progress)

        def report(done: int, total: int, message: str) -> None:
            reports.append((done, total, message))
            forward(done, total, message)

        return report

    monkeypatch.setattr(ui, "engine_progress", recorded)
    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        hub.add_hub_file("tester/tiny", "tiny.pth", data)
        demo, url = ui.launch(ui.AppConfig(port=free_port()), prevent_thread_lock=True, quiet=True)
        try:
            client = Client(url, verbose=False)
            assert served_choice(demo, "tiny").endswith("downloads on first use)")
            image = save_png(astronaut[:48, :40], tmp_path / "small.png")
            _, download, report = client.predict(handle_file(image), model="tiny", api_name="/restore")
            assert image_size(download) == (80, 96) and "tiny" in report
            table, message = client.predict("tiny", api_name="/verify_model")
            assert message.startswith("tiny: ok")
            assert [row[5:] for row in table["data"] if row[0] == "tiny"] == [["yes", "ok"]]
        finally:
            demo.close()
    downloads = [r for r in reports if r[1] == len(data)]
    assert downloads and downloads[-1][0] == len(data)  # byte progress up to the whole file
    after = reports[reports.index(downloads[-1]) + 1 :]  # then verification and the image, to the end
    assert any("small.png" in message for _, _, message in after) and after[-1][0] == after[-1][1]


def served_choice(demo, value: str) -> str:
    """The label of ``value`` in the Upscaler dropdown as built."""
    dropdown = next(b for b in demo.blocks.values() if isinstance(b, gr.Dropdown) and b.label == "Upscaler")
    return next(label for label, choice in dropdown.choices if choice == value)
