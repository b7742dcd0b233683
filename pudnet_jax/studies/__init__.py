"""The studies: one command each, run from the repository root, every number as JSON and
every figure as PNG (default folder docs/), each accuracy beside its controls.

  python -m pudnet_jax.studies groups --workdir runs/fig5   # paper Fig. 5 (paper.py)
  python -m pudnet_jax.studies eta --workdir runs/fig6      # paper Fig. 6 (paper.py)
  python -m pudnet_jax.studies losses --workdir runs/fig7   # paper Fig. 7 (paper.py)
  python -m pudnet_jax.studies lodo --root runs/lodo        # leave one domain out (lodo.py)
  python -m pudnet_jax.studies cca --workdir runs/lodo/animal  # paper Fig. 1 (cca.py)
  python -m pudnet_jax.studies settings --root runs/lodo   # λ × learned steps (settings.py)
  python -m pudnet_jax.studies seeds A=W1,W2 B=W3,W4       # arms over seeds (seeds.py)

`python -m pudnet_jax.studies STUDY --help` lists a study's options.
"""

# The command of each study and the module that runs it (its main(argv)).
COMMANDS = {'groups': 'paper', 'eta': 'paper', 'losses': 'paper', 'lodo': 'lodo',
            'cca': 'cca', 'settings': 'settings', 'seeds': 'seeds'}
