"""The PudNet hypernetwork H_θ (paper §III): dataset sketch → AHRU → per-layer generators.

`PudNet.generate(sketch)` returns a pytree with exactly the structure and shapes of the
target's `params`, so `target.apply` takes it unchanged:
- generated leaves: every conv kernel of the target (one weight generator per layer);
- shared learned leaves: everything else (BatchNorm scale and bias), ordinary
  parameters of the hypernetwork, the same for every dataset, as in the authors' code.
What a task trains beside it (classification's full-class head and τ) is the task's
(`pudnet_jax/tasks/`), not the hypernetwork's.
"""

from __future__ import annotations

import collections
import math
from typing import Callable, Optional, Sequence

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp

from pudnet_jax.targets import TargetSpec, init_shared_leaf, target_spec


ENCODER_NORMS = ('batch', 'layer', 'none')
SET_POOLINGS = ('mean', 'mean_sq')


class SketchEncoder(nn.Module):
    """T_φ: three conv → LeakyReLU → norm blocks and a projection to an m-vector.

    `norm`: 'batch' (the paper's BatchNorm: in training the E episodes of a step share
    batch statistics, inference uses running averages), 'layer' (LayerNorm: the same
    computation per image in training and inference) or 'none'. `pooling='mean_sq'`
    returns each image's (f, f²), 2m values, so that the sketch (their mean, still a
    streaming mean) holds the first and second moments of the features.
    """
    sketch_dim: int = 256
    features: Sequence[int] = (16, 32, 32)
    kernel_size: int = 5
    norm: str = 'batch'
    pooling: str = 'mean'

    @nn.compact
    def __call__(self, x, train: bool = False):
        k = self.kernel_size
        for i, f in enumerate(self.features):
            x = nn.Conv(f, (k, k), strides=(2, 2), name=f'conv{i}')(x)
            x = nn.leaky_relu(x, negative_slope=0.2)
            if self.norm == 'batch':
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name=f'bn{i}')(x)
            elif self.norm == 'layer':
                x = nn.LayerNorm(name=f'ln{i}')(x)
        x = x.reshape(x.shape[0], -1)
        x = nn.Dense(self.sketch_dim, name='project')(x)
        if self.pooling == 'mean_sq':
            x = jnp.concatenate([x, jnp.square(x)], axis=-1)
        return x


def dataset_sketch(features: jax.Array, labels: Optional[jax.Array] = None,
                   num_classes: Optional[int] = None) -> jax.Array:
    """Eq. 3: the mean of per-image features. With labels, the class-balanced variant
    (§III-C): the mean of the per-class centroids, so head classes don't dominate."""
    if labels is None:
        return jnp.mean(features, axis=0)
    onehot = jax.nn.one_hot(labels, num_classes, dtype=features.dtype)      # (n, K)
    counts = onehot.sum(0)
    centroids = (onehot.T @ features) / jnp.maximum(counts, 1.0)[:, None]
    present = (counts > 0).astype(features.dtype)
    return (present @ centroids) / jnp.maximum(present.sum(), 1.0)


class AHRUCell(nn.Module):
    """One step of the Adaptive Hyper Recurrent Unit, with exactly the paper's equations:

        r_t = σ(W_r [d_{t-1}, a_{t-1}])
        z_t = σ(W_z [d_{t-1}, a_{t-1}])
        d~_t = tanh(W_h [r_t * d_{t-1}, a_{t-1}])
        d_t = (1 - z_t) * d_{t-1} + z_t * d~_t
        a_t = σ(W_o d_t)

    Not a stock GRU: the input is the previous layer's representation a_{t-1}, and the
    output passes through W_o. The W are bias-free, as written.
    """

    @nn.compact
    def __call__(self, carry, _):
        d, a = carry
        m = d.shape[-1]
        dense = lambda name: nn.Dense(m, use_bias=False, name=name)
        da = jnp.concatenate([d, a], axis=-1)
        r = nn.sigmoid(dense('W_r')(da))
        z = nn.sigmoid(dense('W_z')(da))
        d_tilde = jnp.tanh(dense('W_h')(jnp.concatenate([r * d, a], axis=-1)))
        d = (1.0 - z) * d + z * d_tilde
        a = nn.sigmoid(dense('W_o')(d))
        return (d, a), a


class AHRU(nn.Module):
    """One AHRU cell scanned over the target's T layers; d_0 = a_0 = sketch.

    Returns the context-aware layer embeddings a_1..a_T, shape (T, m).
    """
    num_layers: int

    @nn.compact
    def __call__(self, sketch):
        scan = nn.scan(AHRUCell, variable_broadcast='params', split_rngs={'params': False},
                       length=self.num_layers)
        _, a = scan(name='cell')((sketch, sketch), None)
        return a


class WeightGenerator(nn.Module):
    """g_ψt (eq. 6): Linear m → p·k², reshape (k², p), 1×1 conv p → hidden, activation,
    1×1 conv hidden → C_in·C_out, reshape to the Flax kernel (kh, kw, C_in, C_out).

    A 1×1 convolution over the k² kernel positions is a Dense on the channel axis. The
    last layer is initialised so fresh kernels have He scale (std ≈ √(2 / fan_in)); its
    outputs *are* the kernel, unscaled, so an Adam step moves a generated kernel by as
    much, relative to its size, as it would move a directly trained one. (A fixed √(2 /
    fan_in) multiplier on O(1) outputs made kernels learn ~17x slower in relative terms.)
    """
    kernel_shape: tuple[int, ...]
    p: int = 8
    hidden: int = 16
    residual: bool = False
    delta_scale: float = 1.0   # residual: kernel = base + delta_scale · generated delta
    dtype: str = 'float32'     # the matmuls' compute dtype; weights and kernels float32

    @nn.compact
    def __call__(self, embedding):
        *spatial, c_in, c_out = self.kernel_shape
        k2 = math.prod(spatial)
        w = nn.Dense(self.p * k2, dtype=self.dtype, name='embed')(embedding).reshape(k2, self.p)
        w = nn.gelu(nn.Dense(self.hidden, dtype=self.dtype, name='conv1x1_a')(w))
        # residual: a learned base kernel (Flax's default conv init) plus a generated
        # delta that starts at a tenth of that scale, so the untrained hypernetwork
        # generates (about) the untrained target.
        gain = 0.01 if self.residual else 1.0
        he = nn.initializers.variance_scaling(gain * 2.0 / (k2 * c_in), 'fan_in', 'normal')
        w = nn.Dense(c_in * c_out, kernel_init=he, dtype=self.dtype, name='conv1x1_b')(w)
        w = w.astype(jnp.float32).reshape(self.kernel_shape)
        if self.residual:
            base = self.param('base_kernel', nn.initializers.lecun_normal(), self.kernel_shape)
            w = base + self.delta_scale * w     # λ 1: exactly base + w
        return w


def _shape_key(shape: Sequence[int]) -> str:
    return 'x'.join(str(d) for d in shape)


def layer_groups(spec: TargetSpec) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]:
    """((kernel shape, forward indices of the layers with that shape), ...): each group
    is one vmapped `WeightGenerator`, its weights stacked in this order."""
    groups = collections.OrderedDict()
    for t, (_, shape) in enumerate(spec.generated):
        groups.setdefault(shape, []).append(t)
    return tuple((shape, tuple(ts)) for shape, ts in groups.items())


def with_base(spec: TargetSpec, params: dict, target_params: dict) -> dict:
    """The hypernetwork's `params` with residual generation's base kernels and the
    target's shared leaves (BatchNorm scale and bias) set to those of a target network
    (`target_params`, the target's own `params` tree): the network the hypernetwork then
    generates is that network plus the generated deltas (`model.base_init`)."""
    flat = flax.traverse_util.flatten_dict(dict(target_params))
    out = dict(params)
    for shape, layer_ids in layer_groups(spec):
        key = 'generators_' + _shape_key(shape)
        if 'base_kernel' not in out.get(key, {}):
            raise ValueError('with_base needs residual generation (model.residual=True): '
                             f'{key} has no base_kernel.')
        base = jnp.stack([jnp.asarray(flat[spec.generated[t][0]], jnp.float32)
                          for t in layer_ids])
        if base.shape != out[key]['base_kernel'].shape:
            raise ValueError(f'with_base: target kernels of {key} have shape {base.shape}, '
                             f'the base {out[key]["base_kernel"].shape}.')
        out[key] = {**out[key], 'base_kernel': base}
    out['target_shared'] = {'/'.join(p): jnp.asarray(flat[p], jnp.float32)
                            for p, _ in spec.shared}
    return out


def is_base_leaf(path: Sequence[str]) -> bool:
    """A leaf that `with_base` sets and `train.freeze_base` keeps fixed: a generator's
    base kernel or a shared target leaf."""
    return path[0] == 'target_shared' or (path[0].startswith('generators_')
                                          and path[-1] == 'base_kernel')


class PudNet(nn.Module):
    """H_θ: `encode` (the sketch encoder T_φ) and `generate` (sketch → target params)."""
    spec: TargetSpec
    sketch_dim: int = 256
    sketch_features: tuple[int, ...] = (16, 32, 32)
    generator_p: int = 8
    generator_hidden: int = 16
    eta: float = 0.5
    use_ahru: bool = True
    encoder_norm: str = 'batch'
    set_pooling: str = 'mean'
    residual: bool = False
    film: bool = False
    # residual: each kernel = base + delta_scale · the generated delta (1: as trained;
    # 0: the base network alone). Changes no parameter. `make_pudnet` sets it from
    # `config.eval.delta_scale`, a prediction setting: training uses 1 (`train`).
    delta_scale: float = 1.0

    def setup(self):
        self.encoder = SketchEncoder(self.sketch_dim, self.sketch_features,
                                     norm=self.encoder_norm, pooling=self.set_pooling)
        if self.set_pooling == 'mean_sq':   # (mean, second moment) → an m-vector
            self.pool_project = nn.Dense(self.sketch_dim, name='pool_project')
        self.ahru = AHRU(len(self.spec.generated))
        # Layers of identical kernel shape run as one vmapped computation; each layer
        # still has its own generator weights (stacked along the leading axis).
        self._groups = layer_groups(self.spec)
        self.generators = {
            _shape_key(shape): nn.vmap(WeightGenerator, variable_axes={'params': 0},
                                       split_rngs={'params': True})(
                shape, self.generator_p, self.generator_hidden, self.residual,
                self.delta_scale, self.spec.dtype)
            for shape, _ in self._groups}
        self.shared = self.param('target_shared', lambda _: {
            '/'.join(p): init_shared_leaf(p, s) for p, s in self.spec.shared})
        if self.film:
            # FiLM (as CNAPs): per dataset, BatchNorm scale ·(1 + Δγ) and bias + Δβ,
            # Δ a zero-initialised linear map of the sketch, one per shared leaf.
            self.film_maps = {'/'.join(p): nn.Dense(math.prod(s), kernel_init=nn.initializers.zeros,
                                                    name='film_' + '_'.join(p))
                              for p, s in self.spec.shared}

    def __call__(self, images, train: bool = False):
        """Initialisation path: touches every submodule."""
        return self.generate(dataset_sketch(self.encode(images, train)))

    def encode(self, images, train: bool = False):
        """Per-image features T_φ(x); the sketch is their (streaming) mean."""
        return self.encoder(images, train)

    def layer_embeddings(self, sketch):
        """â_t = (1-η) a_t + η s for every target layer (eq. 5), shape (T, m)."""
        num_layers = len(self.spec.generated)
        sketch = self.sketch_vector(sketch)
        if not self.use_ahru:   # ablation: every generator sees the plain sketch
            return jnp.broadcast_to(sketch, (num_layers, sketch.shape[-1]))
        a = self.ahru(sketch)
        return (1.0 - self.eta) * a + self.eta * sketch

    def generate(self, sketch):
        """The target's full `params` tree for the dataset with this sketch."""
        emb = self.layer_embeddings(sketch)
        kernels: list = [None] * len(self.spec.generated)
        for shape, layer_ids in self._groups:
            out = self.generators[_shape_key(shape)](emb[jnp.array(layer_ids)])
            for i, t in enumerate(layer_ids):
                kernels[t] = out[i]
        shared = dict(self.shared)
        if self.film:
            s = self.sketch_vector(sketch)
            for k, v in shared.items():
                delta = self.film_maps[k](s).reshape(v.shape)
                shared[k] = v * (1.0 + delta) if k.endswith('scale') else v + delta
        shared = {tuple(k.split('/')): v for k, v in shared.items()}
        return self.spec.assemble_params(kernels, shared)

    def sketch_vector(self, sketch):
        """The m-vector the AHRU and the generators read: the sketch itself, or with
        `set_pooling='mean_sq'` a learned projection of its (mean, second moment)."""
        if self.set_pooling == 'mean_sq':
            return self.pool_project(sketch)
        return sketch


def make_pudnet(config, spec: TargetSpec) -> PudNet:
    m = config.model
    return PudNet(spec=spec, sketch_dim=m.sketch_dim, sketch_features=tuple(m.sketch_features),
                  generator_p=m.generator_p, generator_hidden=m.generator_hidden,
                  eta=m.eta, use_ahru=m.use_ahru, encoder_norm=m.get('encoder_norm', 'batch'),
                  set_pooling=m.get('set_pooling', 'mean'), residual=m.get('residual', False),
                  film=m.get('film', False), delta_scale=float(config.eval.get('delta_scale', 1.0)))


def streaming_sketch(encode: Callable[[jax.Array], jax.Array], images, chunk_size: int):
    """The sketch of a dataset of any size, as a running sum over fixed-size chunks.

    `encode` maps a (chunk_size, H, W, C) batch to features (inference mode, so each
    image's feature is independent of its batch). The last chunk is zero-padded and
    masked, so every call has one shape and compiles once. Memory is bounded by one chunk.
    """
    n = images.shape[0]
    if n == 0:
        raise ValueError('Cannot sketch an empty dataset.')
    total = None
    for start in range(0, n, chunk_size):
        chunk = images[start:start + chunk_size]
        valid = chunk.shape[0]
        if valid < chunk_size:
            pad = jnp.zeros((chunk_size - valid,) + tuple(chunk.shape[1:]), chunk.dtype)
            chunk = jnp.concatenate([jnp.asarray(chunk), pad])
        feats = encode(chunk)
        mask = (jnp.arange(chunk_size) < valid).astype(feats.dtype)
        part = mask @ feats
        total = part if total is None else total + part
    return total / n


def build_model(config) -> tuple[PudNet, TargetSpec]:
    """The hypernetwork of a config and the spec of its target."""
    image_shape = (config.data.image_size, config.data.image_size, config.data.channels)
    spec = target_spec(config.target.name, image_shape, config.target.width,
                       config.train.get('dtype', 'float32'))
    return make_pudnet(config, spec), spec


def init_variables(model: PudNet, spec: TargetSpec, seed: int) -> dict:
    """The hypernetwork's initial {'params', 'batch_stats'} (without any task's
    parameters: `tasks.init_variables` adds them)."""
    images = jnp.zeros((2,) + spec.image_shape, jnp.float32)
    variables = model.init(jax.random.PRNGKey(seed), images, train=False)
    return {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}
