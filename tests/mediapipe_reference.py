"""Golden outputs of MediaPipe's own inference for the torch ports (tests/data/mediapipe_golden.json).

MediaPipe 0.10.14 needs numpy 1.x and protobuf 4, which conflict with the project venv
(numpy 2), so this script runs in a separate venv and its output is stored::

    python3.11 -m venv /tmp/mpref
    /tmp/mpref/bin/pip install --no-deps mediapipe==0.10.14
    /tmp/mpref/bin/pip install "numpy<2" "protobuf>=4.25.3,<5" absl-py attrs flatbuffers \
        "opencv-contrib-python<4.11" matplotlib scikit-image
    /tmp/mpref/bin/python tests/mediapipe_reference.py > tests/data/mediapipe_golden.json

Coordinates are pixels of the test image (x to the right, y down), from MediaPipe's relative
outputs times the image width and height, rounded to 1/1000 px (scores to 1e-5).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mediapipe_cases import CASES


def _rounded(value: object) -> object:
    if isinstance(value, float):
        return round(value, 5) if abs(value) <= 1.0 else round(value, 3)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def main() -> None:
    import mediapipe as mp

    out: dict = {"mediapipe": mp.__version__, "cases": {}}
    for name, build in CASES.items():
        image = build()
        height, width = image.shape[:2]
        case: dict = {"size": [width, height]}
        for model in (0, 1):
            with mp.solutions.face_detection.FaceDetection(model_selection=model, min_detection_confidence=0.5) as detector:
                result = detector.process(image)
            faces = []
            for det in result.detections or []:
                box = det.location_data.relative_bounding_box
                faces.append(
                    {
                        "score": float(det.score[0]),
                        "box": [box.xmin * width, box.ymin * height, (box.xmin + box.width) * width, (box.ymin + box.height) * height],
                        "keypoints": [[k.x * width, k.y * height] for k in det.location_data.relative_keypoints],
                    }
                )
            case["short_range" if model == 0 else "full_range"] = faces
        with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=4, refine_landmarks=False, min_detection_confidence=0.5) as mesh:
            result = mesh.process(image)
        case["mesh"] = [
            [[p.x * width, p.y * height, p.z * width] for p in face.landmark] for face in (result.multi_face_landmarks or [])
        ]
        out["cases"][name] = case
    json.dump(_rounded(out), sys.stdout, separators=(",", ":"))
    print()


if __name__ == "__main__":
    main()
