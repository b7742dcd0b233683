"""Issue 9: nothing lost, nothing silently wrong. Checkpoints, the workdir lock, saved
networks, config validation, strict JSON, image folders and the cache."""

import glob
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from PIL import Image

import pudnet_jax  # noqa: F401
from configs import test as test_config
from pudnet_jax import config_check, files, sources
from pudnet_jax import predict as predict_lib
from pudnet_jax import train as train_lib
from pudnet_jax import workdir as workdir_lib
from pudnet_jax.hypernet import build_model
from pudnet_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _copy_workdir(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns('.lock'))
    return str(dst)


def _corrupt(workdir, step, how='truncate'):
    d = os.path.join(workdir, 'checkpoints', str(step))
    if how == 'truncate':
        data = glob.glob(os.path.join(d, 'default', 'ocdbt.process_0', 'd', '*'))
        assert data
        for f in data:
            with open(f, 'r+b') as fh:
                fh.truncate(10)
    else:
        os.remove(os.path.join(d, 'default', '_METADATA'))
    return d


def _params(workdir, step=None):
    config = workdir_lib.load_config(workdir)
    model, spec = build_model(config)
    abstract = jax.eval_shape(lambda: train_lib.create_train_state(config, model, spec))
    mngr = workdir_lib.checkpoint_manager(workdir, config)
    import orbax.checkpoint as ocp
    return mngr.restore(step or mngr.latest_step(), args=ocp.args.StandardRestore(abstract)).params


# ----------------------------------------------------------------------------- 1. checkpoints

def test_corrupt_latest_checkpoint_falls_back_and_training_resumes_to_the_same_result(
        trained_workdir, tmp_path, caplog):
    workdir = _copy_workdir(trained_workdir, tmp_path / 'w')
    assert workdir_lib.checkpoint_manager(workdir, test_config.get_config()).all_steps() == [4, 6]
    bad = _corrupt(workdir, 6, 'truncate')

    # Evaluate / predict: the newest intact checkpoint, named; nothing moved or deleted.
    caplog.set_level(logging.WARNING)
    *_, step = workdir_lib.restore_hypernet_with_step(workdir)
    assert step == 4 and os.path.isdir(bad)
    assert any(bad in r.getMessage() and 'cannot be restored' in r.getMessage()
               for r in caplog.records)

    # Training resumes from step 4, moves the bad step 6 aside (kept), saves a new step 6,
    # and ends bit for bit where the uninterrupted run ended.
    results = train_lib.train_and_evaluate(test_config.get_config(), workdir)
    assert results['resumed_from_step'] == 4 and results['steps_this_run'] == 2
    kept = os.path.join(workdir, workdir_lib.CORRUPT_DIR, 'step_6')
    assert os.path.isdir(kept) and os.listdir(kept)
    assert workdir_lib.checkpoint_manager(workdir, test_config.get_config()).all_steps() == [4, 6]
    jax.tree.map(np.testing.assert_array_equal, _params(workdir), _params(trained_workdir))
    with open(os.path.join(trained_workdir, 'results.json')) as f:
        assert results['accuracy'] == json.load(f)['accuracy']


def test_evaluate_mode_says_which_checkpoint_it_used(trained_workdir, tmp_path, capsys):
    import main
    workdir = _copy_workdir(trained_workdir, tmp_path / 'w')
    _corrupt(workdir, 6, 'metadata')
    main.run('evaluate', workdir, None, None)
    out = capsys.readouterr().out
    assert f'Evaluating the checkpoint of step 4 in {os.path.join(workdir, "checkpoints", "4")}' in out
    with open(os.path.join(workdir, 'results.json')) as f:
        assert json.load(f)['checkpoint_step'] == 4
    assert os.path.isdir(os.path.join(workdir, 'checkpoints', '6'))


def test_no_restorable_checkpoint_is_an_error_and_nothing_moves(trained_workdir, tmp_path):
    workdir = _copy_workdir(trained_workdir, tmp_path / 'w')
    for step in (4, 6):
        _corrupt(workdir, step)
    before = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
    with pytest.raises(UserError, match=r'No checkpoint in .*checkpoints can be restored '
                                        r'\(step 6: .*step 4: '):
        train_lib.train_and_evaluate(test_config.get_config(), workdir)
    assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == before
    assert not os.path.exists(os.path.join(workdir, workdir_lib.CORRUPT_DIR))


# ----------------------------------------------------------------------------- 4. steps

def test_fewer_steps_than_the_checkpoint_is_refused_and_config_json_kept(trained_workdir,
                                                                        tmp_path):
    workdir = _copy_workdir(trained_workdir, tmp_path / 'w')
    with open(os.path.join(workdir, 'config.json'), 'rb') as f:
        saved = f.read()
    config = test_config.get_config()
    config.train.num_train_steps = 4
    with pytest.raises(UserError, match=r'config.train.num_train_steps=4 is below the step of '
                                        r'the checkpoint in .* \(6\): pass '
                                        r'--config.train.num_train_steps=6'):
        train_lib.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, 'config.json'), 'rb') as f:
        assert f.read() == saved


# ----------------------------------------------------------------------------- 2. lock

def test_second_run_on_a_workdir_refuses_and_a_dead_holder_is_taken_over(tmp_path, caplog):
    workdir = str(tmp_path / 'w')
    lock = os.path.join(workdir, files.LOCK_FILE)
    first = subprocess.Popen(
        [sys.executable, 'main.py', '--config', 'configs/test.py', f'--workdir={workdir}',
         '--config.train.num_train_steps=100000', '--config.train.checkpoint_every=100000',
         '--config.train.log_every=100000'],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and first.poll() is None:
            if os.path.exists(lock) and open(lock).read().strip() == str(first.pid):
                break
            time.sleep(0.2)
        assert first.poll() is None, first.stderr.read()[-2000:]
        t0 = time.time()
        second = subprocess.run(
            [sys.executable, 'main.py', '--config', 'configs/test.py', f'--workdir={workdir}'],
            cwd=REPO, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and time.time() - t0 < 60
        assert second.stderr.strip().splitlines() == [
            f"error: Workdir {workdir!r} is in use by process {first.pid} (lock "
            f"{os.path.realpath(lock)}): wait for it to finish, or use another --workdir."]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # Killed: its pid stays in the file, but the kernel released the lock.
    assert open(lock).read().strip() == str(first.pid)
    caplog.set_level(logging.WARNING)
    with files.workdir_lock(workdir):
        assert open(lock).read().strip() == str(os.getpid())
        with files.workdir_lock(workdir):        # re-entrant in one process
            pass
    assert any(f'left by process {first.pid}' in r.getMessage() for r in caplog.records)
    assert open(lock).read() == ''


# ----------------------------------------------------------------------------- 3. saved networks

_KILL_DURING_SAVE = '''
import os, signal, sys
import numpy as np
from pudnet_jax import predict
path, point = sys.argv[1], sys.argv[2]
real_write, real_rename = predict.write_json, os.rename

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def write_then_die(p, obj, **kw):      # called once the new variables are written
    real_write(p, obj, **kw)
    if point == 'before_rename':
        die()
    def rename_then_die(a, b):
        real_rename(a, b)
        die()
    os.rename = rename_then_die
predict.write_json = write_then_die
predict.save_variables(path, {'params': {'w': np.full(3, 2.0, np.float32)},
                              'batch_stats': {'m': np.zeros(2, np.float32)}},
                       {'target': 'convnet3', 'width': 8, 'version': 2})
'''


def _saved(path):
    _, variables, meta = predict_lib.load_variables(path)
    return float(variables['params']['w'][0]), meta['version']


@pytest.mark.parametrize('point', ['before_rename', 'between_renames'])
def test_a_save_killed_midway_keeps_the_old_network(tmp_path, point):
    path = str(tmp_path / 'predictions' / 'folder_x')
    old = {'params': {'w': np.full(3, 1.0, np.float32)}, 'batch_stats': {'m': np.zeros(2, np.float32)}}
    predict_lib.save_variables(path, old, {'target': 'convnet3', 'width': 8, 'version': 1})
    killed = subprocess.run([sys.executable, '-c', _KILL_DURING_SAVE, path, point], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert _saved(path) == (1.0, 1)                 # the whole old network
    new = {'params': {'w': np.full(3, 3.0, np.float32)}, 'batch_stats': {'m': np.ones(2, np.float32)}}
    predict_lib.save_variables(path, new, {'target': 'convnet3', 'width': 8, 'version': 3})
    assert _saved(path) == (3.0, 3)
    assert sorted(os.listdir(os.path.dirname(path))) == ['folder_x']   # no leftovers


def test_folders_with_the_same_name_get_different_networks(tmp_path):
    cats, dogs = str(tmp_path / 'cats' / 'train'), str(tmp_path / 'dogs' / 'train')
    a, b = predict_lib.folder_output_name(cats), predict_lib.folder_output_name(dogs)
    assert a != b and a.startswith('folder_train-') and b.startswith('folder_train-')
    assert predict_lib.folder_output_name(cats + '/') == a


# ----------------------------------------------------------------------------- 5. config

@pytest.mark.parametrize('field, value, message', [
    ('model.eta', 1.5, r'config.model.eta=1.5: must be a number in \[0, 1\]'),
    ('model.eta', -0.1, r'config.model.eta=-0.1: must be a number in \[0, 1\]'),
    ('loss.temperature', float('nan'), r'config.loss.temperature=nan: must be a finite number > 0'),
    ('train.learning_rate', -1e-3, r'config.train.learning_rate=-0.001: must be a finite number > 0'),
    ('eval.groups', 0, r'config.eval.groups=0: must be an integer >= 1'),
    ('train.checkpoint_every', 0, r'config.train.checkpoint_every=0: must be an integer >= 1'),
    ('train.log_every', 0, r'config.train.log_every=0: must be an integer >= 1'),
    ('data.test_classes', (5, 6, 7), r'config.data.test_classes=\(5, 6, 7\): must not overlap '
                                     r'config.data.train_classes \(both have \[5\]\)'),
    ('data.image_size', 5, r"config.data.image_size=5: must be >= 8 for target 'convnet3'"),
    ('eval.ways', 5, r'config.eval.ways=5: must be <= the number of held-out classes \(4'),
    ('train.ways', 7, r'config.train.ways=7: must be <= the number of training classes \(6'),
])
def test_config_validation_names_field_value_and_range(field, value, message, tmp_path):
    config = test_config.get_config()
    group, key = field.split('.')
    config[group][key] = value
    with pytest.raises(UserError, match=message):
        config_check.validate(config)
    # Refused before anything is written.
    with pytest.raises(UserError, match=message):
        train_lib.train_and_evaluate(config, str(tmp_path / 'w'))
    assert not os.path.exists(tmp_path / 'w' / 'config.json')


def test_every_preset_is_valid():
    import importlib
    from configs import inter_dataset
    for name in ('default', 'test', 'fashion', 'cifar100', 'imagenet100', 'imagenet1k',
                 'mnist5k_to_animal_mnist', 'ablation_no_ahru', 'ablation_metric_only',
                 'ablation_no_kl'):
        config_check.validate(importlib.import_module(f'configs.{name}').get_config())
    config_check.validate(inter_dataset.get_config('imagenet100,animals10'))


def test_json_results_are_strict(tmp_path):
    path = str(tmp_path / 'r.json')
    with pytest.raises(ValueError, match='non-finite'):
        files.write_json(path, {'accuracy': float('nan')})
    assert os.listdir(tmp_path) == []
    files.write_json(path, {'accuracy': 0.5, 'none': None})
    with open(path) as f:
        assert json.load(f) == {'accuracy': 0.5, 'none': None}


def test_tuple_class_lists_resume_against_a_config_json_with_lists(tmp_path):
    config = test_config.get_config()
    assert isinstance(config.data.test_classes, tuple)
    workdir = str(tmp_path)
    workdir_lib.save_config(config, workdir)
    with open(os.path.join(workdir, 'config.json')) as f:
        assert json.load(f)['data']['test_classes'] == [6, 7, 8, 9]
    workdir_lib.check_config(config, workdir, has_checkpoint=True)      # equal: no error
    config.data.test_classes = (6, 7)
    with pytest.raises(UserError, match=r'data.test_classes: checkpoint \[6, 7, 8, 9\] vs now '
                                        r'\[6, 7\]'):
        workdir_lib.check_config(config, workdir, has_checkpoint=True)


# ----------------------------------------------------------------------------- 6. images

def _save(img, path, **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path, **kw)


def test_16_bit_exif_and_alpha_are_decoded_faithfully(tmp_path):
    root = str(tmp_path / 'imgs')
    # 16-bit grayscale: a ramp over the whole 16-bit range, scaled (not clipped) to 8 bits.
    ramp = np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)
    _save(Image.fromarray(ramp), os.path.join(root, 'deep', 'ramp.png'))
    # EXIF orientation 6 (rotate 90° clockwise to display): stored 8 wide x 16 high with
    # a white top row; displayed 16 wide x 8 high with that row on the right.
    stored = np.zeros((16, 8), np.uint8)
    stored[0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    _save(Image.fromarray(stored), os.path.join(root, 'rotated', 'r.png'), exif=exif)
    # A silhouette only in the alpha channel (black everywhere, opaque in the centre).
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[4:12, 4:12, 3] = 255
    _save(Image.fromarray(rgba, 'RGBA'), os.path.join(root, 'shape', 's.png'))
    with Image.open(os.path.join(root, 'deep', 'ramp.png')) as img:
        img.load()
        assert img.mode.startswith('I;16')
        decoded = sources.decode_image(img)
    np.testing.assert_array_equal(decoded, np.round(ramp / 257.0).astype(np.uint8))
    with Image.open(os.path.join(root, 'rotated', 'r.png')) as img:
        img.load()
        rotated = sources.decode_image(img)
    assert rotated.shape == (8, 16) and np.all(rotated[:, -1] == 255) and rotated[:, 0].max() == 0
    with Image.open(os.path.join(root, 'shape', 's.png')) as img:
        img.load()
        shape = sources.decode_image(img)
    assert shape.shape == (16, 16, 3)
    assert np.all(shape[0, 0] == 255) and np.all(shape[8, 8] == 0)      # black on white
    # Through the folder source (and the arrays path of `preprocess`).
    pool = sources.load('folder', 16, 1, root, cache_dir=str(tmp_path / 'cache')).pool
    assert pool[0].max() == 255 and len(np.unique(pool[0])) > 200       # deep: not binary
    assert np.all(sources.preprocess(rgba[None], 16, 3)[0, 0, 0] == 255)
    assert sources.preprocess(ramp[None], 16, 1).max() == 255


def test_blank_class_is_warned_about(tmp_path, caplog):
    root = str(tmp_path / 'imgs')
    for i in range(3):
        _save(Image.fromarray(np.full((8, 8), 7, np.uint8)), os.path.join(root, 'blank', f'{i}.png'))
        _save(Image.fromarray(np.eye(8, dtype=np.uint8) * 200), os.path.join(root, 'ok', f'{i}.png'))
    caplog.set_level(logging.WARNING)
    loaded = sources.load('folder', 8, 1, root, cache_dir=str(tmp_path / 'cache'))
    assert loaded.meta['blank_images'] == {'blank': 3}
    assert any("all 3 images of class 'blank' are blank" in r.getMessage() for r in caplog.records)


def test_folder_rule_nested_hidden_and_symlinked_folders_are_skipped_and_counted(tmp_path,
                                                                               caplog):
    root = str(tmp_path / 'imgs')
    img = Image.fromarray(np.eye(8, dtype=np.uint8) * 200)
    for name in ('a', 'b'):
        for i in range(2):
            _save(img, os.path.join(root, name, f'{i}.png'))
    _save(img, os.path.join(root, 'a', 'nested', 'deep.png'))       # nested: skipped
    _save(img, os.path.join(root, 'a', '.hidden.png'))              # hidden file: skipped
    _save(img, os.path.join(root, '.cache', 'x.png'))               # hidden folder: skipped
    os.symlink(root, os.path.join(root, 'loop'))                    # the root again
    os.symlink(os.path.join(root, 'a'), os.path.join(root, 'a_again'))   # a duplicate
    outside = str(tmp_path / 'elsewhere' / 'c')
    for i in range(2):
        _save(img, os.path.join(outside, f'{i}.png'))
    os.symlink(outside, os.path.join(root, 'c'))                    # outside: a class
    caplog.set_level(logging.WARNING)
    loaded = sources.load('folder', 8, 1, root, cache_dir=str(tmp_path / 'cache'))
    assert loaded.class_names == ['a', 'b', 'c']
    assert {k: len(v) for k, v in loaded.pool.items()} == {0: 2, 1: 2, 2: 2}
    assert loaded.meta['skipped_entries'] == {'nested': 1, 'hidden': 2, 'symlink': 2}
    messages = ' '.join(r.getMessage() for r in caplog.records)
    assert 'skipped 1 nested subfolder(s)' in messages and 'skipped 2 class folder symlink' in messages


# ----------------------------------------------------------------------------- 7. cache

def test_cache_with_a_wrongly_shaped_array_is_refused_naming_it(tmp_path):
    root = str(tmp_path / 'imgs')
    for name in ('a', 'b'):
        for i in range(3):
            _save(Image.fromarray(np.full((8, 8), 40 * i, np.uint8)), os.path.join(root, name, f'{i}.png'))
    cache = str(tmp_path / 'cache')
    sources.load('folder', 8, 1, root, cache_dir=cache)
    path = sources.cache_path('folder', 8, 1, root, cache_dir=cache)
    np.save(os.path.join(path, 'class_00001.npy'), np.zeros((3, 8, 8, 3), np.uint8))
    with pytest.raises(UserError, match=rf'The cache at {path} is damaged: class_00001.npy holds '
                                        r'an array of shape \(3, 8, 8, 3\) and dtype uint8, '
                                        r'expected \(3, 8, 8, 1\) uint8'):
        sources.load('folder', 8, 1, root, cache_dir=cache)
    assert os.path.exists(os.path.join(path, 'class_00001.npy'))     # left untouched
