"""MediaPipe's BlazeFace detectors and Face Mesh, in torch (weights from the mediapipe wheel).

The networks are MediaPipe's own ``.tflite`` graphs, converted once to safetensors and run by
:class:`~restorekit.faces.graphnet.GraphNet`; everything around them is here and follows
MediaPipe's calculators (``mediapipe/modules/face_detection``, ``face_landmark``):

- **Input**: the whole image letterboxed (aspect kept, zero border) to 128x128 (short range)
  or 192x192 (full range), values in [-1, 1], sampled as OpenCV's ``warpPerspective`` does.
- **Anchors** (``SsdAnchorsCalculator``), **decoding** (``TensorsToDetectionsCalculator``:
  sigmoid scores, boxes and 6 keypoints relative to their anchor) and MediaPipe's **weighted
  NMS** (IoU 0.3; a kept box is the score-weighted mean of the boxes it suppresses).
- **Face Mesh**: a square ROI 1.5x the detection box, turned so the eyes are level, sampled
  to 192x192 in [0, 1] (replicated border); 468 (x, y, z) landmarks mapped back to the image.

Coordinates are image pixels with pixel centres at integers (MediaPipe's relative outputs
times the image size). Five points for the FFHQ alignment come from the mesh (eye-contour
centres, nose tip, mouth corners); the mesh's face oval gives a paste-back mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..device import ExecutionPlan, cpu_threads
from ..errors import InvalidParameterError
from .detect import DetectionSettings, FaceDetection

# --------------------------------------------------------------------------- mesh topology

MESH_POINTS = 468
RIGHT_EYE_CONTOUR = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)
"""The subject's right eye (left in the image): MediaPipe's FACEMESH_RIGHT_EYE points."""
LEFT_EYE_CONTOUR = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)
NOSE_TIP = 4
"""Pronasale as the FFHQ template (dlib point 30) has it: MediaPipe point 4 (point 1 sits
~10% of the eye distance lower; measured against hand-placed astronaut landmarks)."""
MOUTH_CORNERS = (61, 291)
"""Image-left and image-right mouth corners."""
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip
"""MediaPipe's FACEMESH_FACE_OVAL as one closed loop (forehead, right cheek, chin, left cheek)."""


def five_points(mesh: Tensor) -> Tensor:
    """(..., 468, 2+) mesh -> (..., 5, 2) points in facexlib's order: image-left eye centre,
    image-right eye centre, nose tip, image-left and image-right mouth corner."""
    xy = mesh[..., :2]
    return torch.stack(
        [
            xy[..., list(RIGHT_EYE_CONTOUR), :].mean(-2),
            xy[..., list(LEFT_EYE_CONTOUR), :].mean(-2),
            xy[..., NOSE_TIP, :],
            xy[..., MOUTH_CORNERS[0], :],
            xy[..., MOUTH_CORNERS[1], :],
        ],
        dim=-2,
    )


# --------------------------------------------------------------------------- anchors


@dataclass(frozen=True)
class BlazeFaceConfig:
    """One BlazeFace variant: MediaPipe's anchor and decoding options."""

    input_size: int
    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    score_threshold: float = 0.5
    nms_threshold: float = 0.3

    @property
    def scale(self) -> float:
        return float(self.input_size)


VARIANTS: dict[str, BlazeFaceConfig] = {
    "short": BlazeFaceConfig(input_size=128, strides=(8, 16, 16, 16), interpolated_scale_aspect_ratio=1.0),
    "full": BlazeFaceConfig(input_size=192, strides=(4,), interpolated_scale_aspect_ratio=0.0, score_threshold=0.6),
}
"""``face_detection_short_range`` (faces within ~2 m) and ``face_detection_full_range`` (~5 m).
``score_threshold`` is the graph's own (``min_score_thresh``): the boxes that take part in
the weighted NMS; a caller's confidence filters the merged faces afterwards."""


def _anchor_scale(config: BlazeFaceConfig, index: int) -> float:
    count = len(config.strides)
    if count == 1:
        return (config.min_scale + config.max_scale) / 2
    return config.min_scale + (config.max_scale - config.min_scale) * index / (count - 1)


def ssd_anchors(config: BlazeFaceConfig) -> Tensor:
    """MediaPipe's ``SsdAnchorsCalculator`` with fixed anchor size: (A, 2) anchor centres
    ``(x, y)`` relative to the input, in the network's output order."""
    groups = []
    layer = 0
    strides = config.strides
    while layer < len(strides):
        per_cell = 0
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            per_cell += 1  # aspect ratio 1.0
            if config.interpolated_scale_aspect_ratio > 0:
                per_cell += 1
            last += 1
        size = math.ceil(config.input_size / strides[layer])
        centres = (torch.arange(size, dtype=torch.float64) + 0.5) / size
        grid_y, grid_x = torch.meshgrid(centres, centres, indexing="ij")
        cell = torch.stack([grid_x, grid_y], dim=-1).reshape(-1, 1, 2).expand(-1, per_cell, 2)
        groups.append(cell.reshape(-1, 2))
        layer = last
    return torch.cat(groups).float()


def decode(raw_boxes: Tensor, raw_scores: Tensor, anchors: Tensor, config: BlazeFaceConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Decode one image's outputs (A, 16) and (A, 1) into relative ``(x0, y0, x1, y1)`` boxes
    (A, 4), keypoints (A, 6, 2) and sigmoid scores (A,)."""
    scale = config.scale
    centre = raw_boxes[:, :2] / scale + anchors
    size = raw_boxes[:, 2:4] / scale
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
    keypoints = raw_boxes[:, 4:16].reshape(-1, 6, 2) / scale + anchors[:, None, :]
    scores = torch.sigmoid(raw_scores[:, 0].clamp(-100.0, 100.0))
    return boxes, keypoints, scores


def _iou(box: Tensor, boxes: Tensor) -> Tensor:
    ix0 = torch.maximum(box[0], boxes[:, 0])
    iy0 = torch.maximum(box[1], boxes[:, 1])
    ix1 = torch.minimum(box[2], boxes[:, 2])
    iy1 = torch.minimum(box[3], boxes[:, 3])
    inter = (ix1 - ix0).clamp(min=0) * (iy1 - iy0).clamp(min=0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(union))


def weighted_nms(boxes: Tensor, keypoints: Tensor, scores: Tensor, threshold: float) -> list[tuple[Tensor, Tensor, float]]:
    """MediaPipe's ``WeightedNonMaxSuppression``: take the best remaining detection, gather
    every remaining one overlapping it by IoU > ``threshold`` (itself included), and output
    their score-weighted mean box and keypoints with the best score.

    Returns ``[(box (4,), keypoints (K, 2), score), ...]`` best first."""
    order = torch.argsort(scores, descending=True, stable=True)
    boxes, keypoints, scores = boxes[order].double(), keypoints[order].double(), scores[order].double()
    remaining = torch.arange(len(order))
    kept: list[tuple[Tensor, Tensor, float]] = []
    while remaining.numel():
        top = remaining[0]
        overlap = _iou(boxes[top], boxes[remaining]) > threshold
        overlap[0] = True
        members = remaining[overlap]
        weights = scores[members]
        total = weights.sum()
        box = (boxes[members] * weights[:, None]).sum(0) / total
        points = (keypoints[members] * weights[:, None, None]).sum(0) / total
        kept.append((box, points, float(scores[top])))
        remaining = remaining[~overlap]
    return kept


# --------------------------------------------------------------------------- sampling


def sample_square(image: Tensor, centre: tuple[float, float], side: float, angle: float, size: int, padding: str) -> Tensor:
    """Sample a ``side``-pixel square of ``image`` (1, C, H, W) centred at ``centre`` and
    turned by ``angle`` radians into ``size`` x ``size`` (bilinear), as MediaPipe's
    ``ImageToTensorCalculator`` does with OpenCV: output pixel ``(u, v)`` reads the image at
    ``centre + side * R(angle) (u / size - 1/2, v / size - 1/2)``."""
    _, _, height, width = image.shape
    steps = torch.arange(size, dtype=torch.float64, device=image.device) / size - 0.5
    v, u = torch.meshgrid(steps, steps, indexing="ij")
    cos, sin = math.cos(angle), math.sin(angle)
    x = centre[0] + side * (cos * u - sin * v)
    y = centre[1] + side * (sin * u + cos * v)
    grid = torch.stack([2 * x / max(width - 1, 1) - 1, 2 * y / max(height - 1, 1) - 1], dim=-1)
    grid = grid.to(image.dtype).unsqueeze(0)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode=padding, align_corners=True)


def _plain(points: Tensor, centre: tuple[float, float], side: float, angle: float = 0.0) -> Tensor:
    """Relative coordinates of a sampled square (..., 2) -> image pixels."""
    cos, sin = math.cos(angle), math.sin(angle)
    u, v = points[..., 0] - 0.5, points[..., 1] - 0.5
    return torch.stack([centre[0] + side * (cos * u - sin * v), centre[1] + side * (sin * u + cos * v)], dim=-1)


# --------------------------------------------------------------------------- detector


@dataclass(frozen=True)
class MeshResult:
    """Face Mesh on one face: (468, 3) landmarks (x, y in image pixels, z in pixels of the
    same scale, smaller is nearer) and the face-presence score in [0, 1]."""

    landmarks: Tensor
    score: float


class FaceMesh:
    """MediaPipe's Face Mesh (468 landmarks) on a face ROI.

    Args:
        network: :class:`GraphNet` of ``face_landmark.tflite``.
        plan: where and in which precision to run it.
    """

    input_size = 192

    def __init__(self, network: nn.Module, plan: ExecutionPlan) -> None:
        from ..models import prepared_network

        self.plan = plan
        self.network = prepared_network(network, plan)

    def roi(self, box: Tensor, right_eye: Tensor, left_eye: Tensor) -> tuple[tuple[float, float], float, float]:
        """MediaPipe's ROI from a detection (``DetectionsToRects`` with the eye line,
        ``RectTransformation`` scale 1.5, square long side): ``(centre, side, angle)``."""
        centre = (float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2)
        side = 1.5 * float(max(box[2] - box[0], box[3] - box[1]))
        angle = -math.atan2(-float(left_eye[1] - right_eye[1]), float(left_eye[0] - right_eye[0]))
        angle = angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))
        return centre, side, angle

    def __call__(self, image: Tensor, centre: tuple[float, float], side: float, angle: float) -> MeshResult:
        """Landmarks of the face in the square ROI of ``image`` (1, 3, H, W) in [0, 1]
        (on one CPU thread, see :func:`~restorekit.device.cpu_threads`)."""
        with cpu_threads(1, self.plan.device):
            return self._run(image, centre, side, angle)

    def _run(self, image: Tensor, centre: tuple[float, float], side: float, angle: float) -> MeshResult:
        crop = sample_square(image.float(), centre, side, angle, self.input_size, "border")
        with torch.inference_mode():
            raw, presence = self.network(self.plan.prepare_input(crop))
        points = raw.float().reshape(MESH_POINTS, 3).cpu().double() / self.input_size
        xy = _plain(points[:, :2], centre, side, angle)
        z = points[:, 2:] * side
        return MeshResult(torch.cat([xy, z], dim=1), float(torch.sigmoid(presence.float().reshape(()))))


class MediaPipeFaceDetector:
    """BlazeFace + Face Mesh behind the :class:`~restorekit.faces.detect.FaceDetector`
    interface: ``detector(image)`` -> detections with boxes, BlazeFace scores and five
    landmarks from the mesh (``extra['mesh']`` holds the (468, 3) mesh, ``extra['keypoints']``
    BlazeFace's own six keypoints).

    Args:
        network: :class:`GraphNet` of a BlazeFace model.
        mesh: :class:`GraphNet` of ``face_landmark.tflite`` (None: five points from
            BlazeFace's keypoints, the mouth corners estimated from the mouth centre).
        variant: ``short`` or ``full``.
        plan: where and in which precision to run them.
        settings: thresholds (``confidence`` None means MediaPipe's 0.5).
    """

    def __init__(
        self,
        network: nn.Module,
        mesh: nn.Module | None,
        variant: str,
        plan: ExecutionPlan,
        settings: DetectionSettings | None = None,
    ) -> None:
        from ..models import prepared_network

        if variant not in VARIANTS:
            raise InvalidParameterError(f"BlazeFace variant must be one of {sorted(VARIANTS)}, got {variant!r}.")
        self.config = VARIANTS[variant]
        self.variant = variant
        self.plan = plan
        self.settings = settings or DetectionSettings()
        self.network = prepared_network(network, plan)
        self.mesh = FaceMesh(mesh, plan) if mesh is not None else None
        self.anchors = ssd_anchors(self.config)

    def detect_raw(self, image: Tensor, confidence: float | None = None) -> list[tuple[Tensor, Tensor, float]]:
        """BlazeFace alone on one (1, 3, H, W) [0, 1] image: ``[(box (4,), keypoints (6, 2),
        score)]`` in image pixels after weighted NMS, best first, scoring at least
        ``confidence`` (None: 0.5, MediaPipe's ``min_detection_confidence``)."""
        _, _, height, width = image.shape
        side = float(max(height, width))
        centre = (width / 2, height / 2)
        size = self.config.input_size
        # OpenCV maps the letterboxed square's corner to output pixel 0: centre - side/2.
        tensor = sample_square(image.float(), centre, side, 0.0, size, "zeros") * 2 - 1
        with torch.inference_mode():
            raw_boxes, raw_scores = self.network(self.plan.prepare_input(tensor))
        anchors = self.anchors.to(raw_boxes.device)
        boxes, keypoints, scores = decode(raw_boxes[0].float(), raw_scores[0].float(), anchors, self.config)
        chosen = scores >= self.config.score_threshold
        if not bool(chosen.any()):
            return []
        found = weighted_nms(boxes[chosen].cpu(), keypoints[chosen].cpu(), scores[chosen].cpu(), self.config.nms_threshold)
        minimum = DEFAULT_CONFIDENCE if confidence is None else confidence
        out = []
        for box, points, score in found:
            if score < minimum:
                continue
            pixel_box = _plain(box.view(2, 2), centre, side).reshape(4)
            out.append((pixel_box, _plain(points, centre, side), score))
        return out

    def __call__(self, image: Tensor, *, settings: DetectionSettings | None = None) -> list[FaceDetection]:
        """Faces in one (1, 3, H, W) RGB image in [0, 1], highest score first (run on one CPU
        thread: tiny networks and small tensors, see :func:`~restorekit.device.cpu_threads`)."""
        with cpu_threads(1, self.plan.device):
            return self._detect(image, settings)

    def _detect(self, image: Tensor, settings: DetectionSettings | None) -> list[FaceDetection]:
        if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != 3:
            raise InvalidParameterError(f"Face detection takes one (1, 3, H, W) RGB image, got {tuple(image.shape)}.")
        settings = settings or self.settings
        faces = []
        for box, keypoints, score in self.detect_raw(image, settings.confidence):
            extra: dict[str, Tensor] = {"keypoints": keypoints}
            if self.mesh is not None:
                centre, side, angle = self.mesh.roi(box, keypoints[0], keypoints[1])
                mesh = self.mesh(image, centre, side, angle)
                extra["mesh"] = mesh.landmarks
                extra["mesh_score"] = torch.tensor(mesh.score)
                landmarks = five_points(mesh.landmarks)
            else:
                landmarks = keypoint_five_points(keypoints)
            face = FaceDetection(tuple(float(v) for v in box), landmarks, float(score), extra)  # type: ignore[arg-type]
            if settings.min_eye_distance and face.eye_distance < settings.min_eye_distance:
                continue
            if settings.min_size and max(face.width, face.height) < settings.min_size:
                continue
            faces.append(face)
        return faces

    def refine(self, image: Tensor, face: FaceDetection, *, min_presence: float = 0.5) -> FaceDetection | None:
        """Track ``face`` (found in an earlier frame) into ``image`` (1, 3, H, W) with Face Mesh
        alone, as MediaPipe does between detections: the ROI comes from the face's mesh (or
        its box and eyes), the new mesh gives the box, five points and presence score.

        Returns None when the mesh's face-presence score falls below ``min_presence`` (the
        face left: detect again). Runs on one CPU thread, as detection does."""
        with cpu_threads(1, self.plan.device):
            return self._refine(image, face, min_presence)

    def _refine(self, image: Tensor, face: FaceDetection, min_presence: float) -> FaceDetection | None:
        if self.mesh is None:
            raise InvalidParameterError("Refining faces needs Face Mesh; this detector was built without it.")
        previous = face.extra.get("mesh")
        if previous is not None:
            centre, side, angle = mesh_roi(previous)
        else:
            centre, side, angle = self.mesh.roi(torch.tensor(face.box), face.landmarks[0], face.landmarks[1])
        result = self.mesh(image, centre, side, angle)
        if result.score < min_presence:
            return None
        low, high = result.landmarks[:, :2].min(0).values, result.landmarks[:, :2].max(0).values
        box = (float(low[0]), float(low[1]), float(high[0]), float(high[1]))
        extra = {"mesh": result.landmarks, "mesh_score": torch.tensor(result.score)}
        return FaceDetection(box, five_points(result.landmarks), result.score, extra)


def mesh_roi(mesh: Tensor) -> tuple[tuple[float, float], float, float]:
    """MediaPipe's ROI for the next frame from a face mesh (``face_landmarks_to_roi``): the
    landmarks' bounds, turned by the line between the outer eye corners (points 33 and 263),
    1.5x, square. Returns ``(centre, side, angle)``."""
    xy = mesh[:, :2].double()
    low, high = xy.min(0).values, xy.max(0).values
    centre = (float(low[0] + high[0]) / 2, float(low[1] + high[1]) / 2)
    side = 1.5 * float((high - low).max())
    start, end = xy[33], xy[263]
    angle = -math.atan2(-float(end[1] - start[1]), float(end[0] - start[0]))
    angle = angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))
    return centre, side, angle


DEFAULT_CONFIDENCE = 0.5
"""MediaPipe's default ``min_detection_confidence``."""

MOUTH_HALF_WIDTH = 0.444
"""Half the mouth width over the eye distance in the FFHQ template (112 / 126 / 2)."""


def keypoint_five_points(keypoints: Tensor) -> Tensor:
    """BlazeFace's six keypoints (6, 2) -> five points: the eyes, the nose tip, and mouth
    corners placed along the eye line around the mouth centre (FFHQ proportions)."""
    right_eye, left_eye, nose, mouth = keypoints[0], keypoints[1], keypoints[2], keypoints[3]
    across = (left_eye - right_eye) * MOUTH_HALF_WIDTH
    return torch.stack([right_eye, left_eye, nose, mouth - across, mouth + across]).double()


# --------------------------------------------------------------------------- face oval mask


def polygon_mask(polygon: Tensor, size: int) -> Tensor:
    """(size, size) float32 {0, 1}: pixel centres inside the closed ``polygon`` (P, 2) (even-odd rule).

    Per row, each edge that crosses it toggles every pixel left of the crossing; the toggles
    are counted with one scatter and one cumulative sum over the rows (O(P*size + size^2),
    not a pass over the whole image per edge)."""
    points = polygon.float()
    start, end = points, torch.roll(points, -1, dims=0)
    x0, y0, x1, y1 = start[:, :1], start[:, 1:], end[:, :1], end[:, 1:]  # (P, 1) each
    y = torch.arange(size, dtype=torch.float32)[None]  # (1, size) row centres
    crosses = (y0 > y) != (y1 > y)  # (P, size); never true for a horizontal edge
    run = torch.where(y1 == y0, torch.ones_like(y1), y1 - y0)
    at = x0 + (y - y0) * (x1 - x0) / run  # where the edge crosses each row
    # pixel x is left of the crossing when x < at, i.e. x < ceil(at): columns [0, ceil(at))
    ends = torch.where(crosses, torch.ceil(at).clamp(0, size), torch.zeros_like(at)).long()
    toggles = torch.zeros(size, size + 1, dtype=torch.int32)
    toggles[:, 0] = crosses.sum(0, dtype=torch.int32)
    toggles.scatter_add_(1, ends.t(), -crosses.t().to(torch.int32))
    inside = toggles.cumsum(1, dtype=torch.int32)[:, :size].remainder(2)
    return inside.float()


OVAL_FEATHER = 0.04
"""The oval mask's soft edge, as a share of the crop size (about 20 px at 512), all inside the oval."""


def oval_mask(mesh_in_crop: Tensor, size: int = 512) -> Tensor:
    """(1, size, size) paste-back mask from a face mesh in aligned-crop pixels (468, 2+):
    the face oval filled, eroded and feathered so it fades to zero at the oval's edge and
    is zero along the crop border."""
    from .mask import gaussian_blur

    hard = polygon_mask(mesh_in_crop[list(FACE_OVAL), :2], size)[None, None]
    feather = max(1, round(OVAL_FEATHER * size))
    # Erode by the feather width, then blur: the mask reaches 0 at the oval, 1 well inside.
    kernel = 2 * feather + 1
    eroded = -F.max_pool2d(-hard, (1, kernel), stride=1, padding=(0, feather))  # separable erosion
    eroded = -F.max_pool2d(-eroded, (kernel, 1), stride=1, padding=(feather, 0))
    sigma = feather / 2.0
    soft = gaussian_blur(eroded, 2 * feather + 1, sigma).clamp(0.0, 1.0) * hard
    border = max(1, size // 50)
    soft[..., :border, :] = 0
    soft[..., -border:, :] = 0
    soft[..., :, :border] = 0
    soft[..., :, -border:] = 0
    return soft[0]


__all__ = [
    "FACE_OVAL",
    "VARIANTS",
    "BlazeFaceConfig",
    "FaceMesh",
    "MediaPipeFaceDetector",
    "MeshResult",
    "decode",
    "five_points",
    "keypoint_five_points",
    "mesh_roi",
    "oval_mask",
    "polygon_mask",
    "ssd_anchors",
    "weighted_nms",
]
