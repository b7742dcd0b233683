"""Data-parallel meta-training (`config.train.data_parallel`, pudnet_jax/mesh.py).

The suite's process has one CPU device, so the multi-device checks run in a subprocess
started with XLA_FLAGS=--xla_force_host_platform_device_count=4 (set before JAX is
imported there): loss and parameters after one and two steps on 4 devices ('vmap') against
1 device; then `train_and_evaluate` on 4 devices ('unroll', the CPU's batching), its
checkpoint of step 1 and, interrupted there and resumed onto the mesh, of step 4, against
the same steps on 1 device.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from configs import test as test_config
from pudnet_jax import config_check
from pudnet_jax import train as train_lib
from pudnet_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHILD = textwrap.dedent('''
    import os, sys
    assert 'jax' not in sys.modules
    import jax, numpy as np
    assert jax.device_count() == 4, jax.devices()
    from configs import test as test_config
    from pudnet_jax import data as data_lib, input_pipeline, mesh as mesh_lib, train as train_lib
    from pudnet_jax import workdir as workdir_lib
    from pudnet_jax.hypernet import build_model

    def config_for(devices, mode):
        config = test_config.get_config()
        config.train.episodes_per_step = 4
        config.train.data_parallel = devices
        config.train.episode_batching = mode
        config.train.val_every = 0
        return config

    def run(devices, mode, steps):
        """Losses and (params, batch_stats, opt_state) after each step, as training draws
        them (the sampler of train_and_evaluate: seed 0, step s)."""
        config = config_for(devices, mode)
        model, spec = build_model(config)
        mesh = train_lib.training_mesh(config)
        state = train_lib.create_train_state(config, model, spec)
        if mesh is not None:
            state = mesh_lib.replicate(state, mesh)
        step = train_lib.make_train_step(config, model, spec, mesh)
        pool = data_lib.load_pool('mnist5k', 28, 1)
        sampler = data_lib.EpisodeSampler(pool, config.data.train_classes, 3, 3, 2, seed=0)
        losses, after = [], []
        for s in range(1, steps + 1):
            batch = input_pipeline.training_batch(sampler, s, config.train)
            if mesh is not None:
                batch = mesh_lib.shard_episodes(batch, mesh)
                assert len(batch.support.sharding.device_set) == devices
                assert batch.support.addressable_shards[0].data.shape[0] == 4 // devices
            state, metrics = step(state, batch)
            losses.append(float(metrics.compute()['loss']))
            after.append(jax.device_get({'params': state.params,
                                         'batch_stats': state.batch_stats,
                                         'opt_state': state.opt_state}))
        if mesh is not None:
            leaf = jax.tree.leaves(state.params)[0]
            assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == devices
        return losses, after

    def close(a, b, what):
        # float tolerance: a step moves a parameter by up to the learning rate (1e-3)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-4, err_msg=what)

    one = run(1, 'unroll', 4)
    assert len(set(one[0])) == 4          # the steps do change the parameters
    vmap4 = run(4, 'vmap', 2)
    np.testing.assert_allclose(vmap4[0], one[0][:2], rtol=1e-4, err_msg='vmap loss')
    for s in (0, 1):
        close(vmap4[1][s], one[1][s], f'vmap on 4 devices, step {s + 1}')
    print('1 device losses', one[0], '; vmap on 4 devices', vmap4[0])

    # Through train_and_evaluate ('unroll'): step 1 on 4 devices, "killed", resumed from
    # its checkpoint onto the mesh for steps 2-4; against the 1-device steps above.
    workdir = sys.argv[1]
    config = config_for(4, 'unroll')
    config.train.num_train_steps = 4
    config.train.checkpoint_every = 1
    for stop in (1, 4):
        assert train_lib.train_and_evaluate(config, workdir, stop_after_step=stop) == {
            'stopped_at_step': stop}
        _, _, _, variables, step = workdir_lib.restore_hypernet_with_step(workdir)
        assert step == stop
        close(variables, {k: one[1][stop - 1][k] for k in variables},
              f'train_and_evaluate on 4 devices, step {stop}')
    print('train_and_evaluate on 4 devices (resumed at step 1) equals 1 device')
''')


def test_steps_on_four_devices_equal_one_device(tmp_path):
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
               JAX_PLATFORMS='cpu')
    out = subprocess.run([sys.executable, '-c', _CHILD, str(tmp_path)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    assert 'vmap on 4 devices' in out.stdout
    assert 'train_and_evaluate on 4 devices (resumed at step 1) equals 1 device' in out.stdout


def test_data_parallel_is_validated():
    config = test_config.get_config()           # episodes_per_step = 2
    config.train.data_parallel = 3
    with pytest.raises(UserError, match=r'config\.train\.data_parallel=3: must divide '
                                        r'config\.train\.episodes_per_step \(2'):
        config_check.validate(config)
    config.train.data_parallel = -1
    with pytest.raises(UserError, match=r'config\.train\.data_parallel=-1: must be an '
                                        r'integer >= 0'):
        config_check.validate(config)
    config.train.data_parallel = 2              # valid, but this process has one device
    config_check.validate(config)
    with pytest.raises(UserError, match=r'data_parallel=2: only 1 device\(s\) are visible'):
        train_lib.training_mesh(config)
    for devices in (0, 1):                      # all devices (here one) or one: no mesh
        config.train.data_parallel = devices
        assert train_lib.training_mesh(config) is None
