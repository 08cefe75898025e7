"""The upscale engine's public API: :class:`Upscaler`, :func:`upscale_tensor`, :func:`upscale_image`.

Pixels are float32 (B, C, H, W) RGB (C = 3) or gray (C = 1) in [0, 1]; alpha travels as a
separate (B, 1, H, W) tensor. Results come back as float32 tensors on the CPU, so the output
canvas never has to fit on the GPU.

A job is a sequence of steps planned up front (:func:`plan_steps`): model passes and at most
a resize before the last pass plus one at the end, so that any factor > 0 or any exact
width/height is reached exactly. Each model pass pre-pads the image by mirroring, pads it to
the model's size multiple, runs it window by window (:mod:`restorekit.upscale.tiling`) and
crops the padding away.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..device import ExecutionPlan, free_memory_bytes, plan_for_model
from ..errors import ImageTooLargeError, InvalidParameterError
from ..imageio import DecodedImage, max_pixels_from_env, to_gray
from ..layout import check_image
from ..progress import CancelCheck, ProgressCallback, Reporter
from .alpha import check_alpha_mode, fill_transparent, is_opaque
from .network import ModelTraits, NetworkRunner, padding_for, reflect_pad
from .resize import FILTERS, resize
from .tiling import LAYOUTS, TilePlan, Tiler, canvas_dtype, choose_window, plan_tiles
from .window_cost import MIN_TUNED_PIXELS, WindowCosts, width_multiple

logger = logging.getLogger(__name__)

PRE_PAD = 10
"""RealESRGANer's mirrored pre-pad (bottom and right), the ``official`` layout's default."""

DEFAULT_PRE_PAD: dict[str, int] = {"feather": 0, "official": PRE_PAD}
"""Mirrored border added before each model pass by layout (cropped afterwards).

``feather`` adds none. Measured with ``bench/bench_border.py`` (x4plus and animevideov3,
three photos): against the same crop run with 48 px of its real surroundings, the outer
8 px band is 1-2 dB *closer* to the true result with the network's own zero padding than
with any mirrored pre-pad from 2 to 24 px, and the interior does not change beyond
+-3 dB at 33-52 dB. A mirror does not make the border behave like the real continuation, so
it buys nothing for its cost (34% more pixels on a 128x128 image with 10 px). ComfyUI core,
chaiNNer and Real-ESRGAN's own inference script (``--pre_pad 0``) pad nothing either."""

EXACT_OVERLAP_LIMIT = 64
"""Models whose receptive-field radius is at most this get ``overlap = radius`` by default,
which makes tiling exact; deeper ones get :data:`BLEND_OVERLAP`."""

BLEND_OVERLAP = 16
"""Default overlap for deep networks: a 32 px cross-faded band between tiles (ComfyUI's
core node uses the same 32 px band)."""

CPU_ACTIVATION_BUDGET = 352 << 20
"""``tile='auto'`` on the CPU: at most this much activation memory per batch. Bigger windows
cut the overlap work, but a CPU process also holds PyTorch itself (about 0.9 GB RSS here),
the weights and the output canvas. With it x4plus bf16 runs a 512² photo as one window
(no seam, 6% less work than two 272x512 windows, and 4-10% faster), and a 1024² -> 4096²
CLI job as six 363x528 windows that peak at about 1.45 GiB RSS; four 528² windows would
need about 90 MB more (``bench/RESULTS_upscale.md``).

The budget is set for a float16 canvas (half-precision networks). A float32 canvas (fp32
networks) holds twice the bytes, and the excess comes out of this budget
(:meth:`Upscaler._canvas_excess`), down to :data:`MIN_CPU_ACTIVATION_BUDGET`: the job's
memory stays the same whatever the precision. With the whole budget an fp32 1024² -> 4096²
x4plus job peaked at 1487 MiB in the CLI (its 231x528 windows took 353 MiB through the runner
on an AVX2 CPU, where the activation model says 327); with the excess taken out, 1405 MiB."""

MIN_CPU_ACTIVATION_BUDGET = CPU_ACTIVATION_BUDGET // 2
"""The CPU budget never drops below this for a large float32 canvas: past it, smaller
windows would cost more in overlap than the memory they save."""

CUDA_MEMORY_FRACTION = 0.6
"""``tile='auto'`` on a GPU: this fraction of the free memory goes to activations."""

MAX_AUTO_BATCH = 16

TileSpec = int | str | None


@dataclass(frozen=True)
class Step:
    """One step of a job: a model pass, or a resize to ``size`` (height, width)."""

    kind: str
    size: tuple[int, int]


@dataclass(frozen=True)
class UpscaleResult:
    """What :meth:`Upscaler.upscale` returns.

    Attributes:
        pixels: float32 (B, C, H', W') on the CPU in [0, 1]; C as given (1 or 3).
        alpha: float32 (B, 1, H', W') or None.
        model_scale: the network's own scale.
        passes: how many times the network ran over the image.
        tile: the largest window (height, width) the network ran, padding included.
        precision: ``fp32``, ``fp16``, ``bf16`` or ``int8``.
        device: where the network ran.
        fp32_fallbacks: windows redone in fp32 after NaN/black output.
        seconds: wall time of the job.
    """

    pixels: torch.Tensor
    alpha: torch.Tensor | None
    model_scale: int
    passes: int
    tile: tuple[int, int]
    precision: str
    device: str
    fp32_fallbacks: int
    seconds: float

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the result."""
        return int(self.pixels.shape[-1]), int(self.pixels.shape[-2])


# --------------------------------------------------------------------------- sizes and steps


def target_size(
    height: int,
    width: int,
    *,
    scale: int,
    outscale: float | None = None,
    out_width: int | None = None,
    out_height: int | None = None,
) -> tuple[int, int]:
    """The output (height, width).

    With neither ``outscale`` nor a size, the model's own scale. One of ``out_width`` /
    ``out_height`` alone keeps the aspect ratio.
    """
    if outscale is not None and (out_width is not None or out_height is not None):
        raise InvalidParameterError("Give either outscale or a width/height, not both.")
    if out_width is not None or out_height is not None:
        for name, value in (("width", out_width), ("height", out_height)):
            if value is not None and (not isinstance(value, int | float) or int(value) != value or value < 1):
                raise InvalidParameterError(f"The output {name} must be a whole number >= 1, got {value!r}.")
        if out_width is None:
            assert out_height is not None
            out_width = max(1, round(width * out_height / height))
        if out_height is None:
            out_height = max(1, round(height * out_width / width))
        return int(out_height), int(out_width)
    factor = float(scale if outscale is None else outscale)
    if not math.isfinite(factor) or factor <= 0:
        raise InvalidParameterError(f"outscale must be a number > 0, got {outscale!r}.")
    return max(1, round(height * factor)), max(1, round(width * factor))


def plan_steps(height: int, width: int, target: tuple[int, int], scale: int) -> list[Step]:
    """Model passes and resizes that take (height, width) exactly to ``target``.

    Factors up to the model scale take one pass (then a resize if needed). Larger factors
    take extra passes; before the last one the intermediate result is resized to
    ``ceil(target / scale)`` so that the last pass lands on the target (or just above it),
    never upscaling a model output that is then thrown away. The original input is never
    resized before the first pass.
    """
    factor = max(target[0] / height, target[1] / width)
    passes = 1 if scale <= 1 else max(1, math.ceil(math.log(factor) / math.log(scale) - 1e-9))
    steps: list[Step] = []
    current = (height, width)
    for index in range(passes):
        if index == passes - 1 and index > 0:
            before = (-(-target[0] // scale), -(-target[1] // scale))
            if before != current:
                steps.append(Step("resize", before))
                current = before
        current = (current[0] * scale, current[1] * scale)
        steps.append(Step("model", current))
    if current != tuple(target):
        steps.append(Step("resize", (int(target[0]), int(target[1]))))
    return steps


def default_overlap(traits: ModelTraits) -> int:
    """``radius`` for shallow models (exact tiling), :data:`BLEND_OVERLAP` for deep ones."""
    if traits.radius is not None and traits.radius <= EXACT_OVERLAP_LIMIT:
        return traits.radius
    return BLEND_OVERLAP


def parse_tile(tile: TileSpec | float) -> int | str | None:
    """The one reading of a tile setting, for every front end.

    ``"auto"`` (or ``""``) picks the tile from free memory; ``0``, ``"0"``, ``"none"`` or
    ``"off"`` run the whole image at once (None); a whole number (also as text, or a float
    with no fraction, as form fields send) is the tile side in input pixels, at least 16.

    Raises:
        InvalidParameterError: anything else, naming the accepted forms.
    """
    accepted = "Tile must be 'auto', 0 (no tiling) or a size in pixels"
    if tile is None:
        return None
    if isinstance(tile, str):
        text = tile.strip().lower()
        if text in ("", "auto"):
            return "auto"
        if text in ("none", "off"):
            return None
        try:
            tile = float(text)
        except ValueError:
            raise InvalidParameterError(f"{accepted}, got {tile!r}.") from None
    if isinstance(tile, float) and tile.is_integer():
        tile = int(tile)
    if isinstance(tile, bool) or not isinstance(tile, int):
        raise InvalidParameterError(f"{accepted}, got {tile!r}.")
    if tile == 0:
        return None
    if tile < 16:
        raise InvalidParameterError(f"Tile size {tile} is too small; use at least 16 px (or 0 for no tiling).")
    return tile


# --------------------------------------------------------------------------- the engine


def _resolve_model(model: Any) -> Any:
    if isinstance(model, str | bytes) or hasattr(model, "__fspath__"):
        from ..models import load_model

        return load_model(model, purpose="upscale")
    return model


class Upscaler:
    """An upscale model ready to run under fixed settings; reuse it for many images or frames.

    Args:
        model: a spandrel ``ImageModelDescriptor`` (as ComfyUI's loader gives) or a model
            reference (registry name or file), loaded with :func:`restorekit.models.load_model`.
        precision: ``auto``, ``fp32``, ``fp16``, ``bf16`` or ``int8`` (see :mod:`restorekit.device`;
            int8 only for models that pass its quality gate, :mod:`restorekit.upscale.int8`).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        tile: ``auto`` (from free memory), a window size in input pixels, or 0/None for the
            whole image at once.
        overlap: context pixels each tile gets beyond a seam; default: the receptive-field
            radius for shallow models (exact), 16 for deep ones (cross-faded seams).
        batch: windows per network call, or ``auto`` (1 on the CPU, memory-bound on GPUs).
        layout: ``feather`` (default) or ``official`` (RealESRGANer's hard-pasted grid).
        pre_pad: mirrored border added before each pass; default
            :data:`DEFAULT_PRE_PAD` (none for ``feather``, 10 px bottom/right for ``official``).
        resize_method: filter for the part of the scale the model does not cover.
        compile: ``auto`` (compile repeated window shapes where the job's work pays for the
            compile), ``on`` or ``off``; see :mod:`restorekit.compiled`.
    """

    def __init__(
        self,
        model: Any,
        *,
        precision: str = "auto",
        device: str | torch.device = "auto",
        tile: TileSpec = "auto",
        overlap: int | None = None,
        batch: int | str = "auto",
        layout: str = "feather",
        pre_pad: int | None = None,
        resize_method: str = "lanczos",
        compile: str = "auto",
    ) -> None:
        self.descriptor = _resolve_model(model)
        self.plan: ExecutionPlan = plan_for_model(self.descriptor, device, precision, compile=compile, allow_int8=True)
        self.runner = NetworkRunner(self.descriptor, self.plan)
        self.traits = self.runner.traits
        self.tile = parse_tile(tile)
        if overlap is not None and (isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0):
            raise InvalidParameterError(f"Overlap must be a whole number of pixels >= 0, got {overlap!r}.")
        self.overlap = default_overlap(self.traits) if overlap is None else overlap
        if batch != "auto" and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
            raise InvalidParameterError(f"Batch must be 'auto' or a number >= 1, got {batch!r}.")
        self.batch = batch
        if layout not in LAYOUTS:
            raise InvalidParameterError(f"Unknown tile layout {layout!r}; use one of: {', '.join(LAYOUTS)}.")
        self.layout = layout
        if pre_pad is None:
            pre_pad = DEFAULT_PRE_PAD[layout]
        if isinstance(pre_pad, bool) or not isinstance(pre_pad, int) or pre_pad < 0:
            raise InvalidParameterError(f"pre_pad must be a whole number of pixels >= 0, got {pre_pad!r}.")
        self.pre_pad = pre_pad
        if resize_method not in FILTERS:
            raise InvalidParameterError(f"Unknown resize method {resize_method!r}; use one of: {', '.join(FILTERS)}.")
        self.resize_method = resize_method

    @property
    def scale(self) -> int:
        """The model's own scale factor."""
        return self.traits.scale

    # ------------------------------------------------------------------ planning

    def _pad_sides(self) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) pre-pad."""
        p = self.pre_pad
        return (0, p, 0, p) if self.layout == "official" else (p, p, p, p)

    def _padded_size(self, height: int, width: int) -> tuple[int, int]:
        left, right, top, bottom = self._pad_sides()
        h, w = height + top + bottom, width + left + right
        # square inputs are made per window by the runner, not for the whole image
        pad_h, pad_w = padding_for(dataclasses.replace(self.traits, square=False), h, w)
        return h + pad_h, w + pad_w

    def window_for(self, height: int, width: int) -> tuple[int, int]:
        """The window limit (height, width) this upscaler's model pass uses for a (height,
        width) input: the image's own size when it runs whole. With ``tile='auto'`` this may
        measure the network's window costs first (once per machine)."""
        return self._tile_side(*self._padded_size(height, width))

    def _tile_side(self, height: int, width: int) -> tuple[int, int]:
        """Window (height, width) limit for a padded image of (height, width)."""
        whole = (height, width)
        if self.tile is None or self.traits.tiling == "internal":
            return whole
        align = self.traits.multiple_of
        if isinstance(self.tile, int):
            side = max(align, self.tile // align * align)
            return side, side
        budget = self._activation_budget(
            discouraged=self.traits.tiling == "discouraged", canvas_excess=self._canvas_excess(height, width)
        )
        fixed = self.traits.activation_bytes(0, self.plan.dtype)
        per_pixel = max(self.traits.activation_bytes(1, self.plan.dtype) - fixed, 1)
        max_pixels = max(budget - fixed, 0) // per_pixel
        costs = self._window_costs(height, width, max_pixels)
        if costs is None and self.traits.activation_bytes(height * width, self.plan.dtype) <= budget:
            return whole
        min_side = max(64, 4 * self.overlap) // align * align + align
        if self.layout != "feather":  # the official grid takes square cores
            side = max(int(math.sqrt(max_pixels)) // align * align, min_side)
            return side, side
        return choose_window(
            height,
            width,
            max_pixels,
            overlap=self.overlap,
            align=align,
            min_side=min_side,
            cost_per_pixel=costs.per_pixel if costs is not None else None,
            width_multiple=self._width_multiple,
        )

    @property
    def _width_multiple(self) -> int:
        """Split windows' width is a multiple of this (:func:`~restorekit.upscale.window_cost.width_multiple`)."""
        return width_multiple(self.plan.device, self.traits.multiple_of)

    def _window_costs(self, height: int, width: int, max_pixels: int) -> WindowCosts | None:
        """The network's measured cost per pixel against window size, for ``feather`` jobs on
        images big enough to be worth splitting for speed (:mod:`~restorekit.upscale.window_cost`);
        None otherwise, and then windows are chosen by memory and pixel count alone."""
        if self.layout != "feather" or height * width <= MIN_TUNED_PIXELS:
            return None
        return self.runner.window_costs(max_pixels)

    def _activation_budget(self, *, discouraged: bool = False, canvas_excess: int = 0) -> int:
        """Activation bytes a batch of windows may use (``canvas_excess``: see :meth:`_canvas_excess`)."""
        free = free_memory_bytes(self.plan.device)
        if self.plan.device.type == "cuda":
            return int(free * CUDA_MEMORY_FRACTION)
        if discouraged:
            return int(free * 0.5)
        return int(min(free * 0.5, max(CPU_ACTIVATION_BUDGET - canvas_excess, MIN_CPU_ACTIVATION_BUDGET)))

    def _canvas_excess(self, height: int, width: int) -> int:
        """Bytes the output canvas of one padded (height, width) input holds beyond a float16
        canvas of the same size (:func:`~restorekit.upscale.tiling.canvas_dtype`): 0 for
        half-precision networks; for fp32 ones, 2 bytes a value (a 4096x4096 result: 96 MiB).
        The canvas lives in CPU memory, so only CPU jobs weigh it against their activations."""
        if self.plan.device.type != "cpu":
            return 0
        element = torch.empty((), dtype=canvas_dtype(self.plan.dtype)).element_size()
        return max(element - 2, 0) * 3 * height * width * self.scale**2

    def _batch_size(self, window: tuple[int, int]) -> int:
        if self.batch != "auto":
            return int(self.batch)
        if self.plan.device.type == "cpu":
            return 1
        per_window = self.traits.activation_bytes(window[0] * window[1], self.plan.dtype)
        return int(max(1, min(MAX_AUTO_BATCH, self._activation_budget() // max(per_window, 1))))

    # ------------------------------------------------------------------ running

    def upscale(
        self,
        pixels: torch.Tensor,
        *,
        outscale: float | None = None,
        width: int | None = None,
        height: int | None = None,
        alpha: torch.Tensor | None = None,
        alpha_mode: str = "model",
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
    ) -> UpscaleResult:
        """Upscale (B, C, H, W) float pixels (C = 3 RGB or 1 gray, range [0, 1]).

        Args:
            outscale: any factor > 0 (default: the model's scale).
            width, height: exact output size instead of ``outscale`` (one alone keeps the
                aspect ratio).
            alpha: optional (B, 1, H, W) alpha in [0, 1].
            alpha_mode: ``model`` (upscale alpha with the network) or ``resize``.
            progress: ``progress(done, total, message)`` per batch of tiles.
            cancel: returns True to stop; raises :class:`~restorekit.errors.CancelledError`.

        Raises:
            InvalidParameterError: bad shapes or values.
            ImageTooLargeError: the output would exceed the pixel cap (RESTOREKIT_MAX_PIXELS).
            InsufficientMemoryError: out of memory even with the smallest tiles.
        """
        started = time.perf_counter()
        reporter = Reporter.of(progress, cancel)
        reporter.check()
        image, gray = _check_pixels(pixels)
        batch, _, in_h, in_w = image.shape
        mask = _check_alpha(alpha, image)
        mode = check_alpha_mode(alpha_mode)
        target = target_size(in_h, in_w, scale=self.scale, outscale=outscale, out_width=width, out_height=height)
        cap = max_pixels_from_env()
        if target[0] * target[1] > cap:
            raise ImageTooLargeError(
                f"The output would be {target[1]}x{target[0]} = {target[0] * target[1]:,} pixels, "
                f"over the limit of {cap:,}. Use a smaller scale, or raise RESTOREKIT_MAX_PIXELS "
                "if you have the memory."
            )
        steps = plan_steps(in_h, in_w, target, self.scale)

        opaque = is_opaque(mask)
        run_alpha_through_model = mask is not None and not opaque and mode == "model"
        if mask is not None and not opaque:
            image = fill_transparent(image, mask)
        if run_alpha_through_model:
            assert mask is not None
            image = torch.cat([image, mask.expand(-1, 3, -1, -1)], dim=0)

        tiler = Tiler(
            forward=self.runner,
            scale=self.scale,
            overlap=self.overlap,
            align=self.traits.multiple_of,
            radius=self.traits.radius,
            layout=self.layout,
            device=self.plan.device,
            check=reporter.check,
            canvas_dtype=canvas_dtype(self.plan.dtype),
            width_multiple=self._width_multiple,
        )
        plans = self._plan_passes(steps, in_h, in_w)
        self._announce(plans, image.shape[0])
        fallbacks_before = getattr(self.runner, "fallbacks", 0)
        total = sum(len(plan) * image.shape[0] for plan, _ in plans)
        done = 0

        def windows_done(count: int) -> None:
            nonlocal done
            done += count
            reporter.step(done, total, f"upscale: tile {done}/{total}")

        tiler.on_windows = windows_done
        current = image
        passes = iter(plans)
        for step in steps:
            if step.kind == "resize":
                current = resize(current, step.size, method=self.resize_method)
                continue
            plan, tile = next(passes)
            tiler.batch_size = self._batch_size(plan.window_shape)
            current = self._model_pass(current, tiler, tile)

        out_alpha: torch.Tensor | None = None
        if run_alpha_through_model:
            current, alpha_rgb = current[:batch], current[batch:]
            out_alpha = alpha_rgb.mean(dim=1, keepdim=True).clamp_(0.0, 1.0)
        elif mask is not None:
            out_alpha = torch.ones((batch, 1, *target)) if opaque else resize(mask, target, method=self.resize_method)
        result = to_gray(current) if gray else current
        if 0 in result.stride():  # a gray model's output expanded to RGB: give a real tensor
            result = result.contiguous()
        return UpscaleResult(
            pixels=result,
            alpha=out_alpha,
            model_scale=self.scale,
            passes=sum(1 for s in steps if s.kind == "model"),
            tile=tiler.largest,
            precision=self.plan.precision,
            device=str(self.plan.device),
            fp32_fallbacks=getattr(self.runner, "fallbacks", 0) - fallbacks_before,
            seconds=time.perf_counter() - started,
        )

    def _plan_passes(self, steps: Sequence[Step], height: int, width: int) -> list[tuple[TilePlan, tuple[int, int]]]:
        """The tile plan and window limit of every model pass (for progress totals)."""
        plans = []
        current = (height, width)
        for step in steps:
            if step.kind == "resize":
                current = step.size
                continue
            padded = self._padded_size(*current)
            tile = self._tile_side(*padded)
            plan = plan_tiles(
                padded[0],
                padded[1],
                tile,
                self.overlap,
                scale=self.scale,
                align=self.traits.multiple_of,
                radius=self.traits.radius,
                layout=self.layout,
                width_multiple=self._width_multiple,
            )
            plans.append((plan, tile))
            current = step.size
        return plans

    def _announce(self, plans: Sequence[tuple[TilePlan, tuple[int, int]]], images: int) -> None:
        """Tell the runner how many windows of each shape this job runs (compiled ``auto``)."""
        work: list[tuple[tuple[int, int], int, int]] = []
        for plan, _ in plans:
            counts: dict[tuple[int, int], int] = {}
            for row, col in plan:
                counts[(row.length, col.length)] = counts.get((row.length, col.length), 0) + images
            batch = self._batch_size(plan.window_shape)
            work.extend((shape, count, batch) for shape, count in counts.items())
        expect = getattr(self.runner, "expect", None)
        if expect is not None:
            expect(work)

    def _model_pass(self, image: torch.Tensor, tiler: Tiler, tile: tuple[int, int]) -> torch.Tensor:
        """One network pass over (B, 3, H, W): pre-pad, pad to the size multiple, tile, crop."""
        _, _, h, w = image.shape
        left, right, top, bottom = self._pad_sides()
        padded_h, padded_w = self._padded_size(h, w)
        bottom += padded_h - (h + top + bottom)
        right += padded_w - (w + left + right)
        x = reflect_pad(image, left, right, top, bottom)
        plan = tiler.plan(padded_h, padded_w, tile)
        out = tiler.run(x, plan)
        s = self.scale
        return out[:, :, top * s : (top + h) * s, left * s : (left + w) * s]

    def upscale_image(self, image: DecodedImage, **options: Any) -> DecodedImage:
        """Upscale a :class:`~restorekit.imageio.DecodedImage`, keeping its bit depth, gray
        form, format and metadata (so it is written back the way it came)."""
        result = self.upscale(image.pixels, alpha=image.alpha, **options)
        return image.replace(pixels=result.pixels, alpha=result.alpha)


def _check_pixels(pixels: Any) -> tuple[torch.Tensor, bool]:
    """Validate and normalise input pixels to float32 CPU (B, 3, H, W); returns (image, gray)."""
    if not isinstance(pixels, torch.Tensor):
        raise InvalidParameterError(f"Expected a torch tensor of pixels, got {type(pixels).__name__}.")
    check_image(pixels, what="The image to upscale", hint="Pass alpha separately through alpha=.")
    if pixels.shape[0] < 1 or pixels.shape[2] < 1 or pixels.shape[3] < 1:
        raise InvalidParameterError(f"The image is empty: shape {tuple(pixels.shape)}.")
    if not pixels.is_floating_point():
        raise InvalidParameterError(f"Expected float pixels in [0, 1], got {pixels.dtype}.")
    image = pixels.detach().to(device="cpu", dtype=torch.float32)
    image = torch.nan_to_num(image, nan=0.0, posinf=1.0, neginf=0.0).clamp_(0.0, 1.0)
    gray = image.shape[1] == 1
    if gray:
        image = image.expand(-1, 3, -1, -1)
    return image, gray


def _check_alpha(alpha: Any, image: torch.Tensor) -> torch.Tensor | None:
    if alpha is None:
        return None
    if not isinstance(alpha, torch.Tensor) or not alpha.is_floating_point():
        raise InvalidParameterError("alpha must be a float tensor of shape (B, 1, H, W) in [0, 1].")
    if alpha.ndim == 3:
        alpha = alpha[:, None]
    expected = (image.shape[0], 1, image.shape[2], image.shape[3])
    if tuple(alpha.shape) != expected:
        raise InvalidParameterError(f"alpha has shape {tuple(alpha.shape)}; expected {expected}.")
    return torch.nan_to_num(alpha.detach().to("cpu", torch.float32), nan=1.0).clamp(0.0, 1.0)


# --------------------------------------------------------------------------- functions


_SETTINGS = ("precision", "device", "tile", "overlap", "batch", "layout", "pre_pad", "resize_method", "compile")


def _split(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    settings = {k: options.pop(k) for k in _SETTINGS if k in options}
    return settings, options


def upscale_tensor(model: Any, pixels: torch.Tensor, **options: Any) -> UpscaleResult:
    """Upscale (B, C, H, W) float pixels with ``model`` (a descriptor or a model reference).

    Takes the settings of :class:`Upscaler` (precision, device, tile, overlap, batch, layout,
    pre_pad, resize_method, compile) and the options of :meth:`Upscaler.upscale` (outscale, width,
    height, alpha, alpha_mode, progress, cancel).
    """
    settings, job = _split(dict(options))
    return Upscaler(model, **settings).upscale(pixels, **job)


def upscale_image(model: Any, image: DecodedImage, **options: Any) -> DecodedImage:
    """Upscale a :class:`~restorekit.imageio.DecodedImage` (see :func:`upscale_tensor`)."""
    settings, job = _split(dict(options))
    return Upscaler(model, **settings).upscale_image(image, **job)
