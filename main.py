"""PudNet entry point.

  python main.py --config configs/default.py --workdir runs/default            # train + evaluate
  python main.py --config configs/default.py --workdir runs/default --mode=evaluate
  python main.py --workdir runs/default --mode=predict                           # save a ConvNet
  python main.py --workdir runs/default --mode=predict --data=my_images/         # for a folder
"""

import logging as std_logging

import pudnet_jax  # noqa: F401  (selects the CPU backend up front when there is no GPU)

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Training configuration file.',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, summaries and results.')
flags.DEFINE_enum('mode', 'train', ['train', 'evaluate', 'predict', 'compare'],
                  'train: train (resuming) then evaluate; evaluate: evaluate the latest '
                  'checkpoint; predict: save predicted networks for held-out data; compare: '
                  'PudNet against baselines on the same groups (trains PudNet first if the '
                  'workdir has no checkpoint).')
flags.DEFINE_string('data', None, '--mode=predict: a folder of images, one subfolder per '
                    'class, to predict a network for (instead of held-out groups).')
flags.DEFINE_bool('baselines', True, '--mode=predict --data: also train Adam from scratch and '
                  'fine-tune PudNet on the folder (accuracy and seconds at 1, 2, 5 epochs); '
                  '--no-baselines skips that curve.')
flags.mark_flags_as_required(['workdir'])


class _QuietCheckpointing(std_logging.Filter):
    """Orbax logs a dozen INFO lines per checkpoint; keep its warnings and errors only."""

    def filter(self, record):
        return record.levelno >= std_logging.WARNING or '/orbax/' not in record.pathname


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    from pudnet_jax import compare, evaluate, predict, train
    if FLAGS.data and FLAGS.mode != 'predict':
        raise app.UsageError('--data=<folder> goes with --mode=predict.')
    if FLAGS.mode == 'train':
        if FLAGS.config is None:
            raise app.UsageError('--mode=train needs --config (e.g. configs/default.py).')
        train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    elif FLAGS.mode == 'evaluate':
        config, model, spec, hyper_vars = train.restore_hypernet(FLAGS.workdir, FLAGS.config)
        from pudnet_jax import data
        pool = data.load_pool(config.data.name, config.data.image_size, config.data.channels,
                              config.data.data_dir, cache_dir=config.data.get('cache_dir'))
        results = train.evaluate_any(config, model, spec, hyper_vars, pool, FLAGS.workdir)
        evaluate.write_results(results, FLAGS.workdir)
    elif FLAGS.mode == 'compare':
        compare.run_compare(FLAGS.workdir, FLAGS.config)
    elif FLAGS.data:
        predict.predict_folder(FLAGS.workdir, FLAGS.data, FLAGS.config,
                               baselines=None if FLAGS.baselines else False)
    else:
        predict.predict_and_save(FLAGS.workdir)


if __name__ == '__main__':
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(_QuietCheckpointing())
    app.run(main)
