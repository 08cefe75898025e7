"""Face tracks across video frames (or a batch of frames): stable ids, smoothing, blending.

A :class:`FaceTracker` is fed one frame at a time (:meth:`FaceTracker.update`) and returns
the faces of that frame, each with the id of its track:

1. **Detection** runs on every ``detect_every``-th frame (and whenever no face is tracked).
   In between, a detector with a ``refine(image, previous) -> FaceDetection | None``
   method (dense landmarks such as a face mesh, seeded with the previous position) follows
   each face; other detectors are followed by a constant-velocity prediction from the
   track's filter, so use ``detect_every=1`` (the default) with them when faces move.
   On detection frames too, a face seen in the previous frame is measured by ``refine``
   from its previous mesh when that agrees with the detection (MediaPipe's own loop): a
   mesh placed by the previous mesh is steadier than one placed by each frame's box.
2. **Linking**: detections are matched to live tracks greedily by cost
   ``(1 - IoU of the boxes) + landmark distance / face size`` (a pair is allowed when its
   boxes overlap by at least ``min_iou`` or its landmarks lie within ``max_distance`` face
   sizes); unmatched detections start new tracks, and a track unseen for ``max_missed``
   frames ends. Ids count from 0 in order of appearance (left to right within a frame), so
   id 0 is the leftmost face of the first frame, as a face index is in a still image.
3. **Smoothing** (:class:`SmoothingSettings`): each track's five landmarks go through a
   One Euro filter (Casiez et al., CHI 2012) with a trend term, so that the alignment (the
   similarity fitted to the landmarks, hence the crop, the pasted face and its mask edge)
   does not jitter with the detector's per-frame noise, yet follows motion without lag:
   at constant velocity the trend term removes the One Euro filter's steady lag.
4. **Temporal blending** (optional, ``face_blend``): the restored aligned face and its mask
   are mixed with the track's previous ones, ``out = (1 - b) * current + b * previous``,
   which damps frame-to-frame flicker of the face model's texture.

Pixels outside the face masks are never touched by any of this: the paste-back only adds
``mask * (face - background)``, so where the mask is 0 the result is the background bit for
bit (tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import InvalidParameterError
from .detect import FaceDetection, parse_selection

DetectFn = Callable[[Tensor], list[FaceDetection]]
"""``detect(image (1, 3, H, W) [0, 1]) -> faces``."""
RefineFn = Callable[[Tensor, FaceDetection], "FaceDetection | None"]
"""``refine(image, previous) -> the face near previous, or None when it is lost``."""

DEFAULT_FPS = 30.0


@dataclass(frozen=True)
class SmoothingSettings:
    """One Euro filter parameters for landmark tracks (in the paper's units).

    The filter is an exponential low-pass whose cutoff rises with speed:
    ``cutoff = min_cutoff + beta * speed``, where speed is the filtered landmark speed in
    **face sizes per second** (the face size is the track's inter-ocular distance, so the
    settings do not depend on the resolution). A low ``min_cutoff`` removes more jitter
    from still faces; a higher ``beta`` lets fast moves through sooner.

    Attributes:
        min_cutoff: cutoff in Hz at rest (default 0.7: removes most of the detector's
            frame-to-frame noise at 24-60 fps).
        beta: cutoff increase per face-size-per-second of speed (default 0.3).
        d_cutoff: cutoff in Hz of the velocity estimate (default 0.5; the trend follows
            changes of speed within about a third of a second).

    With these defaults, simulated landmark noise of 1-4% of the eye distance loses 5-7x
    of its frame-to-frame jitter at 30 fps, and constant-velocity motion is followed with
    well under one frame of lag (``tests/test_faces_tracking.py`` measures both).
        trend: add the filtered velocity as a prediction (a One Euro filter with a trend
            term, like Holt's linear smoothing): no steady lag at constant velocity.
    """

    min_cutoff: float = 0.7
    beta: float = 0.3
    d_cutoff: float = 0.5
    trend: bool = True

    def __post_init__(self) -> None:
        if not (self.min_cutoff > 0 and self.d_cutoff > 0 and self.beta >= 0):
            raise InvalidParameterError(
                f"Smoothing needs min_cutoff > 0, d_cutoff > 0 and beta >= 0; got {self.min_cutoff}, {self.d_cutoff}, {self.beta}."
            )


def _alpha(cutoff: float | Tensor, rate: float) -> float | Tensor:
    """Smoothing factor of an exponential low-pass with ``cutoff`` Hz at ``rate`` samples/s."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau * rate)


class OneEuroFilter:
    """A One Euro filter (with an optional trend term) over a float64 tensor of any shape.

    ``filter(value, scale)`` returns the filtered value; ``scale`` (e.g. the face size in
    pixels) makes the speed, and so ``beta``, dimensionless. The filter runs at ``rate``
    samples per second (the frame rate).
    """

    def __init__(self, settings: SmoothingSettings, rate: float = DEFAULT_FPS) -> None:
        if not rate > 0:
            raise InvalidParameterError(f"The frame rate must be positive, got {rate}.")
        self.settings = settings
        self.rate = float(rate)
        self.value: Tensor | None = None
        self.velocity: Tensor | None = None  # per frame, filtered

    def predict(self, frames: int = 1) -> Tensor | None:
        """Where the filter expects the value ``frames`` frames after the last one."""
        if self.value is None:
            return None
        if self.velocity is None or not self.settings.trend:
            return self.value.clone()
        return self.value + self.velocity * frames

    def __call__(self, value: Tensor, scale: float = 1.0) -> Tensor:
        x = torch.as_tensor(value, dtype=torch.float64)
        s = self.settings
        if self.value is None:
            self.value = x.clone()
            self.velocity = torch.zeros_like(x)
            return x.clone()
        assert self.velocity is not None
        raw_velocity = x - self.value
        a_d = _alpha(s.d_cutoff, self.rate)
        self.velocity = self.velocity + a_d * (raw_velocity - self.velocity)
        speed = float(self.velocity.reshape(-1, x.shape[-1]).norm(dim=-1).mean()) if x.ndim else abs(float(self.velocity))
        speed *= self.rate / max(float(scale), 1e-6)
        a = _alpha(s.min_cutoff + s.beta * speed, self.rate)
        prediction = self.value + self.velocity if s.trend else self.value
        self.value = prediction + a * (x - prediction)
        return self.value.clone()


@dataclass(frozen=True)
class TrackingSettings:
    """How faces are tracked across frames.

    Attributes:
        detect_every: run the detector on every k-th frame (1 = every frame); in between,
            faces are refined (detectors with ``refine``) or predicted.
        min_iou: a detection may join a track when their boxes overlap at least this much...
        max_distance: ...or when their landmarks lie within this many face sizes (mean
            landmark distance over the inter-ocular distance).
        max_missed: a track not seen for this many frames ends (its id is not reused).
        smoothing: :class:`SmoothingSettings`, or None for raw per-frame landmarks.
        face_blend: 0..1 weight of the previous restored face in the temporal blend
            (0 = off).
        fps: frame rate of the frames (sets the filter's time scale); video front ends
            pass the video's own.
    """

    detect_every: int = 1
    min_iou: float = 0.3
    max_distance: float = 0.5
    max_missed: int = 10
    smoothing: SmoothingSettings | None = field(default_factory=SmoothingSettings)
    face_blend: float = 0.0
    fps: float = DEFAULT_FPS

    def __post_init__(self) -> None:
        if isinstance(self.detect_every, bool) or int(self.detect_every) != self.detect_every or self.detect_every < 1:
            raise InvalidParameterError(f"Detection every k frames needs a whole k >= 1, got {self.detect_every!r}.")
        if not 0.0 <= self.min_iou <= 1.0 or self.max_distance < 0:
            raise InvalidParameterError("Track linking needs min_iou in [0, 1] and max_distance >= 0.")
        if self.max_missed < 0:
            raise InvalidParameterError(f"max_missed must be >= 0, got {self.max_missed}.")
        if not 0.0 <= self.face_blend < 1.0:
            raise InvalidParameterError(f"The temporal face blend must be in [0, 1), got {self.face_blend}.")
        if not self.fps > 0:
            raise InvalidParameterError(f"The frame rate must be positive, got {self.fps}.")


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _face_size(face: FaceDetection) -> float:
    """The inter-ocular distance, or a share of the box for degenerate landmarks."""
    return max(face.eye_distance, 0.25 * max(face.width, face.height), 1.0)


def landmark_distance(a: FaceDetection, b: FaceDetection) -> float:
    """Mean distance between the five landmarks of two faces, in face sizes."""
    mean = float(torch.linalg.norm(a.landmarks - b.landmarks, dim=1).mean())
    return mean / _face_size(a)


def _with_landmarks(face: FaceDetection, landmarks: Tensor) -> FaceDetection:
    """``face`` moved to ``landmarks``: the box shifted and scaled with them."""
    old = face.landmarks
    old_centre, new_centre = old.mean(0), landmarks.mean(0)
    old_spread = float((old - old_centre).norm(dim=1).mean())
    ratio = float((landmarks - new_centre).norm(dim=1).mean()) / old_spread if old_spread > 0 else 1.0
    x0, y0, x1, y1 = face.box
    corners = torch.tensor([[x0, y0], [x1, y1]], dtype=torch.float64)
    moved = (corners - old_centre) * ratio + new_centre
    box = (float(moved[0, 0]), float(moved[0, 1]), float(moved[1, 0]), float(moved[1, 1]))
    return FaceDetection(box, landmarks.clone(), face.score, dict(face.extra))


@dataclass
class Track:
    """One face followed across frames.

    Attributes:
        id: stable id (0, 1, ... in order of appearance).
        raw: the last measured detection (unsmoothed).
        face: the last smoothed detection (what is aligned and pasted).
        first_frame, last_seen: frame numbers.
        hits: frames in which it was measured.
        area_sum, centre_sum: running sums for track selection.
        restored, mask: the last (blended) restored aligned face and mask, for blending.
    """

    id: int
    raw: FaceDetection
    face: FaceDetection
    filter: OneEuroFilter | None
    first_frame: int
    last_seen: int
    hits: int = 1
    area_sum: float = 0.0
    centre_sum: tuple[float, float] = (0.0, 0.0)
    restored: Tensor | None = None
    mask: Tensor | None = None

    @property
    def mean_area(self) -> float:
        return self.area_sum / max(self.hits, 1)

    @property
    def mean_centre(self) -> tuple[float, float]:
        return (self.centre_sum[0] / max(self.hits, 1), self.centre_sum[1] / max(self.hits, 1))


@dataclass(frozen=True)
class TrackedFace:
    """A face in one frame: its track id and its (smoothed) detection."""

    track_id: int
    detection: FaceDetection


class FaceTracker:
    """Links faces across consecutive frames into tracks; see the module docstring.

    Args:
        settings: :class:`TrackingSettings`.
        select: ``all``, ``largest`` (the track with the largest mean box area so far),
            ``center`` (mean box centre nearest the frame centre), or a track id.
    """

    def __init__(self, settings: TrackingSettings | None = None, select: str | int = "all") -> None:
        self.settings = settings or TrackingSettings()
        self.select = parse_selection(select)
        self.tracks: dict[int, Track] = {}
        self.frame = -1
        self._next_id = 0
        self.detections_run = 0

    def reset(self) -> None:
        """Forget every track (a cut, or a new clip); ids continue to count up."""
        self.tracks.clear()
        self.frame = -1

    # ------------------------------------------------------------------ per frame

    def update(self, image: Tensor, detect: DetectFn, refine: RefineFn | None = None) -> list[TrackedFace]:
        """Faces of the next frame (one (1, 3, H, W) image in [0, 1]), chosen by ``select``,
        each with its track id, smoothed landmarks and box; ordered by track id."""
        self.frame += 1
        frame = self.frame
        keyframe = frame % self.settings.detect_every == 0 or not self.tracks
        if keyframe:
            self.detections_run += 1
            self._link(detect(image), frame, image, refine)
        else:
            self._follow(image, frame, refine)
        self._expire(frame)
        current = [t for t in self.tracks.values() if t.last_seen == frame]
        height, width = image.shape[-2:]
        return [TrackedFace(t.id, t.face) for t in self._chosen(current, height, width)]

    def _follow(self, image: Tensor, frame: int, refine: RefineFn | None) -> None:
        for track in self.tracks.values():
            if track.last_seen != frame - 1:
                continue
            if refine is not None:
                found = refine(image, track.raw)
                if found is not None:
                    self._measure(track, found, frame)
                continue
            predicted = track.filter.predict() if track.filter is not None else None
            if predicted is not None:
                self._measure(track, _with_landmarks(track.raw, predicted), frame)
            else:
                self._measure(track, track.raw, frame)

    def _link(
        self, detections: Sequence[FaceDetection], frame: int, image: Tensor | None = None, refine: RefineFn | None = None
    ) -> None:
        settings = self.settings
        live = [t for t in self.tracks.values() if frame - t.last_seen <= settings.max_missed + 1]
        pairs: list[tuple[float, int, int]] = []
        for ti, track in enumerate(live):
            reference = track.raw
            if track.filter is not None:
                predicted = track.filter.predict(frame - track.last_seen)
                if predicted is not None:
                    reference = _with_landmarks(track.raw, predicted)
            for di, det in enumerate(detections):
                iou = box_iou(reference.box, det.box)
                distance = landmark_distance(reference, det)
                if iou >= settings.min_iou or distance <= settings.max_distance:
                    pairs.append(((1.0 - iou) + distance, ti, di))
        used_t: set[int] = set()
        used_d: set[int] = set()
        for _, ti, di in sorted(pairs):
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            self._measure(live[ti], self._followed(live[ti], detections[di], frame, image, refine), frame)
        new = [detections[i] for i in range(len(detections)) if i not in used_d]
        for det in sorted(new, key=lambda f: (f.centre[0], f.centre[1])):
            self._start(det, frame)

    @staticmethod
    def _followed(
        track: Track, detection: FaceDetection, frame: int, image: Tensor | None, refine: RefineFn | None
    ) -> FaceDetection:
        """The measurement of a re-detected face: with a ``refine`` (Face Mesh), the face
        followed from the track's previous mesh, as MediaPipe's face-landmark loop does, when
        it agrees with the detection (within :data:`FOLLOW_AGREEMENT` face sizes); else the
        detection.

        Why: the mesh's landmarks move with the region it is run on, and a detector's box
        jitters from frame to frame (BlazeFace full range: 1-1.8 px on a 190 px frame, twice
        the short-range model's), so a mesh placed by each frame's box carries that jitter,
        partly at low frequencies no smoothing removes. The previous frame's mesh places the
        region far more steadily; the detection still links the track and re-anchors it
        when the followed face drifts or is lost."""
        if refine is None or image is None or track.last_seen != frame - 1:
            return detection
        followed = refine(image, track.raw)
        if followed is None or landmark_distance(detection, followed) > FOLLOW_AGREEMENT:
            return detection
        return FaceDetection(followed.box, followed.landmarks, detection.score, dict(followed.extra))

    def _start(self, det: FaceDetection, frame: int) -> None:
        smoothing = self.settings.smoothing
        filt = OneEuroFilter(smoothing, self.settings.fps) if smoothing is not None else None
        track = Track(self._next_id, det, det, filt, frame, frame, hits=0)
        self._next_id += 1
        self.tracks[track.id] = track
        self._measure(track, det, frame)

    def _measure(self, track: Track, det: FaceDetection, frame: int) -> None:
        track.raw = det
        if track.filter is not None:
            smoothed = track.filter(det.landmarks, _face_size(det))
            track.face = _with_landmarks(det, smoothed)
        else:
            track.face = det
        track.last_seen = frame
        track.hits += 1
        track.area_sum += max(det.width, 0.0) * max(det.height, 0.0)
        cx, cy = det.centre
        track.centre_sum = (track.centre_sum[0] + cx, track.centre_sum[1] + cy)

    def _expire(self, frame: int) -> None:
        for key in [k for k, t in self.tracks.items() if frame - t.last_seen > self.settings.max_missed]:
            del self.tracks[key]

    def _chosen(self, current: list[Track], height: int, width: int) -> list[Track]:
        current = sorted(current, key=lambda t: t.id)
        choice = self.select
        if choice == "all" or not current:
            return current
        if isinstance(choice, int):
            return [t for t in current if t.id == choice]
        # the choice is made among every live track, so a briefly missed face is not
        # replaced by another one for a frame
        candidates = list(self.tracks.values())
        if choice == "largest":
            best = max(candidates, key=lambda t: (t.mean_area, -t.id))
        else:
            cx, cy = width / 2.0, height / 2.0
            best = min(candidates, key=lambda t: (math.hypot(t.mean_centre[0] - cx, t.mean_centre[1] - cy), t.id))
        return [t for t in current if t.id == best.id]

    # ------------------------------------------------------------------ blending

    def blend(self, track_ids: Sequence[int], restored: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        """Temporal blend of restored aligned faces (N, 3, S, S) and their masks
        (N, 1, S, S) with each track's previous ones (in frame order); returns new tensors.
        With ``face_blend == 0`` the inputs are returned unchanged."""
        weight = float(self.settings.face_blend)
        if weight == 0.0 or not track_ids:
            return restored, masks
        restored, masks = restored.clone(), masks.clone()
        for number, track_id in enumerate(track_ids):
            track = self.tracks.get(track_id)
            if track is None:
                continue
            if track.restored is not None and track.restored.shape == restored[number].shape:
                restored[number].mul_(1.0 - weight).add_(track.restored, alpha=weight)
                masks[number].mul_(1.0 - weight).add_(track.mask, alpha=weight)
            track.restored = restored[number].clone()
            track.mask = masks[number].clone()
        return restored, masks


def refiner_for(detector: object) -> RefineFn | None:
    """How to follow a face between detections with ``detector``: its own ``refine`` method,
    or, for a detector with a face mesh (BlazeFace + Face Mesh), the mesh run on the region
    of the face's previous position (MediaPipe's own tracking loop); None otherwise."""
    refine = getattr(detector, "refine", None)
    if callable(refine):
        return refine
    mesh = getattr(detector, "mesh", None)
    if mesh is None or not hasattr(mesh, "roi"):
        return None
    from .mediapipe import five_points

    def follow(image: Tensor, previous: FaceDetection) -> FaceDetection | None:
        box = torch.tensor(previous.box, dtype=torch.float64)
        centre, side, angle = mesh.roi(box, previous.landmarks[0], previous.landmarks[1])
        result = mesh(image, centre, side, angle)
        if result.score < MESH_PRESENCE:
            return None
        moved = _with_landmarks(previous, five_points(result.landmarks))
        extra = dict(moved.extra)
        extra["mesh"] = result.landmarks
        extra["mesh_score"] = torch.tensor(result.score)
        return FaceDetection(moved.box, moved.landmarks, previous.score, extra)

    return follow


FOLLOW_AGREEMENT = 0.25
"""A face followed by its mesh replaces its detection when their five landmarks lie within
this many face sizes (inter-ocular distances) on average: far above the mesh's and the
detector's noise (a few percent), well below a different face or a lost track."""

MESH_PRESENCE = 0.5
"""Face Mesh presence below which a followed face counts as lost (MediaPipe's
``min_tracking_confidence`` default)."""


__all__ = [
    "FaceTracker",
    "OneEuroFilter",
    "SmoothingSettings",
    "TrackedFace",
    "TrackingSettings",
    "box_iou",
    "landmark_distance",
    "refiner_for",
]
