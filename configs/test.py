"""A tiny config for tests: the default's data and target, a few steps, narrow networks."""

from configs import default


def get_config():
    config = default.get_config()
    config.target.width = 8
    config.model.sketch_dim = 16
    config.model.sketch_features = (4, 4, 4)
    config.train.ways = 3
    config.train.shots = 3
    config.train.queries = 2
    config.train.episodes_per_step = 2
    config.train.num_train_steps = 6
    config.train.log_every = 2
    config.train.checkpoint_every = 2
    config.train.val_every = 2
    config.train.val_groups = 2
    config.eval.ways = 3
    config.eval.shots = 3
    config.eval.test_shots = 4
    config.eval.groups = 3
    config.eval.val_groups = 2
    config.eval.untrained_seeds = 2
    config.eval.mean_sketch_images = 40
    config.predict.baseline_epochs = (1, 2)
    config.predict.baseline_batch_size = 8
    config.compare.groups = 2
    config.compare.tune_groups = 1
    config.compare.val_groups = 1
    config.compare.epochs = (1, 2)
    config.compare.learning_rates = (1e-3, 3e-3)
    config.compare.batch_size = 3
    config.compare.finetune_epochs = (1,)
    config.compare.finetune_learning_rates = (1e-3,)
    config.compare.pretrain_epochs = 1
    config.compare.pretrain_batch_size = 256
    config.compare.protonet_steps = 2
    config.compare.protonet_eval_every = 1
    return config


def shrink(config):
    """A paper/preset config with the tiny sizes of configs/test.py (same data/target)."""
    tiny = get_config()
    for group in ('model', 'train', 'eval', 'compare'):
        for key, value in tiny[group].items():
            if group == 'model' and key in ('eta', 'use_ahru'):
                continue
            config[group][key] = value
    config.target.width = tiny.target.width
    return config
