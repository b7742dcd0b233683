"""Data-parallel meta-training on a device mesh (`config.train.data_parallel`).

The E episodes of a step (`config.train.episodes_per_step`, global: the sum over all
devices) are split along the `data` axis of a one-axis `jax.sharding.Mesh`, in contiguous
blocks of E / D episodes per device; the hypernetwork's parameters, its BatchNorm
statistics and the optimizer state are replicated. The train step is the same function,
jitted with these shardings: XLA inserts the all-reduces (the gradient mean over episodes,
the sketch encoder's BatchNorm batch statistics over all support sets), so a step on D
devices computes what it computes on one, up to the order of float additions.

`data_parallel` = 1 (the default) builds no mesh: the step is jitted exactly as before.
0 means every device of every process (the multi-host setting: start one process per host
with `--distributed`, see `initialize_distributed`).
"""

from __future__ import annotations

import numpy as np

from pudnet_jax.errors import UserError

AXIS = 'data'


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """`jax.distributed.initialize` (arguments None: detected from Slurm / Open MPI / TPU
    environments), called by the command line's `--distributed` before any computation.
    Every process then runs the same program on its own local devices; the workdir (on a
    file system all hosts share) is locked per process (`files.set_process_index`)."""
    import jax
    from pudnet_jax import files
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
    files.set_process_index(jax.process_index())


def data_parallel_devices(config) -> int:
    """D, the size of the `data` axis, from `config.train.data_parallel` (0: all devices),
    checked against the devices there are and against episodes_per_step."""
    import jax
    t = config.train
    requested = t.get('data_parallel', 1)
    count = jax.device_count()
    devices = count if requested == 0 else requested
    if devices > count:
        raise UserError(f'config.train.data_parallel={requested}: only {count} device(s) '
                        f'are visible ({jax.default_backend()}); use at most {count}, or 0 '
                        f'for all of them.')
    if t.episodes_per_step % devices:
        raise UserError(f'config.train.data_parallel={requested}: '
                        f'config.train.episodes_per_step={t.episodes_per_step} (global) must '
                        f'be a multiple of the {devices} devices of the mesh.')
    if jax.process_count() > 1 and devices != count:
        raise UserError(f'config.train.data_parallel={requested}: with several processes '
                        f'({jax.process_count()}) the mesh must span all {count} devices '
                        f'(use 0).')
    return devices


def make_mesh(devices: int):
    """A one-axis mesh (`data`) over the first `devices` devices (all of them in order,
    every process's, when `devices` = jax.device_count())."""
    import jax
    return jax.sharding.Mesh(np.asarray(jax.devices()[:devices]), (AXIS,))


def replicated(mesh):
    import jax
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def along_data(mesh):
    """Leading axis split over the devices of the `data` axis."""
    import jax
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(AXIS))


def replicate(tree, mesh):
    """A pytree (the train state) with every array replicated on the mesh."""
    import jax
    return jax.device_put(tree, replicated(mesh))


def shard_episodes(batch, mesh):
    """A host batch (NumPy leaves, leading axis E, the same in every process: the sampler is
    seeded by the step) as global arrays split along `data`: each process places only the
    blocks of its own devices."""
    import jax
    sharding = along_data(mesh)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
    return jax.tree.map(put, batch)
