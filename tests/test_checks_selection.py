"""The scripts behind the typeface decision (docs/preregistration.md, third entry of
2026-12-06): the protocol calibration reads the same untrained control as evaluation, the
rule reads what it says, and the sweep table copies its sources."""

import json
import os

import numpy as np
import pytest

from checks import hard_protocol, sweep_table
from pudnet_jax import data as data_lib
from pudnet_jax import evaluate as evaluate_lib
from pudnet_jax import workdir as workdir_lib


def test_the_calibration_reads_the_untrained_control_of_evaluation(trained_workdir):
    config, model, spec, hyper = workdir_lib.restore_hypernet(trained_workdir)
    config = config.copy_and_resolve_references()
    config.eval.groups, config.eval.shots, config.eval.prediction_shots = 6, 3, 3
    pool = data_lib.load_pool(config.data.name, config.data.image_size, config.data.channels)
    r = evaluate_lib.evaluate(config, model, spec, hyper, pool, split='test', quiet=True)
    mean, ci = hard_protocol.untrained_accuracy(config, pool)
    assert mean == pytest.approx(100 * r['controls']['untrained']['accuracy'], abs=1e-9)
    assert ci == pytest.approx(100 * r['controls']['untrained']['ci95'], abs=1e-9)


def test_the_calibration_picks_the_closest_cell_and_on_a_tie_the_more_labelled():
    cells = [{'ways': 5, 'shots': 2, 'mean': 65.0}, {'ways': 10, 'shots': 3, 'mean': 59.0},
             {'ways': 10, 'shots': 5, 'mean': 65.0}]
    assert hard_protocol.select(cells, 62.0)['shots'] == 5       # 3.0 away either way
    assert hard_protocol.select(cells, 60.0) == cells[1]


def _arm(root, name, hard, default):
    w = os.path.join(root, name)
    os.makedirs(w)
    for file, acc in (('hard_protocol.json', hard), ('results.json', default)):
        r = {'ways': 10, 'shots': 3, 'accuracy': acc - 0.1,
             'controls': {'untrained': {'accuracy': 0.5}, 'mean_sketch': {'accuracy': 0.6}},
             'refined': {'accuracy': acc, 'ci95': 0.01, 'gain_over_other_group': 0.0}}
        with open(os.path.join(w, file), 'w') as f:
            json.dump(r, f)
    return w


@pytest.mark.parametrize('candidate, adopted', [
    ((0.82, 0.91, 0.91), True),      # above on all three
    ((0.82, 0.89, 0.89), False),     # above on one of three
    ((0.75, 0.91, 0.91), False)])    # above on two of three, but the mean D is below 0
def test_the_rule_adopts_on_the_mean_and_two_of_three(tmp_path, candidate, adopted):
    pairs = []
    for d, base, cand in zip(('a', 'b', 'c'), (0.80, 0.90, 0.90), candidate):
        pairs.append(f"{d}:{_arm(tmp_path, d + '0', base, base)}:"
                     f"{_arm(tmp_path, d + '1', cand, cand - 0.01)}")
    out = hard_protocol.decide(pairs, str(tmp_path / 'decision'))
    d = [r['D'] for r in out['rows']]
    np.testing.assert_allclose(d, np.subtract(candidate, (0.80, 0.90, 0.90)))
    assert out['adopted'] is adopted and out['above'] == sum(x > 0 for x in d)
    assert out['mean_D'] == pytest.approx(np.mean(d))
    with open(str(tmp_path / 'decision.md')) as f:
        assert ('**adopted**' if adopted else '**not adopted**') in f.read()
    # Bad input: one line naming what is wrong.
    with pytest.raises(SystemExit, match='DOMAIN:W_DEFAULT:W_CANDIDATE'):
        hard_protocol.decide(['a:only_one'], str(tmp_path / 'bad'))
    with pytest.raises(SystemExit, match='hard_protocol.json: not found'):
        hard_protocol.decide([f"a:{tmp_path / 'nowhere'}:{tmp_path / 'a1'}"],
                             str(tmp_path / 'bad'))


def test_the_sweep_table_copies_its_sources(tmp_path):
    lodo_row = {'domain': 'math', 'groups': 150, 'untrained': 0.9, 'mean_sketch': 0.91,
                'pudnet': 0.92,
                'refined': 0.97, 'refined_ci95': 0.01, 'refined_over_untrained': 0.07,
                'refined_over_untrained_ci95': 0.01, 'refined_gain': 0.06,
                'refined_gain_ci95': 0.01, 'refined_over_other_group': 0.0,
                'refined_over_other_group_ci95': 0.01}
    seeds_row = {'seed': 0, 'pudnet': 0.7, 'single_pass': 0.69, 'untrained': 0.62,
                 'mean_sketch': 0.68, 'pretrained': 0.67, 'over_untrained': 0.08,
                 'over_untrained_ci95': 0.01, 'over_pretrained': 0.03,
                 'over_pretrained_ci95': 0.01}
    paths = {}
    for name, content in (('lodo', {'rows': [lodo_row]}),
                          ('seeds', {'arms': {'S': {'seeds': [seeds_row]}}}),
                          ('before', {'rows': [dict(lodo_row, refined=0.98)]})):
        paths[name] = str(tmp_path / f'{name}.json')
        with open(paths[name], 'w') as f:
            json.dump(content, f)
    out = str(tmp_path / 'table')
    sweep_table.main(['--lodo', paths['lodo'], '--seeds', f"{paths['seeds']}:S:0:animal",
                      '--before', paths['before'], '--out', out])
    with open(out + '.json') as f:
        rows = json.load(f)['rows']
    assert [r['domain'] for r in rows] == ['math', 'animal']     # the pool's order
    assert rows[0]['pudnet'] == 0.97 and rows[0]['single_pass'] == 0.92
    assert rows[0]['before'] == 0.98 and 'before' not in rows[1]
    assert rows[1]['pudnet'] == 0.7 and rows[1]['over_pretrained'] == 0.03
    with open(out + '.md') as f:
        text = f.read()
    assert '| math | 0 | 90.00 | 91.00 | 92.00 | **97.00** | +7.00 ± 1.00 |' in text
    with pytest.raises(SystemExit):      # argparse's one-line error, exit status 2
        sweep_table.main(['--lodo', paths['lodo'], '--seeds', 'animal', '--out', out])
    with pytest.raises(SystemExit, match='has no seed 3'):
        sweep_table.main(['--lodo', paths['lodo'], '--seeds', f"{paths['seeds']}:S:3:animal",
                          '--out', out])
