"""`--mode=predict`: the target's full variables for a dataset the hypernetwork never saw.

From a trained workdir, for each group of the held-out classes: predict the target's
parameters in one forward pass, compute its BatchNorm statistics from the same images,
and save {'params', 'batch_stats'} with Orbax as a plain Flax variables tree that
`make_target(name, width).apply` loads without the hypernetwork. The saved network is then
reloaded and evaluated on held-out images of those classes, so the report is about the
file on disk, not about an in-memory copy.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import tempfile
import time

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from pudnet_jax.files import write_json
from pudnet_jax import controls
from pudnet_jax import data as data_lib
from pudnet_jax import evaluate as evaluate_lib
from pudnet_jax import inter_dataset
from pudnet_jax import predictor as predictor_lib
from pudnet_jax import workdir as workdir_lib
from pudnet_jax.targets import make_target

METADATA_FILE = 'network.json'
REPORT_FILE = 'report.json'      # --data: the report, also inside network.json


PREVIOUS_SUFFIX = '.previous'


def _recover(path: str) -> None:
    """A save killed between its two renames leaves the old network at `path.previous`
    and no `path`: put it back."""
    previous = path + PREVIOUS_SUFFIX
    if not os.path.exists(path) and os.path.isdir(previous):
        os.rename(previous, path)


def save_variables(path: str, variables: dict, metadata: dict) -> None:
    """Saves a plain Flax variables tree (Orbax) and its description as JSON, atomically:
    both are written to a temporary directory next to `path`, which then replaces the
    old network. The old network stays in place until the new one is complete, so a
    crash at any point leaves one whole network (the old or the new); the temporary
    directories of killed saves of the same path are removed (main.py holds the workdir
    lock, so no other process is saving there)."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    _recover(path)
    prefix = f'.{os.path.basename(path)}.tmp-'
    for stale in glob.glob(os.path.join(glob.escape(parent), glob.escape(prefix) + '*')):
        shutil.rmtree(stale, ignore_errors=True)     # left by a save that was killed
    tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(os.path.join(tmp, 'variables'), jax.device_get(variables))
        write_json(os.path.join(tmp, METADATA_FILE), metadata)
        previous = path + PREVIOUS_SUFFIX
        if os.path.exists(previous):
            shutil.rmtree(previous)
        if os.path.exists(path):
            os.rename(path, previous)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(path + PREVIOUS_SUFFIX, ignore_errors=True)


def load_variables(path: str):
    """(target module, variables, metadata) of a saved predicted network."""
    path = os.path.abspath(path)
    if not os.path.exists(path) and os.path.isdir(path + PREVIOUS_SUFFIX):
        path += PREVIOUS_SUFFIX      # a save was interrupted: the complete old network
    with open(os.path.join(path, METADATA_FILE)) as f:
        metadata = json.load(f)
    with ocp.StandardCheckpointer() as ckptr:
        variables = ckptr.restore(os.path.join(path, 'variables'))
    module = make_target(metadata['target'], metadata['width'])
    if metadata.get('head_classes'):     # fine-tuned with a linear head (api.finetune)
        from pudnet_jax.baselines import TargetWithHead
        module = TargetWithHead(module, len(metadata['head_classes']))
    return module, variables, metadata


def predict_and_save(workdir: str, output_dir: str | None = None) -> dict:
    config, model, spec, hyper_vars = workdir_lib.restore_hypernet(workdir)
    output_dir = output_dir or os.path.join(workdir, config.predict.output)
    if inter_dataset.is_inter_dataset(config):
        return predict_inter_target(workdir, config, model, spec, hyper_vars, output_dir)
    pool = data_lib.load_pool(config.data.name, config.data.image_size, config.data.channels,
                              config.data.data_dir, cache_dir=config.data.get('cache_dir'))
    sampler = evaluate_lib.group_sampler(config, pool)
    predict = predictor_lib.make_predictor(model, spec, config.eval.get('bn_images'))

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
        metadata = network_metadata(spec, config.data.name, class_ids,
                                    int(group.support.shape[0]))
        save_variables(path, variables, metadata)

        # Evaluate what was written, through the plain target alone.
        target, loaded, _ = load_variables(path)
        classify = evaluate_lib.make_classify_fn(spec, len(class_ids))
        assert target == make_target(spec.name, spec.width)   # saved as a plain float32 target
        pred = classify(loaded, *evaluate_lib.labelled(group, len(class_ids), config.eval.shots),
                        group.query)
        accuracy = float(np.mean(np.asarray(pred) == group.query_labels))
        report = dict(group=g, path=path, classes=class_ids,
                      prediction_images=int(group.support.shape[0]),
                      test_images=int(group.query.shape[0]), accuracy=accuracy,
                      predict_seconds=seconds, first_call_seconds=first_call)
        metadata['report'] = report
        write_json(os.path.join(path, METADATA_FILE), metadata)
        reports.append(report)
        print(f"group {g}: classes {class_ids}, {report['prediction_images']} prediction "
              f"images, {report['test_images']} test images: accuracy "
              f"{100 * accuracy:.2f} %, predicted in {1000 * seconds:.1f} ms "
              f"(first call with compilation {first_call:.2f} s) -> {path}")
    summary = {'groups': reports, 'accuracy': float(np.mean([r['accuracy'] for r in reports])),
               'output_dir': output_dir}
    write_json(os.path.join(output_dir, 'predict_report.json'), summary)
    return summary


def network_metadata(spec, dataset: str, classes, prediction_images: int) -> dict:
    """network.json's description of a saved classification network (every protocol's:
    the held-out groups, an inter-dataset target, a user's folder, the Python API)."""
    return {
        'target': spec.name, 'width': spec.width, 'image_shape': list(spec.image_shape),
        'dataset': dataset, 'classes': list(classes), 'prediction_images': prediction_images,
        'normalization': {'scale': 1 / 255, 'mean': data_lib.NORMALIZE_MEAN,
                          'std': data_lib.NORMALIZE_STD},
        'usage': "make_target(target, width).apply(variables, images, train=False) "
                 "-> features; classify by cosine to class centroids",
    }


def predict_inter_target(workdir: str, config, model, spec, hyper_vars,
                         output_dir: str) -> dict:
    """An inter-dataset workdir's `--mode=predict`: the network for the whole target
    dataset's prediction part, saved, reloaded and scored on its test part."""
    e = config.eval
    h, _, c = spec.image_shape
    names, predict_pool, test_pool, _ = inter_dataset.load_parts(
        e, h, c, config.data.get('cache_dir'))
    variables, timing = inter_dataset.predict_variables(e, model, spec, hyper_vars, predict_pool)
    path = os.path.join(output_dir, f'inter_{e.dataset}')
    metadata = network_metadata(spec, e.dataset, names, timing['prediction_images'])
    save_variables(path, variables, metadata)
    _, loaded, _ = load_variables(path)
    scored = inter_dataset.score_with_controls(config, model, spec, hyper_vars, loaded,
                                               predict_pool, test_pool, workdir=workdir)
    report = dict(scored, **timing, path=path, dataset=e.dataset, train_dataset=config.data.name)
    metadata['report'] = report
    write_json(os.path.join(path, METADATA_FILE), metadata)
    print(inter_dataset.format_results(report) + f'\nsaved -> {path}')
    return report


def folder_settings(config) -> 'ml_collections.ConfigDict':
    """Protocol settings for a user's folder: the config's inter-dataset settings where it
    has them, else the paper's (10 labelled images per class, 20 draws)."""
    e, p = config.eval, config.predict
    return ml_collections.ConfigDict({
        'shots': e.shots, 'draws': e.get('draws', 20), 'chunk_size': e.get('chunk_size', 500),
        'bn_images': e.get('bn_images', 1000), 'seed': e.seed, 'top_k': e.get('top_k'),
        'untrained_seeds': e.get('untrained_seeds', 3),
        'mean_sketch_images': e.get('mean_sketch_images', 500),
        'refine_steps': e.get('refine_steps', 0), 'refine_lr': e.get('refine_lr', 0.1),
        'refine_optimizer': e.get('refine_optimizer', 'adam'),
        'predict_fraction': 1.0 - p.get('holdout_fraction', 0.2)})


def predict_folder(workdir: str, folder: str, config=None, output_dir: str | None = None,
                   baselines: bool | None = None, hypernet: tuple | None = None) -> dict:
    """`--mode=predict --data=<folder>`: one subfolder of images per class.

    Each class is split (seeded, deterministic) into a prediction part (80%: sketch,
    BatchNorm statistics, labelled images for the centroids) and a held-out part (20%:
    the reported accuracy). Images are converted to the hypernetwork's image size and
    channels. The predicted variables are saved, reloaded, and the reloaded network is
    what the accuracy is measured on, beside the controls (`controls`) on the same draws
    and, unless `baselines` is False (`--no-baselines`; default `config.predict.baselines`),
    the curve the user would otherwise take (`folder_baselines`). `hypernet` = (config,
    model, spec, variables) of an already loaded hypernetwork (the Python API): then
    nothing is restored from `workdir`, which only caches the controls' mean sketch.
    """
    from pudnet_jax import sources
    # The folder is read and checked before the hypernetwork is loaded: its problems
    # (missing, too few classes or images) are reported at once.
    config = config or (hypernet[0] if hypernet else workdir_lib.load_config(workdir))
    e = folder_settings(config)
    h, c = config.data.image_size, config.data.channels
    t0 = time.perf_counter()
    loaded = sources.load('folder', h, c, folder, cache_dir=config.data.get('cache_dir'))
    load_seconds = time.perf_counter() - t0
    names = loaded.class_names
    predict_pool, test_pool = data_lib.split_pool(loaded.pool, e.predict_fraction, e.seed)
    inter_dataset.check_parts(folder, names, predict_pool, test_pool, e.shots)
    config, model, spec, hyper_vars = hypernet or workdir_lib.restore_hypernet(workdir, config)
    variables, timing = inter_dataset.predict_variables(e, model, spec, hyper_vars, predict_pool)

    path = output_dir or os.path.join(workdir, config.predict.output, folder_output_name(folder))
    metadata = network_metadata(spec, os.path.abspath(folder), names, timing['prediction_images'])
    # With a refinement configured (the multi-domain default's learned step), the saved
    # network is the refined one: the sketch of the whole prediction part refined on the
    # first draw's labelled images, as the report's refined row scores its first draw.
    refined = refiner = None
    if e.get('refine_steps'):
        refiner = inter_dataset.make_refiner(_with_eval(config, e), model, spec, hyper_vars,
                                             predict_pool)
        refiner(0)                                     # compiles; timed below without it
        refined, refine_seconds = refiner(0)
        metadata['refined'] = dict(inter_dataset.refine_settings(e), draw=0,
                                   labelled_per_class=int(e.shots))
    save_variables(path, variables if refined is None else refined, metadata)
    _, loaded_vars, _ = load_variables(path)
    result = inter_dataset.score_with_controls(_with_eval(config, e), model, spec, hyper_vars,
                                               variables if refined is not None else loaded_vars,
                                               predict_pool, test_pool, workdir=workdir,
                                               refiner=refiner,
                                               first_refined=None if refined is None else
                                               (refined, refine_seconds))
    if refined is not None:
        # The saved (refined) network as reloaded from disk, scored on every draw.
        saved = inter_dataset.score(e, spec, loaded_vars, predict_pool, test_pool)
        result['saved_network'] = {'what': 'PudNet + refined sketch (draw 0)',
                                   'accuracy': saved['accuracy'], 'ci95': saved['ci95'],
                                   'refine_seconds': refine_seconds}
    if baselines is None:
        baselines = config.predict.get('baselines', True)
    if baselines:
        # What from scratch must reach, and fine-tuning starts from: the saved network.
        own = result.get('saved_network', result)
        result['baselines'] = folder_baselines(
            config, e, spec, loaded_vars, predict_pool, test_pool, own['accuracy'],
            timing['predict_seconds'] + own.get('refine_seconds', 0.0))
    result['verdict'] = payoff_line(result)
    corrupt = loaded.meta.get('corrupt_files', [])
    report = dict(result, **timing, path=path, folder=os.path.abspath(folder), classes=names,
                  images_per_class={n: int(len(loaded.pool[k])) for k, n in enumerate(names)
                                    if k in loaded.pool},
                  skipped_corrupt_files=corrupt, ignored_non_image_files=loaded.meta.get(
                      'ignored_files', 0), load_seconds=load_seconds,
                  from_cache=loaded.meta['from_cache'])
    metadata['report'] = report
    write_json(os.path.join(path, METADATA_FILE), metadata)
    write_json(os.path.join(path, REPORT_FILE), report)
    print(format_folder_report(report))
    return report


def _with_eval(config, e) -> ml_collections.ConfigDict:
    """The config with its evaluation settings replaced by the folder protocol's `e`."""
    out = ml_collections.ConfigDict(config.to_dict())
    out.eval = e
    return out


def folder_baselines(config, e, spec, predicted, predict_pool, test_pool, pudnet_accuracy,
                     pudnet_seconds) -> dict:
    """What the user would do without PudNet, on the same images: Adam from scratch on all
    the folder's labelled prediction images, and PudNet's network fine-tuned on them (a
    fresh linear head), at `config.predict.baseline_epochs`; each with its held-out
    accuracy (BatchNorm statistics from the same prediction subsample as PudNet's) and
    its training seconds (after compilation)."""
    from pudnet_jax import baselines as baselines_lib
    p = config.predict
    images, labels, _ = inter_dataset.flatten(predict_pool)
    test, test_labels, _ = inter_dataset.flatten({c: test_pool[c] for c in sorted(predict_pool)})
    x, x_test = data_lib.normalize(images), data_lib.normalize(test)
    pick = predictor_lib.bn_subsample(len(x), e.bn_images, e.seed)
    epochs, lr = tuple(p.baseline_epochs), float(p.baseline_learning_rate)
    batch = min(int(p.baseline_batch_size), len(x))
    trainer = baselines_lib.GroupTrainer(spec, len(predict_pool), batch, 'adam')
    # Compile the step and the evaluation once, untimed.
    trainer.fit(x[:batch], labels[:batch], x[pick], x_test[:batch], test_labels[:batch], lr,
                [1], seed=0)
    curves = {}
    for name, init in (('adam_scratch', None), ('pudnet_finetune', predicted)):
        accs, secs = trainer.fit(x, labels, x[pick], x_test, test_labels, lr, epochs, seed=0,
                                 init_target_vars=init)
        curves[name] = {'epochs': list(epochs), 'accuracy': accs, 'seconds': secs}
        logging.info('--data baseline %s: %s', name,
                     ', '.join(f'{ep} ep {100 * a:.2f} % in {s:.2f} s'
                               for ep, a, s in zip(epochs, accs, secs)))
    chance = 1.0 / len(predict_pool)
    reach = baselines_lib.time_to_reach(curves['adam_scratch']['seconds'],
                                        curves['adam_scratch']['accuracy'], pudnet_accuracy,
                                        chance)
    return {'learning_rate': lr, 'batch_size': batch, 'train_images': int(len(x)),
            'curves': curves, 'scratch_seconds_to_match_pudnet': reach,
            'pudnet_predict_seconds': pudnet_seconds,
            'note': 'trained on every labelled prediction image (PudNet\'s centroids use '
                    f'{e.shots} per class); test part and BN subsample as for PudNet'}


def payoff_line(r: dict) -> str:
    """Did prediction pay off for this folder? PudNet against the untrained control, and
    the scratch time needed to match it."""
    refined = r.get('refined') if 'saved_network' in r else None    # what was saved
    line = (controls.verdict(refined).replace('PudNet is', 'PudNet + refined sketch is')
            if refined else controls.verdict(r))
    b = r.get('baselines')
    if b:
        reach = b['scratch_seconds_to_match_pudnet']
        last = b['curves']['adam_scratch']
        if reach is None:
            line += (f"; Adam from scratch did not reach PudNet's accuracy within "
                     f"{last['epochs'][-1]} epochs ({last['seconds'][-1]:.2f} s)")
        else:
            line += (f"; Adam from scratch matches PudNet after {reach:.2f} s of training "
                     f"(PudNet: {b['pudnet_predict_seconds']:.2f} s to predict)")
    return line


def folder_output_name(folder: str) -> str:
    """`folder_<last path component>-<8 hex digits of the absolute path>`: two folders of
    the same name (`.../cats/train`, `.../dogs/train`) never share a saved network."""
    folder = os.path.abspath(folder).rstrip(os.sep)
    name = os.path.basename(folder) or 'folder'
    return f'folder_{name}-{hashlib.sha256(folder.encode()).hexdigest()[:8]}'


def format_folder_report(r: dict) -> str:
    rows = [
        ('folder', r['folder']),
        ('classes', f"{len(r['classes'])}: " + ', '.join(
            f"{n} ({r['images_per_class'].get(n, 0)})" for n in r['classes'])),
        ('images used', f"{r['prediction_images']} to predict, {r['test_images']} held out "
                        f"to test; skipped {len(r['skipped_corrupt_files'])} unreadable and "
                        f"ignored {r['ignored_non_image_files']} non-image file(s)"),
        ('held-out accuracy', f"{100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f} % "
                              f"({r['ways']}-way, centroids from {r['shots']} labelled "
                              f"images per class, 95% CI over {r['draws']} draws)"),
    ] + (controls.table_rows(r, 'draws') if 'controls' in r else []) + (
        evaluate_lib.refined_rows(r)) + [
        ('time to predict', f"{r['predict_seconds']:.3f} s ({r['backend']}; first call with "
                            f"compilation {r['first_predict_seconds']:.2f} s; loading "
                            f"{r['load_seconds']:.2f} s{', from the cache' if r['from_cache'] else ''})"),
        ('saved', f"{r['path']} (Orbax; predict.load_variables)"),
    ]
    if 'saved_network' in r:
        sv = r['saved_network']
        rows.insert(-1, ('saved network', f"{sv['what']}: {100 * sv['accuracy']:.2f} ± "
                                          f"{100 * sv['ci95']:.2f} % held-out, as reloaded "
                                          f"(refined in {1000 * sv['refine_seconds']:.0f} ms)"))
    b = r.get('baselines')
    if b:
        for name, label in (('adam_scratch', 'Adam from scratch'),
                            ('pudnet_finetune', 'PudNet + fine-tuning')):
            cv = b['curves'][name]
            rows.append((label, ', '.join(f"{ep} ep {100 * a:.2f} % ({s:.2f} s)" for ep, a, s
                                          in zip(cv['epochs'], cv['accuracy'], cv['seconds']))))
    if 'verdict' in r:
        rows.append(('did it pay off', r['verdict']))
    return evaluate_lib.format_table(rows)
