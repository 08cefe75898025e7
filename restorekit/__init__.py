"""RestoreKit: the restoration engine (torch + numpy; never imports ComfyUI or Gradio).

Subpackages and modules:

- :mod:`restorekit.registry`: model registry, verified downloads, model home;
- :mod:`restorekit.models`: resolve and load models as spandrel descriptors;
- :mod:`restorekit.degrade`: Real-ESRGAN's degradation pipeline (LR images, training pairs);
- :mod:`restorekit.imageio`: image files in and out (bit depth, alpha, gray, EXIF);
- :mod:`restorekit.device`: the one place that picks devices and precisions;
- :mod:`restorekit.progress`: progress callbacks and cancellation;
- :mod:`restorekit.errors`: the exceptions users see.
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__"]
