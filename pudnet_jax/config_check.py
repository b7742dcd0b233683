"""One validation pass over a config, at start-up, before any data or model is loaded.

`validate(config)` raises a `UserError` listing every bad field as
`config.<field>=<value>: <what is allowed>`, so that a value out of range fails at once
with its name instead of training by gradient ascent (a negative learning rate), dividing
by zero (`log_every=0`, `eval.groups=0`, an image too small for the target) or reporting
a "held-out" accuracy on training classes (overlapping class lists).
"""

from __future__ import annotations

import math
import numbers

from pudnet_jax.errors import UserError

# The smallest image size tried when looking for the minimum a target accepts.
_MAX_SEARCHED_SIZE = 256


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


class _Problems:
    def __init__(self, config):
        self.config, self.items = config, []

    def get(self, field: str, default=None):
        node = self.config
        for part in field.split('.'):
            if node is None or part not in node:
                return default
            node = node[part]
        return node

    def add(self, field: str, value, allowed: str) -> None:
        self.items.append(f'config.{field}={value!r}: {allowed}')

    def int_at_least(self, field: str, low: int, optional: bool = False) -> None:
        v = self.get(field)
        if v is None and optional:
            return
        if not _is_int(v) or v < low:
            self.add(field, v, f'must be an integer >= {low}')

    def number_in(self, field: str, low: float, high: float, *, low_open=False,
                  high_open=False, optional: bool = False) -> None:
        v = self.get(field)
        if v is None and optional:
            return
        ok = _is_number(v) and math.isfinite(v) and (v > low if low_open else v >= low) and (
            v < high if high_open else v <= high)
        if not ok:
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            self.add(field, v, f'must be a number in {interval}')

    def positive(self, field: str) -> None:
        v = self.get(field)
        if not (_is_number(v) and math.isfinite(v) and v > 0):
            self.add(field, v, 'must be a finite number > 0')


def validate(config) -> None:
    """Raises a UserError naming every invalid field, its value and the allowed range."""
    p = _Problems(config)
    _check_data_and_target(p)
    _check_model_and_loss(p)
    _check_train(p)
    _check_eval(p)
    _check_predict(p)
    _check_compare(p)
    if p.items:
        raise UserError('Invalid config: ' + '; '.join(p.items) + '.')
    _check_image_size(config)


def _check_data_and_target(p: _Problems) -> None:
    from pudnet_jax import sources, targets, tasks
    task = p.get('task', tasks.DEFAULT)
    if task not in tasks.TASKS:
        p.add('task', task, f'must be one of {sorted(tasks.TASKS)}')
    name = p.get('data.name')
    if name not in sources.SOURCES:
        p.add('data.name', name, f'must be one of {sorted(sources.SOURCES)}')
    target = p.get('target.name')
    if target not in targets.TARGETS:
        p.add('target.name', target, f'must be one of {sorted(targets.TARGETS)}')
    elif task in tasks.TASKS:
        output = 'image' if target in targets.IMAGE_TARGETS else 'features'
        wanted = tasks.get(task).TARGET_OUTPUT
        if output != wanted:
            fits = sorted(t for t in targets.TARGETS
                          if ('image' if t in targets.IMAGE_TARGETS else 'features') == wanted)
            kind = 'an image-to-image network' if output == 'image' else 'a feature extractor'
            p.add('target.name', target, f'is {kind}; {task} needs one of {fits}')
    p.int_at_least('target.width', 1)
    p.int_at_least('data.image_size', 1)
    if p.get('data.channels') not in (1, 3):
        p.add('data.channels', p.get('data.channels'), 'must be 1 (grayscale) or 3 (RGB)')
    domains = p.get('data.domains', None)
    if domains is not None and not (
            hasattr(domains, 'items') and all(
                isinstance(v, (list, tuple)) and all(_is_int(c) for c in v)
                for _, v in domains.items())):
        p.add('data.domains', domains, 'must map each domain name to a tuple of class labels')
    lists = {}
    for field in ('data.train_classes', 'data.test_classes', 'data.val_classes'):
        v = p.get(field, ())
        if not isinstance(v, (list, tuple)) or not all(_is_int(c) and c >= 0 for c in v):
            p.add(field, v, 'must be a tuple of class labels (integers >= 0), e.g. '
                            f"--config.{field}='(0,1,2)'")
            continue
        dupes = sorted({c for c in v if list(v).count(c) > 1})
        if dupes:
            p.add(field, v, f'lists class(es) {dupes} more than once')
        lists[field] = set(v)
    if ('data.train_classes' in lists and 'data.test_classes' in lists
            and lists['data.train_classes'] & lists['data.test_classes']):
        both = sorted(lists['data.train_classes'] & lists['data.test_classes'])
        p.add('data.test_classes', p.get('data.test_classes'),
              f'must not overlap config.data.train_classes (both have {both}): held-out '
              f'classes must be unseen in training')
    for a, b in (('data.train_classes', 'data.val_classes'),
                 ('data.test_classes', 'data.val_classes')):
        if a in lists and b in lists and lists[a] & lists[b]:
            p.add(b, p.get(b), f'must not overlap config.{a} (both have '
                               f'{sorted(lists[a] & lists[b])}): the three roles are disjoint')
    if 'data.train_classes' in lists and not lists['data.train_classes']:
        p.add('data.train_classes', p.get('data.train_classes'), 'must not be empty')


def _check_model_and_loss(p: _Problems) -> None:
    p.number_in('model.eta', 0.0, 1.0)
    p.int_at_least('model.sketch_dim', 1)
    p.int_at_least('model.generator_p', 1, optional=True)
    p.int_at_least('model.generator_hidden', 1, optional=True)
    from pudnet_jax.hypernet import ENCODER_NORMS, SET_POOLINGS
    for field, allowed in (('model.encoder_norm', ENCODER_NORMS),
                           ('model.set_pooling', SET_POOLINGS),
                           ('model.residual', (True, False)), ('model.film', (True, False)),
                           ('model.base_init', ('', 'pretrained')),
                           ('train.freeze_base', (False, True)),
                           ('eval.pretrained_control', (False, True))):
        v = p.get(field, allowed[0])
        if not any(v is a or (isinstance(a, str) and v == a) for a in allowed):
            p.add(field, v, f'must be one of {allowed}')
    from pudnet_jax import tasks
    for field, on in (('model.base_init', 'pretrained'), ('train.freeze_base', True)):
        if p.get(field) == on and p.get('model.residual') is not True:
            p.add(field, on, 'needs residual generation (--config.model.residual=True): '
                             'the base it sets is the residual base kernels')
    p.number_in('eval.delta_scale', 0.0, 10.0, optional=True)
    if p.get('eval.delta_scale', 1.0) != 1.0 and p.get('model.residual') is not True:
        p.add('eval.delta_scale', p.get('eval.delta_scale'),
              'scales the residual delta: needs --config.model.residual=True')
    task = p.get('task', tasks.DEFAULT)
    if (p.get('model.base_init') == 'pretrained' and task in tasks.TASKS
            and not hasattr(tasks.get(task), 'pretrained_target')):
        p.add('model.base_init', 'pretrained', f'the {task} task has no pretrained network')
    if p.get('eval.pretrained_control') is True and task != 'classification':
        p.add('eval.pretrained_control', True,
              f'is a control of the classification task; the {task} task has its own')
    p.positive('loss.temperature')
    from pudnet_jax.tasks import classification
    try:
        classification.loss_weights(p.config.loss)
    except ValueError as e:
        p.items.append(str(e).rstrip('.'))


def _check_train(p: _Problems) -> None:
    t = 'train.'
    for field in ('ways', 'shots', 'queries', 'episodes_per_step', 'num_train_steps',
                  'log_every', 'checkpoint_every', 'max_checkpoints'):
        p.int_at_least(t + field, 2 if field == 'ways' else 1)
    p.int_at_least(t + 'warmup_steps', 0)
    p.int_at_least(t + 'num_groups', 1, optional=True)
    p.int_at_least(t + 'val_every', 0, optional=True)
    p.int_at_least(t + 'val_groups', 1, optional=True)
    p.positive(t + 'learning_rate')
    p.number_in(t + 'b1', 0.0, 1.0, high_open=True)
    p.number_in(t + 'b2', 0.0, 1.0, high_open=True)
    p.int_at_least(t + 'data_parallel', 0, optional=True)
    devices, episodes = p.get(t + 'data_parallel'), p.get(t + 'episodes_per_step')
    if _is_int(devices) and devices > 1 and _is_int(episodes) and episodes % devices:
        p.add(t + 'data_parallel', devices, f'must divide config.train.episodes_per_step '
                                            f'({episodes}, the global episode count)')
    if p.get(t + 'dtype', 'float32') not in ('float32', 'bfloat16'):
        p.add(t + 'dtype', p.get(t + 'dtype'), "must be 'float32' or 'bfloat16'")
    p.int_at_least(t + 'prefetch', 0, optional=True)
    p.int_at_least(t + 'inner_steps', 0, optional=True)
    if _is_int(p.get(t + 'inner_steps', 0)) and p.get(t + 'inner_steps', 0) > 0:
        p.positive(t + 'inner_lr')
        from pudnet_jax import tasks
        task = p.get('task') or tasks.DEFAULT
        if task in tasks.TASKS and not hasattr(tasks.get(task), 'make_sketch_adaptation'):
            p.add(t + 'inner_steps', p.get(t + 'inner_steps'),
                  f"must be 0: task {task!r} has no inner loop (make_sketch_adaptation)")
    decay = p.get(t + 'ema_decay', 0.0)
    if not (isinstance(decay, (int, float)) and not isinstance(decay, bool)
            and 0.0 <= decay < 1.0):
        p.add(t + 'ema_decay', decay, 'must be a number in [0, 1) (0: no weight average)')
    styles = p.get(t + 'episode_augment', ())
    if styles:
        from pudnet_jax import augment, tasks
        task = p.get('task') or tasks.DEFAULT
        try:
            known = isinstance(styles, (list, tuple)) and augment.check(styles)
        except ValueError:
            known = False
        if not known:
            p.add(t + 'episode_augment', styles,
                  f'must be a tuple of transforms from {augment.TRANSFORMS}')
        elif task in tasks.TASKS and not hasattr(tasks.get(task), 'make_episode_styles'):
            p.add(t + 'episode_augment', styles,
                  f"must be (): task {task!r} has no episode styles (make_episode_styles)")
    if p.get(t + 'input', 'host') not in ('auto', 'device', 'host'):
        p.add(t + 'input', p.get(t + 'input'), "must be 'auto', 'device' or 'host'")
    if p.get(t + 'episode_batching') not in ('auto', 'unroll', 'vmap', 'map'):
        p.add(t + 'episode_batching', p.get(t + 'episode_batching'),
              "must be 'auto', 'unroll', 'vmap' or 'map'")
    ways, classes = p.get(t + 'ways'), p.get('data.train_classes')
    if _is_int(ways) and isinstance(classes, (list, tuple)) and classes and ways > len(classes):
        p.add(t + 'ways', ways, f'must be <= the number of training classes '
                                f'({len(classes)}, config.data.train_classes)')


def _check_eval(p: _Problems) -> None:
    protocol = p.get('eval.protocol', 'intra')
    if protocol not in ('intra', 'inter'):
        p.add('eval.protocol', protocol, "must be 'intra' or 'inter'")
        return
    p.int_at_least('eval.shots', 1)
    p.int_at_least('eval.seed', 0, optional=True)
    p.int_at_least('eval.untrained_seeds', 1, optional=True)       # the controls
    p.int_at_least('eval.mean_sketch_images', 1, optional=True)
    p.int_at_least('eval.refine_steps', 0, optional=True)
    if p.get('eval.refine_steps', 0):
        p.number_in('eval.refine_lr', 0.0, 10.0, low_open=True)
    from pudnet_jax.refine import OPTIMIZERS
    optimizer = p.get('eval.refine_optimizer', 'adam')
    if optimizer not in OPTIMIZERS:
        p.add('eval.refine_optimizer', optimizer, 'must be ' + ' or '.join(map(repr, OPTIMIZERS)))
    elif optimizer == 'learned' and not p.get('train.inner_steps', 0):
        p.add('eval.refine_optimizer', optimizer, "'learned' needs a step learned in "
              "meta-training: config.train.inner_steps > 0")
    elif (optimizer != 'learned' and p.get('eval.refine_steps', 0)
          and p.get('task') == 'denoising'):
        p.add('eval.refine_optimizer', optimizer, "denoising refines only with the step "
              "learned in meta-training: must be 'learned' when eval.refine_steps > 0")
    if protocol == 'inter':
        from pudnet_jax import sources
        if p.get('eval.dataset') not in sources.SOURCES:
            p.add('eval.dataset', p.get('eval.dataset'), f'must be one of {sorted(sources.SOURCES)}')
        for field in ('draws', 'chunk_size', 'bn_images'):
            p.int_at_least('eval.' + field, 1, optional=True)
        p.number_in('eval.predict_fraction', 0.0, 1.0, low_open=True, high_open=True,
                    optional=True)
        return
    p.int_at_least('eval.groups', 1)
    p.int_at_least('eval.val_groups', 1, optional=True)
    p.int_at_least('eval.prediction_shots', 1, optional=True)
    shots, pshots = p.get('eval.shots'), p.get('eval.prediction_shots')
    if _is_int(shots) and _is_int(pshots) and pshots < shots:
        p.add('eval.prediction_shots', pshots, f'must be >= config.eval.shots ({shots}): the '
                                               f'labelled images are part of the prediction set')
    if not p.get('data.val_classes', ()):
        p.number_in('eval.val_fraction', 0.0, 1.0, low_open=True, high_open=True,
                    optional=True)
    p.int_at_least('eval.test_shots', 1)
    p.int_at_least('eval.ways', 2)
    p.int_at_least('eval.top_k', 0, optional=True)
    ways, classes = p.get('eval.ways'), p.get('data.test_classes')
    if _is_int(ways) and isinstance(classes, (list, tuple)) and ways > len(classes):
        p.add('eval.ways', ways, f'must be <= the number of held-out classes '
                                 f'({len(classes)}, config.data.test_classes)')


def _check_compare(p: _Problems) -> None:
    milestones = p.get('compare.refine_milestones', ())
    if (not isinstance(milestones, (list, tuple))
            or any(not _is_int(k) or k < 1 for k in milestones)):
        p.add('compare.refine_milestones', milestones,
              'must be a tuple of step counts >= 1 (or empty)')
    methods = p.get('compare.methods')
    if methods is None:
        return
    from pudnet_jax import tasks
    try:
        METHODS = getattr(tasks.get(p.get('task') or tasks.DEFAULT), 'COMPARE_METHODS', None)
    except ValueError:
        return          # an unknown task is reported by the trainer, naming the choices
    if METHODS is None:
        return          # a task without --mode=compare (its MODES say so)
    if (not isinstance(methods, (list, tuple)) or not methods
            or any(m not in METHODS for m in methods)):
        p.add('compare.methods', methods, f'must be a non-empty tuple of {METHODS}')


def _check_predict(p: _Problems) -> None:
    if p.get('predict') is None:
        return
    p.int_at_least('predict.groups', 1, optional=True)
    p.int_at_least('predict.first_group', 0, optional=True)
    p.number_in('predict.holdout_fraction', 0.0, 1.0, low_open=True, high_open=True,
                optional=True)


def _target_accepts(name: str, image_shape, width: int) -> bool:
    from pudnet_jax import targets
    try:
        return targets.target_spec(name, image_shape, width).feature_dim > 0
    except (ZeroDivisionError, ValueError, TypeError):
        return False


def _check_image_size(config) -> None:
    """The target must produce features for image_size² inputs (ConvNet-3's three 2×2
    max-pools need >= 8 px); found by tracing the target's init (no compilation)."""
    size, channels = config.data.image_size, config.data.channels
    name, width = config.target.name, config.target.width
    if _target_accepts(name, (size, size, channels), width):
        return
    minimum = next((s for s in range(size + 1, _MAX_SEARCHED_SIZE + 1)
                    if _target_accepts(name, (s, s, channels), width)), None)
    allowed = f'must be >= {minimum}' if minimum else 'is not accepted'
    raise UserError(f'Invalid config: config.data.image_size={size}: {allowed} for target '
                    f'{name!r} (its feature map would be empty).')
