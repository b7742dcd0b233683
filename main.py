"""PudNet entry point, kept for the README's commands: the same command line as
`python -m pudnet_jax` (pudnet_jax/cli.py; `python main.py --help` lists the flags).
"""

from pudnet_jax.cli import entry, run  # noqa: F401  (run: the modes, for scripts and tests)

if __name__ == '__main__':
    entry()
