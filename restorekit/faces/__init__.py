"""Face restoration: detect, align, restore in batches, blend and paste back.

Start with :func:`restore_faces` (one call) or :class:`FacePipeline` (networks kept loaded).
The pieces are usable on their own: :mod:`.detect` (RetinaFace), :mod:`.mediapipe`
(BlazeFace and Face Mesh from MediaPipe's models), :mod:`.align` (FFHQ
template and warps), :mod:`.restore` (batched face models), :mod:`.mask` (paste-back masks),
:mod:`.background` (the background step).
"""

from __future__ import annotations

from .align import FACE_SIZE, alignment_matrix, crop_face, warp_affine
from .background import BackgroundFn, resize_background, scaled_size
from .detect import DetectionSettings, FaceDetection, FaceDetector, select_faces
from .mediapipe import FaceMesh, MediaPipeFaceDetector
from .pipeline import FaceInfo, FaceOptions, FacePipeline, FaceResult, restore_faces
from .restore import FaceRestorer, load_face_model

__all__ = [
    "FACE_SIZE",
    "BackgroundFn",
    "DetectionSettings",
    "FaceDetection",
    "FaceDetector",
    "FaceInfo",
    "FaceMesh",
    "FaceOptions",
    "FacePipeline",
    "FaceRestorer",
    "FaceResult",
    "MediaPipeFaceDetector",
    "alignment_matrix",
    "crop_face",
    "load_face_model",
    "resize_background",
    "restore_faces",
    "scaled_size",
    "select_faces",
    "warp_affine",
]
