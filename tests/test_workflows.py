"""Every example workflow through the headless runner (real weights from ../shared where
they exist, random ones with official shapes otherwise), plus the runner's graph checks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from nodes.runner import WorkflowError, load_workflow, run_workflow

from faces_common import astronaut_landmarks, install_models

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "example_workflows"
API = EXAMPLES / "api"
REAL = ("RealESRGAN_x4plus", "realesr-animevideov3")
RANDOM = ("realesr-general-x4v3", "realesr-general-wdn-x4v3", "RealESRNet_x4plus", "GFPGANv1.4", "detection_Resnet50_Final", "parsing_parsenet")
HEAD_CROP = (20, 120, 192)  # top, left, side of the astronaut crop the face workflow uses
HEAD_SIZE = 96


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("random-models")


@pytest.fixture
def home(isolated_home: Path, model_cache: Path, shared_weights: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An offline model home: the real Real-ESRGAN weights, random ones for the rest."""
    from restorekit.registry.download import target_path
    from restorekit.registry.schema import load_registry

    monkeypatch.setenv("RESTOREKIT_OFFLINE", "1")
    for name in REAL:
        target = target_path(load_registry().get(name))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(shared_weights / f"{name}.safetensors")
    install_models(isolated_home, model_cache, list(RANDOM))
    return isolated_home


@pytest.fixture
def inputs(tmp_path: Path, chelsea: np.ndarray, astronaut: np.ndarray, coffee: np.ndarray) -> Path:
    """Small versions of the example inputs (same names as example_workflows/input)."""
    folder = tmp_path / "input"
    folder.mkdir()
    Image.fromarray(chelsea[100:132, 180:228]).save(folder / "example.png")
    Image.fromarray(coffee[100:164, 150:246]).resize((48, 32), Image.Resampling.BICUBIC).save(folder / "coffee_downscaled.png")
    top, left, side = HEAD_CROP
    head = Image.fromarray(astronaut[top : top + side, left : left + side]).resize((HEAD_SIZE, HEAD_SIZE), Image.Resampling.LANCZOS)
    head.save(folder / "talking_head.png")
    return folder


def read(path: Path) -> torch.Tensor:
    """A saved PNG as (1, H, W, 3) float in [0, 1]."""
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).astype(np.float32) / 255.0)[None]


def saved_as_comfyui(image: torch.Tensor) -> torch.Tensor:
    """What SaveImage writes for an IMAGE: 8-bit levels, truncated."""
    return torch.from_numpy(np.clip(255.0 * image.numpy(), 0, 255).astype(np.uint8).astype(np.float32) / 255.0)


def run(name: str, inputs: Path, output: Path, *overrides: str):
    return run_workflow(API / f"{name}.json", overrides=list(overrides), input_dir=inputs, output_dir=output)


def load_input(inputs: Path, name: str) -> torch.Tensor:
    return read(inputs / name)


@pytest.mark.slow
def test_ui_files_are_generated_from_the_api_twins() -> None:
    result = subprocess.run([sys.executable, str(EXAMPLES / "make_ui.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for api_file in API.glob("*.json"):
        ui = json.loads((EXAMPLES / api_file.name).read_text())
        api = json.loads(api_file.read_text())
        assert {str(n["id"]): n["type"] for n in ui["nodes"]} == {k: v["class_type"] for k, v in api.items()}
        assert len(ui["links"]) == sum(isinstance(v, list) for node in api.values() for v in node["inputs"].values())


LOADED_LOAD_IMAGE_SIZE = (320, 314)
"""What ComfyUI's frontend grows a Load Image node to once its preview loads."""


def test_ui_layout_leaves_room_for_previews_and_titles() -> None:
    """No node covers another, even after a preview node grows to its loaded size, and every
    title fits its node (ComfyUI's frontend cuts titles at the node's width)."""
    for ui_file in sorted(EXAMPLES.glob("*.json")):
        nodes = json.loads(ui_file.read_text())["nodes"]
        boxes = []
        for node in nodes:
            width, height = node["size"]
            if node["type"] == "LoadImage":
                width, height = max(width, LOADED_LOAD_IMAGE_SIZE[0]), max(height, LOADED_LOAD_IMAGE_SIZE[1])
            assert width >= 9 * len(node["title"]) + 40, f"{ui_file.name}: title {node['title']!r} is cut off"
            boxes.append((node["title"], node["pos"][0], node["pos"][1], width, height))
        for index, (name_a, xa, ya, wa, ha) in enumerate(boxes):
            for name_b, xb, yb, wb, hb in boxes[index + 1 :]:
                overlap = xa < xb + wb and xb < xa + wa and ya < yb + hb and yb < ya + ha
                assert not overlap, f"{ui_file.name}: {name_a!r} covers {name_b!r}"


@pytest.mark.slow
def test_upscale_x4_workflow_equals_the_engine(home: Path, inputs: Path, tmp_path: Path) -> None:
    from restorekit.upscale import Upscaler

    result = run("01_upscale_x4", inputs, tmp_path / "out", "3.precision=\"fp32\"")
    (saved,) = result.saved
    assert saved == tmp_path / "out" / "RestoreKit" / "upscale_x4_00001_.png"
    image = load_input(inputs, "example.png")
    expected = Upscaler("RealESRGAN_x4plus", precision="fp32").upscale(image.permute(0, 3, 1, 2)).pixels
    assert read(saved).shape == (1, 128, 192, 3)
    assert torch.equal(read(saved), saved_as_comfyui(expected.permute(0, 2, 3, 1)))
    again = run("01_upscale_x4", inputs, tmp_path / "out", "2.model_name=\"realesr-animevideov3\"")
    assert again.saved[0].name == "upscale_x4_00002_.png"  # ComfyUI's counter goes on


@pytest.mark.slow
def test_face_workflow_restores_the_face_over_the_background_model(
    home: Path, inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The random-weight detector finds nothing, so the face is given where it is (the
    hand-placed astronaut landmarks, moved into the crop) to the real detection path; the
    random-weight parser would give a random mask, so the ellipse mask is used."""
    from restorekit.faces import FaceDetection, FaceOptions
    from restorekit.faces.detect import FaceDetector
    from restorekit.restore import Restorer, RestoreSettings

    top, left, side = HEAD_CROP
    landmarks = (astronaut_landmarks() - torch.tensor([left, top], dtype=torch.float64)) * (HEAD_SIZE / side)
    monkeypatch.setattr(FaceDetector, "__call__", lambda self, image, settings=None: [FaceDetection.from_landmarks(landmarks)])
    result = run("02_face_restore_digital_human", inputs, tmp_path / "out", "3.model_name=\"realesr-animevideov3\"", "4.mask_model=\"ellipse\"")
    (saved,) = result.saved
    out = read(saved)
    assert out.shape == (1, 192, 192, 3)
    restored, original = result.previews["6"], result.previews["7"]
    assert restored.shape == original.shape == (1, 512, 512, 3)
    image, face_mask, faces, crops = result.outputs["4"]
    assert face_mask.shape == (1, 192, 192)
    eyes = (landmarks[:2].mean(0) * 2).round().long()
    assert face_mask[0, eyes[1], eyes[0]] > 0.9 and face_mask[0, :8, :8].max() == 0
    settings = RestoreSettings(
        model="realesr-animevideov3", outscale=2.0, face_model="GFPGANv1.4", allow_paths=False,
        face_options=FaceOptions(strength=0.8, detector="detection_Resnet50_Final", parser="ellipse"),
    )  # fmt: skip
    expected = Restorer(settings).run(load_input(inputs, "talking_head.png").permute(0, 3, 1, 2)).pixels
    assert torch.allclose(image, expected.permute(0, 2, 3, 1), atol=1e-5)
    assert not torch.allclose(faces, crops)  # the face was changed


@pytest.mark.slow
def test_degrade_upscale_compare_workflow(home: Path, inputs: Path, tmp_path: Path) -> None:
    result = run("03_degrade_upscale_compare", inputs, tmp_path / "out", "3.model_name=\"realesr-animevideov3\"", "2.seed=5")
    by_name = {p.name: p for p in result.saved}
    assert set(by_name) == {"compare_00001_.png", "degraded_00001_.png"}
    assert read(by_name["degraded_00001_.png"]).shape == (1, 8, 12, 3)
    compare = read(by_name["compare_00001_.png"])
    assert compare.shape == (1, 32, 96, 3)
    assert torch.equal(compare[:, :, :48], saved_as_comfyui(load_input(inputs, "example.png")))
    difference = result.previews["9"]
    assert difference.shape == (1, 32, 48, 3) and 0 < difference.mean() < 1
    report = result.outputs["5"][1]
    assert report.startswith("image 0: PSNR") and 15 < float(report.split()[3]) < 40


@pytest.mark.slow
def test_strength_interpolation_workflow_equals_the_engine_blends(home: Path, inputs: Path, tmp_path: Path) -> None:
    from restorekit.interpolate import interpolate
    from restorekit.strength import resolve_with_strength
    from restorekit.upscale import Upscaler

    result = run("04_strength_interpolation", inputs, tmp_path / "out", *(f"{n}.precision=\"fp32\"" for n in (3, 6, 11)))
    by_name = {p.name: read(p) for p in result.saved}
    assert set(by_name) == {"denoise_0.2_00001_.png", "denoise_0.8_00001_.png", "sharpness_0.5_00001_.png"}
    image = load_input(inputs, "example.png").permute(0, 3, 1, 2)
    for strength in (0.2, 0.8):
        model = resolve_with_strength("realesr-general-x4v3", denoise=strength)
        expected = Upscaler(model, precision="fp32").upscale(image).pixels.permute(0, 2, 3, 1)
        assert torch.equal(by_name[f"denoise_{strength}_00001_.png"], saved_as_comfyui(expected))
    blend = interpolate(["RealESRNet_x4plus", "RealESRGAN_x4plus"], alpha=0.5).descriptor
    expected = Upscaler(blend, precision="fp32").upscale(image).pixels.permute(0, 2, 3, 1)
    assert (by_name["sharpness_0.5_00001_.png"] - saved_as_comfyui(expected)).abs().max() <= 1 / 255 + 1e-6


@pytest.mark.slow
def test_zero_shot_workflow_needs_no_weights(isolated_home: Path, inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from restorekit.zssr import ZSSRConfig, zssr_upscale

    monkeypatch.setenv("RESTOREKIT_OFFLINE", "1")  # an empty model home, offline
    result = run("05_zero_shot_upscale", inputs, tmp_path / "out", "2.iterations=20", "2.precision=\"fp32\"")
    (saved,) = result.saved
    image = load_input(inputs, "coffee_downscaled.png").permute(0, 3, 1, 2)
    expected = zssr_upscale(image, 2.0, ZSSRConfig(iterations=20, seed=0, precision="fp32")).permute(0, 2, 3, 1)
    assert torch.equal(read(saved), saved_as_comfyui(expected))
    assert result.previews["6"].shape == (1, 64, 192, 3)


def test_the_shipped_zero_shot_example_suits_the_default_kernel() -> None:
    """The zero-shot workflow's own input is a photo halved by an antialiased bicubic resize,
    the kind of image ZSSR's default kernel describes (restorekit zssr on it: +3.1 dB over
    bicubic against the full-size crop). The chelsea crop the other workflows load is refused
    by the kernel guard (sharper across scales than bicubic explains), so as the zero-shot
    example it returned plain bicubic."""
    from restorekit.imageio import read_image
    from restorekit.zssr.consistency import check_kernel

    def check(name: str) -> Any:
        return check_kernel(read_image(EXAMPLES / "input" / name).pixels, None)

    chosen = json.loads((API / "05_zero_shot_upscale.json").read_text())["1"]["inputs"]["image"]
    shipped = check(chosen)
    assert chosen == "coffee_downscaled.png" and not shipped.too_wide and not shipped.too_narrow
    assert check("example.png").too_wide


@pytest.mark.slow
def test_cli_runs_a_workflow(tmp_path: Path, inputs: Path, isolated_home: Path) -> None:
    command = [
        sys.executable, "-m", "restorekit", "run", str(API / "05_zero_shot_upscale.json"), "--input-dir", str(inputs),
        "-o", str(tmp_path / "out"), "--set", "2.iterations=10", "--set", "2.scale=1.5",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env={**__import__("os").environ, "RESTOREKIT_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert read(tmp_path / "out" / "RestoreKit" / "zero_shot_x2_00001_.png").shape == (1, 48, 72, 3)
    bad = subprocess.run([*command[:-2], "--set", "9.scale=2"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 1 and "the workflow has no node 9" in bad.stderr


def _graph(**nodes: dict) -> dict:
    return {key.lstrip("n"): value for key, value in nodes.items()}


LOAD = {"class_type": "LoadImage", "inputs": {"image": "example.png"}}


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        (_graph(n1={"class_type": "NoSuchNode", "inputs": {}}), "Node 1: unknown node type 'NoSuchNode'"),
        (_graph(n1=LOAD, n2={"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "x"}}), "linked to node 7, which is not in"),
        (_graph(n1=LOAD, n2={"class_type": "SaveImage", "inputs": {"images": ["1", 5], "filename_prefix": "x"}}), "output 5 of node 1, which has 2 output"),
        (_graph(n1=LOAD, n2={"class_type": "SaveImage", "inputs": {"images": ["1", 1], "filename_prefix": "x"}}), "takes IMAGE but node 1 output 1 is MASK"),
        (_graph(n1=LOAD, n2={"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}), "required input 'images' is missing"),
        (_graph(n1=LOAD, n2={"class_type": "ImageScaleBy", "inputs": {"image": ["1", 0], "upscale_method": "bicubic", "scale_by": 0}}), "scale_by is 0, below its minimum 0.01"),
        (_graph(n1=LOAD), "no output node"),
        (
            _graph(
                n1={"class_type": "ImageScaleBy", "inputs": {"image": ["2", 0], "upscale_method": "bicubic", "scale_by": 2}},
                n2={"class_type": "ImageScaleBy", "inputs": {"image": ["1", 0], "upscale_method": "bicubic", "scale_by": 2}},
                n3={"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
            ),
            "cycle",
        ),
        (_graph(n1={"class_type": "LoadImage", "inputs": {"image": "../secret.png"}}, n2={"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}), "outside"),
    ],
)
def test_runner_rejects_bad_graphs_before_running(graph: dict, message: str, inputs: Path, tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match=message):
        run_workflow(graph, input_dir=inputs, output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_runner_refuses_ui_format_and_core_nodes_behave_like_comfyui(inputs: Path, tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match="UI-format workflow"):
        load_workflow(EXAMPLES / "01_upscale_x4.json")
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., 0], rgba[:, 4:, 3] = 200, 255
    Image.fromarray(rgba).save(inputs / "rgba.png")
    shutil.copy(inputs / "example.png", inputs / "copy.png")
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "rgba.png"}},
        "2": {"class_type": "ImageScaleBy", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact", "scale_by": 1.5}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "sub/rgb_%batch_num%"}},
    }
    result = run_workflow(graph, input_dir=inputs, output_dir=tmp_path / "out")
    image, mask = result.outputs["1"]
    assert image.shape == (1, 6, 8, 3) and torch.equal(mask[0, :, :4], torch.ones(6, 4)) and not mask[0, :, 4:].any()
    assert result.previews["3"].shape == (1, 9, 12, 3)
    (saved,) = result.saved
    assert saved == tmp_path / "out" / "sub" / "rgb_0_00001_.png"
    assert json.loads(Image.open(saved).text["prompt"])["4"]["class_type"] == "SaveImage"
