"""Face detection with facexlib's RetinaFace network (weights from our registry).

The network is facexlib's class holding our safetensors weights
(:func:`restorekit.models.load_aux_network`); everything around it is here, in torch:
input preparation, vectorised prior boxes, box and landmark decoding, greedy NMS, the
filters (confidence, minimum face size, eye distance) and face selection.

Big images are detected at a bounded resolution (``max_side``, default 1600 px on the long
side, antialiased), with boxes and landmarks mapped back to the input's pixels. RetinaFace's
largest anchors are 512 px, so very large faces are found *better* this way, and the cost
stays bounded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..device import ExecutionPlan
from ..errors import InvalidParameterError
from ..layout import check_image

BGR_MEAN = (104.0, 117.0, 123.0)
"""RetinaFace's input mean, BGR on the 0..255 scale."""

VARIANCES = (0.1, 0.2)
RETINAFACE_CONFIDENCE = 0.97
"""facexlib's detection threshold (the default when none is given)."""
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)


@dataclass(frozen=True)
class FaceDetection:
    """One face in an image's pixel coordinates (pixel centres at integers).

    Attributes:
        box: ``(x0, y0, x1, y1)``.
        landmarks: (5, 2) float64: left eye, right eye, nose, left and right mouth corner.
        score: the detector's confidence in [0, 1] (1.0 for faces given by hand).
    """

    box: tuple[float, float, float, float]
    landmarks: Tensor
    score: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_landmarks(cls, landmarks: Any, score: float = 1.0, box: Sequence[float] | None = None) -> FaceDetection:
        """A detection from 5 (x, y) landmarks given by hand (or another detector); the box
        defaults to the landmarks' bounds grown to a typical face box."""
        points = torch.as_tensor(landmarks, dtype=torch.float64).reshape(5, 2)
        if box is None:
            low, high = points.min(0).values, points.max(0).values
            centre = (low + high) / 2
            half = float((high - low).max()) * 0.9 + 1.0
            box = (float(centre[0]) - half, float(centre[1]) - half * 1.2, float(centre[0]) + half, float(centre[1]) + half)
        return cls(tuple(float(v) for v in box), points, float(score))  # type: ignore[arg-type]

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    @property
    def eye_distance(self) -> float:
        return float(torch.linalg.norm(self.landmarks[0] - self.landmarks[1]))

    def scaled(self, scale_x: float, scale_y: float) -> FaceDetection:
        """The detection in an image resized by ``(scale_x, scale_y)`` (plain multiply, as
        facexlib maps detections from a resized image)."""
        factor = torch.tensor([scale_x, scale_y], dtype=torch.float64)
        x0, y0, x1, y1 = self.box
        return FaceDetection((x0 * scale_x, y0 * scale_y, x1 * scale_x, y1 * scale_y), self.landmarks * factor, self.score)


# --------------------------------------------------------------------------- network pieces


def prior_boxes(height: int, width: int, *, device: torch.device | str = "cpu") -> Tensor:
    """RetinaFace's anchors for an input of ``height`` x ``width``: (P, 4) float32
    ``(cx, cy, w, h)`` relative to the image size, in facexlib's ``PriorBox`` order."""
    groups = []
    for sizes, step in zip(ANCHOR_SIZES, STEPS, strict=True):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy = (torch.arange(rows, dtype=torch.float64) + 0.5) * step / height
        cx = (torch.arange(cols, dtype=torch.float64) + 0.5) * step / width
        grid_y, grid_x = torch.meshgrid(cy, cx, indexing="ij")
        per_size = [
            torch.stack(
                [grid_x, grid_y, torch.full_like(grid_x, size / width), torch.full_like(grid_x, size / height)], dim=-1
            )
            for size in sizes
        ]
        groups.append(torch.stack(per_size, dim=2).reshape(-1, 4))
    return torch.cat(groups).to(device=device, dtype=torch.float32)


def decode_boxes(loc: Tensor, priors: Tensor) -> Tensor:
    """(P, 4) regression outputs and priors -> (P, 4) ``(x0, y0, x1, y1)`` relative boxes."""
    centre = priors[:, :2] + loc[:, :2] * VARIANCES[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(loc[:, 2:] * VARIANCES[1])
    return torch.cat([centre - size / 2, centre + size / 2], dim=1)


def decode_landmarks(pre: Tensor, priors: Tensor) -> Tensor:
    """(P, 10) landmark outputs and priors -> (P, 5, 2) relative ``(x, y)`` points."""
    offsets = pre.reshape(-1, 5, 2)
    return priors[:, None, :2] + offsets * VARIANCES[0] * priors[:, None, 2:]


def nms(boxes: Tensor, scores: Tensor, threshold: float) -> Tensor:
    """Greedy non-maximum suppression; returns kept indices, highest score first
    (what ``torchvision.ops.nms`` returns for these inputs)."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    boxes = boxes.double()
    order = torch.argsort(scores, descending=True, stable=True)
    x0, y0, x1, y1 = boxes.unbind(1)
    areas = (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for rank, index in enumerate(order.tolist()):
        if suppressed[rank]:
            continue
        keep.append(index)
        rest = order[rank + 1 :]
        ix0 = torch.maximum(x0[index], x0[rest])
        iy0 = torch.maximum(y0[index], y0[rest])
        ix1 = torch.minimum(x1[index], x1[rest])
        iy1 = torch.minimum(y1[index], y1[rest])
        inter = (ix1 - ix0).clamp(min=0) * (iy1 - iy0).clamp(min=0)
        iou = inter / (areas[index] + areas[rest] - inter)
        suppressed[rank + 1 :] |= iou > threshold
    return torch.tensor(keep, dtype=torch.long)


def retinaface_outputs(network: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """facexlib ``RetinaFace``'s forward, returning raw class *logits* (its test-phase
    forward applies softmax in the network's dtype; we do it in float32).

    Returns ``(loc (B, P, 4), logits (B, P, 2), landmarks (B, P, 10))`` as float32.
    """
    features = list(network.body(x).values())
    fpn = network.fpn(features)
    heads = [network.ssh1(fpn[0]), network.ssh2(fpn[1]), network.ssh3(fpn[2])]
    loc = torch.cat([network.BboxHead[i](f) for i, f in enumerate(heads)], dim=1)
    logits = torch.cat([network.ClassHead[i](f) for i, f in enumerate(heads)], dim=1)
    landmarks = torch.cat([network.LandmarkHead[i](f) for i, f in enumerate(heads)], dim=1)
    return loc.float(), logits.float(), landmarks.float()


# --------------------------------------------------------------------------- detector


@dataclass(frozen=True)
class DetectionSettings:
    """Detector thresholds (GFPGAN's defaults).

    Attributes:
        confidence: keep faces scoring above this; None: the detector's own default
            (RetinaFace 0.97 as facexlib, BlazeFace 0.5 as MediaPipe).
        nms: IoU above which the lower-scoring of two boxes is dropped (0.4).
        min_size: drop faces whose box is smaller than this many input pixels on its
            longer side (0 keeps all).
        min_eye_distance: drop faces whose eyes are closer than this, in input pixels
            (side views and tiny faces; GFPGAN uses 5).
        max_side: detect on a copy resized so its longer side is at most this (0: never).
    """

    confidence: float | None = None
    nms: float = 0.4
    min_size: float = 0.0
    min_eye_distance: float = 5.0
    max_side: int = 1600

    def __post_init__(self) -> None:
        if self.confidence is not None and not 0.0 <= self.confidence < 1.0:
            raise InvalidParameterError(f"Face detection confidence must be in [0, 1), got {self.confidence}.")
        if not 0.0 < self.nms <= 1.0:
            raise InvalidParameterError(f"The NMS threshold must be in (0, 1], got {self.nms}.")
        if self.min_size < 0 or self.min_eye_distance < 0:
            raise InvalidParameterError("Minimum face size and eye distance must be >= 0.")
        if self.max_side != 0 and self.max_side < 64:
            raise InvalidParameterError(f"The detection size must be 0 (full size) or at least 64 px, got {self.max_side}.")


class FaceDetector:
    """RetinaFace around a facexlib network: ``detector(image)`` -> list of detections.

    Args:
        network: facexlib ``RetinaFace`` (float32 CPU, as :func:`load_aux_network` gives).
        plan: where and in which precision to run it.
        settings: thresholds and the detection resolution.
    """

    def __init__(self, network: nn.Module, plan: ExecutionPlan, settings: DetectionSettings | None = None) -> None:
        from ..models import prepared_network

        if type(network).__name__ != "RetinaFace":
            raise InvalidParameterError(f"A face detector must be facexlib's RetinaFace, not {type(network).__name__}.")
        self.plan = plan
        self.settings = settings or DetectionSettings()
        self.network = prepared_network(network, plan)

    def _input(self, image: Tensor, limit: int) -> tuple[Tensor, float, float]:
        """(1, 3, H, W) RGB [0, 1] -> network input (BGR 0..255 minus mean) and the factors
        that map detections back to the input."""
        _, _, height, width = image.shape
        longest = max(height, width)
        if limit and longest > limit:
            ratio = limit / longest
            new_h, new_w = max(1, round(height * ratio)), max(1, round(width * ratio))
            image = F.interpolate(image, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
        back_x, back_y = width / image.shape[-1], height / image.shape[-2]
        mean = torch.tensor(BGR_MEAN, dtype=torch.float32, device=image.device).view(1, 3, 1, 1)
        bgr = image.flip(1) * 255.0 - mean
        return self.plan.prepare_input(bgr), back_x, back_y

    def __call__(self, image: Tensor, *, settings: DetectionSettings | None = None) -> list[FaceDetection]:
        """Faces in one (1, 3, H, W) RGB image in [0, 1], highest score first.

        ``settings`` overrides the detector's own thresholds for this call."""
        check_image(image, what="Face detection's image", channels=(3,), batch=1)
        settings = settings or self.settings
        x, back_x, back_y = self._input(image.float(), settings.max_side)
        with torch.inference_mode():
            loc, logits, landmark_out = retinaface_outputs(self.network, x)
        height, width = x.shape[-2:]
        priors = prior_boxes(height, width, device=loc.device)
        scores = torch.softmax(logits[0], dim=-1)[:, 1]
        chosen = scores > (RETINAFACE_CONFIDENCE if settings.confidence is None else settings.confidence)
        if not bool(chosen.any()):
            return []
        priors = priors[chosen]
        scores = scores[chosen]
        size = torch.tensor([width, height], dtype=torch.float32, device=loc.device)
        boxes = decode_boxes(loc[0][chosen], priors) * size.repeat(2)
        points = decode_landmarks(landmark_out[0][chosen], priors) * size
        finite = torch.isfinite(boxes).all(dim=1) & torch.isfinite(points).flatten(1).all(dim=1)
        boxes, points, scores = boxes[finite], points[finite], scores[finite]
        keep = nms(boxes.cpu(), scores.cpu(), settings.nms)
        faces = []
        for index in keep.tolist():
            face = FaceDetection(
                tuple(float(v) for v in boxes[index].cpu()),  # type: ignore[arg-type]
                points[index].cpu().double(),
                float(scores[index]),
            ).scaled(back_x, back_y)
            if settings.min_eye_distance and face.eye_distance < settings.min_eye_distance:
                continue
            if settings.min_size and max(face.width, face.height) < settings.min_size:
                continue
            faces.append(face)
        return faces


# --------------------------------------------------------------------------- selection


def _clipped_area(face: FaceDetection, height: int, width: int) -> float:
    x0, y0, x1, y1 = face.box
    x0, x1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
    y0, y1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
    return (x1 - x0) * (y1 - y0)


SELECTIONS = ("all", "largest", "center")


def parse_selection(value: str | int) -> str | int:
    """``all``, ``largest``, ``center`` or a face index (0 = leftmost face)."""
    if isinstance(value, bool):
        raise InvalidParameterError("Face selection must be all, largest, center or a face index.")
    if isinstance(value, int):
        if value < 0:
            raise InvalidParameterError(f"A face index counts from 0, got {value}.")
        return value
    text = str(value).strip().lower()
    if text == "centre":
        text = "center"
    if text in SELECTIONS:
        return text
    if text.isdigit():
        return int(text)
    raise InvalidParameterError(f"Face selection {value!r} is not one of all, largest, center, or a face index (0, 1, ...).")


def order_faces(faces: Sequence[FaceDetection]) -> list[FaceDetection]:
    """Faces in reading order: left to right by box centre (then top to bottom), so that
    index 0 is the leftmost face."""
    return sorted(faces, key=lambda f: (round(f.centre[0], 3), round(f.centre[1], 3)))


def select_faces(faces: Sequence[FaceDetection], selection: str | int, height: int, width: int) -> list[FaceDetection]:
    """Pick faces: ``all`` (reading order), ``largest`` (box area inside the image),
    ``center`` (box centre nearest the image centre) or index N of the reading order.

    An index past the last face selects nothing (the caller reports it)."""
    choice = parse_selection(selection)
    ordered = order_faces(faces)
    if not ordered or choice == "all":
        return ordered
    if choice == "largest":
        return [max(ordered, key=lambda f: _clipped_area(f, height, width))]
    if choice == "center":
        cx, cy = width / 2.0, height / 2.0
        return [min(ordered, key=lambda f: math.hypot(f.centre[0] - cx, f.centre[1] - cy))]
    assert isinstance(choice, int)
    return [ordered[choice]] if choice < len(ordered) else []
