"""The Colab notebooks run top to bottom on the CPU with a tiny setting (their parameter
cell overridden, as papermill does), and are stored in git without outputs."""

import os

import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(REPO, 'notebooks')
TINY_COMPARE = dict(groups=1, tune_groups=1, epochs=(1,), learning_rates=(1e-3,),
                    finetune_epochs=(1,), finetune_learning_rates=(1e-3,), batch_size=10)
TINY = {
    'quickstart.ipynb': {'GROUPS': 2, 'COMPARE': TINY_COMPARE},
    'your_own_images.ipynb': {'PER_CLASS': 12, 'BASELINES': False, 'EPOCHS': 1},
    'train_tfds.ipynb': {'CONFIG': os.path.join(REPO, 'configs', 'test.py'), 'WORKDIR': 'w',
                         'OVERRIDES': ['--config.train.num_train_steps=2',
                                       '--config.eval.groups=1', '--config.eval.val_groups=1'],
                         'TENSORBOARD': False, 'EVAL_GROUPS': 1},
}


def test_every_notebook_has_a_tiny_setting():
    assert sorted(TINY) == sorted(n for n in os.listdir(NOTEBOOKS) if n.endswith('.ipynb'))


@pytest.mark.parametrize('name', sorted(TINY))
def test_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch):
    nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    code = [c for c in nb.cells if c.cell_type == 'code']
    assert all(not c.outputs and c.execution_count is None for c in code), 'outputs in git'
    tagged = [i for i, c in enumerate(nb.cells) if 'parameters' in c.metadata.get('tags', [])]
    assert len(tagged) == 1
    for key in TINY[name]:
        assert f'\n{key} = ' in '\n' + nb.cells[tagged[0]].source, key
    injected = nbformat.v4.new_code_cell('\n'.join(f'{k} = {v!r}' for k, v in TINY[name].items()))
    nb.cells.insert(tagged[0] + 1, injected)
    # The kernel (and what it starts) imports this checkout's pudnet_jax and configs/;
    # conftest's PUDNET_CACHE_DIR keeps the user's image cache out of it.
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join(
        [REPO] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name='python3',
                                     resources={'metadata': {'path': str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs
              if o.output_type == 'error']
    assert not errors
