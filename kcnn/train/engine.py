"""``pretrain``: one training loop for every zoo model, on one device, many GPUs or many machines.

A custom loop over ``strategy.run`` (Keras 3.15's ``model.fit`` fails under
``MultiWorkerMirroredStrategy``): cross-entropy on float32 logits, the recipe's L2
weight decay and learning-rate schedule, loss scaling under float16, GoogLeNet's
auxiliary losses (weight 0.3) when the model has them. Checkpoints every
``checkpoint_every`` steps and at each epoch's end; ``resume=True`` continues from
the newest one, at the same batch of the same epoch (each epoch's shuffle is
seeded by ``seed`` and the epoch number). A non-finite loss stops the run with the
last good checkpoint kept.

Run directory: ``config.json``, ``checkpoints/``, ``history.{json,csv}``,
``tensorboard/``, ``curves.png`` and ``model.weights.h5`` (a kcnn weights file:
``kcnn.build(name, weights=...)`` rebuilds the trained network with its preprocessing).
"""

import dataclasses
import json
import math
import os
import time

import keras
import tensorflow as tf

from kcnn import data, registry
from kcnn.atomic import write_json
from kcnn.models import build
from kcnn.train import checkpoints, hardware, history, recipes
from kcnn.weights import PRESETS, Preprocessing, files

AUX_LOSS_WEIGHT = 0.3  # Szegedy et al. 2014, section 5
GRAYSCALE = Preprocessing("gray", "RGB", 1 / 255, (0.5,), (0.5,))


class TrainingStopped(RuntimeError):
    """Training cannot go on (a non-finite loss); the last good checkpoint is kept."""


@dataclasses.dataclass
class Settings:
    model: str
    dataset: str
    out: str
    recipe: recipes.Recipe
    precision: str = "auto"
    strategy: str = "auto"
    input_shape: tuple = None
    model_options: dict = dataclasses.field(default_factory=dict)
    checkpoint_every: int = 500
    seed: int = 0
    data_dir: str = None
    manual_dir: str = None
    download: bool = False
    xla: bool = False  # compile each replica's step with XLA (slower on this project's CPUs; try it on GPUs)


def _run_settings(model, dataset, out, recipe, overrides, epochs, steps, **rest):
    spec = registry.get(model)
    recipe = recipes.get(recipe or recipes.DEFAULT_RECIPE[spec.family], **(overrides or {}))
    if epochs is not None and steps is not None:
        raise ValueError("give --epochs or --steps, not both")
    if epochs is not None:
        recipe = recipe.with_length(epochs, "epochs")
    if steps is not None:
        recipe = recipe.with_length(steps, "steps")
    return Settings(model=spec.name, dataset=os.fspath(dataset), out=os.fspath(out), recipe=recipe, **rest)


class Loop:
    """The model, optimizer and compiled steps of one run."""

    def __init__(self, settings, strategy, info, shape):
        self.settings, self.strategy = settings, strategy
        self.replicas = strategy.num_replicas_in_sync
        self.global_batch = settings.recipe.batch_size
        with strategy.scope():
            self.model = build(settings.model, classes=info.num_classes, input_shape=shape,
                               classifier_activation=None, **settings.model_options)
            optimizer = settings.recipe.build_optimizer()
            if keras.mixed_precision.global_policy().name == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(self.model.trainable_variables)
            self.optimizer = optimizer
        compile_replica = (lambda fn: tf.function(fn, jit_compile=True)) if settings.xla else (lambda fn: fn)
        self.train_step = tf.function(distributed(strategy, compile_replica(self._train_replica)))
        self.eval_step = tf.function(distributed(strategy, compile_replica(self._eval_replica)))

    def _logits(self, images, training):
        outputs = self.model(images, training=training)
        if isinstance(outputs, dict):
            return tf.cast(outputs["predictions"], tf.float32), [
                tf.cast(v, tf.float32) for k, v in sorted(outputs.items()) if k != "predictions"]
        return tf.cast(outputs, tf.float32), []

    def _train_replica(self, images, labels):
        decay = self.settings.recipe.weight_decay
        with tf.GradientTape() as tape:
            logits, aux = self._logits(images, training=True)
            per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch)
            for aux_logits in aux:
                aux_loss = keras.losses.sparse_categorical_crossentropy(labels, aux_logits, from_logits=True)
                loss += AUX_LOSS_WEIGHT * tf.nn.compute_average_loss(aux_loss, global_batch_size=self.global_batch)
            if decay:
                squares = tf.add_n([tf.reduce_sum(tf.square(tf.cast(w, tf.float32)))
                                    for w in self.model.trainable_weights])
                loss += 0.5 * decay * squares / self.replicas
            scaled = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, self.model.trainable_variables)
        self.optimizer.apply(gradients, self.model.trainable_variables)
        return batch_sums(labels, logits, per_example)

    def _eval_replica(self, images, labels):
        logits, _ = self._logits(images, training=False)
        per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        return batch_sums(labels, logits, per_example)

    def run_epoch(self, dataset, step_fn, on_step=None):
        totals = {}
        for batch in self.strategy.experimental_distribute_dataset(dataset):
            sums = {k: float(v) for k, v in step_fn(batch).items()}
            add_sums(totals, sums)
            if on_step is not None and on_step(sums):
                break
        return averages(totals)


def checkpoint_or_stop(checkpoint_dir, model, optimizer, state, chief):
    """A checkpoint of ``state`` (on the chief), or ``TrainingStopped`` when the weights are no longer finite."""
    if not all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in model.trainable_variables):
        raise TrainingStopped(f"weights became non-finite by step {state['step']}; the last good "
                              f"checkpoint is kept in {checkpoint_dir}: lower the learning rate and --resume")
    if chief:
        checkpoints.save(checkpoint_dir, model, optimizer, state)


def stop_if_not_finite(loss, state, checkpoint_dir):
    """``TrainingStopped`` naming the step when a batch's mean ``loss`` is NaN or infinite."""
    if not math.isfinite(loss):
        raise TrainingStopped(
            f"loss became {loss} at step {state['step'] + 1} (epoch {state['epoch'] + 1}); the last good "
            f"checkpoint is kept in {checkpoint_dir}: lower the learning rate and --resume")


def distributed(strategy, replica_fn):
    """A step running ``replica_fn(*batch) -> {name: sum}`` on every replica, the sums added up."""
    def step(batch):
        sums = strategy.run(replica_fn, args=batch)
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in sums.items()}
    return step


def batch_sums(labels, scores, per_example_loss):
    """A batch's loss sum and top-1/top-5 hit counts (``scores``: logits or probabilities) and size."""
    labels = tf.cast(labels, tf.int32)
    k = min(5, scores.shape[-1])
    return {"loss": tf.reduce_sum(per_example_loss),
            "top1": tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, scores, 1), tf.float32)),
            "top5": tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, scores, k), tf.float32)),
            "count": tf.cast(tf.shape(labels)[0], tf.float32)}


def add_sums(totals, sums):
    for key, value in sums.items():
        totals[key] = totals.get(key, 0.0) + float(value)


def averages(totals):
    """Totals of ``batch_sums`` -> mean loss, top-1/top-5 in percent, image count."""
    count = max(totals.get("count", 0.0), 1.0)
    return {"loss": totals.get("loss", math.nan) / count, "top1": 100 * totals.get("top1", 0.0) / count,
            "top5": 100 * totals.get("top5", 0.0) / count, "count": int(totals.get("count", 0))}


def input_preprocessing(channels):
    """The normalisation kcnn trains with: ImageNet mean/std for colour, [-1, 1] for grayscale."""
    return PRESETS["torch"] if channels == 3 else GRAYSCALE


def _check_out(settings, resume):
    config = json.loads(json.dumps(dataclasses.asdict(settings), default=list))
    return config, checkpoints.check_run_dir(settings.out, config, resume)


def pretrain(model, dataset, out, *, recipe=None, overrides=None, epochs=None, steps=None, resume=False,
             verbose=1, **settings):
    """Trains zoo model ``model`` on ``dataset`` (see ``kcnn.data``) into run directory ``out``.

    ``recipe`` names a recipe (default: the family's paper recipe), ``overrides`` changes
    its fields, ``epochs``/``steps`` its length; ``settings`` are ``Settings`` fields
    (precision, strategy, input_shape, model_options, checkpoint_every, seed, data_dir,
    manual_dir, download). Returns the history rows.
    """
    settings = _run_settings(model, dataset, out, recipe, overrides, epochs, steps, **settings)
    strategy = hardware.resolve_strategy(settings.strategy)  # multi-worker: before any other TF op
    chief = hardware.is_chief(strategy)
    # Only the chief refuses an existing run: a worker may start after the chief's first checkpoint.
    config, existing = _check_out(settings, resume or not chief)
    existing = existing if resume else None
    spec = registry.get(settings.model)
    shape = tuple(settings.input_shape or spec.input_shape)
    info = data.dataset_info(settings.dataset, data_dir=settings.data_dir, manual_dir=settings.manual_dir,
                             download=settings.download)
    steps_per_epoch = info.num_examples["train"] // settings.recipe.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch size {settings.recipe.batch_size} is larger than the training split "
                         f"({info.num_examples['train']} images)")
    total_steps = settings.recipe.total_steps(steps_per_epoch)
    policy = hardware.resolve_precision(settings.precision)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(settings.seed)  # the same initial weights in every process of a run
    try:
        os.makedirs(settings.out, exist_ok=True)
        if chief:
            write_json(os.path.join(settings.out, "config.json"), config)
        loop = Loop(settings, strategy, info, shape)
        return _train(settings, loop, info, shape, steps_per_epoch, total_steps, existing, chief, verbose)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _dataset(settings, info, shape, split, epoch):
    training = split == "train"
    dataset, _ = data.load_classification(
        settings.dataset, split, image_size=shape[:2], channels=shape[2], batch_size=settings.recipe.batch_size,
        training=training, augment=settings.recipe.augment if training else None,
        seed=settings.seed * 100_003 + epoch, data_dir=settings.data_dir, manual_dir=settings.manual_dir)
    normalise = input_preprocessing(shape[2])
    return dataset.map(lambda images, labels: (normalise(images), labels), num_parallel_calls=tf.data.AUTOTUNE)


def _train(settings, loop, info, shape, steps_per_epoch, total_steps, existing, chief, verbose):
    checkpoint_dir = os.path.join(settings.out, "checkpoints")
    state = {"step": 0, "epoch": 0, "batch": 0, "history": []}
    if chief:
        checkpoints.remove_partials(checkpoint_dir)
    if existing:
        state = checkpoints.restore(existing, loop.model, loop.optimizer)
    board = history.TensorBoard(settings.out) if chief else None
    epochs = math.ceil(total_steps / steps_per_epoch)
    validation = _dataset(settings, info, shape, "val", 0)  # not shuffled: one pipeline serves every epoch

    def save():
        checkpoint_or_stop(checkpoint_dir, loop.model, loop.optimizer, state, chief)

    while state["step"] < total_steps:
        epoch = state["epoch"]
        dataset = _dataset(settings, info, shape, "train", epoch).skip(state["batch"])
        remaining = min(steps_per_epoch - state["batch"], total_steps - state["step"])
        progress = keras.utils.Progbar(remaining, verbose=verbose, stateful_metrics=["loss", "lr"])
        started = time.perf_counter()

        def on_step(sums):
            loss = sums["loss"] / max(sums["count"], 1.0)
            stop_if_not_finite(loss, state, checkpoint_dir)
            state["step"] += 1
            state["batch"] += 1
            lr = settings.recipe.learning_rate(state["step"], steps_per_epoch)
            loop.optimizer.learning_rate.assign(lr)
            progress.add(1, [("loss", loss), ("lr", lr)])
            if state["step"] % settings.checkpoint_every == 0:
                save()
            return state["step"] >= total_steps or state["batch"] >= steps_per_epoch

        loop.optimizer.learning_rate.assign(settings.recipe.learning_rate(state["step"], steps_per_epoch))
        train = loop.run_epoch(dataset.take(remaining), loop.train_step, on_step)
        seconds = time.perf_counter() - started
        val = loop.run_epoch(validation, loop.eval_step)
        row = {"epoch": epoch + 1, "step": state["step"],
               "lr": float(loop.optimizer.learning_rate.numpy()), "loss": train["loss"],
               "top1": train["top1"], "top5": train["top5"], "val_loss": val["loss"], "val_top1": val["top1"],
               "val_top5": val["top5"], "images_per_second": train["count"] / max(seconds, 1e-9),
               "skipped_images": data.skipped_images()}
        state["history"].append(row)
        state["epoch"], state["batch"] = epoch + 1, 0
        save()
        if chief:
            history.record_epoch(settings.out, state["history"], board, state["step"])
        if verbose:
            print(f"epoch {epoch + 1}/{epochs}: loss {row['loss']:.4f} top-1 {row['top1']:.2f}% "
                  f"val top-1 {row['val_top1']:.2f}% val top-5 {row['val_top5']:.2f}% "
                  f"({row['images_per_second']:.1f} img/s)")
    if chief:
        board.close()
        history.plot(settings.out, state["history"])
    if verbose and data.skipped_images():
        print(f"skipped {data.skipped_images()} unreadable images (see the warnings above for their paths)")
    _save_model(settings, loop.model, info, shape, _model_path(settings.out, loop.strategy, chief))
    return state["history"]


def _model_path(out, strategy, chief):
    """``RUN/model.weights.h5``; other workers write theirs under ``RUN/workers/`` (they must agree)."""
    if chief:
        return os.path.join(out, "model.weights.h5")
    resolver = strategy.cluster_resolver
    return os.path.join(out, "workers", f"{resolver.task_type}-{resolver.task_id}", "model.weights.h5")


def _save_model(settings, model, info, shape, path):
    files.save(model, path, {
        "architecture": settings.model, "options": dict(settings.model_options), "include_top": True,
        "classes": info.num_classes, "input_shape": list(shape),
        "preprocessing": input_preprocessing(shape[2]).to_dict(), "class_names": list(info.class_names),
        "source": {"library": "kcnn", "file": None, "sha256": None, "url": None, "top1": None, "top5": None,
                   "run": os.path.abspath(settings.out), "dataset": settings.dataset},
        "skipped_tensors": [],
    })
