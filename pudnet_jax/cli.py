"""The PudNet command line: `python main.py`, `python -m pudnet_jax` and `pudnet` are the same.

  python -m pudnet_jax --config configs/default.py --workdir runs/default       # train + evaluate
  python -m pudnet_jax --config configs/default.py --workdir runs/default --mode=evaluate
  python -m pudnet_jax --workdir runs/default --mode=predict                      # save a ConvNet
  python -m pudnet_jax --workdir runs/default --mode=predict --data=my_images/    # for a folder

Any config field can be overridden with --config.<field>=value, e.g.
  --config.train.num_train_steps=2000 --config.model.eta=0.2
  --config.data.test_classes='(6,7,8,9)'     (tuples: quoted, in parentheses)
A mistake in the input prints one line, `error: <message>`, and exits with status 2;
--debug shows the Python traceback instead.
"""

import inspect
import logging as std_logging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from pudnet_jax.errors import UserError
from pudnet_jax.process import prepare_process

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Training configuration file; override any '
                                'field with --config.<field>=value.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, summaries and results.')
flags.DEFINE_enum('mode', 'train', ['train', 'evaluate', 'predict', 'compare'],
                  'train: train (resuming) then evaluate; evaluate: evaluate the latest '
                  'checkpoint; predict: save predicted networks for held-out data; compare: '
                  'PudNet against baselines on the same groups (trains PudNet first if the '
                  'workdir has no checkpoint).')
flags.DEFINE_enum('split', 'all', ['all', 'validation'],
                  '--mode=evaluate: all: the validation and the test groups (results.json); '
                  'validation: the validation groups alone, no test group drawn '
                  '(validation.json), for choosing a setting without seeing test data.')
flags.DEFINE_string('data', None, '--mode=predict: a folder of images to predict a network '
                    'for (instead of held-out groups): one subfolder per class for a '
                    'classification workdir; the noisy images themselves for a denoising one.')
flags.DEFINE_string('clean', None, '--mode=predict --data with a denoising workdir: the clean '
                    'images (same file names) for PSNR/SSIM.')
flags.DEFINE_bool('baselines', True, '--mode=predict --data: also train Adam from scratch and '
                  'fine-tune PudNet on the folder (accuracy and seconds at 1, 2, 5 epochs); '
                  '--no-baselines skips that curve.')
flags.DEFINE_bool('distributed', False, 'One process of a multi-process (multi-host) run: '
                  'calls jax.distributed.initialize first (its arguments detected under '
                  'Slurm, Open MPI or on TPU, or given by the three flags below); use with '
                  '--config.train.data_parallel=0 (every device of every process).')
flags.DEFINE_string('coordinator_address', None, '--distributed: host:port of process 0.')
flags.DEFINE_integer('num_processes', None, '--distributed: the number of processes.')
flags.DEFINE_integer('process_id', None, '--distributed: this process, 0..num_processes-1.')
flags.DEFINE_bool('debug', False, 'Show Python tracebacks of errors (by default a mistake in '
                  'the input prints one line).')
flags.mark_flags_as_required(['workdir'])

EXIT_USER_ERROR = 2
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
HELP_FLAGS = ('-?', '--help', '--helpshort', '--helpfull', '--helpxml', '-help')


class _QuietCheckpointing(std_logging.Filter):
    """Orbax logs a dozen INFO lines per checkpoint; keep its warnings and errors only."""

    def filter(self, record):
        return record.levelno >= std_logging.WARNING or '/orbax/' not in record.pathname


def _fail(message: str) -> None:
    print('error: ' + ' '.join(str(message).split()), file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def _config_load_error(e: BaseException) -> str:
    """ml_collections' 'Failed loading config file ... Attempted ...' as one sentence."""
    text = str(e)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if 'Failed loading config file' in text and len(lines) >= 2:
        return f'--config: cannot load {lines[-2]} ({lines[-1]}).'
    return f'--config: {type(e).__name__}: {text}'


def _flag_error(text: str) -> str:
    """absl's message for a bad flag; for a config file that raised while it was read
    (`configs/x.py:<arg>` refused by its get_config), the exception's own last line
    instead of the whole traceback that config_flags puts in the message."""
    head, sep, trace = text.partition('Traceback (most recent call last):')
    lines = [line.strip() for line in trace.splitlines() if line.strip()]
    return f'{head.strip()} {lines[-1]}' if sep and lines else text


def parse_flags(argv):
    """absl's parsing, with help exiting 0 and every flag or config mistake one line."""
    debug = any(a == '--debug' or a.lower() in ('--debug=true', '--debug=1') for a in argv[1:])
    if any(a in ('-?', '--help', '--helpshort', '-help') for a in argv[1:]):
        # The usage and this command line's flags (absl lists the flags of the __main__
        # module, which is main.py or pudnet_jax/__main__.py: none of them).
        print(__doc__.rstrip() + '\n\nflags:\n' + FLAGS.module_help(sys.modules[__name__]))
        print('\nTry --helpfull to get a list of all flags.')
        sys.exit(0)
    try:
        remaining = FLAGS(argv)
        config = FLAGS.config
        if type(config).__name__ == '_ErrorConfig':   # config_flags defers loading errors
            raise object.__getattribute__(config, '_error')
        return remaining
    except SystemExit as e:
        if e.code == 1 and any(a in HELP_FLAGS for a in argv[1:]):
            sys.exit(0)          # absl exits 1 after printing the requested help
        raise
    except Exception as e:   # noqa: BLE001
        if debug:
            raise
        if isinstance(e, flags.Error):
            _fail(_flag_error(str(e)))
        if isinstance(e, (AttributeError, KeyError)):    # --config.<typo>=...
            detail = str(e).strip('\'"').replace('\\n', ' ').replace("\\'", "'")
            _fail(f'unknown config field in the command line: {detail}')
        if isinstance(e, OSError):                        # missing or unreadable file
            _fail(_config_load_error(e))
        _fail(f'--config: the config file raised {type(e).__name__}: {e}')


def _is_user_error(e: BaseException) -> bool:
    """A mistake in the input, not a bug: our own checks (UserError, the ValueErrors and
    ImportErrors raised inside this package), and file-system problems (OSError: missing,
    unreadable or unwritable paths, named in the message)."""
    from pudnet_jax.train import NonFiniteLossError
    if isinstance(e, (UserError, OSError, NonFiniteLossError)):
        return True
    if isinstance(e, (ValueError, ImportError)):
        tb = e.__traceback__
        while tb.tb_next is not None:
            tb = tb.tb_next
        return os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(PACKAGE_DIR + os.sep)
    return False


def main(argv):
    if len(argv) > 1 and not FLAGS.debug:
        _fail(f'unexpected arguments {argv[1:]}: every argument is a --flag (see --help).')
    if FLAGS.distributed:
        from pudnet_jax import mesh
        mesh.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                    FLAGS.process_id)
    try:
        run(FLAGS.mode, FLAGS.workdir, FLAGS.config, FLAGS.data, FLAGS.baselines, FLAGS.clean,
            FLAGS.split)
    except Exception as e:   # noqa: BLE001
        if FLAGS.debug or not _is_user_error(e):
            raise
        _fail(str(e))


def run(mode: str, workdir: str, config, data_folder, baselines: bool = True,
        clean_folder=None, split: str = 'all'):
    if split != 'all' and mode != 'evaluate':
        raise UserError(f'--split={split} goes with --mode=evaluate.')
    if data_folder and mode != 'predict':
        raise UserError('--data=<folder> goes with --mode=predict.')
    if clean_folder and not data_folder:
        raise UserError('--clean=<folder> goes with --mode=predict --data=<folder>.')
    if mode == 'train' and config is None:
        raise UserError('--mode=train needs --config (e.g. configs/default.py).')
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UserError(f'--workdir={workdir!r} is a file, not a directory.')
    if mode in ('evaluate', 'predict') and not os.path.isdir(workdir):
        raise UserError(f'--workdir={workdir!r} does not exist: train there first '
                        f'(--mode=train --config=...).')
    if config is not None:
        from pudnet_jax import config_check
        config_check.validate(config)
    task = _task(workdir, config)
    if split != 'all' and 'split' not in inspect.signature(task.evaluate).parameters:
        name = task.__name__.rsplit('.', 1)[-1]
        raise UserError(f'--split={split}: the {name} task evaluates its validation and test '
                        f'groups together; use --split=all.')
    if data_folder:      # folder problems before anything heavy is loaded
        task.check_folder(data_folder)
    from pudnet_jax.files import workdir_lock
    with workdir_lock(workdir):
        _dispatch(mode, workdir, config, data_folder, baselines, clean_folder, task, split)


def _task(workdir, config):
    """The task module of the config, else of the workdir's saved config, else the default."""
    from pudnet_jax import tasks
    from pudnet_jax import workdir as workdir_lib
    if config is None and os.path.exists(os.path.join(workdir, workdir_lib.CONFIG_FILE)):
        config = workdir_lib.load_config(workdir)
    return tasks.get(config.get('task', tasks.DEFAULT) if config is not None else tasks.DEFAULT)


def _dispatch(mode, workdir, config, data_folder, baselines, clean_folder, task,
              split: str = 'all'):
    from pudnet_jax import train
    from pudnet_jax import workdir as workdir_lib
    if mode not in task.MODES:           # the task's own modes (tasks.*.MODES)
        name = task.__name__.rsplit('.', 1)[-1]
        raise UserError(f"--mode={mode} is not available yet for config.task={name!r} "
                        f"({', '.join(task.MODES)} are).")
    if mode == 'train':
        train.train_and_evaluate(config, workdir)
    elif mode == 'evaluate':
        config, model, spec, hyper_vars, step = workdir_lib.restore_hypernet_with_step(
            workdir, config)
        print(f'Evaluating the checkpoint of step {step} in '
              f'{os.path.join(workdir, "checkpoints", str(step))}.')
        from pudnet_jax import tasks
        task = tasks.of(config)
        only = {'split': split} if split != 'all' else {}   # a task may not take `split`
        results = task.evaluate(config, model, spec, hyper_vars, task.load(config), workdir,
                                **only)
        name = (workdir_lib.VALIDATION_FILE if split == 'validation'
                else workdir_lib.results_file_for(config, workdir))
        results['checkpoint_step'] = step
        path = workdir_lib.write_results(results, workdir, name)
        print(f'Results: {path}')
    elif mode == 'compare':
        task.compare(workdir, config)
    elif data_folder:
        task.predict_folder(workdir, data_folder, config, baselines=baselines,
                            clean_folder=clean_folder)
    else:
        task.predict_and_save(workdir)


def entry() -> None:
    """The console entry point (main.py, `python -m pudnet_jax`, `pudnet`)."""
    prepare_process()
    sys.modules['__main__'].__doc__ = __doc__     # absl prints it as the usage in --help
    logging.set_verbosity(logging.INFO)
    quiet_checkpointing()
    app.run(main, flags_parser=parse_flags)


def quiet_checkpointing() -> None:
    """Orbax's INFO lines off the log (its warnings and errors kept): on the `absl` logger,
    so the filter holds with or without absl's handler (the studies run without app.run)."""
    logger = std_logging.getLogger('absl')
    if not any(isinstance(f, _QuietCheckpointing) for f in logger.filters):
        logger.addFilter(_QuietCheckpointing())
