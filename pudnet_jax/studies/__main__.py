"""python -m pudnet_jax.studies STUDY [options]: see pudnet_jax/studies/__init__.py."""

import importlib
import sys

from pudnet_jax.studies import COMMANDS, __doc__ as USAGE


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        given = f'unknown study {argv[0]!r}; ' if argv and argv[0] not in ('-h', '--help') else ''
        print(f'{given}the studies are {", ".join(COMMANDS)}.\n\n{USAGE}', file=sys.stderr)
        raise SystemExit(0 if argv and argv[0] in ('-h', '--help') else 2)
    module = importlib.import_module(f'pudnet_jax.studies.{COMMANDS[argv[0]]}')
    # paper.py takes the study's name as its first argument; the others do not.
    module.main(argv if COMMANDS[argv[0]] == 'paper' else argv[1:])


if __name__ == '__main__':
    main()
