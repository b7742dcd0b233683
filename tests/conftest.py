"""Tests never read or write the user's image cache (mock data must not end up there)."""

import os
import tempfile

os.environ['PUDNET_CACHE_DIR'] = tempfile.mkdtemp(prefix='pudnet_cache_tests_')
