"""The training loop of ``kcnn pretrain``, ``kcnn finetune`` and ``kcnn tune``'s trials: one engine, any task model.

A custom loop over ``strategy.run`` (Keras 3.15's ``model.fit`` fails under
``MultiWorkerMirroredStrategy``, keras#20585) that drives a task model of
:mod:`kcnn.tasks.models`: the model's per-example loss over the global batch, the
recipe's L2 weight decay and learning-rate schedule (in the optimizers' graphs), loss
scaling under float16, parameter groups (a rate factor each, and the epoch they start
training at: fine-tuning's head and backbone; pretraining has one). The model's additive
statistics are summed on the device; the host reads them every ``log_every`` steps (the
progress bar and the non-finite check) and at checkpoints, never per step.

Checkpoints every ``checkpoint_every`` steps and at each epoch's end hold everything a
run depends on (weights, optimizer variables, dropout's random state, the epoch's
running sums): ``resume=True`` continues from the newest one and ends where an
uninterrupted run ends. A non-finite loss stops the run with the last good checkpoint
kept. Validation runs distributed, every worker over its share.

Run directory: ``config.json`` (with the resolved precision, strategy and replicas),
``checkpoints/``, ``history.{json,csv}``, ``metrics.json`` (the last validation's full
metrics), ``tensorboard/``, ``curves.png``, ``predictions.png`` (segmentation and
detection) and ``model.weights.h5`` (a kcnn weights file with its metadata).
"""

import dataclasses
import json
import math
import os
import time

import keras
import tensorflow as tf

from kcnn.atomic import write_json
from kcnn.session import caller_state_kept
from kcnn.tasks.models import TASK_MODELS
from kcnn.train import checkpoints, hardware, history, recipes
from kcnn.train.task_data import TASK_DATA
from kcnn.train.validation import Validator, batch_sums, read, replica_loss, statistics_variables, summary
from kcnn.weights import files

LOG_EVERY = 20  # steps between the host's reads of the running sums (progress bar, non-finite check)


class TrainingStopped(RuntimeError):
    """Training cannot go on (a non-finite loss); the last good checkpoint is kept."""


@dataclasses.dataclass
class RunSettings:
    """Everything a run's result depends on (``config.json``), for every task."""

    task: str
    backbone: str
    dataset: str
    out: str
    recipe: recipes.Recipe
    input_shape: tuple
    head: str = None
    weights: str = None
    backbone_options: dict = dataclasses.field(default_factory=dict)
    head_options: dict = dataclasses.field(default_factory=dict)
    freeze_backbone_epochs: int = 0
    freeze_bn: bool = False
    backbone_lr_factor: float = 1.0
    precision: str = "auto"
    strategy: str = "auto"
    checkpoint_every: int = 500
    seed: int = 0
    data_dir: str = None
    manual_dir: str = None
    download: bool = False
    xla: bool = False  # compile each replica's step with XLA (slower on this project's CPUs; try it on GPUs)
    epochs: int = None  # a length replacing the recipe's (its schedule scaled to it)
    steps: int = None


@dataclasses.dataclass
class Group:
    """Layers trained together from ``start_epoch`` on, by one optimizer (its schedule carries the group's
    rate factor)."""

    name: str
    layers: list
    variables: list
    optimizer: keras.optimizers.Optimizer
    start_epoch: int = 0


def train(settings, *, preprocessing, resume=False, force_resume=False, verbose=1, notes=()):
    """Runs ``settings`` into its run directory; returns the history rows (one per epoch).

    ``notes``: lines for the caller to see once the run's settings are accepted (what it chose and why).
    """
    strategy = hardware.resolve_strategy(settings.strategy)  # multi-worker: before any other TF op
    chief = hardware.is_chief(strategy)
    task_data = TASK_DATA[settings.task](
        settings.dataset, input_shape=settings.input_shape, preprocessing=preprocessing,
        augment=settings.recipe.augment, data_dir=settings.data_dir, manual_dir=settings.manual_dir,
        download=settings.download)
    info = task_data.info
    steps_per_epoch = info.num_examples["train"] // settings.recipe.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch size {settings.recipe.batch_size} is larger than the training split "
                         f"({info.num_examples['train']} images)")
    recipe, note = settings.recipe.for_run(steps_per_epoch, epochs=settings.epochs, steps=settings.steps)
    policy = hardware.resolve_precision(settings.precision)
    config = json.loads(json.dumps(dataclasses.asdict(settings), default=list))
    config.update(precision=policy, strategy=hardware.strategy_name(strategy),
                  replicas=strategy.num_replicas_in_sync)
    # Only the chief refuses an existing run: a worker may start after the chief's first checkpoint.
    existing = checkpoints.check_run_dir(settings.out, config, resume or not chief, force=force_resume)
    existing = existing if resume else None
    with caller_state_kept():  # the policy and seeds are the run's, the caller's come back
        keras.mixed_precision.set_global_policy(policy)
        keras.utils.set_random_seed(settings.seed)  # the same initial weights in every process of a run
        loop = Loop(settings, recipe, strategy, task_data, steps_per_epoch)  # refuses bad model options
        os.makedirs(settings.out, exist_ok=True)
        if chief:
            write_json(os.path.join(settings.out, "config.json"), config)
        if verbose and not existing:
            for line in (*notes, note):
                if line:
                    print(line)
        return loop.run(existing, chief, verbose)


def build_task_model(settings, num_classes):
    """The task model of ``settings`` (built inside the caller's strategy scope)."""
    if settings.task == "classification":
        return TASK_MODELS["classification"](settings.backbone, num_classes, input_shape=settings.input_shape,
                                             backbone_options=settings.backbone_options)
    return TASK_MODELS[settings.task](
        settings.backbone, num_classes, image_size=settings.input_shape[:2], head=settings.head,
        backbone_options=settings.backbone_options, head_options=settings.head_options,
        backbone_weights=settings.weights)


class Loop:
    """The model, its parameter groups, the compiled steps and the device-side running sums of one run."""

    def __init__(self, settings, recipe, strategy, task_data, steps_per_epoch):
        self.settings, self.recipe, self.strategy, self.data = settings, recipe, strategy, task_data
        self.steps_per_epoch, self.total_steps = steps_per_epoch, recipe.total_steps(steps_per_epoch)
        self.replicas = strategy.num_replicas_in_sync
        with strategy.scope():
            self.model = build_task_model(settings, task_data.info.num_classes)
            if self.replicas > 1:  # batch statistics over the global batch: N replicas train as one
                for layer in self._batch_norms(self.model.layers):
                    layer.synchronized = True
            self.groups = self._groups()
        self.train_sums = statistics_variables(self.model)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.first_bad_step = tf.Variable(-1, dtype=tf.int64, trainable=False)
        self.validate = Validator(self.model, task_data, strategy)
        self.train_steps = {}

    @staticmethod
    def _batch_norms(layers):
        return [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]

    def _groups(self):
        settings, model = self.settings, self.model
        backbone_names = set(model.backbone_layers)
        if settings.freeze_bn:
            for layer in self._batch_norms(layer for layer in model.layers if layer.name in backbone_names):
                layer.trainable = False
        parts = [("all", [layer for layer in model.layers], 1.0, 0)]
        if settings.task != "classification":
            parts = [("head", [layer for layer in model.layers if layer.name not in backbone_names], 1.0, 0),
                     ("backbone", [layer for layer in model.layers if layer.name in backbone_names],
                      settings.backbone_lr_factor, settings.freeze_backbone_epochs)]
        groups = []
        for name, layers, factor, start_epoch in parts:
            variables = [v for layer in layers for v in layer.trainable_weights]
            schedule = self.recipe.lr_schedule(self.steps_per_epoch, factor=factor,
                                               offset=start_epoch * self.steps_per_epoch)
            optimizer = self.recipe.build_optimizer(schedule)
            if keras.mixed_precision.global_policy().name == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(variables)
            groups.append(Group(name, layers, variables, optimizer, start_epoch))
        return groups

    @property
    def state_arrays(self):
        """What a checkpoint holds besides the weights: optimizer variables and random seed states."""
        seeds = [v for v in self.model.variables if "seed_generator" in v.path]
        return [v for group in self.groups for v in group.optimizer.variables] + seeds

    # -- compiled steps -------------------------------------------------------------------------

    def train_step(self, epoch):
        """The compiled step of the groups that train at ``epoch``; layers of the others are frozen."""
        active = tuple(group for group in self.groups if group.start_epoch <= epoch)
        for group in self.groups:
            for layer in group.layers:
                if not (self.settings.freeze_bn and layer.name in self.model.backbone_layers
                        and isinstance(layer, keras.layers.BatchNormalization)):
                    layer.trainable = group in active
        key = tuple(group.name for group in active)
        if key not in self.train_steps:
            replica = self._replica_train(active)
            if self.settings.xla:
                replica = tf.function(replica, jit_compile=True)
            self.train_steps[key] = tf.function(lambda batch: self._distributed_train(replica, batch))
        return self.train_steps[key]

    def _replica_train(self, groups):
        model, global_batch = self.model, self.recipe.batch_size
        variables = [v for group in groups for v in group.variables]
        first = groups[0].optimizer

        def replica(images, targets):
            with tf.GradientTape() as tape:
                outputs = model(images, training=True)
                per_example = model.per_example_loss(targets, outputs)
                loss = replica_loss(model, targets, per_example, global_batch)
                if self.recipe.weight_decay:
                    squares = tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in variables])
                    loss += 0.5 * self.recipe.weight_decay * squares / self.replicas
                scaled = first.scale_loss(loss)
            gradients = tape.gradient(scaled, variables)
            start = 0
            for group in groups:
                part = gradients[start:start + len(group.variables)]
                start += len(group.variables)
                if group.optimizer is not first:  # one loss scale for all: 1 unless float16 loss scaling
                    rescale = group.optimizer.scale_loss(1.0) / first.scale_loss(1.0)
                    part = [g * tf.cast(rescale, g.dtype) for g in part]
                group.optimizer.apply(part, group.variables)
            return batch_sums(model, targets, outputs, per_example)

        return replica

    def _distributed_train(self, replica, batch):
        sums = {key: self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                for key, value in self.strategy.run(replica, args=batch).items()}
        self.step.assign_add(1)
        bad = tf.logical_and(self.first_bad_step < 0, tf.logical_not(tf.math.is_finite(sums["loss"])))
        self.first_bad_step.assign(tf.where(bad, self.step, self.first_bad_step))
        for key, value in sums.items():
            self.train_sums[key].assign_add(value)

    # -- the run --------------------------------------------------------------------------------

    def distribute(self, dataset):
        """``dataset`` (global batches, the same on every worker) split over the replicas.

        Several workers train as one: global step k on N replicas sees exactly the examples of one
        process's batch k. ``experimental_distribute_dataset`` cuts each global batch into N
        consecutive slices and, under the DATA auto-shard policy, gives replica i the i-th slice of
        every batch (every worker runs the whole pipeline and drops the other slices). The default
        policy, AUTO, does so for in-memory and generated sources only: over files (TFDS's
        TFRecords) it picks FILE, each worker reading other files, so batch k is no longer one
        process's batch k (and a worker whose files run out first is fed empty batches).
        """
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return self.strategy.experimental_distribute_dataset(dataset.with_options(options))

    def check_finite(self, state):
        bad = int(self.first_bad_step.numpy())
        if bad >= 0:
            raise TrainingStopped(
                f"loss became non-finite at step {bad} (epoch {state['epoch'] + 1}); the last good checkpoint "
                f"is kept in {os.path.join(self.settings.out, 'checkpoints')}: lower the learning rate and --resume")
        if not bool(_all_finite(self.model.trainable_variables)):
            raise TrainingStopped(
                f"weights became non-finite by step {state['step']}; the last good checkpoint is kept in "
                f"{os.path.join(self.settings.out, 'checkpoints')}: lower the learning rate and --resume")

    def run(self, existing, chief, verbose):
        settings, recipe = self.settings, self.recipe
        checkpoint_dir = os.path.join(settings.out, "checkpoints")
        state = {"step": 0, "epoch": 0, "batch": 0, "history": [], "sums": read(self.train_sums), "skipped": 0}
        if chief:
            checkpoints.remove_partials(checkpoint_dir)
        if existing:
            state = checkpoints.restore(existing, self.model, self.state_arrays)
            for key, value in state["sums"].items():
                self.train_sums[key].assign(value)
        # The loaders count skipped samples per process: this run's are the count since it started here,
        # plus what its checkpoint carried.
        skipped_before = self.data.skipped() - state["skipped"]
        board = history.TensorBoard(settings.out) if chief else None
        epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        validation = self.data.pipeline("val", training=False, seed=0, batch_size=recipe.batch_size)
        metrics, trained = None, False

        def save():
            self.check_finite(state)
            state["sums"], state["skipped"] = read(self.train_sums), self.data.skipped() - skipped_before
            if chief:
                checkpoints.save(checkpoint_dir, self.model, self.state_arrays, state)

        while state["step"] < self.total_steps:
            epoch, trained = state["epoch"], True
            step_fn = self.train_step(epoch)
            remaining = min(self.steps_per_epoch - state["batch"], self.total_steps - state["step"])
            dataset = self.data.pipeline("train", training=True, seed=settings.seed * 100_003 + epoch,
                                         batch_size=recipe.batch_size).skip(state["batch"]).take(remaining)
            progress = keras.utils.Progbar(remaining, verbose=verbose, stateful_metrics=["loss", "lr"])
            started, first_step = time.perf_counter(), state["step"]
            samples_before = state["sums"]["samples"]
            self.step.assign(state["step"])
            for batch in self.distribute(dataset):
                step_fn(batch)
                state["step"] += 1
                state["batch"] += 1
                done = state["step"] - first_step
                if done % LOG_EVERY == 0 and done < remaining:  # the epoch's end is reported below
                    self.check_finite(state)
                    running = read(self.train_sums)
                    progress.update(done, [("loss", running["loss"] / max(running["loss_weight"], 1.0)),
                                           ("lr", recipe.learning_rate(state["step"] - 1, self.steps_per_epoch))])
                if state["step"] % settings.checkpoint_every == 0:
                    save()  # checks first
            sums = read(self.train_sums)
            progress.update(state["step"] - first_step, [("loss", sums["loss"] / max(sums["loss_weight"], 1.0))],
                            finalize=True)
            seconds = time.perf_counter() - started
            metrics = self.validate(validation)
            train = summary(self.model, sums)
            row = {"epoch": epoch + 1, "step": state["step"],
                   "lr": recipe.learning_rate(state["step"] - 1, self.steps_per_epoch),
                   **train, **{f"val_{k}": v for k, v in metrics.items() if isinstance(v, float)},
                   "images_per_second": (sums["samples"] - samples_before) / max(seconds, 1e-9),
                   "skipped_samples": self.data.skipped() - skipped_before}
            state["history"].append(row)
            state["epoch"], state["batch"] = epoch + 1, 0
            for variable in self.train_sums.values():
                variable.assign(tf.zeros_like(variable))
            save()
            if chief:
                history.record_epoch(settings.out, state["history"], board, state["step"])
            if verbose:
                key = self.model.key_metric
                print(f"epoch {epoch + 1}/{epochs}: loss {row['loss']:.4f} val loss {row['val_loss']:.4f} "
                      f"val {key} {row['val_' + key]:.4f} ({row['images_per_second']:.1f} img/s)")
        if chief:
            board.close()
        if trained or not os.path.isfile(os.path.join(settings.out, "model.weights.h5")):
            self.finish(state["history"], metrics or self.validate(validation), validation, chief)
        skipped = self.data.skipped() - skipped_before
        if verbose and skipped:
            print(f"skipped {skipped} unreadable or invalid samples (see the warnings above)")
        return state["history"]

    def finish(self, rows, metrics, validation, chief):
        """The run's outputs: curves, metrics.json, the prediction figure and model.weights.h5."""
        out = self.settings.out
        if chief:
            write_json(os.path.join(out, "metrics.json"), {"split": "val", **metrics})
            history.plot(out, rows, self.model.key_metric)
            if self.data.figure:
                raw = self.data.raw("val", training=False, seed=0, batch_size=self.recipe.batch_size)
                images, targets = next(iter(raw))
                normalised, _ = next(iter(validation))
                self.data.draw(self.model, images, targets, self.model(normalised, training=False),
                               os.path.join(out, self.data.figure))
        files.save(self.model, _model_path(out, self.strategy, chief), self.metadata(metrics))

    def metadata(self, metrics):
        settings, info = self.settings, self.data.info
        return {
            "task": settings.task, "head": settings.head, "head_options": dict(settings.head_options),
            "architecture": settings.backbone, "options": dict(settings.backbone_options),
            "include_top": settings.task == "classification", "classes": info.num_classes,
            "input_shape": list(settings.input_shape), "preprocessing": self.data.preprocessing.to_dict(),
            "class_names": list(info.class_names),
            "eval_transform": self.data.eval_transform if settings.task == "classification" else "resize",
            "source": {"library": "kcnn", "file": None, "sha256": None, "url": None, "top1": None, "top5": None,
                       "run": os.path.abspath(settings.out), "dataset": settings.dataset,
                       "backbone_weights": settings.weights},
            "metrics": {k: v for k, v in metrics.items() if not isinstance(v, dict)},
            "skipped_tensors": [],
        }


@tf.function
def _all_finite(variables):
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables])


def _model_path(out, strategy, chief):
    """``RUN/model.weights.h5``; other workers write theirs under ``RUN/workers/`` (they must agree)."""
    if chief:
        return os.path.join(out, "model.weights.h5")
    resolver = strategy.cluster_resolver
    return os.path.join(out, "workers", f"{resolver.task_type}-{resolver.task_id}", "model.weights.h5")

