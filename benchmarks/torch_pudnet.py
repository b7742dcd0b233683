"""PudNet's meta-training steps (classification and denoising) in plain eager PyTorch,
for `benchmarks/vs_pytorch.py` (benchmark-only: the package never imports torch).

Written from the equations of `pudnet_jax` (hypernet, targets, losses, train), not from
any other code base: the same modules, shapes, episodes per step and losses, so that with
the JAX initial parameters copied in (`load_flax_variables`) a step computes the same loss
as `train.make_train_step`. PyTorch's own layout is used throughout (NCHW activations,
OIHW kernels, `nn.Linear` weights as (out, in)); the copy converts the Flax tree.

- Sketch encoder T_φ: three conv5x5/2 (XLA 'SAME' padding) → LeakyReLU(0.2) →
  BatchNorm blocks over all E support sets as one batch (training mode: the batch's
  statistics, running averages updated), flattened, projected to m; the sketch of an
  episode is the mean of its support features.
- AHRU: one bias-free cell scanned over the target's T layers, d_0 = a_0 = sketch, then
  â_t = (1-η) a_t + η s.
- Weight generators: per group of layers with one kernel shape, stacked weights (G, in,
  out): Linear m → p·k², reshape (k², p), Linear p → hidden, tanh-GELU (Flax's default),
  Linear hidden → C_in·C_out, reshaped (kh, kw, C_in, C_out) and permuted to OIHW.
- Target (ConvNet-3, ResNet-18 with a 3x3 stem, or the Noise2Void UNet of any depth), run
  with `F.conv2d` on the generated kernels; BatchNorm scale and bias (and the UNet's
  output bias) are shared learned parameters. Every BatchNorm
  normalises the support set with its own batch statistics, and the query set with those
  same statistics (kept in the autograd graph, as Flax's momentum-0 statistics are).
- Losses: L1 cosine-prototype cross-entropy with temperature τ, L2 the full-class head,
  L3 = KL(metric probabilities zero-padded ‖ full-head probabilities);
  λ1·L1 + L2 + λ3·L3 per episode, averaged over the E episodes; one Adam step.
- Denoising (`denoise_loss`, `make_denoise_train_step`): each group normalised by its own
  per-channel mean and (biased) standard deviation + 1e-6; the sketch is the encoder's
  mean over the normalised group; the UNet generated from it runs on the Noise2Void-masked
  group (BatchNorm statistics of that input) and the loss is the mean squared error at the
  masked pixels, averaged over the E groups. The mask is an input: which pixels are
  replaced and by which pixel (`source`, a flat index into the group), computed by the
  caller with `pudnet_jax.noise.n2v_mask` from the same keys as the JAX step.
- UNet (`unet_layout`, `unet_forward`): per level two conv3x3 → BN → ReLU, 2x2 average
  pool; bottleneck two blocks; decoder nearest x2 upsampling, concat [skip, up] on the
  channel axis, conv blocks; a linear conv3x3 with the shared bias last.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-5
GROUP_STD_EPS = 1e-6     # the denoising task's per-group normalisation (denoising.EPS)


def _same_padding(size: int, k: int, stride: int) -> tuple[int, int]:
    """XLA's 'SAME' padding (low, high) of one spatial axis: the extra pixel goes high."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def conv_same(x, weight, bias=None, stride: int = 1):
    """`F.conv2d` with Flax's default 'SAME' padding (asymmetric for stride 2)."""
    kh, kw = weight.shape[-2:]
    ph = _same_padding(x.shape[-2], kh, stride)
    pw = _same_padding(x.shape[-1], kw, stride)
    if ph[0] == ph[1] and pw[0] == pw[1]:
        return F.conv2d(x, weight, bias, stride, (ph[0], pw[0]))
    return F.conv2d(F.pad(x, (pw[0], pw[1], ph[0], ph[1])), weight, bias, stride)


# ----------------------------------------------------------------------------- targets

def convnet3_layout(in_channels: int, width: int):
    """(kernels in forward order as (name, (kh, kw, C_in, C_out)), BatchNorm (name, C),
    shared conv biases (name, C))."""
    convs = [(f'conv{i}/kernel', (3, 3, in_channels if i == 0 else width, width))
             for i in range(3)]
    return convs, [(f'bn{i}', width) for i in range(3)], []


def resnet_layout(in_channels: int, width: int, stage_sizes: Sequence[int] = (2, 2, 2, 2)):
    convs = [('stem_conv/kernel', (3, 3, in_channels, width))]
    bns = [('stem_bn', width)]
    c_in = width
    for i, blocks in enumerate(stage_sizes):
        c = width * 2 ** i
        for j in range(blocks):
            stride = 2 if i > 0 and j == 0 else 1
            name = f'stage{i + 1}_block{j}'
            convs += [(f'{name}/conv1/kernel', (3, 3, c_in, c)),
                      (f'{name}/conv2/kernel', (3, 3, c, c))]
            bns += [(f'{name}/bn1', c), (f'{name}/bn2', c)]
            if stride != 1 or c_in != c:     # the residual changes shape
                convs.append((f'{name}/shortcut_conv/kernel', (1, 1, c_in, c)))
                bns.append((f'{name}/shortcut_bn', c))
            c_in = c
    return convs, bns, []


def unet_layout(in_channels: int, width: int, depth: int):
    """The Noise2Void UNet (`targets.N2VUNet`) of `depth` levels: every conv but the last
    followed by BatchNorm (named after the conv + '_bn'); the last one's bias shared."""
    convs, bns = [], []
    c = in_channels

    def conv(name, features, bn=True):
        nonlocal c
        convs.append((f'{name}/kernel', (3, 3, c, features)))
        if bn:
            bns.append((f'{name}_bn', features))
        c = features

    skips = []
    for i in range(depth):
        conv(f'enc{i}_conv0', width * 2 ** i)
        conv(f'enc{i}_conv1', width * 2 ** i)
        skips.append(c)
    conv('mid_conv0', width * 2 ** depth)
    conv('mid_conv1', width * 2 ** (depth - 1))
    for i in reversed(range(depth)):
        c += skips[i]                       # concat [skip, upsampled]
        conv(f'dec{i}_conv0', width * 2 ** i)
        if i > 0:
            conv(f'dec{i}_conv1', width * 2 ** (i - 1))
    conv('out_conv', in_channels, bn=False)
    return convs, bns, [('out_conv', in_channels)]


class DatasetBatchNorm:
    """The target's BatchNorm: the support pass computes each layer's batch statistics
    (biased variance) and normalises with them; the query pass reuses them."""

    def __init__(self, shared: nn.ParameterDict):
        self.shared, self.stats, self.record = shared, {}, True

    def __call__(self, name: str, x):
        if self.record:
            var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
            self.stats[name] = (mean, var)
        mean, var = self.stats[name]
        key = name.replace('/', '__')
        mul = torch.rsqrt(var + BN_EPS) * self.shared[key + '__scale']
        return (x - mean[:, None, None]) * mul[:, None, None] \
            + self.shared[key + '__bias'][:, None, None]


def convnet3_forward(x, kernels: dict, bn: DatasetBatchNorm):
    for i in range(3):
        x = F.max_pool2d(F.relu(bn(f'bn{i}', conv_same(x, kernels[f'conv{i}/kernel']))), 2)
    return x.flatten(1)      # (N, C·H·W): the head's rows are permuted to match


def resnet_forward(x, kernels: dict, bn: DatasetBatchNorm, stage_sizes=(2, 2, 2, 2)):
    x = F.relu(bn('stem_bn', conv_same(x, kernels['stem_conv/kernel'])))
    for i, blocks in enumerate(stage_sizes):
        for j in range(blocks):
            stride = 2 if i > 0 and j == 0 else 1
            name = f'stage{i + 1}_block{j}'
            y = F.relu(bn(f'{name}/bn1', conv_same(x, kernels[f'{name}/conv1/kernel'], None,
                                                   stride)))
            y = bn(f'{name}/bn2', conv_same(y, kernels[f'{name}/conv2/kernel']))
            if f'{name}/shortcut_conv/kernel' in kernels:
                x = bn(f'{name}/shortcut_bn',
                       conv_same(x, kernels[f'{name}/shortcut_conv/kernel'], None, stride))
            x = F.relu(x + y)
    return x.mean(dim=(2, 3))


def unet_depth(kernels) -> int:
    """The UNet's depth, from the names of its kernels (`enc{i}_conv0/kernel`)."""
    return sum(1 for k in kernels if k.startswith('enc') and k.endswith('_conv0/kernel'))


def unet_forward(x, kernels: dict, bn: DatasetBatchNorm):
    """x (N, C, H, W) → the UNet's output image (N, C, H, W)."""
    def block(y, name):
        return F.relu(bn(f'{name}_bn', conv_same(y, kernels[f'{name}/kernel'])))

    depth = unet_depth(kernels)
    skips = []
    for i in range(depth):
        x = block(block(x, f'enc{i}_conv0'), f'enc{i}_conv1')
        skips.append(x)
        x = F.avg_pool2d(x, 2)
    x = block(block(x, 'mid_conv0'), 'mid_conv1')
    for i in reversed(range(depth)):
        x = torch.cat([skips[i], F.interpolate(x, scale_factor=2, mode='nearest')], dim=1)
        x = block(x, f'dec{i}_conv0')
        if i > 0:
            x = block(x, f'dec{i}_conv1')
    return conv_same(x, kernels['out_conv/kernel'], bn.shared['out_conv__bias'])


TARGETS = {'convnet3': (convnet3_layout, convnet3_forward),
           'resnet18': (resnet_layout, resnet_forward),
           'unet_n2v': (unet_layout, unet_forward),
           'unet_n2v_3': (unet_layout, unet_forward),
           'unet_n2v_small': (unet_layout, unet_forward)}


def _feature_dim(name: str, image_shape, width: int) -> int:
    h, w, _ = image_shape
    if name == 'convnet3':
        for _ in range(3):
            h, w = h // 2, w // 2
        return width * h * w
    return width * 8


# ----------------------------------------------------------------------------- hypernetwork

class SketchEncoder(nn.Module):
    def __init__(self, in_channels: int, image_size: int, features: Sequence[int],
                 sketch_dim: int, kernel_size: int = 5):
        super().__init__()
        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        c, s = in_channels, image_size
        for f in features:
            self.convs.append(nn.Conv2d(c, f, kernel_size, stride=2))
            # momentum 0.1 in PyTorch's convention is Flax's 0.9
            self.bns.append(nn.BatchNorm2d(f, eps=BN_EPS, momentum=0.1))
            c, s = f, -(-s // 2)
        self.project = nn.Linear(c * s * s, sketch_dim)

    def forward(self, x):
        for conv, bn in zip(self.convs, self.bns):
            x = bn(F.leaky_relu(conv_same(x, conv.weight, conv.bias, 2), 0.2))
        return self.project(x.flatten(1))


class AHRUCell(nn.Module):
    def __init__(self, m: int):
        super().__init__()
        self.W_r = nn.Linear(2 * m, m, bias=False)
        self.W_z = nn.Linear(2 * m, m, bias=False)
        self.W_h = nn.Linear(2 * m, m, bias=False)
        self.W_o = nn.Linear(m, m, bias=False)

    def forward(self, sketch, num_layers: int):
        d = a = sketch
        outs = []
        for _ in range(num_layers):
            da = torch.cat([d, a], -1)
            r = torch.sigmoid(self.W_r(da))
            z = torch.sigmoid(self.W_z(da))
            d_tilde = torch.tanh(self.W_h(torch.cat([r * d, a], -1)))
            d = (1 - z) * d + z * d_tilde
            a = torch.sigmoid(self.W_o(d))
            outs.append(a)
        return torch.stack(outs)          # (T, m)


class GeneratorGroup(nn.Module):
    """The weight generators of G layers of one kernel shape (kh, kw, C_in, C_out), each
    with its own weights, stacked as (G, in, out) and applied with batched matmuls."""

    def __init__(self, count: int, kernel_shape, m: int, p: int, hidden: int):
        super().__init__()
        kh, kw, c_in, c_out = kernel_shape
        self.kernel_shape, self.p = tuple(kernel_shape), p
        k2 = kh * kw
        self.k2 = k2

        def linear(fan_in, fan_out, std):
            return (nn.Parameter(torch.randn(count, fan_in, fan_out) * std),
                    nn.Parameter(torch.zeros(count, fan_out)))
        self.embed_w, self.embed_b = linear(m, p * k2, 1 / math.sqrt(m))
        self.a_w, self.a_b = linear(p, hidden, 1 / math.sqrt(p))
        # outputs of He scale for the kernel's fan-in, as the JAX initialisation
        self.b_w, self.b_b = linear(hidden, c_in * c_out, math.sqrt(2 / (k2 * c_in * hidden)))

    def forward(self, emb):                # (G, m) → (G, C_out, C_in, kh, kw)
        g = emb.shape[0]
        w = torch.baddbmm(self.embed_b[:, None], emb[:, None], self.embed_w)   # (G, 1, p·k²)
        w = w.reshape(g, self.k2, self.p)
        w = F.gelu(torch.baddbmm(self.a_b[:, None], w, self.a_w), approximate='tanh')
        w = torch.baddbmm(self.b_b[:, None], w, self.b_w)                      # (G, k², C_in·C_out)
        return w.reshape((g,) + self.kernel_shape).permute(0, 4, 3, 1, 2)


def shape_key(shape) -> str:
    return 'x'.join(str(d) for d in shape)


class TorchPudNet(nn.Module):
    """`num_train_classes=None`: no full-class head (the denoising task). `target_kwargs`:
    the layout's further arguments (the UNet's `depth`)."""

    def __init__(self, target: str, image_shape, width: int, num_train_classes: Optional[int],
                 sketch_dim: int, sketch_features: Sequence[int], generator_p: int,
                 generator_hidden: int, eta: float, temperature: float,
                 target_kwargs: Optional[dict] = None):
        super().__init__()
        h, w, c = image_shape
        layout, self._forward = TARGETS[target]
        self.convs, self.bn_layers, self.biases = layout(c, width, **(target_kwargs or {}))
        self.eta, self.temperature = eta, temperature
        self.encoder = SketchEncoder(c, h, sketch_features, sketch_dim)
        self.ahru = AHRUCell(sketch_dim)
        groups: dict = {}
        for t, (_, shape) in enumerate(self.convs):
            groups.setdefault(shape, []).append(t)
        self.groups = [(shape_key(s), ts) for s, ts in groups.items()]
        self.generators = nn.ModuleDict({
            shape_key(s): GeneratorGroup(len(ts), s, sketch_dim, generator_p, generator_hidden)
            for s, ts in groups.items()})
        self.shared = nn.ParameterDict()
        for name, ch in self.bn_layers:
            key = name.replace('/', '__')
            self.shared[key + '__scale'] = nn.Parameter(torch.ones(ch))
            self.shared[key + '__bias'] = nn.Parameter(torch.zeros(ch))
        for name, ch in self.biases:
            self.shared[name.replace('/', '__') + '__bias'] = nn.Parameter(torch.zeros(ch))
        self.head = None
        if num_train_classes is not None:
            self.feature_dim = _feature_dim(target, image_shape, width)
            self.head = nn.Linear(self.feature_dim, num_train_classes)

    def generate(self, sketch) -> dict:
        """{kernel name: OIHW kernel} for the dataset with this sketch."""
        a = self.ahru(sketch, len(self.convs))
        emb = (1 - self.eta) * a + self.eta * sketch
        kernels = {}
        for key, ts in self.groups:
            out = self.generators[key](emb[ts])
            for i, t in enumerate(ts):
                kernels[self.convs[t][0]] = out[i]
        return kernels

    def episode_loss(self, sketch, support, support_labels, query, query_labels, classes,
                     metric_weight: float, kl_weight: float):
        kernels = self.generate(sketch)
        bn = DatasetBatchNorm(self.shared)
        f_s = self._forward(support, kernels, bn)
        bn.record = False
        f_q = self._forward(query, kernels, bn)
        n = classes.shape[0]
        onehot = F.one_hot(support_labels, n).to(f_s.dtype)
        centroids = (onehot.T @ f_s) / onehot.sum(0).clamp_min(1.0)[:, None]
        f = f_q / f_q.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        u = centroids / centroids.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        logits = self.temperature * f @ u.T
        head_logits = self.head(f_q)
        l1 = F.cross_entropy(logits, query_labels)
        l2 = F.cross_entropy(head_logits, classes[query_labels])
        log_p_metric = F.log_softmax(logits, -1)
        log_p_full = F.log_softmax(head_logits, -1)[:, classes]
        l3 = (log_p_metric.exp() * (log_p_metric - log_p_full)).sum(-1).mean()
        return metric_weight * l1 + l2 + kl_weight * l3

    def loss(self, support, support_labels, query, query_labels, classes,
             metric_weight: float, kl_weight: float):
        """The step's loss: support (E, S, C, H, W), query (E, Q, C, H, W)."""
        e, s = support.shape[:2]
        feats = self.encoder(support.reshape((e * s,) + support.shape[2:]))
        sketches = feats.reshape(e, s, -1).mean(1)
        losses = [self.episode_loss(sketches[i], support[i], support_labels[i], query[i],
                                    query_labels[i], classes[i], metric_weight, kl_weight)
                  for i in range(e)]
        return torch.stack(losses).mean()

    def denoise_loss(self, noisy, mask, source):
        """The denoising step's loss: noisy (E, n, C, H, W) groups; mask (same shape) 1.0 at
        the Noise2Void-replaced pixels; source (E, n·C·H·W) int64, for each position of the
        group flattened (NCHW) the position whose normalised value the masked input has
        there (its own where the mask is 0)."""
        e, n = noisy.shape[:2]
        mu = noisy.mean(dim=(1, 3, 4), keepdim=True)
        s = noisy.std(dim=(1, 3, 4), keepdim=True, correction=0) + GROUP_STD_EPS
        x = (noisy - mu) / s
        feats = self.encoder(x.reshape((e * n,) + x.shape[2:]))
        sketches = feats.reshape(e, n, -1).mean(1)
        masked = x.reshape(e, -1).gather(1, source).reshape(x.shape)
        losses = []
        for i in range(e):
            out = self._forward(masked[i], self.generate(sketches[i]),
                                DatasetBatchNorm(self.shared))
            losses.append((mask[i] * (out - x[i]) ** 2).sum() / mask[i].sum().clamp_min(1.0))
        return torch.stack(losses).mean()


def to_torch_batch(batch, device='cpu'):
    """An `Episodes` batch (NumPy, NHWC) as torch tensors (NCHW) on `device`."""
    nchw = lambda x: torch.from_numpy(np.ascontiguousarray(x)).to(device).permute(
        0, 1, 4, 2, 3).contiguous()
    lab = lambda x: torch.from_numpy(np.asarray(x)).to(device).long()
    return (nchw(batch.support), lab(batch.support_labels), nchw(batch.query),
            lab(batch.query_labels), lab(batch.classes))


def to_torch_denoise_batch(batch, device='cpu'):
    """A denoising batch (noisy, mask, source) of NumPy arrays, noisy and mask (E, n, H, W,
    C), source (E, n·C·H·W) already in NCHW order (`n2v_source_nchw`), as torch tensors."""
    noisy, mask, source = batch
    nchw = lambda x: torch.from_numpy(np.require(x, np.float32, ['C', 'W'])).to(
        device).permute(0, 1, 4, 2, 3).contiguous()
    return nchw(noisy), nchw(mask), torch.from_numpy(np.require(source, np.int64, ['C', 'W'])
                                                     ).to(device)


def n2v_source_nchw(masked_index):
    """`noise.n2v_mask` applied to an index image: (E, n, H, W, C) floats whose value at a
    position is the group's NHWC flat index of the pixel copied there → (E, n·C·H·W)
    int64, the same map as NCHW flat indices in NCHW order (for `denoise_loss`)."""
    e, n, h, w, c = masked_index.shape
    j = np.rint(np.asarray(masked_index, np.float64)).astype(np.int64)
    i, rest = np.divmod(j, h * w * c)
    y, rest = np.divmod(rest, w * c)
    x, ch = np.divmod(rest, c)
    nchw = ((i * c + ch) * h + y) * w + x
    return np.ascontiguousarray(nchw.transpose(0, 1, 4, 2, 3).reshape(e, -1))


def make_train_step(model: TorchPudNet, optimizer, metric_weight: float, kl_weight: float,
                    loss_fn=None):
    """step(batch) → loss (the loss at the parameters before the update), one Adam step,
    finished when it returns (on a GPU the step synchronises). `loss_fn`: e.g.
    `torch.compile(model.loss)`; default the eager `model.loss`."""
    loss_fn = loss_fn or model.loss
    return _make_step(model, optimizer, lambda batch, device: loss_fn(
        *to_torch_batch(batch, device), metric_weight, kl_weight))


def make_denoise_train_step(model: TorchPudNet, optimizer, loss_fn=None):
    """As `make_train_step` for the denoising task: step((noisy, mask, source)) → loss.
    `loss_fn`: default the eager `model.denoise_loss`."""
    loss_fn = loss_fn or model.denoise_loss
    return _make_step(model, optimizer, lambda batch, device: loss_fn(
        *to_torch_denoise_batch(batch, device)))


def _make_step(model, optimizer, compute_loss):
    device = next(model.parameters()).device

    def step(batch):
        loss = compute_loss(batch, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        return loss.detach().cpu()
    return step


# ----------------------------------------------------------------------------- Flax → torch

def _t(x) -> torch.Tensor:
    return torch.from_numpy(np.array(x, dtype=np.float32))


def _hwc_rows_to_chw(kernel, h: int, w: int, c: int):
    """A Dense kernel (H·W·C, out) over NHWC-flattened inputs → (out, C·H·W) for NCHW."""
    out = kernel.shape[-1]
    return np.asarray(kernel).reshape(h, w, c, out).transpose(2, 0, 1, 3).reshape(-1, out).T


def torch_state_from_flax(model: TorchPudNet, params: dict, batch_stats: Optional[dict],
                          image_shape, target: str) -> dict:
    """{torch state_dict name: tensor} of a Flax PudNet's `params` (and `batch_stats`, the
    encoder's running averages, unless None): nested dicts of arrays, layouts converted.
    Also maps any pytree shaped like `params` (gradients, Adam moments)."""
    state: dict = {}
    enc = params['encoder']
    for i in range(len(model.encoder.convs)):
        state[f'encoder.convs.{i}.weight'] = _t(enc[f'conv{i}']['kernel']).permute(3, 2, 0, 1)
        state[f'encoder.convs.{i}.bias'] = _t(enc[f'conv{i}']['bias'])
        state[f'encoder.bns.{i}.weight'] = _t(enc[f'bn{i}']['scale'])
        state[f'encoder.bns.{i}.bias'] = _t(enc[f'bn{i}']['bias'])
        if batch_stats is not None:
            stats = batch_stats['encoder'][f'bn{i}']
            state[f'encoder.bns.{i}.running_mean'] = _t(stats['mean'])
            state[f'encoder.bns.{i}.running_var'] = _t(stats['var'])
    c_last = model.encoder.convs[-1].out_channels
    side = int(round(math.sqrt(model.encoder.project.in_features // c_last)))
    state['encoder.project.weight'] = _t(_hwc_rows_to_chw(enc['project']['kernel'], side, side,
                                                          c_last))
    state['encoder.project.bias'] = _t(enc['project']['bias'])
    for k in ('W_r', 'W_z', 'W_h', 'W_o'):
        state[f'ahru.{k}.weight'] = _t(params['ahru']['cell'][k]['kernel']).T
    for key, _ in model.groups:
        g = params[f'generators_{key}']
        for ours, theirs in (('embed', 'embed'), ('a', 'conv1x1_a'), ('b', 'conv1x1_b')):
            state[f'generators.{key}.{ours}_w'] = _t(g[theirs]['kernel'])
            state[f'generators.{key}.{ours}_b'] = _t(g[theirs]['bias'])
    for name, value in params['target_shared'].items():   # flat keys 'bn0/scale'
        state['shared.' + name.replace('/', '__')] = _t(value)
    if model.head is not None:
        head = np.asarray(params['full_head']['kernel'])
        if target == 'convnet3':       # rows over NHWC-flattened features → NCHW order
            h, w, _ = image_shape
            for _ in range(3):
                h, w = h // 2, w // 2
            head = _hwc_rows_to_chw(head, h, w, head.shape[0] // (h * w))
        else:
            head = head.T
        state['head.weight'] = _t(head)
        state['head.bias'] = _t(params['full_head']['bias'])
    own = model.state_dict()
    wanted = {k for k in own if not k.endswith('num_batches_tracked')
              and (batch_stats is not None or not k.endswith(('running_mean', 'running_var')))}
    if set(state) != wanted:
        raise ValueError(f'Flax → torch mapping: missing {sorted(wanted - set(state))}, '
                         f'unexpected {sorted(set(state) - wanted)}.')
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(f'{k}: Flax gives {tuple(v.shape)}, torch has {tuple(own[k].shape)}.')
    return {k: v.contiguous() for k, v in state.items()}


def load_flax_variables(model: TorchPudNet, params: dict, batch_stats: dict, image_shape,
                        target: str) -> None:
    """Copies a Flax PudNet's initial `params` and `batch_stats` into `model`."""
    model.load_state_dict(torch_state_from_flax(model, params, batch_stats, image_shape,
                                                target), strict=False)
