"""Batched face restoration: the fast GFPGAN forward against spandrel's, the [-1, 1]
calling convention, batching, determinism, precision, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from restorekit.errors import CancelledError, ModelIncompatibleError
from restorekit.faces.align import alignment_matrix, crop_face
from restorekit.faces.gfpgan import FastGFPGAN
from restorekit.faces.restore import FaceRestorer, load_face_model

from conftest import psnr
from faces_common import (
    astronaut_landmarks,
    image_tensor,
    random_network_state,
    small_gfpgan_descriptor,
)


@pytest.fixture(scope="module")
def descriptor():
    return small_gfpgan_descriptor(seed=7)


@pytest.fixture(scope="module")
def faces(astronaut: np.ndarray) -> torch.Tensor:
    """Three 64x64 aligned faces: the astronaut, mirrored, and darker."""
    face = crop_face(image_tensor(astronaut), alignment_matrix(astronaut_landmarks(), size=64), size=64)
    return torch.cat([face, face.flip(-1), face * 0.6])


@pytest.mark.slow
def test_fast_forward_equals_spandrel_gfpgan(descriptor, faces: torch.Tensor) -> None:
    """Modulation on the activations computes what the official grouped convolution does
    (stored noise: spandrel's ``randomize_noise=False``)."""
    model = descriptor.model
    x = faces * 2 - 1
    with torch.inference_mode():
        reference = model(x, return_rgb=False, randomize_noise=False)[0]
        ours = FastGFPGAN(model)(x)
    assert float(reference.std()) > 0.05  # a meaningful, non-vanishing output
    assert torch.allclose(ours, reference, atol=2e-5, rtol=0)


@pytest.mark.slow
def test_batch_equals_one_by_one_and_runs_repeat_exactly(descriptor, faces: torch.Tensor) -> None:
    restorer = FaceRestorer(descriptor, precision="fp32", batch_size=3)
    together = restorer(faces)
    single = FaceRestorer(descriptor, precision="fp32", batch_size=1)
    one_by_one = torch.cat([single(faces[i : i + 1]) for i in range(3)])
    assert together.shape == faces.shape and together.dtype == torch.float32
    assert float((together - one_by_one).abs().max()) < 1e-5
    assert torch.equal(restorer(faces), together)  # deterministic: no fresh noise


@pytest.mark.slow
def test_auto_precision_is_bf16_here_and_close_to_fp32(descriptor, faces: torch.Tensor) -> None:
    from restorekit.device import cpu_has_fast_bf16

    auto = FaceRestorer(descriptor)
    if cpu_has_fast_bf16():
        assert auto.plan.dtype == torch.bfloat16 and auto.plan.channels_last
    exact = FaceRestorer(descriptor, precision="fp32")
    assert psnr(auto(faces), exact(faces)) > 35.0


@pytest.mark.slow
def test_faces_go_in_as_minus_one_to_one(descriptor, faces: torch.Tensor) -> None:
    """The descriptor's call clamps to [0, 1] (facerestore_cf's white faces); the runners
    give the network [-1, 1] and map its [-1, 1] output back."""
    from restorekit.faces.restore import FACE_ARCHITECTURES

    seen: list[torch.Tensor] = []

    class Identity(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
            seen.append(x.detach().float().clone())
            return x, None

    restorer = FaceRestorer(descriptor, precision="fp32", batch_size=3)
    restorer._run = FACE_ARCHITECTURES["RestoreFormer"].runner(Identity(), {})
    out = restorer(faces)
    assert float(seen[0].min()) < -0.5 and float(seen[0].max()) <= 1.0
    assert torch.allclose(seen[0], faces * 2 - 1, atol=1e-6)
    assert torch.allclose(out, faces, atol=1e-6)


@pytest.mark.slow
def test_restoreformer_runner_matches_spandrels_own_call(faces: torch.Tensor) -> None:
    """spandrel's RestoreFormer call normalises [0, 1] -> [-1, 1] itself; ours, going to
    ``.model`` directly, gives the same faces."""
    import spandrel

    from restorekit.device import plan_execution
    from restorekit.faces.restore import FACE_ARCHITECTURES

    descriptor = spandrel.ModelLoader().load_from_state_dict(random_network_state("RestoreFormer", {}, seed=1)).eval()
    x = faces[:1]
    with torch.inference_mode():
        expected = descriptor(x)
        run = FACE_ARCHITECTURES["RestoreFormer"].runner(descriptor.model, {})
        ours = (run(plan_execution("cpu", "fp32").prepare_input(x * 2 - 1)).clamp(-1, 1) + 1) / 2
    assert torch.allclose(ours, expected.clamp(0, 1), atol=1e-5)


@pytest.mark.slow
def test_progress_cancel_and_out_of_memory_fallback(descriptor, faces: torch.Tensor) -> None:
    restorer = FaceRestorer(descriptor, precision="fp32", batch_size=2)
    calls: list[tuple[int, int]] = []
    expected = restorer(faces, progress=lambda d, t, m: calls.append((d, t)))
    assert calls == [(0, 3), (2, 3), (3, 3)]
    with pytest.raises(CancelledError):
        restorer(faces, cancel=lambda: True)

    real = restorer._run
    sizes: list[int] = []

    def tight_memory(x: torch.Tensor) -> torch.Tensor:
        sizes.append(x.shape[0])
        if x.shape[0] > 1:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")
        return real(x)

    restorer._run = tight_memory
    assert float((restorer(faces) - expected).abs().max()) < 1e-5
    assert sizes == [2, 1, 1, 1]


def test_upscale_model_as_face_model_is_refused(isolated_home: Path) -> None:
    with pytest.raises(ModelIncompatibleError, match="upscale model"):
        FaceRestorer("RealESRGAN_x4plus")
    import spandrel

    from model_factory import tiny_state

    upscaler = spandrel.ModelLoader().load_from_state_dict(tiny_state())
    with pytest.raises(ModelIncompatibleError, match="upscale model"):
        load_face_model(upscaler)


def test_codeformer_needs_extra_arches_and_names_its_licence(tmp_path: Path, isolated_home: Path) -> None:
    from restorekit.faces.restore import extra_arches_available

    if extra_arches_available():
        pytest.skip("spandrel_extra_arches is installed here; the message is for when it is not")
    state = {
        "position_emb": torch.zeros(256, 512),
        "idx_pred_layer.1.weight": torch.zeros(1024, 512),
        "quantize.embedding.weight": torch.zeros(1024, 256),
        "ft_layers.0.self_attn.in_proj_weight": torch.zeros(1536, 512),
        "encoder.blocks.0.weight": torch.zeros(64, 3, 3, 3),
    }
    path = tmp_path / "codeformer.safetensors"
    save_file(state, str(path))
    with pytest.raises(ModelIncompatibleError) as error:
        FaceRestorer(str(path))
    assert "spandrel_extra_arches" in str(error.value) and "S-Lab" in str(error.value) and "non-commercial" in str(error.value)


def test_codeformer_runner_passes_the_fidelity_weight_under_autocast() -> None:
    from restorekit.faces.restore import FACE_ARCHITECTURES

    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x, weight=0.5):
            seen.append((weight, torch.is_autocast_enabled(x.device.type)))
            return (x * 1.0,)

    run = FACE_ARCHITECTURES["CodeFormer"].runner(Recorder(), {"fidelity": 0.3})
    run(torch.zeros(1, 3, 8, 8))
    run(torch.zeros(1, 3, 8, 8, dtype=torch.bfloat16))
    assert seen == [(0.3, False), (0.3, True)]


@pytest.mark.slow
def test_codeformer_registry_entry_loads_by_name_and_runs_in_engine_precision(tmp_path: Path, isolated_home: Path) -> None:
    """The registry's CodeFormer: random weights with the official keys and shapes (no real
    weights can be fetched here) pass the download-time architecture check (spandrel
    detects CodeFormer x1), load by name through spandrel_extra_arches, carry the licence
    notice, and run a face in the engine's precision (bf16 here) with fidelity w."""
    pytest.importorskip("spandrel_extra_arches", reason="CodeFormer needs the optional spandrel_extra_arches (the codeformer extra)")
    from restorekit.architectures import random_state_dict
    from restorekit.registry.convert import save_state_dict
    from restorekit.registry.download import check_architecture, target_path
    from restorekit.registry.home import ModelHome
    from restorekit.registry.schema import load_registry

    entry = load_registry().get("CodeFormer")
    assert entry.purpose == "face_restore" and entry.license == "S-Lab-1.0"
    assert entry.sources[0].sha256 == "1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7"
    state = random_state_dict("CodeFormer", dict(entry.params), seed=0)
    check_architecture(entry, state)
    target = target_path(entry, ModelHome(root=isolated_home.resolve()))
    target.parent.mkdir(parents=True, exist_ok=True)
    save_state_dict(state, target, {"restorekit.name": "CodeFormer", "restorekit.architecture": "CodeFormer"})
    restorer = FaceRestorer("CodeFormer", fidelity=0.7, download=False)
    assert restorer.architecture == "CodeFormer" and "non-commercial" in str(restorer.licence_notice)
    face = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    out = restorer(face)
    assert out.shape == face.shape and bool(torch.isfinite(out).all()) and float(out.std()) > 0


def test_compiled_face_runner_announces_its_batches_and_frees_its_model(
    descriptor, faces: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under compile ``auto`` (the default) the restorer runs through the process's compiled
    forward of the network, tells it how many batches of each shape a call runs, and gives the
    eager result while ``auto`` keeps a shape eager; ``off`` has no compiled forward. A later
    restorer of the same model (the app builds one per job) shares that forward, so shapes
    compiled for one job stay compiled for the next; the forward does not keep the model alive
    after its descriptor is gone."""
    from restorekit.compiled import CompiledForward

    eager = FaceRestorer(descriptor, precision="fp32", batch_size=2, compile="off")
    assert eager.compiled is None
    restorer = FaceRestorer(descriptor, precision="fp32", batch_size=2, compile="auto")
    forward = restorer.compiled
    assert isinstance(forward, CompiledForward) and forward.mode == "auto" and forward.label == "GFPGAN"
    assert FaceRestorer(descriptor, precision="fp32", batch_size=2).compiled.mode == "auto"  # the default
    announced: dict[tuple[int, ...], int] = {}
    monkeypatch.setattr(forward, "expect", lambda shape, calls: announced.__setitem__(shape, announced.get(shape, 0) + calls))
    monkeypatch.setattr(forward, "_should_compile", lambda shape, state: False)
    before = {shape: state.calls for shape, state in forward.shapes.items()}  # other tests' calls: it is shared
    out = restorer(faces)
    assert announced == {(2, 3, 64, 64): 1, (1, 3, 64, 64): 1}
    calls = {shape: state.calls - before.get(shape, 0) for shape, state in forward.shapes.items()}
    assert {shape: n for shape, n in calls.items() if n} == announced and forward.compiles == 0
    assert torch.equal(out, eager(faces))
    assert FaceRestorer(descriptor, precision="fp32", batch_size=3).compiled is forward  # the next job's
    monkeypatch.delattr(forward, "expect")  # the real one from here
    forward.expected[(2, 3, 64, 64)] = 5  # left by a cancelled job
    restorer(faces[:1])  # a call's announcement replaces what an earlier call left
    assert forward.expected == {(1, 3, 64, 64): 0}
    # Nothing process-wide holds the network: a model loaded, compiled-wrapped and dropped is freed.
    import gc
    import weakref

    from faces_common import small_gfpgan_descriptor

    dropped = small_gfpgan_descriptor(seed=3)
    module = weakref.ref(dropped.model)
    FaceRestorer(dropped, precision="fp32", compile="auto")(faces[:1])
    del dropped
    gc.collect()
    assert module() is None


@pytest.mark.slow
def test_compiled_face_restorer_equals_eager(descriptor, faces: torch.Tensor, isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """compile ``on``: the batch shape compiles once (inductor, freezing) and gives the eager
    result within 1e-4 in fp32 (measured 6e-6 on the full-size GFPGAN); the compile's cost is
    recorded for ``auto``."""
    from restorekit import compiled

    if compiled.compiler_problem(torch.device("cpu")) is not None:
        pytest.skip(f"no working C++ compiler here: {compiled.compiler_problem(torch.device('cpu'))}")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    eager = FaceRestorer(descriptor, precision="fp32", batch_size=3, compile="off")(faces)
    restorer = FaceRestorer(descriptor, precision="fp32", batch_size=3, compile="on")
    out = restorer(faces)
    again = restorer(faces)
    assert restorer.compiled is not None and restorer.compiled.compiles == 1 and restorer.compiled.prepack
    assert float((out - eager).abs().max()) <= 1e-4 and torch.equal(out, again)
    costs = (compiled.cache_dir() / compiled.COSTS_FILE).read_text()
    assert compiled.network_key(restorer._module, torch.device("cpu"), torch.float32) in costs
