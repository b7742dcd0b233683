"""Shared test setup. Tests never read or write the user's image cache (mock data must
not end up there)."""

import os
import tempfile

os.environ['PUDNET_CACHE_DIR'] = tempfile.mkdtemp(prefix='pudnet_cache_tests_')

import pytest  # noqa: E402

from pudnet_jax.process import prepare_process  # noqa: E402

prepare_process()   # as the command line: the CPU backend up front when there is no GPU

from configs import test as test_config  # noqa: E402
from pudnet_jax import train as train_lib  # noqa: E402


@pytest.fixture(scope='session')
def trained_workdir(tmp_path_factory):
    """A workdir with a tiny PudNet trained on the default data (shared by tests)."""
    workdir = str(tmp_path_factory.mktemp('trained'))
    train_lib.train_and_evaluate(test_config.get_config(), workdir)
    return workdir
