"""How the episodes of each optimizer step reach the train step (`config.train.input`).

- 'device': the training pool is put on the device once, as one uint8 array; each step
  only its `EpisodeIndices` (a few kilobytes: positions in that array, labels, classes)
  go from the host, and the images are gathered and normalised inside the jitted step, so
  an accelerator's step never waits for the host to copy and normalise images.
- 'host': the sampler gathers and normalises the images on the host (float32, four times
  the uint8 bytes) and they are put on the device.
Either way the next `config.train.prefetch` steps' inputs are prepared (and put on the
device) in a background thread while the device runs the current step.
- 'auto' (the default): 'device' when the pool's uint8 bytes fit in a quarter of the
  device's memory (`device_pool_budget`), else 'host'.

Both give bitwise the same episodes for a step (the same draws of the sampler seeded by
(seed, step), the same 256-entry normalisation table), so the choice can change between
runs on one workdir and resumption stays exact. `python -m benchmarks.input_pipeline`
measures both against the step.
"""

from __future__ import annotations

import collections
import concurrent.futures

import numpy as np

from pudnet_jax import data as data_lib
from pudnet_jax import mesh as mesh_lib

INPUTS = ('auto', 'device', 'host')
# The device budget where the backend reports no memory limit (the CPU backend, whose
# "device memory" is the host's): pools up to this size go on the device.
DEFAULT_BUDGET_BYTES = 2 << 30
GROUP_ORDER_SEED = 7_000_001      # with config.train.num_groups: the order of each pass


def training_indices(sampler: data_lib.EpisodeSampler, step: int, t) -> data_lib.EpisodeIndices:
    """The episodes of one optimizer step: fresh ones every step (step s draws with seed
    (seed, s)), or, with `config.train.num_groups` = G, episodes taken from a fixed set of
    G training groups (group g is always the same episode), every group once per pass in
    a seeded order that changes from pass to pass: the paper's number of training groups
    (Fig. 5)."""
    groups = t.get('num_groups')
    if not groups:
        return sampler.sample_indices(step, t.episodes_per_step)
    positions = range((step - 1) * t.episodes_per_step, step * t.episodes_per_step)
    order = lambda p: np.random.default_rng([sampler.seed, GROUP_ORDER_SEED, p]).permutation(groups)
    return sampler.group_indices([int(order(p // groups)[p % groups]) for p in positions])


def training_batch(sampler: data_lib.EpisodeSampler, step: int, t) -> data_lib.Episodes:
    """`training_indices`' episodes with their images (on the host)."""
    return sampler.episodes(training_indices(sampler, step, t))


def pool_bytes(sampler: data_lib.EpisodeSampler) -> int:
    return int(sum(sampler.pool[c].nbytes for c in sampler.classes))


def device_pool_budget() -> int:
    """A quarter of the first local device's memory limit, when the backend reports one."""
    import jax
    try:
        stats = jax.local_devices()[0].memory_stats() or {}
    except Exception:    # noqa: BLE001 (a backend without memory statistics)
        stats = {}
    limit = stats.get('bytes_limit')
    return int(limit) // 4 if limit else DEFAULT_BUDGET_BYTES


def resolve_input(mode: str, sampler: data_lib.EpisodeSampler) -> str:
    if mode not in INPUTS:
        raise ValueError(f'config.train.input must be one of {INPUTS}, got {mode!r}.')
    gathers = hasattr(sampler, 'flat_images')   # a task's sampler may draw on the host only
    if mode == 'device' and not gathers:
        raise ValueError(f"config.train.input='device' needs a sampler that gathers episodes "
                         f"from a pool on the device; {type(sampler).__name__} draws them on "
                         f"the host: use 'host' (or 'auto').")
    if mode == 'auto':
        return 'device' if gathers and pool_bytes(sampler) <= device_pool_budget() else 'host'
    return mode


class Feed:
    """`feed(step)` → the train step's arguments after the state, for the steps asked for
    in order from `first` to `last`: `make(step)` of each, run `prefetch` steps ahead in a
    background thread started by the first call (0: run when asked for), so that drawing
    the next step's input overlaps the device's step."""

    def __init__(self, make, on_device: bool, description: str, first: int, last: int,
                 prefetch: int):
        self.make, self.on_device = make, on_device
        self.first, self.last, self.prefetch = first, last, int(prefetch)
        self.description = description + (f', {self.prefetch} step(s) prepared ahead'
                                           if self.prefetch else '')
        self.next_submit = first
        self.pending = collections.deque()
        self.executor = None

    def _fill(self):
        if self.prefetch and self.executor is None:
            self.executor = concurrent.futures.ThreadPoolExecutor(1, 'episodes')
        while (self.prefetch and len(self.pending) < self.prefetch
               and self.next_submit <= self.last):
            self.pending.append((self.next_submit,
                                 self.executor.submit(self.make, self.next_submit)))
            self.next_submit += 1

    def __call__(self, step: int):
        self._fill()
        if not self.pending:
            return self.make(step)
        expected, future = self.pending.popleft()
        if expected != step:
            raise RuntimeError(f'Feed: step {step} asked for, {expected} prepared.')
        self._fill()
        return future.result()

    def close(self):
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)


def device_feed(sampler, t, mesh=None, first: int = 1, prefetch: int = 0) -> Feed:
    """config.train.input='device': (indices, the uint8 pool put on the device once)."""
    import jax
    images = sampler.flat_images()
    images = jax.device_put(images, mesh_lib.replicated(mesh) if mesh is not None else None)

    def make(step):
        indices = training_indices(sampler, step, t)
        put = (mesh_lib.shard_episodes(indices, mesh) if mesh is not None
               else jax.device_put(indices))
        return put, images
    return Feed(make, True, f'episodes gathered on the device from the '
                f'{images.nbytes / 1e6:.1f} MB uint8 pool put there once', first,
                t.num_train_steps, prefetch)


def host_feed(sampler, t, mesh=None, first: int = 1, prefetch: int = 0) -> Feed:
    """config.train.input='host': (episodes drawn and normalised on the host, then put on
    the device,)."""
    import jax

    def make(step):
        batch = training_batch(sampler, step, t)
        return (mesh_lib.shard_episodes(batch, mesh) if mesh is not None
                else jax.device_put(batch)),
    return Feed(make, False, 'episodes drawn on the host', first, t.num_train_steps, prefetch)


def make_feed(config, sampler: data_lib.EpisodeSampler, mesh=None, first: int = 1) -> Feed:
    """The feed of `config.train.input` for steps `first`..num_train_steps."""
    t = config.train
    make = device_feed if resolve_input(t.get('input', 'host'), sampler) == 'device' else host_feed
    return make(sampler, t, mesh, first, t.get('prefetch', 0))
