"""`--mode=predict`: the target's full variables for a dataset the hypernetwork never saw.

From a trained workdir, for each group of the held-out classes: predict the target's
parameters in one forward pass, compute its BatchNorm statistics from the same images,
and save {'params', 'batch_stats'} with Orbax as a plain Flax variables tree that
`make_target(name, width).apply` loads without the hypernetwork. The saved network is then
reloaded and evaluated on held-out images of those classes, so the report is about the
file on disk, not about an in-memory copy.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from pudnet_jax import data as data_lib
from pudnet_jax import evaluate as evaluate_lib
from pudnet_jax import train as train_lib
from pudnet_jax.targets import make_target

METADATA_FILE = 'network.json'


def save_variables(path: str, variables: dict, metadata: dict) -> None:
    """Saves a plain Flax variables tree (Orbax; atomic) and its description as JSON."""
    path = os.path.abspath(path)
    if os.path.exists(path):
        shutil.rmtree(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(path, 'variables'), jax.device_get(variables))
    with open(os.path.join(path, METADATA_FILE), 'w') as f:
        json.dump(metadata, f, indent=2)


def load_variables(path: str):
    """(target module, variables, metadata) of a saved predicted network."""
    path = os.path.abspath(path)
    with open(os.path.join(path, METADATA_FILE)) as f:
        metadata = json.load(f)
    with ocp.StandardCheckpointer() as ckptr:
        variables = ckptr.restore(os.path.join(path, 'variables'))
    return make_target(metadata['target'], metadata['width']), variables, metadata


def predict_and_save(workdir: str, output_dir: str | None = None) -> dict:
    config, model, spec, hyper_vars = train_lib.restore_hypernet(workdir)
    pool = data_lib.load_pool(config.data.name, config.data.image_size, config.data.channels,
                              config.data.data_dir)
    sampler = evaluate_lib.group_sampler(config, pool)
    predict = evaluate_lib.make_predict_fn(model, spec)
    output_dir = output_dir or os.path.join(workdir, config.predict.output)

    reports = []
    for g in range(config.predict.groups):
        group = sampler.sample(config.predict.first_group + g, 1)[0]
        t0 = time.perf_counter()
        variables = jax.block_until_ready(predict(hyper_vars, group.support))
        first_call = time.perf_counter() - t0
        t0 = time.perf_counter()
        variables = jax.block_until_ready(predict(hyper_vars, group.support))
        seconds = time.perf_counter() - t0
        class_ids = [int(config.data.test_classes[c]) for c in group.classes]
        path = os.path.join(output_dir, f'group_{g:03d}')
        metadata = {
            'target': spec.name, 'width': spec.width, 'image_shape': list(spec.image_shape),
            'dataset': config.data.name, 'classes': class_ids,
            'prediction_images': int(group.support.shape[0]),
            'normalization': {'scale': 1 / 255, 'mean': data_lib.NORMALIZE_MEAN,
                              'std': data_lib.NORMALIZE_STD},
            'usage': "make_target(target, width).apply(variables, images, train=False) "
                     "-> features; classify by cosine to class centroids",
        }
        save_variables(path, variables, metadata)

        # Evaluate what was written, through the plain target alone.
        target, loaded, _ = load_variables(path)
        classify = evaluate_lib.make_classify_fn(spec, len(class_ids))
        assert target == spec.module()
        pred = classify(loaded, group.support, group.support_labels, group.query)
        accuracy = float(np.mean(np.asarray(pred) == group.query_labels))
        report = dict(group=g, path=path, classes=class_ids,
                      prediction_images=int(group.support.shape[0]),
                      test_images=int(group.query.shape[0]), accuracy=accuracy,
                      predict_seconds=seconds, first_call_seconds=first_call)
        metadata['report'] = report
        with open(os.path.join(path, METADATA_FILE), 'w') as f:
            json.dump(metadata, f, indent=2)
        reports.append(report)
        print(f"group {g}: classes {class_ids}, {report['prediction_images']} prediction "
              f"images, {report['test_images']} test images: accuracy "
              f"{100 * accuracy:.2f} %, predicted in {1000 * seconds:.1f} ms "
              f"(first call with compilation {first_call:.2f} s) -> {path}")
    summary = {'groups': reports, 'accuracy': float(np.mean([r['accuracy'] for r in reports])),
               'output_dir': output_dir}
    with open(os.path.join(output_dir, 'predict_report.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    return summary
