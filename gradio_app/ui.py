"""The Gradio Blocks: Restore, Degrade and Models tabs on top of :mod:`.jobs`.

Endpoints (stable ``api_name``s for ``gradio_client``): ``/restore`` (one image),
``/restore_batch`` (many; what the Restore button runs), ``/degrade``, ``/models``,
``/download_model``, ``/verify_model`` and ``/import_model``.

Serving rules: the queue runs one engine job at a time (``default_concurrency_limit=1``,
one concurrency id shared by every event that runs the engine, and a lock around the engine
itself), engine progress goes to ``gr.Progress``, the Cancel button both cancels the Gradio
event and trips the engine's cancel check, and every failure is shown as a ``gr.Error``
with the engine's message.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from restorekit.compiled import COMPILE_MODES
from restorekit.device import PRECISIONS, UPSCALE_PRECISIONS
from restorekit.errors import CancelledError, RestoreKitError
from restorekit.faces.pipeline import DEFAULT_DETECTOR
from restorekit.registry.schema import default_model_name

from . import jobs

logger = logging.getLogger(__name__)

ENGINE = "engine"
DEFAULT_FACE_MODEL = default_model_name("face_restore", required=False) or ""
"""The registry's default face restorer: the API's default for ``face_model``."""
"""Concurrency id of every event that runs the engine: one job at a time per device."""

COMPILE_LABEL = "Compiled execution (auto: compile repeated tile, frame and face-batch shapes where it pays; needs a C++ compiler)"

@dataclass(frozen=True)
class AppConfig:
    """How the app serves (see ``restorekit app --help``)."""

    host: str = "127.0.0.1"
    port: int | None = None
    share: bool = False
    auth: tuple[str, str] | None = None
    max_pixels: int = jobs.DEFAULT_MAX_PIXELS
    max_output_pixels: int = jobs.DEFAULT_MAX_OUTPUT_PIXELS
    max_file_size: str | int = "50mb"
    queue_size: int = 32
    max_video_frames: int = jobs.DEFAULT_MAX_VIDEO_FRAMES


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Show engine errors as ``gr.Error`` (their messages name the problem and the fix);
    anything else is a bug: logged with its traceback, shown as an internal error."""
    try:
        yield
    except gr.Error:
        raise
    except CancelledError:
        raise gr.Error("Cancelled.", title="Cancelled", print_exception=False) from None
    except Exception as exc:
        if not isinstance(exc, RestoreKitError):
            logger.exception("unexpected error in the app")
        raise gr.Error(jobs.error_message(exc), print_exception=False) from None


class CancelBoard:
    """One cancel flag per browser session (or API client): the Cancel button sets it and
    the running job's engine cancel check reads it."""

    def __init__(self) -> None:
        self._flags: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(request: gr.Request | None) -> str:
        return str(getattr(request, "session_hash", None) or "")

    def start(self, request: gr.Request | None) -> threading.Event:
        flag = threading.Event()
        key = self._key(request)
        if key:
            with self._lock:
                self._flags[key] = flag
        return flag

    def cancel(self, request: gr.Request | None) -> None:
        with self._lock:
            flag = self._flags.get(self._key(request))
        if flag is not None:
            flag.set()


def engine_progress(progress: Any) -> Callable[[int, int, str], None]:
    """The engine's ``(done, total, message)`` callback onto a ``gr.Progress``."""

    def report(done: int, total: int, message: str) -> None:
        if progress is not None:
            progress(min(done / total, 1.0) if total else None, desc=message or None)

    return report


class RestoreKitApp:
    """The app's state (cancel flags, the engine lock, verification cache) and handlers."""

    def __init__(self, config: AppConfig | None = None) -> None:
        self.config = config or AppConfig()
        self.cancels = CancelBoard()
        self.engine_lock = threading.Lock()
        self.verified = jobs.VerifyCache()
        self.work = jobs.WorkFolders()

    # ------------------------------------------------------------------ helpers

    @contextlib.contextmanager
    def _engine_job(self, request: gr.Request | None) -> Iterator[Callable[[], bool]]:
        flag = self.cancels.start(request)
        with self.engine_lock:
            yield flag.is_set

    def _choices_update(self) -> tuple[Any, Any, Any]:
        choices = jobs.upscale_choices()
        pretrained = jobs.pretrained_available(choices)
        model = gr.update(choices=[(c.label, c.value) for c in choices])
        face = gr.update(choices=jobs.face_choices())
        notice = gr.update(value=self.notice_text(pretrained), visible=not pretrained)
        return model, face, notice

    @staticmethod
    def notice_text(pretrained: bool) -> str:
        if pretrained:
            return ""
        return (
            "**No pretrained upscaler is downloaded, so Zero-shot SR is selected**: it learns from "
            "the image itself and needs no weights (slower, gentler). Download a model in the "
            "**Models** tab, or pick one below and it downloads on first use."
        )

    # ------------------------------------------------------------------ restore

    def _restore(self, paths: list[str], options: jobs.RestoreOptions, request: gr.Request | None, progress: Any) -> jobs.BatchResult:
        with user_errors(), self._engine_job(request) as cancel:
            return jobs.restore_files(
                paths, options, max_pixels=self.config.max_pixels, max_output_pixels=self.config.max_output_pixels,
                progress=engine_progress(progress), cancel=cancel, workdir=self.work.new(),
            )  # fmt: skip

    def restore(
        self,
        image: str | None,
        model: str = jobs.ZSSR_CHOICE,
        strength: float | None = None,
        size_mode: str = "scale",
        outscale: float = 0,
        width: int = 0,
        height: int = 0,
        face_restore: bool = False,
        face_model: str = DEFAULT_FACE_MODEL,
        face_strength: float = 1.0,
        face_select: str = "all",
        face_detector: str = "auto",
        tile: str = "auto",
        precision: str = "auto",
        zssr_iterations: int = 0,
        out_format: str = "PNG",
        quality: int = 95,
        face_fidelity: float = 0.5,
        color_fix: str = "none",
        zssr_kernel: str = "bicubic",
        compile_mode: str = "auto",
        zssr_guards: str = "on",
        request: gr.Request = None,  # type: ignore[assignment]
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's injection idiom
    ) -> tuple[tuple[str, str], str, str]:
        """Restore one image: (before, after) for the slider, the output file, a report."""
        options = jobs.RestoreOptions(
            model, strength, size_mode, outscale, width, height, face_restore, face_model, face_strength,
            face_select, face_detector, tile, precision, zssr_iterations, out_format, quality, face_fidelity, color_fix, zssr_kernel,
            compile_mode, zssr_guards,
        )  # fmt: skip
        if not image:
            raise gr.Error("Upload an image first.")
        result = self._restore([str(image)], options, request, progress)
        item = result.done[0]
        return (str(item.before), str(item.output)), str(item.output), jobs.summary(result)

    def restore_batch(
        self,
        images: list[str] | None,
        model: str = jobs.ZSSR_CHOICE,
        strength: float | None = None,
        size_mode: str = "scale",
        outscale: float = 0,
        width: int = 0,
        height: int = 0,
        face_restore: bool = False,
        face_model: str = DEFAULT_FACE_MODEL,
        face_strength: float = 1.0,
        face_select: str = "all",
        face_detector: str = "auto",
        tile: str = "auto",
        precision: str = "auto",
        zssr_iterations: int = 0,
        out_format: str = "PNG",
        quality: int = 95,
        face_fidelity: float = 0.5,
        color_fix: str = "none",
        zssr_kernel: str = "bicubic",
        compile_mode: str = "auto",
        zssr_guards: str = "on",
        request: gr.Request = None,  # type: ignore[assignment]
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[tuple[str, str], str, list[tuple[str, str]], str | None, str]:
        """Restore one or many images: the slider and download of the first, a gallery and a
        zip of all (the zip when more than one), and a report listing any failures."""
        options = jobs.RestoreOptions(
            model, strength, size_mode, outscale, width, height, face_restore, face_model, face_strength,
            face_select, face_detector, tile, precision, zssr_iterations, out_format, quality, face_fidelity, color_fix, zssr_kernel,
            compile_mode, zssr_guards,
        )  # fmt: skip
        paths = [str(p) for p in (images or [])]
        if not paths:
            raise gr.Error("Upload one or more images first.")
        result = self._restore(paths, options, request, progress)
        first = result.done[0]
        gallery = [(str(item.output), f"{item.name} → {item.width}×{item.height}") for item in result.done]
        archive = str(result.archive) if result.archive else None
        return (str(first.before), str(first.output)), str(first.output), gallery, archive, jobs.summary(result)

    @staticmethod
    def batch_visibility(gallery: list[Any] | None) -> tuple[Any, Any]:
        """Show the gallery and the zip only when there are several results."""
        many = len(gallery or []) > 1
        return gr.update(visible=many), gr.update(visible=many)

    def cancel(self, request: gr.Request = None) -> None:  # type: ignore[assignment]
        self.cancels.cancel(request)

    @staticmethod
    def model_changed(model: str) -> Any:
        meaning, position = jobs.strength_of(model)
        if meaning is None:
            return gr.update(visible=False, value=None)
        label = {
            "denoise": "Denoise strength (0 keeps grain and detail, 1 removes the most noise)",
            "sharpness": "Sharpness (0 smooth RealESRNet, 1 sharp RealESRGAN)",
        }.get(meaning, f"{meaning} strength")
        return gr.update(visible=True, value=position, label=label)

    # ------------------------------------------------------------------ video

    def restore_video(
        self,
        video: str | None,
        model: str = jobs.RESIZE_CHOICE,
        outscale: float = 0,
        face_restore: bool = True,
        face_model: str = DEFAULT_FACE_MODEL,
        face_strength: float = 1.0,
        face_select: str = "all",
        face_fidelity: float = 0.5,
        color_fix: str = "none",
        face_track: bool = True,
        smoothing: float = 0.7,
        face_blend: float = 0.0,
        detect_every: int = 1,
        precision: str = "auto",
        face_detector: str = DEFAULT_DETECTOR,
        compile_mode: str = "auto",
        request: gr.Request = None,  # type: ignore[assignment]
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[str, str, str]:
        """Restore a clip: the playable result, the same file to download (with the input's
        audio), and a report."""
        if not video:
            raise gr.Error("Upload a video first.")
        restore = jobs.RestoreOptions(
            model=model, outscale=outscale, face_restore=face_restore, face_model=face_model,
            face_strength=face_strength, face_select=face_select, precision=precision,
            face_fidelity=face_fidelity, color_fix=color_fix, face_detector=face_detector, compile_mode=compile_mode,
        )  # fmt: skip
        options = jobs.VideoJobOptions(restore, bool(face_track), float(smoothing or 0), float(face_blend or 0), int(detect_every or 1))
        with user_errors(), self._engine_job(request) as cancel:
            result = jobs.restore_video(
                str(video), options, max_pixels=self.config.max_pixels, max_output_pixels=self.config.max_output_pixels,
                max_frames=self.config.max_video_frames, progress=engine_progress(progress), cancel=cancel,
                workdir=self.work.new(),
            )  # fmt: skip
        report = f"Restored with **{result.description}** in {result.seconds:.1f} s: {result.report}"
        return str(result.output), str(result.output), report

    # ------------------------------------------------------------------ degrade

    def degrade(
        self,
        image: str | None,
        preset: str = "realesrgan",
        seed: int = 0,
        overrides: str = "",
        scale: float = 4,
        request: gr.Request = None,  # type: ignore[assignment]
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[str, str, str, str, str]:
        """HR, LR enlarged to the HR's size (nearest), sampled parameters (JSON), kernel
        picture, and the LR itself (the download)."""
        with user_errors(), self._engine_job(request) as cancel:
            out = jobs.degrade_file(
                str(image or ""), preset, int(seed or 0), overrides or "", float(scale or 4),
                max_pixels=self.config.max_pixels, progress=engine_progress(progress), cancel=cancel,
                workdir=self.work.new(),
            )  # fmt: skip
        return str(out.hr), str(out.lr_preview), jobs.params_json(out.params), str(out.kernel), str(out.lr)

    # ------------------------------------------------------------------ models

    def models(self) -> list[list[Any]]:
        with user_errors():
            return jobs.model_rows(self.verified)

    def download_model(
        self,
        name: str,
        request: gr.Request = None,  # type: ignore[assignment]
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[Any, ...]:
        with user_errors():
            flag = self.cancels.start(request)
            message = jobs.download_model(name, progress=engine_progress(progress), cancel=flag.is_set)
            return (jobs.model_rows(self.verified), message, *self._choices_update())

    def verify_model(self, name: str) -> tuple[list[list[Any]], str]:
        with user_errors():
            message = jobs.verify_models(name or "", self.verified)
            return jobs.model_rows(self.verified), message

    def import_model(self, file: str | None, name: str = "") -> tuple[Any, ...]:
        with user_errors():
            message = jobs.import_model_file(str(file or ""), name or "")
            return (jobs.model_rows(self.verified), message, *self._choices_update())

    def refresh(self) -> tuple[Any, ...]:
        with user_errors():
            return (jobs.model_rows(self.verified), *self._choices_update())

    # ------------------------------------------------------------------ layout

    def build(self) -> gr.Blocks:
        """The Blocks (not launched)."""
        from restorekit.degrade import PRESET_DESCRIPTIONS, PRESETS
        from restorekit.registry import load_registry

        registry = load_registry()
        choices = jobs.upscale_choices()
        pretrained = jobs.pretrained_available(choices)
        default_model = jobs.default_upscale_choice(choices)
        faces = [m for m in registry if m.purpose == "face_restore"]
        default_face = next((m.name for m in faces if m.default), faces[0].name if faces else None)
        meaning, position = jobs.strength_of(default_model)

        # Gradio's copies of uploads and results: checked every 30 min, kept for an hour
        with gr.Blocks(title="RestoreKit", analytics_enabled=False, delete_cache=(1800, 3600)) as demo:
            gr.Markdown("# RestoreKit\nRestore, upscale and compare images with verified models, on your own machine.")
            with gr.Tab("Restore"):
                notice = gr.Markdown(self.notice_text(pretrained), visible=not pretrained, elem_id="zssr-notice", label="notice")
                with gr.Row():
                    with gr.Column(scale=1):
                        files = gr.File(
                            file_count="multiple", file_types=["image"], label="Images (drop one or many)", elem_id="restore-input"
                        )
                        model = gr.Dropdown(
                            [(c.label, c.value) for c in choices], value=default_model, label="Upscaler",
                            allow_custom_value=True, info="Registry models download (verified) on first use.", elem_id="restore-model",
                        )  # fmt: skip
                        strength = gr.Slider(0, 1, value=position, step=0.05, label="Strength", visible=meaning is not None)
                        size_mode = gr.Radio([("Scale factor", "scale"), ("Target size", "size")], value="scale", label="Output size")
                        outscale = gr.Number(0, minimum=0, label="Scale (0 = the model's own; 2 for zero-shot, 1 for resize)")
                        with gr.Row(visible=False) as size_row:
                            width = gr.Number(0, minimum=0, precision=0, label="Width (0 = keep aspect)")
                            height = gr.Number(0, minimum=0, precision=0, label="Height (0 = keep aspect)")
                        face_restore = gr.Checkbox(False, label="Restore faces")
                        with gr.Group(visible=False) as face_group:
                            face_model = gr.Dropdown(jobs.face_choices(), value=default_face or "", label="Face model", allow_custom_value=True)
                            face_strength = gr.Slider(0, 1, value=1.0, step=0.05, label="Face strength (0 = untouched)")
                            with gr.Row():
                                face_select = gr.Dropdown(
                                    list(jobs.FACE_SELECTIONS), value="all", allow_custom_value=True,
                                    label="Faces", info="all, largest, center, or a face number (0 = leftmost)",
                                )  # fmt: skip
                                face_detector = gr.Dropdown(
                                    jobs.detector_choices(), value=DEFAULT_DETECTOR, label="Detector", allow_custom_value=True,
                                    info="auto: RetinaFace-ResNet50 if downloaded, else MediaPipe BlazeFace + Face Mesh",
                                )
                            face_fidelity = gr.Slider(0, 1, value=0.5, step=0.05, label="CodeFormer fidelity w (0 = quality, 1 = faithful)")
                        with gr.Row():
                            out_format = gr.Radio(list(jobs.OUTPUT_FORMATS), value="PNG", label="Output format")
                            quality = gr.Slider(1, 100, value=95, step=1, label="Quality (JPEG, WebP)")
                        color_fix = gr.Radio(list(jobs.COLOR_FIXES), value="none", label="Colour fix (towards the input's colours)")
                        with gr.Accordion("Advanced", open=False):
                            tile = gr.Dropdown(
                                ["auto", "0", "128", "256", "512"], value="auto", allow_custom_value=True, label="Tile (pixels; 0 = none)"
                            )
                            precision = gr.Dropdown(list(UPSCALE_PRECISIONS), value="auto", label="Precision")
                            compile_mode = gr.Dropdown(list(COMPILE_MODES), value="auto", label=COMPILE_LABEL)
                            zssr_iterations = gr.Number(
                                0, minimum=0, precision=0, label="Zero-shot iterations per stage (0 = default)", elem_id="zssr-iterations"
                            )
                            zssr_kernel = gr.Radio(
                                list(jobs.ZSSR_KERNELS), value="bicubic", elem_id="zssr-kernel",
                                label="Zero-shot kernel: bicubic, or auto = estimate it from the image (a blur where one clearly fits, else area or opencv-cubic), area = halved by an area/bilinear resize",
                            )
                            zssr_guards = gr.Radio(
                                list(jobs.ZSSR_GUARDS), value="on", elem_id="zssr-guards",
                                label="Zero-shot guards: on = fall back to bicubic where the network would likely not beat it; no-transfer-check = skip the check one scale down (it can refuse a network that would have gained), keep the others; off = always the network",
                            )
                        with gr.Row():
                            run = gr.Button("Restore", variant="primary", elem_id="restore-button")
                            stop = gr.Button("Cancel", variant="stop", elem_id="cancel-button")
                    with gr.Column(scale=1):
                        slider = gr.ImageSlider(type="filepath", format="png", label="Before / after", elem_id="result-slider")
                        download = gr.File(label="Download", interactive=False)
                        gallery = gr.Gallery(label="Results", visible=False, columns=3)
                        archive = gr.File(label="All results (zip)", interactive=False, visible=False)
                        status = gr.Markdown(elem_id="restore-status", label="report")
                api_image = gr.File(visible=False, label="image")
                api_button = gr.Button(visible=False)

            with gr.Tab("Video"):
                gr.Markdown(
                    "Restore every frame of a clip: the same engine as the Restore tab, with faces followed "
                    "across frames and smoothed so they do not jitter. The result keeps the timing and the audio."
                )
                video_models = [(c.label, c.value) for c in choices if c.value != jobs.ZSSR_CHOICE]
                with gr.Row():
                    with gr.Column(scale=1):
                        video_input = gr.Video(label="Video", sources=["upload"], elem_id="video-input")
                        video_model = gr.Dropdown(
                            video_models, value=default_model if default_model != jobs.ZSSR_CHOICE else jobs.RESIZE_CHOICE,
                            label="Upscaler", allow_custom_value=True, elem_id="video-model",
                        )  # fmt: skip
                        video_outscale = gr.Number(0, minimum=0, label="Scale (0 = the model's own; 1 for resize)")
                        video_faces = gr.Checkbox(True, label="Restore faces", elem_id="video-faces")
                        with gr.Group() as video_face_group:
                            video_face_model = gr.Dropdown(jobs.face_choices(), value=default_face or "", label="Face model", allow_custom_value=True)
                            with gr.Row():
                                video_face_strength = gr.Slider(0, 1, value=1.0, step=0.05, label="Face strength")
                                video_fidelity = gr.Slider(0, 1, value=0.5, step=0.05, label="CodeFormer fidelity w (0 quality, 1 faithful)")
                            video_face_select = gr.Dropdown(
                                list(jobs.FACE_SELECTIONS), value="all", allow_custom_value=True,
                                label="Faces", info="all, the largest or most central track, or a track id (0 = leftmost face at the start)",
                            )  # fmt: skip
                            video_track = gr.Checkbox(True, label="Follow faces across frames (tracks, smoothing)")
                            with gr.Row():
                                video_smoothing = gr.Slider(0, 5, value=0.7, step=0.05, label="Smoothing cutoff (Hz; lower = steadier, 0 = off)")
                                video_blend = gr.Slider(0, 0.9, value=0.0, step=0.05, label="Temporal blend of restored faces (against flicker)")
                            with gr.Row():
                                video_detect_every = gr.Number(1, minimum=1, precision=0, label="Detect faces every k frames")
                                video_detector = gr.Dropdown(
                                    jobs.detector_choices(), value=DEFAULT_DETECTOR if DEFAULT_DETECTOR in registry else "", label="Detector", allow_custom_value=True
                                )
                        video_color_fix = gr.Radio(list(jobs.COLOR_FIXES), value="none", label="Colour fix (towards the input's colours)")
                        video_precision = gr.Dropdown(list(PRECISIONS), value="auto", label="Precision")
                        video_compile = gr.Dropdown(list(COMPILE_MODES), value="auto", label=COMPILE_LABEL)
                        with gr.Row():
                            video_run = gr.Button("Restore video", variant="primary", elem_id="video-button")
                            video_stop = gr.Button("Cancel", variant="stop", elem_id="video-cancel-button")
                    with gr.Column(scale=1):
                        video_output = gr.Video(label="Result", interactive=False, elem_id="video-output")
                        video_download = gr.File(label="Download (with audio)", interactive=False)
                        video_status = gr.Markdown(elem_id="video-status", label="report")

            with gr.Tab("Degrade"):
                gr.Markdown("Synthesise a realistic low-quality version of an image (Real-ESRGAN's degradation model).")
                with gr.Row():
                    with gr.Column(scale=1):
                        degrade_input = gr.File(file_types=["image"], label="High-quality image", elem_id="degrade-input")
                        preset = gr.Dropdown(
                            [(f"{name}: {PRESET_DESCRIPTIONS.get(name, '')}", name) for name in PRESETS], value="realesrgan", label="Preset"
                        )
                        with gr.Row():
                            seed = gr.Number(0, precision=0, label="Seed")
                            scale = gr.Number(4, minimum=1, label="Scale (LR = HR / scale)")
                        overrides = gr.Textbox(label="Overrides", placeholder="blur_sigma=0.2,2; jpeg_range=60,95; second_order_prob=0  (separate with ; or new lines)")
                        degrade_button = gr.Button("Degrade", variant="primary", elem_id="degrade-button")
                        kernel = gr.Image(type="filepath", format="png", label="Blur kernels", interactive=False)
                    with gr.Column(scale=2):
                        with gr.Row():
                            hr_view = gr.Image(type="filepath", format="png", label="HR (input)", interactive=False)
                            lr_view = gr.Image(type="filepath", format="png", label="LR (degraded; shown enlarged)", interactive=False)
                        lr_file = gr.File(label="Download LR", interactive=False)
                        params = gr.Code(language="json", label="Sampled parameters")

            with gr.Tab("Models"):
                table = gr.Dataframe(
                    jobs.model_rows(self.verified), headers=jobs.MODEL_COLUMNS, interactive=False, label="Models"
                )
                with gr.Row():
                    model_name = gr.Dropdown(registry.names(), value=None, label="Registry model", allow_custom_value=True)
                    download_button = gr.Button("Download")
                    verify_button = gr.Button("Verify (empty = all installed)")
                    refresh_button = gr.Button("Refresh")
                with gr.Row():
                    import_file = gr.File(file_types=[".pth", ".pt", ".ckpt", ".safetensors", ".bin"], label="Your own model file")
                    import_name = gr.Textbox(label="Name (default: the file name)")
                    import_button = gr.Button("Import")
                models_message = gr.Markdown(label="message")

            # ---- events
            options = [
                model, strength, size_mode, outscale, width, height, face_restore, face_model, face_strength,
                face_select, face_detector, tile, precision, zssr_iterations, out_format, quality, face_fidelity, color_fix, zssr_kernel,
                compile_mode, zssr_guards,
            ]  # fmt: skip
            batch_event = run.click(
                self.restore_batch, [files, *options], [slider, download, gallery, archive, status],
                api_name="restore_batch", concurrency_id=ENGINE, show_progress_on=slider,
            )  # fmt: skip
            batch_event.success(self.batch_visibility, gallery, [gallery, archive], queue=False, api_visibility="private")
            single_event = api_button.click(
                self.restore, [api_image, *options], [slider, download, status], api_name="restore",
                concurrency_id=ENGINE, show_progress_on=slider,
            )
            degrade_event = degrade_button.click(
                self.degrade, [degrade_input, preset, seed, overrides, scale], [hr_view, lr_view, params, kernel, lr_file],
                api_name="degrade", concurrency_id=ENGINE, show_progress_on=lr_view,
            )  # fmt: skip
            video_event = video_run.click(
                self.restore_video,
                [
                    video_input, video_model, video_outscale, video_faces, video_face_model, video_face_strength,
                    video_face_select, video_fidelity, video_color_fix, video_track, video_smoothing, video_blend,
                    video_detect_every, video_precision, video_detector, video_compile,
                ],
                [video_output, video_download, video_status], api_name="restore_video", concurrency_id=ENGINE,
                show_progress_on=video_output,
            )  # fmt: skip
            events = [batch_event, single_event, degrade_event, video_event]
            stop.click(self.cancel, None, None, cancels=events, queue=False, api_visibility="private")
            video_stop.click(self.cancel, None, None, cancels=events, queue=False, api_visibility="private")
            video_faces.change(lambda on: gr.update(visible=on), video_faces, video_face_group, queue=False, api_visibility="private")
            model.change(self.model_changed, model, strength, queue=False, api_visibility="private")
            size_mode.change(
                lambda mode: (gr.update(visible=mode == "scale"), gr.update(visible=mode == "size")),
                size_mode, [outscale, size_row], queue=False, api_visibility="private",
            )  # fmt: skip
            face_restore.change(lambda on: gr.update(visible=on), face_restore, face_group, queue=False, api_visibility="private")

            choice_outputs = [model, face_model, notice]
            refresh_button.click(self.models, None, table, api_name="models", concurrency_limit=None)
            download_button.click(
                self.download_model, model_name, [table, models_message, *choice_outputs],
                api_name="download_model", concurrency_id="downloads",
            )  # fmt: skip
            verify_button.click(self.verify_model, model_name, [table, models_message], api_name="verify_model", concurrency_id="downloads")
            import_button.click(
                self.import_model, [import_file, import_name], [table, models_message, *choice_outputs],
                api_name="import_model", concurrency_id="downloads",
            )  # fmt: skip
            demo.load(self.refresh, None, [table, *choice_outputs], api_visibility="private", queue=False)
            demo.unload(self.cancel)  # a closed tab stops its running job at the next engine step
        return demo


def build_app(config: AppConfig | None = None) -> gr.Blocks:
    """The RestoreKit Blocks with its queue set up (one engine job at a time)."""
    app = RestoreKitApp(config)
    demo = app.build()
    demo.queue(default_concurrency_limit=1, max_size=app.config.queue_size)
    demo.restorekit = app  # type: ignore[attr-defined]
    return demo


def launch(config: AppConfig | None = None, *, prevent_thread_lock: bool = False, quiet: bool = False) -> tuple[gr.Blocks, str]:
    """Build and serve the app; returns the Blocks and the local URL.

    Everything the page needs is served by this process (the theme uses system fonts; no
    CDN), so it works offline. A share link without ``auth`` is logged as a warning.
    """
    config = config or AppConfig()
    if config.share and config.auth is None:
        logger.warning(
            "--share without --auth: anyone with the public link can use this app and your "
            "machine. Add --auth USER:PASS to require a login."
        )
    demo = build_app(config)
    _, local_url, _ = demo.launch(
        server_name=config.host,
        server_port=config.port,
        share=config.share,
        auth=config.auth,
        max_file_size=config.max_file_size,
        prevent_thread_lock=prevent_thread_lock,
        quiet=quiet,
        ssr_mode=False,
        footer_links=["api", "settings"],
        theme=gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]),
        show_error=True,
    )
    return demo, local_url
