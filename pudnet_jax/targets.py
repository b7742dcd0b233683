"""Target networks Ω whose parameters PudNet predicts.

Ordinary Flax Linen modules: `target.apply({'params': p, 'batch_stats': b}, x,
train=False)` returns one feature vector per image. Every convolution is followed by
BatchNorm, so convolutions carry no bias; the conv kernels are what the hypernetwork
generates. `TargetSpec` gathers what the hypernetwork needs to know about a target: the
parameter template, the kernels in forward order and the feature size.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

# BatchNorm momentum 0 makes `train=True` store the exact statistics of the batch it
# sees, which is how we compute BatchNorm statistics for a predicted network from the
# dataset it was predicted for.
DEFAULT_BN_MOMENTUM = 0.9


# Compute dtypes of the target's forward pass (`config.train.dtype`): parameters and
# BatchNorm statistics stay float32 (Flax reduces the statistics in float32), features
# are returned as float32 for the losses.
DTYPES = ('float32', 'bfloat16')


def _batch_norm(train: bool, momentum: float, name: str, dtype=jnp.float32) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=1e-5,
                        dtype=dtype, name=name)


def max_pool_2x2(x):
    """2x2 max-pool, stride 2, VALID (as `nn.max_pool(x, (2, 2), (2, 2))`), written as a
    reshape and a max: same values and gradients, but its gradient avoids XLA's
    select-and-scatter, which on CPU took 7x longer (64×28×28×64: 124 ms vs 17 ms)."""
    n, h, w, c = x.shape
    x = x[:, :h // 2 * 2, :w // 2 * 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class ConvNet3(nn.Module):
    """Three conv3x3 → BatchNorm → ReLU → max-pool blocks, flattened (paper's ConvNet-3)."""
    width: int = 64
    bn_momentum: float = DEFAULT_BN_MOMENTUM
    dtype: str = 'float32'

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i in range(3):
            x = nn.Conv(self.width, (3, 3), use_bias=False, dtype=self.dtype,
                        name=f'conv{i}')(x)
            x = _batch_norm(train, self.bn_momentum, f'bn{i}', self.dtype)(x)
            x = nn.relu(x)
            x = max_pool_2x2(x)
        return x.reshape(x.shape[0], -1).astype(jnp.float32)


class BasicBlock(nn.Module):
    filters: int
    strides: int
    bn_momentum: float
    dtype: str = 'float32'

    @nn.compact
    def __call__(self, x, train: bool):
        residual = x
        y = nn.Conv(self.filters, (3, 3), (self.strides, self.strides), use_bias=False,
                    dtype=self.dtype, name='conv1')(x)
        y = nn.relu(_batch_norm(train, self.bn_momentum, 'bn1', self.dtype)(y))
        y = nn.Conv(self.filters, (3, 3), use_bias=False, dtype=self.dtype, name='conv2')(y)
        y = _batch_norm(train, self.bn_momentum, 'bn2', self.dtype)(y)
        if residual.shape != y.shape:
            residual = nn.Conv(self.filters, (1, 1), (self.strides, self.strides),
                               use_bias=False, dtype=self.dtype, name='shortcut_conv')(residual)
            residual = _batch_norm(train, self.bn_momentum, 'shortcut_bn', self.dtype)(residual)
        return nn.relu(residual + y)


class ResNet(nn.Module):
    """ResNet with basic blocks and a small-image stem (3x3 conv, no max-pool) for 28-64 px."""
    stage_sizes: Sequence[int]
    width: int = 64
    bn_momentum: float = DEFAULT_BN_MOMENTUM
    dtype: str = 'float32'

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.width, (3, 3), use_bias=False, dtype=self.dtype, name='stem_conv')(x)
        x = nn.relu(_batch_norm(train, self.bn_momentum, 'stem_bn', self.dtype)(x))
        for i, num_blocks in enumerate(self.stage_sizes):
            for j in range(num_blocks):
                strides = 2 if i > 0 and j == 0 else 1
                x = BasicBlock(self.width * 2**i, strides, self.bn_momentum, self.dtype,
                               name=f'stage{i + 1}_block{j}')(x, train)
        return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


def avg_pool_2x2(x):
    """2x2 average pool, stride 2 (H and W even), as a reshape and a mean."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def upsample_2x(x):
    """Nearest-neighbour x2 upsampling."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class N2VUNet(nn.Module):
    """The UNet of the authors' denoising code (DENOISING.md §1.1): `depth` levels of two
    3x3 conv → BatchNorm → ReLU (width·2^i channels), 2x2 average pools, a bottleneck
    width·2^(depth-1) → width·2^depth → width·2^(depth-1), and a decoder that upsamples
    (nearest x2), concatenates [encoder feature, upsampled] and runs two convs per level.
    4·depth + 2 generated kernels, in forward order. Where it differs from their code:
    the decoder's stride-1 transposed convolutions are written as convolutions (the same
    function of a flipped, transposed kernel, generated either way), and the last layer
    is linear (a generated kernel and a shared learned bias; theirs ends in BN + ReLU, so
    its output can never be negative). Returns an image of the input's shape; H and W
    must be multiples of 2^depth (`target_spec` checks)."""
    width: int = 64
    depth: int = 4
    bn_momentum: float = DEFAULT_BN_MOMENTUM
    dtype: str = 'float32'

    @nn.compact
    def __call__(self, x, train: bool = False):
        out_channels = x.shape[-1]

        def block(y, features, name):
            y = nn.Conv(features, (3, 3), use_bias=False, dtype=self.dtype, name=name)(y)
            return nn.relu(_batch_norm(train, self.bn_momentum, name + '_bn', self.dtype)(y))

        skips = []
        for i in range(self.depth):
            f = self.width * 2**i
            x = block(block(x, f, f'enc{i}_conv0'), f, f'enc{i}_conv1')
            skips.append(x)
            x = avg_pool_2x2(x)
        x = block(x, self.width * 2**self.depth, 'mid_conv0')
        x = block(x, self.width * 2**(self.depth - 1), 'mid_conv1')
        for i in reversed(range(self.depth)):
            x = jnp.concatenate([skips[i], upsample_2x(x)], axis=-1)
            x = block(x, self.width * 2**i, f'dec{i}_conv0')
            if i > 0:
                x = block(x, self.width * 2**(i - 1), f'dec{i}_conv1')
        x = nn.Conv(out_channels, (3, 3), use_bias=True, dtype=self.dtype, name='out_conv')(x)
        return x.astype(jnp.float32)


# Image-to-image targets (`TargetSpec.output == 'image'`) and the multiple of 2 their
# height and width must be.
IMAGE_TARGETS = {'unet_n2v': 2**4, 'unet_n2v_3': 2**3, 'unet_n2v_small': 2**2}

TARGETS = {
    'convnet3': lambda width, momentum, dtype: ConvNet3(width=width, bn_momentum=momentum,
                                                        dtype=dtype),
    'resnet18': lambda width, momentum, dtype: ResNet((2, 2, 2, 2), width=width,
                                                      bn_momentum=momentum, dtype=dtype),
    'resnet34': lambda width, momentum, dtype: ResNet((3, 4, 6, 3), width=width,
                                                      bn_momentum=momentum, dtype=dtype),
    # The authors' denoising UNet (depth 4), and depth-3 / depth-2 ones for CPU configs
    # and tests.
    'unet_n2v': lambda width, momentum, dtype: N2VUNet(width, 4, momentum, dtype),
    'unet_n2v_3': lambda width, momentum, dtype: N2VUNet(width, 3, momentum, dtype),
    'unet_n2v_small': lambda width, momentum, dtype: N2VUNet(width, 2, momentum, dtype),
}


def make_target(name: str, width: int = 64, bn_momentum: float = DEFAULT_BN_MOMENTUM,
                dtype: str = 'float32') -> nn.Module:
    if name not in TARGETS:
        raise ValueError(f'Unknown target {name!r}; known targets: {sorted(TARGETS)}.')
    if dtype not in DTYPES:
        raise ValueError(f'Unknown compute dtype {dtype!r}; known: {DTYPES}.')
    return TARGETS[name](width, bn_momentum, dtype)


Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    """Static facts about a target architecture for one input shape (hashable)."""
    name: str
    width: int
    image_shape: tuple[int, int, int]          # (H, W, C)
    generated: tuple[tuple[Path, tuple[int, ...]], ...]   # kernels, in forward order
    shared: tuple[tuple[Path, tuple[int, ...]], ...]      # other params (BatchNorm scale/bias)
    batch_stats: tuple[tuple[Path, tuple[int, ...]], ...]
    feature_dim: int          # features per image (an image target: its channels)
    dtype: str = 'float32'    # the forward pass's compute dtype (parameters: float32)
    output: str = 'features'  # 'features' (one vector per image) or 'image' (image to image)

    def module(self, bn_momentum: float = DEFAULT_BN_MOMENTUM) -> nn.Module:
        return make_target(self.name, self.width, bn_momentum, self.dtype)

    @property
    def stats_module(self) -> nn.Module:
        """The target whose `train=True` pass records the batch's exact BN statistics."""
        return self.module(bn_momentum=0.0)

    def zero_batch_stats(self) -> dict:
        return traverse_util.unflatten_dict(
            {p: jnp.zeros(s, jnp.float32) for p, s in self.batch_stats})

    def assemble_params(self, generated: Sequence[jax.Array], shared: dict) -> dict:
        """Builds the target's `params` tree from generated kernels (forward order) and
        the flat dict of shared leaves."""
        flat = {path: w for (path, _), w in zip(self.generated, generated)}
        flat.update(shared)
        return traverse_util.unflatten_dict(flat)


# The modules whose `kernel` the hypernetwork generates. Any other module with a `kernel`
# parameter makes `target_spec` raise: it would otherwise become a shared leaf,
# initialised to zero and learned once for every dataset, without anyone noticing.
GENERATED_MODULES = (nn.Conv, nn.ConvTranspose, nn.Dense)


def _forward_order_of_kernels(module: nn.Module, x) -> list[Path]:
    """Paths of the generated modules (`GENERATED_MODULES`) in the order the forward pass
    calls them.

    Flattening a params dict sorts its keys (`conv10` before `conv2`), so the order is
    taken from the calls themselves.
    """
    order: list[Path] = []

    def record(next_fun, args, kwargs, context):
        mod = context.module
        if context.method_name == '__call__' and type(mod) in GENERATED_MODULES:
            path = tuple(mod.path)
            if path not in order:
                order.append(path)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x, train=False))
    return order


def target_spec(name: str, image_shape: Sequence[int], width: int = 64,
                dtype: str = 'float32') -> TargetSpec:
    image_shape = tuple(int(d) for d in image_shape)
    if len(image_shape) != 3 or image_shape[-1] not in (1, 3):
        raise ValueError(f'Target {name!r} takes images of shape (H, W, C) with C in (1, 3); '
                         f'got image_shape={image_shape}.')
    multiple = IMAGE_TARGETS.get(name)
    if multiple and (image_shape[0] % multiple or image_shape[1] % multiple):
        raise ValueError(f'Target {name!r} takes images whose height and width are multiples '
                         f'of {multiple}; got image_shape={image_shape}.')
    module = make_target(name, width)
    x = jnp.zeros((2,) + image_shape, jnp.float32)
    variables = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x, train=False))
    flat_params = traverse_util.flatten_dict(variables['params'])
    order = _forward_order_of_kernels(module, x)
    generated = tuple((p + ('kernel',), tuple(flat_params[p + ('kernel',)].shape)) for p in order)
    generated_paths = {p for p, _ in generated}
    stray = [p for p in flat_params if p[-1] == 'kernel' and p not in generated_paths]
    if stray:
        raise ValueError(
            f'Target {name!r}: the kernel {"/".join(stray[0])} belongs to a module the '
            f'hypernetwork does not generate (generated: '
            f'{", ".join(m.__name__ for m in GENERATED_MODULES)}); it would be a shared leaf.')
    shared = tuple((p, tuple(v.shape)) for p, v in flat_params.items() if p not in generated_paths)
    stats = tuple((p, tuple(v.shape))
                  for p, v in traverse_util.flatten_dict(variables['batch_stats']).items())
    features = jax.eval_shape(lambda v: module.apply(v, x, train=False), variables)
    if dtype not in DTYPES:
        raise ValueError(f'Unknown compute dtype {dtype!r}; known: {DTYPES}.')
    return TargetSpec(name=name, width=width, image_shape=image_shape, generated=generated,
                      shared=shared, batch_stats=stats, feature_dim=int(features.shape[-1]),
                      dtype=dtype, output='image' if features.ndim == 4 else 'features')


def init_shared_leaf(path: Path, shape: Sequence[int]) -> jax.Array:
    """Initial value of a shared (not generated) target leaf: BatchNorm scale 1, others 0."""
    return jnp.ones(shape) if path[-1] == 'scale' else jnp.zeros(shape)


def apply_with_dataset_stats(spec: TargetSpec, params: dict, support, query=None):
    """Runs the target with BatchNorm statistics computed from `support`.

    Returns (support features, query features or None, batch_stats). The support pass
    normalises with the support's own batch statistics; the query pass uses those same
    statistics in inference mode, exactly as the saved predicted network would.
    """
    feats_s, mutated = spec.stats_module.apply(
        {'params': params, 'batch_stats': spec.zero_batch_stats()}, support, train=True,
        mutable=['batch_stats'])
    stats = mutated['batch_stats']
    feats_q = None
    if query is not None:
        feats_q = spec.module().apply({'params': params, 'batch_stats': stats}, query,
                                      train=False)
    return feats_s, feats_q, stats



def random_init_params(spec: TargetSpec, seed: int) -> dict:
    """The target's `params` at Flax's default initialisation (PRNG key `seed`)."""
    return _jitted_init(spec)(jax.random.PRNGKey(seed))


@functools.lru_cache(maxsize=None)
def _jitted_init(spec: TargetSpec):
    # One compiled program per target (bitwise the eager init's values; 1.5-1.8x faster
    # on first use than op-by-op, and free on later seeds: controls draw several).
    x = jnp.zeros((2,) + spec.image_shape)
    return jax.jit(lambda key: spec.module().init(key, x)['params'])
