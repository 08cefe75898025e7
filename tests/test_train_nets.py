"""Training networks, losses and metrics against basicsr 1.4.2 / realesrgan 0.3.0 (the
official training code) with shared weights, on crops of real photos.

Tolerances: networks and losses 1e-5 (relative to the values' scale), PSNR 1e-4 dB,
SSIM 1e-6 (basicsr computes Y in float32, we in float64).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from restorekit.errors import InvalidParameterError, ModelNotFoundError
from restorekit.train import discriminators as ours_d
from restorekit.train import losses as ours_l
from restorekit.train import metrics

import reference_shim  # noqa: F401  (basicsr on current torchvision)

basicsr_d = pytest.importorskip("basicsr.archs.discriminator_arch", reason="basicsr (reference) is not installed")
basicsr_losses = pytest.importorskip("basicsr.losses.basic_loss")
basicsr_gan = pytest.importorskip("basicsr.losses.gan_loss")


def _photo_batch(photos: list[np.ndarray], size: int, offset: int = 0) -> torch.Tensor:
    """(B, 3, size, size) float [0, 1] crops from the centres of real photos."""
    crops = []
    for photo in photos:
        h, w = photo.shape[:2]
        top, left = (h - size) // 2 + offset, (w - size) // 2 + offset
        crops.append(torch.from_numpy(photo[top : top + size, left : left + size].copy()).permute(2, 0, 1))
    return torch.stack(crops).float() / 255.0


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5) -> None:
    a, b = a.detach(), b.detach()
    scale = max(float(b.abs().max()), 1e-8)
    assert float((a - b).abs().max()) <= rtol * scale, f"max diff {float((a - b).abs().max())} at scale {scale}"


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    from skimage import data

    return [np.ascontiguousarray(data.astronaut()), np.ascontiguousarray(data.coffee()), np.ascontiguousarray(data.chelsea())]


# --------------------------------------------------------------------------- discriminators


def _train_two_steps(net: torch.nn.Module, batches: list[torch.Tensor]) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Forward, BCE-with-logits backward and an SGD step per batch; outputs and gradients."""
    optimiser = torch.optim.SGD(net.parameters(), lr=0.05)
    results = []
    for index, batch in enumerate(batches):
        optimiser.zero_grad()
        out = net(batch)
        target = torch.full_like(out, float(index % 2))
        torch.nn.functional.binary_cross_entropy_with_logits(out, target).backward()
        grads = {name: p.grad.clone() for name, p in net.named_parameters()}
        optimiser.step()
        results.append((out.detach(), grads))
    return results


def test_unet_discriminator_equals_realesrgans_with_spectral_norm_state(photos: list[np.ndarray]) -> None:
    torch.manual_seed(0)
    reference = basicsr_d.UNetDiscriminatorSN(3, num_feat=16, skip_connection=True)
    ours = ours_d.UNetDiscriminatorSN(3, num_feat=16, skip_connection=True)
    assert list(ours.state_dict()) == list(reference.state_dict()), "same keys (weight_orig/_u/_v) in the same order"
    ours.load_state_dict(reference.state_dict())
    batches = [_photo_batch(photos[:2], 64), _photo_batch(photos[1:], 64, offset=17)]
    for (out_a, grads_a), (out_b, grads_b) in zip(_train_two_steps(ours, batches), _train_two_steps(reference, batches), strict=True):
        assert out_a.shape == (2, 1, 64, 64)
        _close(out_a, out_b)
        for name in grads_b:
            _close(grads_a[name], grads_b[name])
    for key, value in reference.state_dict().items():  # power-iteration vectors moved identically
        _close(ours.state_dict()[key], value)
    ours.eval(), reference.eval()
    with torch.no_grad():
        _close(ours(batches[0]), reference(batches[0]))


def test_unet_discriminator_loads_realesrgan_packages_keys_and_refuses_odd_sizes() -> None:
    realesrgan_d = pytest.importorskip("realesrgan.archs.discriminator_arch")
    keys = list(realesrgan_d.UNetDiscriminatorSN(3, 64, True).state_dict())
    assert keys == list(ours_d.UNetDiscriminatorSN().state_dict())
    with pytest.raises(InvalidParameterError, match="multiples of 8"):
        ours_d.UNetDiscriminatorSN(3, 8)(torch.zeros(1, 3, 60, 64))


@pytest.mark.parametrize("input_size", [128, pytest.param(256, marks=pytest.mark.slow)])
def test_vgg_style_discriminator_equals_basicsrs_in_training(photos: list[np.ndarray], input_size: int) -> None:
    torch.manual_seed(1)
    reference = basicsr_d.VGGStyleDiscriminator(3, 8, input_size=input_size)
    ours = ours_d.VGGStyleDiscriminator(3, 8, input_size=input_size)
    assert list(ours.state_dict()) == list(reference.state_dict())
    ours.load_state_dict(reference.state_dict())
    batches = [_photo_batch(photos[:2], input_size), _photo_batch(photos[1:], input_size, offset=9)]
    for (out_a, grads_a), (out_b, grads_b) in zip(_train_two_steps(ours, batches), _train_two_steps(reference, batches), strict=True):
        assert out_a.shape == (2, 1)
        _close(out_a, out_b)
        for name in grads_b:
            _close(grads_a[name], grads_b[name])
    for key, value in reference.state_dict().items():  # batch-norm running statistics too
        if value.is_floating_point():
            _close(ours.state_dict()[key], value)


def test_vgg_style_discriminator_names_the_size_it_needs() -> None:
    with pytest.raises(InvalidParameterError, match="128 or 256"):
        ours_d.VGGStyleDiscriminator(input_size=192)
    with pytest.raises(InvalidParameterError, match="gt_size to 128"):
        ours_d.VGGStyleDiscriminator(3, 8)(torch.zeros(1, 3, 96, 96))


def test_build_discriminator_from_basicsr_options() -> None:
    net = ours_d.build_discriminator({"type": "UNetDiscriminatorSN", "num_in_ch": 3, "num_feat": 64, "skip_connection": True})
    assert isinstance(net, ours_d.UNetDiscriminatorSN)
    with pytest.raises(InvalidParameterError, match="Unknown discriminator type 'PatchGAN'"):
        ours_d.build_discriminator({"type": "PatchGAN"})
    with pytest.raises(InvalidParameterError, match="Bad parameters for VGGStyleDiscriminator"):
        ours_d.build_discriminator({"type": "VGGStyleDiscriminator", "wings": 2})


# --------------------------------------------------------------------------- pixel and GAN losses


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_l1_loss_equals_basicsrs(photos: list[np.ndarray], reduction: str, weighted: bool) -> None:
    pred, target = _photo_batch(photos, 32), _photo_batch(photos, 32, offset=3)
    weight = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0)) if weighted else None
    ours = ours_l.L1Loss(loss_weight=0.5, reduction=reduction)(pred, target, weight)
    reference = basicsr_losses.L1Loss(loss_weight=0.5, reduction=reduction)(pred, target, weight)
    _close(ours, reference, 1e-6)
    with pytest.raises(InvalidParameterError, match="reduction must be one of"):
        ours_l.L1Loss(reduction="median")


@pytest.mark.parametrize("gan_type", ["vanilla", "lsgan", "wgan", "wgan_softplus", "hinge"])
def test_gan_loss_equals_basicsrs(gan_type: str) -> None:
    logits = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(2)) * 2
    ours = ours_l.GANLoss(gan_type, loss_weight=0.1)
    reference = basicsr_gan.GANLoss(gan_type, loss_weight=0.1)
    for target_is_real in (True, False):
        for is_disc in (True, False):
            a = logits.clone().requires_grad_(True)
            b = logits.clone().requires_grad_(True)
            loss_a, loss_b = ours(a, target_is_real, is_disc=is_disc), reference(b, target_is_real, is_disc=is_disc)
            _close(loss_a, loss_b, 1e-6)
            loss_a.backward(), loss_b.backward()
            _close(a.grad, b.grad, 1e-6)
    with pytest.raises(InvalidParameterError, match="gan_type must be one of"):
        ours_l.GANLoss("wasserstein")


def _mini_generator() -> torch.nn.Module:
    """A small x1 convolutional generator standing in for RRDBNet in a GAN step."""
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.LeakyReLU(0.2), torch.nn.Conv2d(8, 3, 3, padding=1))


def _grads(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}


def test_realesrgan_gan_terms_equal_the_official_step(photos: list[np.ndarray]) -> None:
    """Real-ESRGAN's G and D GAN terms (RealESRGANModel.optimize_parameters, transcribed with
    basicsr's classes) against :func:`generator_gan_loss` and :func:`discriminator_step`."""
    lq, gt = _photo_batch(photos[:2], 32), _photo_batch(photos[:2], 32, offset=5)
    gen_a, gen_b = _mini_generator(), _mini_generator()
    d_ref = basicsr_d.UNetDiscriminatorSN(3, 8)
    d_ours = ours_d.UNetDiscriminatorSN(3, 8)
    d_ours.load_state_dict(d_ref.state_dict())
    gan_a, gan_b = ours_l.GANLoss("vanilla", loss_weight=0.1), basicsr_gan.GANLoss("vanilla", loss_weight=0.1)

    # official: G step, then D step (real then fake, separate backward passes)
    for p in d_ref.parameters():
        p.requires_grad = False
    out_b = gen_b(lq)
    gan_b(d_ref(out_b), True, is_disc=False).backward()
    for p in d_ref.parameters():
        p.requires_grad = True
    gan_b(d_ref(gt), True, is_disc=True).backward()
    gan_b(d_ref(out_b.detach().clone()), False, is_disc=True).backward()

    for p in d_ours.parameters():
        p.requires_grad = False
    out_a = gen_a(lq)
    ours_l.generator_gan_loss(d_ours, gan_a, out_a).backward()
    for p in d_ours.parameters():
        p.requires_grad = True
    logged = ours_l.discriminator_step(d_ours, gan_a, out_a, gt)

    for name, grad in _grads(gen_b).items():
        _close(_grads(gen_a)[name], grad)
    for name, grad in _grads(d_ref).items():
        _close(_grads(d_ours)[name], grad)
    assert set(logged) == {"l_d_real", "l_d_fake", "out_d_real", "out_d_fake"}


def test_esrgan_relativistic_terms_equal_the_official_step(photos: list[np.ndarray]) -> None:
    """ESRGAN's relativistic G and D terms (ESRGANModel.optimize_parameters, transcribed with
    basicsr's classes; a batch-norm VGG discriminator, so the forward order matters) against
    :func:`ragan_generator_loss` and :func:`ragan_discriminator_step`."""
    lq, gt = _photo_batch(photos[:2], 128), _photo_batch(photos[:2], 128, offset=5)
    gen_a, gen_b = _mini_generator(), _mini_generator()
    torch.manual_seed(4)
    d_ref = basicsr_d.VGGStyleDiscriminator(3, 8, input_size=128)
    d_ours = ours_d.VGGStyleDiscriminator(3, 8, input_size=128)
    d_ours.load_state_dict(d_ref.state_dict())
    gan_a, gan_b = ours_l.GANLoss("vanilla", loss_weight=5e-3), basicsr_gan.GANLoss("vanilla", loss_weight=5e-3)

    for p in d_ref.parameters():
        p.requires_grad = False
    out_b = gen_b(lq)
    real_d_pred = d_ref(gt).detach()
    fake_g_pred = d_ref(out_b)
    l_g_real = gan_b(real_d_pred - torch.mean(fake_g_pred), False, is_disc=False)
    l_g_fake = gan_b(fake_g_pred - torch.mean(real_d_pred), True, is_disc=False)
    ((l_g_real + l_g_fake) / 2).backward()
    for p in d_ref.parameters():
        p.requires_grad = True
    fake_d_pred = d_ref(out_b).detach()
    real_d_pred = d_ref(gt)
    (gan_b(real_d_pred - torch.mean(fake_d_pred), True, is_disc=True) * 0.5).backward()
    fake_d_pred = d_ref(out_b.detach())
    (gan_b(fake_d_pred - torch.mean(real_d_pred.detach()), False, is_disc=True) * 0.5).backward()

    for p in d_ours.parameters():
        p.requires_grad = False
    out_a = gen_a(lq)
    ours_l.ragan_generator_loss(d_ours, gan_a, out_a, gt).backward()
    for p in d_ours.parameters():
        p.requires_grad = True
    ours_l.ragan_discriminator_step(d_ours, gan_a, out_a, gt)

    for name, grad in _grads(gen_b).items():
        _close(_grads(gen_a)[name], grad)
    for name, grad in _grads(d_ref).items():
        _close(_grads(d_ours)[name], grad)
    for key, value in d_ref.state_dict().items():
        if value.is_floating_point():
            _close(d_ours.state_dict()[key], value)


# --------------------------------------------------------------------------- perceptual loss


class _VGG19Features(torch.nn.Module):
    """torchvision's VGG19 without its 120 M-parameter classifier, initialised as torchvision
    initialises it: all the perceptual loss (ours and basicsr's) ever uses."""

    def __init__(self) -> None:
        import torchvision

        super().__init__()
        self.features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"])
        for module in self.features.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                torch.nn.init.zeros_(module.bias)


@pytest.fixture(scope="module")
def random_vgg19() -> dict[str, torch.Tensor]:
    """Random VGG19 feature weights with torchvision's keys and initialisation (the real
    ImageNet weights cannot be downloaded here)."""
    torch.manual_seed(5)
    return _VGG19Features().state_dict()


@pytest.fixture(scope="module")
def basicsr_perceptual(tmp_path_factory: pytest.TempPathFactory, random_vgg19: dict[str, torch.Tensor]):  # type: ignore[no-untyped-def]
    """basicsr's PerceptualLoss on the same random VGG19. basicsr builds ``vgg.vgg19()`` and
    loads VGG_PRETRAIN_PATH (or downloads): both are pointed at the feature-only network and
    our weights; its feature extractor and loss code run unchanged."""
    vgg_arch = pytest.importorskip("basicsr.archs.vgg_arch")
    path = tmp_path_factory.mktemp("vgg") / "vgg19-random.pth"
    torch.save(random_vgg19, path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vgg_arch, "VGG_PRETRAIN_PATH", str(path))
        patch.setattr(vgg_arch, "vgg", SimpleNamespace(vgg19=lambda pretrained=False: _VGG19Features()))
        loss = basicsr_losses.PerceptualLoss(ours_l.PERCEPTUAL_LAYER_WEIGHTS, vgg_type="vgg19")
    return loss


@pytest.mark.slow
@pytest.mark.parametrize(
    ("criterion", "style_weight", "range_norm"),
    [("l1", 0.0, False), ("l1", 1.0, False), ("fro", 0.5, True)],
)
def test_perceptual_loss_equals_basicsrs(
    photos: list[np.ndarray],
    random_vgg19: dict[str, torch.Tensor],
    basicsr_perceptual,  # type: ignore[no-untyped-def]
    criterion: str,
    style_weight: float,
    range_norm: bool,
) -> None:
    pred = _photo_batch(photos[:2], 32)
    gt = _photo_batch(photos[:2], 32, offset=2)
    ours = ours_l.PerceptualLoss(
        ours_l.PERCEPTUAL_LAYER_WEIGHTS,
        vgg_type="vgg19",
        use_input_norm=True,
        range_norm=range_norm,
        perceptual_weight=1.0,
        style_weight=style_weight,
        criterion=criterion,
        vgg_weights=random_vgg19,
    )
    reference = copy.copy(basicsr_perceptual)  # the same options, set as basicsr's __init__ sets them
    reference.style_weight, reference.criterion_type = style_weight, criterion
    reference.criterion = torch.nn.L1Loss() if criterion == "l1" else None
    reference.vgg.range_norm = range_norm
    if range_norm:
        pred, gt = pred * 2 - 1, gt * 2 - 1
    a, b = pred.clone().requires_grad_(True), pred.clone().requires_grad_(True)
    percep_a, style_a = ours(a, gt)
    percep_b, style_b = reference(b, gt)
    _close(percep_a, percep_b)
    total_a, total_b = percep_a, percep_b
    if style_weight:
        _close(style_a, style_b)
        total_a, total_b = total_a + style_a, total_b + style_b
    else:
        assert style_a is None and style_b is None
    total_a.backward(), total_b.backward()
    _close(a.grad, b.grad)
    assert not any(p.requires_grad for p in ours.parameters()), "the VGG stays frozen"
    assert list(ours.vgg.vgg_net._modules)[-1] == "conv5_4", "built only up to the deepest layer used"


def test_perceptual_features_are_taken_before_activation(random_vgg19: dict[str, torch.Tensor], photos: list[np.ndarray]) -> None:
    from restorekit.train.vgg import VGGFeatureExtractor

    x = _photo_batch(photos[:1], 32)
    features = VGGFeatureExtractor(["conv1_2", "relu1_2"], state_dict=random_vgg19)(x)
    assert float(features["conv1_2"].min()) < 0, "conv features keep their negative part"
    assert torch.equal(features["relu1_2"], features["conv1_2"].clamp(min=0))


def test_perceptual_loss_weight_zero_needs_no_weights(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESTOREKIT_OFFLINE", "1")
    loss = ours_l.PerceptualLoss(ours_l.PERCEPTUAL_LAYER_WEIGHTS, perceptual_weight=0.0)
    assert not loss.enabled and loss.vgg is None
    assert loss(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)) == (None, None)


def test_perceptual_loss_offline_without_weights_says_how_to_get_them(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESTOREKIT_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as caught:
        ours_l.PerceptualLoss(ours_l.PERCEPTUAL_LAYER_WEIGHTS)
    message = str(caught.value)
    assert "restorekit models download vgg19" in message
    assert "restorekit models import FILE --name vgg19" in message
    assert "perceptual_weight=0" in message


def test_perceptual_weights_resolve_from_the_model_home(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch, random_vgg19: dict[str, torch.Tensor], photos: list[np.ndarray]
) -> None:
    """An installed ``vgg19`` in the model home is found by name, offline; only the feature
    tensors are read."""
    from restorekit.registry.convert import save_state_dict
    from restorekit.registry.download import target_path
    from restorekit.registry.schema import load_registry
    from restorekit.train.vgg import load_vgg_weights

    monkeypatch.setenv("RESTOREKIT_OFFLINE", "1")
    target = target_path(load_registry().get("vgg19"))
    assert target.parent.name == "perceptual_models"
    save_state_dict({**random_vgg19, "classifier.6.bias": torch.zeros(1000)}, target, {})
    loaded = load_vgg_weights()
    assert set(loaded) == set(random_vgg19)
    x = _photo_batch(photos[:1], 32)
    by_name = ours_l.PerceptualLoss({"conv2_2": 1.0})
    explicit = ours_l.PerceptualLoss({"conv2_2": 1.0}, vgg_weights=random_vgg19)
    assert torch.equal(by_name(x, x.flip(-1))[0], explicit(x, x.flip(-1))[0])


@pytest.mark.slow
def test_vgg19_imports_as_the_registry_model(isolated_home: Path, tmp_path: Path) -> None:
    """``restorekit models import vgg19.pth --name vgg19`` checks torchvision's full VGG19
    layout (features and classifier) and installs it where the perceptual loss finds it."""
    import torchvision

    from restorekit.models import import_model
    from restorekit.train.vgg import load_vgg_weights

    torch.manual_seed(6)
    state = torchvision.models.vgg19(weights=None).state_dict()
    source = tmp_path / "vgg19-copy.pth"
    torch.save(state, source)
    del state
    resolved = import_model(source, name="vgg19")
    assert resolved.path.parent.name == "perceptual_models"
    loaded = load_vgg_weights(download=False)
    assert len(loaded) == 32 and loaded["features.0.weight"].shape == (64, 3, 3, 3)
    broken = tmp_path / "not-vgg.pth"
    torch.save({"features.0.weight": torch.zeros(3, 3, 3, 3)}, broken)
    from restorekit.errors import ModelIncompatibleError

    with pytest.raises(ModelIncompatibleError, match="architecture VGG"):
        import_model(broken, name="vgg19", overwrite=True)


def test_build_loss_from_basicsr_options(random_vgg19: dict[str, torch.Tensor]) -> None:
    assert isinstance(ours_l.build_loss({"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"}), ours_l.L1Loss)
    gan = ours_l.build_loss({"type": "GANLoss", "gan_type": "vanilla", "real_label_val": 1.0, "fake_label_val": 0.0, "loss_weight": 0.1})
    assert isinstance(gan, ours_l.GANLoss) and gan.loss_weight == 0.1
    percep = ours_l.build_loss(
        {"type": "PerceptualLoss", "layer_weights": {"conv5_4": 1}, "perceptual_weight": 1.0, "style_weight": 0}, vgg_weights=random_vgg19
    )
    assert isinstance(percep, ours_l.PerceptualLoss)
    with pytest.raises(InvalidParameterError, match="Unknown vgg19 layers"):
        ours_l.PerceptualLoss({"conv6_1": 1.0}, vgg_weights=random_vgg19)
    with pytest.raises(InvalidParameterError, match="Unknown loss type"):
        ours_l.build_loss({"type": "SSIMLoss"})


# --------------------------------------------------------------------------- metrics


def _degraded(photo: np.ndarray, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A real photo and a blurred, noisy, slightly brightened version of it, (1, 3, H, W) [0, 1]."""
    ref = torch.from_numpy(photo.copy()).permute(2, 0, 1)[None].float() / 255.0
    blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(ref, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    noise = torch.randn(ref.shape, generator=torch.Generator().manual_seed(seed)) * 0.02
    return (blurred + noise + 0.01).clamp(0, 1), ref


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
@pytest.mark.parametrize("crop_border", [0, 4])
def test_psnr_and_ssim_on_y_equal_basicsrs_validation(name: str, crop_border: int) -> None:
    """basicsr's validation: tensor2img (8-bit BGR) then calculate_psnr/calculate_ssim with
    test_y_channel. Tolerances: PSNR 1e-4 dB, SSIM 1e-6."""
    from skimage import data

    psnr_ssim = pytest.importorskip("basicsr.metrics.psnr_ssim")
    img_util = pytest.importorskip("basicsr.utils.img_util")
    photo = np.ascontiguousarray(getattr(data, name)())[:160, :200]
    out, ref = _degraded(photo, seed=len(name))
    out8, ref8 = img_util.tensor2img(out), img_util.tensor2img(ref)
    expected_psnr = psnr_ssim.calculate_psnr(out8, ref8, crop_border, test_y_channel=True)
    expected_ssim = psnr_ssim.calculate_ssim(out8, ref8, crop_border, test_y_channel=True)
    psnr = metrics.psnr_y(out, ref, crop_border)
    ssim = metrics.ssim_y(out, ref, crop_border)
    assert psnr.shape == ssim.shape == (1,)
    assert 20 < expected_psnr < 45 and 0.5 < expected_ssim < 0.99, "a realistic degradation"
    assert abs(float(psnr[0]) - expected_psnr) < 1e-4
    assert abs(float(ssim[0]) - expected_ssim) < 1e-6


def test_float_metrics_equal_basicsrs_tensor_versions() -> None:
    from skimage import data

    psnr_ssim = pytest.importorskip("basicsr.metrics.psnr_ssim")
    photos = [np.ascontiguousarray(getattr(data, n)())[:96, :128] for n in ("astronaut", "coffee")]
    pairs = [_degraded(p, seed=i) for i, p in enumerate(photos)]
    out, ref = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
    expected_psnr = psnr_ssim.calculate_psnr_pt(out, ref, 2, test_y_channel=True)
    expected_ssim = psnr_ssim.calculate_ssim_pt(out, ref, 2, test_y_channel=True)
    _close(metrics.psnr_y(out, ref, 2, quantize=False), expected_psnr.double(), 1e-5)  # basicsr adds 1e-8 to the MSE
    _close(metrics.ssim_y(out, ref, 2, quantize=False), expected_ssim.double(), 1e-5)


def test_metrics_edge_cases() -> None:
    img = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    assert torch.isinf(metrics.psnr_y(img, img)).all()
    assert torch.allclose(metrics.ssim_y(img, img), torch.ones(2, dtype=torch.float64))
    with pytest.raises(InvalidParameterError, match="shapes differ"):
        metrics.psnr_y(img, img[..., :20])
    with pytest.raises(InvalidParameterError, match="crop_border 12 leaves nothing"):
        metrics.psnr_y(img, img, 12)
    with pytest.raises(InvalidParameterError, match="at least 11x11"):
        metrics.ssim_y(img, img, 8)


# --------------------------------------------------------------------------- plots


def _history() -> list[dict[str, float]]:
    """A falling pixel loss, a flat-ish GAN loss, and a PSNR rising every 50 iterations."""
    records = []
    for it in range(10, 510, 10):
        record = {"iter": it, "l_g_pix": 0.2 / (1 + it / 50), "l_g_gan": 0.07 + 0.001 * (it % 30)}
        if it % 50 == 0:
            record["psnr"] = 20 + 4 * (1 - math.exp(-it / 200))
        records.append(record)
    return records


def _pixels_of(image: np.ndarray, colour: str, tolerance: int = 40) -> np.ndarray:
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    return np.argwhere(np.abs(image[..., :3].astype(int) - rgb).sum(-1) < tolerance)


@pytest.mark.parametrize("backend", ["pil", pytest.param("matplotlib", marks=pytest.mark.slow)])
def test_training_curves_png_shows_the_falling_loss(tmp_path: Path, backend: str) -> None:
    from PIL import Image

    from restorekit.train.plots import PALETTE, plot_training_curves

    if backend == "matplotlib":
        pytest.importorskip("matplotlib", reason="matplotlib is optional")
    path = plot_training_curves(_history(), tmp_path / "curves.png", backend=backend, title="realesrgan-x4plus")
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == (600, 900, 3)
    blue = _pixels_of(image, PALETTE[0])  # l_g_pix, the first series
    upper = blue[blue[:, 0] < 300]  # the loss panel
    assert len(upper) > 100
    left_rows = upper[upper[:, 1] < np.percentile(upper[:, 1], 10)][:, 0]
    right_rows = upper[upper[:, 1] > np.percentile(upper[:, 1], 90)][:, 0]
    assert left_rows.mean() < right_rows.mean() - 50, "the loss line falls from left to right"
    assert not list(tmp_path.glob(".curves*")), "written atomically, no temp file left"


def test_training_curves_refuse_an_empty_history(tmp_path: Path) -> None:
    from restorekit.train.plots import plot_training_curves

    with pytest.raises(InvalidParameterError, match="Nothing to plot"):
        plot_training_curves([{"iter": 1, "l_g_pix": float("nan")}], tmp_path / "x.png", backend="pil")
    assert not (tmp_path / "x.png").exists()


def test_comparison_strip_shows_the_same_region_of_each_version(tmp_path: Path, photos: list[np.ndarray]) -> None:
    from PIL import Image

    from restorekit.train.plots import comparison_strip, detail_box

    gt = _photo_batch(photos[:1], 128)
    lq = torch.nn.functional.avg_pool2d(gt, 4)
    sr = torch.nn.functional.interpolate(lq, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    strip = comparison_strip([("input", lq), ("output", sr), ("ground truth", gt)], tmp_path / "crops.png", crop=48, zoom=2)
    assert strip.size == (3 * 96 + 2 * 6, 96 + 18)
    assert Image.open(tmp_path / "crops.png").size == strip.size
    left, top, right, bottom = detail_box(gt, 48)
    pixels = np.asarray(strip)
    expected_gt = (gt[0, :, top:bottom, left:right].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    gt_tile = pixels[18:, 2 * (96 + 6) :][::2, ::2]
    assert np.array_equal(gt_tile, expected_gt)
    lq_tile = pixels[18:, :96][::2, ::2]
    expected_lq = (lq[0, :, top // 4 : bottom // 4, left // 4 : right // 4].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert top % 4 == 0 and left % 4 == 0, "the detail box steps by crop // 4 = 12 pixels"
    assert np.array_equal(lq_tile[::4, ::4], expected_lq), "the input, nearest-upscaled x4"

    def energy(box: tuple[int, int, int, int]) -> float:
        patch = gt[0, :, box[1] : box[3], box[0] : box[2]].mean(0)
        return float(patch.diff(dim=0).abs().mean() + patch.diff(dim=1).abs().mean())

    assert energy((left, top, right, bottom)) >= max(energy((0, 0, 48, 48)), energy((80, 80, 128, 128)))
    with pytest.raises(InvalidParameterError, match="outside"):
        comparison_strip([("x", gt)], box=(100, 100, 200, 200))


# --------------------------------------------------------------------------- precision and scaling


def test_losses_and_discriminator_run_under_cpu_bf16_autocast(photos: list[np.ndarray], random_vgg19: dict[str, torch.Tensor]) -> None:
    """The trainer's bf16 path: same numbers as fp32 within bf16 precision, fp32 results."""
    x, y = _photo_batch(photos[:2], 64), _photo_batch(photos[:2], 64, offset=4)
    percep = ours_l.PerceptualLoss(ours_l.PERCEPTUAL_LAYER_WEIGHTS, vgg_weights=random_vgg19)
    torch.manual_seed(7)
    net_d = ours_d.UNetDiscriminatorSN(3, 16).eval()
    with torch.no_grad():
        full, logits = percep(x, y)[0], net_d(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low, low_logits = percep(x, y)[0], net_d(x)
    assert low.dtype == torch.float32 and torch.isfinite(low)
    assert abs(float(low) - float(full)) < 0.02 * float(full)
    _close(low_logits.float(), logits, 0.05)


def test_discriminator_step_takes_a_scaled_backward(photos: list[np.ndarray]) -> None:
    """``backward`` receives each loss, so a grad scaler or accumulation divides them."""
    gt = _photo_batch(photos[:2], 32)
    output = gt.flip(-1).requires_grad_(True)
    torch.manual_seed(8)
    net_d = ours_d.UNetDiscriminatorSN(3, 8)
    twin = copy.deepcopy(net_d)
    gan = ours_l.GANLoss("vanilla")
    ours_l.discriminator_step(net_d, gan, output, gt)
    seen: list[float] = []

    def quarter(loss: torch.Tensor) -> None:
        seen.append(float(loss.detach()))
        (loss / 4).backward()

    logged = ours_l.discriminator_step(twin, gan, output, gt, backward=quarter)
    assert seen == pytest.approx([float(logged["l_d_real"]), float(logged["l_d_fake"])])
    for p, q in zip(net_d.parameters(), twin.parameters(), strict=True):
        _close(q.grad * 4, p.grad, 1e-5)
    assert output.grad is None, "the generator's output gets no gradient from the D step"
