"""The training config: one typed dataclass, the official recipes as presets, ``key=value`` overrides.

Field names follow Real-ESRGAN's / basicsr's option files where one exists (``gt_size``,
``queue_size``, ``ema_decay``, ``net_d_iters``, ``l1_gt_usm``...). Presets reproduce the
official option files:

==============================  ===================================================================
``realesrnet-x4plus``           ``train_realesrnet_x4plus.yml``: RRDBNet, L1 only, lr 2e-4
``realesrgan-x4plus``           ``train_realesrgan_x4plus.yml``: + perceptual + GAN, U-Net D (SN)
``finetune-realesrgan-x4plus``  ``finetune_realesrgan_x4plus.yml``: stage 2 from RealESRGAN_x4plus
``compact-x4``                  SRVGGNetCompact (general-x4v3 size) with the stage-2 losses
``esrgan``                      basicsr ``train_ESRGAN_x4.yml``: bicubic LR, VGG-style D, RaGAN
==============================  ===================================================================

A config is immutable and always valid: construction checks every field and raises
:class:`~restorekit.errors.InvalidParameterError` naming the key and its allowed values, so
a bad ``--set`` is refused before any work. ``degrade.<field>=value`` keys pass through to
the degradation config (see :mod:`restorekit.degrade.config`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..degrade.config import DegradeConfig, parse_bool, parse_number, parse_overrides, split_items
from ..degrade.config import get_preset as degrade_preset
from ..errors import InvalidParameterError

MODES: dict[str, str] = {
    "degrade": "LR made on the fly from HR crops by restorekit.degrade (Real-ESRGAN)",
    "paired": "real pairs: an LR folder matched to the HR folder by file name",
    "bicubic": "LR = MATLAB-style bicubic downscale of the HR crop (classic ESRGAN)",
}
GENERATORS: tuple[str, ...] = ("RRDBNet", "SRVGGNetCompact")
DISCRIMINATORS: dict[str, str] = {
    "none": "no GAN loss (PSNR-oriented stage, e.g. Real-ESRNet)",
    "unet": "U-Net with spectral norm and skip connections (Real-ESRGAN)",
    "vgg": "VGG-style discriminator for input_size x input_size crops (ESRGAN)",
}
GAN_MODES: dict[str, str] = {
    "standard": "vanilla GAN loss on D(output) (Real-ESRGAN)",
    "relativistic": "relativistic average GAN (ESRGAN's RaGAN)",
}
ACTIVATIONS: tuple[str, ...] = ("prelu", "relu", "leakyrelu")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
VGG_LAYERS: tuple[str, ...] = (
    "conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3", "conv3_4",
    "conv4_1", "conv4_2", "conv4_3", "conv4_4", "conv5_1", "conv5_2", "conv5_3", "conv5_4",
)  # fmt: skip

REALESRGAN_LAYERS: tuple[tuple[str, float], ...] = (
    ("conv1_2", 0.1), ("conv2_2", 0.1), ("conv3_4", 1.0), ("conv4_4", 1.0), ("conv5_4", 1.0),
)  # fmt: skip
"""The perceptual layers and weights of Real-ESRGAN's stage 2 (features before activation)."""

DEGRADE_PREFIX = "degrade."

RESUMABLE_CHANGES: tuple[str, ...] = (
    "iterations", "device", "precision", "val_every", "val_crop", "save_every", "keep_last",
    "log_every", "plot_every", "name", "milestones",
)  # fmt: skip
"""Fields that may change on ``--resume`` without ``--force`` (they do not change the past)."""


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; the defaults are ``realesrgan-x4plus`` (stage 2).

    Learning rates are Adam's; ``milestones`` are iterations (1-based) at which both
    learning rates are multiplied by ``gamma``. ``batch_size`` is the global batch of one
    iteration (summed over processes); ``accumulate`` splits each process's share into that
    many micro-batches whose gradients are summed (same result, less memory).
    """

    preset: str = "realesrgan-x4plus"
    """The preset these values started from (recorded in checkpoints and outputs)."""

    # ---- data
    mode: str = "degrade"
    scale: int = 4
    gt_size: int = 256
    """Side of the HR training crops (the LR crops are gt_size / scale)."""
    degrade_size: int = 400
    """HR crops are cut (and padded if smaller) to this size before the degradation, then
    cut again to gt_size with their LR, as Real-ESRGAN's ``crop_pad_size``."""
    use_hflip: bool = True
    use_rot: bool = False
    degradation: str = "realesrgan"
    """Preset of :mod:`restorekit.degrade` for ``mode=degrade``; ``degrade.<field>`` keys
    change single fields."""
    degrade_overrides: tuple[tuple[str, Any], ...] = ()
    queue_size: int = 180
    """Real-ESRGAN's training pair pool (0 switches it off); a multiple of the batch."""
    l1_gt_usm: bool = True
    percep_gt_usm: bool = True
    gan_gt_usm: bool = False

    # ---- networks
    generator: str = "RRDBNet"
    num_feat: int = 64
    num_block: int = 23
    num_grow_ch: int = 32
    num_conv: int = 16
    act_type: str = "prelu"
    pretrained: str = "RealESRNet_x4plus"
    """Initial generator: a registry name, a model-home name or a .safetensors/.pth file;
    empty for ESRGAN's small random init."""
    pretrained_d: str = ""
    discriminator: str = "unet"
    d_num_feat: int = 64
    gan_mode: str = "standard"

    # ---- losses
    pixel_weight: float = 1.0
    perceptual_weight: float = 1.0
    perceptual_layers: tuple[tuple[str, float], ...] = REALESRGAN_LAYERS
    gan_weight: float = 0.1
    net_d_iters: int = 1
    net_d_init_iters: int = 0

    # ---- optimisation
    iterations: int = 400_000
    batch_size: int = 12
    accumulate: int = 1
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = (400_000,)
    gamma: float = 0.5
    ema_decay: float = 0.999
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"

    # ---- bookkeeping
    name: str = "model"
    val_every: int = 5000
    val_crop: int = 0
    """Centre crop of validation HR images (0 = whole images)."""
    val_seed: int = 0
    save_every: int = 5000
    keep_last: int = 3
    log_every: int = 100
    plot_every: int = 0
    """Redraw the loss/PSNR plot every N iterations (0 = at each validation)."""

    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """Free-form notes carried into metadata (never affects training)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
        validate(self)

    # ------------------------------------------------------------------ conversions

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with some fields changed (string values are parsed)."""
        values: dict[str, Any] = {}
        degrade_changes: dict[str, Any] = dict(self.degrade_overrides)
        for key, value in changes.items():
            if key.startswith(DEGRADE_PREFIX):
                name = key[len(DEGRADE_PREFIX) :]
                degrade_changes.update(parse_overrides([f"{name}={_text(value)}"]))
            else:
                values[key] = coerce_field(key, value)
        if degrade_changes != dict(self.degrade_overrides) and "degrade_overrides" not in values:
            values["degrade_overrides"] = tuple(degrade_changes.items())
        return dataclasses.replace(self, **values)

    def with_overrides(self, overrides: Iterable[str] | Mapping[str, Any] | None) -> TrainConfig:
        """A copy with ``key=value`` strings (as from ``--set``) or a mapping applied."""
        if not overrides:
            return self
        if isinstance(overrides, Mapping):
            return self.replace(**dict(overrides))
        changes: dict[str, Any] = {}
        for item in overrides:
            key, sep, raw = str(item).partition("=")
            key = key.strip()
            if not sep or not key:
                raise InvalidParameterError(
                    f"--set {item!r} is not of the form key=value (e.g. --set batch_size=4)."
                )
            changes[key] = raw.strip()
        return self.replace(**changes)

    def degrade_config(self) -> DegradeConfig:
        """The degradation config of ``mode=degrade`` (preset plus ``degrade.*`` fields)."""
        base = degrade_preset(self.degradation)
        return base.replace(**dict(self.degrade_overrides)) if self.degrade_overrides else base

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every training field (``extra`` excluded)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if f.name in ("perceptual_layers", "degrade_overrides"):
                value = {k: _jsonable(v) for k, v in value}
            out[f.name] = _jsonable(value)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output."""
        data = dict(values)
        if isinstance(data.get("perceptual_layers"), Mapping):
            data["perceptual_layers"] = tuple(data["perceptual_layers"].items())
        if isinstance(data.get("degrade_overrides"), Mapping):
            degrade = parse_overrides(f"{k}={_text(v)}" for k, v in data["degrade_overrides"].items())
            data["degrade_overrides"] = tuple(degrade.items())
        return cls().replace(**data)

    def fingerprint(self, *, ignore: Iterable[str] = RESUMABLE_CHANGES) -> dict[str, Any]:
        """The settings that must match for a run to be resumed with this config."""
        skip = set(ignore)
        return {k: v for k, v in self.to_dict().items() if k not in skip}

    def diff(self, other: TrainConfig, *, ignore: Iterable[str] = ()) -> dict[str, tuple[Any, Any]]:
        """``{key: (this value, other value)}`` for every field that differs."""
        skip = set(ignore)
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b.get(k)) for k in a if k not in skip and a[k] != b.get(k)}





def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "extra")


# --------------------------------------------------------------------------- parsing


def _unknown(name: str) -> InvalidParameterError:
    close = difflib.get_close_matches(name, FIELD_NAMES, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else f" Known keys: {', '.join(FIELD_NAMES)}."
    return InvalidParameterError(f"Unknown training setting {name!r}.{hint}")


def _parse_layers(name: str, value: Any) -> tuple[tuple[str, float], ...]:
    """``conv1_2:0.1,conv5_4:1`` (or a mapping / pairs) -> ``(("conv1_2", 0.1), ...)``."""
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (list, tuple)) and all(isinstance(v, (list, tuple)) for v in value):
        items = [tuple(v) for v in value]
    else:
        items = []
        for part in split_items(value):
            layer, sep, weight = str(part).partition(":")
            if not sep:
                raise InvalidParameterError(
                    f"{name} takes layer:weight pairs, e.g. conv1_2:0.1,conv5_4:1; got {value!r}."
                )
            items.append((layer.strip(), weight))
    return tuple((str(layer), float(parse_number(name, weight, float))) for layer, weight in items)


def coerce_field(name: str, value: Any) -> Any:
    """Convert ``value`` (a Python value or command-line text) to field ``name``'s type."""
    if name not in FIELD_NAMES:
        raise _unknown(name)
    if name == "perceptual_layers":
        return _parse_layers(name, value)
    if name == "degrade_overrides":
        return tuple(dict(value).items()) if isinstance(value, Mapping) else tuple(value)
    annotation = typing.get_type_hints(TrainConfig)[name]
    if annotation is bool:
        return parse_bool(name, value)
    if annotation in (int, float):
        return parse_number(name, value, annotation)
    if annotation is str:
        return "" if value is None else str(value).strip()
    args = typing.get_args(annotation)
    items = split_items(value)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(parse_number(name, item, args[0]) for item in items)
    if len(items) != len(args):
        raise InvalidParameterError(f"{name} needs {len(args)} comma-separated values, got {value!r}.")
    return tuple(parse_number(name, item, kind) for item, kind in zip(items, args, strict=True))


# --------------------------------------------------------------------------- validation


def _fail(name: str, message: str) -> typing.NoReturn:
    raise InvalidParameterError(f"{name}: {message}")


def _check_choice(config: TrainConfig, name: str, options: Iterable[str]) -> None:
    options = tuple(options)
    if getattr(config, name) not in options:
        _fail(name, f"use one of {', '.join(options)}; got {getattr(config, name)!r}.")


def _check_int(config: TrainConfig, name: str, low: int, high: int | None = None) -> None:
    value = getattr(config, name)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        _fail(name, f"must be {bound}, got {value}.")


def _check_float(config: TrainConfig, name: str, low: float, high: float | None = None, *, low_open: bool = False) -> None:
    value = getattr(config, name)
    if value < low or (low_open and value <= low) or (high is not None and value > high):
        lower = f"above {low}" if low_open else f"at least {low}"
        _fail(name, f"must be {lower}" + (f" and at most {high}" if high is not None else "") + f", got {value}.")


def _check_data(config: TrainConfig) -> None:
    _check_choice(config, "mode", MODES)
    if config.generator == "RRDBNet" and config.scale not in (1, 2, 4):
        _fail("scale", f"RRDBNet trains x1, x2 or x4 (pixel-unshuffle for x1/x2); got {config.scale}.")
    _check_int(config, "scale", 1, 8)
    _check_int(config, "gt_size", 8, 4096)
    if config.gt_size % config.scale:
        _fail("gt_size", f"must be a multiple of scale {config.scale}; got {config.gt_size}.")
    if config.generator == "RRDBNet" and (config.gt_size // config.scale) % {1: 4, 2: 2, 4: 1}[config.scale]:
        _fail("gt_size", f"RRDBNet x{config.scale} needs gt_size divisible by 4; got {config.gt_size}.")
    if config.mode == "degrade":
        if config.degrade_size < config.gt_size:
            _fail("degrade_size", f"must be at least gt_size ({config.gt_size}); got {config.degrade_size}.")
        if config.degrade_size % config.scale:
            _fail("degrade_size", f"must be a multiple of scale {config.scale}; got {config.degrade_size}.")
        degrade_preset(config.degradation)
        config.degrade_config()
    _check_int(config, "queue_size", 0)
    _check_int(config, "batch_size", 1)
    _check_int(config, "accumulate", 1)
    if config.batch_size % config.accumulate:
        _fail("accumulate", f"must divide batch_size {config.batch_size}; got {config.accumulate}.")
    if config.queue_size and config.queue_size % config.batch_size:
        _fail("queue_size", f"must be a multiple of batch_size {config.batch_size} (or 0 for no pool); got {config.queue_size}.")


def _check_networks(config: TrainConfig) -> None:
    _check_choice(config, "generator", GENERATORS)
    _check_choice(config, "act_type", ACTIVATIONS)
    _check_choice(config, "discriminator", DISCRIMINATORS)
    _check_choice(config, "gan_mode", GAN_MODES)
    for name, low, high in (("num_feat", 1, 1024), ("num_block", 1, 100), ("num_grow_ch", 1, 1024), ("num_conv", 1, 200), ("d_num_feat", 1, 1024)):
        _check_int(config, name, low, high)
    if config.generator == "RRDBNet" and config.num_grow_ch != 32:
        _fail("num_grow_ch", f"must be 32: spandrel (and so upscale, the nodes and the app) loads RRDBNet only with 32 growth channels; got {config.num_grow_ch}.")
    if config.discriminator == "vgg" and config.gt_size not in (128, 256):
        _fail("gt_size", f"the VGG-style discriminator takes 128 or 256 crops; got {config.gt_size}.")
    if config.gan_mode == "relativistic" and config.discriminator == "none":
        _fail("gan_mode", "relativistic needs a discriminator (discriminator=vgg or unet).")


def _check_losses(config: TrainConfig) -> None:
    for name in ("pixel_weight", "perceptual_weight", "gan_weight"):
        _check_float(config, name, 0.0)
    if config.pixel_weight == 0 and config.perceptual_weight == 0 and (config.gan_weight == 0 or config.discriminator == "none"):
        _fail("pixel_weight", "every loss weight is 0: nothing to train. Set pixel_weight=1 (L1) at least.")
    for layer, weight in config.perceptual_layers:
        if layer not in VGG_LAYERS:
            close = difflib.get_close_matches(layer, VGG_LAYERS, n=1)
            _fail("perceptual_layers", f"unknown VGG19 layer {layer!r}" + (f" (did you mean {close[0]}?)" if close else f"; use {', '.join(VGG_LAYERS)}") + ".")
        if weight < 0:
            _fail("perceptual_layers", f"weights must be >= 0, got {layer}:{weight}.")
    if config.perceptual_weight > 0 and not config.perceptual_layers:
        _fail("perceptual_layers", "give at least one layer:weight when perceptual_weight > 0.")
    _check_int(config, "net_d_iters", 1)
    _check_int(config, "net_d_init_iters", 0)


def _check_optimisation(config: TrainConfig) -> None:
    _check_int(config, "iterations", 1)
    _check_float(config, "lr_g", 0.0, 1.0, low_open=True)
    _check_float(config, "lr_d", 0.0, 1.0, low_open=True)
    for beta in config.betas:
        if not 0.0 <= beta < 1.0:
            _fail("betas", f"Adam betas are in [0, 1), got {list(config.betas)}.")
    _check_float(config, "weight_decay", 0.0)
    if any(m < 1 for m in config.milestones) or list(config.milestones) != sorted(config.milestones):
        _fail("milestones", f"iterations >= 1 in increasing order, got {list(config.milestones)}.")
    _check_float(config, "gamma", 0.0, 1.0, low_open=True)
    _check_float(config, "ema_decay", 0.0, 1.0)
    if config.ema_decay >= 1.0:
        _fail("ema_decay", f"must be below 1 (0 switches EMA off), got {config.ema_decay}.")
    _check_int(config, "seed", 0, 2**62)
    _check_choice(config, "precision", PRECISIONS)
    if not config.device.strip():
        _fail("device", "use auto, cpu, cuda or cuda:N.")


def _check_bookkeeping(config: TrainConfig) -> None:
    from ..files import check_safe_name

    check_safe_name(config.name, what="model name")
    for name in ("val_every", "save_every", "log_every", "plot_every", "val_crop", "val_seed"):
        _check_int(config, name, 0)
    _check_int(config, "keep_last", 1)
    if config.val_crop and config.val_crop % config.scale:
        _fail("val_crop", f"must be a multiple of scale {config.scale}; got {config.val_crop}.")


VALIDATORS: tuple[Callable[[TrainConfig], None], ...] = (
    _check_data, _check_networks, _check_losses, _check_optimisation, _check_bookkeeping,
)  # fmt: skip


def validate(config: TrainConfig) -> None:
    """Check every field; raise :class:`InvalidParameterError` naming the first bad key."""
    for check in VALIDATORS:
        check(config)


# --------------------------------------------------------------------------- presets

_REALESRNET = dict(
    preset="realesrnet-x4plus",
    pretrained="ESRGAN_SRx4_DF2KOST_official",
    discriminator="none",
    perceptual_weight=0.0,
    gan_weight=0.0,
    lr_g=2e-4,
    milestones=(1_000_000,),
    iterations=1_000_000,
    name="realesrnet",
)
_REALESRGAN = dict(preset="realesrgan-x4plus", name="realesrgan")
_FINETUNE = dict(
    preset="finetune-realesrgan-x4plus",
    pretrained="RealESRGAN_x4plus",
    name="realesrgan-finetuned",
)
_COMPACT = dict(
    preset="compact-x4",
    generator="SRVGGNetCompact",
    num_feat=64,
    num_conv=32,
    act_type="prelu",
    pretrained="",
    name="compact",
)
_ESRGAN = dict(
    preset="esrgan",
    mode="bicubic",
    gt_size=128,
    use_rot=True,
    queue_size=0,
    l1_gt_usm=False,
    percep_gt_usm=False,
    gan_gt_usm=False,
    pretrained="",
    discriminator="vgg",
    gan_mode="relativistic",
    pixel_weight=1e-2,
    perceptual_weight=1.0,
    perceptual_layers=(("conv5_4", 1.0),),
    gan_weight=5e-3,
    batch_size=16,
    milestones=(50_000, 100_000, 200_000, 300_000),
    name="esrgan",
)

PRESETS: dict[str, dict[str, Any]] = {
    "realesrnet-x4plus": _REALESRNET,
    "realesrgan-x4plus": _REALESRGAN,
    "finetune-realesrgan-x4plus": _FINETUNE,
    "compact-x4": _COMPACT,
    "esrgan": _ESRGAN,
}
"""Changes from :class:`TrainConfig`'s defaults for each preset."""

PRESET_DESCRIPTIONS: dict[str, str] = {
    "realesrnet-x4plus": "stage 1: RRDBNet x4, L1 only, lr 2e-4, from ESRGAN (official train_realesrnet_x4plus)",
    "realesrgan-x4plus": "stage 2: L1 + perceptual + GAN (0.1), U-Net D with SN, from Real-ESRNet",
    "finetune-realesrgan-x4plus": "stage 2 starting from RealESRGAN_x4plus, for your own images",
    "compact-x4": "SRVGGNetCompact x4 (64 feat, 32 convs, as general-x4v3) with the stage-2 losses",
    "esrgan": "classic ESRGAN: bicubic LR, 128 crops, VGG-style D, RaGAN, perceptual conv5_4",
}


def get_preset(name: str, overrides: Iterable[str] | Mapping[str, Any] | None = None) -> TrainConfig:
    """The preset ``name`` (case-insensitive) with ``overrides`` applied, validated."""
    key = str(name).strip().lower()
    if key not in PRESETS:
        raise InvalidParameterError(f"Unknown training preset {name!r}. Use one of: {', '.join(PRESETS)}.")
    return TrainConfig(**PRESETS[key]).with_overrides(overrides)


def config_json(config: TrainConfig) -> str:
    """The config as indented JSON (what runs record)."""
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)
