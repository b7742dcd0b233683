"""Ablation (paper Table VI) on the default preset: PudNet-w.o.-Context: the sketch feeds every weight generator directly (no AHRU)."""

from configs import default


def get_config():
    config = default.get_config()
    config.model.use_ahru = False
    return config
