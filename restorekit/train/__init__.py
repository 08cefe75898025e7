"""Training and fine-tuning: Real-ESRNet -> Real-ESRGAN, ESRGAN and compact nets on your own images.

Quick use::

    from restorekit.train import Trainer, get_preset

    config = get_preset("finetune-realesrgan-x4plus", ["batch_size=4", "iterations=2000"])
    result = Trainer(config, "photos/", "runs/mine", val_data="held_out/").run()
    result.output  # runs/mine/realesrgan-finetuned.safetensors (EMA weights, spandrel-loadable)

Modules: :mod:`.config` (config, presets, ``key=value`` overrides), :mod:`.data` (folders,
crops, on-the-fly LR, pairs, the pair pool), :mod:`.networks` (generators),
:mod:`.discriminators`, :mod:`.losses`, :mod:`.metrics`, :mod:`.plots`,
:mod:`.checkpoint` (safe, atomic checkpoints), :mod:`.trainer` (the loop).
"""

from __future__ import annotations

from .config import FIELD_NAMES, PRESET_DESCRIPTIONS, PRESETS, TrainConfig, get_preset
from .trainer import Trainer, TrainingDivergedError, TrainResult, learning_rate, train

__all__ = [
    "FIELD_NAMES",
    "PRESETS",
    "PRESET_DESCRIPTIONS",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDivergedError",
    "get_preset",
    "learning_rate",
    "train",
]
