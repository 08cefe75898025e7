"""The typed degradation config: the official preset table, overrides, and clear errors."""

from __future__ import annotations

import json
import math

import pytest

from restorekit.degrade.config import (
    FIELD_NAMES,
    PRESETS,
    DegradeConfig,
    coerce_field,
    describe_fields,
    get_preset,
    parse_overrides,
    resolve_config,
)
from restorekit.errors import InvalidParameterError

PI = math.pi
KERNELS = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
KERNEL_PROB = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
MODES = ("area", "bilinear", "bicubic")

# The official x4plus table (issue 4 / train_realesrgan_x4plus.yml), field by field.
OFFICIAL_X4PLUS = {
    # blur kernel size: odd 7..21, padded to 21 (both stages; the final sinc too)
    "kernel_range": (7, 21),
    "kernel_range2": (7, 21),
    "final_kernel_range": (7, 21),
    # blur applied: always / prob 0.8
    "blur_prob": 1.0,
    "second_blur_prob": 0.8,
    # sinc instead of the Gaussian family: 0.1, w_c ~ U(pi/3, pi) if k < 13 else U(pi/5, pi)
    "sinc_prob": 0.1,
    "sinc_prob2": 0.1,
    "sinc_cutoff_range_small": (PI / 3, PI),
    "sinc_cutoff_range": (PI / 5, PI),
    # kernel types and probabilities, same in both stages
    "kernel_list": KERNELS,
    "kernel_prob": KERNEL_PROB,
    "kernel_list2": KERNELS,
    "kernel_prob2": KERNEL_PROB,
    # blur sigma
    "blur_sigma": (0.2, 3.0),
    "blur_sigma2": (0.2, 1.5),
    # rotation (aniso) U(-pi, pi)
    "rotation_range": (-PI, PI),
    "rotation_range2": (-PI, PI),
    # beta generalized [0.5, 4], plateau [1, 2]
    "betag_range": (0.5, 4.0),
    "betag_range2": (0.5, 4.0),
    "betap_range": (1.0, 2.0),
    "betap_range2": (1.0, 2.0),
    # resize prob up/down/keep and range (current size / final LR size), uniform modes
    "resize_prob": (0.2, 0.7, 0.1),
    "resize_prob2": (0.3, 0.4, 0.3),
    "resize_range": (0.15, 1.5),
    "resize_range2": (0.3, 1.2),
    "resize_reference": "current",
    "resize_reference2": "target",
    "resize_modes": MODES,
    "resize_modes2": MODES,
    "final_resize_modes": MODES,
    # noise: Gaussian prob (else Poisson), sigma, Poisson scale, gray prob
    "noise_prob": 1.0,
    "noise_prob2": 1.0,
    "gaussian_noise_prob": 0.5,
    "gaussian_noise_prob2": 0.5,
    "noise_range": (1.0, 30.0),
    "noise_range2": (1.0, 25.0),
    "poisson_scale_range": (0.05, 3.0),
    "poisson_scale_range2": (0.05, 2.5),
    "gray_noise_prob": 0.4,
    "gray_noise_prob2": 0.4,
    # JPEG quality
    "jpeg_prob": 1.0,
    "jpeg_range": (30, 95),
    "final_jpeg_prob": 1.0,
    "jpeg_range2": (30, 95),
    # second order always; final sinc prob 0.8, w_c ~ U(pi/3, pi); order 50/50
    "second_order_prob": 1.0,
    "final_sinc_prob": 0.8,
    "final_sinc_cutoff_range": (PI / 3, PI),
    "final_jpeg_first_prob": 0.5,
    # 8-bit quantisation, USM-sharpened GT (sigma 8, 51 px, weight 0.5, threshold 10/255)
    "quantize": True,
    "sharpen_gt": True,
    "usm_sigma": 8.0,
    "usm_kernel_size": 51,
    "usm_weight": 0.5,
    "usm_threshold": 10.0,
}


def test_realesrgan_preset_equals_the_official_table_value_by_value() -> None:
    preset = get_preset("realesrgan")
    assert set(OFFICIAL_X4PLUS) == set(FIELD_NAMES), "every field must be checked against the table"
    for name, expected in OFFICIAL_X4PLUS.items():
        actual = getattr(preset, name)
        if isinstance(expected, tuple) and expected and isinstance(expected[0], float):
            assert len(actual) == len(expected), name
            for a, e in zip(actual, expected, strict=True):
                assert math.isclose(a, e, rel_tol=0, abs_tol=1e-12), (name, actual, expected)
        else:
            assert actual == expected, (name, actual, expected)


def test_the_default_config_is_the_realesrgan_preset() -> None:
    assert DegradeConfig() == PRESETS["realesrgan"]
    assert resolve_config(None) == PRESETS["realesrgan"]


def test_other_presets_are_what_they_say() -> None:
    classic, bicubic, light = get_preset("classic"), get_preset("bicubic"), get_preset("Light")
    assert classic.second_order_prob == 0 and classic.final_sinc_prob == 0 and classic.sinc_prob == 0
    assert classic.kernel_list == ("iso", "aniso") and classic.resize_modes == ("bicubic",)
    assert classic.resize_reference == "target" and classic.resize_prob == (0.0, 0.0, 1.0)
    assert bicubic.final_resize_modes == ("matlab_bicubic",)
    for name in ("blur_prob", "noise_prob", "jpeg_prob", "second_order_prob", "final_sinc_prob", "final_jpeg_prob"):
        assert getattr(bicubic, name) == 0, name
    assert not bicubic.sharpen_gt and not classic.sharpen_gt and not light.sharpen_gt
    assert light.blur_sigma[1] < PRESETS["realesrgan"].blur_sigma[1]
    assert light.noise_range[1] < PRESETS["realesrgan"].noise_range[1]
    assert light.jpeg_range[0] > PRESETS["realesrgan"].jpeg_range[0]


@pytest.mark.parametrize(
    ("text", "name", "value"),
    [
        ("blur_sigma=0.2,2", "blur_sigma", (0.2, 2.0)),
        ("blur_sigma=[0.5, 1.5]", "blur_sigma", (0.5, 1.5)),
        ("sinc_prob=0", "sinc_prob", 0.0),
        ("jpeg_range=40,90", "jpeg_range", (40, 90)),
        ("kernel_range=7,15", "kernel_range", (7, 15)),
        ("sharpen_gt=false", "sharpen_gt", False),
        ("quantize=YES", "quantize", True),
        ("final_sinc_cutoff_range=pi/2,pi", "final_sinc_cutoff_range", (PI / 2, PI)),
        ("rotation_range=-pi/4,pi/4", "rotation_range", (-PI / 4, PI / 4)),
        ("kernel_list=iso, aniso", "kernel_list", ("iso", "aniso")),
        ("resize_modes=matlab_bicubic", "resize_modes", ("matlab_bicubic",)),
        ("usm_kernel_size=31", "usm_kernel_size", 31),
        ("resize_reference2=current", "resize_reference2", "current"),
    ],
)
def test_overrides_are_parsed_to_the_fields_type(text: str, name: str, value) -> None:
    parsed = parse_overrides([text])
    assert set(parsed) == {name}
    if isinstance(value, tuple) and value and isinstance(value[0], float):
        assert all(math.isclose(a, b) for a, b in zip(parsed[name], value, strict=True))
    else:
        assert parsed[name] == value
        assert type(parsed[name]) is type(value)


def test_overrides_apply_on_top_of_a_preset() -> None:
    config = resolve_config("light", ["sinc_prob=0", "kernel_list=iso,aniso", "kernel_prob=0.7,0.3"])
    assert config.sinc_prob == 0 and config.kernel_list == ("iso", "aniso") and config.kernel_prob == (0.7, 0.3)
    assert config.noise_range == PRESETS["light"].noise_range
    assert resolve_config("classic", {"noise_range": [2, 4]}).noise_range == (2.0, 4.0)


def test_overrides_as_one_text_as_a_node_text_box_gives() -> None:
    text = "blur_sigma=0.2,1.5   # milder\n\nsinc_prob=0; final_sinc_prob=0.5\n"
    config = resolve_config("realesrgan", text)
    assert config.blur_sigma == (0.2, 1.5) and config.sinc_prob == 0 and config.final_sinc_prob == 0.5
    assert resolve_config("classic", "") == get_preset("classic")


def test_config_round_trips_through_json() -> None:
    config = get_preset("light").replace(blur_sigma=(0.3, 0.9), kernel_list=["iso"], kernel_prob=[1.0])
    text = json.dumps(config.to_dict())
    assert DegradeConfig.from_dict(json.loads(text)) == config
    assert resolve_config(text) == config
    assert config.diff(DegradeConfig()) == {k: v for k, v in config.to_dict().items() if v != DegradeConfig().to_dict()[k]}


def test_every_field_is_described_with_a_type() -> None:
    rows = describe_fields()
    assert [row[0] for row in rows] == list(FIELD_NAMES)
    types = dict((name, kind) for name, kind, _ in rows)
    assert types["blur_sigma"] == "float,float" and types["kernel_list"] == "str,..." and types["quantize"] == "bool"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # negative sigma
        ({"blur_sigma": (-1.0, 2.0)}, r"blur_sigma: values must be above 0.0, got -1.0 \(a negative sigma is not a blur\)"),
        ({"blur_sigma2": (0.0, 1.0)}, r"blur_sigma2: values must be above 0.0"),
        ({"noise_range": (-5.0, 10.0)}, r"noise_range: values must be at least 0.0"),
        ({"usm_sigma": -8.0}, r"usm_sigma: must be > 0"),
        # probabilities outside [0, 1]
        ({"sinc_prob": 1.5}, r"sinc_prob: a probability must be between 0 and 1, got 1.5"),
        ({"gray_noise_prob2": -0.1}, r"gray_noise_prob2: a probability must be between 0 and 1"),
        ({"final_jpeg_first_prob": 2.0}, r"final_jpeg_first_prob: a probability must be between 0 and 1"),
        # distributions not summing to 1
        ({"resize_prob": (0.5, 0.5, 0.5)}, r"resize_prob: probabilities must sum to 1, got \[0.5, 0.5, 0.5\]"),
        ({"kernel_prob": (0.5, 0.5, 0.5, 0.0, 0.0, 0.0)}, r"kernel_prob: probabilities must sum to 1"),
        ({"kernel_prob2": (0.5, 0.5)}, r"kernel_prob2: needs 6 probabilities, got 2"),
        ({"resize_prob2": (1.2, -0.2, 0.0)}, r"resize_prob2: probabilities must be between 0 and 1"),
        # ranges
        ({"blur_sigma": (3.0, 0.2)}, r"blur_sigma: the low end 3.0 is above the high end 0.2"),
        ({"resize_range": (0.5, 0.9)}, r"resize_range: needs 0 < low <= 1 <= high"),
        ({"resize_range2": (0.0, 1.2)}, r"resize_range2: needs 0 < low <= 1 <= high"),
        ({"jpeg_range": (0, 95)}, r"jpeg_range: JPEG qualities must satisfy 1 <= low <= high <= 100"),
        ({"jpeg_range2": (90, 101)}, r"jpeg_range2: JPEG qualities"),
        ({"kernel_range": (6, 21)}, r"kernel_range: kernel sizes must be positive odd numbers"),
        ({"final_kernel_range": (21, 7)}, r"final_kernel_range: the smallest size 21 is above the largest 7"),
        ({"sinc_cutoff_range": (0.0, 3.0)}, r"sinc_cutoff_range: values must be above 0.0"),
        ({"final_sinc_cutoff_range": (1.0, 4.0)}, r"final_sinc_cutoff_range: values must be at most"),
        ({"betag_range": (-1.0, 4.0)}, r"betag_range: values must be above 0.0"),
        # names
        ({"kernel_list": ("iso", "box"), "kernel_prob": (0.5, 0.5)}, r"kernel_list: unknown kernel type 'box'; use iso, aniso"),
        ({"kernel_list": ("iso", "iso"), "kernel_prob": (0.5, 0.5)}, r"kernel_list: each kernel type may appear once"),
        ({"resize_modes": ("area", "lanczos")}, r"resize_modes: unknown resize mode 'lanczos'"),
        ({"final_resize_modes": ()}, r"final_resize_modes: give at least one resize mode"),
        ({"resize_reference": "input"}, r"resize_reference: use one of current, target"),
        ({"usm_kernel_size": 50}, r"usm_kernel_size: must be an odd number >= 3"),
    ],
)
def test_every_bad_parameter_is_a_clear_error(overrides: dict, message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        DegradeConfig().replace(**overrides)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("blur_sigmaa=1,2", r"Unknown degradation setting 'blur_sigmaa'. Did you mean blur_sigma"),
        ("blur_sigma", r"is not of the form field=value"),
        ("blur_sigma=abc,2", r"blur_sigma must be a number, got 'abc'"),
        ("blur_sigma=1,2,3", r"blur_sigma needs 2 values separated by commas"),
        ("jpeg_range=30.5,90", r"jpeg_range must be a whole number, got '30.5'"),
        ("sharpen_gt=maybe", r"sharpen_gt must be true or false, got 'maybe'"),
        ("sinc_prob=nan", r"sinc_prob must be a finite number"),
        ("sinc_prob=", r"sinc_prob must be a number"),
    ],
)
def test_bad_overrides_are_clear_errors(item: str, message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        parse_overrides([item])


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(InvalidParameterError, match=r"Unknown degradation preset 'esrgan'\. Use one of: realesrgan, classic, bicubic, light"):
        get_preset("esrgan")


def test_coerce_field_keeps_python_values() -> None:
    assert coerce_field("kernel_prob", [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]) == KERNEL_PROB
    assert coerce_field("jpeg_range", (30, 95)) == (30, 95)
    with pytest.raises(InvalidParameterError, match="must be a number"):
        coerce_field("sinc_prob", True)


def test_configs_are_immutable_and_hashable() -> None:
    config = DegradeConfig()
    with pytest.raises(AttributeError):
        config.sinc_prob = 0.5  # type: ignore[misc]
    assert hash(config) == hash(DegradeConfig())
