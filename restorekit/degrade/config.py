"""The degradation config: one typed dataclass, presets, validation and ``field=value`` overrides.

Field names follow Real-ESRGAN's training options (``blur_sigma``, ``kernel_prob``,
``resize_prob2``, ``final_sinc_prob``...) so that values port from its YAML files; the
fields RestoreKit adds (probabilities for steps that Real-ESRGAN always applies, resize
modes, sinc cutoffs, sharpening) use the same style. A suffix ``2`` means the second stage,
``final_`` the last step.

The pipeline (see :mod:`restorekit.degrade.pipeline`):

1. optional USM sharpening of the input (``sharpen_gt``);
2. first stage: blur, random resize, noise, JPEG;
3. second stage (probability ``second_order_prob``): blur, random resize, noise;
4. final step: [resize to the target size + sinc filter] and JPEG, in random order;
5. rounding to 8 bits (``quantize``).

A config is immutable and always valid: construction checks every field and raises
:class:`~restorekit.errors.InvalidParameterError` naming the field, the problem and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidParameterError
from .kernels import KERNEL_FAMILIES
from .ops import RESIZE_MODES

PI = math.pi

ALL_KERNELS: tuple[str, ...] = tuple(KERNEL_FAMILIES)
"""Real-ESRGAN's six kernel families, in its ``kernel_list`` order."""

RESIZE_DIRECTIONS: tuple[str, str, str] = ("up", "down", "keep")
"""The order of ``resize_prob`` entries."""

RESIZE_REFERENCES: dict[str, str] = {
    "current": "the image size when the stage starts (Real-ESRGAN's first stage)",
    "target": "the final LR size, input size / scale (Real-ESRGAN's second stage)",
}
"""What a stage's resize factor is relative to."""

SINC_SMALL_KERNEL = 13
"""Kernels smaller than this draw their sinc cutoff from ``sinc_cutoff_range_small``."""

Range = tuple[float, float]
IntRange = tuple[int, int]


@dataclass(frozen=True)
class DegradeConfig:
    """Every setting of the degradation pipeline; the defaults are Real-ESRGAN x4plus.

    Ranges are ``(low, high)`` pairs drawn uniformly; probabilities are in [0, 1]; blur and
    noise sigmas are in pixels and 0-255 levels respectively; cutoffs are in radians.
    """

    # ---- ground-truth sharpening (Real-ESRGAN's USM on the GT)
    sharpen_gt: bool = True
    """USM-sharpen the input first: the LR is made from the sharpened image and ``--pairs``
    stores it as the HR, as Real-ESRGAN's training does (``gt_usm``)."""
    usm_sigma: float = 8.0
    usm_kernel_size: int = 51
    usm_weight: float = 0.5
    usm_threshold: float = 10.0
    """Residuals above this (0-255 scale) are sharpened; the mask is then blurred (soft)."""

    # ---- first stage
    blur_prob: float = 1.0
    kernel_range: IntRange = (7, 21)
    """Blur kernel sizes: odd sizes from low to high, each equally likely."""
    sinc_prob: float = 0.1
    """Probability of a sinc (ringing) kernel instead of one from ``kernel_list``."""
    kernel_list: tuple[str, ...] = ALL_KERNELS
    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    blur_sigma: Range = (0.2, 3.0)
    rotation_range: Range = (-PI, PI)
    betag_range: Range = (0.5, 4.0)
    """Generalized-Gaussian shape: half the draws in [low, 1], half in [1, high]."""
    betap_range: Range = (1.0, 2.0)
    """Plateau shape, drawn like ``betag_range`` (so with low = 1 half the draws are 1)."""
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)
    """Probabilities of scaling up, down, or keeping the size."""
    resize_range: Range = (0.15, 1.5)
    """Up draws a factor in [1, high], down in [low, 1]."""
    resize_modes: tuple[str, ...] = ("area", "bilinear", "bicubic")
    resize_reference: str = "current"
    noise_prob: float = 1.0
    gaussian_noise_prob: float = 0.5
    """Probability of Gaussian noise; otherwise Poisson noise."""
    noise_range: Range = (1.0, 30.0)
    poisson_scale_range: Range = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_prob: float = 1.0
    jpeg_range: IntRange = (30, 95)

    # ---- second stage
    second_order_prob: float = 1.0
    second_blur_prob: float = 0.8
    kernel_range2: IntRange = (7, 21)
    sinc_prob2: float = 0.1
    kernel_list2: tuple[str, ...] = ALL_KERNELS
    kernel_prob2: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    blur_sigma2: Range = (0.2, 1.5)
    rotation_range2: Range = (-PI, PI)
    betag_range2: Range = (0.5, 4.0)
    betap_range2: Range = (1.0, 2.0)
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: Range = (0.3, 1.2)
    resize_modes2: tuple[str, ...] = ("area", "bilinear", "bicubic")
    resize_reference2: str = "target"
    noise_prob2: float = 1.0
    gaussian_noise_prob2: float = 0.5
    noise_range2: Range = (1.0, 25.0)
    poisson_scale_range2: Range = (0.05, 2.5)
    gray_noise_prob2: float = 0.4

    # ---- sinc cutoffs shared by both stages
    sinc_cutoff_range: Range = (PI / 5, PI)
    """Cutoff for sinc blur kernels of size >= 13."""
    sinc_cutoff_range_small: Range = (PI / 3, PI)
    """Cutoff for sinc blur kernels of size < 13."""

    # ---- final step
    final_resize_modes: tuple[str, ...] = ("area", "bilinear", "bicubic")
    final_sinc_prob: float = 0.8
    final_kernel_range: IntRange = (7, 21)
    final_sinc_cutoff_range: Range = (PI / 3, PI)
    final_jpeg_prob: float = 1.0
    jpeg_range2: IntRange = (30, 95)
    final_jpeg_first_prob: float = 0.5
    """Probability of JPEG before [resize + sinc] rather than after."""
    quantize: bool = True
    """Round the LR to 8-bit levels at the end."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, list):
                object.__setattr__(self, field.name, tuple(value))
        validate(self)

    # ------------------------------------------------------------------ conversions

    def replace(self, **changes: Any) -> DegradeConfig:
        """A validated copy with some fields changed (unknown names are an error)."""
        _check_names(changes)
        return dataclasses.replace(self, **{k: coerce_field(k, v) for k, v in changes.items()})

    def with_overrides(self, overrides: str | Iterable[str] | Mapping[str, Any] | None) -> DegradeConfig:
        """A copy with overrides applied: ``field=value`` strings (as from ``--set``), one
        text with one ``field=value`` per line or separated by ``;`` (as a node's text box
        gives; ``#`` starts a comment), or a mapping of fields to values."""
        if not overrides:
            return self
        if isinstance(overrides, Mapping):
            return self.replace(**dict(overrides))
        if isinstance(overrides, str):
            overrides = split_overrides(overrides)
        return self.replace(**parse_overrides(overrides))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field (tuples become lists)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, base: DegradeConfig | None = None) -> DegradeConfig:
        """A config from a dict such as :meth:`to_dict` gives; missing fields come from ``base``."""
        return (base or cls()).replace(**dict(values))

    def diff(self, other: DegradeConfig) -> dict[str, Any]:
        """The fields whose values differ from ``other``, with this config's values."""
        return {
            f.name: _jsonable(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        }


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(DegradeConfig))


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(DegradeConfig)


def _check_names(names: Iterable[str]) -> None:
    for name in names:
        if name not in FIELD_NAMES:
            close = difflib.get_close_matches(name, FIELD_NAMES, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else " See `restorekit degrade --list-fields`."
            raise InvalidParameterError(f"Unknown degradation setting {name!r}.{hint}")


# --------------------------------------------------------------------------- parsing


def parse_bool(name: str, value: Any) -> bool:
    """``value`` (a bool, 0/1, or true/false/yes/no/on/off text) as a bool; ``name`` is for the message."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise InvalidParameterError(f"{name} must be true or false, got {value!r}.")


def parse_number(name: str, value: Any, kind: type) -> float | int:
    """A finite number of ``kind`` (int or float) from a number or text (``pi``, ``pi/3``, ``-pi`` too)."""
    if isinstance(value, bool):
        raise InvalidParameterError(f"{name} must be a number, got {value!r}.")
    text = str(value).strip().lower()
    constants = {"pi": PI, "-pi": -PI}
    try:
        if isinstance(value, (int, float)):
            number = float(value)
        elif text in constants:
            number = constants[text]
        elif text.startswith(("pi/", "-pi/")):
            number = math.copysign(PI / float(text.split("/", 1)[1]), -1.0 if text.startswith("-") else 1.0)
        else:
            number = float(text)
    except (TypeError, ValueError, ZeroDivisionError):
        raise InvalidParameterError(f"{name} must be a number, got {value!r}.") from None
    if not math.isfinite(number):
        raise InvalidParameterError(f"{name} must be a finite number, got {value!r}.")
    if kind is int:
        if not number.is_integer():
            raise InvalidParameterError(f"{name} must be a whole number, got {value!r}.")
        return int(number)
    return number


def split_items(value: Any) -> list[Any]:
    """A list, tuple, or ``a,b``/``[a, b]`` text as a list of items (text items stripped of quotes)."""
    if isinstance(value, (list, tuple)):
        return list(value)
    text = str(value).strip()
    if text.startswith(("[", "(")) and text.endswith(("]", ")")):
        text = text[1:-1]
    return [item.strip().strip("'\"") for item in text.split(",") if item.strip()]


def coerce_field(name: str, value: Any) -> Any:
    """Convert ``value`` (a Python value or a string from the command line) to the field's type.

    Numbers accept ``pi``, ``pi/3`` and ``-pi``; tuples accept ``0.2,3``, ``[0.2, 3]`` or a
    list; booleans accept true/false/yes/no/1/0.
    """
    _check_names([name])
    annotation = _field_types()[name]
    if annotation is bool:
        return parse_bool(name, value)
    if annotation in (int, float):
        return parse_number(name, value, annotation)
    if annotation is str:
        return str(value).strip()
    options = typing.get_args(annotation) if typing.get_origin(annotation) is typing.Union else (annotation,)
    items = split_items(value)
    errors = []
    for option in options:
        args = typing.get_args(option)
        try:
            if len(args) == 2 and args[1] is Ellipsis:
                kind = args[0]
                if kind is str:
                    return tuple(str(item).strip() for item in items)
                return tuple(parse_number(name, item, kind) for item in items)
            if len(items) != len(args):
                raise InvalidParameterError(
                    f"{name} needs {len(args)} values separated by commas, got {value!r}."
                )
            return tuple(parse_number(name, item, kind) for item, kind in zip(items, args, strict=True))
        except InvalidParameterError as exc:
            errors.append(exc)
    raise errors[-1]


def split_overrides(text: str) -> list[str]:
    """``"blur_sigma=0.2,2; sinc_prob=0"`` or one per line -> ``["blur_sigma=0.2,2", "sinc_prob=0"]``."""
    items = []
    for line in text.splitlines():
        for part in line.split("#", 1)[0].split(";"):
            if part.strip():
                items.append(part.strip())
    return items


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["blur_sigma=0.2,2", "sinc_prob=0"]`` -> ``{"blur_sigma": (0.2, 2.0), "sinc_prob": 0.0}``."""
    result: dict[str, Any] = {}
    for item in items:
        name, sep, raw = str(item).partition("=")
        name = name.strip()
        if not sep or not name:
            raise InvalidParameterError(
                f"Override {item!r} is not of the form field=value (e.g. blur_sigma=0.2,2)."
            )
        result[name] = coerce_field(name, raw)
    return result


# --------------------------------------------------------------------------- validation


def _fail(name: str, message: str) -> typing.NoReturn:
    raise InvalidParameterError(f"{name}: {message}")


def _check_probability(config: DegradeConfig, name: str) -> None:
    value = getattr(config, name)
    if not 0.0 <= value <= 1.0:
        _fail(name, f"a probability must be between 0 and 1, got {value}.")


def _check_distribution(config: DegradeConfig, name: str, length: int) -> None:
    values = getattr(config, name)
    if len(values) != length:
        _fail(name, f"needs {length} probabilities, got {len(values)}: {list(values)}.")
    for value in values:
        if not 0.0 <= value <= 1.0:
            _fail(name, f"probabilities must be between 0 and 1, got {value} in {list(values)}.")
    if abs(sum(values) - 1.0) > 1e-6:
        _fail(name, f"probabilities must sum to 1, got {list(values)} (sum {sum(values):.6g}).")


def _check_range(config: DegradeConfig, name: str, *, low: float | None = None, high: float | None = None, low_open: bool = False) -> None:
    lo, hi = getattr(config, name)
    if lo > hi:
        _fail(name, f"the low end {lo} is above the high end {hi}; give low,high.")
    if low is not None and (lo < low or (low_open and lo <= low)):
        bound = "above" if low_open else "at least"
        _fail(name, f"values must be {bound} {low}, got {lo}" + (" (a negative sigma is not a blur)." if "sigma" in name and lo < 0 else "."))
    if high is not None and hi > high:
        _fail(name, f"values must be at most {high}, got {hi}.")


def _check_kernel_sizes(config: DegradeConfig, name: str) -> None:
    lo, hi = getattr(config, name)
    if lo > hi:
        _fail(name, f"the smallest size {lo} is above the largest {hi}.")
    if lo < 1 or lo % 2 != 1 or hi % 2 != 1:
        _fail(name, f"kernel sizes must be positive odd numbers, got {lo},{hi} (e.g. 7,21).")
    if hi > 99:
        _fail(name, f"kernel sizes above 99 are not supported, got {hi}.")


def _check_names_in(config: DegradeConfig, name: str, known: Iterable[str], what: str) -> None:
    values = getattr(config, name)
    known = tuple(known)
    if not values:
        _fail(name, f"give at least one {what}: {', '.join(known)}.")
    for value in values:
        if value not in known:
            _fail(name, f"unknown {what} {value!r}; use {', '.join(known)}.")
    if len(set(values)) != len(values):
        _fail(name, f"each {what} may appear once, got {list(values)}.")


def _check_stage_blur(config: DegradeConfig, suffix: str) -> None:
    _check_kernel_sizes(config, f"kernel_range{suffix}")
    _check_names_in(config, f"kernel_list{suffix}", KERNEL_FAMILIES, "kernel type")
    _check_distribution(config, f"kernel_prob{suffix}", len(getattr(config, f"kernel_list{suffix}")))
    _check_range(config, f"blur_sigma{suffix}", low=0.0, low_open=True)
    _check_range(config, f"rotation_range{suffix}")
    _check_range(config, f"betag_range{suffix}", low=0.0, low_open=True)
    _check_range(config, f"betap_range{suffix}", low=0.0, low_open=True)


def _check_stage_resize(config: DegradeConfig, suffix: str) -> None:
    _check_distribution(config, f"resize_prob{suffix}", 3)
    name = f"resize_range{suffix}"
    lo, hi = getattr(config, name)
    if not 0.0 < lo <= 1.0 <= hi:
        _fail(name, f"needs 0 < low <= 1 <= high (down draws in [low, 1], up in [1, high]), got {lo},{hi}.")
    _check_names_in(config, f"resize_modes{suffix}", RESIZE_MODES, "resize mode")
    reference = getattr(config, f"resize_reference{suffix}")
    if reference not in RESIZE_REFERENCES:
        _fail(f"resize_reference{suffix}", f"use one of {', '.join(RESIZE_REFERENCES)}, got {reference!r}.")


def _check_stage_noise(config: DegradeConfig, suffix: str) -> None:
    for name in (f"noise_prob{suffix}", f"gaussian_noise_prob{suffix}", f"gray_noise_prob{suffix}"):
        _check_probability(config, name)
    _check_range(config, f"noise_range{suffix}", low=0.0)
    _check_range(config, f"poisson_scale_range{suffix}", low=0.0)


def _check_jpeg(config: DegradeConfig, name: str) -> None:
    lo, hi = getattr(config, name)
    if not 1 <= lo <= hi <= 100:
        _fail(name, f"JPEG qualities must satisfy 1 <= low <= high <= 100, got {lo},{hi}.")


def validate(config: DegradeConfig) -> None:
    """Check every field; raise :class:`InvalidParameterError` at the first problem."""
    for name in (
        "blur_prob", "sinc_prob", "jpeg_prob", "second_order_prob", "second_blur_prob",
        "sinc_prob2", "final_sinc_prob", "final_jpeg_prob", "final_jpeg_first_prob",
    ):
        _check_probability(config, name)
    if config.usm_sigma <= 0:
        _fail("usm_sigma", f"must be > 0, got {config.usm_sigma}.")
    if config.usm_kernel_size < 3 or config.usm_kernel_size % 2 != 1:
        _fail("usm_kernel_size", f"must be an odd number >= 3, got {config.usm_kernel_size}.")
    if config.usm_weight < 0:
        _fail("usm_weight", f"must be >= 0, got {config.usm_weight}.")
    if not 0 <= config.usm_threshold <= 255:
        _fail("usm_threshold", f"is on the 0-255 scale, got {config.usm_threshold}.")
    for suffix in ("", "2"):
        _check_stage_blur(config, suffix)
        _check_stage_resize(config, suffix)
        _check_stage_noise(config, suffix)
    _check_jpeg(config, "jpeg_range")
    _check_jpeg(config, "jpeg_range2")
    for name in ("sinc_cutoff_range", "sinc_cutoff_range_small", "final_sinc_cutoff_range"):
        _check_range(config, name, low=0.0, high=PI + 1e-9, low_open=True)
    _check_kernel_sizes(config, "final_kernel_range")
    _check_names_in(config, "final_resize_modes", RESIZE_MODES, "resize mode")


# --------------------------------------------------------------------------- presets

REALESRGAN = DegradeConfig()
"""Real-ESRGAN x4plus (``train_realesrgan_x4plus.yml``): the table in the project README."""

CLASSIC = DegradeConfig(
    sharpen_gt=False,
    kernel_list=("iso", "aniso"),
    kernel_prob=(0.5, 0.5),
    sinc_prob=0.0,
    blur_sigma=(0.2, 3.0),
    resize_prob=(0.0, 0.0, 1.0),
    resize_reference="target",
    resize_modes=("bicubic",),
    gaussian_noise_prob=1.0,
    noise_range=(1.0, 25.0),
    gray_noise_prob=0.0,
    jpeg_range=(30, 95),
    second_order_prob=0.0,
    final_resize_modes=("bicubic",),
    final_sinc_prob=0.0,
    final_jpeg_prob=0.0,
)
"""First order only: Gaussian blur, bicubic down to the target size, Gaussian noise, JPEG."""

BICUBIC = DegradeConfig(
    sharpen_gt=False,
    blur_prob=0.0,
    sinc_prob=0.0,
    resize_prob=(0.0, 0.0, 1.0),
    noise_prob=0.0,
    jpeg_prob=0.0,
    second_order_prob=0.0,
    final_resize_modes=("matlab_bicubic",),
    final_sinc_prob=0.0,
    final_jpeg_prob=0.0,
)
"""A pure antialiased bicubic downscale with MATLAB ``imresize`` semantics (benchmark LR)."""

LIGHT = DegradeConfig(
    sharpen_gt=False,
    sinc_prob=0.05,
    blur_sigma=(0.2, 1.5),
    resize_prob=(0.1, 0.6, 0.3),
    resize_range=(0.5, 1.2),
    noise_range=(1.0, 10.0),
    poisson_scale_range=(0.05, 1.0),
    gray_noise_prob=0.5,
    jpeg_range=(60, 95),
    second_order_prob=0.3,
    second_blur_prob=0.5,
    sinc_prob2=0.05,
    blur_sigma2=(0.2, 1.0),
    resize_range2=(0.6, 1.2),
    noise_prob2=0.5,
    noise_range2=(1.0, 5.0),
    poisson_scale_range2=(0.05, 0.5),
    final_sinc_prob=0.3,
    final_sinc_cutoff_range=(PI / 2, PI),
    jpeg_range2=(70, 95),
)
"""Mild, mostly single-pass damage for everyday photos: blur sigma up to 1.5, noise sigma up
to 10, JPEG 60-95; a weaker second stage 30% of the time; no GT sharpening."""

PRESETS: dict[str, DegradeConfig] = {
    "realesrgan": REALESRGAN,
    "classic": CLASSIC,
    "bicubic": BICUBIC,
    "light": LIGHT,
}
"""Preset configs by name."""

PRESET_DESCRIPTIONS: dict[str, str] = {
    "realesrgan": "Real-ESRGAN x4plus: second-order blur/resize/noise/JPEG, final sinc, USM-sharpened GT",
    "classic": "first order only: Gaussian blur, bicubic down, Gaussian noise, JPEG",
    "bicubic": "antialiased bicubic downscale with MATLAB imresize semantics (benchmark LR)",
    "light": "mild variant for everyday photos: weaker blur, noise and JPEG, rare second stage",
}


def get_preset(name: str) -> DegradeConfig:
    """The preset called ``name`` (case-insensitive), or a clear error listing them."""
    key = str(name).strip().lower()
    if key not in PRESETS:
        raise InvalidParameterError(
            f"Unknown degradation preset {name!r}. Use one of: {', '.join(PRESETS)}."
        )
    return PRESETS[key]


def resolve_config(
    config: DegradeConfig | str | Mapping[str, Any] | None = None,
    overrides: str | Iterable[str] | Mapping[str, Any] | None = None,
) -> DegradeConfig:
    """A config from a preset name, a config, a dict of fields (over the default preset), or
    None (``realesrgan``), with ``overrides`` applied."""
    if config is None:
        base = REALESRGAN
    elif isinstance(config, DegradeConfig):
        base = config
    elif isinstance(config, str):
        stripped = config.strip()
        base = DegradeConfig.from_dict(json.loads(stripped)) if stripped.startswith("{") else get_preset(stripped)
    elif isinstance(config, Mapping):
        base = DegradeConfig.from_dict(config)
    else:
        raise InvalidParameterError(
            f"A degradation config must be a preset name, a DegradeConfig or a dict, got {type(config).__name__}."
        )
    return base.with_overrides(overrides)


def describe_fields() -> list[tuple[str, str, Any]]:
    """``(name, type, default)`` for every field, for ``--list-fields`` and docs."""
    types = _field_types()
    return [
        (f.name, _type_name(types[f.name]), _jsonable(f.default))
        for f in dataclasses.fields(DegradeConfig)
    ]


def _type_name(annotation: Any) -> str:
    if annotation in (bool, int, float, str):
        return annotation.__name__
    options = typing.get_args(annotation) if typing.get_origin(annotation) is typing.Union else (annotation,)
    names = []
    for option in options:
        args = typing.get_args(option)
        if len(args) == 2 and args[1] is Ellipsis:
            names.append(f"{args[0].__name__},...")
        else:
            names.append(",".join(a.__name__ for a in args))
    return " | ".join(names)
