"""The validation curve during training, training on a fixed number of groups, and the
paper's studies as commands (pudnet_jax.studies) at tiny sizes."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from configs import test as test_config
from pudnet_jax import data as data_lib
from pudnet_jax import evaluate
from pudnet_jax import input_pipeline
from pudnet_jax import multidomain
from pudnet_jax.studies import paper as studies
from pudnet_jax import train as train_lib
from pudnet_jax import workdir as workdir_lib
from pudnet_jax.summaries import read_scalars


def test_validation_curve_is_recorded_and_changes_no_parameter(trained_workdir, tmp_path):
    with open(os.path.join(trained_workdir, 'results.json')) as f:
        results = json.load(f)
    with open(os.path.join(trained_workdir, evaluate.VALIDATION_CURVE_FILE)) as f:
        curve = json.load(f)
    assert results['validation_curve'] == curve
    config = test_config.get_config()
    assert [p['step'] for p in curve['points']] == [2, 4, 6]
    assert curve['groups'] == config.train.val_groups and curve['split'] == 'validation'
    best = max(curve['points'], key=lambda p: (p['accuracy'], -p['step']))
    assert (curve['best_step'], curve['best_accuracy']) == (best['step'], best['accuracy'])
    # The curve's groups are the first validation groups of results.json: at the last step
    # and with as many groups, the same number.
    assert config.eval.val_groups == config.train.val_groups
    assert curve['points'][-1]['accuracy'] == results['validation']['accuracy']
    scalars = read_scalars(trained_workdir)
    assert [(s, pytest.approx(v)) for s, v in scalars['train/validation_accuracy']] == [
        (p['step'], p['accuracy']) for p in curve['points']]

    # Without the curve, training ends on bit-identical parameters.
    off = test_config.get_config()
    off.train.val_every = 0
    train_lib.train_and_evaluate(off, str(tmp_path / 'off'))
    assert not os.path.exists(tmp_path / 'off' / evaluate.VALIDATION_CURVE_FILE)
    jax.tree.map(np.testing.assert_array_equal, workdir_lib.restore_hypernet(trained_workdir)[3],
                 workdir_lib.restore_hypernet(str(tmp_path / 'off'))[3])


def test_fixed_training_groups_are_cycled_in_passes():
    pool = {c: np.stack([np.full((4, 4, 1), 10 * c + i, np.uint8) for i in range(6)])
            for c in range(3)}
    sampler = data_lib.EpisodeSampler(pool, [0, 1, 2], 2, 1, 1, seed=3)
    t = test_config.get_config().train
    t.episodes_per_step, t.num_groups = 2, 3
    seen = [input_pipeline.training_batch(sampler, step, t) for step in range(1, 7)]   # 4 passes
    episodes = [b[e] for b in seen for e in range(2)]
    groups = [sampler.sample(g, 1)[0] for g in range(3)]
    ids = [next(g for g in range(3) if np.array_equal(ep.support, groups[g].support)
                and np.array_equal(ep.query, groups[g].query)) for ep in episodes]
    assert [sorted(ids[i:i + 3]) for i in range(0, 12, 3)] == [[0, 1, 2]] * 4
    assert len({tuple(ids[i:i + 3]) for i in range(0, 12, 3)}) > 1     # the order changes
    t.num_groups = None
    fresh = input_pipeline.training_batch(sampler, 1, t)
    np.testing.assert_array_equal(fresh.support, sampler.sample(1, 2).support)


def test_a_sweep_study_writes_its_figure_and_numbers(trained_workdir, tmp_path):
    out, runs = str(tmp_path / 'docs'), str(tmp_path / 'runs')
    config = test_config.get_config()
    # The study at the test config's own scale: its point η = 0.1, seed 0 is the session's
    # trained workdir, copied in and reused; three runs train (η = 0.6, and seed 1 of both).
    same = {'train.num_train_steps': config.train.num_train_steps,
            'eval.groups': config.eval.groups, 'eval.val_groups': config.eval.val_groups}
    eta = studies.STUDIES['eta']
    shutil.copytree(trained_workdir, studies.run_dir(runs, eta, config.model.eta),
                    ignore=shutil.ignore_patterns('.lock'))
    stamp = lambda p: os.path.getmtime(os.path.join(p['workdir'], 'results.json'))
    summary = studies.run_study(eta, config, runs, out, values=(0.1, 0.6), overrides=same,
                                seeds=(0, 1))
    with open(os.path.join(out, 'fig6_eta.json')) as f:
        assert json.load(f) == json.loads(json.dumps(summary))
    assert os.path.getsize(os.path.join(out, 'fig6_eta.png')) > 0
    assert [(p['value'], p['seed']) for p in summary['points']] == [
        (0.1, 0), (0.1, 1), (0.6, 0), (0.6, 1)]
    assert summary['points'][0]['workdir'] == studies.run_dir(runs, eta, 0.1)
    for p in summary['points']:
        with open(os.path.join(p['workdir'], 'results.json')) as f:
            r = json.load(f)
        with open(os.path.join(p['workdir'], 'config.json')) as f:
            saved = json.load(f)
        assert (saved['model']['eta'], saved['seed']) == (p['value'], p['seed'])
        assert p['test']['accuracy'] == r['accuracy']
        assert p['test']['mean_sketch'] == r['controls']['mean_sketch']['accuracy']
        assert p['validation']['accuracy'] == r['validation']['accuracy']
    # The copied run was reused (copytree keeps the file's time), not trained again.
    assert stamp(summary['points'][0]) == os.path.getmtime(
        os.path.join(trained_workdir, 'results.json'))
    with open(os.path.join(trained_workdir, 'results.json')) as f:
        assert summary['points'][0]['test']['accuracy'] == json.load(f)['accuracy']
    # Seeds differ (another initialisation and other episodes), and the row per value
    # averages them.
    assert summary['points'][0]['test'] != summary['points'][1]['test']
    for row, (a, b) in zip(summary['by_value'], [summary['points'][:2], summary['points'][2:]]):
        assert row['test'] == pytest.approx((a['test']['accuracy'] + b['test']['accuracy']) / 2)
        assert row['test_seed_std'] == pytest.approx(
            np.std([a['test']['accuracy'], b['test']['accuracy']], ddof=1))
    chosen = max(summary['by_value'], key=lambda r: (r['validation'],
                                                     -summary['by_value'].index(r)))
    assert summary['selected_on_validation']['value'] == chosen['value']
    assert 'seed_spread' in summary
    # Run again: the finished runs are reused, not trained again.
    stamps = [stamp(p) for p in summary['points']]
    again = studies.run_study(eta, config, runs, out, values=(0.1, 0.6), overrides=same,
                              seeds=(0, 1))
    assert [stamp(p) for p in again['points']] == stamps


def test_the_loss_study_plots_the_runs_scalars(trained_workdir, tmp_path):
    workdir = str(tmp_path / 'w')
    shutil.copytree(trained_workdir, workdir, ignore=shutil.ignore_patterns('.lock'))
    out = str(tmp_path / 'docs')
    summary = studies.run_study(studies.STUDIES['losses'], test_config.get_config(), workdir,
                                out, overrides={'train.log_every': 2})
    scalars = read_scalars(workdir)
    for tag, _ in studies.LOSS_TAGS:
        assert summary['curves'][tag] == [[s, v] for s, v in scalars[tag]]
        assert [s for s, _ in scalars[tag]] == [2, 4, 6]
    assert os.path.getsize(os.path.join(out, 'fig7_losses.png')) > 0


def test_cca_matches_the_canonical_correlations_of_numpy_and_is_near_zero_for_noise():
    from pudnet_jax.studies import cca
    rng = np.random.default_rng(0)
    n = 400
    z = rng.normal(size=(n, 2))                      # two shared latent factors
    x = np.c_[z, rng.normal(size=(n, 3))] @ rng.normal(size=(5, 5))
    y = np.c_[z * [1.0, 0.5], rng.normal(size=(n, 2))] @ rng.normal(size=(4, 4))
    y += 0.3 * rng.normal(size=y.shape)
    fit, test = np.arange(0, n, 2), np.arange(1, n, 2)
    in_fit, held = cca.cca(x, y, fit, test, reg=0.0)
    # Independently: the singular values of Cxx^-1/2 Cxy Cyy^-1/2 on the fitted rows.
    def inv_sqrt(c):
        w, v = np.linalg.eigh(c)
        return v @ np.diag(w ** -0.5) @ v.T
    xc, yc = x[fit] - x[fit].mean(0), y[fit] - y[fit].mean(0)
    m = inv_sqrt(xc.T @ xc) @ (xc.T @ yc) @ inv_sqrt(yc.T @ yc)
    np.testing.assert_allclose(in_fit, np.linalg.svd(m, compute_uv=False), atol=1e-6)
    assert held[0] > 0.9 and held[1] > 0.6 and abs(held[3]) < 0.25   # two real factors
    noise = cca.cca(x, rng.normal(size=y.shape), fit, test)[1]
    assert np.abs(noise).max() < 0.3                                   # nothing held out


def test_the_cca_study_writes_its_analyses(trained_workdir, tmp_path):
    from pudnet_jax.studies import __main__ as studies_main
    out = str(tmp_path / 'cca')
    studies_main.main(['cca', '--workdir', trained_workdir, '--groups', '8', '--dims', '2',
                       '--train_steps', '2', '--out', out])
    with open(out + '.json') as f:
        results = json.load(f)
    name = os.path.basename(os.path.normpath(trained_workdir))
    assert set(results['analyses']) == {'data ↔ trained kernels',
                                        f'{name}: sketch ↔ predicted kernels',
                                        f'{name}: data ↔ predicted kernels'}
    for v in results['analyses'].values():
        assert len(v['held_out']) == 2 and all(-1 <= c <= 1 for c in v['held_out'])
        assert all(0 <= c <= 1 + 1e-9 for c in v['fit'])
    assert results['groups'] == 8 and os.path.getsize(out + '.png') > 0


def _fake_lodo_workdir(root, domain, accuracy):
    os.makedirs(os.path.join(root, domain))
    stat = {'accuracy': accuracy - 0.1, 'ci95': 0.01}
    results = {'accuracy': accuracy, 'ci95': 0.01, 'groups': 5,
               'controls': {'untrained': stat, 'mean_sketch': stat},
               'conditioning_gain': 0.1, 'conditioning_gain_ci95': 0.01,
               'gain_over_untrained': 0.1, 'gain_over_untrained_ci95': 0.01,
               'validation': {'accuracy': 0.5}, 'train_seconds': 1.0}
    config = {'data': {'val_domain': 'mnist', 'train_classes': [1, 2], 'test_classes': [3]}}
    for name, obj in (('results.json', results), ('config.json', config)):
        with open(os.path.join(root, domain, name), 'w') as f:
            json.dump(obj, f)


def test_the_lodo_sweep_keeps_rows_it_did_not_rerun(tmp_path, monkeypatch):
    from pudnet_jax.studies import lodo
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    root, out = str(tmp_path / 'runs'), str(tmp_path / 'lodo')
    _fake_lodo_workdir(root, 'math', 0.7)          # finished: nothing is trained
    _fake_lodo_workdir(root, 'animal', 0.6)
    lodo.main(['--root', root, '--domains', 'math,animal', '--out', out])
    shutil.rmtree(os.path.join(root, 'animal'))    # its workdir gone: the row stays
    _fake_lodo_workdir(str(tmp_path / 'runs2'), 'math', 0.8)
    lodo.main(['--root', str(tmp_path / 'runs2'), '--domains', 'math', '--out', out])
    with open(out + '.json') as f:
        saved = json.load(f)
    assert [(r['domain'], r['pudnet']) for r in saved['rows']] == [('math', 0.8), ('animal', 0.6)]
    assert saved['missing'] == []
    assert [r['validation_domain'] for r in saved['rows']] == ['mnist', 'mnist']
    # A row's validation domains are those its results were measured on.
    path = os.path.join(tmp_path, 'runs2', 'math', 'results.json')
    with open(path) as f:
        results = json.load(f)
    results['validation']['domains'] = {'mnist': {}, 'photos': {}}
    with open(path, 'w') as f:
        json.dump(results, f)
    assert lodo.row(str(tmp_path / 'runs2'), 'math')['validation_domain'] == 'mnist + photos'
    with open(out + '.md') as f:
        assert len(f.read().strip().splitlines()) == 2 + 2
    # Rows made with other overrides are not mixed in.
    lodo.main(['--root', str(tmp_path / 'runs2'), '--domains', 'math', '--out', out,
               '--set', 'model.film=True'])
    with open(out + '.json') as f:
        assert [r['domain'] for r in json.load(f)['rows']] == ['math']
    # ... nor rows of another variant of the config; the variant reaches the command.
    lodo.main(['--root', root, '--domains', 'math', '--out', out, '--variant', 'paper'])
    with open(out + '.json') as f:
        saved = json.load(f)
    assert [r['domain'] for r in saved['rows']] == ['math'] and saved['variant'] == 'paper'
    args = lodo.parse_args(['--variant', 'paper'])
    assert f'--config={lodo.CONFIG}:mnist,paper' in lodo.command(args, 'mnist', 'w')
    # By default, every domain the variant's pool can hold out: the default's pool holds
    # the typeface domains, `,chars` (the default before them) does not.
    assert args.domains == list(multidomain.POOLS['multidomain_styles'][:-1])
    assert 'typefaces_a' in args.domains and 'photos' not in args.domains
    assert lodo.parse_args(['--variant', 'chars']).domains == list(multidomain.DOMAINS)
    with pytest.raises(SystemExit):
        lodo.main(['--domains', 'klingon', '--out', out])


def test_the_studies_command_lists_its_studies(capsys):
    from pudnet_jax.studies import __main__ as studies_main
    with pytest.raises(SystemExit) as e:
        studies_main.main(['nope'])
    assert e.value.code == 2
    assert 'groups, eta, losses, lodo, cca' in capsys.readouterr().err


def test_a_finished_run_is_reused_across_compare_settings_and_added_fields(tmp_path):
    config = test_config.get_config()
    path = str(tmp_path / 'run')
    workdir_lib.save_config(config, path)
    with open(os.path.join(path, 'results.json'), 'w') as f:
        json.dump({}, f)
    assert studies._finished(path, config)
    other = test_config.get_config()
    other.compare.groups += 1                  # read by --mode=compare only
    assert studies._finished(path, other)
    other.eval.groups += 1                     # results.json would differ
    assert not studies._finished(path, other)
    with open(os.path.join(path, workdir_lib.CONFIG_FILE)) as f:
        saved = json.load(f)
    del saved['model']['film']                 # a workdir saved before the field existed
    with open(os.path.join(path, workdir_lib.CONFIG_FILE), 'w') as f:
        json.dump(saved, f)
    assert studies._finished(path, config)     # config.model.film is the default, False


def test_the_lodo_table_names_the_learned_step_and_the_other_group_control(tmp_path, monkeypatch):
    from pudnet_jax.studies import lodo
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    root, out = str(tmp_path / 'runs'), str(tmp_path / 'lodo')
    _fake_lodo_workdir(root, 'cyrillic', 0.7)
    path = os.path.join(root, 'cyrillic', 'results.json')
    with open(path) as f:
        results = json.load(f)
    results['refined'] = {'accuracy': 0.8, 'ci95': 0.01, 'conditioning_gain': 0.2,
                          'conditioning_gain_ci95': 0.02, 'gain_over_untrained': 0.2,
                          'gain_over_untrained_ci95': 0.02, 'seconds': 0.09, 'steps': 1,
                          'optimizer': 'learned', 'gain_over_other_group': 0.013,
                          'gain_over_other_group_ci95': 0.005}
    with open(path, 'w') as f:
        json.dump(results, f)
    lodo.main(['--root', root, '--domains', 'cyrillic', '--out', out])
    with open(out + '.md') as f:
        head, _, line = f.read().strip().splitlines()
    assert 'PudNet + learned step' in head and "another group's" in head
    assert line.endswith('| +1.30 ± 0.50 |') and '80.00 ± 1.00' in line
    # With the pretrained control (eval.pretrained_control): its accuracy and the refined
    # network's paired gain over it.
    results['controls']['pretrained'] = {'accuracy': 0.85, 'ci95': 0.01}
    results.update(gain_over_pretrained=-0.15, gain_over_pretrained_ci95=0.02)
    results['refined'].update(gain_over_pretrained=-0.05, gain_over_pretrained_ci95=0.01)
    with open(path, 'w') as f:
        json.dump(results, f)
    lodo.main(['--root', root, '--domains', 'cyrillic', '--out', out])
    with open(out + '.md') as f:
        head, _, line = f.read().strip().splitlines()
    assert head.endswith('| pretrained control | PudNet (refined, where it is) − pretrained |')
    assert line.endswith('| 85.00 | -5.00 ± 1.00 |')


def _fake_settings(root, domain, default_accs, other):
    """A settings.json of one domain: cells λ 0.5 / 1 × k 0-2, the default (0.5:1) with
    `default_accs` per group, λ 1 with k 1 shifted by `other` points on every group."""
    from pudnet_jax.studies import settings
    os.makedirs(os.path.join(root, domain), exist_ok=True)
    cells = {}
    for scale in (0.5, 1.0):
        for k in range(3):
            accs = list(default_accs)
            if (scale, k) == (1.0, 1):
                accs = [a + other for a in accs]
            cells[settings.key(scale, k)] = {'scale': scale, 'steps': k, 'per_group': accs,
                                            'seconds': 0.1 * k}
    out = {'domain': domain, 'checkpoint_step': 5, 'groups': len(default_accs),
           'scales': [0.5, 1.0], 'steps': 2, 'cells': cells,
           'controls': {'untrained': [0.4] * len(default_accs),
                        'pretrained': [0.55] * len(default_accs),
                        'mean_sketch:0.5': [0.45] * len(default_accs),
                        'mean_sketch:1': [0.45] * len(default_accs)}}
    with open(os.path.join(root, domain, 'settings.json'), 'w') as f:
        json.dump(out, f)


def test_the_settings_study_applies_its_rule_on_paired_cells(tmp_path):
    from pudnet_jax.studies import settings
    root, out = str(tmp_path / 'runs'), str(tmp_path / 'settings')
    base = [0.5, 0.6, 0.7]
    argv = ['--root', root, '--domains', 'math,mnist,cyrillic', '--scales', '0.5,1',
            '--steps', '2', '--candidates', '1', '--out', out]
    # λ 1 higher on two domains of three, by more than it loses on the third: adopted.
    for d, shift in (('math', 0.05), ('mnist', 0.05), ('cyrillic', -0.02)):
        _fake_settings(root, d, base, shift)
    settings.main(argv)      # every domain's cells exist: nothing is measured again
    with open(out + '.json') as f:
        s = json.load(f)
    assert s['decision'] == {**s['decision'], 'best_candidate': '1:1', 'adopted': '1:1',
                             'changed': True, 'needs_domains_above_default': 2}
    c = s['cells']['1:1']
    assert c['above_default'] == 2 and abs(c['S'] - (np.mean(base) + 0.08 / 3)) < 1e-9
    assert abs(c['minus_default']['cyrillic']['points'] + 0.02) < 1e-9
    assert not s['cells']['1:2']['candidate'] and s['cells']['0.5:1']['candidate']
    assert 'adopted: λ 1, 1 step' in open(out + '.md').read()
    assert '| pretrained control | 55.00 | 55.00 | 55.00 | 55.00 |' in open(out + '.md').read()
    # Higher S, but above the default on one domain of three: the default stays.
    for d, shift in (('math', 0.3), ('mnist', -0.01), ('cyrillic', -0.01)):
        _fake_settings(root, d, base, shift)
    settings.main(argv)
    with open(out + '.json') as f:
        d = json.load(f)['decision']
    assert d['best_candidate'] == '1:1' and not d['changed'] and d['adopted'] == '0.5:1'
    with pytest.raises(SystemExit):      # the default must be a candidate cell
        settings.parse_args(argv + ['--default', '0.5:2'])


def test_the_settings_study_measures_what_evaluate_reports(tmp_path):
    """Each measured cell is the evaluation's own number: the single pass, the refined
    network and the untrained control at λ 1 and 1 learned step equal `evaluate`'s."""
    from configs import test as test_config
    from pudnet_jax import data, evaluate as evaluate_lib, train as train_lib
    from pudnet_jax import workdir as workdir_lib
    from pudnet_jax.studies import settings
    config = test_config.get_config()
    config.model.residual = True
    config.train.inner_steps, config.train.inner_lr = 1, 30.0
    config.eval.refine_steps, config.eval.refine_optimizer = 1, 'learned'
    config.train.num_train_steps, config.train.val_every = 2, 0
    root = str(tmp_path / 'runs')
    train_lib.train_and_evaluate(config, os.path.join(root, 'mnist'))
    cells = settings.measure(root, 'mnist', [0.5, 1.0], 2, config=config)
    assert set(cells['cells']) == {settings.key(s, k) for s in (0.5, 1.0) for k in range(3)}
    _, model, spec, hyper = workdir_lib.restore_hypernet(os.path.join(root, 'mnist'), config)
    pool = data.load_pool(config.data.name, 28, 1)
    r = evaluate_lib.evaluate(config, model, spec, hyper, pool, os.path.join(root, 'mnist'),
                              quiet=True)
    mean = lambda c: float(np.mean(cells['cells'][c]['per_group']))
    assert abs(mean('1:0') - r['accuracy']) < 1e-6
    assert abs(mean('1:1') - r['refined']['accuracy']) < 1e-6
    assert abs(np.mean(cells['controls']['untrained'])
               - r['controls']['untrained']['accuracy']) < 1e-6
    assert len(cells['cells']['0.5:2']['per_group']) == config.eval.groups
    assert 'pretrained' not in cells['controls']       # eval.pretrained_control is off
    # The mean-sketch control per λ (it depends on λ; the untrained one, scored once, not).
    assert abs(np.mean(cells['controls']['mean_sketch:1'])
               - r['controls']['mean_sketch']['accuracy']) < 1e-6
    assert len(cells['controls']['mean_sketch:0.5']) == config.eval.groups


def test_study_jobs_run_at_most_parallel_at_once_each_with_its_log(tmp_path):
    """`studies.jobs.run_pinned` (the lodo and settings studies' scheduler): every job runs,
    its output lands in its own log, a failure is reported with its exit status, and no
    more than `parallel` jobs overlap."""
    import sys
    from pudnet_jax.studies import jobs
    code = ("import sys, time; print('start', time.time(), flush=True); time.sleep(0.4); "
            "print('end', time.time()); sys.exit(int(sys.argv[1]))")
    specs = [(f'job{i}', [sys.executable, '-c', code, str(3 if i == 2 else 0)],
              str(tmp_path / f'j{i}' / 'log')) for i in range(4)]
    status = jobs.run_pinned(specs, parallel=2, poll_s=0.05)
    assert status == {'job0': 0, 'job1': 0, 'job2': 3, 'job3': 0}
    spans = []
    for _, _, log in specs:
        lines = dict(line.split() for line in open(log).read().split('\n') if line)
        spans.append((float(lines['start']), float(lines['end'])))
    for t, _ in spans:     # at each start, how many jobs are running
        assert sum(s <= t < e for s, e in spans) <= 2


def test_the_seeds_study_reads_each_seed_and_gives_the_t_interval_over_seeds(
        trained_workdir, tmp_path):
    from pudnet_jax.studies import seeds
    # A real training's results: its row is what its results.json says (single pass).
    real = seeds.seed_row(trained_workdir)
    with open(os.path.join(trained_workdir, 'results.json')) as f:
        r = json.load(f)
    assert real['method'] == 'single pass' and real['pudnet'] == r['accuracy']
    assert real['over_untrained'] == r['gain_over_untrained']
    assert real['over_mean_sketch'] == r['conditioning_gain']
    # Three seeds of an arm with the refined network and the pretrained control: the
    # refined gains are read, and the interval over seeds is Student's t with 2 degrees of
    # freedom (t = 4.3027), the seed the unit.
    dirs = []
    for seed, gain in enumerate((0.005, 0.015, 0.07)):
        _fake_lodo_workdir(str(tmp_path / 'arm'), f's{seed}', 0.7)
        w = str(tmp_path / 'arm' / f's{seed}')
        with open(os.path.join(w, 'results.json')) as f:
            res = json.load(f)
        res['controls']['pretrained'] = {'accuracy': 0.75, 'ci95': 0.01}
        res.update(gain_over_pretrained=-0.05, gain_over_pretrained_ci95=0.01)
        res['refined'] = {'accuracy': 0.75 + gain, 'ci95': 0.01, 'conditioning_gain': 0.2,
                          'conditioning_gain_ci95': 0.02, 'gain_over_untrained': 0.2,
                          'gain_over_untrained_ci95': 0.02, 'seconds': 0.09, 'steps': 1,
                          'optimizer': 'learned', 'gain_over_pretrained': gain,
                          'gain_over_pretrained_ci95': 0.02}
        with open(os.path.join(w, 'results.json'), 'w') as f:
            json.dump(res, f)
        with open(os.path.join(w, 'config.json')) as f:
            cfg = json.load(f)
        with open(os.path.join(w, 'config.json'), 'w') as f:
            json.dump(dict(cfg, seed=seed), f)
        dirs.append(w)
    out = str(tmp_path / 'docs' / 'arms')
    seeds.main([f'S={",".join(dirs)}', f'R={trained_workdir}', '--out', out])
    with open(out + '.json') as f:
        saved = json.load(f)['arms']
    assert [row['seed'] for row in saved['S']['seeds']] == [0, 1, 2]
    g = saved['S']['summary']['over_pretrained']
    values = np.array([0.005, 0.015, 0.07])
    half = 4.3027 * values.std(ddof=1) / np.sqrt(3)
    np.testing.assert_allclose([g['mean'], g['ci95_low'], g['ci95_high']],
                               [values.mean(), values.mean() - half, values.mean() + half],
                               rtol=1e-4)
    assert g['seeds_ci_above_0'] == 1          # only 0.07 - 0.02 is above 0
    assert saved['S']['summary']['pudnet']['mean'] == pytest.approx(0.75 + values.mean())
    # An arm without the pretrained control has no such column, and the table says so.
    assert 'over_pretrained' not in saved['R']['summary']
    with open(out + '.md') as f:
        text = f.read()
    assert '| S | 1 | 76.50 |' in text and '+3.00 (3.50) [-5.69, +11.69]; 1/3' in text
    assert 'nan' not in text             # one seed: its value, no spread
    assert os.path.getsize(out + '.png') > 1000
    with pytest.raises(SystemExit):
        seeds.main(['S' + ''.join(dirs)])     # no '='
    # A seed recorded in an earlier output joins new workdirs: the same row, read back.
    again = str(tmp_path / 'docs' / 'joined')
    seeds.main([f'S={out}.json:S:2,{dirs[0]},{dirs[1]}', '--out', again])
    with open(again + '.json') as f:
        joined = json.load(f)['arms']['S']
    assert [row['seed'] for row in joined['seeds']] == [2, 0, 1]
    assert joined['seeds'][0] == saved['S']['seeds'][2]
    assert joined['summary']['over_pretrained']['mean'] == pytest.approx(g['mean'])
    for bad in (f'S={out}.json:S:7', f'S={out}.json:Q:0'):
        with pytest.raises(SystemExit, match='seed 7|no arm'):
            seeds.main([bad, '--out', again])


def test_the_lodo_sweep_takes_the_domains_of_every_pool_but_validation(tmp_path, monkeypatch,
                                                                        capsys):
    from pudnet_jax.studies import lodo
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    root, out = str(tmp_path / 'runs'), str(tmp_path / 'lodo')
    _fake_lodo_workdir(root, 'typefaces_b', 0.7)     # finished: nothing is trained
    _fake_lodo_workdir(root, 'math', 0.6)
    lodo.main(['--root', root, '--domains', 'typefaces_b,math', '--variant', 'styles',
               '--out', out])
    with open(out + '.json') as f:
        saved = json.load(f)
    assert [r['domain'] for r in saved['rows']] == ['math', 'typefaces_b']
    with pytest.raises(SystemExit):
        lodo.parse_args(['--domains', 'photos'])     # a validation-only domain
    assert "unknown ['photos']" in capsys.readouterr().err
