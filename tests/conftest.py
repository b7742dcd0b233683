"""Shared test setup. Tests never read or write the user's image cache (mock data must
not end up there)."""

import atexit
import os
import shutil
import tempfile

# One per process (each pytest-xdist worker starts with an empty cache, as before), removed
# when that process ends: a run used to leave ~50 MB a process in /tmp, and a full disk
# fails CI.
os.environ['PUDNET_CACHE_DIR'] = tempfile.mkdtemp(prefix='pudnet_cache_tests_')
atexit.register(shutil.rmtree, os.environ['PUDNET_CACHE_DIR'], ignore_errors=True)

import pytest  # noqa: E402

from pudnet_jax.process import prepare_process  # noqa: E402

prepare_process()   # as the command line: the CPU backend up front when there is no GPU

# One XLA compilation cache for the session's processes: many tests compile the same tiny
# programs (a train step, a predictor), and XLA's compile is most of their time on a CPU.
# The directory is made by the first process that imports this file (the pytest-xdist
# controller, whose environment its workers inherit) and removed when that process ends.
import jax  # noqa: E402

if 'PUDNET_TEST_XLA_CACHE' not in os.environ:
    os.environ['PUDNET_TEST_XLA_CACHE'] = tempfile.mkdtemp(prefix='pudnet_test_xla_cache_')
    atexit.register(shutil.rmtree, os.environ['PUDNET_TEST_XLA_CACHE'], ignore_errors=True)
jax.config.update('jax_compilation_cache_dir', os.environ['PUDNET_TEST_XLA_CACHE'])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.2)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)

from configs import test as test_config  # noqa: E402
from pudnet_jax import train as train_lib  # noqa: E402


@pytest.fixture(scope='session')
def trained_workdir(tmp_path_factory):
    """A workdir with a tiny PudNet trained on the default data (shared by tests)."""
    workdir = str(tmp_path_factory.mktemp('trained'))
    train_lib.train_and_evaluate(test_config.get_config(), workdir)
    return workdir
