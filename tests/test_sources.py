"""Sources, folders, the cache, the inter-dataset protocol and --mode=predict --data."""

import gzip
import json
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import pudnet_jax  # noqa: F401
from configs import test as test_config
from configs.inter_dataset import set_inter
from pudnet_jax import data, inter_dataset, sources
from pudnet_jax import predict as predict_lib
from pudnet_jax import train as train_lib
from pudnet_jax import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TFDS_SOURCES = sorted(n for n, s in sources.SOURCES.items() if s.kind == 'tfds')


def _block_tensorflow(monkeypatch):
    for module in ('tensorflow', 'tensorflow_datasets'):
        monkeypatch.setitem(sys.modules, module, None)   # `import` now raises ImportError


@pytest.mark.parametrize('name', TFDS_SOURCES)
def test_every_tfds_source_under_mock_data_then_from_the_cache_alone(name, tmp_path,
                                                                   monkeypatch):
    tfds = pytest.importorskip('tensorflow_datasets')
    cache = str(tmp_path / 'cache')
    with tfds.testing.mock_data(num_examples=6):
        loaded = sources.load(name, 16, 3, cache_dir=cache)
    splits = sources.SOURCES[name].splits
    assert sum(len(v) for v in loaded.pool.values()) == 6 * len(splits)
    assert all(v.shape[1:] == (16, 16, 3) and v.dtype == np.uint8 for v in loaded.pool.values())
    assert set(loaded.pool) <= set(range(len(loaded.class_names)))
    assert not loaded.meta['from_cache']
    # Second load: from the cache, without TensorFlow (a GPU machine may not have it).
    _block_tensorflow(monkeypatch)
    again = sources.load(name, 16, 3, cache_dir=cache)
    assert again.meta['from_cache'] and again.class_names == loaded.class_names
    for c in loaded.pool:
        np.testing.assert_array_equal(again.pool[c], loaded.pool[c])
    with pytest.raises(ImportError, match='not in the cache.*needs TensorFlow'):
        sources.load(name, 8, 1, cache_dir=cache)


def test_tfds_split_and_grayscale(tmp_path):
    tfds = pytest.importorskip('tensorflow_datasets')
    with tfds.testing.mock_data(num_examples=5):
        train = data.load_pool('cifar10', 28, 1, split='train', cache_dir=str(tmp_path))
        both = data.load_pool('dtd', 20, 1, split='train+validation', cache_dir=str(tmp_path))
    assert sum(map(len, train.values())) == 5 and sum(map(len, both.values())) == 10
    assert all(v.shape[1:] == (28, 28, 1) for v in train.values())


def test_missing_manual_download_says_where_to_put_the_files(tmp_path):
    pytest.importorskip('tensorflow_datasets')
    with pytest.raises(FileNotFoundError) as e:
        sources.load('imagenet2012', 32, 3, data_dir=str(tmp_path / 'tfds'),
                     cache_dir=str(tmp_path / 'cache'))
    message = str(e.value)
    assert 'ILSVRC2012_img_train.tar' in message
    assert os.path.join(str(tmp_path / 'tfds'), 'downloads', 'manual') in message


# ----------------------------------------------------------------------------- folders

def write_folder(root, per_class=6, classes=(('cat', 'RGB'), ('dog', 'L'), ('owl', 'RGB'))):
    """PNG and JPEG, grayscale and RGB, various sizes; one corrupt and one non-image file."""
    rng = np.random.default_rng(0)
    for k, (name, mode) in enumerate(classes):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            shape = (20 + i, 24) + ((3,) if mode == 'RGB' else ())
            base = np.full(shape, 60 * k, np.uint8)
            img = np.clip(base + rng.integers(0, 40, shape), 0, 255).astype(np.uint8)
            Image.fromarray(img, mode).save(
                os.path.join(root, name, f'{i}.{"png" if i % 2 else "jpg"}'))
    with open(os.path.join(root, classes[min(1, len(classes) - 1)][0], 'broken.png'), 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n this is not a PNG')
    with open(os.path.join(root, classes[0][0], 'notes.txt'), 'w') as f:
        f.write('not an image')
    return str(root)


def test_folder_source_skips_corrupt_files_and_converts(tmp_path):
    folder = write_folder(tmp_path / 'imgs')
    cache = str(tmp_path / 'cache')
    loaded = sources.load('folder', 16, 3, folder, cache_dir=cache)
    assert loaded.class_names == ['cat', 'dog', 'owl']
    assert {c: len(v) for c, v in loaded.pool.items()} == {0: 6, 1: 6, 2: 6}
    assert [os.path.basename(p) for p in loaded.meta['corrupt_files']] == ['broken.png']
    assert loaded.meta['ignored_files'] == 1
    dog = loaded.pool[1]     # grayscale files → 3 equal channels
    assert dog.shape == (6, 16, 16, 3) and np.all(dog[..., 0] == dog[..., 2])
    gray = sources.load('folder', 8, 1, folder, cache_dir=cache).pool
    assert all(v.shape[1:] == (8, 8, 1) for v in gray.values())


def test_folder_cache_hit_does_not_decode_and_a_changed_folder_is_rebuilt(tmp_path, monkeypatch):
    folder = write_folder(tmp_path / 'imgs')
    cache = str(tmp_path / 'cache')
    first = sources.load('folder', 16, 1, folder, cache_dir=cache)
    calls = []
    real_open = Image.open
    monkeypatch.setattr(Image, 'open', lambda *a, **k: calls.append(a) or real_open(*a, **k))
    again = sources.load('folder', 16, 1, folder, cache_dir=cache)
    assert calls == [] and again.meta['from_cache']
    assert again.meta['corrupt_files'] == first.meta['corrupt_files']
    np.testing.assert_array_equal(again.pool[2], first.pool[2])
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(os.path.join(folder, 'owl', 'new.png'))
    changed = sources.load('folder', 16, 1, folder, cache_dir=cache)
    assert calls and not changed.meta['from_cache'] and len(changed.pool[2]) == 7


def test_cache_of_another_preprocessing_is_refused_or_kept(tmp_path, monkeypatch):
    cache = str(tmp_path / 'cache')
    sources.load('animal_mnist', 14, 1, cache_dir=cache)
    path = sources.cache_path('animal_mnist', 14, 1, cache_dir=cache)
    meta_file = os.path.join(path, 'meta.json')
    with open(meta_file) as f:
        meta = json.load(f)
    meta['preprocessing_version'] = 1           # e.g. copied from an older checkout
    with open(meta_file, 'w') as f:
        json.dump(meta, f)
    before = sorted(os.listdir(path))
    version = sources.images.PREPROCESSING_VERSION
    with pytest.raises(ValueError, match=rf'different preprocessing \(preprocessing_version: '
                                         rf'cache 1 vs wanted {version}\).*left untouched'):
        sources.load('animal_mnist', 14, 1, cache_dir=cache)
    assert sorted(os.listdir(path)) == before
    # A new preprocessing version gets its own directory; the old one stays.
    monkeypatch.setattr(sources.images, 'PREPROCESSING_VERSION', version + 1)
    loaded = sources.load('animal_mnist', 14, 1, cache_dir=cache)
    assert not loaded.meta['from_cache'] and loaded.meta['cache'].endswith(f'-v{version + 1}')
    assert os.path.isdir(path)


def test_unlabelled_folder_loads_in_name_order_and_skips_what_is_not_an_image(tmp_path):
    """A folder of images with no class subfolders (e.g. noisy images to denoise)."""
    labelled = write_folder(tmp_path / 'imgs')
    flat = tmp_path / 'flat'
    flat.mkdir()
    names = []
    for c in ('cat', 'dog'):     # 6 + 6 images and dog's broken.png, side by side
        for f in sorted(os.listdir(os.path.join(labelled, c))):
            if f != 'notes.txt':
                os.replace(os.path.join(labelled, c, f), flat / f'{c}_{f}')
                names.append(f'{c}_{f}')
    (flat / 'readme.txt').write_text('not an image')
    (flat / '.hidden.png').write_bytes(b'')
    (flat / 'sub').mkdir()
    got = sources.load_unlabelled(str(flat), 12, 1)
    assert got.files == sorted(n for n in names if n != 'dog_broken.png')
    assert got.corrupt_files == ['dog_broken.png']
    assert got.images.shape == (12, 12, 12, 1) and got.images.dtype == np.uint8
    # Each image exactly as the labelled source decodes and preprocesses it.
    i = got.files.index('cat_3.png')
    with Image.open(flat / 'cat_3.png') as img:
        img.load()
        expected = sources.preprocess(sources.decode_image(img)[None], 12, 1)[0]
    np.testing.assert_array_equal(got.images[i], expected)
    with pytest.raises(ValueError, match=r"holds no image files .*subfolders \(cat, dog, owl\)"):
        sources.load_unlabelled(labelled, 12, 1)
    with pytest.raises(FileNotFoundError, match='is not a directory'):
        sources.load_unlabelled(str(tmp_path / 'nowhere'), 12, 1)


def test_single_class_folder_and_missing_folder(tmp_path):
    folder = write_folder(tmp_path / 'one', classes=(('cat', 'RGB'),))
    with pytest.raises(ValueError, match=r"1 class subfolder\(s\) \['cat'\].*at least 2"):
        sources.load('folder', 16, 3, folder, cache_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match='set config.data.data_dir.*Animals-10'):
        sources.load('animals10', 16, 3, None, cache_dir=str(tmp_path))


def test_class_with_too_few_images_for_the_protocol_is_named():
    names = ['cat', 'dog']
    predict = {0: np.zeros((10, 4, 4, 1), np.uint8), 1: np.zeros((2, 4, 4, 1), np.uint8)}
    test = {0: np.zeros((3, 4, 4, 1), np.uint8), 1: np.zeros((1, 4, 4, 1), np.uint8)}
    with pytest.raises(ValueError, match=r"at least 5 prediction images.*class 'dog' has 2 "
                                         r"prediction and 1 test images"):
        inter_dataset.check_parts('mine', names, predict, test, shots=5)


# ----------------------------------------------------------------------------- packages

def test_animal_mnist_is_read_without_unpickling_objects(tmp_path):
    loaded = sources.load('animal_mnist', 28, 1, cache_dir=str(tmp_path))
    assert sorted(loaded.pool) == list(range(10)) and len(loaded.class_names) == 10
    assert all(v.shape == (1000, 28, 28, 1) for v in loaded.pool.values())
    assert 'animal_mnist' not in sys.modules or 'animal_mnist.dataset_Loader' not in sys.modules

    class Evil:
        def __reduce__(self):
            return (os.system, ('echo pwned',))
    path = str(tmp_path / 'evil.gz')
    with gzip.open(path, 'wb') as f:
        pickle.dump(Evil(), f)
    with pytest.raises(pickle.UnpicklingError, match='refusing to unpickle'):
        sources.read_pickled_array(path)


def test_split_pool_is_deterministic_and_disjoint():
    pool = {c: np.arange(10 * c, 10 * c + 10, dtype=np.uint8)[:, None, None, None]
            for c in range(3)}
    p1, t1 = data.split_pool(pool, 0.8, seed=4)
    p2, t2 = data.split_pool(pool, 0.8, seed=4)
    for c in pool:
        np.testing.assert_array_equal(p1[c], p2[c])
        assert len(p1[c]) == 8 and len(t1[c]) == 2
        assert not set(p1[c].ravel()) & set(t1[c].ravel())
    assert any(not np.array_equal(data.split_pool(pool, 0.8, seed=5)[1][c], t1[c]) for c in pool)


# ----------------------------------------------------------------------------- protocol

@pytest.fixture(scope='module')
def inter_run(tmp_path_factory):
    """MNIST-5k classes 0-5 → Animal-MNIST, tiny settings (the offline pair's protocol)."""
    config = test_config.get_config()
    config.data.test_classes = []
    set_inter(config, 'animal_mnist', predict_fraction=0.8, shots=3, draws=3)
    config.eval.chunk_size, config.eval.bn_images = 1000, 300
    workdir = str(tmp_path_factory.mktemp('inter'))
    return config, workdir, train_lib.train_and_evaluate(config, workdir)


def test_inter_dataset_protocol_on_the_offline_pair(inter_run):
    config, workdir, results = inter_run
    with open(os.path.join(workdir, 'results.json')) as f:
        on_disk = json.load(f)
    for key in ('accuracy', 'ci95', 'groups', 'ways', 'shots', 'target', 'predict_seconds',
                'compile_seconds', 'train_seconds', 'protocol', 'draws', 'prediction_images'):
        assert key in on_disk
    assert on_disk['protocol'] == 'inter' and on_disk['ways'] == 10 and on_disk['draws'] == 3
    assert on_disk['prediction_images'] == 8000 and on_disk['test_images'] == 2000
    assert on_disk['bn_images'] == 300 and on_disk['predict_seconds'] > 0
    assert 0.1 < on_disk['accuracy'] <= 1.0 and on_disk['ci95'] >= 0
    assert set(on_disk['controls']) == {'untrained', 'mean_sketch'}
    assert on_disk['conditioning_gain'] == pytest.approx(
        on_disk['accuracy'] - on_disk['controls']['mean_sketch']['accuracy'], abs=1e-9)
    assert on_disk['controls']['untrained']['networks'] == config.eval.untrained_seeds
    with open(os.path.join(workdir, inter_dataset.SPLIT_FILE)) as f:
        split = json.load(f)
    assert split['predict_counts']['zebra'] == 800 and split['test_counts']['bear'] == 200
    with open(os.path.join(workdir, workdir_lib.CLASSES_FILE)) as f:
        assert json.load(f)['train_classes'] == {str(c): str(c) for c in range(6)}


def test_predict_mode_of_an_inter_dataset_workdir_saves_the_target_network(inter_run, tmp_path):
    _, workdir, results = inter_run
    report = predict_lib.predict_and_save(workdir, str(tmp_path / 'out'))
    target, variables, meta = predict_lib.load_variables(report['path'])
    assert meta['dataset'] == 'animal_mnist' and meta['classes'][0] == 'bear'
    assert report['ways'] == 10 and report['prediction_images'] == 8000
    assert report['accuracy'] == pytest.approx(results['accuracy'])   # the same network


def test_streaming_sketch_does_not_depend_on_the_chunk_size(inter_run):
    config, workdir, _ = inter_run
    _, model, spec, hyper = workdir_lib.restore_hypernet(workdir)
    pool = {c: v[:150] for c, v in sources.load('animal_mnist', 28, 1).pool.items()}
    a, _ = inter_dataset.predict_variables(config.eval, model, spec, hyper, pool)
    e = config.eval.copy_and_resolve_references()
    e.chunk_size = 64
    b, _ = inter_dataset.predict_variables(e, model, spec, hyper, pool)
    import jax
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5), a, b)


def test_predict_a_hand_made_folder_through_main(inter_run, tmp_path):
    _, workdir, _ = inter_run
    folder = write_folder(tmp_path / 'mine', per_class=8)
    out = subprocess.run(
        [sys.executable, 'main.py', f'--workdir={workdir}', '--mode=predict', f'--data={folder}'],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r'^classes +3: cat \(8\), dog \(8\), owl \(8\)$', out.stdout, re.M)
    assert 'skipped 1 unreadable' in out.stdout and 'held-out accuracy' in out.stdout
    for row in ('untrained control', 'mean-sketch control', 'conditioning gain',
                'Adam from scratch', 'PudNet + fine-tuning', 'did it pay off'):
        assert row in out.stdout, row
    path = os.path.join(workdir, 'predictions', predict_lib.folder_output_name(folder))
    assert os.path.basename(path).startswith('folder_mine-')
    # No start-up noise: TensorFlow is not even imported by --mode=predict.
    assert 'oneDNN' not in out.stderr and 'InitializeLog' not in out.stderr
    target, variables, meta = predict_lib.load_variables(path)
    assert set(variables) == {'params', 'batch_stats'} and meta['classes'] == ['cat', 'dog', 'owl']
    report = meta['report']
    assert report['prediction_images'] + report['test_images'] == 24
    assert set(report['controls']) == {'untrained', 'mean_sketch'}
    assert 'conditioning_gain_ci95' in report and 'verdict' in report
    curves = report['baselines']['curves']
    assert curves['adam_scratch']['epochs'] == [1, 2] == curves['pudnet_finetune']['epochs']
    assert all(0 <= a <= 1 for a in curves['adam_scratch']['accuracy'])
    assert curves['adam_scratch']['seconds'][0] < curves['adam_scratch']['seconds'][1]
    assert 0.0 <= report['accuracy'] <= 1.0 and report['predict_seconds'] > 0
    images = data.normalize(sources.load('folder', 28, 1, folder).pool[0])
    assert np.all(np.isfinite(target.apply(variables, images, train=False)))
