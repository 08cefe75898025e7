"""Run a spandrel image model's network on batches of image windows.

:class:`NetworkRunner` is the only place that calls a network. It

- runs the network on the device, dtype and memory layout of an
  :class:`~restorekit.device.ExecutionPlan`, through a cached cast copy where the plan's device
  or dtype differs from the weights' (:func:`restorekit.models.prepared_network`), so the
  descriptor (which ComfyUI may share) is never modified;
- meets the model's size requirements (minimum size, multiple-of, square) by padding each
  batch and cropping the result;
- adapts channels (gray-only models get luma, gray outputs are expanded to RGB);
- guards against NaN/inf or black output in reduced precision by redoing the affected
  windows in fp32;
- under a plan's ``compile`` mode (``auto``/``on``), runs repeated input shapes compiled
  (:mod:`restorekit.compiled`).

:func:`model_traits` describes what the tiler needs to know about a model: its scale, size
requirements, receptive-field radius and activation memory per pixel.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..compiled import CompiledForward, count_layers, network_key, shared_forward
from ..device import ExecutionPlan, plan_execution
from ..environment import window_tuning
from ..errors import ModelIncompatibleError
from ..models import prepared_network
from .rrdb import FusedRRDBTrunk
from .window_cost import (
    CANDIDATE_SIDES,
    WIDTH_MULTIPLE,
    WindowCosts,
    is_slow_width,
    machine_key,
    round_up,
    width_multiple,
    window_costs,
)

logger = logging.getLogger(__name__)

Forward = Callable[[torch.Tensor], torch.Tensor]
"""``forward(batch)``: (N, 3, h, w) float32 [0, 1] -> (N, 3, h * scale, w * scale) float32 on
the CPU, clamped to [0, 1]."""

_BLACK_INPUT_LEVEL = 2.0 / 255.0


# --------------------------------------------------------------------------- model traits


def _rrdb_radius(model: Any) -> int | None:
    """Receptive-field radius of spandrel's ESRGAN/RRDBNet, in input pixels.

    conv_first + 15 convs per RRDB + the trunk conv run at network resolution; each
    upsampling conv runs at 2x, 4x... resolution (half a pixel, a quarter...), and
    hr_conv0/conv_last at the output resolution. Pixel-unshuffle models (x2, x1) run the whole
    network on a grid ``shuffle_factor`` times coarser.
    """
    params = getattr(model, "hyperparameters", {})
    blocks = params.get("num_blocks")
    net_scale = int(params.get("scale", getattr(model, "scale", 4)) or 4)
    if blocks is None:
        return None
    ups = [3] if net_scale == 3 else [2] * round(math.log2(max(net_scale, 1)))
    radius = 1.0 + 15.0 * int(blocks) + 1.0
    level = 1
    for factor in ups:
        level *= factor
        radius += 1.0 / level
    radius += 2.0 / max(net_scale, 1)
    shuffle = int(params.get("shuffle_factor") or 1)
    return math.ceil(radius * shuffle + (shuffle - 1))


def _compact_radius(model: Any) -> int | None:
    """SRVGGNetCompact: ``num_conv`` body convs plus the first and last conv, all at input
    resolution; the pixel shuffle and the nearest-neighbour base are pixel-local."""
    num_conv = getattr(model, "hyperparameters", {}).get("num_conv", getattr(model, "num_conv", None))
    return None if num_conv is None else int(num_conv) + 2


_RADIUS: dict[str, Callable[[Any], int | None]] = {
    "ESRGAN": _rrdb_radius,
    "Compact": _compact_radius,
}
"""Receptive-field radius by spandrel architecture id; others are treated as unbounded."""

_ACTIVATION_VALUES_PER_PIXEL: dict[str, Callable[[int], float]] = {
    # Peak live activations per input pixel, in values (multiply by the dtype size), from the
    # peak RSS of channels_last CPU runs at 192-512 px. RRDB runs its upsampling tail in
    # strips (StripTailForward), leaving its dense blocks as the peak: about 600 values/px
    # (measured 606 for x4plus bf16 between 272x512 and 512x512 windows, the 4x output
    # included). The output (3 values a pixel at the output size, and its float32 copy)
    # lives only after the trunk's buffers are freed, so it counts only where it is larger.
    # Without strips the tail would hold two 64-channel maps at the output size (x4plus:
    # 2121 values/px). Compact: its 64-channel body plus the output (animevideov3: 254
    # values/px measured).
    "ESRGAN": lambda scale: max(600.0, 64.0 + 9.0 * scale * scale),
    "Compact": lambda scale: 200.0 + 4.0 * scale * scale,
}
_GENERIC_VALUES_PER_PIXEL = 384.0 * 3.0
"""Unknown architectures: ComfyUI's rule of thumb (384 x 3 values per pixel, times scale)."""


@dataclass(frozen=True)
class ModelTraits:
    """What the tiler needs to know about an image model.

    Attributes:
        architecture: spandrel architecture id (``ESRGAN``, ``Compact``...).
        scale: output size / input size (1 for restoration models).
        input_channels, output_channels: 1 or 3.
        multiple_of: input width and height must be multiples of this.
        minimum: smallest input side the network accepts.
        square: the network needs square inputs.
        radius: receptive-field radius in input pixels, or None when unknown/unbounded.
        tiling: ``supported``, ``discouraged`` (global context matters) or ``internal``.
    """

    architecture: str
    scale: int
    input_channels: int
    output_channels: int
    multiple_of: int = 1
    minimum: int = 1
    square: bool = False
    radius: int | None = None
    tiling: str = "supported"

    def activation_bytes(self, pixels: int, dtype: torch.dtype) -> int:
        """Estimated peak activation memory to run ``pixels`` input pixels in ``dtype``."""
        values = _ACTIVATION_VALUES_PER_PIXEL.get(self.architecture)
        per_pixel = values(self.scale) if values else _GENERIC_VALUES_PER_PIXEL * max(self.scale, 1)
        element = torch.empty((), dtype=dtype).element_size()
        fixed = TAIL_STRIP_BYTES if self.architecture == "ESRGAN" else 0
        return int(fixed + per_pixel * element * pixels)


def model_traits(descriptor: Any) -> ModelTraits:
    """The :class:`ModelTraits` of a spandrel ``ImageModelDescriptor``.

    Raises :class:`ModelIncompatibleError` for models that are not single-image RGB/gray
    image-to-image models.
    """
    purpose = getattr(descriptor, "purpose", None)
    if purpose == "FaceSR":
        raise ModelIncompatibleError(
            f"{getattr(descriptor.architecture, 'name', 'This')} is a face restoration model; it "
            "works on aligned 512 px face crops. Use it through face restoration, and an "
            "upscale model such as RealESRGAN_x4plus for the whole image."
        )
    if purpose not in ("SR", "Restoration") or not hasattr(descriptor, "model"):
        raise ModelIncompatibleError(
            f"{type(descriptor).__name__} is not an image-to-image model (purpose {purpose!r}); "
            "use an upscale model such as RealESRGAN_x4plus."
        )
    in_ch, out_ch = int(descriptor.input_channels), int(descriptor.output_channels)
    if in_ch not in (1, 3) or out_ch not in (1, 3):
        raise ModelIncompatibleError(
            f"The model takes {in_ch} and gives {out_ch} channels; RestoreKit runs RGB or gray "
            "image models (1 or 3 channels)."
        )
    arch_id = str(getattr(descriptor.architecture, "id", type(descriptor.model).__name__))
    requirements = getattr(descriptor, "size_requirements", None)
    radius_of = _RADIUS.get(arch_id)
    tiling = getattr(getattr(descriptor, "tiling", None), "name", "SUPPORTED").lower()
    return ModelTraits(
        architecture=arch_id,
        scale=int(descriptor.scale),
        input_channels=in_ch,
        output_channels=out_ch,
        multiple_of=int(getattr(requirements, "multiple_of", 1) or 1),
        minimum=max(1, int(getattr(requirements, "minimum", 1) or 1)),
        square=bool(getattr(requirements, "square", False)),
        radius=radius_of(descriptor.model) if radius_of else None,
        tiling=tiling,
    )


# --------------------------------------------------------------------------- padding


def reflect_pad(x: torch.Tensor, left: int, right: int, top: int, bottom: int) -> torch.Tensor:
    """Mirror-pad a (N, C, H, W) tensor by any amount.

    ``F.pad(mode="reflect")`` only pads less than the size; larger pads are built by
    reflecting repeatedly, and a side of one pixel is replicated.
    """
    while left or right or top or bottom:
        h, w = x.shape[-2], x.shape[-1]
        step_l, step_r = min(left, w - 1), min(right, w - 1)
        step_t, step_b = min(top, h - 1), min(bottom, h - 1)
        if (w == 1 and (left or right)) or (h == 1 and (top or bottom)):
            rep = (left if w == 1 else 0, right if w == 1 else 0, top if h == 1 else 0, bottom if h == 1 else 0)
            x = F.pad(x, rep, mode="replicate")
            left, right, top, bottom = left - rep[0], right - rep[1], top - rep[2], bottom - rep[3]
            continue
        x = F.pad(x, (step_l, step_r, step_t, step_b), mode="reflect")
        left, right, top, bottom = left - step_l, right - step_r, top - step_t, bottom - step_b
    return x


def padding_for(traits: ModelTraits, height: int, width: int) -> tuple[int, int]:
    """Bottom and right padding that makes (height, width) meet the model's requirements."""
    m = traits.multiple_of
    h = max(height, traits.minimum)
    w = max(width, traits.minimum)
    h = -(-h // m) * m
    w = -(-w // m) * m
    if traits.square:
        h = w = max(h, w)
    return h - height, w - width


# --------------------------------------------------------------------------- split tails

_ACTIVATIONS = (nn.LeakyReLU, nn.ReLU, nn.PReLU, nn.Identity, nn.SiLU, nn.GELU)
TAIL_STRIP_BYTES = 48 << 20
"""Activation memory allowed for one strip of an upsampling tail."""


def _flatten(modules: Iterable[nn.Module]) -> list[nn.Module]:
    flat: list[nn.Module] = []
    for module in modules:
        if isinstance(module, nn.Sequential):
            flat.extend(_flatten(module))
        else:
            flat.append(module)
    return flat


def _local_tail(modules: list[nn.Module]) -> tuple[int, float, int] | None:
    """(scale, receptive radius in input pixels, widest channel count) of a chain of local
    layers (nearest upsampling, stride-1 convs, pixel shuffle, activations), else None."""
    scale, radius, width = 1, 0.0, 1
    for module in modules:
        if isinstance(module, nn.Upsample):
            factor = module.scale_factor
            if module.mode != "nearest" or factor is None or isinstance(factor, tuple) or float(factor) != int(factor):
                return None
            scale *= int(factor)
        elif isinstance(module, nn.Conv2d):
            k = module.kernel_size
            if module.stride != (1, 1) or module.dilation != (1, 1) or k[0] != k[1] or k[0] % 2 == 0:
                return None
            if module.padding not in ((k[0] // 2, k[1] // 2), "same"):
                return None
            radius += (k[0] // 2) / scale
            width = max(width, module.in_channels, module.out_channels)
        elif isinstance(module, nn.PixelShuffle):
            scale *= int(module.upscale_factor)
        elif not isinstance(module, _ACTIVATIONS):
            return None
    return scale, radius, width


class StripTailForward:
    """Runs an RRDB network with its upsampling tail in horizontal strips.

    The tail of ESRGAN/RRDBNet (nearest upsampling, convs at 2x and 4x resolution) holds two
    64-channel maps at the output resolution: about 90% of the activation memory for only
    7% of the compute. Run strip by strip, with a halo that covers the tail's receptive
    field, it gives the same values (every output pixel sees the same inputs) while its
    memory stays bounded, so much larger windows fit in the same memory (less tile overlap).
    """

    def __init__(self, module: nn.Module, head: list[Callable[[torch.Tensor], torch.Tensor]], tail: list[nn.Module], shuffle: int) -> None:
        plan = _local_tail(tail)
        assert plan is not None
        self.scale, radius, self.width = plan
        self.halo = math.ceil(radius) + 1
        self.head = head
        self.tail = tail
        self.shuffle = shuffle

    @classmethod
    def of(cls, module: nn.Module, *, fused: bool = False) -> StripTailForward | None:
        """The strip forward for spandrel's ESRGAN ``RRDBNet``, or None for other modules.

        ``fused``: run the head (``conv_first`` and the RRDB trunk) as a
        :class:`~restorekit.upscale.rrdb.FusedRRDBTrunk` when the network has its plain form.
        """
        body = getattr(module, "model", None)
        if not isinstance(body, nn.Sequential) or len(body) < 3 or type(module).__name__ != "RRDBNet":
            return None
        tail = _flatten(list(body)[2:])
        if _local_tail(tail) is None:
            return None
        head: list[Callable[[torch.Tensor], torch.Tensor]] = list(body)[:2]
        trunk = FusedRRDBTrunk.of(module) if fused else None
        if trunk is not None:
            head = [trunk]
        return cls(module, head, tail, int(getattr(module, "shuffle_factor", None) or 1))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.shuffle > 1:  # the runner already padded to a multiple of the shuffle factor
            x = F.pixel_unshuffle(x, self.shuffle)
        for layer in self.head:
            x = layer(x)
        return self.run_tail(x)

    def _through_tail(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.tail:
            x = layer(x)
        return x

    def run_tail(self, features: torch.Tensor) -> torch.Tensor:
        n, _, rows, cols = features.shape
        s = self.scale
        per_row = cols * s * s * self.width * 2 * features.element_size()
        strip = max(2 * self.halo, TAIL_STRIP_BYTES // max(per_row, 1))
        if strip >= rows:
            return self._through_tail(features)
        out: torch.Tensor | None = None
        for top in range(0, rows, strip):
            bottom = min(top + strip, rows)
            start, stop = max(0, top - self.halo), min(rows, bottom + self.halo)
            piece = self._through_tail(features[:, :, start:stop])
            if out is None:
                out = torch.empty(
                    (n, piece.shape[1], rows * s, cols * s), dtype=piece.dtype, device=piece.device
                ).to(memory_format=torch.channels_last)
            out[:, :, top * s : bottom * s] = piece[:, :, (top - start) * s : (bottom - start) * s]
        assert out is not None
        return out


# --------------------------------------------------------------------------- runner


def _default_call(module: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    return module(image)


def _compiled_forward(descriptor: Any, network: nn.Module, plan: ExecutionPlan, eager: Forward, call: Callable[[nn.Module, torch.Tensor], torch.Tensor], architecture: str) -> CompiledForward:
    """The process's :class:`CompiledForward` of ``descriptor`` under ``plan``
    (:func:`restorekit.compiled.shared_forward`: compiled once, for every later job).

    RRDB networks compile spandrel's plain layers with the strip tail (inductor does its own
    conv + activation fusion; the oneDNN calls of :class:`FusedRRDBTrunk` are opaque to it)
    and run :class:`FusedRRDBTrunk` for the calls that stay eager.
    """

    def build() -> CompiledForward:
        target = StripTailForward.of(network, fused=False) if architecture == "ESRGAN" else None
        return CompiledForward(
            forward=eager,
            target=target if target is not None else functools.partial(call, network),
            mode=plan.compile,
            key=network_key(network, plan.device, plan.dtype),
            layers=count_layers(network),
            label=architecture,
            device=plan.device,
        )

    key = (str(plan.device), str(plan.dtype), plan.channels_last, plan.fused, plan.compile)
    return shared_forward(descriptor, key, build)


class NetworkRunner:
    """Runs one model under one :class:`ExecutionPlan`; ``runner(batch)`` is a :data:`Forward`.

    Args:
        descriptor: a spandrel ``ImageModelDescriptor`` (float32 CPU, as loaded).
        plan: where and in which precision to run it.
    """

    def __init__(self, descriptor: Any, plan: ExecutionPlan, *, int8_gate: bool = True) -> None:
        self.descriptor = descriptor
        self.plan = plan
        self.traits = model_traits(descriptor)
        self._call = getattr(descriptor, "_call_fn", None) or _default_call
        custom = getattr(descriptor, "_call_fn", None)
        if plan.int8:
            self._init_int8(int8_gate)
            return
        self._network = prepared_network(descriptor.model, plan)
        use_strips = custom is None or self.traits.architecture == "ESRGAN"
        strips = StripTailForward.of(self._network, fused=plan.fused) if use_strips else None
        self.fused = strips is not None and isinstance(strips.head[0], FusedRRDBTrunk)
        """Whether the network runs through a fused execution form."""
        self._trunk: FusedRRDBTrunk | None = strips.head[0] if strips is not None and self.fused else None
        self._forward: Callable[[torch.Tensor], torch.Tensor] = (
            strips if strips is not None else functools.partial(self._call, self._network)
        )  # neither refers back to the descriptor: compiled forwards are cached by it
        self.compiled: CompiledForward | None = None
        """The compiled execution of this network (plan.compile ``auto``/``on``), else None."""
        if plan.compile != "off":
            self.compiled = _compiled_forward(
                descriptor, self._network, plan, self._forward, self._call, self.traits.architecture
            )
            self._forward = self.compiled
        self._fp32: NetworkRunner | None = None
        self.fallbacks = 0
        """How many windows were redone in fp32 after NaN/black output."""

    def _init_int8(self, gate: bool) -> None:
        """int8 plans: the gated int8 forward of :mod:`restorekit.upscale.int8` (``gate=False``:
        also for a model that fails the gate, for benchmarks)."""
        from .int8 import int8_forward

        name = f"this {getattr(self.descriptor.architecture, 'name', self.traits.architecture)} model"
        self._network = self.descriptor.model
        self._forward = int8_forward(self.descriptor.model, self.plan, name, self._call, enforce=gate)
        self.fused = False
        self._trunk = None
        self.compiled = None  # int8 networks run as quantized, never compiled
        self._fp32 = None
        self.fallbacks = 0

    @property
    def scale(self) -> int:
        return self.traits.scale

    def network_input_shape(self, batch: int, height: int, width: int) -> tuple[int, int, int, int]:
        """The shape the network itself gets for ``batch`` windows of (height, width)."""
        pad_h, pad_w = padding_for(self.traits, height, width)
        return (batch, self.traits.input_channels, height + pad_h, width + pad_w)

    def expect(self, work: Iterable[tuple[tuple[int, int], int, int]]) -> None:
        """Announce a job's windows to compiled execution's ``auto`` (replacing what an earlier
        job announced): ``(window (height, width), number of windows, windows per call)``
        items. No effect when not compiling."""
        if self.compiled is None:
            return
        self.compiled.expected.clear()
        for window, windows, batch in work:
            if windows <= 0:
                continue
            batch = max(1, min(batch, windows))
            full, rest = divmod(windows, batch)
            self.compiled.expect(self.network_input_shape(batch, *window), full)
            if rest:
                self.compiled.expect(self.network_input_shape(rest, *window), 1)

    def window_costs(self, max_pixels: int) -> WindowCosts | None:
        """This network's cost per pixel against window size on this machine, measured once
        (:mod:`restorekit.upscale.window_cost`) at the candidate sides that fit ``max_pixels``;
        None where windows are taken to cost the same per pixel: networks without a probe
        (the fused RRDB trunk has one), other devices than the CPU, or tuning turned off."""
        if self._trunk is None or self.plan.device.type != "cpu" or not window_tuning():
            return None
        sides = [side for side in CANDIDATE_SIDES if side * side <= max_pixels] or [CANDIDATE_SIDES[0]]
        return window_costs(self._window_key, self._trunk.probe, sides)

    @functools.cached_property
    def _window_key(self) -> str:
        """The window-cost cache key of this network on this machine (computed once: a video
        asks for it every frame)."""
        return machine_key(network_key(self._network, self.plan.device, self.plan.dtype))

    def _fp32_runner(self) -> NetworkRunner:
        if self._fp32 is None:
            plan = plan_execution(self.plan.device, "fp32", fused=self.plan.fused)
            self._fp32 = NetworkRunner(self.descriptor, plan)
        return self._fp32

    def _run(self, batch: torch.Tensor) -> torch.Tensor:
        n, _, h, w = batch.shape
        pad_h, pad_w = padding_for(self.traits, h, w)
        pad_w += self._speed_padding(h + pad_h, w + pad_w)
        x = batch
        if self.traits.input_channels == 1:
            from ..imageio import to_gray

            x = to_gray(x)
        x = self.plan.prepare_input(x)
        if pad_h or pad_w:
            x = reflect_pad(x, 0, pad_w, 0, pad_h)
        with torch.no_grad():  # not inference_mode: results must stay ordinary tensors
            out = self._forward(x)
        if not isinstance(out, torch.Tensor) or out.ndim != 4:
            raise ModelIncompatibleError(
                f"The {self.traits.architecture} network did not return an image tensor."
            )
        s = self.traits.scale
        out = out[:, :, : h * s, : w * s]
        if out.shape[-2:] != (h * s, w * s) or out.shape[0] != n:
            raise ModelIncompatibleError(
                f"The {self.traits.architecture} network returned {tuple(out.shape)} for an input "
                f"of {tuple(batch.shape)}; expected scale {s}."
            )
        return out

    def _speed_padding(self, height: int, width: int) -> int:
        """Extra columns (mirrored, cropped from the output) that bring a (height, width)
        network input to the next multiple of 16 px, where the CPU's bf16 convs are measured
        to be slow at ``width`` (:func:`~restorekit.upscale.window_cost.is_slow_width`); 0
        elsewhere. Tiled windows already are a multiple of 16 wide on the CPU: this is for
        images that run whole. Only the band of columns the network sees the mirror from
        (its receptive field, from the right edge) differs from the unpadded result."""
        if self.plan.device.type != "cpu" or self.plan.int8 or width < WIDTH_MULTIPLE:
            return 0
        if not is_slow_width(height, width, self.plan.dtype):
            return 0
        return min(round_up(width, width_multiple(self.plan.device, self.traits.multiple_of)) - width, width - 1)

    def _bad_outputs(self, batch: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """(N,) bool: outputs with NaN/inf, or black where the input is not black."""
        finite = torch.isfinite(out).flatten(1).all(dim=1)
        black = out.flatten(1).amax(dim=1) <= 0
        lit = batch.flatten(1).amax(dim=1).to(out.device) > _BLACK_INPUT_LEVEL
        return (~finite | (black & lit)).cpu()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Run (N, 3, h, w) float32 [0, 1] -> (N, 3, h*scale, w*scale) float32 CPU in [0, 1]."""
        out = self._run(batch)
        if self.plan.dtype != torch.float32 or self.plan.int8:
            bad = self._bad_outputs(batch, out)
            if bool(bad.any()):
                count = int(bad.sum())
                self.fallbacks += count
                logger.warning(
                    "%d window(s) gave NaN or black output in %s; redoing them in fp32",
                    count,
                    self.plan.precision,
                )
                redo = self._fp32_runner()(batch[bad.to(batch.device)])
                out = out.float()
                out[bad.to(out.device)] = redo.to(out.device)
        out = out.to(device="cpu", dtype=torch.float32).clamp_(0.0, 1.0)
        return out.expand(-1, 3, -1, -1) if out.shape[1] == 1 else out
