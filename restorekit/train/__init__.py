"""Training and fine-tuning (Real-ESRNet -> Real-ESRGAN, ESRGAN) on the user's own images."""
