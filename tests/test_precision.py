"""Mixed precision (`config.train.dtype = 'bfloat16'`): the target's forward pass and the
weight generators' matmuls in bfloat16, parameters, BatchNorm statistics and losses in
float32. At the tests' tiny size: the step is really computed in bfloat16, and three
steps stay close to float32's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import test as test_config
from pudnet_jax import config_check
from pudnet_jax import data as data_lib
from pudnet_jax import input_pipeline
from pudnet_jax import train as train_lib
from pudnet_jax.errors import UserError
from pudnet_jax.hypernet import build_model


def _three_steps(dtype):
    config = test_config.get_config()
    config.train.dtype = dtype
    model, spec = build_model(config)
    state = train_lib.create_train_state(config, model, spec)
    step = train_lib.make_train_step(config, model, spec)
    pool = data_lib.load_pool('mnist5k', 28, 1)
    sampler = data_lib.EpisodeSampler(pool, config.data.train_classes, 3, 3, 2, seed=0)
    batches = [input_pipeline.training_batch(sampler, s, config.train) for s in (1, 2, 3)]
    hlo = step.lower(state, batches[0]).as_text()
    losses = []
    for batch in batches:
        state, metrics = step(state, batch)
        losses.append(float(metrics.compute()['loss']))
    return losses, state, hlo


def test_bfloat16_step_is_bfloat16_and_stays_close_to_float32():
    f32_losses, f32_state, f32_hlo = _three_steps('float32')
    bf16_losses, bf16_state, bf16_hlo = _three_steps('bfloat16')
    assert 'bf16' not in f32_hlo
    assert bf16_hlo.count('bf16') > 20 and 'convolution' in bf16_hlo
    # float32 parameters, optimizer state and statistics in both
    for leaf in jax.tree.leaves((bf16_state.params, bf16_state.opt_state,
                                 bf16_state.batch_stats)):
        assert leaf.dtype in (jnp.float32, jnp.int32)
    assert all(np.isfinite(bf16_losses)) and bf16_losses != f32_losses
    np.testing.assert_allclose(bf16_losses, f32_losses, rtol=0.05)


def test_dtype_is_validated():
    config = test_config.get_config()
    config.train.dtype = 'float16'
    with pytest.raises(UserError, match=r"config\.train\.dtype='float16': must be 'float32' "
                                        r"or 'bfloat16'"):
        config_check.validate(config)
