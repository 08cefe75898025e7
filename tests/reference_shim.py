"""Make the reference packages (basicsr, realesrgan, gfpgan) importable on current torchvision.

basicsr imports ``torchvision.transforms.functional_tensor``, which torchvision removed; the
functions it needs live in ``torchvision.transforms.functional``. Import this module before
any reference package. Tests and benchmarks only: the engine never uses reference code.
"""

from __future__ import annotations

import sys

import torchvision.transforms.functional as _functional

sys.modules.setdefault("torchvision.transforms.functional_tensor", _functional)
