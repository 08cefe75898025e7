"""Network interpolation: exact blends, compatibility errors, metadata, the registry's strength
pairs (matching the official ``-dn``), the broken-merge check, the cache and the CLI."""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import spandrel
import torch
from safetensors.torch import save_file

from restorekit import interpolate as interp
from restorekit.architectures import random_state_dict
from restorekit.cli import main
from restorekit.errors import InvalidParameterError, ModelIncompatibleError
from restorekit.files import sha256_file
from restorekit.interpolate import (
    blend_descriptors,
    blend_state_dicts,
    interpolate,
    read_interpolation_metadata,
)
from restorekit.models import import_model, load_model
from restorekit.registry.home import get_home
from restorekit.registry.schema import load_registry
from restorekit.strength import pair_blend, registry_pair, resolve_with_strength

import reference_shim  # noqa: F401  (lets the reference realesrgan package import)
from conftest import to_tensor
from model_factory import pth_bytes, safetensors_bytes, tiny_state

StateDict = dict[str, torch.Tensor]


@pytest.fixture(autouse=True)
def _fresh_caches(isolated_home: Path):  # type: ignore[no-untyped-def]
    interp.clear_cache()
    yield
    interp.clear_cache()


def write_model(folder: Path, name: str, state: StateDict) -> Path:
    path = folder / f"{name}.safetensors"
    path.write_bytes(safetensors_bytes(state))
    return path


def run(descriptor, image: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    with torch.inference_mode():
        return descriptor(image)


def permuted_copy(state: StateDict, seed: int = 0) -> StateDict:
    """The same SRVGGNetCompact with its hidden channels shuffled: it computes exactly the
    same function, but channel i of one model is not channel i of the other, which is what
    makes blends of independently trained networks break."""
    generator = torch.Generator().manual_seed(seed)
    layers = sorted({int(k.split(".")[1]) for k in state})
    out = dict(state)
    order: torch.Tensor | None = None
    for layer in layers:
        weight = state[f"body.{layer}.weight"]
        if weight.ndim == 1:  # PReLU slopes follow the channels of the conv before them
            assert order is not None
            out[f"body.{layer}.weight"] = weight[order].contiguous()
            continue
        if order is not None:
            weight = weight[:, order]
        if layer != layers[-1]:
            order = torch.randperm(weight.shape[0], generator=generator)
            weight = weight[order]
            out[f"body.{layer}.bias"] = state[f"body.{layer}.bias"][order].contiguous()
        out[f"body.{layer}.weight"] = weight.contiguous()
    return out


def perturbed_copy(state: StateDict, relative: float, seed: int = 0) -> StateDict:
    """A "fine-tune" of ``state``: each tensor moved by ``relative`` of its spread."""
    generator = torch.Generator().manual_seed(seed)
    return {
        k: v + relative * (v.std() if v.numel() > 1 else v.abs()) * torch.randn(v.shape, generator=generator)
        for k, v in state.items()
    }


@pytest.fixture
def crop(astronaut: np.ndarray) -> torch.Tensor:
    """A real 32x32 photo crop (the astronaut's face), (1, 3, 32, 32) in [0, 1]."""
    return to_tensor(astronaut[80:112, 200:232])


@pytest.fixture
def tiny_pair(tmp_path: Path) -> tuple[Path, Path, StateDict, StateDict]:
    a, b = tiny_state(1), tiny_state(2)
    return write_model(tmp_path, "tiny_a", a), write_model(tmp_path, "tiny_b", b), a, b


# --------------------------------------------------------------------------- the arithmetic


def test_alpha_zero_and_one_reproduce_the_parents_exactly(tiny_pair, crop) -> None:  # type: ignore[no-untyped-def]
    path_a, path_b, a, b = tiny_pair
    for alpha, parent, path in ((0.0, a, path_a), (1.0, b, path_b)):
        result = interpolate([path_a, path_b], alpha=alpha)
        assert result.state_dict.keys() == parent.keys()
        assert all(torch.equal(result.state_dict[k], parent[k]) for k in parent)
        assert result.single_parent is not None and result.single_parent.path == path
        assert result.check is not None and result.check.ok
        assert torch.equal(run(result.descriptor, crop), run(load_model(path), crop))


def test_alpha_half_is_the_elementwise_mean(tiny_pair) -> None:  # type: ignore[no-untyped-def]
    path_a, path_b, a, b = tiny_pair
    result = interpolate([path_a, path_b], alpha=0.5)
    assert result.weights == (0.5, 0.5)
    for key in a:
        assert torch.equal(result.state_dict[key], (a[key] + b[key]) / 2), key


def test_three_way_blend(tmp_path: Path, crop: torch.Tensor) -> None:
    states = [tiny_state(seed) for seed in (1, 2, 3)]
    paths = [write_model(tmp_path, f"m{i}", s) for i, s in enumerate(states)]
    result = interpolate(paths, [0.2, 0.3, 0.5])
    expected = {k: 0.2 * states[0][k] + 0.3 * states[1][k] + 0.5 * states[2][k] for k in states[0]}
    assert all(torch.equal(result.state_dict[k], expected[k]) for k in expected)
    assert result.formula == "0.2 × m0 + 0.3 × m1 + 0.5 × m2"
    reference = spandrel.ModelLoader().load_from_state_dict(expected).eval()
    assert torch.equal(run(result.descriptor, crop), run(reference, crop))


def test_a_pth_parent_is_converted_safely_and_blended(tiny_pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, path_b, a, b = tiny_pair
    checkpoint = tmp_path / "official_style.pth"
    checkpoint.write_bytes(pth_bytes(a))  # {'params_ema': state}, as Real-ESRGAN ships them
    result = interpolate([checkpoint, path_b], alpha=0.5)
    assert all(torch.equal(result.state_dict[k], (a[k] + b[k]) / 2) for k in a)
    assert result.parents[0].name == "official_style"


def test_models_imported_into_the_home_are_blended_by_name(tiny_pair) -> None:  # type: ignore[no-untyped-def]
    path_a, path_b, a, b = tiny_pair
    import_model(path_a, name="my-tiny-a")
    import_model(path_b, name="my-tiny-b")
    result = interpolate(["my-tiny-a", "my-tiny-b"], alpha=0.25)
    assert result.formula == "0.75 × my-tiny-a + 0.25 × my-tiny-b"
    assert all(torch.equal(result.state_dict[k], 0.75 * a[k] + 0.25 * b[k]) for k in a)
    with pytest.raises(InvalidParameterError, match="only model names"):
        interpolate(["my-tiny-a", str(path_b)], alpha=0.25, allow_paths=False)


@pytest.mark.parametrize(
    ("count", "weights", "alpha", "message"),
    [
        (2, [0.5, 0.4], None, "sum to 0.9"),
        (2, [1.2, -0.2], None, "between 0 and 1"),
        (3, [0.5, 0.5], None, "2 weights were given for 3 models"),
        (3, None, 0.5, "alpha blends exactly two models"),
        (2, None, 1.5, "alpha must be between 0 and 1"),
        (2, None, float("nan"), "alpha must be between 0 and 1"),
        (2, [0.5, 0.5], 0.5, "not both"),
        (2, None, None, "not both and not neither"),
        (1, [1.0], None, "at least two models"),
    ],
)
def test_bad_weights_are_refused_with_the_fix(count, weights, alpha, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidParameterError, match=message):
        interp.normalize_weights(count, weights, alpha)


def test_typed_decimals_that_sum_to_one_are_accepted() -> None:
    assert interp.normalize_weights(3, [0.1, 0.2, 0.7]) == (0.1, 0.2, 0.7)
    with pytest.raises(InvalidParameterError, match=r"0\.3333"):
        interp.normalize_weights(3, [0.33, 0.33, 0.33])


def test_non_float_tensors_come_from_the_first_model_and_dtype_is_kept() -> None:
    a = {"w": torch.tensor([1.0, 2.0], dtype=torch.float16), "n": torch.tensor([7]), "d": torch.tensor([1.0], dtype=torch.float64)}
    b = {"w": torch.tensor([3.0, 5.0], dtype=torch.float16), "n": torch.tensor([9]), "d": torch.tensor([3.0], dtype=torch.float64)}
    blended = blend_state_dicts([a, b], [0.25, 0.75], check=False)
    assert blended["w"].dtype == torch.float16 and blended["w"].tolist() == [2.5, 4.25]
    assert blended["n"].tolist() == [7] and blended["n"].dtype == torch.int64
    assert blended["d"].dtype == torch.float64 and blended["d"].item() == 2.5


def test_fp16_parents_give_fp16_weights_and_a_float32_cpu_descriptor(tmp_path: Path, crop: torch.Tensor) -> None:
    a = {k: v.half() for k, v in tiny_state(1).items()}
    b = {k: v.half() for k, v in tiny_state(2).items()}
    result = interpolate([write_model(tmp_path, "a16", a), write_model(tmp_path, "b16", b)], alpha=0.3)
    assert all(t.dtype == torch.float16 for t in result.state_dict.values())
    expected = {k: (0.7 * a[k].float() + 0.3 * b[k].float()).half() for k in a}
    assert all(torch.equal(result.state_dict[k], expected[k]) for k in a)
    parameters = list(result.descriptor.model.parameters())
    assert {p.dtype for p in parameters} == {torch.float32} and {p.device.type for p in parameters} == {"cpu"}


def test_the_result_works_wherever_an_upscale_model_does(tiny_pair, crop) -> None:  # type: ignore[no-untyped-def]
    """What ComfyUI's core loader hands its ImageUpscaleWithModel node: an eval-mode float32
    CPU ImageModelDescriptor that it may move between devices and call on (B, C, H, W)."""
    path_a, path_b, _, _ = tiny_pair
    descriptor = interpolate([path_a, path_b], alpha=0.4).descriptor
    assert isinstance(descriptor, spandrel.ImageModelDescriptor)
    assert descriptor.purpose == "SR" and descriptor.scale == 2 and not descriptor.model.training
    descriptor.to("cpu")
    out = run(descriptor, crop)
    assert out.shape == (1, 3, 64, 64) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert descriptor.model.state_dict()["body.0.weight"].dtype == torch.float32


# --------------------------------------------------------------------------- compatibility


def test_different_architectures_are_refused(tmp_path: Path) -> None:
    compact = write_model(tmp_path, "compact", tiny_state(1))
    rrdb = write_model(tmp_path, "rrdb", random_state_dict("RRDBNet", {"num_feat": 8, "num_block": 1, "num_grow_ch": 32, "scale": 2}))
    with pytest.raises(ModelIncompatibleError) as error:
        interpolate([compact, rrdb], alpha=0.5)
    message = str(error.value)
    assert "different architectures: compact is RealESRGAN Compact, rrdb is ESRGAN" in message
    assert "Only models of one architecture with the same hyperparameters" in message


def test_different_keys_are_refused_with_the_first_mismatches(tmp_path: Path) -> None:
    a = write_model(tmp_path, "two_convs", tiny_state(1))
    b = write_model(tmp_path, "three_convs", tiny_state(2, num_conv=3))
    with pytest.raises(ModelIncompatibleError) as error:
        interpolate([a, b], alpha=0.5)
    message = str(error.value)
    assert "two_convs: 8nf 2nc x2 vs three_convs: 8nf 3nc x2" in message
    assert "only in three_convs: body.7.weight, body.8.bias, body.8.weight" in message


def test_different_shapes_are_refused_with_the_first_mismatches(tmp_path: Path) -> None:
    a = write_model(tmp_path, "narrow", tiny_state(1))
    b = write_model(tmp_path, "wide", tiny_state(2, num_feat=16))
    with pytest.raises(ModelIncompatibleError) as error:
        interpolate([a, b], alpha=0.5)
    message = str(error.value)
    assert "different shapes: body.0.bias is 8 in narrow but 16 in wide, body.0.weight is 8x3x3x3 in narrow but 16x3x3x3 in wide" in message
    assert "and 7 more" in message


def test_unknown_architectures_are_refused(tmp_path: Path) -> None:
    a = write_model(tmp_path, "a", tiny_state(1))
    b = write_model(tmp_path, "mystery", {"weight": torch.ones(3, 3)})
    with pytest.raises(ModelIncompatibleError, match="mystery is not an architecture spandrel knows"):
        interpolate([a, b], alpha=0.5)


def test_real_x4plus_and_anime_6b_error_names_what_would_be_compatible(shared_weights: Path) -> None:
    x4plus = shared_weights / "RealESRGAN_x4plus.safetensors"
    anime = shared_weights / "RealESRGAN_x4plus_anime_6B.safetensors"
    with pytest.raises(ModelIncompatibleError) as error:
        interpolate([x4plus, anime], alpha=0.5)
    message = str(error.value)
    assert "RealESRGAN_x4plus: 64nf 23nb x4 vs RealESRGAN_x4plus_anime_6B: 64nf 6nb x4" in message
    assert "missing from RealESRGAN_x4plus_anime_6B: body.6.rdb1.conv1.bias, body.6.rdb1.conv1.weight" in message
    assert "Registry models with the layout of RealESRGAN_x4plus: RealESRNet_x4plus, ESRGAN_SRx4_DF2KOST_official." in message


# --------------------------------------------------------------------------- saving


def test_save_records_parents_hashes_and_weights(tiny_pair, tmp_path: Path, crop) -> None:  # type: ignore[no-untyped-def]
    path_a, path_b, _, _ = tiny_pair
    result = interpolate([path_a, path_b], alpha=0.3)
    out = tmp_path / "out" / "blend.safetensors"
    digest = result.save(out)
    assert digest == sha256_file(out)
    record = read_interpolation_metadata(out)
    assert record is not None and record.architecture == "Compact"
    assert record.parents == (("tiny_a", sha256_file(path_a), 0.7), ("tiny_b", sha256_file(path_b), 0.3))
    assert record.formula == "0.7 × tiny_a + 0.3 × tiny_b"
    assert record.check is not None and record.check["status"] == "ok"
    assert torch.equal(run(load_model(out), crop), run(result.descriptor, crop))
    assert read_interpolation_metadata(path_a) is None
    assert sorted(p.name for p in out.parent.iterdir()) == ["blend.safetensors"]  # no temp files left


def test_save_never_overwrites_inputs_or_existing_files(tiny_pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path_a, path_b, a, _ = tiny_pair
    result = interpolate([path_a, path_b], alpha=0.3)
    with pytest.raises(InvalidParameterError, match="inputs are never overwritten"):
        result.save(path_a, overwrite=True)
    assert torch.equal(load_model(path_a).model.state_dict()["body.0.weight"], a["body.0.weight"])
    out = tmp_path / "blend.safetensors"
    result.save(out)
    with pytest.raises(InvalidParameterError, match="exists; pass overwrite"):
        result.save(out)
    result.save(out, overwrite=True)
    with pytest.raises(InvalidParameterError, match=r"ending in \.safetensors"):
        result.save(tmp_path / "blend.pth")


# --------------------------------------------------------------------------- real weights


def test_real_animevideov3_blend_changes_outputs_monotonically(shared_weights: Path, tmp_path: Path, chelsea: np.ndarray) -> None:
    real = shared_weights / "realesr-animevideov3.safetensors"
    from restorekit.registry.convert import load_safetensors_file

    tuned = write_model(tmp_path, "animevideov3-tuned", perturbed_copy(load_safetensors_file(real), 0.1))
    photo = to_tensor(chelsea[70:102, 190:222])  # the cat's face, 32x32
    alphas = (0.0, 0.25, 0.5, 0.75, 1.0)
    results = [interpolate([real, tuned], alpha=a) for a in alphas]
    outputs = [run(r.descriptor, photo) for r in results]
    assert torch.equal(outputs[0], run(load_model(real), photo))
    assert torch.equal(outputs[-1], run(load_model(tuned), photo))
    from_a = [(o - outputs[0]).abs().mean().item() for o in outputs]
    from_b = [(o - outputs[-1]).abs().mean().item() for o in outputs]
    assert all(x < y for x, y in itertools.pairwise(from_a)), from_a
    assert all(x > y for x, y in itertools.pairwise(from_b)), from_b
    assert from_a[-1] > 2e-3  # the two parents really differ on the photo (about 1 level)
    assert all(r.check is not None and r.check.status == "ok" for r in results)


def test_broken_merge_of_unrelated_real_models_is_flagged(shared_weights: Path, tmp_path: Path, crop, caplog) -> None:  # type: ignore[no-untyped-def]
    from restorekit.registry.convert import load_safetensors_file

    real = shared_weights / "realesr-animevideov3.safetensors"
    state = load_safetensors_file(real)
    shuffled = write_model(tmp_path, "animevideov3-shuffled", permuted_copy(state))
    assert torch.allclose(run(load_model(shuffled), crop), run(load_model(real), crop), atol=1e-5)
    with caplog.at_level(logging.WARNING, logger="restorekit.interpolate"):
        broken = interpolate([real, shuffled], alpha=0.5)
    assert broken.broken and broken.check is not None and broken.check.status == "broken"
    assert broken.check.score > 2 and broken.check.probe == "pattern"
    assert "looks broken" in caplog.text and "not of one lineage" in caplog.text
    tuned = write_model(tmp_path, "animevideov3-tuned", perturbed_copy(state, 0.05))
    related = interpolate([real, tuned], alpha=0.5)
    assert related.check is not None and related.check.status == "ok" and related.check.score < 0.5


def test_broken_merge_check_without_real_weights(tmp_path: Path) -> None:
    state = tiny_state(1, num_feat=16, num_conv=4)
    a = write_model(tmp_path, "a", state)
    shuffled = write_model(tmp_path, "shuffled", permuted_copy(state))
    tuned = write_model(tmp_path, "tuned", perturbed_copy(state, 0.05))
    assert interpolate([a, shuffled], alpha=0.5).broken
    assert not interpolate([a, tuned], alpha=0.5).broken
    assert interpolate([a, shuffled], alpha=0.5, check=False) is interpolate([a, shuffled], alpha=0.5)


# --------------------------------------------------------------------------- registry pairs


def _install_generated(name: str, seed: int, folder: Path) -> StateDict:
    """Random weights with the registry's exact architecture, imported under ``name``."""
    entry = load_registry().get(name)
    state = random_state_dict(entry.architecture, entry.params, seed=seed, std=0.05)
    save_file(state, str(folder / f"generated-{seed}.safetensors"))
    import_model(folder / f"generated-{seed}.safetensors", name=name)
    return state


def test_denoise_strength_matches_the_official_dni_formula(tmp_path: Path, crop: torch.Tensor) -> None:
    general = _install_generated("realesr-general-x4v3", 1, tmp_path)
    wdn = _install_generated("realesr-general-wdn-x4v3", 2, tmp_path)
    # Real-ESRGAN's inference_realesrgan.py -dn d: RealESRGANer(dni_weight=[d, 1 - d]) over
    # [realesr-general-x4v3, realesr-general-wdn-x4v3], blending the checkpoints' 'params'
    # as w0 * a + w1 * b. The reference package itself is used when it is installed.
    try:
        from realesrgan.utils import RealESRGANer
    except ImportError:
        RealESRGANer = None
    for name, state in (("general", general), ("wdn", wdn)):
        torch.save({"params": state}, tmp_path / f"{name}.pth")
    for d in (0.0, 0.1, 0.5, 0.8, 1.0):
        official = {k: d * general[k] + (1 - d) * wdn[k] for k in general}
        if RealESRGANer is not None:
            reference = RealESRGANer.dni(None, tmp_path / "general.pth", tmp_path / "wdn.pth", [d, 1 - d])["params"]
            assert all(torch.equal(reference[k], official[k]) for k in general)
        result = pair_blend("realesr-general-x4v3", d)
        assert all(torch.equal(result.state_dict[k], official[k]) for k in official), d
        assert pair_blend("realesr-general-wdn-x4v3", d, meaning="denoise") is result
        assert result.check is None  # a registry pair is known to blend
    blended = resolve_with_strength("realesr-general-x4v3", denoise=0.5)
    assert blended is pair_blend("realesr-general-x4v3", 0.5).descriptor
    assert resolve_with_strength("realesr-general-x4v3", denoise=1.0) is load_model("realesr-general-x4v3")
    assert resolve_with_strength("realesr-general-x4v3", denoise=0.0) is load_model("realesr-general-wdn-x4v3")
    assert resolve_with_strength("realesr-general-x4v3") is load_model("realesr-general-x4v3")
    assert run(blended, crop).shape == (1, 3, 128, 128)


def test_sharpness_runs_from_realesrnet_to_realesrgan(crop: torch.Tensor) -> None:
    pair = registry_pair("RealESRGAN_x4plus")
    assert (pair.meaning, pair.low, pair.high) == ("sharpness", "RealESRNet_x4plus", "RealESRGAN_x4plus")
    assert registry_pair("RealESRNet_x4plus") == pair
    # Small RRDBNets installed under the registry names (the registry's files are 64 MB).
    folder = get_home().folder("upscale_models")
    folder.mkdir(parents=True)
    params = {"num_feat": 8, "num_block": 1, "num_grow_ch": 32}
    net = random_state_dict("RRDBNet", params, seed=1)
    gan = random_state_dict("RRDBNet", params, seed=2)
    write_model(folder, "RealESRNet_x4plus", net)
    write_model(folder, "RealESRGAN_x4plus", gan)
    result = pair_blend("RealESRGAN_x4plus", 0.25)
    assert all(torch.equal(result.state_dict[k], 0.75 * net[k] + 0.25 * gan[k]) for k in net)
    assert result.formula == "0.75 × RealESRNet_x4plus + 0.25 × RealESRGAN_x4plus"
    assert resolve_with_strength("RealESRGAN_x4plus", sharpness=0.25) is result.descriptor
    assert run(result.descriptor, crop).shape == (1, 3, 128, 128)


@pytest.mark.parametrize(
    ("model", "kwargs", "message"),
    [
        ("RealESRGAN_x4plus", {"denoise": 0.5}, "RealESRGAN_x4plus has a sharpness strength, not denoise. Models with a denoise strength: realesr-general-x4v3 or realesr-general-wdn-x4v3"),
        ("realesr-general-x4v3", {"sharpness": 0.5}, "has a denoise strength, not sharpness. Models with a sharpness strength: RealESRGAN_x4plus or RealESRNet_x4plus"),
        ("realesr-animevideov3", {"denoise": 0.5}, "realesr-animevideov3 has no interpolation partner"),
        ("realesr-general-x4v3", {"denoise": 0.5, "sharpness": 0.5}, "not both"),
        ("realesr-general-x4v3", {"denoise": 1.5}, "denoise strength must be between 0 and 1, got 1.5"),
        ("my/own.safetensors", {"denoise": 0.5}, "needs a registry model with a denoise pair"),
    ],
)
def test_strength_errors_name_the_models_that_have_one(model, kwargs, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidParameterError, match=message.replace(".", r"\.")):
        resolve_with_strength(model, **kwargs)


# --------------------------------------------------------------------------- cache


def test_cache_returns_the_same_object_until_a_parent_changes(tiny_pair) -> None:  # type: ignore[no-untyped-def]
    path_a, path_b, _, _ = tiny_pair
    first = interpolate([path_a, path_b], alpha=0.3)
    assert interpolate([str(path_a), path_b], [0.7, 0.3]) is first
    assert interpolate([path_a, path_b], alpha=0.4) is not first
    path_b.write_bytes(safetensors_bytes(tiny_state(5)))
    os.utime(path_b, ns=(1, 1))  # a different file identity even on coarse clocks
    changed = interpolate([path_a, path_b], alpha=0.3)
    assert changed is not first
    assert not torch.equal(changed.state_dict["body.0.weight"], first.state_dict["body.0.weight"])
    with pytest.raises(ModelIncompatibleError, match=r"tiny_b\.safetensors was changed or removed after it was blended"):
        first.save(path_a.parent / "stale.safetensors")  # its record of tiny_b would be wrong
    assert not (path_a.parent / "stale.safetensors").exists()


def test_blending_loaded_descriptors_matches_blending_files(tiny_pair, crop) -> None:  # type: ignore[no-untyped-def]
    path_a, path_b, _, _ = tiny_pair
    from_files = interpolate([path_a, path_b], alpha=0.6)
    from_descriptors = blend_descriptors([load_model(path_a), load_model(path_b)], alpha=0.6, names=["a", "b"])
    assert torch.equal(run(from_descriptors.descriptor, crop), run(from_files.descriptor, crop))
    assert from_descriptors.check is not None and from_descriptors.check.ok
    assert from_descriptors.metadata()  # names without hashes, still savable


# --------------------------------------------------------------------------- CLI


def test_cli_interpolate_writes_the_blend(tiny_pair, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path_a, path_b, _, _ = tiny_pair
    out = tmp_path / "blend.safetensors"
    assert main(["interpolate", str(path_a), str(path_b), "--alpha", "0.25", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}: 0.75 × tiny_a + 0.25 × tiny_b (RealESRGAN Compact, x2)" in printed
    assert "merge check: ok" in printed
    record = read_interpolation_metadata(out)
    assert record is not None and [w for _, _, w in record.parents] == [0.75, 0.25]
    c = write_model(tmp_path, "tiny_c", tiny_state(3))
    out3 = tmp_path / "three.safetensors"
    assert main(["interpolate", str(path_a), str(path_b), str(c), "--weights", "0.2,0.3,0.5", "-o", str(out3), "-q"]) == 0
    assert [w for _, _, w in read_interpolation_metadata(out3).parents] == [0.2, 0.3, 0.5]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("weights", "sum to 0.75"),
        ("alpha", "alpha must be between 0 and 1"),
        ("input", "inputs are never overwritten"),
        ("existing", "exists; pass overwrite (--overwrite)"),
        ("wide", "different shapes"),
        ("missing", "does not exist"),
    ],
)
def test_cli_errors_are_one_line(tiny_pair, tmp_path: Path, capsys, case: str, message: str) -> None:  # type: ignore[no-untyped-def]
    path_a, path_b, _, _ = tiny_pair
    existing = tmp_path / "existing.safetensors"
    existing.write_bytes(b"keep me")
    wide = write_model(tmp_path, "wide", tiny_state(2, num_feat=16))
    out = tmp_path / "out.safetensors"
    args = {
        "weights": [path_a, path_b, "--weights", "0.5,0.25", "-o", out],
        "alpha": [path_a, path_b, "--alpha", "2", "-o", out],
        "input": [path_a, path_b, "--alpha", "0.5", "-o", path_a],
        "existing": [path_a, path_b, "--alpha", "0.5", "-o", existing],
        "wide": [path_a, wide, "--alpha", "0.5", "-o", out],
        "missing": [path_a, tmp_path / "nope.safetensors", "--alpha", "0.5", "-o", out],
    }[case]
    before = path_a.read_bytes()
    assert main(["interpolate", *map(str, args)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("restorekit: error:") and message in err and "\n" not in err
    assert existing.read_bytes() == b"keep me" and path_a.read_bytes() == before
    assert not out.exists()


def test_cli_strict_refuses_a_broken_blend(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    state = tiny_state(1, num_feat=16, num_conv=4)
    a = write_model(tmp_path, "a", state)
    shuffled = write_model(tmp_path, "shuffled", permuted_copy(state))
    out = tmp_path / "out.safetensors"
    assert main(["interpolate", str(a), str(shuffled), "--alpha", "0.5", "-o", str(out), "--strict"]) == 1
    assert "looks broken" in capsys.readouterr().err and not out.exists()
    assert main(["interpolate", str(a), str(shuffled), "--alpha", "0.5", "-o", str(out)]) == 0
    assert "restorekit: warning: the blend looks broken" in capsys.readouterr().err and out.exists()
