"""Known network architectures: how to build them, check them and map foreign weights.

Each :class:`ArchitectureSpec` says which family loads it (``spandrel`` for image models,
``facexlib`` for face detection and parsing), spandrel's architecture id, and a *state
template*: the weight tensors' keys and shapes in forward-execution order, for the
hyperparameters stored in the registry. The template is what lets us

- convert ncnn ``.param``/``.bin`` pairs (whose weights come in execution order),
- check that downloaded weights have the architecture and hyperparameters the registry says,
- build random-weight models for tests.

Keys follow the official checkpoints (basicsr naming for Real-ESRGAN, facexlib's for
RetinaFace/ParseNet/BiSeNet), which spandrel and facexlib load directly.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import InvalidParameterError, ModelIncompatibleError
from .spandrel_internals import private_class

Shape = tuple[int, ...]
StateTemplate = list[tuple[str, Shape]]


@dataclass(frozen=True)
class ArchitectureSpec:
    """How RestoreKit knows one architecture.

    Attributes:
        name: the registry's architecture name.
        family: ``spandrel`` (loaded as a spandrel descriptor), ``facexlib``, or
            ``restorekit`` (built by the engine itself, e.g. the perceptual loss's VGG).
        spandrel_id: spandrel's ``architecture.id`` for this network, if any.
        template: hyperparameters -> ordered ``[(key, shape), ...]`` of every weight tensor.
        defaults: hyperparameter defaults, merged under the registry's values.
    """

    name: str
    family: str
    spandrel_id: str | None
    template: Callable[[Mapping[str, Any]], StateTemplate]
    defaults: Mapping[str, Any]

    def params(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults merged with ``overrides`` (unknown keys are refused)."""
        merged = dict(self.defaults)
        for key, value in (overrides or {}).items():
            if key not in merged:
                raise InvalidParameterError(
                    f"Architecture {self.name} has no hyperparameter {key!r}; "
                    f"known: {', '.join(sorted(merged))}."
                )
            merged[key] = value
        return merged


# --------------------------------------------------------------------------- templates


def _conv(key: str, c_out: int, c_in: int, k: int = 3, bias: bool = True) -> StateTemplate:
    entries: StateTemplate = [(f"{key}.weight", (c_out, c_in, k, k))]
    if bias:
        entries.append((f"{key}.bias", (c_out,)))
    return entries


def rrdbnet_template(p: Mapping[str, Any]) -> StateTemplate:
    """basicsr ``RRDBNet`` (Real-ESRGAN x4plus/x2plus, ESRGAN) in forward order.

    x2 and x1 models use pixel-unshuffle on the input, so ``conv_first`` sees 4x or 16x
    the channels.
    """
    nf, gc, nb = int(p["num_feat"]), int(p["num_grow_ch"]), int(p["num_block"])
    scale, c_in, c_out = int(p["scale"]), int(p["num_in_ch"]), int(p["num_out_ch"])
    unshuffle = {1: 16, 2: 4, 4: 1}.get(scale)
    if unshuffle is None:
        raise InvalidParameterError(f"RRDBNet supports scale 1, 2 or 4, not {scale}.")
    entries = _conv("conv_first", nf, c_in * unshuffle)
    for block in range(nb):
        for rdb in (1, 2, 3):
            for i in range(1, 6):
                out = nf if i == 5 else gc
                entries += _conv(f"body.{block}.rdb{rdb}.conv{i}", out, nf + (i - 1) * gc)
    entries += _conv("conv_body", nf, nf)
    entries += _conv("conv_up1", nf, nf)
    entries += _conv("conv_up2", nf, nf)
    entries += _conv("conv_hr", nf, nf)
    entries += _conv("conv_last", c_out, nf)
    return entries


def srvgg_template(p: Mapping[str, Any]) -> StateTemplate:
    """basicsr/Real-ESRGAN ``SRVGGNetCompact`` (animevideov3, general-x4v3) in forward order."""
    nf, n_conv, scale = int(p["num_feat"]), int(p["num_conv"]), int(p["upscale"])
    c_in, c_out, act = int(p["num_in_ch"]), int(p["num_out_ch"]), str(p["act_type"])
    entries = _conv("body.0", nf, c_in)
    index = 1

    def activation() -> StateTemplate:
        nonlocal index
        item: StateTemplate = [(f"body.{index}.weight", (nf,))] if act == "prelu" else []
        index += 1
        return item

    entries += activation()
    for _ in range(n_conv):
        entries += _conv(f"body.{index}", nf, nf)
        index += 1
        entries += activation()
    entries += _conv(f"body.{index}", c_out * scale * scale, nf)
    return entries


def _module_template(build: Callable[[Mapping[str, Any]], nn.Module]) -> Callable[[Mapping[str, Any]], StateTemplate]:
    def template(p: Mapping[str, Any]) -> StateTemplate:
        with torch.device("meta"):
            module = build(p)
        return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]

    return template


def _import(path: str, name: str) -> Any:
    """A class from a dependency's public module, imported when first needed (facexlib)."""
    return getattr(importlib.import_module(path), name)


def build_gfpgan(p: Mapping[str, Any]) -> nn.Module:
    cls = private_class("GFPGANv1Clean")
    return cls(**dict(p))


def build_restoreformer(p: Mapping[str, Any]) -> nn.Module:
    cls = private_class("RestoreFormer")
    return cls()


EXTRA_SPANDREL_IDS = frozenset({"CodeFormer"})
"""spandrel architecture ids that only ``spandrel_extra_arches`` registers."""

EXTRA_ARCHES_NOTE = (
    "needs the optional package spandrel_extra_arches (pip install 'restorekit[codeformer]' "
    "or pip install spandrel_extra_arches)"
)


def build_codeformer(p: Mapping[str, Any]) -> nn.Module:
    """CodeFormer from ``spandrel_extra_arches`` (its licence: S-Lab License 1.0, non-commercial)."""
    if importlib.util.find_spec("spandrel_extra_arches") is None:
        raise ModelIncompatibleError(f"CodeFormer {EXTRA_ARCHES_NOTE}.")
    cls = private_class("CodeFormer")
    return cls(
        dim_embd=int(p["dim_embd"]),
        n_head=int(p["n_head"]),
        n_layers=int(p["n_layers"]),
        codebook_size=int(p["codebook_size"]),
        latent_size=int(p["latent_size"]),
        connect_list=[str(v) for v in p["connect_list"]],
    )


def build_retinaface(p: Mapping[str, Any]) -> nn.Module:
    """facexlib's RetinaFace built without any download (weights come from our registry)."""
    import warnings

    cls = _import("facexlib.detection.retinaface", "RetinaFace")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's "pretrained" deprecation inside facexlib
        device = torch.get_default_device()  # "meta" while templates are built
        return cls(network_name=str(p["network_name"]), half=False, phase="test", device=device)


def build_parsenet(p: Mapping[str, Any]) -> nn.Module:
    cls = _import("facexlib.parsing.parsenet", "ParseNet")
    return cls(in_size=int(p["in_size"]), out_size=int(p["out_size"]), parsing_ch=int(p["parsing_ch"]))


def build_bisenet(p: Mapping[str, Any]) -> nn.Module:
    import warnings

    cls = _import("facexlib.parsing.bisenet", "BiSeNet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(num_class=int(p["num_class"]))


def vgg_template(p: Mapping[str, Any]) -> StateTemplate:
    """torchvision ``VGG`` (the perceptual loss's ImageNet VGG19): ``features.*``, ``classifier.*``."""
    from .train.vgg import vgg_template as template

    return template(str(p["vgg_type"]), int(p["num_classes"]))


GRAPH_SIGNATURES: dict[str, Callable[[Mapping[str, Any]], tuple[list[int], list[list[int]]]]] = {
    "BlazeFace": lambda p: (
        [1, *[int(p["input_size"])] * 2, 3],
        [[1, int(p["anchors"]), 16], [1, int(p["anchors"]), 1]],
    ),
    "FaceMesh": lambda p: ([1, 192, 192, 3], [[1, 1, 1, 1404], [1, 1, 1, 1]]),
}
"""Graph architectures (converted TFLite models): hyperparameters -> the graph's input shape
and output shapes, which identify the model (the weights are checked against the graph)."""


def _graph_template(p: Mapping[str, Any]) -> StateTemplate:
    raise ModelIncompatibleError("Graph architectures take their layers from the converted file, not a template.")


def check_graph_state(name: str, params: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> None:
    """Raise :class:`ModelIncompatibleError` unless ``state`` is a converted TFLite graph with
    the input and outputs of architecture ``name`` and weights that fit it."""
    import json

    from .faces.graphnet import GRAPH_KEY, GraphNet

    if GRAPH_KEY not in state:
        raise ModelIncompatibleError(f"Weights for {name} must come from its TFLite model (no graph found).")
    graph = json.loads(bytes(state[GRAPH_KEY].to(torch.uint8).tolist()).decode("utf-8"))
    spec = get_architecture(name)
    expected_input, expected_outputs = GRAPH_SIGNATURES[name](spec.params(params))
    if graph.get("input_shape") != expected_input or graph.get("output_shapes") != expected_outputs:
        raise ModelIncompatibleError(
            f"This TFLite model takes {graph.get('input_shape')} and gives {graph.get('output_shapes')}; "
            f"{name} with {dict(spec.params(params))} takes {expected_input} and gives {expected_outputs}."
        )
    GraphNet.from_state_dict(state)


BUILDERS: dict[str, Callable[[Mapping[str, Any]], nn.Module]] = {
    "GFPGANv1Clean": build_gfpgan,
    "RestoreFormer": build_restoreformer,
    "CodeFormer": build_codeformer,
    "RetinaFace": build_retinaface,
    "ParseNet": build_parsenet,
    "BiSeNet": build_bisenet,
}

ARCHITECTURES: dict[str, ArchitectureSpec] = {
    spec.name: spec
    for spec in (
        ArchitectureSpec(
            name="RRDBNet",
            family="spandrel",
            spandrel_id="ESRGAN",
            template=rrdbnet_template,
            defaults={"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_block": 23, "num_grow_ch": 32, "scale": 4},
        ),
        ArchitectureSpec(
            name="SRVGGNetCompact",
            family="spandrel",
            spandrel_id="Compact",
            template=srvgg_template,
            defaults={"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_conv": 16, "upscale": 4, "act_type": "prelu"},
        ),
        ArchitectureSpec(
            name="GFPGANv1Clean",
            family="spandrel",
            spandrel_id="GFPGAN",
            template=_module_template(build_gfpgan),
            defaults={
                "out_size": 512,
                "num_style_feat": 512,
                "channel_multiplier": 2,
                "decoder_load_path": None,
                "fix_decoder": False,
                "num_mlp": 8,
                "input_is_latent": True,
                "different_w": True,
                "narrow": 1,
                "sft_half": True,
            },
        ),
        ArchitectureSpec(
            name="RestoreFormer",
            family="spandrel",
            spandrel_id="RestoreFormer",
            template=_module_template(build_restoreformer),
            defaults={},
        ),
        ArchitectureSpec(
            name="CodeFormer",
            family="spandrel",
            spandrel_id="CodeFormer",
            template=_module_template(build_codeformer),
            defaults={
                "dim_embd": 512,
                "n_head": 8,
                "n_layers": 9,
                "codebook_size": 1024,
                "latent_size": 256,
                "connect_list": ["32", "64", "128", "256"],
            },
        ),
        ArchitectureSpec(
            name="RetinaFace",
            family="facexlib",
            spandrel_id=None,
            template=_module_template(build_retinaface),
            defaults={"network_name": "resnet50"},
        ),
        ArchitectureSpec(
            name="ParseNet",
            family="facexlib",
            spandrel_id=None,
            template=_module_template(build_parsenet),
            defaults={"in_size": 512, "out_size": 512, "parsing_ch": 19},
        ),
        ArchitectureSpec(
            name="BlazeFace",
            family="tflite",
            spandrel_id=None,
            template=_graph_template,
            defaults={"variant": "short", "input_size": 128, "anchors": 896},
        ),
        ArchitectureSpec(
            name="FaceMesh",
            family="tflite",
            spandrel_id=None,
            template=_graph_template,
            defaults={"points": 468},
        ),
        ArchitectureSpec(
            name="BiSeNet",
            family="facexlib",
            spandrel_id=None,
            template=_module_template(build_bisenet),
            defaults={"num_class": 19},
        ),
        ArchitectureSpec(
            name="VGG",
            family="restorekit",
            spandrel_id=None,
            template=vgg_template,
            defaults={"vgg_type": "vgg19", "num_classes": 1000},
        ),
    )
}


def get_architecture(name: str) -> ArchitectureSpec:
    """The :class:`ArchitectureSpec` called ``name``; raises a clear error if unknown."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ModelIncompatibleError(
            f"Unknown architecture {name!r}. Known: {', '.join(sorted(ARCHITECTURES))}."
        ) from None


def build_module(name: str, params: Mapping[str, Any] | None = None) -> nn.Module:
    """Instantiate a facexlib/spandrel architecture that has a builder (random weights)."""
    spec = get_architecture(name)
    if name not in BUILDERS:
        raise ModelIncompatibleError(f"Architecture {name} is loaded through spandrel, not built directly.")
    return BUILDERS[name](spec.params(params))


def random_state_dict(
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
    std: float = 0.02,
) -> dict[str, torch.Tensor]:
    """Random float32 weights with the exact keys and shapes of an architecture (for tests).

    PReLU slopes and normalisation weights are set near their usual initial values so that
    the network produces finite output.
    """
    spec = get_architecture(name)
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in spec.template(spec.params(params)):
        if key.endswith(("running_var",)):
            tensor = torch.ones(shape)
        elif key.endswith(("running_mean", "bias")) or key.endswith("num_batches_tracked"):
            tensor = torch.zeros(shape)
        elif len(shape) == 1 and (".bn" in key or "norm" in key or key.endswith(".weight")):
            tensor = torch.full(shape, 0.25 if "body." in key and spec.name == "SRVGGNetCompact" else 1.0)
        else:
            tensor = torch.randn(shape, generator=generator) * std
        if key.endswith("num_batches_tracked"):
            tensor = torch.zeros(shape, dtype=torch.int64)
        state[key] = tensor
    return state


def check_state_dict(
    name: str,
    params: Mapping[str, Any] | None,
    state: Mapping[str, torch.Tensor],
) -> None:
    """Raise :class:`ModelIncompatibleError` unless ``state`` has exactly the template's
    keys and shapes. The message lists the first differences."""
    spec = get_architecture(name)
    if spec.family == "tflite":
        check_graph_state(name, params or {}, state)
        return
    expected = dict(spec.template(spec.params(params)))
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k}: {tuple(state[k].shape)} != {expected[k]}"
        for k in expected
        if k in state and tuple(state[k].shape) != expected[k]
    ]
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing {missing[:3]}")
        if unexpected:
            details.append(f"unexpected {unexpected[:3]}")
        if wrong:
            details.append(f"wrong shapes {wrong[:3]}")
        raise ModelIncompatibleError(
            f"Weights do not match architecture {name} with {dict(spec.params(params))}: "
            + "; ".join(details)
            + ". The file is for a different model; check the registry entry or pick the right model."
        )
