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
        command='taskset -c 1 python main.py --config configs/default.py --workdir runs/default',
        # results.json's test accuracy (200 groups) beside its controls, and validation.
        measured={
            'accuracy': 0.9295,
            'ci95': 0.005032734423529396,
            'groups': 200,
            'ways': 4,
            'shots': 10,
            'test_shots': 15,
            'controls': {
                'untrained': {
                    'accuracy': 0.8648055555555555,
                    'ci95': 0.006016678932479541,
                    'networks': 3
                },
                'mean_sketch': {
                    'accuracy': 0.9253333333333333,
                    'ci95': 0.0051545060330204714,
                    'networks': 1
                }
            },
            'conditioning_gain': 0.0041666666666666675,
            'conditioning_gain_ci95': 0.00166167084586569,
            'gain_over_untrained': 0.06469444444444443,
            'gain_over_untrained_ci95': 0.006170694759991584,
            'validation': {
                'accuracy': 0.9353333333333335,
                'ci95': 0.00637259605219446,
                'groups': 100,
                'controls': {
                    'untrained': {
                        'accuracy': 0.8815,
                        'ci95': 0.008088700275578769,
                        'networks': 3
                    },
                    'mean_sketch': {
                        'accuracy': 0.9355000000000001,
                        'ci95': 0.006428863075571327,
                        'networks': 1
                    }
                },
                'conditioning_gain': -0.00016666666666666495,
                'conditioning_gain_ci95': 0.002332637896364448,
                'gain_over_untrained': 0.05383333333333333,
                'gain_over_untrained_ci95': 0.008791987202161004
            },
            'train_steps': 400,
            'train_seconds': 490.09
        },
    ),
    Pretrained(
        name='multidomain-convnet3',
        description='The paper\'s model on the multi-domain pool (configs/multidomain.py:'
                    'animal,chars,paper, the multi-domain default before the learned step '
                    'and the typeface domains; '
                    'held-out domain Animal-MNIST, validation domain MNIST, seed 0): trained on 6 glyph '
                    'domains rendered from matplotlib\'s fonts (151 classes; the rendered '
                    'digits leave with their twin MNIST; 5-way one-domain episodes, 500 '
                    'steps); predicts a ConvNet-3 (width 64) for 28x28 grayscale '
                    'images of a domain it never saw; eval.refine_steps = 10 (PudNet + refined '
                    'sketch).',
        command='taskset -c 0 python -m pudnet_jax.studies lodo --root runs/lodo --domains '
                'animal --variant chars,paper (= python main.py --config '
                'configs/multidomain.py:animal,chars,paper --workdir runs/lodo/animal, on one CPU '
                'core)',
        # results.json's test accuracy (150 groups) beside its controls, validation, and
        # PudNet + refined sketch.
        measured={   'accuracy': 0.632888888888889,
            'ci95': 0.0120721459655685,
            'groups': 150,
            'ways': 5,
            'shots': 10,
            'test_shots': 15,
            'controls': {   'untrained': {   'accuracy': 0.6208,
                                             'ci95': 0.011800423211549966,
                                             'networks': 3},
                            'mean_sketch': {   'accuracy': 0.6312000000000001,
                                               'ci95': 0.01209767297072733,
                                               'networks': 1}},
            'conditioning_gain': 0.001688888888888892,
            'conditioning_gain_ci95': 0.0038510336845030265,
            'gain_over_untrained': 0.012088888888888882,
            'gain_over_untrained_ci95': 0.01079994173165199,
            'validation': {   'accuracy': 0.8522666666666667,
                              'ci95': 0.01605599333001024,
                              'groups': 50,
                              'controls': {   'untrained': {   'accuracy': 0.8723555555555556,
                                                               'ci95': 0.016654478062367386,
                                                               'networks': 3},
                                              'mean_sketch': {   'accuracy': 0.8669333333333334,
                                                                 'ci95': 0.014169762279508353,
                                                                 'networks': 1}},
                              'conditioning_gain': -0.014666666666666653,
                              'conditioning_gain_ci95': 0.00823925606134707,
                              'gain_over_untrained': -0.020088888888888868,
                              'gain_over_untrained_ci95': 0.01237895171548549,
                              'refined': {   'accuracy': 0.9018666666666668,
                                             'ci95': 0.012861423821645875,
                                             'gain_over_untrained': 0.029511111111111123,
                                             'gain_over_untrained_ci95': 0.01400677322772235,
                                             'conditioning_gain': 0.03493333333333334,
                                             'conditioning_gain_ci95': 0.012255168083166654,
                                             'steps': 10,
                                             'lr': 3.0,
                                             'seconds': 0.7250036890000047}},
            'train_steps': 500,
            'train_seconds': 421.02,
            'refined': {   'accuracy': 0.7129777777777777,
                           'ci95': 0.012492344837555978,
                           'gain_over_untrained': 0.09217777777777776,
                           'gain_over_untrained_ci95': 0.009351704049924072,
                           'conditioning_gain': 0.08177777777777777,
                           'conditioning_gain_ci95': 0.011219875040199667,
                           'steps': 10,
                           'lr': 3.0,
                           'seconds': 1.0413653400009935}},
    ),
)}


def get(name: str) -> Pretrained:
    if name not in REGISTRY:
        from pudnet_jax.errors import UserError
        raise UserError(f'No shipped hypernetwork {name!r}; shipped: {sorted(REGISTRY)}.')
    return REGISTRY[name]
