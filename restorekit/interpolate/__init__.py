"""Network interpolation (ESRGAN's DNI): blend the weights of compatible models.

ESRGAN's network interpolation blends networks of one lineage parameter by parameter,
``(1 - alpha) * A + alpha * B``; with N models, ``sum(w_i * M_i)`` with weights that sum to 1.
Between a PSNR-oriented network and its GAN fine-tune it trades smoothness for texture with
no retraining; Real-ESRGAN uses the same trick for realesr-general-x4v3's denoise strength
(``-dn d`` = ``d * general-x4v3 + (1 - d) * general-wdn-x4v3``).

Layers, from pure to convenient:

- :func:`blend_state_dicts`: the arithmetic on state dicts, after :func:`check_compatible`
  (one spandrel architecture, the same keys, the same shapes). Float tensors are blended in
  float32 (float64 if a parent is float64) and cast back to the first model's dtype;
  non-float tensors are copied from the first model.
- :func:`interpolate`: model references (registry names, names in the model home, paths) to
  an :class:`InterpolatedModel`, whose ``descriptor`` is a float32 CPU spandrel
  ``ImageModelDescriptor`` usable anywhere an upscale model is (ComfyUI's core upscale node
  included) and which :meth:`~InterpolatedModel.save` writes as safetensors with the
  parents' SHA-256 and weights in its metadata. Results are LRU-cached by (the parents' file
  identities, the weights), so a slider does not recompute.
- :func:`blend_descriptors`: the same for already-loaded spandrel descriptors (ComfyUI's
  ``UPSCALE_MODEL`` inputs).

Every blend of models that are not a registry pair is checked for being broken (see
:func:`check_merge`): networks trained independently share a layout but not the meaning of
their channels, and their blend is garbage even though each parent is fine.

Modules: :mod:`.blend` (weights, compatibility, state-dict arithmetic), :mod:`.probe` (the
broken-merge check), :mod:`.cache` (blends and parents cached by file identity),
:mod:`.result` (:class:`InterpolatedModel`, saved blends and their metadata) and
:mod:`.references` (:func:`interpolate`, :func:`blend_descriptors`). The registry's strength
pairs (sharpness, denoise) live in :mod:`restorekit.strength`, next to model resolution.
"""

from .blend import (
    StateDict,
    blend_state_dicts,
    check_compatible,
    compatible_registry_models,
    detect_architecture,
    normalize_weights,
)
from .cache import ParentModel, clear_cache
from .probe import MergeCheck, check_merge, probe_images
from .references import blend_descriptors, interpolate
from .result import (
    METADATA_KEY,
    InterpolatedModel,
    InterpolationRecord,
    read_interpolation_metadata,
)

__all__ = [
    "METADATA_KEY",
    "InterpolatedModel",
    "InterpolationRecord",
    "MergeCheck",
    "ParentModel",
    "StateDict",
    "blend_descriptors",
    "blend_state_dicts",
    "check_compatible",
    "check_merge",
    "clear_cache",
    "compatible_registry_models",
    "detect_architecture",
    "interpolate",
    "normalize_weights",
    "probe_images",
    "read_interpolation_metadata",
]
