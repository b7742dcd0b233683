"""Ablation (paper Table VI) on the default preset: metric loss only (L1): no full-class head, no KL."""

from configs import default


def get_config():
    config = default.get_config()
    config.loss.use_full_head = False
    config.loss.metric_weight = 1.0   # L1 is the whole objective
    return config
