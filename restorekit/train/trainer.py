"""The training loop: Real-ESRNet (L1), Real-ESRGAN (L1 + perceptual + GAN, U-Net D) and
ESRGAN (RaGAN, VGG-style D), as basicsr's ``SRModel`` / ``RealESRGANModel`` /
``ESRGANModel`` optimise, with EMA, accumulation, mixed precision, exact resume and
data-parallel processes.

One iteration (``i`` from 1):

1. learning rates ``lr * gamma ** #(milestones <= i - 1)`` (basicsr steps its scheduler
   before every iteration but the first);
2. this process's share of the global batch, made from global sample indices (see
   :mod:`.data`), through the pair pool; the GT is USM-sharpened where the ``*_gt_usm``
   options ask;
3. G step (D frozen): ``G(lq)``; pixel + perceptual + GAN losses (the GAN term once
   ``i % net_d_iters == 0 and i > net_d_init_iters``); 4. D step: real then fake; 5. EMA.

Gradients of micro-batches (``accumulate``) are summed with weight 1/k, and averaged over
processes (``torch.distributed`` all-reduce) before each optimiser step, so k micro-batches
or N processes give the result of one batch of the same global size (for losses that are
means over the batch: all but RaGAN's batch-mean terms).
"""

from __future__ import annotations

import bisect
import copy
import csv
import io
import json
import logging
import math
import shutil
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import environment
from ..degrade.pipeline import derive_seed
from ..device import cpu_has_fast_bf16, resolve_device
from ..errors import InvalidParameterError, ModelIncompatibleError, RestoreKitError
from ..files import atomic_write_text
from ..progress import CancelCheck, ProgressCallback, Reporter
from . import checkpoint as ckpt
from .config import RESUMABLE_CHANGES, TrainConfig
from .data import (
    Batch,
    ImageFolder,
    PairMaker,
    PairPool,
    ValidationImage,
    scan_folder,
    sharpen_gt,
    validation_set,
)
from .networks import build_generator, load_generator_weights

logger = logging.getLogger(__name__)

LOSS_KEYS: tuple[str, ...] = ("l_g_pix", "l_g_percep", "l_g_gan", "l_d_real", "l_d_fake", "out_d_real", "out_d_fake")
CSV_COLUMNS: tuple[str, ...] = ("iteration", "lr_g", *LOSS_KEYS, "val_psnr", "val_ssim", "seconds")


class TrainingDivergedError(RestoreKitError):
    """A loss became NaN or infinite; training stopped with the last good checkpoint kept."""


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in a data-parallel run (``rank`` of ``world``)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: torch.device) -> ProcessGroup:
        """Join the ``torchrun`` group named by the environment (gloo on the CPU, nccl on GPUs)."""
        world = environment.distributed_world_size()
        if world <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size())

    def average_gradients(self, module: nn.Module) -> None:
        """Average the gradients of ``module`` over processes (one flat all-reduce)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def all_true(self, flag: bool) -> bool:
        """True when ``flag`` holds on every process."""
        if self.world == 1:
            return flag
        import torch.distributed as dist

        value = torch.tensor([1 if flag else 0], dtype=torch.int64)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item())

    def any_true(self, flag: bool) -> bool:
        return not self.all_true(not flag)

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        if self.world == 1 or not values:
            return values
        import torch.distributed as dist

        keys = sorted(values)
        tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64)
        dist.all_reduce(tensor)
        return {k: float(v) / self.world for k, v in zip(keys, tensor.tolist(), strict=True)}

    def gather_to_main(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """``tensor`` of every process, on the main one (an empty list elsewhere)."""
        if self.world == 1:
            return [tensor]
        import torch.distributed as dist

        tensor = tensor.detach().cpu().contiguous()
        parts = [torch.empty_like(tensor) for _ in range(self.world)] if self.main else None
        dist.gather(tensor, parts, dst=0)
        return parts or []


# --------------------------------------------------------------------------- precision


@dataclass
class Precision:
    """Autocast dtype (None = fp32) and the fp16 grad scaler."""

    device: torch.device
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None = None

    @classmethod
    def resolve(cls, name: str, device: torch.device) -> Precision:
        if name == "auto":
            if device.type == "cuda":
                name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            else:
                name = "bf16" if cpu_has_fast_bf16() else "fp32"
        if name == "fp16":
            if device.type != "cuda":
                raise InvalidParameterError("precision fp16 needs a CUDA GPU (with a grad scaler); use bf16 or fp32 on the CPU.")
            return cls(device, torch.float16, torch.amp.GradScaler("cuda"))
        if name == "bf16":
            if device.type == "cpu" and not cpu_has_fast_bf16():
                logger.warning("this CPU has no native bf16 (AVX512-BF16/AMX): bf16 training will be slow; fp32 is faster here")
            return cls(device, torch.bfloat16)
        return cls(device, None)

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self) -> AbstractContextManager[Any]:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        with torch.autocast(self.device.type, enabled=False):
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()


# --------------------------------------------------------------------------- results


@dataclass
class ValidationResult:
    iteration: int
    psnr: float
    ssim: float
    per_image: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass
class TrainResult:
    """What :meth:`Trainer.run` returns."""

    output: Path | None
    iterations: int
    stop_reason: str
    """``done``, ``cancelled``."""
    checkpoint: Path | None
    best_psnr: float | None = None
    best_output: Path | None = None
    last_validation: ValidationResult | None = None
    skipped_images: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


# --------------------------------------------------------------------------- trainer


def learning_rate(base: float, iteration: int, milestones: tuple[int, ...], gamma: float) -> float:
    """basicsr's MultiStep schedule at 1-based ``iteration``."""
    return base * gamma ** bisect.bisect_right(milestones, iteration - 1)


def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """basicsr's ``model_ema``: parameters only, ``ema = decay * ema + (1 - decay) * model``."""
    with torch.no_grad():
        own = dict(model.named_parameters())
        for name, param in ema.named_parameters():
            param.mul_(decay).add_(own[name].detach(), alpha=1 - decay)


class Trainer:
    """Trains a generator on a folder of images; see the module docstring.

    Args:
        config: the :class:`TrainConfig` (e.g. from :func:`~restorekit.train.config.get_preset`).
        data: folder of HR images (recursive).
        run_dir: where checkpoints, metrics, pictures and the output go.
        lr_data: LR folder for ``mode=paired``.
        val_data, val_lr_data: held-out HR images (and their real LR images).
        resume: continue from the newest checkpoint in ``run_dir``.
        force: resume even when the config differs from the checkpoint's.
        vgg_weights: torchvision-keyed VGG19 weights for the perceptual loss (None: the
            registry model ``vgg19``).
        progress, cancel: ``(done, total, message)`` per iteration and a cancel check; a
            cancel saves a checkpoint and returns with ``stop_reason="cancelled"``.
    """

    def __init__(
        self,
        config: TrainConfig,
        data: str | Path,
        run_dir: str | Path,
        *,
        lr_data: str | Path | None = None,
        val_data: str | Path | None = None,
        val_lr_data: str | Path | None = None,
        resume: bool = False,
        force: bool = False,
        vgg_weights: Mapping[str, torch.Tensor] | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.reporter = Reporter.of(progress, None)
        self.cancel = cancel
        self.resume = resume
        self.force = force
        if config.mode == "paired" and lr_data is None:
            raise InvalidParameterError("mode=paired needs the LR folder (--lr DIR) next to the HR folder (--data).")
        if config.mode != "paired" and lr_data is not None:
            raise InvalidParameterError(f"An LR folder was given but mode={config.mode}; add --set mode=paired to train on real pairs.")
        self.device = resolve_device(config.device)
        self.precision = Precision.resolve(config.precision, self.device)
        self.group = ProcessGroup.from_environment(self.device)
        if config.batch_size % (self.group.world * config.accumulate):
            raise InvalidParameterError(
                f"batch_size {config.batch_size} must be divisible by processes x accumulate "
                f"({self.group.world} x {config.accumulate})."
            )
        self.local_batch = config.batch_size // self.group.world
        min_size = config.gt_size if config.mode != "degrade" else min(config.gt_size, config.degrade_size)
        self.folder: ImageFolder = scan_folder(data, min_size=min_size, lr_folder=lr_data, scale=config.scale)
        self.validation: list[ValidationImage] = validation_set(config, val_data, val_lr_data) if val_data is not None else []
        self.maker = PairMaker(config, self.folder, self.device)
        self.pool = PairPool(config.queue_size)
        if config.queue_size and config.queue_size % self.local_batch:
            raise InvalidParameterError(
                f"queue_size {config.queue_size} must be a multiple of the batch per process {self.local_batch}."
            )
        self._build_networks()
        self._build_losses(vgg_weights)
        self.iteration = 0
        self.history: list[dict[str, Any]] = []
        self.best_psnr: float | None = None
        self._loss_sums: dict[str, float] = {}
        self._loss_count = 0
        self._start_output: torch.Tensor | None = None

    # ------------------------------------------------------------------ setup

    def _build_networks(self) -> None:
        c = self.config
        torch.manual_seed(derive_seed(c.seed, "init") % (2**63 - 1))
        self.net_g = build_generator(c)
        self.base_model = c.pretrained or "scratch"
        if c.pretrained:
            state, source = _load_state(c.pretrained)
            if "params_ema" in state or "params" in state:  # pragma: no cover - foreign layout
                raise ModelIncompatibleError(f"{source} holds nested params; import it with `restorekit models import` first.")
            load_generator_weights(self.net_g, state, c, source)
        self.net_g.to(self.device, memory_format=torch.channels_last).train()
        self.net_g_ema: nn.Module | None = None
        if c.ema_decay > 0:
            self.net_g_ema = copy.deepcopy(self.net_g).eval()
            for p in self.net_g_ema.parameters():
                p.requires_grad_(False)
        self.net_d: nn.Module | None = None
        if c.discriminator != "none":
            from .discriminators import UNetDiscriminatorSN, VGGStyleDiscriminator

            if c.discriminator == "unet":
                self.net_d = UNetDiscriminatorSN(3, c.d_num_feat, skip_connection=True)
            else:
                self.net_d = VGGStyleDiscriminator(3, c.d_num_feat, input_size=c.gt_size)
            if c.pretrained_d:
                state, source = _load_state(c.pretrained_d)
                try:
                    self.net_d.load_state_dict(state, strict=True)
                except RuntimeError as exc:
                    raise ModelIncompatibleError(
                        f"{source} is not a {c.discriminator} discriminator with d_num_feat={c.d_num_feat}: {str(exc).splitlines()[0]}"
                    ) from None
            self.net_d.to(self.device, memory_format=torch.channels_last).train()
        trainable = [p for p in self.net_g.parameters() if p.requires_grad]
        if not trainable:
            raise ModelIncompatibleError("The generator has no trainable parameters; nothing can be trained.")
        self.opt_g = torch.optim.Adam(trainable, lr=c.lr_g, betas=c.betas, weight_decay=c.weight_decay)
        self.opt_d = (
            torch.optim.Adam(self.net_d.parameters(), lr=c.lr_d, betas=c.betas, weight_decay=c.weight_decay)
            if self.net_d is not None
            else None
        )

    def _build_losses(self, vgg_weights: Mapping[str, torch.Tensor] | None) -> None:
        from .losses import GANLoss, L1Loss, PerceptualLoss

        c = self.config
        self.cri_pix = L1Loss(loss_weight=c.pixel_weight) if c.pixel_weight > 0 else None
        self.cri_perceptual = None
        if c.perceptual_weight > 0:
            self.cri_perceptual = PerceptualLoss(
                dict(c.perceptual_layers), vgg_type="vgg19", use_input_norm=True, range_norm=False,
                perceptual_weight=c.perceptual_weight, style_weight=0.0, criterion="l1", vgg_weights=vgg_weights,
            ).to(self.device, memory_format=torch.channels_last)  # fmt: skip
        self.cri_gan = GANLoss("vanilla", 1.0, 0.0, loss_weight=c.gan_weight) if self.net_d is not None else None

    # ------------------------------------------------------------------ one step

    def samples(self, iteration: int) -> range:
        """Global sample indices of this process at ``iteration`` (1-based)."""
        start = (iteration - 1) * self.config.batch_size + self.group.rank * self.local_batch
        return range(start, start + self.local_batch)

    def _targets(self, batch: Batch) -> dict[str, torch.Tensor]:
        c = self.config
        needs_usm = any((c.l1_gt_usm, c.percep_gt_usm, c.gan_gt_usm))
        usm = sharpen_gt(batch.gt, c) if needs_usm else batch.gt
        return {
            "l1": usm if c.l1_gt_usm else batch.gt,
            "percep": usm if c.percep_gt_usm else batch.gt,
            "gan": usm if c.gan_gt_usm else batch.gt,
        }

    def optimize(self, lq: torch.Tensor, targets: Mapping[str, torch.Tensor], iteration: int) -> dict[str, float]:
        """One optimisation step on this process's batch (LR and GT given). Returns the
        losses (means over micro-batches). Raises :class:`TrainingDivergedError` before any
        weight changes when a loss is not finite on any process."""
        from .losses import (
            discriminator_step,
            generator_gan_loss,
            ragan_discriminator_step,
            ragan_generator_loss,
        )

        c = self.config
        k = c.accumulate
        p = self.precision
        for group in self.opt_g.param_groups:
            group["lr"] = learning_rate(c.lr_g, iteration, c.milestones, c.gamma)
        if self.opt_d is not None:
            for group in self.opt_d.param_groups:
                group["lr"] = learning_rate(c.lr_d, iteration, c.milestones, c.gamma)
        lq_parts = lq.contiguous(memory_format=torch.channels_last).chunk(k)  # the fast layout for convs
        parts = {name: t.contiguous(memory_format=torch.channels_last).chunk(k) for name, t in targets.items()}
        logs: dict[str, float] = {}

        def log(name: str, value: torch.Tensor) -> None:
            logs[name] = logs.get(name, 0.0) + float(value.detach()) / k

        # ---- generator
        if self.net_d is not None:
            for param in self.net_d.parameters():
                param.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        update_g = self.net_d is None or (iteration % c.net_d_iters == 0 and iteration > c.net_d_init_iters)
        outputs = []
        for m, lq_m in enumerate(lq_parts):
            with p.autocast():
                output = self.net_g(lq_m)
            outputs.append(output)
            if not update_g:
                continue
            with p.autocast():
                total = output.new_zeros((), dtype=torch.float32)
                if self.cri_pix is not None:
                    l_pix = self.cri_pix(output, parts["l1"][m])
                    total = total + l_pix
                    log("l_g_pix", l_pix)
                if self.cri_perceptual is not None:
                    l_percep, _ = self.cri_perceptual(output, parts["percep"][m])
                    if l_percep is not None:
                        total = total + l_percep
                        log("l_g_percep", l_percep)
                if self.net_d is not None and self.cri_gan is not None:
                    if c.gan_mode == "relativistic":
                        l_gan = ragan_generator_loss(self.net_d, self.cri_gan, output, parts["gan"][m])
                    else:
                        l_gan = generator_gan_loss(self.net_d, self.cri_gan, output)
                    total = total + l_gan
                    log("l_g_gan", l_gan)
            p.backward(total / k)
        if update_g:
            self._check_finite(logs, iteration)
            self.group.average_gradients(self.net_g)
            p.step(self.opt_g)

        # ---- discriminator
        if self.net_d is not None and self.opt_d is not None and self.cri_gan is not None:
            for param in self.net_d.parameters():
                param.requires_grad_(True)
            self.opt_d.zero_grad(set_to_none=True)
            step = ragan_discriminator_step if c.gan_mode == "relativistic" else discriminator_step
            d_logs: dict[str, float] = {}
            for m, output in enumerate(outputs):
                with p.autocast():
                    values = step(self.net_d, self.cri_gan, output, parts["gan"][m], backward=lambda loss: p.backward(loss / k))
                for name, value in values.items():
                    d_logs[name] = d_logs.get(name, 0.0) + float(value) / k
            self._check_finite(d_logs, iteration)
            logs.update(d_logs)
            self.group.average_gradients(self.net_d)
            p.step(self.opt_d)
        if p.scaler is not None:
            p.scaler.update()
        if self.net_g_ema is not None:
            _ema_update(self.net_g_ema, self.net_g, c.ema_decay)
        return logs

    def _check_finite(self, logs: Mapping[str, float], iteration: int) -> None:
        finite = all(math.isfinite(v) for v in logs.values())
        if self.precision.scaler is not None:  # fp16: the scaler skips such steps itself
            return
        if not self.group.all_true(finite):
            bad = ", ".join(f"{k}={v}" for k, v in logs.items() if not math.isfinite(v)) or "on another process"
            previous = ckpt.latest_checkpoint(self.run_dir)
            kept = f"the last good checkpoint is {previous.path} (iteration {previous.iteration})" if previous else "no checkpoint was saved yet"
            raise TrainingDivergedError(
                f"Training diverged at iteration {iteration}: loss {bad} is not finite. Stopped without "
                f"saving the broken weights; {kept}. Lower lr_g/lr_d, use precision=fp32, or check the data; "
                "then --resume."
            )

    # ------------------------------------------------------------------ checkpoints

    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors: dict[str, torch.Tensor] = {}
        values: dict[str, Any] = {
            "iteration": self.iteration,
            "config": self.config.to_dict(),
            "world": self.group.world,
            "data_fingerprint": self.data_fingerprint,
            "history": self.history,
            "best_psnr": self.best_psnr,
            "base_model": self.base_model,
        }
        tensors.update(ckpt.prefixed(self.net_g.state_dict(), "g"))
        if self.net_g_ema is not None:
            tensors.update(ckpt.prefixed(self.net_g_ema.state_dict(), "g_ema"))
        if self.net_d is not None and self.opt_d is not None:
            tensors.update(ckpt.prefixed(self.net_d.state_dict(), "d"))
            opt_t, values["opt_d"] = ckpt.optimizer_tensors(self.opt_d, "opt_d")
            tensors.update(opt_t)
        opt_t, values["opt_g"] = ckpt.optimizer_tensors(self.opt_g, "opt_g")
        tensors.update(opt_t)
        pool_t, values["pool"] = self.pool.state()
        for name, tensor in pool_t.items():
            for rank, part in enumerate(self.group.gather_to_main(tensor)):
                tensors[f"{name}.{rank}"] = part
        tensors.update(ckpt.rng_tensors())
        if self.precision.scaler is not None:
            values["scaler"] = {k: v for k, v in self.precision.scaler.state_dict().items() if isinstance(v, (int, float))}
        return tensors, values

    def save(self) -> ckpt.Checkpoint | None:
        tensors, values = self.state_tensors()
        if not self.group.main:
            return None
        saved = ckpt.save_checkpoint(self.run_dir, self.iteration, tensors, values, keep_last=self.config.keep_last)
        logger.info("saved checkpoint %s", saved.path)
        return saved

    def load(self, checkpoint: ckpt.Checkpoint) -> None:
        tensors, values = checkpoint.load()
        stored = TrainConfig.from_dict(values["config"])
        differences = self.config.diff(stored, ignore=RESUMABLE_CHANGES)
        if differences and not self.force:
            listed = "; ".join(f"{k}: now {a!r}, checkpoint {b!r}" for k, (a, b) in list(differences.items())[:6])
            raise InvalidParameterError(
                f"The run in {self.run_dir} was trained with a different config ({listed}). "
                "Resume with the same preset and --set values, or pass --force to continue anyway."
            )
        if values.get("data_fingerprint") != self.data_fingerprint:
            logger.warning("the training images changed since the checkpoint; the run continues on the new set")
        self.net_g.load_state_dict(ckpt.unprefixed(tensors, "g"))
        if self.net_g_ema is not None:
            ema = ckpt.unprefixed(tensors, "g_ema")
            self.net_g_ema.load_state_dict(ema or ckpt.unprefixed(tensors, "g"))
        if self.net_d is not None and self.opt_d is not None:
            d_state = ckpt.unprefixed(tensors, "d")
            if d_state:
                self.net_d.load_state_dict(d_state)
                if "opt_d" in values:
                    ckpt.load_optimizer(self.opt_d, "opt_d", tensors, values["opt_d"])
        ckpt.load_optimizer(self.opt_g, "opt_g", tensors, values["opt_g"])
        rank = self.group.rank
        pool = {name: tensors[f"{name}.{rank}"] for name in ("pool.lq", "pool.gt") if f"{name}.{rank}" in tensors}
        if int(values.get("world", 1)) == self.group.world:
            self.pool.load(pool, values.get("pool", {}), self.device)
        else:
            logger.warning("resuming with %d processes instead of %d: the pair pool starts empty", self.group.world, values.get("world", 1))
        ckpt.restore_rng(tensors)
        if self.precision.scaler is not None and "scaler" in values:
            self.precision.scaler.load_state_dict(values["scaler"])
        self.iteration = int(values["iteration"])
        self.history = [h for h in values.get("history", []) if h.get("iteration", 0) <= self.iteration]
        self.best_psnr = values.get("best_psnr")
        logger.info("resumed from %s at iteration %d", checkpoint.path, self.iteration)

    @property
    def data_fingerprint(self) -> str:
        if not hasattr(self, "_fingerprint"):
            self._fingerprint = self.folder.fingerprint()
        return self._fingerprint

    # ------------------------------------------------------------------ validation and logs

    @torch.no_grad()
    def validate(self) -> ValidationResult | None:
        """PSNR/SSIM on Y (crop border = scale) of the EMA generator on the held-out images."""
        if not self.validation:
            return None
        from .metrics import psnr_y, ssim_y

        net = self.export_network()
        was_training = net.training
        net.eval()
        per_image = {}
        try:
            for image in self.validation:
                with self.precision.autocast():
                    out = net(image.lq.to(self.device))
                out = out.float().clamp(0, 1).cpu()
                border = self.config.scale
                per_image[image.name] = (float(psnr_y(out, image.gt, border).mean()), float(ssim_y(out, image.gt, border).mean()))
        finally:
            net.train(was_training)
        psnr = sum(v[0] for v in per_image.values()) / len(per_image)
        ssim = sum(v[1] for v in per_image.values()) / len(per_image)
        return ValidationResult(self.iteration, psnr, ssim, per_image)

    def export_network(self) -> nn.Module:
        """The generator whose weights are exported: the EMA one when EMA is on."""
        return self.net_g_ema if self.net_g_ema is not None else self.net_g

    def _record(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        if not self.group.main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        self._write_csv()

    def _write_csv(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in self.history:
            writer.writerow({k: row.get(k, "") for k in CSV_COLUMNS})
        atomic_write_text(self.run_dir / "metrics.csv", buffer.getvalue())

    def _rewrite_jsonl(self) -> None:
        if self.group.main:
            text = "".join(json.dumps(row) + "\n" for row in self.history)
            atomic_write_text(self.run_dir / "metrics.jsonl", text)
            self._write_csv()

    def _validation_output(self, image: ValidationImage) -> torch.Tensor:
        with torch.no_grad(), self.precision.autocast():
            return self.export_network()(image.lq.to(self.device)).float().clamp(0, 1).cpu()

    def _draw(self, validation: ValidationResult | None) -> None:
        """The loss/PSNR plot (``plot.png``) and before/after crops of the first validation
        image (``samples/NAME_ITER.png``: input, start, now, ground truth)."""
        if not self.group.main or not self.history:
            return
        from . import plots

        try:
            plots.plot_training_curves(self.history, self.run_dir / "plot.png", metric_key="val_psnr", x_key="iteration", title=f"{self.config.name} ({self.config.preset})")
            if validation is not None and self.validation and self._start_output is not None:
                image = self.validation[0]
                crop = min(128, image.gt.shape[-2], image.gt.shape[-1])
                panels = [("input", image.lq), ("start", self._start_output), (f"iter {self.iteration}", self._validation_output(image)), ("ground truth", image.gt)]
                plots.comparison_strip(panels, self.run_dir / "samples" / f"{image.name}_{self.iteration:09d}.png", crop=crop)
        except (OSError, RestoreKitError) as exc:
            logger.warning("could not draw the training pictures: %s", exc)

    # ------------------------------------------------------------------ output

    def metadata(self, validation: ValidationResult | None = None) -> dict[str, str]:
        c = self.config
        values = {
            "restorekit.name": c.name,
            "restorekit.architecture": c.generator,
            "restorekit.scale": str(c.scale),
            "restorekit.base_model": self.base_model,
            "restorekit.preset": c.preset,
            "restorekit.iterations": str(self.iteration),
            "restorekit.data_fingerprint": self.data_fingerprint,
            "restorekit.weights": "ema" if self.net_g_ema is not None else "generator",
            "restorekit.train_config": json.dumps(c.to_dict(), sort_keys=True),
        }
        if validation is not None:
            values["restorekit.val_psnr_y"] = f"{validation.psnr:.4f}"
            values["restorekit.val_ssim_y"] = f"{validation.ssim:.5f}"
        return values

    def write_output(self, path: Path | None = None, validation: ValidationResult | None = None) -> Path:
        """The exported generator (EMA) as safetensors with metadata; loads with spandrel."""
        from ..registry.convert import save_state_dict

        target = path or self.run_dir / f"{self.config.name}.safetensors"
        try:
            save_state_dict(self.export_network().state_dict(), target, self.metadata(validation))
        except OSError as exc:
            raise ckpt.CheckpointError(f"Could not write {target}: {ckpt._describe_os_error(exc)}. Free some space and --resume.") from exc
        return target

    # ------------------------------------------------------------------ the loop

    def batch(self, iteration: int) -> Batch:
        """This process's training batch of ``iteration``, through the pair pool."""
        batch = self.maker.make(self.samples(iteration))
        return self.pool(batch, derive_seed(self.config.seed, "pool", iteration, self.group.rank))

    def _cancelled(self) -> bool:
        local = bool(self.cancel is not None and self.cancel())
        return self.group.any_true(local)

    def run(self) -> TrainResult:
        """Train to ``config.iterations``; returns where the output went and why it stopped."""
        c = self.config
        if self.group.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.resume:
            found = ckpt.latest_checkpoint(self.run_dir)
            if found is None:
                raise InvalidParameterError(f"--resume: no checkpoint in {ckpt.checkpoint_root(self.run_dir)}; start without --resume.")
            self.load(found)
            self._rewrite_jsonl()
        elif ckpt.latest_checkpoint(self.run_dir) is not None and not self.force:
            raise InvalidParameterError(
                f"{self.run_dir} already holds a training run; pass --resume to continue it, "
                "--force to start over there, or choose another output folder."
            )
        else:  # a fresh start (--force over an old run): its checkpoints and metrics go
            if self.group.main:
                for old in (ckpt.checkpoint_root(self.run_dir), self.run_dir / "samples"):
                    shutil.rmtree(old, ignore_errors=True)
            self._rewrite_jsonl()
        if self.group.main:
            atomic_write_text(self.run_dir / "config.json", json.dumps(c.to_dict(), indent=2, sort_keys=True))
        self._start_output = self._validation_output(self.validation[0]) if self.validation and self.group.main else None
        started = time.monotonic()
        last_saved: ckpt.Checkpoint | None = ckpt.latest_checkpoint(self.run_dir)
        validation: ValidationResult | None = None
        stop = "done"
        best_output: Path | None = None
        for iteration in range(self.iteration + 1, c.iterations + 1):
            if self._cancelled():  # before the batch: the pool must not see the next one
                stop = "cancelled"
                break
            batch = self.batch(iteration)
            logs = self.optimize(batch.lq, self._targets(batch), iteration)
            self.iteration = iteration
            for name, value in logs.items():
                self._loss_sums[name] = self._loss_sums.get(name, 0.0) + value
            self._loss_count += 1
            lr = learning_rate(c.lr_g, iteration, c.milestones, c.gamma)
            if iteration % max(1, c.log_every) == 0 or iteration == c.iterations:
                means = self.group.mean({k: v / self._loss_count for k, v in self._loss_sums.items()})
                self._record({"iteration": iteration, "lr_g": lr, **means, "seconds": round(time.monotonic() - started, 3)})
                self._loss_sums, self._loss_count = {}, 0
            if c.val_every and (iteration % c.val_every == 0 or iteration == c.iterations) and self.group.main:
                validation = self.validate()
                if validation is not None:
                    self._record({"iteration": iteration, "val_psnr": validation.psnr, "val_ssim": validation.ssim})
                    if self.best_psnr is None or validation.psnr > self.best_psnr:
                        self.best_psnr = validation.psnr
                        best_output = self.write_output(self.run_dir / f"{c.name}_best.safetensors", validation)
                    self._draw(validation)
            elif c.plot_every and iteration % c.plot_every == 0:
                self._draw(None)
            if c.save_every and iteration % c.save_every == 0 and iteration != c.iterations:
                last_saved = self.save() or last_saved
            summary = " ".join(f"{k}={v:.4g}" for k, v in logs.items() if k.startswith("l_"))
            self.reporter.step(iteration, c.iterations, f"train: it {iteration}/{c.iterations} {summary}".rstrip())
        last_saved = self.save() or last_saved
        output = self.write_output(validation=validation) if self.group.main else None
        if best_output is None and (self.run_dir / f"{c.name}_best.safetensors").exists():
            best_output = self.run_dir / f"{c.name}_best.safetensors"
        return TrainResult(
            output=output,
            iterations=self.iteration,
            stop_reason=stop,
            checkpoint=last_saved.path if last_saved else None,
            best_psnr=self.best_psnr,
            best_output=best_output,
            last_validation=validation,
            skipped_images=self.folder.skipped + [(self.folder.records[i].path.as_posix(), r) for i, r in self.maker.bad.items()],
            seconds=time.monotonic() - started,
        )


def _load_state(reference: str) -> tuple[dict[str, torch.Tensor], str]:
    """Weights of a registry name, model-home name or file, as a CPU state dict."""
    from ..models import resolve_model
    from ..registry.convert import load_any_state_dict

    resolved = resolve_model(reference)
    state, _ = load_any_state_dict(resolved.path)
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, str(reference)


def train(
    config: TrainConfig,
    data: str | Path,
    run_dir: str | Path,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    **options: Any,
) -> TrainResult:
    """Train ``config`` on ``data`` into ``run_dir`` (see :class:`Trainer` for ``options``)."""
    return Trainer(config, data, run_dir, progress=progress, cancel=cancel, **options).run()

