"""main.py as a user runs it: a mistake prints one line and exits 2 (no traceback unless
--debug); --help exits 0; tuple fields are overridable; a training run prints one line
per log point and a results table, and writes TensorBoard scalars."""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args, timeout=180):
    return subprocess.run([sys.executable, 'main.py', *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def assert_one_line_error(out, *fragments):
    assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
    assert 'Traceback' not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1, out.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def _images(root, classes, per_class):
    for name in classes:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            Image.fromarray(np.eye(12, dtype=np.uint8) * (40 * i + 20)).save(
                os.path.join(root, name, f'{i}.png'))
    return str(root)


@pytest.mark.parametrize('args, fragments', [
    (['--config', 'configs/nope.py', '--workdir=W'],
     ['--config: cannot load configs/nope.py', 'No such file or directory']),
    (['--config', 'configs/test.py', '--workdir=W', '--config.data.test_clases=(6,7)'],
     ["unknown config field", "'test_clases'", 'Did you mean "test_classes"']),
    (['--config', 'configs/test.py', '--workdir=W', '--config.data.name=mnist6k'],
     ["config.data.name='mnist6k': must be one of", "'mnist5k'"]),
    (['--config', 'configs/test.py', '--workdir=W', '--config.target.name=resnet19'],
     ["config.target.name='resnet19': must be one of", "'resnet18'"]),
    (['--config', 'configs/test.py', '--workdir=W', '--config.model.eta=1.5',
      '--config.eval.groups=0'],
     ['config.model.eta=1.5: must be a number in [0, 1]',
      'config.eval.groups=0: must be an integer >= 1']),
    (['--config', 'configs/test.py'], ['--workdir must have a value']),
    (['--config', 'configs/multidomain.py:photos', '--workdir=W'],     # get_config raises
     ['--config=configs/multidomain.py:photos', "ValueError: configs/multidomain.py:<domain>",
      "got 'photos'"]),
    (['--config', 'configs/test.py', '--workdir=W', '--config.train.ways=abc'],
     ['--config.train.ways=abc']),
    (['--workdir=W', '--mode=predict'], ["--workdir='W' does not exist: train there first"]),
])
def test_user_mistakes_print_one_line(args, fragments, tmp_path):
    args = [a.replace('W', str(tmp_path / 'w')) if a.startswith('--workdir') else a
            for a in args]
    fragments = [f.replace("'W'", repr(str(tmp_path / 'w'))) for f in fragments]
    assert_one_line_error(run_main(*args), *fragments)
    assert not os.path.exists(tmp_path / 'w')


def test_debug_shows_the_traceback(tmp_path):
    out = run_main('--config', 'configs/test.py', f'--workdir={tmp_path}',
                   '--config.model.eta=1.5', '--debug')
    assert out.returncode != 0 and 'Traceback' in out.stderr
    assert 'config.model.eta=1.5' in out.stderr


def test_workdir_that_is_a_file(tmp_path):
    path = tmp_path / 'file'
    path.write_text('x')
    assert_one_line_error(run_main('--config', 'configs/test.py', f'--workdir={path}'),
                          f"--workdir={str(path)!r} is a file, not a directory")


def test_folder_problems_are_reported_before_the_model_is_loaded(tmp_path):
    # A workdir with a config but no checkpoint: a folder error must come first.
    workdir = tmp_path / 'w'
    workdir.mkdir()
    from configs import test as test_config
    (workdir / 'config.json').write_text(test_config.get_config().to_json_best_effort())
    missing = str(tmp_path / 'nothere')
    assert_one_line_error(run_main(f'--workdir={workdir}', '--mode=predict', f'--data={missing}'),
                          f"--data: {missing!r} is not a directory")
    one = _images(tmp_path / 'one', ['cat'], 3)
    assert_one_line_error(run_main(f'--workdir={workdir}', '--mode=predict', f'--data={one}'),
                          "has 1 class subfolder(s) ['cat']; classification needs at least 2")
    few = _images(tmp_path / 'few', ['cat', 'dog'], 3)
    assert_one_line_error(run_main(f'--workdir={workdir}', '--mode=predict', f'--data={few}'),
                          'at least 3 prediction images', "'cat' has 2 prediction")


def test_help_exits_0_and_tuple_fields_are_overridable():
    out = run_main('--help')
    assert out.returncode == 0 and '--config.<field>=value' in out.stdout
    assert "--config.data.test_classes='(6,7,8,9)'" in out.stdout
    # The override is parsed (two held-out classes), then the 3-way evaluation is refused.
    assert_one_line_error(run_main('--config', 'configs/test.py', '--workdir=/nonexistent/x',
                                   '--config.data.test_classes=(6,7)'),
                          'config.eval.ways=3: must be <= the number of held-out classes '
                          '(2, config.data.test_classes)')


def test_predict_and_evaluate_modules_do_not_import_tensorflow():
    out = subprocess.run(
        [sys.executable, '-c', 'import sys, main; from pudnet_jax import predict, train, '
         'evaluate, sources, config_check; print(sorted(m for m in ("tensorflow", '
         '"tensorflow_datasets", "clu.metric_writers", "matplotlib") if m in sys.modules))'],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == '[]'


def _scalars(workdir):
    """{tag: [(step, value)]} from the TensorBoard events files (TFRecord framing)."""
    from tensorboard.compat.proto import event_pb2
    found = {}
    for name in sorted(os.listdir(workdir)):
        if not name.startswith('events.out.tfevents'):
            continue
        with open(os.path.join(workdir, name), 'rb') as f:
            data = f.read()
        i = 0
        while i < len(data):
            (n,) = struct.unpack('<Q', data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for v in event.summary.value:
                if v.HasField('simple_value'):
                    found.setdefault(v.tag, []).append((event.step, v.simple_value))
    return found


def test_a_training_run_prints_one_line_per_log_point(tmp_path):
    workdir = str(tmp_path / 'w')
    out = run_main('--config', 'configs/test.py', f'--workdir={workdir}', timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    for noise in ('Hyperparameters', 'Setting work unit notes', 'steps_per_sec', 'uptime',
                  'oneDNN', 'InitializeLog', 'Evaluation: accuracy', 'train/loss='):
        assert noise not in text, noise
    progress = [line for line in out.stderr.splitlines() if '] step ' in line]
    assert [line.split('] step ')[1].split()[0] for line in progress] == ['2/6', '4/6', '6/6']
    assert all('loss' in line and 'steps/s' in line and 'ETA' in line for line in progress)
    assert out.stdout.count('accuracy') == 1              # the results table, once
    # start line, 3 progress lines, the validation line, the results table (with controls)
    assert len(text.splitlines()) <= 20, text
    scalars = _scalars(workdir)
    assert [s for s, _ in scalars['train/loss']] == [2, 4, 6]
    with open(os.path.join(workdir, 'results.json')) as f:
        assert scalars['eval/accuracy'] == [(6, pytest.approx(json.load(f)['accuracy']))]


def test_validation_split_draws_no_test_group_and_leaves_the_results_alone(
        trained_workdir, tmp_path, monkeypatch):
    """--mode=evaluate --split=validation scores the validation groups alone (the same
    figures as the run's own evaluation), draws no test group, writes validation.json
    and leaves results.json as it was."""
    import shutil
    from pudnet_jax import cli, evaluate
    from pudnet_jax.errors import UserError
    workdir = str(tmp_path / 'w')
    shutil.copytree(trained_workdir, workdir)
    results = os.path.join(workdir, 'results.json')
    with open(results) as f:
        before = f.read()
    real = evaluate.group_sampler

    def no_test_groups(config, pool, split='test', domain=None):
        assert split != 'test', 'a test group was drawn'
        return real(config, pool, split, domain)
    monkeypatch.setattr(evaluate, 'group_sampler', no_test_groups)
    cli.run('evaluate', workdir, None, None, split='validation')
    with open(os.path.join(workdir, 'validation.json')) as f:
        validation = json.load(f)['validation']
    assert validation['accuracy'] == json.loads(before)['validation']['accuracy']
    assert validation['controls'] == json.loads(before)['validation']['controls']
    with open(results) as f:
        assert f.read() == before
    with pytest.raises(UserError, match='--split=validation goes with --mode=evaluate'):
        cli.run('predict', workdir, None, None, split='validation')
