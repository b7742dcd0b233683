"""Classification (paper §III-E, §IV-A–C): N-way episodes of labelled images; the loss
L = λ1·L1 + L2 + λ3·L3 (`losses.pudnet_loss`); evaluation on held-out classes (intra,
`evaluate`) or another dataset (inter, `inter_dataset`), beside the controls.

The task owns the training-only full-class head Q_φ and the temperature τ (its
parameters `full_head` and `log_tau`, kept beside the hypernetwork's in the train
state and in checkpoints, where they always were), and, with `config.train.inner_steps`
> 0, the learned step size of the sketch's inner loop (`log_inner_lr`, one per sketch
dimension; `make_sketch_adaptation`).
"""

import os

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from clu import metrics

from pudnet_jax import data as data_lib
from pudnet_jax import evaluate as evaluate_lib
from pudnet_jax import augment, controls, inner_loop, inter_dataset, sources
from pudnet_jax import workdir as workdir_lib
from pudnet_jax.errors import UserError
from pudnet_jax.files import write_json
from pudnet_jax.hypernet import PudNet
from pudnet_jax.losses import leave_one_out_loss, pudnet_loss
from pudnet_jax.targets import TargetSpec, apply_with_dataset_stats

PARAM_NAMES = ('full_head', 'log_tau', inner_loop.PARAM)
PROGRESS = ('accuracy', 'episode acc')
TARGET_OUTPUT = 'features'
MODES = ('train', 'evaluate', 'predict', 'compare')
COMPARE_METHODS = ('pretrained', 'protonet', 'adam', 'gc', 'finetune_pudnet',
                   'finetune_pretrained')      # compare.METHODS


class Params(nn.Module):
    """Q_φ (a linear head over the target's features to every training class) and, when
    learned, log τ. (The inner loop's `log_inner_lr` sits beside them: `inner_loop`.)"""
    num_classes: int
    temperature: float = 10.0
    learn_temperature: bool = False

    def setup(self):
        self.head = nn.Dense(self.num_classes, name='full_head')
        if self.learn_temperature:
            self.log_tau = self.param('log_tau', lambda _: jnp.log(jnp.float32(self.temperature)))

    def __call__(self, features):
        return self.head(features)

    def tau(self):
        if self.learn_temperature:
            return jnp.exp(self.log_tau)
        return jnp.float32(self.temperature)


def make_params_module(config) -> Params:
    return Params(len(config.data.train_classes), config.loss.temperature,
                  config.loss.learn_temperature)


def sketch_size(config) -> int:
    """The length of the sketch `PudNet.generate` takes (the encoder's, doubled by
    `model.set_pooling='mean_sq'`)."""
    m = config.model
    return int(m.sketch_dim) * (2 if m.get('set_pooling', 'mean') == 'mean_sq' else 1)


def init_params(config, spec: TargetSpec, seed: int) -> dict:
    """The head's initial parameters: those PudNet's own `full_head` had when the
    hypernetwork held it (same key, same module path), so that runs are unchanged; and
    the inner loop's step size when there is one (`inner_loop.init_params`)."""
    variables = make_params_module(config).init(
        jax.random.PRNGKey(seed), jnp.zeros((1, spec.feature_dim)))
    return {**variables['params'], **inner_loop.init_params(config, sketch_size(config))}


def tau_setting(config) -> tuple[float, bool]:
    """(τ or its initial value, whether it is learned): hashable, for cached jits."""
    return float(config.loss.temperature), bool(config.loss.learn_temperature)


def tau(params: dict, setting: tuple[float, bool]):
    """τ from the train state's (or a restored hypernetwork's) params."""
    return Params(1, *setting).apply({'params': params}, method=Params.tau)


def loss_weights(loss_cfg) -> tuple[float, float]:
    """(λ1, λ3) of L = λ1·L1 + L2 + λ3·L3, checked; the paper's eq. 11 has both at 1."""
    weights = {k: float(loss_cfg.get(k, 1.0)) for k in ('metric_weight', 'kl_weight')}
    for k, w in weights.items():
        if not (w >= 0.0 and np.isfinite(w)):
            raise ValueError(f'config.loss.{k} must be a finite number >= 0, got {w}.')
    if not loss_cfg.use_full_head and weights['metric_weight'] == 0.0:
        raise ValueError('config.loss.use_full_head=False leaves only L1, but '
                         'config.loss.metric_weight is 0: nothing would be trained.')
    return weights['metric_weight'], weights['kl_weight']


def sketch_loss(model, spec: TargetSpec, hyper_params: dict, sketch, images, labels,
                ways: int, tau, index=None):
    """The loss a sketch is stepped on: the leave-one-out metric loss
    (`losses.leave_one_out_loss`) of the labelled images `images[index]` (all of them
    when `index` is None), through the network generated from `sketch` with BatchNorm
    statistics from all of `images`. Meta-training's inner loop
    (`make_sketch_adaptation`) and the refinement at prediction (`refine.py`) both take
    their steps on it."""
    generated = model.apply({'params': hyper_params}, sketch, method=PudNet.generate)
    feats, _, _ = apply_with_dataset_stats(spec, generated, images)
    return leave_one_out_loss(feats if index is None else feats[index], labels, ways, tau)


def make_sketch_adaptation(config, model, spec: TargetSpec):
    """With `config.train.inner_steps` = K > 0 (`inner_loop`): (hyper params, task params,
    sketch, one episode) → the sketch after K inner steps on the leave-one-out metric loss
    of the episode's labelled (support) images, through the network generated from the
    current sketch with BatchNorm statistics from the support set (`sketch_loss`): exactly
    what `refine.py` does at prediction time with `eval.refine_optimizer='learned'`. None
    when K = 0."""
    ways = config.train.ways
    head = make_params_module(config)

    def loss(hyper_params, task_params, sketch, ep: data_lib.Episodes, k):
        t = head.apply({'params': task_params}, method=Params.tau)
        return sketch_loss(model, spec, hyper_params, sketch, ep.support, ep.support_labels,
                           ways, t)
    return inner_loop.make_adaptation(config, loss)


@flax.struct.dataclass
class Metrics(metrics.Collection):
    loss: metrics.Average.from_output('loss')
    l1_metric: metrics.Average.from_output('l1_metric')
    l2_full_head: metrics.Average.from_output('l2_full_head')
    l3_consistency: metrics.Average.from_output('l3_consistency')
    accuracy: metrics.Average.from_output('accuracy')


def make_episode_loss(config, spec: TargetSpec):
    """(task params, generated params, one `data.Episodes` slice) → (loss, parts)."""
    loss_cfg = config.loss
    metric_weight, kl_weight = loss_weights(loss_cfg)
    head = make_params_module(config)

    def episode_loss(task_params, generated, ep: data_lib.Episodes):
        f_s, f_q, _ = apply_with_dataset_stats(spec, generated, ep.support, ep.query)
        head_logits = head.apply({'params': task_params}, f_q)
        t = head.apply({'params': task_params}, method=Params.tau)
        return pudnet_loss(f_s, ep.support_labels, f_q, ep.query_labels, head_logits,
                           ep.classes, t, use_full_head=loss_cfg.use_full_head,
                           use_kl=loss_cfg.use_kl, metric_weight=metric_weight,
                           kl_weight=kl_weight)
    return episode_loss


def make_episode_styles(config):
    """`config.train.episode_augment`: a random style per training episode (`augment`),
    or None."""
    return augment.make_episode_styles(config)


def sketch_images(batch: data_lib.Episodes):
    """Each episode's sketch is the mean feature of its support set."""
    return batch.support


def load(config) -> sources.Loaded:
    return sources.load(config.data.name, config.data.image_size, config.data.channels,
                        config.data.data_dir, cache_dir=config.data.get('cache_dir'))


def pretrained_target(config, spec: TargetSpec, loaded):
    """(target variables, seconds): the Pretrained baseline's network
    (`compare.train_pretrained`), the base of `model.base_init='pretrained'`."""
    from pudnet_jax import compare
    target, seconds, epoch, val = compare.train_pretrained(config, spec, loaded.pool)
    logging.info('Pretrained target: epoch %d selected (validation prototype accuracy %.4f).',
                 epoch, val)
    return target, seconds


def make_sampler(config, loaded) -> data_lib.EpisodeSampler:
    t = config.train
    return data_lib.EpisodeSampler(loaded.pool, config.data.train_classes, t.ways, t.shots,
                                   t.queries, seed=config.seed, what='training episodes',
                                   domains=config.data.get('domains'))


def check(config, loaded, spec: TargetSpec) -> None:
    """Fails on bad evaluation settings (and decodes the inter-dataset target) now, not
    after training."""
    if inter_dataset.is_inter_dataset(config):
        inter_dataset.load_parts(config.eval, *spec.image_shape[1:],
                                 cache_dir=config.data.get('cache_dir'))
    else:
        evaluate_lib.group_sampler(config, loaded.pool, 'test')
        evaluate_lib.group_sampler(config, loaded.pool, 'validation')


def validation_curve(config, model, spec, loaded, workdir: str, start_step: int = 0):
    return evaluate_lib.validation_curve(config, model, spec, loaded.pool, workdir, start_step)


def evaluate(config, model, spec, hyper_vars, loaded, workdir, split: str = 'all') -> dict:
    """The configured protocol, with its controls: intra-dataset (held-out classes of the
    training data, `evaluate`: the test groups, plus the validation groups under
    'validation') or inter-dataset (another dataset entirely, `inter_dataset`). `loaded`:
    what `load(config)` returned (None is allowed for inter-dataset). `split='validation'`:
    the validation groups alone, {'validation': ...}, no test group drawn."""
    pool = None if loaded is None else loaded.pool
    if split not in ('all', 'validation'):
        raise ValueError(f"split must be 'all' or 'validation', got {split!r}.")
    if inter_dataset.is_inter_dataset(config):
        if split == 'validation':
            raise UserError('--split=validation: the inter-dataset protocol scores its target '
                            'dataset only; evaluate the intra-dataset config for validation.')
        return inter_dataset.evaluate(config, model, spec, hyper_vars, workdir, pool)
    gains = tuple(k + ci for k in controls.GAIN_KEYS.values() for ci in ('', '_ci95'))
    keep = ('accuracy', 'ci95', 'groups', 'controls', 'refined') + gains
    val_domains = config.data.get('val_domains') or ()
    if val_domains:     # each validation domain scored on its own groups, then averaged
        parts = {}
        for d in val_domains:
            v = evaluate_lib.evaluate(config, model, spec, hyper_vars, pool, workdir,
                                      split='validation', quiet=True, domain=d)
            _print_validation(v, f'domain {d}')
            parts[d] = {k: v[k] for k in keep if k in v}
        validation = evaluate_lib.mean_over_domains(parts)
        _print_validation(validation, f'the mean of {len(parts)} domains')
    else:
        validation = evaluate_lib.evaluate(config, model, spec, hyper_vars, pool, workdir,
                                           split='validation', quiet=True)
        _print_validation(validation, str(validation['roles']))
    validation = {k: validation[k] for k in keep + ('domains',) if k in validation}
    if split == 'validation':
        return {'split': 'validation', 'validation': validation}
    results = evaluate_lib.evaluate(config, model, spec, hyper_vars, pool, workdir)
    results['validation'] = validation
    return results


def _print_validation(v: dict, what: str) -> None:
    refined = (f", PudNet + refined sketch {100 * v['refined']['accuracy']:.2f} %"
               if 'refined' in v else '')
    print(f"validation (model selection; {v['groups']} groups, {what}): PudNet "
          f"{100 * v['accuracy']:.2f} ± {100 * v['ci95']:.2f} %, untrained "
          f"{100 * v['controls']['untrained']['accuracy']:.2f} %, mean sketch "
          f"{100 * v['controls']['mean_sketch']['accuracy']:.2f} %{refined}")


def summary_scalars(results: dict) -> dict:
    scalars = {'eval/accuracy': results['accuracy'], 'eval/ci95': results['ci95'],
               'eval/untrained': results['controls']['untrained']['accuracy'],
               'eval/mean_sketch': results['controls']['mean_sketch']['accuracy'],
               'eval/conditioning_gain': results['conditioning_gain']}
    if 'validation' in results:
        scalars['validation/accuracy'] = results['validation']['accuracy']
    return scalars


def record(config, loaded, workdir: str) -> None:
    """Records which classes (by label and name) train and which are held out."""
    names = loaded.class_names
    name = lambda c: names[c] if 0 <= c < len(names) else None
    rec = {'dataset': config.data.name,
           'train_classes': {int(c): name(c) for c in config.data.train_classes},
           'val_classes': {int(c): name(c) for c in config.data.get('val_classes') or ()},
           'test_classes': {int(c): name(c) for c in config.data.test_classes},
           'images_per_class': {int(c): int(len(v)) for c, v in loaded.pool.items()}}
    write_json(os.path.join(workdir, workdir_lib.CLASSES_FILE), rec)


def gather_episodes(images, indices: data_lib.EpisodeIndices) -> data_lib.Episodes:
    """Inside the jitted step (config.train.input='device'): the episodes of `indices`
    gathered from the uint8 pool on the device, normalised as on the host."""
    return data_lib.gather_episodes(images, indices, jnp.asarray(data_lib.normalization_table()))


# ----------------------------------------------------------------------------- other modes

def check_folder(folder: str) -> None:
    """--data: a folder with one subfolder of images per class."""
    sources.check_folder(folder)


def predict_folder(workdir, folder, config=None, baselines=True, clean_folder=None):
    from pudnet_jax import predict
    if clean_folder:
        raise UserError('--clean=<folder> goes with a denoising workdir (config.task='
                        "'denoising'); this one classifies.")
    return predict.predict_folder(workdir, folder, config, baselines=None if baselines else False)


def predict_and_save(workdir):
    from pudnet_jax import predict
    return predict.predict_and_save(workdir)


def compare(workdir, config):
    from pudnet_jax import compare as compare_lib
    return compare_lib.run_compare(workdir, config)
