"""Face restoration inside whole images: detect, align, restore in batches, paste back.

The public API for every front end::

    from restorekit.faces import restore_faces

    result = restore_faces(images, "GFPGANv1.4", outscale=2, strength=0.8)
    result.image        # (B, C, H*2, W*2) final image (C as given: 1 or 3)
    result.face_mask    # (B, 1, H*2, W*2) where faces were pasted (soft, 0..1)
    result.restored_faces, result.original_faces   # (N, 3, 512, 512) aligned crops

:class:`FacePipeline` keeps the loaded networks for repeated calls (video frames, node
graphs); :func:`restore_faces` is the one-shot form.

How an image is processed:

1. **Background** at the output scale: a caller-given function (an upscale model through
   the upscale engine) or a precomputed image, else an antialiased bicubic resize.
2. **Detection** (RetinaFace, :mod:`.detect`) unless detections are given, then
   **selection** (``all``, ``largest``, ``center`` or an index).
3. **Alignment**: a 5-point similarity to the FFHQ template, 512x512 crops (:mod:`.align`).
4. **Restoration** of all faces of all images in batches (:mod:`.restore`).
5. **Paste-back** at the output scale: the restored face and its mask (face parsing or a
   feathered ellipse, :mod:`.mask`) are warped straight into the output's pixels (no
   intermediate resize), only over the face's own window, and blended as
   ``out = background + strength * mask * (face - background)``.

``strength`` blends the restored face with the original face, where the original face is
the background's own rendering of it (the upscaled face rather than a blurry resample of
the input crop); ``strength=0`` therefore returns exactly the background, and the result
changes continuously with it. The returned restored crops are the aligned-space blend
``strength * restored + (1 - strength) * original``.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from ..colorfix import color_fix, parse_color_fix
from ..device import plan_execution
from ..errors import InvalidParameterError, ModelIncompatibleError
from ..imageio import to_gray
from ..layout import check_alpha, check_image
from ..progress import CancelCheck, ProgressCallback, Reporter
from ..registry.schema import default_model_name
from .align import (
    FACE_SIZE,
    alignment_matrix,
    compose,
    crop_face,
    invert_affine,
    paste_window,
    resize_matrix,
    warp_affine,
)
from .background import BackgroundFn, resize, resize_background
from .detect import DetectionSettings, FaceDetection, FaceDetector, parse_selection, select_faces
from .mask import ellipse_mask, inference_parser, parsing_mask
from .mediapipe import FaceMesh, MediaPipeFaceDetector, oval_mask
from .restore import FaceRestorer
from .tracking import FaceTracker, refiner_for

logger = logging.getLogger(__name__)

DEFAULT_DETECTOR = "auto"
FALLBACK_DETECTOR = "blazeface_full_range"
"""``auto`` is RetinaFace-ResNet50 when its weights are installed, else BlazeFace full range
(+ Face Mesh), whose 4 MB of weights come from the mediapipe wheel on PyPI."""
MESH_MODEL = "face_mesh"
PARSER_BATCH = 4
"""Faces per parser forward pass (a 512x512 ParseNet pass holds ~64 MB of activations a face)."""
ELLIPSE = "ellipse"
FACE_OVAL = "face_oval"
"""The parser choice that masks each face by its Face Mesh oval (Apache-2.0 weights)."""
DEFAULT_PARSER = "auto"
"""``auto`` is the registry's default face parser (ParseNet) when its weights are installed,
else ``face_oval``: no parser download, no non-commercial weights, and free with BlazeFace,
whose Face Mesh already gives every face's oval."""

AnyDetector = FaceDetector | MediaPipeFaceDetector
"""Anything called as ``detector(image, settings=...)`` returning detections."""

FaceFunction = Callable[[Tensor], Tensor]
"""Anything that restores (N, 3, 512, 512) [0, 1] faces into the same shape."""


@dataclass(frozen=True)
class FaceOptions:
    """Everything that shapes face restoration apart from the models' device and precision.

    Attributes:
        strength: 0..1, how much of the restored face replaces the original (0 = the
            background exactly, 1 = fully restored).
        select: ``all``, ``largest``, ``center``, or a face index (0 = leftmost).
        detector: a registry face detector (``detection_Resnet50_Final``,
            ``detection_mobilenet0.25_Final``, ``blazeface_full_range``,
            ``blazeface_short_range``) or ``auto`` (RetinaFace-ResNet50 when installed, else
            BlazeFace full range).
        parser: a registry face parser (``parsing_parsenet``, ``parsing_bisenet``) for the
            paste-back mask, ``face_oval`` (the Face Mesh's face oval, feathered),
            ``ellipse`` (or None) for a feathered ellipse, or ``auto`` (ParseNet when
            installed, else ``face_oval``; see :func:`parser_name`).
        confidence, nms, min_size, min_eye_distance, detect_max_side: see
            :class:`~restorekit.faces.detect.DetectionSettings`.
        aligned: the inputs are already aligned faces (any square size; FFHQ-style 512x512
            crops as GFPGAN's ``--aligned``): no detection, no paste-back.
        fidelity: CodeFormer's fidelity weight (0 = quality, 1 = fidelity).
        max_faces: at most this many faces per image are restored, the largest first
            (every face keeps two 512x512 crops in memory until paste-back).
        color_fix: ``none``, ``wavelet`` or ``adain``: correct each restored face's colours
            towards its original crop (:mod:`restorekit.colorfix`).
    """

    strength: float = 1.0
    select: str | int = "all"
    detector: str = DEFAULT_DETECTOR
    parser: str | None = DEFAULT_PARSER
    confidence: float | None = None
    nms: float = 0.4
    min_size: float = 0.0
    min_eye_distance: float = 5.0
    detect_max_side: int = 1600
    aligned: bool = False
    fidelity: float = 0.5
    max_faces: int = 64
    color_fix: str = "none"

    def __post_init__(self) -> None:
        object.__setattr__(self, "color_fix", parse_color_fix(self.color_fix))
        if isinstance(self.max_faces, bool) or not isinstance(self.max_faces, int) or self.max_faces < 1:
            raise InvalidParameterError(f"max_faces must be a whole number >= 1, got {self.max_faces!r}.")
        if not 0.0 <= float(self.strength) <= 1.0:
            raise InvalidParameterError(f"Face strength must be between 0 and 1, got {self.strength}.")
        parse_selection(self.select)
        self.detection_settings()  # validates the thresholds

    def detection_settings(self) -> DetectionSettings:
        return DetectionSettings(
            confidence=None if self.confidence is None else float(self.confidence),
            nms=float(self.nms),
            min_size=float(self.min_size),
            min_eye_distance=float(self.min_eye_distance),
            max_side=int(self.detect_max_side),
        )

    @property
    def resolved_parser(self) -> str | None:
        """``parser`` with ``auto`` resolved (:func:`parser_name`)."""
        return parser_name(self.parser)

    @property
    def uses_ellipse(self) -> bool:
        parser = self.resolved_parser
        return parser is None or str(parser).lower() == ELLIPSE

    @property
    def uses_face_oval(self) -> bool:
        parser = self.resolved_parser
        return parser is not None and str(parser).lower() == FACE_OVAL


@dataclass(frozen=True)
class FaceInfo:
    """One restored face.

    Attributes:
        image_index: which image of the batch it is in.
        detection: its box, landmarks and score in the input image's pixels.
        affine: (2, 3) float64 map from input pixels to the 512x512 aligned crop.
        track_id: the face's track across frames when a tracker was used, else None.
    """

    image_index: int
    detection: FaceDetection
    affine: Tensor
    track_id: int | None = None


@dataclass
class FaceResult:
    """What face restoration returns.

    Attributes:
        image: (B, C, H', W') float32 [0, 1], C as the input (1 or 3).
        alpha: (B, 1, H', W') resized alpha, or None.
        face_mask: (B, 1, H', W') soft mask of the pasted faces (independent of strength).
        restored_faces: (N, 3, 512, 512) restored aligned faces at the given strength.
        original_faces: (N, 3, 512, 512) aligned crops of the input.
        crop_masks: (N, 1, 512, 512) the paste-back masks in aligned space.
        faces: one :class:`FaceInfo` per face, in the order of the crops.
        notices: messages for the user (no face found, licence notes); not errors.
    """

    image: Tensor
    alpha: Tensor | None
    face_mask: Tensor
    restored_faces: Tensor
    original_faces: Tensor
    crop_masks: Tensor
    faces: list[FaceInfo] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    @property
    def face_count(self) -> int:
        return len(self.faces)


def _check_images(images: Tensor, alpha: Tensor | None) -> None:
    check_image(images, what="Images")
    if not images.is_floating_point():
        raise InvalidParameterError(f"Images must be floating point in [0, 1], got {images.dtype}.")
    check_alpha(alpha, images)


class FacePipeline:
    """Face restoration with its networks loaded once, for repeated calls.

    The face model is loaded at construction (a wrong model kind fails at once); the
    detector and parser when first needed, or all at once with :meth:`load`.

    Args:
        face_model: a registry name (``GFPGANv1.4``...), a model file, a spandrel face
            descriptor, a :class:`FaceRestorer`, or any function restoring (N, 3, 512, 512)
            [0, 1] faces (tests, custom models); None: the registry's default face restorer.
        options: :class:`FaceOptions`.
        device, precision: for every network (see :mod:`restorekit.device`).
        batch_size: faces per forward pass (None: the restorer's default).
        detector: a facexlib ``RetinaFace`` module, a :class:`FaceDetector` or a
            :class:`MediaPipeFaceDetector` to use instead of ``options.detector``.
        parser: a facexlib ``ParseNet``/``BiSeNet`` module to use instead of
            ``options.parser``.
        allow_paths, download: passed to the model loaders (front ends that take names from
            remote users pass ``allow_paths=False``).
        compile: ``auto`` (default), ``on`` or ``off``: compiled execution of the face
            restorer per batch shape (:class:`FaceRestorer`, :mod:`restorekit.compiled`).
    """

    def __init__(
        self,
        face_model: Any = None,
        *,
        options: FaceOptions | None = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        batch_size: int | None = None,
        detector: nn.Module | AnyDetector | None = None,
        parser: nn.Module | None = None,
        allow_paths: bool = True,
        download: bool = True,
        compile: str = "auto",
    ) -> None:
        options = options or FaceOptions()
        if parser is not None and str(options.parser).lower() == DEFAULT_PARSER:
            options = replace(options, parser=default_model_name("face_parse", required=False))  # the given module
        # Resolved once, so a parser installed while the pipeline runs does not switch masks.
        self.options = replace(options, parser=options.resolved_parser)
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.allow_paths = allow_paths
        self.download = download
        self._restorer: FaceFunction | None = None
        self._detector: AnyDetector | None = None
        self._mesh: FaceMesh | None = None
        self._detector_source = detector
        self._parser_module = parser
        self._parser: tuple[nn.Module, Any, torch.dtype] | None = None
        self.notices: list[str] = []
        if face_model is None:
            face_model = default_model_name("face_restore")
        if _is_model_reference(face_model):
            restorer = FaceRestorer(
                face_model,
                device=device,
                precision=precision,
                batch_size=batch_size,
                fidelity=self.options.fidelity,
                allow_paths=allow_paths,
                download=download,
                compile=compile,
            )
            if restorer.licence_notice:
                self.notices.append(restorer.licence_notice)
            self._restorer = restorer
        elif callable(face_model):
            self._restorer = face_model
        else:
            raise InvalidParameterError(
                f"The face model must be a model name, a model file or a face restorer, not {type(face_model).__name__}."
            )

    # ------------------------------------------------------------------ components

    @property
    def restorer(self) -> FaceFunction:
        """The face restorer (a :class:`FaceRestorer` or the function given)."""
        assert self._restorer is not None
        return self._restorer

    @property
    def detector(self) -> AnyDetector:
        """The face detector (loaded on first use)."""
        if self._detector is None:
            source = self._detector_source
            settings = self.options.detection_settings()
            if isinstance(source, (FaceDetector, MediaPipeFaceDetector)):
                self._detector = source
            elif source is not None:
                self._detector = FaceDetector(source, plan_execution(self.device, self.precision), settings)
            else:
                self._detector = load_detector(self.options.detector, self.device, self.precision, settings, download=self.download)
        return self._detector

    @property
    def mesh(self) -> FaceMesh:
        """Face Mesh (loaded on first use; shared with a MediaPipe detector)."""
        if self._mesh is None:
            detector = self._detector or self._detector_source  # reuse, never load one for this
            if isinstance(detector, MediaPipeFaceDetector) and detector.mesh is not None:
                self._mesh = detector.mesh
            else:
                network = _load_aux(MESH_MODEL, "face_landmark", self.download)
                self._mesh = FaceMesh(network, landmark_plan(self.device, self.precision))
        return self._mesh

    def _parsing(self) -> tuple[nn.Module, Any, torch.dtype] | None:
        if self._parser is None:
            module = self._parser_module
            if module is None:
                if self.options.uses_ellipse or self.options.uses_face_oval:
                    return None
                module = _load_aux(str(self.options.resolved_parser), "face_parse", self.download)
            from ..models import prepared_network

            network, spec = inference_parser(module)
            plan = plan_execution(self.device, self.precision)
            self._parser = (prepared_network(network, plan), spec, plan.dtype)
        return self._parser

    def load(self) -> FacePipeline:
        """Load every network the pipeline's options need now (detector and parser unless
        ``aligned``), so that a wrong name fails before any image is processed."""
        if not self.options.aligned:
            _ = self.detector
            self._parsing()
            if self.options.uses_face_oval:
                _ = self.mesh
        return self

    def oval_masks(self, crops: Tensor, infos: Sequence[FaceInfo]) -> Tensor:
        """(N, 1, 512, 512) face-oval masks: each face's mesh (from the detector, or Face
        Mesh run on its aligned crop) mapped into aligned space, filled and feathered."""
        masks = []
        for number, info in enumerate(infos):
            mesh = info.detection.extra.get("mesh")
            if mesh is not None:
                points = mesh[:, :2].double() @ info.affine[:, :2].T + info.affine[:, 2]
            else:
                centre, side = aligned_mesh_roi(crops.shape[-1])
                points = self.mesh(crops[number : number + 1], centre, side, 0.0).landmarks[:, :2]
            masks.append(oval_mask(points, crops.shape[-1]))
        if not masks:
            return crops.new_zeros((0, 1, crops.shape[-2], crops.shape[-1]))
        return torch.stack(masks).to(crops.device)

    def masks(self, faces: Tensor, *, crops: Tensor | None = None, infos: Sequence[FaceInfo] | None = None) -> Tensor:
        """(N, 1, 512, 512) paste-back masks for restored aligned faces (``face_oval`` needs
        the original ``crops`` and the faces' ``infos``)."""
        if self.options.uses_face_oval and infos is not None and crops is not None and faces.shape[0]:
            return self.oval_masks(crops, infos)
        parsing = self._parsing()
        if parsing is None or faces.shape[0] == 0:
            return ellipse_mask(faces.shape[0], faces.shape[-1], device=faces.device)
        network, spec, dtype = parsing
        plan = plan_execution(self.device, self.precision)
        chunks = [
            parsing_mask(network, spec, faces[start : start + PARSER_BATCH].to(plan.device), dtype).to(faces.device)
            for start in range(0, faces.shape[0], PARSER_BATCH)
        ]
        return torch.cat(chunks)

    # ------------------------------------------------------------------ running

    def run(
        self,
        images: Tensor,
        *,
        outscale: float = 1.0,
        background: BackgroundFn | Tensor | None = None,
        alpha: Tensor | None = None,
        detections: Sequence[Sequence[FaceDetection]] | None = None,
        options: FaceOptions | None = None,
        tracker: FaceTracker | None = None,
        progress: ProgressCallback | Reporter | None = None,
        cancel: CancelCheck | None = None,
    ) -> FaceResult:
        """Restore the faces in a batch of images.

        Args:
            images: (B, 1 or 3, H, W) float in [0, 1].
            outscale: output size over input size (any positive factor).
            background: the background at the output scale: a function ``(images, scale)
                -> images`` (e.g. an upscale model run), a precomputed (B, 3, H', W')
                tensor, or None for an antialiased bicubic resize.
            alpha: (B, 1, H, W) alpha to carry along (resized to the output), or None.
            detections: faces per image to use instead of running the detector (landmarks
                from another tool, or fixed test data); selection still applies.
            options: per-call :class:`FaceOptions` (strength, selection, thresholds...)
                overriding the pipeline's; the detector, parser and CodeFormer fidelity are
                fixed when the pipeline is built.
            tracker: a :class:`~restorekit.faces.tracking.FaceTracker`: the images are
                consecutive frames (this batch continues the tracker's previous ones);
                faces are linked into tracks, smoothed, selected by track and blended
                over time. ``detections`` then stand in for the detector's output.
        """
        opts = options or self.options
        reporter = Reporter.of(progress, cancel)
        _check_images(images, alpha)
        gray = images.shape[1] == 1
        rgb = images.float().expand(-1, 3, -1, -1).contiguous() if gray else images.float()
        notices = list(self.notices)

        reporter.check()
        bg = self._background(rgb, outscale, background)
        out_h, out_w = bg.shape[-2:]
        if opts.aligned:
            result = self._run_aligned(rgb, bg, opts, reporter, notices)
        else:
            result = self._run_detected(rgb, bg, opts, detections, reporter, notices, tracker)
        if gray:
            result.image = to_gray(result.image)
        if alpha is not None:
            result.alpha = resize(alpha.float(), (out_h, out_w))
        return result

    def _background(self, rgb: Tensor, outscale: float, background: BackgroundFn | Tensor | None) -> Tensor:
        if isinstance(background, Tensor):
            bg = background
        else:
            scale = float(outscale)
            if not scale > 0:
                raise InvalidParameterError(f"The output scale must be positive, got {outscale}.")
            bg = (background or resize_background)(rgb, scale)
        check_image(bg, what="The background", channels=(3,), batch=rgb.shape[0])
        return bg.float().to(rgb.device).clamp(0.0, 1.0)

    def _restore(self, crops: Tensor, strength: float, reporter: Reporter, fix: str = "none") -> Tensor:
        """Full-strength restored faces (or the crops themselves at strength 0), colour
        corrected towards the crops with ``fix``."""
        if crops.shape[0] == 0 or strength == 0.0:
            return crops.clone()
        return color_fix(self._restore_raw(crops, reporter), crops, fix)

    def _restore_raw(self, crops: Tensor, reporter: Reporter) -> Tensor:
        restorer = self.restorer
        if isinstance(restorer, FaceRestorer):
            restored = restorer(crops, progress=reporter)
        else:
            restored = restorer(crops)
            reporter.step(crops.shape[0], crops.shape[0], "restoring faces")
        if not isinstance(restored, Tensor) or restored.shape != crops.shape:
            raise ModelIncompatibleError(
                f"The face restorer returned {getattr(restored, 'shape', type(restored).__name__)}, expected {tuple(crops.shape)}."
            )
        return restored.float().clamp(0.0, 1.0)

    def _run_aligned(self, rgb: Tensor, bg: Tensor, opts: FaceOptions, reporter: Reporter, notices: list[str]) -> FaceResult:
        batch, _, height, width = rgb.shape
        out_h, out_w = bg.shape[-2:]
        if height != width:
            notices.append(f"Aligned faces should be square; the {width}x{height} input is resized to {FACE_SIZE}x{FACE_SIZE}.")
        crops = resize(rgb, (FACE_SIZE, FACE_SIZE))
        restored = self._restore(crops, float(opts.strength), reporter, opts.color_fix)
        strength = float(opts.strength)
        image = bg.clone()
        if strength > 0.0:
            image += strength * (resize(restored, (out_h, out_w)) - bg)
            image.clamp_(0.0, 1.0)
        to_crop = resize_matrix(FACE_SIZE / width, FACE_SIZE / height)
        faces = [
            FaceInfo(i, FaceDetection.from_landmarks(_template_in_input(height, width), box=(-0.5, -0.5, width - 0.5, height - 0.5)), to_crop)
            for i in range(batch)
        ]
        return FaceResult(
            image=image,
            alpha=None,
            face_mask=bg.new_ones(batch, 1, out_h, out_w),
            restored_faces=crops + strength * (restored - crops),
            original_faces=crops,
            crop_masks=bg.new_ones(batch, 1, FACE_SIZE, FACE_SIZE),
            faces=faces,
            notices=notices,
        )

    def _find_faces(
        self,
        rgb: Tensor,
        opts: FaceOptions,
        detections: Sequence[Sequence[FaceDetection]] | None,
        reporter: Reporter,
        notices: list[str],
        tracker: FaceTracker | None = None,
    ) -> tuple[list[list[FaceDetection]], list[list[int | None]]]:
        batch, _, height, width = rgb.shape
        if detections is not None and len(detections) != batch:
            raise InvalidParameterError(f"Got detections for {len(detections)} images but {batch} images.")
        found: list[list[FaceDetection]] = []
        track_ids: list[list[int | None]] = []
        for index in range(batch):
            reporter.step(index, batch, "detecting faces")
            image = rgb[index : index + 1]

            def detect(frame: Tensor, index: int = index) -> list[FaceDetection]:
                if detections is not None:
                    return [f if isinstance(f, FaceDetection) else FaceDetection.from_landmarks(f) for f in detections[index]]
                return self.detector(frame, settings=opts.detection_settings())

            ids: list[int | None]
            if tracker is not None:
                tracked = tracker.update(image, detect, None if detections is not None else refiner_for(self.detector))
                faces = chosen = [t.detection for t in tracked]
                ids = [t.track_id for t in tracked]
                if not chosen and tracker.tracks and opts.select != "all":
                    faces = [t.face for t in tracker.tracks.values()]
            else:
                faces = detect(image)
                chosen = select_faces(faces, opts.select, height, width)
                ids = [None] * len(chosen)
            where = f" in image {index + 1}" if batch > 1 else ""
            if len(chosen) > opts.max_faces:
                notices.append(
                    f"{len(chosen)} faces found{where}; only the {opts.max_faces} largest are restored "
                    "(raise max_faces, or the detection confidence if these are not faces)."
                )
                largest = sorted(range(len(chosen)), key=lambda i: -chosen[i].width * chosen[i].height)[: opts.max_faces]
                chosen = [chosen[i] for i in sorted(largest)]
                ids = [ids[i] for i in sorted(largest)]
            if not faces:
                notices.append(f"No face found{where}; the result is the background without face restoration.")
            elif not chosen:
                notices.append(f"Face index {opts.select} asked for, but only {len(faces)} face(s) were found{where}; none restored.")
            found.append(chosen)
            track_ids.append(ids)
        reporter.step(batch, batch, "detecting faces")
        return found, track_ids

    def _run_detected(
        self,
        rgb: Tensor,
        bg: Tensor,
        opts: FaceOptions,
        detections: Sequence[Sequence[FaceDetection]] | None,
        reporter: Reporter,
        notices: list[str],
        tracker: FaceTracker | None = None,
    ) -> FaceResult:
        batch, _, height, width = rgb.shape
        out_h, out_w = bg.shape[-2:]
        strength = float(opts.strength)
        per_image, per_image_ids = self._find_faces(rgb, opts, detections, reporter, notices, tracker)

        infos: list[FaceInfo] = []
        crops_list: list[Tensor] = []
        for index, (faces, ids) in enumerate(zip(per_image, per_image_ids, strict=True)):
            for face, track_id in zip(faces, ids, strict=True):
                matrix = alignment_matrix(face.landmarks)
                crops_list.append(crop_face(rgb[index : index + 1], matrix))
                infos.append(FaceInfo(index, face, matrix, track_id))
        crops = torch.cat(crops_list) if crops_list else rgb.new_zeros((0, 3, FACE_SIZE, FACE_SIZE))

        restored = self._restore(crops, strength, reporter, opts.color_fix)
        masks = self.masks(restored, crops=crops, infos=infos) if infos else rgb.new_zeros((0, 1, FACE_SIZE, FACE_SIZE))
        if tracker is not None and infos:
            restored, masks = tracker.blend([int(i.track_id) for i in infos], restored, masks)  # type: ignore[arg-type]

        image = bg.clone()
        face_mask = bg.new_zeros(batch, 1, out_h, out_w)
        to_output = resize_matrix(out_w / width, out_h / height)
        for number, info in enumerate(infos):
            reporter.check()
            matrix = compose(to_output, invert_affine(info.affine))
            window = paste_window(matrix, FACE_SIZE, out_h, out_w)
            if window is None:
                continue
            x0, y0, w, h = window
            pair = torch.cat([restored[number : number + 1], masks[number : number + 1]], dim=1)
            warped = warp_affine(pair, matrix, window, mode="bicubic")
            face = warped[:, :3].clamp(0.0, 1.0)
            mask = warped[:, 3:].clamp(0.0, 1.0)
            coverage = face_mask[info.image_index : info.image_index + 1, :, y0 : y0 + h, x0 : x0 + w]
            coverage.add_(mask - coverage * mask)  # 1 - (1 - c)(1 - m), exact for small m
            if strength > 0.0:
                region = image[info.image_index : info.image_index + 1, :, y0 : y0 + h, x0 : x0 + w]
                region.add_((strength * mask) * (face - region))
        if infos:
            image.clamp_(0.0, 1.0)
        return FaceResult(
            image=image,
            alpha=None,
            face_mask=face_mask,
            restored_faces=crops + strength * (restored - crops),
            original_faces=crops,
            crop_masks=masks,
            faces=infos,
            notices=notices,
        )


def _is_model_reference(value: Any) -> bool:
    """A registry name, a model file, or a spandrel descriptor (which is callable too)."""
    if isinstance(value, FaceRestorer):
        return False
    return isinstance(value, (str, os.PathLike)) or (hasattr(value, "architecture") and hasattr(value, "model"))


def _template_in_input(height: int, width: int) -> Tensor:
    from .align import face_template

    return face_template(FACE_SIZE) * torch.tensor([width / FACE_SIZE, height / FACE_SIZE], dtype=torch.float64)


MESH_ROI_CENTRE = (258.0, 312.0)
MESH_ROI_SIDE = 470.0
"""Face Mesh's ROI in a 512 FFHQ-aligned crop: where MediaPipe's ROI (1.5x the BlazeFace box)
falls for an aligned face (between the short- and full-range ROIs measured on the astronaut)."""


def aligned_mesh_roi(size: int = FACE_SIZE) -> tuple[tuple[float, float], float]:
    """``(centre, side)`` of the Face Mesh ROI in a ``size`` x ``size`` aligned crop."""
    s = size / 512.0
    return (MESH_ROI_CENTRE[0] * s, MESH_ROI_CENTRE[1] * s), MESH_ROI_SIDE * s


def detector_name(name: str) -> str:
    """A registry detector name, with ``auto`` resolved: RetinaFace-ResNet50 when its
    weights are installed, else BlazeFace full range."""
    if str(name).lower() != "auto":
        return str(name)
    from ..registry.download import installed_path
    from ..registry.schema import load_registry

    registry = load_registry()
    retinaface = default_model_name("face_detect", required=False)
    if retinaface is not None and installed_path(registry.get(retinaface)) is not None:
        return retinaface
    return FALLBACK_DETECTOR


def parser_name(name: str | None) -> str | None:
    """A parser choice with ``auto`` resolved: the registry's default face parser (ParseNet)
    when its weights are installed, else ``face_oval``. Other names are returned as given."""
    if name is None or str(name).lower() != DEFAULT_PARSER:
        return name
    from ..registry.download import installed_path
    from ..registry.schema import load_registry

    default = default_model_name("face_parse", required=False)
    if default is not None and installed_path(load_registry().get(default)) is not None:
        return default
    return FACE_OVAL


def face_network_names(options: FaceOptions) -> list[str]:
    """The registry networks (detector, landmarks, parser) that ``options`` will load, with
    ``auto`` resolved, so front ends can download them with progress beforehand."""
    if options.aligned:
        return []
    from ..registry.schema import load_registry

    registry = load_registry()
    names = [detector_name(options.detector)]
    if names[0] in registry and registry.get(names[0]).architecture == "BlazeFace":
        names.append(MESH_MODEL)
    if options.uses_face_oval:
        names.append(MESH_MODEL)
    elif not options.uses_ellipse:
        names.append(str(options.resolved_parser))
    return list(dict.fromkeys(names))


def landmark_plan(device: str | torch.device, precision: str) -> Any:
    """The plan for MediaPipe's networks: ``auto`` keeps them in float32 (bf16 moves the
    five points by 0.2-1 px, 5% of the eye distance on a small face, which shows as jitter
    in video, for only ~25% less time on these tiny networks); an explicit precision is
    honoured."""
    if str(precision).lower() == "auto":
        return plan_execution(device, "auto", supports_half=False, supports_bfloat16=False)
    return plan_execution(device, precision)


def load_detector(
    name: str, device: str | torch.device, precision: str, settings: DetectionSettings, *, download: bool = True
) -> AnyDetector:
    """The detector called ``name`` (a registry face detector or ``auto``), ready to run."""
    from ..registry.schema import load_registry

    entry = load_registry().get(detector_name(name))
    network = _load_aux(entry.name, "face_detect", download)
    if entry.architecture == "BlazeFace":
        mesh = _load_aux(MESH_MODEL, "face_landmark", download)
        return MediaPipeFaceDetector(network, mesh, str(entry.params["variant"]), landmark_plan(device, precision), settings)
    return FaceDetector(network, plan_execution(device, precision), settings)


_AUX_CACHE: OrderedDict[tuple[str, str, float, int], nn.Module] = OrderedDict()
_AUX_CACHE_SIZE = 4


def _load_aux(name: str, purpose: str, download: bool) -> nn.Module:
    """A registry face detector or parser, loaded once per file (a small LRU cache, so that
    one-shot :func:`restore_faces` calls do not reload 100 MB of weights each time)."""
    from ..models import describe_purpose, load_aux_network, resolve_model
    from ..registry.schema import load_registry

    registry = load_registry()
    entry = registry.get(name)
    if entry.purpose != purpose:
        raise ModelIncompatibleError(
            f"{entry.name} is {describe_purpose(entry.purpose)}, not {describe_purpose(purpose)}. "
            f"Choose one of: {', '.join(registry.names(purpose))}."
        )
    path = resolve_model(entry.name, download=download).path
    stat = path.stat()
    key = (entry.name, str(path), stat.st_mtime, stat.st_size)
    if key in _AUX_CACHE:
        _AUX_CACHE.move_to_end(key)
        return _AUX_CACHE[key]
    network = load_aux_network(entry.name, download=False)
    _AUX_CACHE[key] = network
    while len(_AUX_CACHE) > _AUX_CACHE_SIZE:
        _AUX_CACHE.popitem(last=False)
    return network


def restore_faces(
    images: Tensor,
    face_model: Any = None,
    *,
    outscale: float = 1.0,
    background: BackgroundFn | Tensor | None = None,
    alpha: Tensor | None = None,
    detections: Sequence[Sequence[FaceDetection]] | None = None,
    options: FaceOptions | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
    batch_size: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    **option_values: Any,
) -> FaceResult:
    """Restore the faces in ``images`` in one call (see :class:`FacePipeline.run`).

    Option values (``strength=0.7``, ``select="largest"``, ``parser="ellipse"``...) may be
    given as keywords instead of a :class:`FaceOptions`.

    This is also the entry point for ``restorekit upscale --face-restore``: pass the
    upscale run as ``background`` (a function, or its finished result as a tensor).
    """
    opts = options or FaceOptions()
    if option_values:
        try:
            opts = replace(opts, **option_values)
        except TypeError as exc:
            raise InvalidParameterError(f"Unknown face option: {exc}.") from None
    pipeline = FacePipeline(face_model, options=opts, device=device, precision=precision, batch_size=batch_size)
    return pipeline.run(
        images, outscale=outscale, background=background, alpha=alpha, detections=detections, progress=progress, cancel=cancel
    )
