"""The Python API (pudnet_jax.api), the shipped hypernetwork and the package's entry points."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import pudnet_jax
from pudnet_jax import evaluate, predictor, pretrained
from pudnet_jax.errors import UserError
from pudnet_jax.pretrained import __main__ as export

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED_MAX_BYTES = 3_000_000


# ----------------------------------------------------------------------------- shipped

@pytest.mark.parametrize('name', sorted(pretrained.REGISTRY))
def test_shipped_hypernetwork_loads_and_reproduces_its_recorded_accuracy(name):
    entry = pretrained.REGISTRY[name]
    assert export.folder_size(entry.folder) < SHIPPED_MAX_BYTES
    with open(os.path.join(entry.folder, 'results.json')) as f:
        results = json.load(f)
    # The registry records the test accuracy beside its controls exactly as results.json.
    assert entry.measured == export.measured(results)
    assert entry.measured['controls']['untrained']['networks'] >= 1
    with open(os.path.join(entry.folder, export.CHECK_FILE)) as f:
        check = json.load(f)

    hyper = pudnet_jax.load_pretrained(name)
    assert hyper.info['measured'] == entry.measured
    r = hyper.evaluate(check['groups'], quiet=True)
    # Same groups, same network: the same accuracies (a few test images of slack for
    # another JAX/XLA version's rounding).
    slack = 3 / (check['groups'] * r['ways'] * r['test_shots'])
    assert abs(r['accuracy'] - check['accuracy']) <= slack
    for control in ('untrained', 'mean_sketch'):
        assert abs(r['controls'][control]['accuracy']
                   - check['controls'][control]['accuracy']) <= slack


def test_unknown_shipped_name_is_one_clear_error():
    with pytest.raises(UserError, match=r"No shipped hypernetwork 'nope'; shipped: \['mnist"):
        pudnet_jax.load_pretrained('nope')


# ----------------------------------------------------------------------------- the API

def test_predict_is_the_protocols_network_and_takes_uint8_or_float(trained_workdir):
    hyper = pudnet_jax.load(trained_workdir)
    group = hyper.heldout_group(0)
    net, variables = hyper.predict(group.images)
    assert type(net).__name__ == 'ConvNet3' and set(variables) == {'params', 'batch_stats'}

    # The network of results.json's protocol for the same group.
    sampler = evaluate.group_sampler(hyper.config, hyper.pool(), 'test')
    same = sampler.sample(0, 1)[0]
    np.testing.assert_array_equal(same.support, group.images)
    protocol = predictor.make_predictor(hyper.model, hyper.spec)(hyper.variables, same.support)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 variables, protocol)
    scores = evaluate.make_scores_fn(hyper.spec, len(group.classes))(
        protocol, *evaluate.labelled(same, len(group.classes), hyper.config.eval.shots),
        same.query)
    labelled = evaluate.labelled(same, len(group.classes), hyper.config.eval.shots)
    assert hyper.accuracy(variables, *labelled, group.test_images, group.test_labels) == \
        evaluate.group_accuracy(scores, same.query_labels)[0]

    # uint8 images (here: exactly the same pixels) give the same network; (N, H, W) too.
    u8 = np.round((group.images + 1) * 127.5).astype(np.uint8)
    np.testing.assert_array_equal(pudnet_jax.normalize(u8), group.images)
    _, from_u8 = hyper.predict(u8[..., 0])
    jax.tree.map(np.testing.assert_array_equal, from_u8, variables)
    # Another size is converted (and gives a network for it).
    _, bigger = hyper.predict(np.kron(u8, np.ones((1, 2, 2, 1), np.uint8)))
    assert jax.tree.structure(bigger) == jax.tree.structure(variables)


def test_bad_images_are_one_clear_error(trained_workdir):
    hyper = pudnet_jax.load(trained_workdir)
    with pytest.raises(UserError, match=r'float images must be normalised to \[-1, 1\].*\[0, 255\]'):
        hyper.predict(np.full((4, 28, 28, 1), 3.0, np.float32))
    with pytest.raises(ValueError, match=r'expected 1 channel'):
        hyper.predict(np.zeros((4, 28, 28, 3), np.float32))
    with pytest.raises(UserError, match=r'uint8 in \[0, 255\] or float'):
        hyper.predict(np.zeros((4, 28, 28, 1), np.int64))
    with pytest.raises(UserError, match=r'is not a directory: train there first'):
        pudnet_jax.load(os.path.join(trained_workdir, 'nothere'))


def test_save_load_finetune_and_folder(trained_workdir, tmp_path):
    hyper = pudnet_jax.load(trained_workdir)
    group = hyper.heldout_group(1, split='validation')
    net, variables = hyper.predict(group.images)
    path = hyper.save_network(variables, str(tmp_path / 'net'), classes=group.classes)
    loaded_net, loaded, meta = pudnet_jax.load_network(path)
    assert loaded_net == net and meta['classes'] == group.classes
    jax.tree.map(np.testing.assert_array_equal, loaded, jax.device_get(variables))

    tuned, tuned_vars, classes = hyper.finetune(variables, group.images, group.labels,
                                                epochs=1, batch_size=3)
    assert classes == sorted(set(group.labels.tolist()))
    logits = tuned.apply(tuned_vars, group.test_images, train=False)
    assert logits.shape == (len(group.test_images), len(classes))
    hyper.save_network(tuned_vars, str(tmp_path / 'tuned'), head_classes=classes)
    again, again_vars, meta = pudnet_jax.load_network(str(tmp_path / 'tuned'))
    assert meta['head_classes'] == classes
    np.testing.assert_allclose(again.apply(again_vars, group.test_images, train=False), logits,
                               rtol=1e-5, atol=1e-5)

    # A folder written from held-out digits: the --data report, split as read_folder.
    folder = hyper.write_example_folder(str(tmp_path / 'digits'), per_class=20)
    report = hyper.predict_folder(folder, output_dir=str(tmp_path / 'out'))
    x, y, tx, ty, names = hyper.read_folder(folder)
    assert report['classes'] == names and report['prediction_images'] == len(x)
    assert report['test_images'] == len(tx) and 'mean_sketch' in report['controls']
    assert os.path.exists(os.path.join(tmp_path, 'out', 'report.json'))


def test_compare_with_a_subset_of_methods(trained_workdir, tmp_path):
    hyper = pudnet_jax.load(trained_workdir)
    summary = hyper.compare(str(tmp_path / 'cmp'), groups=2, methods=('adam',), epochs=(1, 2),
                            learning_rates=(1e-3,), tune_groups=1)
    methods = [r['method'] for r in summary['rows']]
    assert methods == ['PudNet', 'Untrained + prototypes', 'Mean-sketch network',
                       'Adam scratch 1 epoch', 'Adam scratch 2 epochs']
    assert summary['methods'] == ['adam'] and summary['groups'] == 2
    assert os.path.getsize(tmp_path / 'cmp' / 'compare.png') > 0
    with pytest.raises(ValueError, match=r"compare.methods=\('sgd',\): each must be one of"):
        hyper.compare(str(tmp_path / 'cmp2'), methods=('sgd',))


# ----------------------------------------------------------------------------- entry points

def test_importing_the_package_changes_no_process_setting():
    code = ('import os, sys; before = dict(os.environ); import pudnet_jax; '
            'print(dict(os.environ) == before, "jax" in sys.modules); import pudnet_jax.api; '
            'print(sorted(pudnet_jax.__all__) == sorted(pudnet_jax.api.__all__), '
            'all(callable(getattr(pudnet_jax, n)) for n in pudnet_jax.__all__))')
    env = {k: v for k, v in os.environ.items() if k not in ('JAX_PLATFORMS',)}
    out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ['True', 'False', 'True', 'True']


def test_python_m_pudnet_jax_is_the_command_line():
    out = subprocess.run([sys.executable, '-m', 'pudnet_jax', '--help'], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert '--workdir' in out.stdout and '--config.<field>=value' in out.stdout
    out = subprocess.run([sys.executable, '-m', 'pudnet_jax', '--workdir=/nonexistent/w',
                          '--mode=predict'], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and out.stderr.startswith("error: --workdir='/nonexistent/w'")
