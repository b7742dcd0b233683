"""Ablation (paper Table VI) on the default preset: no KL consistency (L = L1 + L2)."""

from configs import default


def get_config():
    config = default.get_config()
    config.loss.use_kl = False
    return config
