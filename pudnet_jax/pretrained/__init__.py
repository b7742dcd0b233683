"""Hypernetworks shipped inside the package: loaded by name, no training, no download.

One entry of `REGISTRY` per shipped checkpoint, and one folder beside this file with the
same name, written by `python -m pudnet_jax.pretrained export --workdir W --name NAME`:

    <name>/variables/      the hypernetwork's variables {'params', 'batch_stats'} (Orbax;
                           no optimizer state)
    <name>/config.json     the config it was trained with
    <name>/results.json    the results.json of its training run (every number, the
                           validation curve included)
    <name>/mean_sketch.npz the training pool's mean sketch (the mean-sketch control)
    <name>/check.json      PudNet and its controls on the first few test groups, measured
                           at export: what tests/test_api.py reproduces

Adding a checkpoint: train it, export it, add its entry below (the numbers exactly as its
results.json gives them; `export` prints the entry).
"""

from __future__ import annotations

import dataclasses
import os

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclasses.dataclass(frozen=True)
class Pretrained:
    name: str
    description: str
    command: str          # how it was trained (reproduces it bit for bit on the CPU)
    # Its test accuracy beside the controls, as results.json gives them.
    measured: dict

    @property
    def folder(self) -> str:
        return os.path.join(HERE, self.name)


REGISTRY = {p.name: p for p in (
    Pretrained(
        name='mnist-convnet3',
        description='The offline default (configs/default.py, seed 0): trained on MNIST-5k '
                    'digits 0-5 (4-way episodes, 400 steps); predicts a ConvNet-3 (width 64) '
                    'for 28x28 grayscale images of classes it never saw.',
        command='python main.py --config configs/default.py --workdir runs/default',
        measured={},
    ),
)}


def get(name: str) -> Pretrained:
    if name not in REGISTRY:
        from pudnet_jax.errors import UserError
        raise UserError(f'No shipped hypernetwork {name!r}; shipped: {sorted(REGISTRY)}.')
    return REGISTRY[name]
