"""Training losses with basicsr 1.4.2's names and numbers: pixel (L1, MSE), perceptual (VGG19
features before activation, optional style/Gram term) and GAN (vanilla, LSGAN, WGAN, hinge),
plus the discriminator/generator GAN terms exactly as Real-ESRGAN's and ESRGAN's training
steps compute them (forward order included, which matters for batch-norm discriminators).

Images are (B, C, H, W) float tensors in [0, 1]; losses are scalar tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InvalidParameterError
from .vgg import VGGFeatureExtractor

__all__ = [
    "GAN_TYPES",
    "LOSSES",
    "PERCEPTUAL_LAYER_WEIGHTS",
    "GANLoss",
    "L1Loss",
    "MSELoss",
    "PerceptualLoss",
    "build_loss",
    "discriminator_step",
    "generator_gan_loss",
    "ragan_discriminator_step",
    "ragan_generator_loss",
    "relativistic_discriminator_losses",
    "relativistic_generator_loss",
]

REDUCTIONS = ("none", "mean", "sum")

PERCEPTUAL_LAYER_WEIGHTS: dict[str, float] = {
    "conv1_2": 0.1,
    "conv2_2": 0.1,
    "conv3_4": 1.0,
    "conv4_4": 1.0,
    "conv5_4": 1.0,
}
"""Real-ESRGAN's (and the presets') perceptual layers: VGG19 features before activation."""


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise InvalidParameterError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}.")
    return reduction


def weight_reduce_loss(loss: torch.Tensor, weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Apply an element-wise ``weight`` (B, 1 or C, H, W) and reduce as basicsr does: ``mean``
    with a weight divides by the weight's sum (times C for a one-channel weight)."""
    if weight is not None:
        if weight.dim() != loss.dim() or weight.size(1) not in (1, loss.size(1)):
            raise InvalidParameterError(
                f"A loss weight must be (B, 1 or {loss.size(1)}, H, W) like the loss, got {tuple(weight.shape)}."
            )
        loss = loss * weight
    if weight is None or reduction == "sum":
        return loss if reduction == "none" else (loss.mean() if reduction == "mean" else loss.sum())
    if reduction == "mean":
        total = weight.sum() if weight.size(1) > 1 else weight.sum() * loss.size(1)
        return loss.sum() / total
    return loss


class L1Loss(nn.Module):
    """Mean absolute error times ``loss_weight`` (basicsr ``L1Loss``).

    Args:
        loss_weight: multiplier (1.0 for Real-ESRNet/Real-ESRGAN, 1e-2 for ESRGAN).
        reduction: ``mean``, ``sum`` or ``none``.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.reduction = _check_reduction(reduction)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        """pred, target: (B, C, H, W); weight: optional (B, 1 or C, H, W) element weights."""
        return self.loss_weight * weight_reduce_loss((pred - target).abs(), weight, self.reduction)


class MSELoss(nn.Module):
    """Mean squared error times ``loss_weight`` (basicsr ``MSELoss``)."""

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.reduction = _check_reduction(reduction)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        return self.loss_weight * weight_reduce_loss((pred - target) ** 2, weight, self.reduction)


def _gram(x: torch.Tensor) -> torch.Tensor:
    """Gram matrix (B, C, C) of features (B, C, H, W), divided by C*H*W."""
    n, c, h, w = x.size()
    features = x.reshape(n, c, h * w)
    return features.bmm(features.transpose(1, 2)) / (c * h * w)


def _criterion_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(a, b)


def _criterion_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(a, b)


def _criterion_fro(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.norm(a - b, p="fro")


CRITERIA: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": _criterion_l1,
    "l2": _criterion_l2,
    "fro": _criterion_fro,
}


class PerceptualLoss(nn.Module):
    """Perceptual loss on VGG features (ESRGAN: before activation) and optional style loss.

    Args:
        layer_weights: layer name -> weight, e.g. :data:`PERCEPTUAL_LAYER_WEIGHTS`.
        vgg_type: ``vgg19``.
        use_input_norm: ImageNet-normalise the [0, 1] input.
        range_norm: map [-1, 1] input to [0, 1] first.
        perceptual_weight: multiplier of the feature term; 0 disables it.
        style_weight: multiplier of the Gram-matrix term; 0 disables it.
        criterion: ``l1``, ``l2`` (MSE) or ``fro`` (Frobenius norm).
        vgg_weights: torchvision-keyed VGG weights; None resolves the registry model ``vgg19``
            (a clear error offline). With both weights 0 no VGG is built or loaded at all.

    Forward: ``(pred, gt)`` (B, 3, H, W) -> ``(percep, style)``, each a scalar tensor or None
    when its weight is 0. ``gt`` gets no gradient.
    """

    def __init__(
        self,
        layer_weights: Mapping[str, float],
        vgg_type: str = "vgg19",
        use_input_norm: bool = True,
        range_norm: bool = False,
        perceptual_weight: float = 1.0,
        style_weight: float = 0.0,
        criterion: str = "l1",
        *,
        vgg_weights: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if criterion not in CRITERIA:
            raise InvalidParameterError(f"Perceptual criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}.")
        if perceptual_weight < 0 or style_weight < 0:
            raise InvalidParameterError("perceptual_weight and style_weight must be >= 0.")
        self.perceptual_weight = float(perceptual_weight)
        self.style_weight = float(style_weight)
        self.layer_weights = dict(layer_weights)
        self.criterion_type = criterion
        self.criterion = CRITERIA[criterion]
        self.vgg: VGGFeatureExtractor | None = None
        if self.enabled:
            self.vgg = VGGFeatureExtractor(
                layer_name_list=list(self.layer_weights),
                vgg_type=vgg_type,
                use_input_norm=use_input_norm,
                range_norm=range_norm,
                state_dict=vgg_weights,
            )

    @property
    def enabled(self) -> bool:
        """Whether any term is computed (False when both weights are 0)."""
        return self.perceptual_weight > 0 or self.style_weight > 0

    def forward(self, x: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if self.vgg is None:
            return None, None
        x_features = self.vgg(x)
        with torch.no_grad():
            gt_features = self.vgg(gt.detach())
        percep = None
        if self.perceptual_weight > 0:
            percep = sum(
                self.criterion(x_features[k], gt_features[k]) * self.layer_weights[k] for k in x_features
            ) * self.perceptual_weight
        style = None
        if self.style_weight > 0:
            style = sum(
                self.criterion(_gram(x_features[k]), _gram(gt_features[k])) * self.layer_weights[k]
                for k in x_features
            ) * self.style_weight
        return percep, style  # type: ignore[return-value]


# --------------------------------------------------------------------------- GAN


def _bce_logits(pred: torch.Tensor, target: torch.Tensor | bool) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(pred, target)  # type: ignore[arg-type]


def _mse(pred: torch.Tensor, target: torch.Tensor | bool) -> torch.Tensor:
    return F.mse_loss(pred, target)  # type: ignore[arg-type]


def _wgan(pred: torch.Tensor, target: torch.Tensor | bool) -> torch.Tensor:
    return -pred.mean() if target else pred.mean()


def _wgan_softplus(pred: torch.Tensor, target: torch.Tensor | bool) -> torch.Tensor:
    return F.softplus(-pred).mean() if target else F.softplus(pred).mean()


GAN_TYPES: dict[str, Callable[[torch.Tensor, Any], torch.Tensor]] = {
    "vanilla": _bce_logits,
    "lsgan": _mse,
    "wgan": _wgan,
    "wgan_softplus": _wgan_softplus,
    "hinge": _wgan,  # only used for the generator; the discriminator's hinge is in forward
}
"""GAN loss types (basicsr's): vanilla (BCE on logits; Real-ESRGAN and, relativistic, ESRGAN),
lsgan, wgan, wgan_softplus, hinge."""


class GANLoss(nn.Module):
    """GAN loss (basicsr ``GANLoss``): ``loss(pred, target_is_real, is_disc=False)``.

    Args:
        gan_type: one of :data:`GAN_TYPES`.
        real_label_val, fake_label_val: targets for real and fake (1 and 0).
        loss_weight: multiplier for the generator's loss (0.1 in Real-ESRGAN, 5e-3 in
            ESRGAN); the discriminator's loss is never weighted.

    ``pred`` is the discriminator's logits of any shape; returns a scalar.
    """

    def __init__(
        self,
        gan_type: str = "vanilla",
        real_label_val: float = 1.0,
        fake_label_val: float = 0.0,
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if gan_type not in GAN_TYPES:
            raise InvalidParameterError(f"gan_type must be one of {', '.join(GAN_TYPES)}, got {gan_type!r}.")
        self.gan_type = gan_type
        self.real_label_val = float(real_label_val)
        self.fake_label_val = float(fake_label_val)
        self.loss_weight = float(loss_weight)
        self.loss = GAN_TYPES[gan_type]

    def get_target_label(self, pred: torch.Tensor, target_is_real: bool) -> torch.Tensor | bool:
        """A label tensor like ``pred`` (a bool for the WGAN types)."""
        if self.gan_type in ("wgan", "wgan_softplus"):
            return target_is_real
        value = self.real_label_val if target_is_real else self.fake_label_val
        return torch.full_like(pred, value)

    def forward(self, pred: torch.Tensor, target_is_real: bool, is_disc: bool = False) -> torch.Tensor:
        if self.gan_type == "hinge":
            if is_disc:
                signed = -pred if target_is_real else pred
                loss = F.relu(1 + signed).mean()
            else:
                loss = -pred.mean()
        else:
            loss = self.loss(pred, self.get_target_label(pred, target_is_real))
        return loss if is_disc else loss * self.loss_weight


# --------------------------------------------------------------------------- GAN terms of a step

Backward = Callable[[torch.Tensor], None]


def _plain_backward(loss: torch.Tensor) -> None:
    loss.backward()


def relativistic_generator_loss(gan_loss: GANLoss, real_pred: torch.Tensor, fake_pred: torch.Tensor) -> torch.Tensor:
    """ESRGAN's relativistic-average generator loss from D's logits (real ones detached):
    ``(L(D(real) - E[D(fake)], fake) + L(D(fake) - E[D(real)], real)) / 2``."""
    real_pred = real_pred.detach()
    l_real = gan_loss(real_pred - torch.mean(fake_pred), False, is_disc=False)
    l_fake = gan_loss(fake_pred - torch.mean(real_pred), True, is_disc=False)
    return (l_real + l_fake) / 2


def relativistic_discriminator_losses(
    gan_loss: GANLoss,
    real_pred: torch.Tensor,
    fake_pred: torch.Tensor,
    *,
    fake_pred_for_real: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ESRGAN's relativistic-average discriminator losses ``(l_d_real, l_d_fake)``, each
    already halved: ``L(D(real) - E[D(fake)], real) / 2`` and ``L(D(fake) - E[D(real)], fake) / 2``.

    ``real_pred`` and ``fake_pred`` carry gradients to D; the mean subtracted in each term is
    taken detached. ESRGAN computes the fake mean of the real term from a separate, detached
    forward; pass it as ``fake_pred_for_real`` to reproduce that exactly (it only differs from
    ``fake_pred`` through batch-norm running statistics).
    """
    fake_mean_source = fake_pred if fake_pred_for_real is None else fake_pred_for_real
    l_d_real = gan_loss(real_pred - torch.mean(fake_mean_source.detach()), True, is_disc=True) * 0.5
    l_d_fake = gan_loss(fake_pred - torch.mean(real_pred.detach()), False, is_disc=True) * 0.5
    return l_d_real, l_d_fake


def generator_gan_loss(net_d: nn.Module, gan_loss: GANLoss, output: torch.Tensor) -> torch.Tensor:
    """Real-ESRGAN's generator GAN term: ``gan_loss(D(output), real)`` (weighted by
    ``gan_loss.loss_weight``). D's parameters should have ``requires_grad`` off."""
    return gan_loss(net_d(output), True, is_disc=False)


def ragan_generator_loss(net_d: nn.Module, gan_loss: GANLoss, output: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """ESRGAN's generator GAN term, forwards in ESRGANModel's order: ``D(gt)`` (detached),
    then ``D(output)``."""
    real_pred = net_d(gt).detach()
    fake_pred = net_d(output)
    return relativistic_generator_loss(gan_loss, real_pred, fake_pred)


def discriminator_step(
    net_d: nn.Module,
    gan_loss: GANLoss,
    output: torch.Tensor,
    gt: torch.Tensor,
    backward: Backward = _plain_backward,
) -> dict[str, torch.Tensor]:
    """Real-ESRGAN's discriminator losses and their backward passes, in RealESRGANModel's
    order: ``D(gt)`` -> real loss -> backward, then ``D(output.detach())`` -> fake loss ->
    backward. The optimiser step is the caller's.

    ``backward`` runs each loss's backward (default ``loss.backward()``); pass e.g.
    ``lambda l: scaler.scale(l / accumulation).backward()`` for fp16 or accumulation.

    Returns detached ``l_d_real``, ``l_d_fake``, ``out_d_real``, ``out_d_fake`` for logging.
    """
    real_pred = net_d(gt)
    l_d_real = gan_loss(real_pred, True, is_disc=True)
    backward(l_d_real)
    fake_pred = net_d(output.detach().clone())
    l_d_fake = gan_loss(fake_pred, False, is_disc=True)
    backward(l_d_fake)
    return {
        "l_d_real": l_d_real.detach(),
        "l_d_fake": l_d_fake.detach(),
        "out_d_real": real_pred.detach().mean(),
        "out_d_fake": fake_pred.detach().mean(),
    }


def ragan_discriminator_step(
    net_d: nn.Module,
    gan_loss: GANLoss,
    output: torch.Tensor,
    gt: torch.Tensor,
    backward: Backward = _plain_backward,
) -> dict[str, torch.Tensor]:
    """ESRGAN's relativistic discriminator losses and backward passes, in ESRGANModel's order
    (which matters for the batch-norm statistics of the VGG-style discriminator):
    ``D(output)`` detached, ``D(gt)`` -> real loss -> backward, ``D(output.detach())`` -> fake
    loss -> backward. The optimiser step is the caller's. Returns detached values for logging.
    """
    fake_pred_detached = net_d(output).detach()
    real_pred = net_d(gt)
    l_d_real = gan_loss(real_pred - torch.mean(fake_pred_detached), True, is_disc=True) * 0.5
    backward(l_d_real)
    fake_pred = net_d(output.detach())
    l_d_fake = gan_loss(fake_pred - torch.mean(real_pred.detach()), False, is_disc=True) * 0.5
    backward(l_d_fake)
    return {
        "l_d_real": l_d_real.detach(),
        "l_d_fake": l_d_fake.detach(),
        "out_d_real": real_pred.detach().mean(),
        "out_d_fake": fake_pred.detach().mean(),
    }


# --------------------------------------------------------------------------- registry

LOSSES: dict[str, Callable[..., nn.Module]] = {
    "L1Loss": L1Loss,
    "MSELoss": MSELoss,
    "PerceptualLoss": PerceptualLoss,
    "GANLoss": GANLoss,
}
"""basicsr loss ``type`` -> class (``pixel_opt``, ``perceptual_opt``, ``gan_opt``)."""


def build_loss(options: Mapping[str, Any], **extra: Any) -> nn.Module:
    """Build a loss from a basicsr-style option mapping (``{"type": "L1Loss", "loss_weight": 1.0}``).

    ``extra`` keyword arguments are passed on (e.g. ``vgg_weights`` for the perceptual loss).
    """
    params = dict(options)
    kind = params.pop("type", None)
    if kind not in LOSSES:
        raise InvalidParameterError(f"Unknown loss type {kind!r}; known: {', '.join(sorted(LOSSES))}.")
    try:
        return LOSSES[kind](**params, **extra)
    except TypeError as exc:
        raise InvalidParameterError(f"Bad parameters for {kind}: {exc}.") from None

