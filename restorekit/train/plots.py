"""Pictures that show training working: loss and PSNR curves over iterations, and a strip of
before/after crops of a validation image.

Curves are drawn with matplotlib when it is installed (it is not a dependency) and with PIL
otherwise; both write a PNG atomically. Images are (1, 3, H, W) or (3, H, W) float RGB
tensors in [0, 1].
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..errors import InvalidParameterError
from ..files import atomic_write_bytes

__all__ = ["PALETTE", "comparison_strip", "detail_box", "plot_training_curves"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
"""Line colours, in the order the series are drawn."""

History = Sequence[Mapping[str, float | int | None]]


# --------------------------------------------------------------------------- curves


def _series(history: History, key: str, x_key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for record in history:
        value = record.get(key)
        if value is None or record.get(x_key) is None:
            continue
        value = float(value)
        if math.isfinite(value):
            xs.append(float(record[x_key]))  # type: ignore[arg-type]
            ys.append(value)
    return xs, ys


def _loss_keys(history: History, loss_keys: Sequence[str] | None) -> list[str]:
    if loss_keys is not None:
        return list(loss_keys)
    keys: dict[str, None] = {}
    for record in history:
        for key in record:
            if key.startswith("l_"):
                keys[key] = None
    return list(keys)


def plot_training_curves(
    history: History,
    path: str | Path,
    *,
    loss_keys: Sequence[str] | None = None,
    metric_key: str = "psnr",
    x_key: str = "iter",
    title: str = "Training",
    backend: str = "auto",
) -> Path:
    """Draw the losses (top, log scale when all positive) and the validation metric (bottom,
    e.g. PSNR in dB) against iterations, and write a PNG.

    Args:
        history: records such as ``{"iter": 100, "l_g_pix": 0.03, "psnr": 24.1}``; a key may
            be missing from a record (validation runs less often than logging).
        path: the PNG to write (atomically).
        loss_keys: the loss series (default: every key starting with ``l_``).
        metric_key: the validation series of the lower panel.
        backend: ``auto`` (matplotlib if installed, else PIL), ``matplotlib`` or ``pil``.
    """
    if backend not in ("auto", "matplotlib", "pil"):
        raise InvalidParameterError(f"backend must be auto, matplotlib or pil, got {backend!r}.")
    losses = {key: _series(history, key, x_key) for key in _loss_keys(history, loss_keys)}
    losses = {key: series for key, series in losses.items() if series[0]}
    metric = _series(history, metric_key, x_key)
    if not losses and not metric[0]:
        raise InvalidParameterError(f"Nothing to plot: no finite losses or {metric_key!r} values in the history.")
    if backend == "auto":
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            backend = "pil"
        else:
            backend = "matplotlib"
    draw = _draw_matplotlib if backend == "matplotlib" else _draw_pil
    data = draw(losses, metric, metric_key, title)
    return atomic_write_bytes(path, data)


def _draw_matplotlib(
    losses: Mapping[str, tuple[list[float], list[float]]],
    metric: tuple[list[float], list[float]],
    metric_key: str,
    title: str,
) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 6), dpi=100)
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True)
    for index, (key, (xs, ys)) in enumerate(losses.items()):
        top.plot(xs, ys, color=PALETTE[index % len(PALETTE)], label=key, linewidth=1.2)
    if losses and all(y > 0 for _, ys in losses.values() for y in ys):
        top.set_yscale("log")
    top.set_ylabel("loss")
    top.set_title(title)
    if losses:
        top.legend(loc="upper right", fontsize="small")
    top.grid(True, alpha=0.3)
    bottom.plot(*metric, color="#000000", marker="o", markersize=3, linewidth=1.2)
    bottom.set_ylabel(f"{metric_key} (dB)" if metric_key.startswith("psnr") else metric_key)
    bottom.set_xlabel("iteration")
    bottom.grid(True, alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    step = 10 ** math.floor(math.log10((high - low) / count))
    for factor in (1, 2, 5, 10):
        if (high - low) / (step * factor) <= count:
            step *= factor
            break
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step) + 1)]


def _draw_pil(
    losses: Mapping[str, tuple[list[float], list[float]]],
    metric: tuple[list[float], list[float]],
    metric_key: str,
    title: str,
) -> bytes:
    width, height = 900, 600
    image = Image.new("RGB", (width, height), "white")
    canvas = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    canvas.text((width // 2 - 4 * len(title), 8), title, fill="black", font=font)
    xs_all = [x for xs, _ in losses.values() for x in xs] + metric[0]
    x_low, x_high = min(xs_all), max(xs_all)
    if x_high == x_low:
        x_high = x_low + 1
    left, right = 80, width - 20
    panels = ((30, 330), (370, height - 40))

    def x_pixel(x: float) -> float:
        return left + (x - x_low) / (x_high - x_low) * (right - left)

    def frame(top: int, bottom: int, low: float, high: float, log: bool, label: str) -> None:
        canvas.rectangle((left, top, right, bottom), outline="black")
        canvas.text((8, (top + bottom) // 2), label, fill="black", font=font)
        for tick in _ticks(low, high):
            y = bottom - (tick - low) / (high - low) * (bottom - top)
            canvas.line((left - 4, y, left, y), fill="black")
            canvas.line((left, y, right, y), fill="#e6e6e6")
            text = f"{10 ** tick:.3g}" if log else f"{tick:.4g}"
            canvas.text((left - 8 - 6 * len(text), y - 6), text, fill="black", font=font)

    def polyline(points: list[tuple[float, float]], colour: str, dots: bool) -> None:
        if len(points) > 1:
            canvas.line(points, fill=colour, width=2)
        if dots or len(points) == 1:
            for x, y in points:
                canvas.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)

    if losses:
        top, bottom = panels[0]
        values = [y for _, ys in losses.values() for y in ys]
        log = all(v > 0 for v in values)
        transform = (lambda v: math.log10(v)) if log else (lambda v: v)
        low, high = min(map(transform, values)), max(map(transform, values))
        if high == low:
            low, high = low - 1, high + 1
        frame(top, bottom, low, high, log, "loss")
        for index, (key, (xs, ys)) in enumerate(losses.items()):
            colour = PALETTE[index % len(PALETTE)]
            points = [(x_pixel(x), bottom - (transform(y) - low) / (high - low) * (bottom - top)) for x, y in zip(xs, ys, strict=True)]
            polyline(points, colour, dots=False)
            canvas.line((right - 150, top + 12 + 14 * index, right - 130, top + 12 + 14 * index), fill=colour, width=2)
            canvas.text((right - 124, top + 6 + 14 * index), key, fill="black", font=font)
    if metric[0]:
        top, bottom = panels[1]
        low, high = min(metric[1]), max(metric[1])
        if high == low:
            low, high = low - 0.5, high + 0.5
        frame(top, bottom, low, high, False, "PSNR dB" if metric_key.startswith("psnr") else metric_key)
        points = [(x_pixel(x), bottom - (y - low) / (high - low) * (bottom - top)) for x, y in zip(*metric, strict=True)]
        polyline(points, "#000000", dots=True)
    axis_y = panels[1][1]
    for tick in _ticks(x_low, x_high):
        x = x_pixel(tick)
        canvas.line((x, axis_y, x, axis_y + 4), fill="black")
        canvas.text((x - 3 * len(f"{tick:g}"), axis_y + 8), f"{tick:g}", fill="black", font=font)
    canvas.text((width // 2 - 24, height - 14), "iteration", fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------- crops


def _as_chw(image: torch.Tensor) -> torch.Tensor:
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise InvalidParameterError(f"One image at a time, got a batch of {image.shape[0]}.")
        image = image[0]
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise InvalidParameterError(f"Images are (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}.")
    return image.detach().float().cpu().clamp(0, 1).expand(3, -1, -1)


def detail_box(image: torch.Tensor, size: int) -> tuple[int, int, int, int]:
    """The ``size`` x ``size`` box ``(left, top, right, bottom)`` of ``image`` with the most
    detail (gradient energy): where a restoration's effect is easiest to see."""
    chw = _as_chw(image)
    h, w = chw.shape[-2:]
    size = min(size, h, w)
    gray = chw.mean(0, keepdim=True)[None]
    energy = (gray[..., 1:, :-1] - gray[..., :-1, :-1]).abs() + (gray[..., :-1, 1:] - gray[..., :-1, :-1]).abs()
    if min(energy.shape[-2:]) < size or size < 2:
        return 0, 0, size, size
    stride = max(1, size // 4)
    scores = torch.nn.functional.avg_pool2d(energy, size - 1, stride=stride)[0, 0]
    row, col = divmod(int(scores.argmax()), scores.shape[1])
    top, left = row * stride, col * stride
    return left, top, left + size, top + size


def comparison_strip(
    panels: Sequence[tuple[str, torch.Tensor]],
    path: str | Path | None = None,
    *,
    crop: int = 128,
    box: tuple[int, int, int, int] | None = None,
    zoom: int = 2,
) -> Image.Image:
    """Side-by-side crops of the same region of several versions of one validation image.

    Args:
        panels: ``(label, image)`` pairs, e.g. ``[("input", lq), ("start", sr0),
            ("iter 5000", sr), ("ground truth", gt)]``. Images may differ in scale (an LR
            input): each is resized (nearest) to the largest one's size first.
        path: a PNG to write atomically, or None.
        crop: crop size in pixels of the largest image.
        box: ``(left, top, right, bottom)`` in the largest image; default: the most detailed
            region of the last panel (:func:`detail_box`).
        zoom: nearest-neighbour magnification of the crops (pixels stay visible).

    Returns the strip as a PIL image (labels above each crop).
    """
    if not panels:
        raise InvalidParameterError("comparison_strip needs at least one (label, image) panel.")
    images = [(label, _as_chw(image)) for label, image in panels]
    height = max(image.shape[-2] for _, image in images)
    width = max(image.shape[-1] for _, image in images)
    resized = []
    for label, image in images:
        if image.shape[-2:] != (height, width):
            image = torch.nn.functional.interpolate(image[None], size=(height, width), mode="nearest")[0]
        resized.append((label, image))
    if box is None:
        box = detail_box(resized[-1][1], crop)
    left, top, right, bottom = box
    if not (0 <= left < right <= width and 0 <= top < bottom <= height):
        raise InvalidParameterError(f"Crop box {box} is outside the {width}x{height} image.")
    label_height, gap = 18, 6
    crop_w, crop_h = (right - left) * zoom, (bottom - top) * zoom
    strip = Image.new("RGB", (len(resized) * (crop_w + gap) - gap, crop_h + label_height), "white")
    canvas = ImageDraw.Draw(strip)
    font = ImageFont.load_default()
    for index, (label, image) in enumerate(resized):
        pixels = (image[:, top:bottom, left:right].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        tile = Image.fromarray(pixels).resize((crop_w, crop_h), Image.Resampling.NEAREST)
        x = index * (crop_w + gap)
        strip.paste(tile, (x, label_height))
        canvas.text((x + 2, 3), label, fill="black", font=font)
    if path is not None:
        buffer = io.BytesIO()
        strip.save(buffer, format="PNG")
        atomic_write_bytes(path, buffer.getvalue())
    return strip
