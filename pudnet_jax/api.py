"""The Python API: a trained hypernetwork, and networks predicted with it in one forward pass.

    import pudnet_jax
    hyper = pudnet_jax.load_pretrained('mnist-convnet3')   # shipped: no training, no download
    hyper = pudnet_jax.load('runs/default')                # or a workdir of main.py
    net, variables = hyper.predict(images)                 # uint8 or [-1, 1] float, any count
    features = net.apply(variables, pudnet_jax.normalize(images), train=False)
    report = hyper.predict_folder('my_images/')            # the --data flow: the report dict
    hyper.save_network(variables, 'out/')                  # pudnet_jax.load_network('out/')

`net` is the plain Flax target module (ConvNet-3, ResNet-18, ...) and `variables` its
{'params', 'batch_stats'} tree: the kernels generated from the images' sketch, the shared
BatchNorm scale and bias, and BatchNorm statistics computed from the same images. It
gives one feature vector per image; classify by cosine to class centroids
(`hyper.accuracy`, `hyper.classify`), or fine-tune it with a linear head
(`hyper.finetune`).

Images: uint8 (N, H, W[, C]) in [0, 255], converted to the hypernetwork's image size and
channels when they differ (`sources.preprocess`), or float32 (N, H, W, C) already
normalised to [-1, 1] at the right size (`normalize` does that for uint8 images).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil

import jax
import ml_collections
import numpy as np

from pudnet_jax import data as data_lib
from pudnet_jax.errors import UserError
from pudnet_jax.hypernet import build_model

__all__ = ['Hypernetwork', 'load', 'load_pretrained', 'load_network', 'pretrained_names',
           'normalize']

VARIABLES_DIR = 'variables'


def pretrained_names() -> list[str]:
    """Names of the hypernetworks shipped inside the package (`load_pretrained`)."""
    from pudnet_jax import pretrained
    return sorted(pretrained.REGISTRY)


def load(workdir: str) -> 'Hypernetwork':
    """The hypernetwork of a trained workdir (its newest intact checkpoint)."""
    from pudnet_jax import workdir as workdir_lib
    if not os.path.isdir(workdir):
        raise UserError(f'{workdir!r} is not a directory: train there first '
                        f'(python -m pudnet_jax --config ... --workdir {workdir}).')
    config, model, spec, variables, step = workdir_lib.restore_hypernet_with_step(workdir)
    return Hypernetwork(config, model, spec, variables, workdir,
                        info={'workdir': os.path.abspath(workdir), 'step': step})


def load_pretrained(name: str = 'mnist-convnet3') -> 'Hypernetwork':
    """A hypernetwork shipped inside the package (`pretrained_names()`), with the accuracy
    it was measured at (`hyper.info['measured']`)."""
    from pudnet_jax import pretrained, workdir as workdir_lib
    entry = pretrained.get(name)
    config = workdir_lib.load_config(entry.folder)
    model, spec = build_model(config)
    variables = restore_variables(os.path.join(entry.folder, VARIABLES_DIR), config, model, spec)
    return Hypernetwork(config, model, spec, variables, entry.folder,
                        info={'name': name, 'description': entry.description,
                              'command': entry.command, 'measured': entry.measured})


def restore_variables(path: str, config, model, spec) -> dict:
    """{'params', 'batch_stats'} of a hypernetwork saved by `Hypernetwork.save` (the
    params with its task's beside them, `tasks.init_variables`)."""
    import orbax.checkpoint as ocp
    from pudnet_jax import tasks
    abstract = jax.eval_shape(lambda: tasks.init_variables(config, model, spec, seed=0))
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(os.path.abspath(path), abstract)


def load_network(path: str):
    """(module, variables, metadata) of a network saved by `Hypernetwork.save_network` or
    `--mode=predict`: a plain Flax module and its variables, no hypernetwork needed."""
    from pudnet_jax import predict
    if not os.path.isdir(path):
        raise UserError(f'{path!r} is not a saved network (no such directory).')
    return predict.load_variables(path)


def normalize(images) -> np.ndarray:
    """uint8 images in [0, 255] → float32 in [-1, 1], what the networks take; float
    images are checked to be in [-1, 1] and returned as float32."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return data_lib.normalize(images)
    if not np.issubdtype(images.dtype, np.floating):
        raise UserError(f'images must be uint8 in [0, 255] or float in [-1, 1]; got dtype '
                        f'{images.dtype}.')
    images = images.astype(np.float32)
    if images.size and (images.min() < -1.0 - 1e-6 or images.max() > 1.0 + 1e-6):
        raise UserError(f'float images must be normalised to [-1, 1] (got values in '
                        f'[{images.min():.3g}, {images.max():.3g}]); pass uint8 images in '
                        f'[0, 255] to have them normalised.')
    return images


@dataclasses.dataclass(frozen=True)
class Group:
    """A group of the intra-dataset protocol: labelled prediction images and test images
    of the same held-out classes (float32 in [-1, 1]; labels 0..ways-1, class-major)."""
    images: np.ndarray
    labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list


class Hypernetwork:
    """A trained PudNet hypernetwork: `predict` a network for images in one forward pass."""

    def __init__(self, config, model, spec, variables, home: str, info: dict | None = None):
        self.config, self.model, self.spec, self.variables = config, model, spec, variables
        self.home = home          # its workdir or shipped folder (caches the mean sketch)
        self.info = info or {}

    def __repr__(self) -> str:
        what = self.info.get('name') or self.info.get('workdir') or self.home
        return (f'Hypernetwork({what!r}: predicts {self.spec.name} (width {self.spec.width}) '
                f'for {"x".join(map(str, self.spec.image_shape))} images)')

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.spec.image_shape

    @property
    def net(self):
        """The target module that `predict`'s variables belong to."""
        return self.spec.module()

    # ------------------------------------------------------------------ prediction

    def prepare(self, images) -> np.ndarray:
        """Images as the networks take them: float32 (N, H, W, C) in [-1, 1] at the
        hypernetwork's image size and channels (uint8 images are converted)."""
        images = np.asarray(images)
        h, w, c = self.spec.image_shape
        if images.dtype == np.uint8 and (images.ndim == 3 or images.shape[1:] != (h, w, c)):
            from pudnet_jax import sources     # another size or channel count: converted
            images = sources.preprocess(images, h, c, 'images')
        if images.ndim == 3 and c == 1:
            images = images[..., None]
        images = normalize(images)
        data_lib.check_images(images, self.spec.image_shape, 'images')
        if images.shape[0] == 0:
            raise UserError('images: no images (need at least one).')
        return images

    def predict(self, images):
        """(net, variables) for these images: the sketch (a streaming mean over all of
        them), one pass of the AHRU and the generators, and BatchNorm statistics from
        (up to `eval.bn_images` = 1,000 of) the images. One forward pass, no SGD."""
        from pudnet_jax import predictor as predictor_lib
        x = self.prepare(images)
        e = self.config.eval
        chunk = min(int(e.get('chunk_size', 500)), 2 ** math.ceil(math.log2(len(x))))
        predictor = predictor_lib.make_predictor(self.model, self.spec,
                                                 int(e.get('bn_images', 1000)), seed=int(e.seed),
                                                 chunk_size=chunk)
        return self.net, predictor(self.variables, x)

    def features(self, variables, images) -> np.ndarray:
        """The network's feature vectors of `images` (N, feature_dim)."""
        from pudnet_jax import inter_dataset
        x = self.prepare(images)
        chunk = min(500, 2 ** math.ceil(math.log2(len(x))))
        return inter_dataset.features_in_chunks(self.spec, chunk, normalized=True)(variables, x)

    def classify(self, variables, labelled_images, labels, images) -> np.ndarray:
        """Labels of `images` by cosine to the class centroids of the labelled images'
        features (the paper's parameter-free classifier, eq. 7)."""
        from pudnet_jax.losses import class_centroids, cosine_logits
        labels = np.asarray(labels)
        classes, local = np.unique(labels, return_inverse=True)
        if len(classes) < 2:
            raise UserError(f'classify: the labelled images have {len(classes)} class(es); '
                            f'at least 2 are needed.')
        f_l = self.features(variables, labelled_images)
        f_x = self.features(variables, images)
        scores = cosine_logits(f_x, class_centroids(f_l, local, len(classes)), 1.0)
        return classes[np.asarray(scores).argmax(-1)]

    def accuracy(self, variables, labelled_images, labels, test_images, test_labels) -> float:
        """Accuracy of `classify` on labelled test images."""
        predicted = self.classify(variables, labelled_images, labels, test_images)
        return float(np.mean(predicted == np.asarray(test_labels)))

    # ------------------------------------------------------------------ protocols

    def heldout_group(self, index: int = 0, split: str = 'test') -> Group:
        """Group `index` of the intra-dataset protocol on the held-out classes of the
        hypernetwork's training data (the same groups as results.json's: `split` 'test'
        or 'validation'): `eval.prediction_shots` labelled images per class to predict
        from and `eval.test_shots` test images per class."""
        from pudnet_jax import evaluate
        self._intra('heldout_group')
        sampler = evaluate.group_sampler(self.config, self.pool(), split)
        g = sampler.sample(int(index), 1)[0]
        classes = [int(sampler.classes[c]) for c in g.classes]
        return Group(g.support, g.support_labels, g.query, g.query_labels, classes)

    def evaluate(self, groups: int = 20, split: str = 'test', quiet: bool = False) -> dict:
        """The intra-dataset protocol on the first `groups` groups of `split`: PudNet's
        accuracy beside its controls (untrained, mean sketch) and the paired gains, the
        results.json keys; prints the table unless `quiet`."""
        from pudnet_jax import evaluate
        self._intra('evaluate')
        config = self._config(eval={'groups' if split == 'test' else 'val_groups': int(groups)})
        return evaluate.evaluate(config, self.model, self.spec, self.variables, self.pool(),
                                 self.home, split=split, quiet=quiet)

    def compare(self, output_dir: str, groups: int = 10,
                methods=('adam', 'finetune_pudnet'), **compare) -> dict:
        """`--mode=compare` on the first `groups` test groups with the baselines `methods`
        (of `compare.METHODS`) and any other `config.compare` field as a keyword
        (e.g. epochs=(1, 2, 5)); writes compare.{md,csv,json,png} to `output_dir` and
        returns the summary (every number)."""
        from pudnet_jax import compare as compare_lib
        self._intra('compare')
        config = self._config(compare=dict(compare, groups=int(groups), methods=tuple(methods)))
        compare_lib.check_methods(config.compare.methods)
        return compare_lib.compare_hypernet(config, self.model, self.spec, self.variables,
                                            output_dir, self.home,
                                            self.info.get('measured', {}).get('train_seconds'))

    def predict_folder(self, folder: str, output_dir: str | None = None,
                       baselines: bool = False) -> dict:
        """The `--mode=predict --data=<folder>` flow: a folder with one subfolder of images
        per class; 80 % of each class predicts, 20 % tests. Saves the network (default
        `./predictions/folder_<name>-<hash>/`) and returns the report: held-out accuracy
        beside the controls, times, and with `baselines` the Adam-from-scratch and
        fine-tuning curve."""
        from pudnet_jax import predict, sources
        sources.check_folder(folder)
        path = output_dir or os.path.join('predictions', predict.folder_output_name(folder))
        return predict.predict_folder(self.home, folder, self.config, output_dir=path,
                                      baselines=baselines,
                                      hypernet=(self.config, self.model, self.spec,
                                                self.variables))

    def read_folder(self, folder: str):
        """(images, labels, test_images, test_labels, class names) of a folder of images
        (one subfolder per class), split per class exactly as `predict_folder` splits it
        (80 % / 20 %, seeded); uint8 at the hypernetwork's image size and channels."""
        from pudnet_jax import inter_dataset, predict, sources
        e = predict.folder_settings(self.config)
        d = self.config.data
        loaded = sources.load('folder', d.image_size, d.channels, folder,
                              cache_dir=d.get('cache_dir'))
        predict_pool, test_pool = data_lib.split_pool(loaded.pool, e.predict_fraction, e.seed)
        x, y, _ = inter_dataset.flatten(predict_pool)
        tx, ty, _ = inter_dataset.flatten({c: test_pool[c] for c in sorted(predict_pool)})
        return x, y, tx, ty, [loaded.class_names[c] for c in sorted(predict_pool)]

    def write_example_folder(self, folder: str, per_class: int = 50, split: str = 'test') -> str:
        """Writes images of the held-out classes (`split` role: test or validation) as a
        folder of PNGs, one subfolder per class, like a user's own folder."""
        from PIL import Image
        from pudnet_jax import evaluate
        self._intra('write_example_folder')
        r = evaluate.roles(self.config, self.pool())
        part, classes = r.test if split == 'test' else r.validation
        names = self._class_names()
        for c in classes:
            d = os.path.join(folder, names.get(c, f'class_{c}'))
            os.makedirs(d, exist_ok=True)
            for i, img in enumerate(part[c][:per_class]):
                Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(
                    os.path.join(d, f'{i:04d}.png'))
        return os.path.abspath(folder)

    def _class_names(self) -> dict:
        return dict(enumerate(self._source().class_names))

    def finetune(self, variables, images, labels, epochs: int = 5,
                 learning_rate: float = 1e-3, batch_size: int = 32, seed: int = 0):
        """(net, variables, classes): the predicted network plus a fresh linear head,
        trained on labelled images with Adam (paper Table VIII); `net.apply(variables, x)`
        gives logits over `classes` (the sorted distinct labels). BatchNorm statistics are
        recomputed from `images`. Save it with `save_network(variables, path,
        head_classes=classes)`."""
        from pudnet_jax import baselines
        x = self.prepare(images)
        classes, local = np.unique(np.asarray(labels), return_inverse=True)
        batch = min(int(batch_size), len(x))
        trainer = baselines.GroupTrainer(self.spec, len(classes), batch, 'adam')
        trained = trainer.train(x, local.astype(np.int32), float(learning_rate), int(epochs),
                                int(seed), init_target_vars=variables)
        stats = baselines.head_stats_fn(self.spec, len(classes))(trained['params'], x)
        net = baselines.TargetWithHead(self.spec.module(), len(classes))
        return net, {'params': trained['params'], 'batch_stats': stats}, classes.tolist()

    # ------------------------------------------------------------------ files

    def save_network(self, variables, path: str, head_classes=None, **metadata) -> str:
        """Saves a network from `predict` (or `finetune`, with its `head_classes`) as a
        plain Flax variables tree (Orbax) with network.json (the target, its image shape
        and normalisation, and `metadata`); `load_network(path)` reads it back."""
        from pudnet_jax import predict
        meta = predict.network_metadata(self.spec, self.config.data.name,
                                        metadata.pop('classes', []),
                                        metadata.pop('prediction_images', None))
        if head_classes is not None:
            meta['head_classes'] = list(head_classes)
            meta['usage'] = ('load_network(path) -> (net, variables, meta); net.apply(variables, '
                             'images, train=False) -> logits over meta["head_classes"]')
        meta.update(metadata)
        predict.save_variables(path, variables, meta)
        return os.path.abspath(path)

    def save(self, folder: str) -> str:
        """Writes the hypernetwork (variables, no optimizer state) and its config.json to
        `folder`, the layout of a shipped hypernetwork (`pudnet_jax.pretrained`)."""
        import orbax.checkpoint as ocp
        from pudnet_jax import workdir as workdir_lib
        os.makedirs(folder, exist_ok=True)
        target = os.path.abspath(os.path.join(folder, VARIABLES_DIR))
        if os.path.exists(target):
            shutil.rmtree(target)
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(target, jax.device_get(self.variables))
        workdir_lib.save_config(self.config, folder)
        return os.path.abspath(folder)

    # ------------------------------------------------------------------ helpers

    def pool(self) -> data_lib.Pool:
        """The hypernetwork's training dataset (all roles), through the image cache."""
        return self._source().pool

    def _source(self):
        if getattr(self, '_loaded', None) is None:
            from pudnet_jax import sources
            d = self.config.data
            self._loaded = sources.load(d.name, d.image_size, d.channels, d.data_dir,
                                        cache_dir=d.get('cache_dir'))
        return self._loaded

    def _intra(self, what: str) -> None:
        if self.config.eval.get('protocol', 'intra') != 'intra':
            raise UserError(f'{what}: this hypernetwork was set up for the inter-dataset '
                            f'protocol; use predict_folder or the command line.')

    def _config(self, **groups) -> ml_collections.ConfigDict:
        config = ml_collections.ConfigDict(json.loads(self.config.to_json_best_effort()))
        for group, fields in groups.items():
            for key, value in fields.items():
                config[group][key] = value
        return config
