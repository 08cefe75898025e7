"""Training data: HR folders, crops and flips, LR made on the fly, real pairs, the pair pool.

Every random choice of a sample is drawn from its own seed, derived from the run seed and
the sample's *global index* (iteration x global batch + position). So a sample's crop, flips
and degradation do not depend on the batch split, the number of processes, or whether the
run was resumed: that is what makes ``--resume`` and data-parallel runs exact.

Modes (:data:`~restorekit.train.config.MODES`):

- ``degrade``: an HR crop of ``degrade_size`` (reflect-padded if smaller, as Real-ESRGAN's
  ``crop_pad_size``) is degraded by :mod:`restorekit.degrade` on the training device, in one
  batch; HR and LR are then cut to ``gt_size`` together.
- ``paired``: HR and LR images matched by file name (stem), cropped together.
- ``bicubic``: the LR is MATLAB's antialiased bicubic downscale of the HR crop, on 8 bits.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..degrade import apply_plans, sample_plan, usm_sharpen
from ..degrade.ops import matlab_resize, quantize, reflect_indices
from ..degrade.pipeline import derive_seed
from ..errors import ImageReadError, InvalidParameterError
from ..imageio import IMAGE_EXTENSIONS, read_image, read_image_size
from .config import TrainConfig

logger = logging.getLogger(__name__)

SKIPPED_EXTENSIONS = frozenset({".gif"})
"""Animated formats are not training images."""


# --------------------------------------------------------------------------- folders


@dataclass
class ImageRecord:
    """One training image: its HR file, size (width, height) and, in paired mode, its LR file."""

    path: Path
    width: int
    height: int
    lr_path: Path | None = None


@dataclass
class ImageFolder:
    """The usable images of a folder, and the ones skipped with the reason."""

    root: Path
    records: list[ImageRecord]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def fingerprint(self) -> str:
        """SHA-256 over the relative paths, byte sizes and pixel sizes of the images."""
        digest = hashlib.sha256()
        for record in self.records:
            rel = record.path.relative_to(self.root) if record.path.is_relative_to(self.root) else record.path
            digest.update(f"{rel.as_posix()}\0{record.path.stat().st_size}\0{record.width}x{record.height}\n".encode())
        return digest.hexdigest()


def find_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted, hidden files skipped)."""
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and p.suffix.lower() not in SKIPPED_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )  # fmt: skip


def _check_folder(folder: str | Path, what: str) -> Path:
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise InvalidParameterError(f"The {what} folder {path} does not exist or is not a folder.")
    return path


def scan_folder(
    folder: str | Path,
    *,
    min_size: int,
    lr_folder: str | Path | None = None,
    scale: int = 4,
    what: str = "training",
) -> ImageFolder:
    """Find the usable images of ``folder``: readable headers, both sides >= ``min_size``.

    With ``lr_folder`` every HR image needs an LR image of the same stem (anywhere below
    ``lr_folder``, same relative folder preferred) whose size times ``scale`` is the HR size.
    Unusable files are skipped and counted; none left is an :class:`InvalidParameterError`.
    """
    root = _check_folder(folder, what)
    lr_root = _check_folder(lr_folder, f"{what} LR") if lr_folder is not None else None
    lr_index: dict[str, Path] = {}
    if lr_root is not None:
        for path in find_images(lr_root):
            rel = path.relative_to(lr_root).with_suffix("").as_posix()
            lr_index.setdefault(rel, path)
            lr_index.setdefault(path.stem, path)
    files = find_images(root)
    records: list[ImageRecord] = []
    skipped: list[tuple[str, str]] = []
    for path in files:
        try:
            width, height = read_image_size(path)
        except (ImageReadError, OSError, ValueError) as exc:
            skipped.append((str(path), f"unreadable ({exc})"))
            continue
        if min(width, height) < min_size:
            skipped.append((str(path), f"too small ({width}x{height}, need at least {min_size} px a side)"))
            continue
        lr_path = None
        if lr_root is not None:
            rel = path.relative_to(root).with_suffix("").as_posix()
            lr_path = lr_index.get(rel) or lr_index.get(path.stem)
            if lr_path is None:
                skipped.append((str(path), f"no LR image named {path.stem}.* in {lr_root}"))
                continue
            try:
                lr_w, lr_h = read_image_size(lr_path)
            except (ImageReadError, OSError, ValueError) as exc:
                skipped.append((str(path), f"its LR {lr_path.name} is unreadable ({exc})"))
                continue
            if (lr_w * scale, lr_h * scale) != (width, height):
                skipped.append((str(path), f"HR {width}x{height} is not x{scale} its LR {lr_path.name} {lr_w}x{lr_h}"))
                continue
        records.append(ImageRecord(path, width, height, lr_path))
    for name, reason in skipped:
        logger.warning("skipping %s: %s", name, reason)
    if not records:
        found = f"{len(files)} image file(s), all skipped" if files else "no image files"
        reasons = "; ".join(f"{Path(n).name}: {r}" for n, r in skipped[:3])
        raise InvalidParameterError(
            f"No usable {what} images in {root}: {found}"
            + (f" ({reasons})" if reasons else "")
            + f". Give a folder of PNG/JPEG/WebP/TIFF images at least {min_size} px on each side"
            + (f", each with an LR image of the same name in {lr_root}" if lr_root is not None else "")
            + "."
        )
    return ImageFolder(root, records, skipped)


# --------------------------------------------------------------------------- images


def load_pixels(path: Path) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1] (gray expanded, alpha dropped)."""
    return read_image(path).pixels[0]


class ImageCache:
    """A small LRU cache of decoded images (training draws the same files again and again)."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Path, torch.Tensor] = OrderedDict()
        self._bytes = 0

    def get(self, path: Path) -> torch.Tensor:
        if path in self._items:
            self._items.move_to_end(path)
            return self._items[path]
        pixels = load_pixels(path)
        size = pixels.numel() * pixels.element_size()
        if size <= self.max_bytes:
            self._items[path] = pixels
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.numel() * old.element_size()
        return pixels


# --------------------------------------------------------------------------- augmentation


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed % (2**63 - 1))


def _uniform(generator: torch.Generator) -> float:
    return float(torch.rand((), generator=generator, dtype=torch.float64))


def _integer(generator: torch.Generator, high: int) -> int:
    """Uniform in [0, high]."""
    return int(torch.randint(0, high + 1, (), generator=generator))


def augment(images: Sequence[torch.Tensor], generator: torch.Generator, hflip: bool, rotation: bool) -> list[torch.Tensor]:
    """basicsr's ``augment``: horizontal flip, vertical flip, transpose (each with p=0.5,
    the last two only with ``rotation``), the same for every image of ``images``."""
    do_h = hflip and _uniform(generator) < 0.5
    do_v = rotation and _uniform(generator) < 0.5
    do_t = rotation and _uniform(generator) < 0.5
    out = []
    for image in images:
        if do_h:
            image = image.flip(-1)
        if do_v:
            image = image.flip(-2)
        if do_t:
            image = image.transpose(-1, -2)
        out.append(image)
    return out


def pad_reflect101(image: torch.Tensor, size: int) -> torch.Tensor:
    """Pad bottom/right to at least ``size`` x ``size`` by reflection (OpenCV BORDER_REFLECT_101)."""
    h, w = image.shape[-2:]
    if h >= size and w >= size:
        return image
    rows = reflect_indices(h, 0, max(0, size - h), image.device)
    cols = reflect_indices(w, 0, max(0, size - w), image.device)
    return image.index_select(-2, rows).index_select(-1, cols)


def random_crop(image: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    h, w = image.shape[-2:]
    top, left = _integer(generator, h - size), _integer(generator, w - size)
    return image[..., top : top + size, left : left + size]


def paired_crop(gt: torch.Tensor, lq: torch.Tensor, gt_size: int, scale: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Aligned random crops: LR ``gt_size/scale`` and the HR window above it."""
    lq_size = gt_size // scale
    h, w = lq.shape[-2:]
    top, left = _integer(generator, h - lq_size), _integer(generator, w - lq_size)
    lq = lq[..., top : top + lq_size, left : left + lq_size]
    gt = gt[..., top * scale : (top + lq_size) * scale, left * scale : (left + lq_size) * scale]
    return gt, lq


# --------------------------------------------------------------------------- pairs


@dataclass
class Batch:
    """One batch of training pairs: ``lq`` (B, 3, h, w) and ``gt`` (B, 3, s*h, s*w) in [0, 1]
    on the training device; ``gt`` is not sharpened (the trainer sharpens where asked)."""

    lq: torch.Tensor
    gt: torch.Tensor


class PairMaker:
    """Makes the training batch of any list of global sample indices, deterministically."""

    def __init__(self, config: TrainConfig, folder: ImageFolder, device: torch.device, *, cache_bytes: int = 1 << 30) -> None:
        self.config = config
        self.folder = folder
        self.device = device
        self.cache = ImageCache(cache_bytes)
        self.bad: dict[int, str] = {}
        self._orders: dict[int, torch.Tensor] = {}
        self._degrade = config.degrade_config() if config.mode == "degrade" else None
        self._degrade_seed = derive_seed(config.seed, "degrade")

    # ---- which image a sample uses
    def _order(self, epoch: int) -> torch.Tensor:
        if epoch not in self._orders:
            if len(self._orders) > 2:
                self._orders.pop(min(self._orders))
            self._orders[epoch] = torch.randperm(len(self.folder), generator=_generator(derive_seed(self.config.seed, "epoch", epoch)))
        return self._orders[epoch]

    def image_index(self, sample: int) -> int:
        """The image of global sample ``sample``: a fresh shuffle of the folder per epoch."""
        count = len(self.folder)
        return int(self._order(sample // count)[sample % count])

    def _load(self, sample: int) -> tuple[ImageRecord, torch.Tensor, torch.Tensor | None]:
        """Decode the sample's image (and LR); an image that fails to decode is skipped for
        good and the next one of the same shuffle is used."""
        count = len(self.folder)
        order = self._order(sample // count)
        for step in range(count):
            index = int(order[(sample + step) % count])
            if index in self.bad:
                continue
            record = self.folder.records[index]
            try:
                hr = self.cache.get(record.path)
                lr = self.cache.get(record.lr_path) if record.lr_path is not None else None
            except ImageReadError as exc:
                self.bad[index] = str(exc)
                logger.warning("skipping %s from now on: %s", record.path, exc)
                continue
            return record, hr, lr
        raise InvalidParameterError(
            f"None of the {count} training images in {self.folder.root} can be decoded "
            f"(first: {next(iter(self.bad.values()), 'unknown')}). Check the files."
        )

    # ---- batches
    def make(self, samples: Sequence[int]) -> Batch:
        """The pairs of global sample indices ``samples`` (one batch, on the device)."""
        maker = {"degrade": self._make_degraded, "paired": self._make_paired, "bicubic": self._make_bicubic}[self.config.mode]
        return maker(list(samples))

    def _make_degraded(self, samples: list[int]) -> Batch:
        c = self.config
        assert self._degrade is not None
        crops = []
        for sample in samples:
            _, hr, _ = self._load(sample)
            generator = _generator(derive_seed(c.seed, "crop", sample))
            (hr,) = augment([hr], generator, c.use_hflip, c.use_rot)
            crops.append(random_crop(pad_reflect101(hr, c.degrade_size), c.degrade_size, generator))
        hr_batch = torch.stack(crops).to(self.device)
        plans = [sample_plan(self._degrade, derive_seed(self._degrade_seed, "image", s), c.scale) for s in samples]
        lq = apply_plans(hr_batch, plans).lr
        gts, lqs = [], []
        for i, sample in enumerate(samples):
            generator = _generator(derive_seed(c.seed, "pair-crop", sample))
            gt, small = paired_crop(hr_batch[i], lq[i], c.gt_size, c.scale, generator)
            gts.append(gt)
            lqs.append(small)
        return Batch(lq=torch.stack(lqs).contiguous(), gt=torch.stack(gts).contiguous())

    def _make_paired(self, samples: list[int]) -> Batch:
        c = self.config
        gts, lqs = [], []
        for sample in samples:
            _, hr, lr = self._load(sample)
            assert lr is not None
            generator = _generator(derive_seed(c.seed, "crop", sample))
            gt, small = paired_crop(hr, lr, c.gt_size, c.scale, generator)
            gt, small = augment([gt, small], generator, c.use_hflip, c.use_rot)
            gts.append(gt)
            lqs.append(small)
        return Batch(lq=torch.stack(lqs).to(self.device).contiguous(), gt=torch.stack(gts).to(self.device).contiguous())

    def _make_bicubic(self, samples: list[int]) -> Batch:
        c = self.config
        gts = []
        for sample in samples:
            _, hr, _ = self._load(sample)
            generator = _generator(derive_seed(c.seed, "crop", sample))
            gt = random_crop(hr, c.gt_size, generator)
            (gt,) = augment([gt], generator, c.use_hflip, c.use_rot)
            gts.append(gt)
        gt = torch.stack(gts).to(self.device).contiguous()
        size = c.gt_size // c.scale
        lq = quantize(matlab_resize(gt, (size, size), 1.0 / c.scale)) if c.scale > 1 else gt.clone()
        return Batch(lq=lq.contiguous(), gt=gt)


# --------------------------------------------------------------------------- pair pool


class PairPool:
    """Real-ESRGAN's training pair pool (``queue_size``): batches are mixed across iterations.

    Until the pool is full each batch is stored and used as is; then the pool is shuffled,
    its first B pairs are handed out and replaced by the new batch. The shuffle draws from
    a seed of (run seed, iteration, rank), and the pool is part of the checkpoint, so a
    resumed run continues exactly.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.lq: torch.Tensor | None = None
        self.gt: torch.Tensor | None = None
        self.pointer = 0

    def __call__(self, batch: Batch, seed: int) -> Batch:
        if self.size == 0:
            return batch
        b = batch.lq.shape[0]
        if self.size % b:
            raise InvalidParameterError(f"queue_size {self.size} must be a multiple of the batch per process {b}.")
        if self.lq is None or self.gt is None:
            self.lq = batch.lq.new_zeros((self.size, *batch.lq.shape[1:]))
            self.gt = batch.gt.new_zeros((self.size, *batch.gt.shape[1:]))
            self.pointer = 0
        if self.pointer == self.size:
            order = torch.randperm(self.size, generator=_generator(seed)).to(self.lq.device)
            self.lq, self.gt = self.lq[order], self.gt[order]
            out = Batch(lq=self.lq[:b].clone(), gt=self.gt[:b].clone())
            self.lq[:b] = batch.lq
            self.gt[:b] = batch.gt
            return out
        self.lq[self.pointer : self.pointer + b] = batch.lq
        self.gt[self.pointer : self.pointer + b] = batch.gt
        self.pointer += b
        return batch

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
        """(tensors, JSON values) for a checkpoint."""
        tensors = {} if self.lq is None or self.gt is None else {"pool.lq": self.lq, "pool.gt": self.gt}
        return tensors, {"pointer": self.pointer, "size": self.size}

    def load(self, tensors: dict[str, torch.Tensor], values: dict[str, int], device: torch.device) -> None:
        self.pointer = int(values.get("pointer", 0))
        if "pool.lq" in tensors:
            self.lq = tensors["pool.lq"].to(device)
            self.gt = tensors["pool.gt"].to(device)


def sharpen_gt(gt: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """Real-ESRGAN's USM-sharpened GT (``*_gt_usm``), with the degradation config's USM."""
    d = config.degrade_config() if config.mode == "degrade" else None
    if d is None:
        return usm_sharpen(gt)
    return usm_sharpen(gt, sigma=d.usm_sigma, kernel_size=d.usm_kernel_size, weight=d.usm_weight, threshold=d.usm_threshold)


# --------------------------------------------------------------------------- validation


@dataclass
class ValidationImage:
    """A held-out image: ``lq`` (1, 3, h, w) and ``gt`` (1, 3, s*h, s*w) in [0, 1] on the CPU."""

    name: str
    lq: torch.Tensor
    gt: torch.Tensor


def _centre(image: torch.Tensor, size: int, scale: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    if size:
        ch, cw = min(size, h), min(size, w)
        top, left = (h - ch) // 2, (w - cw) // 2
        image = image[..., top : top + ch, left : left + cw]
        h, w = ch, cw
    return image[..., : h - h % scale, : w - w % scale]


def validation_set(config: TrainConfig, folder: str | Path, lr_folder: str | Path | None = None) -> list[ValidationImage]:
    """Held-out pairs: HR images degraded with fixed seeds (``val_seed`` + index) the way
    the run makes its training LR, or real LR/HR pairs from ``lr_folder``."""
    scanned = scan_folder(folder, min_size=config.scale * 4, lr_folder=lr_folder, scale=config.scale, what="validation")
    degrade_config = config.degrade_config() if config.mode == "degrade" else None
    out = []
    for index, record in enumerate(scanned.records):
        hr = load_pixels(record.path)[None]
        if record.lr_path is not None:
            lr = load_pixels(record.lr_path)[None]
            if config.val_crop:
                size = config.val_crop // config.scale
                lr = _centre(lr, size, 1)
                h, w = lr.shape[-2:]
                full_h, full_w = hr.shape[-2:]
                top = ((full_h // config.scale - h) // 2) * config.scale
                left = ((full_w // config.scale - w) // 2) * config.scale
                hr = hr[..., top : top + h * config.scale, left : left + w * config.scale]
            out.append(ValidationImage(record.path.stem, lr, hr))
            continue
        hr = _centre(hr, config.val_crop, config.scale)
        h, w = hr.shape[-2] // config.scale, hr.shape[-1] // config.scale
        if degrade_config is not None:
            plan = sample_plan(degrade_config, derive_seed(config.val_seed, "validation", index), config.scale)
            lr = apply_plans(hr, [plan]).lr
        else:
            lr = quantize(matlab_resize(hr, (h, w), 1.0 / config.scale)) if config.scale > 1 else hr.clone()
        out.append(ValidationImage(record.path.stem, lr, hr))
    return out
