"""Model distribution for cluster workers, without Ray: the files ``ship_settings`` picks,
installed into an empty private home with downloads off, rebuild a Restorer whose output
equals the driver's bit for bit (upscale model by path, a sharpness-free registry face model,
its detector, and a model file given by path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from restorekit import models
from restorekit.cluster.models import install_files, ship_settings
from restorekit.faces import FaceOptions
from restorekit.registry.home import configure_home
from restorekit.restore import Restorer, RestoreSettings

from conftest import to_tensor
from faces_common import install_models
from model_factory import safetensors_bytes, tiny_state


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("random-face-models")


def _worker_home(tmp_path: Path, files: dict[str, Path | bytes], monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "worker-home"
    install_files(home, {k: v if isinstance(v, bytes) else Path(v).read_bytes() for k, v in files.items()})
    monkeypatch.setenv("RESTOREKIT_HOME", str(home))
    monkeypatch.setenv("RESTOREKIT_OFFLINE", "1")
    configure_home(None)
    models.clear_cache()
    return home


@pytest.mark.slow
def test_shipped_models_rebuild_the_same_restorer(isolated_home: Path, model_cache: Path, tmp_path: Path, astronaut: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESTOREKIT_OFFLINE", "1")
    install_models(isolated_home, model_cache, ["GFPGANv1.4", "detection_mobilenet0.25_Final"])
    model_file = tmp_path / "my-x2.safetensors"
    model_file.write_bytes(safetensors_bytes(tiny_state()))
    settings = RestoreSettings(
        model=str(model_file),
        precision="fp32",
        face_model="GFPGANv1.4",
        face_options=FaceOptions(detector="detection_mobilenet0.25_Final", parser="ellipse", confidence=0.3, strength=0.5),
    )
    pixels = to_tensor(astronaut[::4, ::4])
    expected = Restorer(settings).run(pixels).pixels

    files, shipped = ship_settings(settings)
    assert sorted(files) == [
        "facedetection/detection_mobilenet0.25_Final.safetensors",
        "facerestore_models/GFPGANv1.4.safetensors",
        f"upscale_models/{shipped.model}.safetensors",
    ]
    assert shipped.model.startswith("restorekit-shipped-") and shipped.download is False and shipped.allow_paths is False

    _worker_home(tmp_path, files, monkeypatch)  # nothing else: no driver home, no network
    assert torch.equal(Restorer(shipped).run(pixels).pixels, expected)


@pytest.mark.slow
def test_a_worker_without_a_shipped_file_says_which_model_is_missing(isolated_home: Path, model_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from restorekit.errors import ModelNotFoundError

    monkeypatch.setenv("RESTOREKIT_OFFLINE", "1")
    install_models(isolated_home, model_cache, ["GFPGANv1.4"])
    settings = RestoreSettings(model="resize", face_model="GFPGANv1.4", face_options=FaceOptions(aligned=True))
    files, shipped = ship_settings(settings)
    assert list(files) == ["facerestore_models/GFPGANv1.4.safetensors"]  # aligned: no detector or parser
    _worker_home(tmp_path, {}, monkeypatch)
    with pytest.raises(ModelNotFoundError, match=r"GFPGANv1\.4"):
        Restorer(shipped)


def test_the_head_resolves_auto_detector_and_mask_for_every_worker(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers get the head's resolved choices, so no chunk of a job uses another mask because
    a worker's home differs (the files themselves are stubbed: this checks the settings)."""
    import restorekit.cluster.models as cluster_models
    import restorekit.faces.pipeline as pipeline

    monkeypatch.setattr(cluster_models, "_model_reference", lambda name, purpose, files: name)
    shipped_names: list[str] = []
    monkeypatch.setattr(cluster_models, "_registry_file", lambda name, files: shipped_names.append(name))
    settings = RestoreSettings(model="resize", face_model="GFPGANv1.4", face_options=FaceOptions())
    _, shipped = ship_settings(settings)
    assert shipped.face_options.detector == "blazeface_full_range"  # nothing installed here
    assert shipped.face_options.parser == "face_oval" and shipped_names == ["blazeface_full_range", "face_mesh"]
    monkeypatch.setattr(pipeline, "parser_name", lambda name: "parsing_parsenet" if name == "auto" else name)
    _, shipped = ship_settings(settings)
    assert shipped.face_options.parser == "parsing_parsenet"
