import pytest

import pudnet_jax  # noqa: F401  (CPU backend up front when there is no GPU)
from configs import test as test_config
from pudnet_jax import train as train_lib


@pytest.fixture(scope='session')
def trained_workdir(tmp_path_factory):
    """A workdir with a tiny PudNet trained on the default data (shared by tests)."""
    workdir = str(tmp_path_factory.mktemp('trained'))
    train_lib.train_and_evaluate(test_config.get_config(), workdir)
    return workdir
