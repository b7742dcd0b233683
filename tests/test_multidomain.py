"""The multi-domain pool, its leave-one-domain-out splits, domain episodes, the
conditioning switches and the sketch refinement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import multidomain as md_config
from configs import test as test_config
from pudnet_jax import data, losses, multidomain, refine, sources
from pudnet_jax import evaluate as evaluate_lib
from pudnet_jax import train as train_lib
from pudnet_jax import workdir as workdir_lib
from pudnet_jax.hypernet import PudNet, dataset_sketch
from pudnet_jax.hypernet import build_model
from pudnet_jax.tasks import classification


@pytest.mark.parametrize('domain', list(multidomain.GLYPH_DOMAINS) + list(multidomain.EXTRA_BLOCKS))
def test_each_glyph_domain_renders_offline_and_deterministically(domain):
    names, x, y = multidomain.render_domain(domain, per_class=3)
    again = multidomain.render_domain(domain, per_class=3)
    assert names == again[0] and len(names) == len(set(names)) >= 10
    np.testing.assert_array_equal(x, again[1])
    assert x.shape == (3 * len(names), 28, 28) and x.dtype == np.uint8
    np.testing.assert_array_equal(y, np.repeat(np.arange(len(names)), 3))
    # White glyphs on black, every image non-empty, and instances differ (in the extra
    # domains a thin pictogram's strokes, anti-aliased when fitted, may stay below full
    # white, and a bold final mem is a near-filled square).
    original = domain in multidomain.GLYPH_DOMAINS
    assert all(img.max() >= (255 if original else 128) and img.mean() < (100 if original else 128)
               for img in x)
    assert not np.array_equal(x[0], x[1])
    # Every character is in at least MIN_FONTS fonts, per its fonts' character maps.
    assert all(len(multidomain.fonts_for(c)) >= multidomain.MIN_FONTS
               for c in multidomain.glyph_characters(domain))


def test_multidomain_source_offline_layout_and_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(multidomain, 'IMAGES_PER_CLASS', 2)
    cache = str(tmp_path)
    loaded = sources.load('multidomain', 28, 1, cache_dir=cache)
    layout = multidomain.layout()
    assert multidomain.domain_classes(loaded.class_names) == {d: list(c) for d, c in layout.items()}
    assert len(loaded.class_names) == sum(map(len, layout.values())) > 150
    assert len(loaded.pool[layout['mnist'][0]]) == 500       # the package domains, whole
    assert len(loaded.pool[layout['latin_upper'][0]]) == 2
    again = sources.load('multidomain', 28, 1, cache_dir=cache)
    assert again.meta['from_cache']
    one = sources.load('md_greek_lower', 28, 1, cache_dir=cache)
    assert [f'greek_lower/{n}' for n in one.class_names] == [
        loaded.class_names[c] for c in layout['greek_lower']]
    np.testing.assert_array_equal(one.pool[0], loaded.pool[layout['greek_lower'][0]])
    # The validation-only domain comes last, its images those of its own source.
    assert list(layout) == list(multidomain.DOMAINS) + list(multidomain.VALIDATION_DOMAINS)
    photos = sources.load('md_photos', 28, 1, cache_dir=cache)
    assert [f'photos/{n}' for n in photos.class_names] == [
        loaded.class_names[c] for c in layout['photos']]
    np.testing.assert_array_equal(photos.pool[3], loaded.pool[layout['photos'][3]])
    # The wider pool: the same domains at the same indices, then the five extra ones,
    # then the validation-only domain.
    plus = sources.load('multidomain_plus', 28, 1, cache_dir=cache)
    wide = multidomain.layout('multidomain_plus')
    assert multidomain.domain_classes(plus.class_names) == {d: list(c) for d, c in wide.items()}
    assert list(wide) == (list(multidomain.DOMAINS) + list(multidomain.EXTRA_BLOCKS)
                          + list(multidomain.VALIDATION_DOMAINS))
    assert all(wide[d] == layout[d] for d in multidomain.DOMAINS)
    n = sum(len(layout[d]) for d in multidomain.DOMAINS)
    assert plus.class_names[:n] == loaded.class_names[:n]
    np.testing.assert_array_equal(plus.pool[wide['hebrew'][0]],
                                  sources.load('md_hebrew', 28, 1, cache_dir=cache).pool[0])
    # A pool's content version is part of its cache's place: the cache of a pool written
    # before it gained a domain is never read as the pool of today.
    from pudnet_jax.sources import cache as cache_lib
    path = sources.cache_path('multidomain', 28, 1, cache_dir=cache)
    assert path == loaded.meta['cache'] and path.endswith(f'-c{multidomain.POOL_VERSION}')
    assert path != cache_lib.cache_path('package', 'multidomain', 28, 1, cache_dir=cache)


@pytest.mark.parametrize('domain', list(multidomain.STYLE_DOMAINS))
def test_each_typeface_domain_renders_offline_and_deterministically(domain):
    fonts = multidomain.STYLE_DOMAINS[domain]
    names, x, y = multidomain.render_typefaces(domain, per_class=40)
    again = multidomain.render_typefaces(domain, per_class=40)
    np.testing.assert_array_equal(x, again[1])
    assert names == [multidomain.font_class_name(f) for f in fonts] == again[0]
    assert len(names) == len(set(names)) == 10
    assert x.shape == (40 * len(names), 28, 28) and x.dtype == np.uint8
    np.testing.assert_array_equal(y, np.repeat(np.arange(len(names)), 40))
    assert all(img.max() >= 128 and img.mean() < 128 for img in x)
    # A class is a font, not a character: its images are of many characters, so no two
    # of its first images are the same picture.
    first = x[:40].reshape(40, -1)
    assert len({row.tobytes() for row in first}) == 40
    # The label is what the font draws: with no stroke added, a bold face has more ink
    # than its regular face over the same random characters.
    regular, bold = (names.index(multidomain.font_class_name(f)) for f in fonts[:2])
    assert 'bold' in names[bold] and 'bold' not in names[regular]
    assert x[y == bold].mean() > 1.15 * x[y == regular].mean()


def test_typeface_domains_split_fonts_by_family_and_the_styles_pool_keeps_indices(
        tmp_path, monkeypatch):
    a, b = (set(multidomain.STYLE_DOMAINS[d]) for d in ('typefaces_a', 'typefaces_b'))
    assert not a & b and a | b == set(multidomain.FONTS)
    family = lambda f: f.split('-')[0].split('.')[0].rstrip('0123456789').replace('Bol', '')
    assert not {family(f) for f in a} & {family(f) for f in b if not f.startswith('cm')}
    monkeypatch.setattr(multidomain, 'IMAGES_PER_CLASS', 2)
    loaded = sources.load('multidomain_styles', 28, 1, cache_dir=str(tmp_path))
    layout = multidomain.layout('multidomain_styles')
    assert multidomain.domain_classes(loaded.class_names) == {d: list(c) for d, c in layout.items()}
    assert all(layout[d] == multidomain.layout()[d] for d in multidomain.DOMAINS)
    one = sources.load('md_typefaces_b', 28, 1, cache_dir=str(tmp_path))
    assert [f'typefaces_b/{n}' for n in one.class_names] == [
        loaded.class_names[c] for c in layout['typefaces_b']]
    np.testing.assert_array_equal(one.pool[4], loaded.pool[layout['typefaces_b'][4]])


def test_conflicting_label_configs_roles():
    layout = multidomain.layout('multidomain_styles')
    arm_s = md_config.get_config('typefaces_b,styles')
    arm_n = md_config.get_config('typefaces_b,styles,charsonly')
    for config in (arm_s, arm_n):
        train, val, test = (set(config.data[k]) for k in ('train_classes', 'val_classes',
                                                         'test_classes'))
        assert config.data.name == 'multidomain_styles'
        assert not (train & val or train & test or val & test)
        assert test == set(layout['typefaces_b'])
        assert val == set(layout['mnist']) | set(layout['photos'])
    # Arm S trains on the other typeface domain, arm N on no typeface domain; otherwise
    # the same training classes.
    assert set(arm_s.data.train_classes) == set(arm_n.data.train_classes) | set(layout['typefaces_a'])
    assert not set(arm_n.data.train_classes) & set(layout['typefaces_a'])
    # The default is the styles pool (`,styles` says it explicitly; `,charsonly` alone is
    # arm N): held-out Animal with both typeface domains in training.
    animal = md_config.get_config('animal')
    assert animal.data.name == 'multidomain_styles'
    assert set(layout['typefaces_a']) | set(layout['typefaces_b']) <= set(animal.data.train_classes)
    assert md_config.get_config('animal,styles').data.train_classes == animal.data.train_classes
    assert (md_config.get_config('typefaces_b,charsonly').data.train_classes
            == arm_n.data.train_classes)
    for bad in ('animal,plus,styles', 'animal,chars,styles', 'animal,chars,charsonly',
                'animal,plus,charsonly', 'typefaces_b,chars'):
        with pytest.raises(ValueError):
            md_config.get_config(bad)


def test_photo_domain_renders_offline_and_deterministically():
    from pudnet_jax.sources import photos
    names, x, y = multidomain.photo_domain(per_class=4)
    again = multidomain.photo_domain(per_class=4)
    np.testing.assert_array_equal(x, again[1])
    assert names == multidomain.photo_names() and len(names) == len(set(names)) == 18
    assert set(names) == {n for s in photos.SETS.values() for n in s}
    assert x.shape == (4 * len(names), 28, 28) and x.dtype == np.uint8
    np.testing.assert_array_equal(y, np.repeat(np.arange(len(names)), 4))
    # Evenly spaced tiles of the photograph: its first and its last tile among them.
    tiles = photos.tiles(photos.photograph(names[0], 1), 28)[..., 0]
    np.testing.assert_array_equal(x[0], tiles[0])
    np.testing.assert_array_equal(x[3], tiles[-1])
    assert multidomain.domain_sizes()['photos'] == len(names)


@pytest.mark.parametrize('held_out', multidomain.DOMAINS)
def test_leave_one_domain_out_roles_are_disjoint(held_out):
    config = md_config.get_config(held_out)
    layout = multidomain.layout('multidomain_styles')
    assert config.data.name == 'multidomain_styles'
    # `,chars`, the default before the typeface domains joined it: the pool `multidomain`,
    # the same held-out, validation and other training classes.
    chars = md_config.get_config(held_out + ',chars')
    assert chars.data.name == 'multidomain'
    typefaces = {c for d in multidomain.STYLE_DOMAINS for c in layout[d]}
    assert chars.data.test_classes == config.data.test_classes
    assert tuple(chars.data.val_domains) == tuple(config.data.val_domains)
    assert set(chars.data.train_classes) == set(config.data.train_classes) - typefaces
    train, val, test = (set(config.data[k]) for k in ('train_classes', 'val_classes',
                                                     'test_classes'))
    assert not (train & val or train & test or val & test)
    assert test == set(layout[held_out])
    # Two validation domains of different kinds, the photograph tiles never in training.
    val_domains = (md_config.validation_domain(held_out), 'photos')
    assert tuple(config.data.val_domains) == val_domains
    assert val == set(layout[val_domains[0]]) | set(layout['photos'])
    out = {held_out, *val_domains}
    out |= {t for d in tuple(out) for t in md_config.TWINS.get(d, ())}
    assert train == {c for d, cs in layout.items() if d not in out for c in cs}
    if held_out in ('mnist', 'digits'):     # the twin leaves training with it
        assert not train & (set(layout['mnist']) | set(layout['digits']))
    inter = md_config.get_config(held_out + ',inter')
    assert inter.eval.protocol == 'inter' and inter.eval.dataset == f'md_{held_out}'
    # The paper's model: the same roles, no inner loop, the L2 head, Adam refinement.
    paper = md_config.get_config(held_out + ',paper,inter')
    assert paper.data.train_classes == config.data.train_classes
    assert paper.train.inner_steps == 0 and paper.loss.use_full_head
    assert paper.eval.refine_optimizer == 'adam' and paper.eval.protocol == 'inter'
    assert config.train.inner_steps == 1 and config.eval.refine_optimizer == 'learned'
    assert config.model.residual and not paper.model.residual   # the paper's model exactly
    # The wider pool: the same held-out and validation classes, the extra domains in training.
    plus = md_config.get_config(held_out + ',plus')
    extra = {c for d in multidomain.EXTRA_BLOCKS
             for c in multidomain.layout('multidomain_plus')[d]}
    assert plus.data.name == 'multidomain_plus'
    wide = multidomain.layout('multidomain_plus')
    assert plus.data.test_classes == config.data.test_classes
    assert tuple(plus.data.val_domains) == val_domains
    assert set(plus.data.val_classes) == set(wide[val_domains[0]]) | set(wide['photos'])
    assert set(plus.data.train_classes) == (train - typefaces) | extra


def test_a_validation_only_domain_cannot_be_held_out():
    with pytest.raises(ValueError, match="got 'photos'"):
        md_config.get_config('photos')


def test_validation_is_scored_per_domain_and_averaged(trained_workdir, tmp_path):
    config, model, spec, hyper = workdir_lib.restore_hypernet(trained_workdir)
    config.eval.ways = 2
    config.data.train_classes, config.data.test_classes = (0, 1), (8, 9)
    config.data.val_classes = (2, 3, 4, 5, 6, 7)
    config.data.domains = {'t': (0, 1), 'v1': (2, 3, 4), 'v2': (5, 6, 7), 'h': (8, 9)}
    config.data.val_domains = ('v1', 'v2')
    pool = data.load_pool(config.data.name, 28, 1)
    # A domain's groups draw from its classes only.
    for d in ('v1', 'v2'):
        sampler = evaluate_lib.group_sampler(config, pool, 'validation', d)
        assert sampler.classes == list(config.data.domains[d])
    with pytest.raises(ValueError, match="no such domain"):
        evaluate_lib.group_sampler(config, pool, 'validation', 'zz')
    r = classification.evaluate(config, model, spec, hyper, classification.load(config), None)
    v = r['validation']
    parts = v['domains']
    assert list(parts) == ['v1', 'v2'] and v['groups'] == 2 * config.eval.val_groups
    assert v['accuracy'] == pytest.approx(np.mean([p['accuracy'] for p in parts.values()]))
    untrained = [p['controls']['untrained']['accuracy'] for p in parts.values()]
    assert v['controls']['untrained']['accuracy'] == pytest.approx(np.mean(untrained))
    # Each domain's figure is its own evaluation's, on that domain's groups.
    alone = evaluate_lib.evaluate(config, model, spec, hyper, pool, None, split='validation',
                                  quiet=True, domain='v2')
    assert parts['v2']['accuracy'] == pytest.approx(alone['accuracy'])
    # The curve measured during training: the same groups, the same per-domain mean.
    curve = evaluate_lib.ValidationCurve(config, model, spec, pool, str(tmp_path), every=1,
                                         groups=2 * config.eval.val_groups)
    assert curve.measure(1, hyper)['accuracy'] == pytest.approx(v['accuracy'])


def test_mean_over_domains_weighs_each_domain_the_same():
    parts = {'a': {'accuracy': 0.8, 'ci95': 0.03, 'groups': 50, 'refined': {'accuracy': 0.9,
                                                                            'steps': 1}},
             'b': {'accuracy': 0.6, 'ci95': 0.04, 'groups': 30, 'refined': {'accuracy': 0.5,
                                                                            'steps': 1}}}
    m = evaluate_lib.mean_over_domains(parts)
    assert m['accuracy'] == pytest.approx(0.7) and m['refined']['accuracy'] == pytest.approx(0.7)
    assert m['ci95'] == pytest.approx(0.025)      # sqrt(0.03^2 + 0.04^2) / 2
    assert m['groups'] == 80 and m['refined']['steps'] == 1 and m['domains'] == parts


def test_domain_episodes_draw_every_episode_from_one_domain():
    pool = {c: np.zeros((12, 4, 4, 1), np.uint8) for c in range(13)}
    domains = {'a': (0, 1, 2, 3), 'b': (4, 5, 6, 7, 8), 'c': (9, 10), 'd': (11, 12)}
    classes = list(range(12))           # 12 is not a training class
    sampler = data.EpisodeSampler(pool, classes, 3, 2, 2, seed=0, domains=domains)
    seen = set()
    for step in range(40):
        batch = sampler.sample(step, 4)
        for e in range(4):
            drawn = {classes[k] for k in batch.classes[e]}
            home = [d for d, cs in domains.items() if drawn <= set(cs)]
            assert len(home) == 1 and home[0] in ('a', 'b')   # c, d have < 3 classes
            seen.add(home[0])
    assert seen == {'a', 'b'}
    with pytest.raises(ValueError, match='no domain has 3'):
        data.EpisodeSampler(pool, classes, 3, 2, 2, seed=0, domains={'c': (9, 10)})


def _model(**switches):
    config = test_config.get_config()
    for k, v in switches.items():
        config.model[k] = v
    model, spec = build_model(config)
    images = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (6,) + spec.image_shape),
                         jnp.float32)
    variables = model.init(jax.random.PRNGKey(0), images)
    return model, spec, variables, images


def _sketches(model, variables, images):
    feats = model.apply(variables, images, method=PudNet.encode)
    return dataset_sketch(feats[:3]), dataset_sketch(feats[3:]) + 1.0


def test_film_generates_batchnorm_scale_and_bias_from_the_sketch():
    model, spec, variables, images = _model(film=True)
    params = variables['params']
    film = [k for k in params if k.startswith('film_')]
    assert len(film) == len(spec.shared)
    # Zero-initialised: FiLM starts as the shared leaves; moved off zero, it follows the sketch.
    s1, s2 = _sketches(model, variables, images)
    flat = lambda p: jax.tree_util.tree_leaves_with_path(p)
    same = model.apply(variables, s1, method=PudNet.generate)
    np.testing.assert_allclose(same['bn0']['scale'], 1.0)
    moved = jax.tree.map(lambda x: x, params)
    for k in film:
        moved[k]['kernel'] = jnp.full_like(moved[k]['kernel'], 0.01)
    a = model.apply({**variables, 'params': moved}, s1, method=PudNet.generate)
    b = model.apply({**variables, 'params': moved}, s2, method=PudNet.generate)
    assert not np.allclose(a['bn0']['scale'], b['bn0']['scale'])
    assert not np.allclose(a['bn0']['bias'], b['bn0']['bias'])
    assert flat(a).__len__() == flat(same).__len__()
    plain = _model()[2]['params']
    assert not any(k.startswith('film_') for k in plain)


def test_residual_generation_adds_a_learned_base_kernel():
    model, spec, variables, images = _model(residual=True)
    s1, s2 = _sketches(model, variables, images)
    a = model.apply(variables, s1, method=PudNet.generate)
    b = model.apply(variables, s2, method=PudNet.generate)
    gens = {k: g for k, g in variables['params'].items() if k.startswith('generators_')}
    assert all('base_kernel' in g for g in gens.values()) and len(gens) == 2
    base = gens['generators_3x3x1x8']['base_kernel'][0]
    k_a, k_b = a['conv0']['kernel'], b['conv0']['kernel']
    assert base.shape == k_a.shape
    # Mostly the base (the delta starts at a tenth of its scale), but sketch-dependent.
    assert not np.allclose(k_a, k_b)
    assert float(jnp.linalg.norm(k_a - base) / jnp.linalg.norm(base)) < 0.3
    plain = _model()[2]['params']
    assert not any('base_kernel' in g for k, g in plain.items() if k.startswith('generators_'))


def test_layer_norm_encoder_is_the_same_in_training_and_inference():
    model, spec, variables, images = _model(encoder_norm='layer')
    train_feats, _ = model.apply(variables, images, train=True, method=PudNet.encode,
                                 mutable=['batch_stats'])
    infer = model.apply(variables, images, train=False, method=PudNet.encode)
    np.testing.assert_allclose(train_feats, infer, rtol=1e-5, atol=1e-5)
    bn_model, _, bn_vars, _ = _model()
    bn_train, _ = bn_model.apply(bn_vars, images, train=True, method=PudNet.encode,
                                 mutable=['batch_stats'])
    bn_infer = bn_model.apply(bn_vars, images, train=False, method=PudNet.encode)
    assert not np.allclose(bn_train, bn_infer, atol=1e-3)   # the mismatch it removes


def test_mean_sq_pooling_sketch_holds_the_second_moment():
    model, spec, variables, images = _model(set_pooling='mean_sq')
    feats = model.apply(variables, images, method=PudNet.encode)
    m = test_config.get_config().model.sketch_dim
    assert feats.shape == (6, 2 * m)
    np.testing.assert_allclose(feats[:, m:], feats[:, :m] ** 2, rtol=1e-5)
    assert 'pool_project' in variables['params']
    # Two sets with the same mean and different spread give different kernels.
    x = images[:3]
    f = model.apply(variables, x, method=PudNet.encode)
    mean, sq = f[:, :m].mean(0), f[:, m:].mean(0)
    k1 = model.apply(variables, jnp.concatenate([mean, sq]), method=PudNet.generate)
    k2 = model.apply(variables, jnp.concatenate([mean, sq * 2.0]), method=PudNet.generate)
    assert not np.allclose(k1['conv0']['kernel'], k2['conv0']['kernel'])


def test_leave_one_out_loss_matches_numpy():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(9, 5)).astype(np.float32)
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    got = float(losses.leave_one_out_loss(jnp.asarray(f), jnp.asarray(labels), 3, 10.0))
    unit = lambda v: v / np.linalg.norm(v)
    total = 0.0
    for i in range(9):
        logits = []
        for k in range(3):
            members = [j for j in range(9) if labels[j] == k and j != i]
            logits.append(10.0 * unit(f[i]) @ unit(f[members].mean(0)))
        logits = np.asarray(logits)
        total += -(logits[labels[i]] - np.log(np.exp(logits).sum()))
    assert got == pytest.approx(total / 9, rel=1e-4)


def test_refinement_lowers_its_loss_and_is_reported(trained_workdir):
    import json
    import os
    with open(os.path.join(trained_workdir, 'results.json')) as f:
        assert 'refined' not in json.load(f)      # off by default (refine_steps = 0)
    config, model, spec, hyper = workdir_lib.restore_hypernet(trained_workdir)
    pool = data.load_pool(config.data.name, 28, 1)
    group = evaluate_lib.group_sampler(config, pool).sample(0, 1)[0]
    e = config.eval
    index = refine.labelled_index(e.ways, group.support.shape[0] // e.ways, e.shots)
    labels = group.support_labels[index]
    encode = lambda hv, x: model.apply(hv, x, method=PudNet.encode).mean(0)
    s0 = encode(hyper, group.support)

    def loss(s):
        params = model.apply(hyper, s, method=PudNet.generate)
        feats, _, _ = evaluate_lib.apply_with_dataset_stats(spec, params, group.support)
        return float(losses.leave_one_out_loss(feats[index], labels, e.ways, 10.0))
    s = refine.make_refine_fn(model, spec, e.ways, 8, 0.3, classification.tau_setting(config))(
        hyper, s0, group.support, index, labels)
    assert not np.allclose(s, s0) and loss(s) < loss(s0)
    config.eval.refine_steps, config.eval.refine_lr = 3, 0.3
    r = evaluate_lib.evaluate(config, model, spec, hyper, pool, trained_workdir, quiet=True)
    f = r['refined']
    assert f['steps'] == 3 and 0.0 <= f['accuracy'] <= 1.0 and f['seconds'] > 0
    assert {'conditioning_gain', 'gain_over_untrained', 'conditioning_gain_ci95'} <= set(f)
    assert 'PudNet + refined sketch' in evaluate_lib.format_results(r)


# The switches that change the hypernetwork's variable collections or the sketch's shape
# (FiLM and residual were trained end to end in the variant runs of the README).
@pytest.mark.parametrize('switch', [{'encoder_norm': 'layer'}, {'encoder_norm': 'none'},
                                    {'set_pooling': 'mean_sq'}])
def test_every_switch_trains_and_evaluates_end_to_end(switch, tmp_path):
    config = test_config.get_config()
    config.train.num_train_steps, config.train.val_every = 2, 0
    config.eval.groups = config.eval.val_groups = 2
    for k, v in switch.items():
        config.model[k] = v
    r = train_lib.train_and_evaluate(config, str(tmp_path / 'w'))
    assert 0.0 <= r['accuracy'] <= 1.0 and 'conditioning_gain' in r
    # The saved config and checkpoint restore.
    _, _, _, hyper = workdir_lib.restore_hypernet(str(tmp_path / 'w'))
    assert 'params' in hyper
