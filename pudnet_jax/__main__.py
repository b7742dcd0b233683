"""`python -m pudnet_jax ...`: the command line of pudnet_jax/cli.py (the same as main.py)."""

from pudnet_jax.cli import entry

if __name__ == '__main__':
    entry()
