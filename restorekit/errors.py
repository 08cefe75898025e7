"""The engine's exceptions.

Every error a user can cause is a :class:`RestoreKitError` whose message names the problem
and the fix. Front ends show the message as-is (the CLI prints one line, ComfyUI shows the
node error, the app raises ``gr.Error``); tracebacks are for bugs only.
"""

from __future__ import annotations


class RestoreKitError(Exception):
    """Base class of every error RestoreKit raises on purpose."""


class InvalidParameterError(RestoreKitError, ValueError):
    """A parameter is out of range, of the wrong kind, or inconsistent with another one."""


class ModelNotFoundError(RestoreKitError, FileNotFoundError):
    """A model name or path does not refer to a known or available model."""


class ModelIncompatibleError(RestoreKitError):
    """A model exists but cannot be used for this job (wrong kind, wrong layout, mismatch)."""


class UnsafeModelFileError(ModelIncompatibleError):
    """A model file would need arbitrary code execution (a pickle with forbidden globals)."""


class DownloadError(RestoreKitError):
    """Every source of a model failed; the message lists each source and why."""


class HashMismatchError(DownloadError):
    """A downloaded or stored file does not have the pinned SHA-256."""


class ImageReadError(RestoreKitError):
    """An image file cannot be read: missing, corrupt, or of an unsupported kind."""


class ImageTooLargeError(ImageReadError):
    """An image has more pixels than the configured cap (checked before decoding)."""


class ImageWriteError(RestoreKitError):
    """An output file cannot be written (bad format, existing file, unwritable folder)."""


class InsufficientMemoryError(RestoreKitError):
    """A job ran out of device or host memory even after shrinking its work units."""


class VideoError(RestoreKitError):
    """A video cannot be read or written: no video stream, unsupported codec, corrupt file."""


class CancelledError(RestoreKitError):
    """The user cancelled a long-running job."""

    def __init__(self, message: str = "Cancelled by the user.") -> None:
        super().__init__(message)


class ClusterError(RestoreKitError):
    """Ray is missing, the cluster cannot be reached, or its workers cannot run the job."""
