"""Headless runner for API-format ComfyUI workflows made of RestoreKit's nodes.

It runs the same JSON that ComfyUI's "Export (API)" writes and ``POST /prompt`` takes, for
batch jobs and tests; ComfyUI stays the real engine. Besides RestoreKit's nodes it knows
the core nodes such workflows need, with ComfyUI's names, inputs and behaviour:
``LoadImage``, ``SaveImage``, ``PreviewImage`` and ``ImageScaleBy``.

Like ComfyUI it runs only what the output nodes need, in topological order (each node
under ``torch.inference_mode()``, as ComfyUI's executor does), after checking
the whole graph: unknown node types, links to missing nodes or outputs, type mismatches,
missing required inputs, bad values (through each node's ``VALIDATE_INPUTS``) and cycles all
fail before any node runs, with the node id and input named.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from restorekit.errors import RestoreKitError
from restorekit.files import atomic_path, resolve_inside

from . import NODE_CLASS_MAPPINGS, comfy
from .base import RestoreKitNode, input_specs
from .convert import NodeInputError

logger = logging.getLogger("restorekit.nodes.runner")


class WorkflowError(RestoreKitError):
    """A workflow that cannot run; the message names the node, the input and the fix."""


# --------------------------------------------------------------------------- core nodes


class LoadImage(RestoreKitNode):
    """ComfyUI's ``LoadImage``: an image from the input folder -> IMAGE (8-bit RGB, EXIF
    orientation applied, all frames of the same size) and MASK (1 - alpha; 64x64 zeros
    without alpha)."""

    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        folder = comfy.input_directory()
        files = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        return {"required": {"image": (files, {"image_upload": True, "tooltip": "A file in the input folder."})}}

    @classmethod
    def VALIDATE_INPUTS(cls, image: Any = None, **_: Any) -> bool | str:  # noqa: N802 - ComfyUI's name
        if image is None:
            return True
        try:
            path = resolve_inside(comfy.input_directory(), str(image))
        except RestoreKitError as exc:
            return str(exc)
        return True if path.is_file() else f"Invalid image file: {image} (not in {comfy.input_directory()}; use --input-dir)."

    def load_image(self, image: str) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image, ImageOps, ImageSequence

        path = resolve_inside(comfy.input_directory(), image)
        images, masks = [], []
        with Image.open(path) as source:
            size = None
            for frame in ImageSequence.Iterator(source):
                frame = ImageOps.exif_transpose(frame)
                if frame.mode == "I":
                    frame = frame.point(lambda value: value * (1 / 255))
                rgb = frame.convert("RGB")
                size = size or rgb.size
                if rgb.size != size:
                    continue
                images.append(torch.from_numpy(np.array(rgb).astype(np.float32) / 255.0)[None])
                if "A" in frame.getbands():
                    alpha = np.array(frame.getchannel("A")).astype(np.float32) / 255.0
                    mask = 1.0 - torch.from_numpy(alpha)
                elif frame.mode == "P" and "transparency" in frame.info:
                    alpha = np.array(frame.convert("RGBA").getchannel("A")).astype(np.float32) / 255.0
                    mask = 1.0 - torch.from_numpy(alpha)
                else:
                    mask = torch.zeros((64, 64), dtype=torch.float32)
                masks.append(mask[None])
                if source.format == "MPO":
                    break
        return torch.cat(images), torch.cat(masks)


def _counter_start(folder: Path, stem: str) -> int:
    pattern = re.compile(rf"^{re.escape(stem)}_(\d+)_\.png$")
    numbers = [int(m.group(1)) for p in folder.glob("*.png") if (m := pattern.match(p.name))] if folder.is_dir() else []
    return max(numbers, default=0) + 1


def save_png(image: torch.Tensor, folder: Path, prefix: str, prompt: Mapping[str, Any] | None = None) -> list[Path]:
    """Save an IMAGE batch as ComfyUI's SaveImage does: ``<prefix>_00001_.png`` and on,
    8-bit (values truncated, as ComfyUI does), the API prompt in a ``prompt`` text chunk;
    each file written atomically."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    sub, _, stem = prefix.replace("\\", "/").rpartition("/")
    target_dir = resolve_inside(folder, sub) if sub else folder
    if not stem:
        raise NodeInputError(f"filename_prefix {prefix!r} needs a file name part, e.g. 'RestoreKit'.")
    counter = _counter_start(target_dir, stem.replace("%batch_num%", "0"))
    saved = []
    for batch_number, frame in enumerate(image):
        array = np.clip(255.0 * frame.detach().cpu().numpy(), 0, 255).astype(np.uint8)
        info = PngInfo()
        if prompt is not None:
            info.add_text("prompt", json.dumps(prompt))
        path = target_dir / f"{stem.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
        with atomic_path(path) as tmp:
            Image.fromarray(array).save(tmp, pnginfo=info, compress_level=4)
        saved.append(path)
        counter += 1
    return saved


class SaveImage(RestoreKitNode):
    """ComfyUI's ``SaveImage``: PNGs in the output folder, ``<prefix>_00001_.png`` and on."""

    CATEGORY = "image"
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": ("STRING", {"default": "ComfyUI", "tooltip": "The prefix for the file to save."}),
            }
        }

    def save_images(self, images: torch.Tensor, filename_prefix: str = "ComfyUI", prompt: Any = None) -> dict[str, Any]:
        paths = save_png(images, comfy.output_directory(), filename_prefix, prompt)
        return {"ui": {"images": [str(p) for p in paths]}}


class PreviewImage(RestoreKitNode):
    """ComfyUI's ``PreviewImage``: the images are kept in the run's results (ComfyUI shows
    them from a temporary folder); nothing is written."""

    CATEGORY = "image"
    RETURN_TYPES = ()
    FUNCTION = "preview"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        return {"required": {"images": ("IMAGE", {"tooltip": "The images to preview."})}}

    def preview(self, images: torch.Tensor, prompt: Any = None) -> dict[str, Any]:
        return {"ui": {"previews": images}}


class ImageScaleBy(RestoreKitNode):
    """ComfyUI's ``ImageScaleBy``: resize by a factor (sizes rounded), with its methods."""

    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"
    upscale_methods: ClassVar[list[str]] = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Images to resize."}),
                "upscale_method": (cls.upscale_methods, {"tooltip": "Interpolation."}),
                "scale_by": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01, "tooltip": "Factor."}),
            }
        }

    def upscale(self, image: torch.Tensor, upscale_method: str, scale_by: float) -> tuple[torch.Tensor]:
        samples = image.movedim(-1, 1)
        width, height = round(samples.shape[3] * scale_by), round(samples.shape[2] * scale_by)
        if upscale_method == "lanczos":  # ComfyUI: PIL on 8-bit images
            from PIL import Image

            frames = [
                Image.fromarray(np.clip(255.0 * s.movedim(0, -1).cpu().numpy(), 0, 255).astype(np.uint8)).resize(
                    (width, height), resample=Image.Resampling.LANCZOS
                )
                for s in samples
            ]
            out = torch.stack([torch.from_numpy(np.array(f).astype(np.float32) / 255.0).movedim(-1, 0) for f in frames])
        else:
            out = F.interpolate(samples, size=(height, width), mode=upscale_method)
        return (out.movedim(1, -1),)


CORE_NODES: dict[str, type] = {
    "LoadImage": LoadImage,
    "SaveImage": SaveImage,
    "PreviewImage": PreviewImage,
    "ImageScaleBy": ImageScaleBy,
}
"""The ComfyUI core nodes the runner provides (same names, inputs and behaviour)."""


def node_types() -> dict[str, type]:
    """Every node type the runner can execute."""
    return {**CORE_NODES, **NODE_CLASS_MAPPINGS}


# --------------------------------------------------------------------------- workflows


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str | int) and isinstance(value[1], int)


def load_workflow(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """An API-format workflow from a file or a dict (a ``{"prompt": ...}`` body works too).

    Raises :class:`WorkflowError` for UI-format files (they hold ``nodes`` and ``links``:
    export them with "Export (API)") and malformed ones."""
    if isinstance(source, Mapping):
        data: Any = dict(source)
        name = "the workflow"
    else:
        name = str(source)
        try:
            data = json.loads(Path(source).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise WorkflowError(f"Workflow file {name} not found.") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WorkflowError(f"{name} is not a readable JSON workflow ({exc}).") from None
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):
        data = data["prompt"]
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        raise WorkflowError(
            f"{name} is a UI-format workflow; run its API-format twin (example_workflows/api/), or save one "
            "from ComfyUI with 'Export (API)'."
        )
    if not isinstance(data, dict) or not data:
        raise WorkflowError(f"{name} holds no nodes: expected {{node_id: {{'class_type': ..., 'inputs': {{...}}}}}}.")
    workflow: dict[str, dict[str, Any]] = {}
    for node_id, node in data.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise WorkflowError(f"Node {node_id} has no class_type; is {name} an API-format workflow?")
        workflow[str(node_id)] = {"class_type": node["class_type"], "inputs": dict(node.get("inputs") or {})}
    return workflow


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(workflow: dict[str, dict[str, Any]], overrides: list[str]) -> dict[str, dict[str, Any]]:
    """``NODE_ID.input=value`` settings (values parsed as JSON where they parse, else kept
    as text) applied to a copy of ``workflow``."""
    result = {node_id: {"class_type": n["class_type"], "inputs": dict(n["inputs"])} for node_id, n in workflow.items()}
    for item in overrides:
        target, sep, raw = item.partition("=")
        node_id, dot, name = target.strip().partition(".")
        if not sep or not dot or not node_id or not name:
            raise WorkflowError(f"--set {item!r} is not of the form NODE_ID.input=value (e.g. 3.outscale=2).")
        if node_id not in result:
            raise WorkflowError(f"--set {item!r}: the workflow has no node {node_id} (nodes: {', '.join(result)}).")
        result[node_id]["inputs"][name] = _parse_value(raw)
    return result


def _output_type(types: Mapping[str, type], workflow: Mapping[str, Any], link: list[Any]) -> str:
    source_id, index = str(link[0]), link[1]
    returns = types[workflow[source_id]["class_type"]].RETURN_TYPES
    return returns[index]


def _accepts(spec_type: Any, output_type: str) -> bool:
    if spec_type == "*" or output_type == "*":
        return True
    if isinstance(spec_type, list | tuple):  # a dropdown fed by a link: ComfyUI passes strings
        return output_type in ("STRING", "COMBO")
    return spec_type == output_type or output_type in str(spec_type).split(",")


def validate(workflow: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Check the whole graph; return the execution order of what the output nodes need.

    Raises :class:`WorkflowError` naming the first problem found."""
    types = node_types()
    for node_id, node in workflow.items():
        if node["class_type"] not in types:
            known = ", ".join(sorted(types))
            raise WorkflowError(f"Node {node_id}: unknown node type {node['class_type']!r}. The runner knows: {known}.")
    for node_id, node in workflow.items():
        cls = types[node["class_type"]]
        specs = input_specs(cls)
        required = cls.INPUT_TYPES().get("required", {})
        label = f"Node {node_id} ({node['class_type']})"
        for name in required:
            if name not in node["inputs"]:
                raise WorkflowError(f"{label}: required input {name!r} is missing.")
        constants: dict[str, Any] = {}
        for name, value in node["inputs"].items():
            if name not in specs:
                continue  # ComfyUI ignores inputs a node does not declare
            if _is_link(value):
                source = str(value[0])
                if source not in workflow:
                    raise WorkflowError(f"{label}: input {name!r} is linked to node {source}, which is not in the workflow.")
                returns = types[workflow[source]["class_type"]].RETURN_TYPES
                if not 0 <= value[1] < len(returns):
                    raise WorkflowError(
                        f"{label}: input {name!r} is linked to output {value[1]} of node {source}, which has "
                        f"{len(returns)} output(s)."
                    )
                output_type = _output_type(types, workflow, value)
                if not _accepts(specs[name][0], output_type):
                    raise WorkflowError(
                        f"{label}: input {name!r} takes {specs[name][0]} but node {source} output {value[1]} is {output_type}."
                    )
            else:
                constants[name] = value
        outcome = cls.VALIDATE_INPUTS(**constants)
        if outcome is not True:
            raise WorkflowError(f"{label}: {outcome if isinstance(outcome, str) else 'invalid inputs'}")
    outputs = [node_id for node_id, node in workflow.items() if getattr(types[node["class_type"]], "OUTPUT_NODE", False)]
    if not outputs:
        raise WorkflowError("The workflow has no output node (SaveImage or PreviewImage): nothing would be kept.")
    return _execution_order(workflow, outputs)


def _execution_order(workflow: Mapping[str, Mapping[str, Any]], outputs: list[str]) -> list[str]:
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(node_id: str, path: list[str]) -> None:
        if state.get(node_id) == "done":
            return
        if state.get(node_id) == "active":
            cycle = " -> ".join([*path[path.index(node_id) :], node_id])
            raise WorkflowError(f"The workflow has a cycle: {cycle}.")
        state[node_id] = "active"
        for value in workflow[node_id]["inputs"].values():
            if _is_link(value):
                visit(str(value[0]), [*path, node_id])
        state[node_id] = "done"
        order.append(node_id)

    for node_id in outputs:
        visit(node_id, [])
    return order


@dataclass
class RunResult:
    """What :func:`run_workflow` produced.

    Attributes:
        outputs: node id -> the node's output tuple.
        saved: files written by SaveImage nodes, in order.
        previews: node id -> IMAGE batch of each PreviewImage node.
    """

    outputs: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    saved: list[Path] = field(default_factory=list)
    previews: dict[str, torch.Tensor] = field(default_factory=dict)


def run_workflow(
    workflow: Mapping[str, Mapping[str, Any]] | str | os.PathLike[str],
    *,
    overrides: list[str] | None = None,
    input_dir: str | os.PathLike[str] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
) -> RunResult:
    """Validate, then run an API-format workflow; see the module docstring."""
    graph = load_workflow(workflow)
    graph = apply_overrides(graph, overrides or [])
    comfy.set_fallback_directories(input_dir=input_dir, output_dir=output_dir)
    order = validate(graph)
    types = node_types()
    result = RunResult()
    comfy.clear_interrupt()
    for position, node_id in enumerate(order, 1):
        node = graph[node_id]
        cls = types[node["class_type"]]
        kwargs = {
            name: result.outputs[str(value[0])][value[1]] if _is_link(value) else value
            for name, value in node["inputs"].items()
            if name in input_specs(cls)
        }
        if cls in (SaveImage, PreviewImage):
            kwargs["prompt"] = graph
        logger.info("[%d/%d] node %s: %s", position, len(order), node_id, node["class_type"])
        if comfy.interrupted():
            from restorekit.errors import CancelledError

            raise CancelledError(f"Stopped before node {node_id} ({node['class_type']}).")
        try:
            with torch.inference_mode():  # as ComfyUI's executor runs every node
                returned = getattr(cls(), cls.FUNCTION)(**kwargs)
        except NodeInputError as exc:
            raise WorkflowError(f"Node {node_id} ({node['class_type']}): {exc}") from exc
        if isinstance(returned, dict):
            ui = returned.get("ui", {})
            result.saved.extend(Path(p) for p in ui.get("images", []))
            if "previews" in ui:
                result.previews[node_id] = ui["previews"]
            returned = tuple(returned.get("result", ()))
        result.outputs[node_id] = tuple(returned)
    return result
