"""Batched face restoration through spandrel face models (GFPGAN, RestoreFormer, CodeFormer).

Face models want faces in [-1, 1]. spandrel's descriptor call clamps its input to [0, 1]
(the cause of facerestore_cf's white faces after ComfyUI moved to spandrel), so the
descriptor's ``.model`` is called directly with the right range, through one small runner
per architecture (:data:`FACE_ARCHITECTURES`).

- GFPGANv1Clean runs through :class:`~restorekit.faces.gfpgan.FastGFPGAN`: batched,
  deterministic (the stored noise), modulation on the activations.
- RestoreFormer and CodeFormer run their own forward (both deterministic), with their
  residual blocks in the faster eager form of :mod:`restorekit.faces.vqgan`.
- CodeFormer is only available when ``spandrel_extra_arches`` is installed; its licence is
  non-commercial (S-Lab License 1.0), and using it adds that notice to the result.

The network runs in the engine's precision (:func:`restorekit.device.plan_for_model`: bf16
with channels_last on a CPU with native bf16, else fp32); faces go in and out as float32 [0, 1]. Under a plan's
``compile`` mode (``auto``, the default, or ``on``) the runner is compiled per batch shape
where the work pays for it (:mod:`restorekit.compiled`): on an AVX2 CPU in fp32 compiled
RestoreFormer ran 1.07x, GFPGAN 1.21x faster than eager, after a compile of
45-110 s (``bench/RESULTS_faces.md``), so ``auto`` compiles for videos and folders, not for
one photo.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..compiled import (
    CompiledForward,
    count_layers,
    network_key,
    shared_forward,
    with_aten_group_norms,
)
from ..device import ExecutionPlan, empty_cache, is_out_of_memory, plan_for_model
from ..errors import InvalidParameterError, ModelIncompatibleError, RestoreKitError
from ..progress import CancelCheck, ProgressCallback, Reporter
from .align import FACE_SIZE
from .background import resize

logger = logging.getLogger(__name__)

Runner = Callable[[Tensor], Tensor]
"""A prepared face network: (B, 3, 512, 512) in [-1, 1] (plan dtype) -> same shape, [-1, 1]."""

CODEFORMER_LICENCE = (
    "CodeFormer is licensed under the S-Lab License 1.0: non-commercial use only "
    "(https://github.com/sczhou/CodeFormer/blob/master/LICENSE)."
)
CODEFORMER_KEYS = ("position_emb", "idx_pred_layer.1.weight", "quantize.embedding.weight")


def _gfpgan_runner(module: nn.Module, options: Mapping[str, Any]) -> Runner:
    from .gfpgan import FastGFPGAN

    return FastGFPGAN(module)


def _restoreformer_runner(module: nn.Module, options: Mapping[str, Any]) -> Runner:
    from .vqgan import with_fast_residual_blocks

    module = with_fast_residual_blocks(module, channels_last=bool(options.get("channels_last", False)))
    return lambda x: module(x)[0]


def _codeformer_runner(module: nn.Module, options: Mapping[str, Any]) -> Runner:
    from .vqgan import with_fast_residual_blocks

    module = with_fast_residual_blocks(module, channels_last=bool(options.get("channels_last", False)))
    fidelity = float(options.get("fidelity", 0.5))

    def run(x: Tensor) -> Tensor:
        # its codebook lookup multiplies float32 one-hot codes by the (bf16) codebook;
        # autocast gives both one dtype
        low = x.dtype in (torch.bfloat16, torch.float16)
        with torch.autocast(x.device.type, dtype=x.dtype, enabled=low):
            return module(x, weight=fidelity)[0]

    return run


DEFAULT_BATCH = 4
"""Faces per forward pass: on the 2-core dev CPU, 4 faces cost 2.8-3.0 CPU-s each in bf16
against 3.8 one at a time (per-operation overheads amortised); a batch of 4 needs about
0.9 GB of activations."""


@dataclass(frozen=True)
class FaceArchitecture:
    """How to run one spandrel face architecture.

    Attributes:
        runner: builds a :data:`Runner` from the prepared module and the options.
        licence_notice: shown whenever the architecture is used, or None.
    """

    runner: Callable[[nn.Module, Mapping[str, Any]], Runner]
    licence_notice: str | None = None


FACE_ARCHITECTURES: dict[str, FaceArchitecture] = {
    "GFPGAN": FaceArchitecture(_gfpgan_runner),
    "RestoreFormer": FaceArchitecture(_restoreformer_runner),
    "CodeFormer": FaceArchitecture(_codeformer_runner, CODEFORMER_LICENCE),
}
"""spandrel architecture id -> runner. Adding a face architecture means one entry here."""


def extra_arches_available() -> bool:
    """True when ``spandrel_extra_arches`` (CodeFormer and others) is installed."""
    return importlib.util.find_spec("spandrel_extra_arches") is not None


_extra_installed = False


def install_extra_arches() -> bool:
    """Register ``spandrel_extra_arches`` with spandrel once, if installed. Returns whether it is."""
    global _extra_installed
    if _extra_installed:
        return True
    if not extra_arches_available():
        return False
    import spandrel_extra_arches

    spandrel_extra_arches.install()
    _extra_installed = True
    return True


def _looks_like_codeformer(path: Path) -> bool:
    try:
        from ..registry.convert import sniff_format

        if sniff_format(path) != "safetensors":
            return False
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            keys = set(handle.keys())
    except (OSError, RestoreKitError, ValueError, RuntimeError):
        return False
    return all(key in keys for key in CODEFORMER_KEYS)


def codeformer_missing_error(name: str) -> ModelIncompatibleError:
    return ModelIncompatibleError(
        f"{name} is a CodeFormer model. CodeFormer needs the optional package "
        "spandrel_extra_arches (pip install spandrel_extra_arches). " + CODEFORMER_LICENCE
    )


def load_face_model(reference: Any, *, allow_paths: bool = True, download: bool = True) -> Any:
    """A spandrel face-restoration descriptor from a registry name, a file, or a descriptor.

    Raises :class:`ModelIncompatibleError` for an upscale model (or anything that is not a
    face model), and a clear message for CodeFormer without ``spandrel_extra_arches``.
    """
    if isinstance(reference, (str, os.PathLike)):
        from ..models import load_model, resolve_model

        try:
            descriptor = load_model(reference, purpose="face_restore", allow_paths=allow_paths, download=download)
        except ModelIncompatibleError:
            resolved = None
            with contextlib.suppress(RestoreKitError):
                resolved = resolve_model(reference, purpose="face_restore", allow_paths=allow_paths, download=False)
            if resolved is not None and _looks_like_codeformer(resolved.path):
                if not install_extra_arches():
                    raise codeformer_missing_error(resolved.name) from None
                descriptor = load_model(reference, purpose="face_restore", allow_paths=allow_paths, download=download)
            else:
                raise
    else:
        descriptor = reference
    purpose = getattr(descriptor, "purpose", None)
    arch = getattr(getattr(descriptor, "architecture", None), "id", None)
    if purpose != "FaceSR":
        raise ModelIncompatibleError(
            f"The face model must be a face restoration model (GFPGAN, RestoreFormer, CodeFormer); "
            f"{arch or type(descriptor).__name__} is {'an upscale' if purpose == 'SR' else 'a ' + str(purpose)} model."
            " Give upscale models as the background model instead."
        )
    if arch not in FACE_ARCHITECTURES:
        raise ModelIncompatibleError(
            f"{arch} face models are not supported; use GFPGAN (v1.2-1.4), RestoreFormer or CodeFormer."
        )
    return descriptor


def model_face_size(descriptor: Any) -> int:
    """The face size a face model works at: GFPGAN's ``out_size``, else 512."""
    log_size = getattr(descriptor.model, "log_size", None)
    if descriptor.architecture.id == "GFPGAN" and isinstance(log_size, int):
        return 2**log_size
    return FACE_SIZE


class FaceRestorer:
    """Restores aligned 512x512 faces in batches with a spandrel face model.

    Args:
        model: a registry name, a model file, or a spandrel face descriptor.
        device, precision: as everywhere (see :mod:`restorekit.device`).
        batch_size: faces per forward pass (default 4); halved automatically on
            out-of-memory.
        fidelity: CodeFormer's fidelity weight w in [0, 1] (ignored by other models).

    ``restorer(faces)`` takes (N, 3, 512, 512) float32 faces in [0, 1] and returns restored
    faces of the same shape in [0, 1] (other square sizes are resized to the model's). Results do not depend on the batch size beyond float
    rounding (tested) and are identical from run to run.
    """

    def __init__(
        self,
        model: Any = None,
        *,
        device: str | torch.device = "auto",
        precision: str = "auto",
        batch_size: int | None = None,
        fidelity: float = 0.5,
        allow_paths: bool = True,
        download: bool = True,
        compile: str = "auto",
    ) -> None:
        from ..models import prepared_network
        from ..registry.schema import default_model_name

        if model is None:  # the registry's default face restorer
            model = default_model_name("face_restore")
        if not 0.0 <= float(fidelity) <= 1.0:
            raise InvalidParameterError(f"CodeFormer fidelity must be in [0, 1], got {fidelity}.")
        if batch_size is not None and int(batch_size) < 1:
            raise InvalidParameterError(f"The face batch size must be at least 1, got {batch_size}.")
        self.descriptor = load_face_model(model, allow_paths=allow_paths, download=download)
        self.architecture = self.descriptor.architecture.id
        self.plan: ExecutionPlan = plan_for_model(self.descriptor, device, precision, compile=compile)
        spec = FACE_ARCHITECTURES[self.architecture]
        self.licence_notice = spec.licence_notice
        if self.licence_notice:
            logger.warning(self.licence_notice)
        module = prepared_network(self.descriptor.model, self.plan)
        self.fidelity = float(fidelity)
        self._module = module
        self._run = self._runner(self.fidelity)
        self.batch_size = int(batch_size or DEFAULT_BATCH)
        self.face_size = model_face_size(self.descriptor)

    @property
    def name(self) -> str:
        return str(self.architecture)

    def with_fidelity(self, fidelity: float) -> FaceRestorer:
        """This restorer with CodeFormer fidelity weight ``fidelity`` (sharing the loaded
        network); itself for other architectures or an unchanged weight."""
        if not 0.0 <= float(fidelity) <= 1.0:
            raise InvalidParameterError(f"CodeFormer fidelity must be in [0, 1], got {fidelity}.")
        if self.architecture != "CodeFormer" or float(fidelity) == self.fidelity:
            return self
        import copy

        clone = copy.copy(self)
        clone.fidelity = float(fidelity)
        clone._run = clone._runner(clone.fidelity)
        return clone

    def _runner(self, fidelity: float) -> Runner:
        """The architecture's runner for ``fidelity``, compiled per batch shape under the plan's
        ``compile`` mode: the process's :class:`~restorekit.compiled.CompiledForward` of this
        descriptor, plan and fidelity (:func:`~restorekit.compiled.shared_forward`), so a
        later job with the same model (the app builds a restorer per job) runs the shapes
        already compiled instead of compiling them again."""
        module, plan = self._module, self.plan
        architecture = self.architecture
        options = {"fidelity": fidelity, "channels_last": plan.channels_last}

        def build() -> CompiledForward:  # refers to the module, never to the descriptor
            runner = FACE_ARCHITECTURES[architecture].runner(module, options)
            # on CPU, GroupNorm compiles to ATen's kernel (inductor's loops are 6x slower there)
            target_module = with_aten_group_norms(module) if plan.device.type == "cpu" else module
            return CompiledForward(
                forward=runner,
                target=FACE_ARCHITECTURES[architecture].runner(target_module, options),
                mode=plan.compile,
                key=network_key(module, plan.device, plan.dtype),
                layers=count_layers(module),
                label=architecture,
                device=plan.device,
                prepack=True,
            )

        if plan.compile == "off":
            return FACE_ARCHITECTURES[architecture].runner(module, options)
        weight = fidelity if architecture == "CodeFormer" else None  # only CodeFormer's runner uses it
        key = (str(plan.device), str(plan.dtype), plan.channels_last, plan.compile, weight)
        return shared_forward(self.descriptor, key, build)

    @property
    def compiled(self) -> CompiledForward | None:
        """The compiled execution of the runner (compile ``auto``/``on``), else None."""
        return self._run if isinstance(self._run, CompiledForward) else None

    def _forward(self, faces: Tensor) -> Tensor:
        size = faces.shape[-1]
        if size != self.face_size:
            faces = resize(faces, (self.face_size, self.face_size))
        x = self.plan.prepare_input(faces * 2.0 - 1.0)
        with torch.inference_mode():
            y = self._run(x)
        out = ((y.float().clamp(-1.0, 1.0) + 1.0) * 0.5).to(device=faces.device)
        if size != self.face_size:
            out = resize(out, (size, size))
        return out.contiguous()

    def _announce(self, total: int, batch: int) -> None:
        """Tell a compiled runner (``auto``) how many batches of each shape this call runs."""
        compiled = self.compiled
        if compiled is None or total == 0:
            return
        full, rest = divmod(total, batch)
        side = self.face_size
        compiled.expected.clear()  # this call's batches replace what an earlier call left
        if full:
            compiled.expect((batch, 3, side, side), full)
        if rest:
            compiled.expect((rest, 3, side, side), 1)

    def __call__(
        self,
        faces: Tensor,
        *,
        progress: ProgressCallback | Reporter | None = None,
        cancel: CancelCheck | None = None,
    ) -> Tensor:
        if faces.ndim != 4 or faces.shape[1] != 3 or faces.shape[-1] != faces.shape[-2]:
            raise InvalidParameterError(
                f"Face restoration takes square aligned faces, (N, 3, {FACE_SIZE}, {FACE_SIZE}), got {tuple(faces.shape)}."
            )
        reporter = Reporter.of(progress, cancel)
        total = faces.shape[0]
        outputs: list[Tensor] = []
        done = 0
        batch = self.batch_size
        self._announce(total, batch)
        reporter.step(0, total, "restoring faces")
        while done < total:
            chunk = faces[done : done + batch].float()
            try:
                outputs.append(self._forward(chunk))
            except RuntimeError as exc:
                if not is_out_of_memory(exc) or batch == 1:
                    raise
                empty_cache(self.plan.device)
                batch = max(1, batch // 2)
                logger.warning("out of memory restoring %d faces at once; retrying %d at a time", chunk.shape[0], batch)
                continue
            done += chunk.shape[0]
            reporter.step(done, total, "restoring faces")
        if not outputs:
            return faces.new_zeros((0, 3, *faces.shape[-2:]))
        return torch.cat(outputs)
