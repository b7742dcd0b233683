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
    config.eval.ways = 3
    config.eval.shots = 3
    config.eval.test_shots = 4
    config.eval.groups = 3
    return config
